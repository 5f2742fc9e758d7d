/**
 * Every decision softnet makes about a frame carries a reason. Reasons are small integers so the
 * per-frame path allocates nothing; counters are a Float64Array indexed by reason (a double counts
 * exactly far beyond 2^32 frames).
 */
export const Reason = {
  // Frames that pass, from the VM.
  PASS_ARP: 0,
  PASS_DHCP: 1,
  PASS_ALLOWED_BY_RULE: 2,
  PASS_GLOBAL: 3,
  PASS_GATEWAY: 4,
  PASS_DNS: 5,
  // Frames that pass, from the host.
  PASS_HOST_ARP: 6,
  PASS_HOST_IPV4: 7,
  // Frames that are dropped.
  MALFORMED_ETHERNET: 8,
  MAC_SPOOF: 9,
  NON_IP_ETHERTYPE: 10,
  MALFORMED_ARP: 11,
  ARP_OPERATION: 12,
  ARP_SPOOF: 13,
  MALFORMED_IPV4: 14,
  IPV4_OPTIONS: 15,
  MALFORMED_UDP: 16,
  NO_LEASE: 17,
  IP_SPOOF: 18,
  DHCP_SPOOF: 19,
  BLOCKED_BY_RULE: 20,
  NOT_ALLOWED_DESTINATION: 21,
  MALFORMED_DHCP: 22,
  // Frames from the host that the VM must not receive.
  NOT_FOR_THIS_VM: 23,
  FROM_ANOTHER_VM: 24,
  NOT_FROM_GATEWAY: 25,
  // Added later, so the numbers above (in captures and counters) stay as they were. From the VM.
  DHCP_PORTS: 26,
  WRONG_NEXT_HOP: 27,
} as const;

export type ReasonCode = (typeof Reason)[keyof typeof Reason];

export const REASON_COUNT = 28;
const FIRST_DROP_REASON = Reason.MALFORMED_ETHERNET;

export function isPass(reason: ReasonCode): boolean {
  return reason < FIRST_DROP_REASON;
}

/** Stable names for logs, counters and tests. */
export const REASON_NAMES: readonly string[] = [
  "arp",
  "dhcp",
  "allowed-by-rule",
  "global-destination",
  "gateway",
  "dns",
  "host-arp",
  "host-ipv4",
  "malformed-ethernet",
  "mac-spoof",
  "non-ip-ethertype",
  "malformed-arp",
  "arp-operation",
  "arp-spoof",
  "malformed-ipv4",
  "ipv4-options",
  "malformed-udp",
  "no-lease",
  "ip-spoof",
  "dhcp-spoof",
  "blocked-by-rule",
  "not-allowed-destination",
  "malformed-dhcp",
  "not-for-this-vm",
  "from-another-vm",
  "not-from-gateway",
  "dhcp-ports",
  "wrong-next-hop",
];

/** What each drop means, in words for a person reading the log. */
export const REASON_EXPLANATIONS: readonly string[] = [
  "ARP from the VM's own MAC and address",
  "DHCP request to the host's DHCP server",
  "destination allowed by --allow",
  "destination is globally routable",
  "destination is the host (gateway)",
  "DNS query to a server the DHCP lease named",
  "ARP from the host",
  "IPv4 from the host",
  "frame shorter than an Ethernet header or an 802.3 length frame",
  "source MAC is not the VM's --vm-mac-address",
  "only IPv4 and ARP are forwarded (IPv6, VLAN tags and others are not)",
  "ARP packet truncated or not Ethernet/IPv4",
  "ARP operation is neither request nor reply",
  "ARP sender is not the VM's MAC and leased address",
  "IPv4 header truncated or inconsistent",
  "IPv4 options are refused (source routing could bypass the destination policy)",
  "UDP header truncated or inconsistent",
  "the VM has no valid DHCP lease yet (or it expired)",
  "source address is not the VM's leased address",
  "DHCP request on behalf of another MAC address, hardware type or length, or through a relay (giaddr)",
  "destination blocked by --block",
  "destination is not global, the gateway, or a DHCP-provided DNS server",
  "DHCP client message that is fragmented, truncated, or whose options run past its end",
  "unicast to another MAC address (a bridge floods frames for MACs it has not learned)",
  "the VM is isolated: source is another address on its network (another VM), or 0.0.0.0",
  "the VM is isolated: from a MAC other than the gateway's",
  "UDP to the DHCP server port (67) from a port other than the DHCP client's (68)",
  "a packet for beyond the VM's network not sent to the gateway's MAC (or the gateway's MAC is not known yet), or a unicast packet in a broadcast or multicast frame",
];

export function reasonName(reason: number): string {
  return REASON_NAMES[reason] ?? `reason-${reason}`;
}
