/**
 * Every decision softnet makes about a frame carries a reason: one row of REASONS below, the only
 * place a reason is described. Its position is its code (a small integer, so the per-frame path
 * allocates nothing and counters are a Float64Array indexed by reason; a double counts exactly
 * far beyond 2^32 frames). Whether it passes, whether it means a guest tried to impersonate
 * someone and whether --reject answers it are flags of its row, so a new reason is one new row
 * and nothing else depends on where it stands.
 */

interface ReasonRow {
  /** The constant's name in code: Reason.KEY. */
  key: string;
  /** Stable name for logs, counters, captures and tests. */
  name: string;
  /** The frame is forwarded. */
  pass?: true;
  /** A guest tried to impersonate someone (logged at warn, the rest at debug). */
  spoof?: true;
  /** --reject answers it (a TCP reset or ICMP "administratively prohibited"; src/policy/reject.ts). */
  reject?: true;
  /** What it means, in words for a person reading the log. */
  explanation: string;
}

const REASONS = [
  { key: "PASS_ARP", name: "arp", pass: true, explanation: "ARP from the VM's own MAC and address" },
  { key: "PASS_DHCP", name: "dhcp", pass: true, explanation: "DHCP request to the host's DHCP server" },
  {
    key: "PASS_ALLOWED_BY_RULE",
    name: "allowed-by-rule",
    pass: true,
    explanation: "destination allowed by --allow",
  },
  {
    key: "PASS_GLOBAL",
    name: "global-destination",
    pass: true,
    explanation: "destination is globally routable",
  },
  { key: "PASS_GATEWAY", name: "gateway", pass: true, explanation: "destination is the host (gateway)" },
  { key: "PASS_DNS", name: "dns", pass: true, explanation: "DNS query to a server the DHCP lease named" },
  { key: "PASS_HOST_ARP", name: "host-arp", pass: true, explanation: "ARP from the host" },
  { key: "PASS_HOST_IPV4", name: "host-ipv4", pass: true, explanation: "IPv4 from the host" },
  {
    key: "MALFORMED_ETHERNET",
    name: "malformed-ethernet",
    explanation: "frame shorter than an Ethernet header or an 802.3 length frame",
  },
  {
    key: "MAC_SPOOF",
    name: "mac-spoof",
    spoof: true,
    explanation: "source MAC is not the VM's --vm-mac-address",
  },
  {
    key: "NON_IP_ETHERTYPE",
    name: "non-ip-ethertype",
    explanation: "only IPv4 and ARP are forwarded (IPv6, VLAN tags and others are not)",
  },
  { key: "MALFORMED_ARP", name: "malformed-arp", explanation: "ARP packet truncated or not Ethernet/IPv4" },
  { key: "ARP_OPERATION", name: "arp-operation", explanation: "ARP operation is neither request nor reply" },
  {
    key: "ARP_SPOOF",
    name: "arp-spoof",
    spoof: true,
    explanation: "ARP sender is not the VM's MAC and leased address",
  },
  { key: "MALFORMED_IPV4", name: "malformed-ipv4", explanation: "IPv4 header truncated or inconsistent" },
  {
    key: "IPV4_OPTIONS",
    name: "ipv4-options",
    explanation: "IPv4 options are refused (source routing could bypass the destination policy)",
  },
  { key: "MALFORMED_UDP", name: "malformed-udp", explanation: "UDP header truncated or inconsistent" },
  { key: "NO_LEASE", name: "no-lease", explanation: "the VM has no valid DHCP lease yet (or it expired)" },
  {
    key: "IP_SPOOF",
    name: "ip-spoof",
    spoof: true,
    explanation: "source address is not the VM's leased address",
  },
  {
    key: "DHCP_SPOOF",
    name: "dhcp-spoof",
    spoof: true,
    explanation:
      "DHCP request on behalf of another MAC address, hardware type or length, or through a relay (giaddr)",
  },
  {
    key: "BLOCKED_BY_RULE",
    name: "blocked-by-rule",
    reject: true,
    explanation: "destination blocked by --block",
  },
  {
    key: "NOT_ALLOWED_DESTINATION",
    name: "not-allowed-destination",
    reject: true,
    explanation: "destination is not global, the gateway, or a DHCP-provided DNS server",
  },
  {
    key: "MALFORMED_DHCP",
    name: "malformed-dhcp",
    explanation: "DHCP client message that is fragmented, truncated, or whose options run past its end",
  },
  {
    key: "NOT_FOR_THIS_VM",
    name: "not-for-this-vm",
    explanation: "unicast to another MAC address (a bridge floods frames for MACs it has not learned)",
  },
  {
    key: "FROM_ANOTHER_VM",
    name: "from-another-vm",
    explanation: "the VM is isolated: source is another address on its network (another VM), or 0.0.0.0",
  },
  {
    key: "NOT_FROM_GATEWAY",
    name: "not-from-gateway",
    explanation: "the VM is isolated: from a MAC other than the gateway's",
  },
  {
    key: "DHCP_PORTS",
    name: "dhcp-ports",
    explanation: "UDP to the DHCP server port (67) from a port other than the DHCP client's (68)",
  },
  {
    key: "WRONG_NEXT_HOP",
    name: "wrong-next-hop",
    explanation:
      "a packet for beyond the VM's network not sent to the gateway's MAC (or the gateway's MAC is not known yet), or a unicast packet in a broadcast or multicast frame",
  },
  {
    key: "PASS_ALLOWED_BY_NAME",
    name: "allowed-by-name",
    pass: true,
    explanation: "destination named by a DNS answer, from a server of the lease, for a name in --allow",
  },
  {
    key: "DNS_NAME_NOT_ALLOWED",
    name: "dns-name-not-allowed",
    reject: true,
    explanation:
      "DNS query for a name --allow does not list, while --block 0.0.0.0/0 denies what is not allowed",
  },
] as const satisfies readonly ReasonRow[];

type ReasonKey = (typeof REASONS)[number]["key"];
/** A reason's code: its row's position in REASONS. */
export type ReasonCode = number;

/** Reason.KEY is the code of the row with that key. */
export const Reason = Object.freeze(
  Object.fromEntries(REASONS.map((row, code) => [row.key, code])) as Record<ReasonKey, ReasonCode>,
);

export const REASON_COUNT = REASONS.length;

const PASSES = Uint8Array.from(REASONS, (row: ReasonRow) => (row.pass === true ? 1 : 0));

/** True when frames with this reason are forwarded. Per frame: one array read. */
export function isPass(reason: ReasonCode): boolean {
  return PASSES[reason] === 1;
}

/** Stable names for logs, counters and tests, by code. */
export const REASON_NAMES: readonly string[] = REASONS.map((row) => row.name);

/** What each reason means, by code. */
export const REASON_EXPLANATIONS: readonly string[] = REASONS.map((row) => row.explanation);

function codesWhere(test: (row: ReasonRow) => boolean): ReasonCode[] {
  const codes: ReasonCode[] = [];
  REASONS.forEach((row: ReasonRow, code) => {
    if (test(row)) codes.push(code);
  });
  return codes;
}

/** Codes of the reasons that mean a guest tried to impersonate someone. */
export const SPOOF_REASONS: readonly ReasonCode[] = codesWhere((row) => row.spoof === true);

/** Codes of the reasons --reject answers. */
export const REJECT_REASONS: readonly ReasonCode[] = codesWhere((row) => row.reject === true);

export function reasonName(reason: number): string {
  return REASON_NAMES[reason] ?? `reason-${reason}`;
}
