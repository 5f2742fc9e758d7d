/**
 * softnet's whole policy in one table per direction: each row is a frame, the state it meets (lease,
 * rules) and the reason softnet must give. Reasons, not booleans, are asserted, so a frame dropped
 * for the wrong reason fails too.
 */
import { heapStats } from "bun:jsc";
import { describe, expect, test } from "bun:test";
import { LearnedNames } from "../../src/policy/learned-names.ts";
import { type NamePattern, NamePatterns, parseNamePattern } from "../../src/policy/name-patterns.ts";
import { Policy } from "../../src/policy/policy.ts";
import { isPass, REASON_NAMES, Reason, type ReasonCode, reasonName } from "../../src/policy/reasons.ts";
import { parseRuleTarget, type Rule, RuleTable } from "../../src/policy/rules.ts";
import type { SnoopEvent } from "../../src/policy/snoop-events.ts";
import { ArpOperation } from "../../src/wire/arp.ts";
import { parseIpv4, parseMac, writeU16 } from "../../src/wire/bytes.ts";
import { DhcpMessageType } from "../../src/wire/dhcp.ts";
import { emitDnsMessage } from "../../src/wire/dns.ts";
import { EtherType, emitEthernet } from "../../src/wire/ethernet.ts";
import { TcpFlag } from "../../src/wire/tcp.ts";
import {
  arpFrame,
  BROADCAST,
  dhcpClientFrame,
  dhcpServerFrame,
  etherFrame,
  GATEWAY,
  HOST_MAC,
  icmpEchoFrame,
  OTHER_MAC,
  tcpFrame,
  udpFrame,
  VM_IP,
  VM_MAC,
} from "../support/frames.ts";

const T0 = 1_000_000;

/** What the snoopers told the loop since the last call, as plain objects. */
function drainedEvents(policy: Policy): SnoopEvent[] {
  const events: SnoopEvent[] = [];
  policy.events.drain((event) => events.push({ ...event }));
  return events;
}
/** Where the BOOTP message starts in a frame from dhcpClientFrame: Ethernet, IPv4, UDP headers. */
const DHCP_AT = 14 + 20 + 8;
const LEASE_SECONDS = 600;
/** A well-formed DHCPDISCOVER from the VM's MAC, to carry in datagrams that are no DHCP. */
const DISCOVER_MESSAGE = dhcpClientFrame().subarray(DHCP_AT);

function rules(allow: string[] = [], block: string[] = []): Rule[] {
  const make = (action: "allow" | "block", text: string): Rule => {
    const target = parseRuleTarget(text);
    if (typeof target === "string") throw new Error(target);
    return { action, target };
  };
  return [...allow.map((t) => make("allow", t)), ...block.map((t) => make("block", t))];
}

/** A DNS answer from the gateway (the lease's first DNS server) to the VM: `name` is at `address`. */
export function dnsAnswerFrame(name: string, address: string, ttl = 300): Uint8Array {
  return udpFrame({
    srcMac: HOST_MAC,
    dstMac: VM_MAC,
    src: GATEWAY,
    dst: VM_IP,
    sport: 53,
    dport: 40000,
    payload: emitDnsMessage({
      id: 1,
      response: true,
      question: { name, type: 1 },
      answers: [{ owner: name, type: "A", ttl, address: parseIpv4(address)! }],
    }),
  });
}

/** A DNS query from the VM for `name` to `server`. */
export function dnsQueryFrame(name: string, server = GATEWAY): Uint8Array {
  return udpFrame({
    dst: server,
    dport: 53,
    payload: emitDnsMessage({ id: 2, response: false, question: { name, type: 1 } }),
  });
}

function newPolicy(
  options: {
    allow?: string[];
    block?: string[];
    lease?: boolean;
    dns?: string[];
    isolated?: boolean;
    /** Names in --allow. */
    names?: string[];
    /** DNS answers the VM received after its lease: [name, address]. */
    answers?: Array<[string, string]>;
  } = {},
): Policy {
  const gateway = parseIpv4(GATEWAY)!;
  const names = new LearnedNames(
    new NamePatterns((options.names ?? []).map((text) => parseNamePattern(text) as NamePattern)),
  );
  const policy = new Policy({
    vmMac: parseMac(VM_MAC)!,
    gateway,
    prefixLength: 24,
    // As the runtime decides it: only --allow 0.0.0.0/0 lifts isolation.
    isolated: options.isolated ?? !(options.allow ?? []).includes("0.0.0.0/0"),
    rules: RuleTable.compile(rules(options.allow, options.block), gateway, names),
    names,
  });
  if (options.lease ?? true) {
    const ack = dhcpServerFrame({
      messageType: DhcpMessageType.ACK,
      leaseTimeSeconds: LEASE_SECONDS,
      dnsServers: options.dns ?? [GATEWAY, "10.0.0.53"],
    });
    policy.observeFromHost(ack, 0, ack.length, T0);
    expect(policy.lease.isValidAt(T0)).toBe(true);
  }
  for (const [name, address] of options.answers ?? []) {
    const answer = dnsAnswerFrame(name, address);
    expect(reasonName(policy.observeFromHost(answer, 0, answer.length, T0))).toBe("host-ipv4");
  }
  return policy;
}

function fromVm(policy: Policy, frame: Uint8Array, nowMs = T0 + 1000): string {
  return reasonName(policy.decideFromVm(frame, 0, frame.length, nowMs));
}

function mutate(frame: Uint8Array, change: (bytes: Uint8Array) => void): Uint8Array {
  const copy = frame.slice();
  change(copy);
  return copy;
}

type Row = {
  name: string;
  frame: Uint8Array;
  want: string;
  setup?: Parameters<typeof newPolicy>[0];
  at?: number;
};

// The VM→host table. The default state: a valid lease for VM_IP, DNS servers GATEWAY and
// 10.0.0.53, no user rules.
const vmRows: Row[] = [
  // Ethernet
  { name: "a runt shorter than an Ethernet header", frame: new Uint8Array(13), want: "malformed-ethernet" },
  {
    name: "an 802.3 frame with a length in the type field",
    frame: etherFrame(0x05dc),
    want: "malformed-ethernet",
  },
  {
    name: "a frame from another MAC address",
    frame: tcpFrame({ srcMac: OTHER_MAC, dst: "1.1.1.1", dport: 443 }),
    want: "mac-spoof",
  },
  { name: "IPv6", frame: etherFrame(EtherType.IPV6), want: "non-ip-ethertype" },
  { name: "an 802.1Q tagged frame", frame: etherFrame(EtherType.VLAN), want: "non-ip-ethertype" },
  { name: "an unknown EtherType", frame: etherFrame(0x88b5), want: "non-ip-ethertype" },
  // ARP
  {
    name: "ARP request from the leased address",
    frame: arpFrame({ senderIp: VM_IP, targetIp: GATEWAY }),
    want: "arp",
  },
  {
    name: "ARP reply from the leased address",
    frame: arpFrame({ operation: ArpOperation.REPLY, senderIp: VM_IP, targetIp: GATEWAY }),
    want: "arp",
  },
  {
    name: "ARP probe (sender 0.0.0.0) before any lease",
    frame: arpFrame({ senderIp: "0.0.0.0", targetIp: VM_IP }),
    setup: { lease: false },
    want: "arp",
  },
  {
    name: "ARP probe (sender 0.0.0.0) once a lease is held",
    frame: arpFrame({ senderIp: "0.0.0.0", targetIp: VM_IP }),
    want: "arp-spoof",
  },
  {
    name: "ARP probe (sender 0.0.0.0) after the lease expired",
    frame: arpFrame({ senderIp: "0.0.0.0", targetIp: VM_IP }),
    at: T0 + LEASE_SECONDS * 1000,
    want: "arp",
  },
  {
    name: "ARP claiming the gateway's address (poisoning)",
    frame: arpFrame({ operation: ArpOperation.REPLY, senderIp: GATEWAY, targetIp: GATEWAY }),
    want: "arp-spoof",
  },
  {
    name: "ARP claiming an address before any lease",
    frame: arpFrame({ senderIp: VM_IP, targetIp: GATEWAY }),
    setup: { lease: false },
    want: "arp-spoof",
  },
  {
    name: "ARP whose sender MAC is not the frame's (VM) MAC",
    frame: arpFrame({ senderMac: OTHER_MAC, senderIp: VM_IP, targetIp: GATEWAY }),
    want: "arp-spoof",
  },
  {
    name: "ARP with operation 3 (RARP request)",
    frame: arpFrame({ operation: 3, senderIp: VM_IP, targetIp: GATEWAY }),
    want: "arp-operation",
  },
  {
    name: "ARP for a hardware type other than Ethernet",
    frame: mutate(arpFrame({ senderIp: VM_IP, targetIp: GATEWAY }), (b) => writeU16(b, 14, 6)),
    want: "malformed-arp",
  },
  {
    name: "ARP for a protocol other than IPv4",
    frame: mutate(arpFrame({ senderIp: VM_IP, targetIp: GATEWAY }), (b) => writeU16(b, 16, EtherType.IPV6)),
    want: "malformed-arp",
  },
  {
    name: "ARP with protocol length 3",
    frame: mutate(arpFrame({ senderIp: VM_IP, targetIp: GATEWAY }), (b) => {
      b[19] = 3;
    }),
    want: "malformed-arp",
  },
  {
    name: "ARP truncated to 27 bytes",
    frame: arpFrame({ senderIp: VM_IP, targetIp: GATEWAY }).subarray(0, 14 + 27),
    want: "malformed-arp",
  },
  // IPv4 structure
  {
    name: "IPv4 header truncated",
    frame: tcpFrame({ dst: "1.1.1.1", dport: 443 }).subarray(0, 14 + 19),
    want: "malformed-ipv4",
  },
  {
    name: "IPv4 total length beyond the frame",
    frame: mutate(tcpFrame({ dst: "1.1.1.1", dport: 443 }), (b) => writeU16(b, 16, 1400)),
    want: "malformed-ipv4",
  },
  {
    name: "IPv4 header length below 20 bytes",
    frame: mutate(tcpFrame({ dst: "1.1.1.1", dport: 443 }), (b) => {
      b[14] = 0x44;
    }),
    want: "malformed-ipv4",
  },
  {
    name: "IP version 6 inside an IPv4 EtherType",
    frame: mutate(tcpFrame({ dst: "1.1.1.1", dport: 443 }), (b) => {
      b[14] = 0x65;
    }),
    want: "malformed-ipv4",
  },
  {
    name: "IPv4 with options (loose source route)",
    frame: tcpFrame({ dst: "1.1.1.1", dport: 443, ip: { options: new Uint8Array([0x83, 3, 4, 0]) } }),
    want: "ipv4-options",
  },
  // Source address and lease
  {
    name: "TCP to a global address",
    frame: tcpFrame({ dst: "1.1.1.1", dport: 443 }),
    want: "global-destination",
  },
  { name: "ICMP to a global address", frame: icmpEchoFrame({ dst: "8.8.8.8" }), want: "global-destination" },
  {
    name: "UDP to multicast (global)",
    frame: udpFrame({ dst: "224.0.0.251", dport: 5353 }),
    want: "global-destination",
  },
  {
    name: "TCP to a global address before any lease",
    frame: tcpFrame({ src: "0.0.0.0", dst: "1.1.1.1", dport: 443 }),
    setup: { lease: false },
    want: "no-lease",
  },
  {
    name: "TCP from the leased address after the lease expired",
    frame: tcpFrame({ dst: "1.1.1.1", dport: 443 }),
    at: T0 + LEASE_SECONDS * 1000,
    want: "no-lease",
  },
  {
    name: "TCP from another source address",
    frame: tcpFrame({ src: "192.168.64.6", dst: "1.1.1.1", dport: 443 }),
    want: "ip-spoof",
  },
  // Destinations
  { name: "TCP to the gateway", frame: tcpFrame({ dst: GATEWAY, dport: 22 }), want: "gateway" },
  { name: "ping to the gateway", frame: icmpEchoFrame({ dst: GATEWAY }), want: "gateway" },
  {
    name: "TCP to another VM on the same network",
    frame: tcpFrame({ dst: "192.168.64.6", dport: 22 }),
    want: "not-allowed-destination",
  },
  {
    name: "TCP to a private LAN",
    frame: tcpFrame({ dst: "10.1.2.3", dport: 80 }),
    want: "not-allowed-destination",
  },
  {
    name: "TCP to loopback",
    frame: tcpFrame({ dst: "127.0.0.1", dport: 80 }),
    want: "not-allowed-destination",
  },
  {
    name: "UDP to the subnet broadcast",
    frame: udpFrame({ dst: "192.168.64.255", dport: 137 }),
    want: "not-allowed-destination",
  },
  // DNS
  {
    name: "DNS to a DHCP-provided private server",
    frame: udpFrame({ dst: "10.0.0.53", dport: 53 }),
    want: "dns",
  },
  {
    name: "DNS to a private server the lease did not name",
    frame: udpFrame({ dst: "10.0.0.54", dport: 53 }),
    want: "not-allowed-destination",
  },
  {
    name: "non-DNS UDP to the DHCP-provided server",
    frame: udpFrame({ dst: "10.0.0.53", dport: 5353 }),
    want: "not-allowed-destination",
  },
  {
    name: "TCP/53 to the DHCP-provided private server (UDP only, as the original)",
    frame: tcpFrame({ dst: "10.0.0.53", dport: 53 }),
    want: "not-allowed-destination",
  },
  {
    name: "a later fragment to the DNS server (no ports to check)",
    frame: udpFrame({ dst: "10.0.0.53", dport: 53, ip: { fragmentOffset: 8, dontFragment: false } }),
    want: "not-allowed-destination",
  },
  {
    name: "UDP to the DNS server with a UDP length beyond the packet",
    frame: mutate(udpFrame({ dst: "10.0.0.53", dport: 53 }), (b) => writeU16(b, 14 + 20 + 4, 200)),
    want: "malformed-udp",
  },
  // DHCP
  {
    name: "DHCPDISCOVER broadcast before any lease",
    frame: dhcpClientFrame(),
    setup: { lease: false },
    want: "dhcp",
  },
  {
    name: "DHCPREQUEST broadcast while holding a lease",
    frame: dhcpClientFrame({ messageType: DhcpMessageType.REQUEST }),
    want: "dhcp",
  },
  {
    name: "DHCP renewal unicast to the gateway, even with --block @host",
    frame: dhcpClientFrame({ src: VM_IP, dst: GATEWAY, messageType: DhcpMessageType.REQUEST }),
    setup: { block: ["@host"] },
    want: "dhcp",
  },
  {
    name: "DHCP renewal unicast to the gateway while softnet knows no lease (softnet restarted)",
    frame: dhcpClientFrame({
      src: VM_IP,
      dst: GATEWAY,
      messageType: DhcpMessageType.REQUEST,
      dhcp: { clientAddress: VM_IP },
    }),
    setup: { lease: false },
    want: "dhcp",
  },
  {
    name: "DHCP rebinding broadcast from its old address while softnet knows no lease (dhcpcd)",
    frame: dhcpClientFrame({
      src: VM_IP,
      messageType: DhcpMessageType.REQUEST,
      dhcp: { clientAddress: VM_IP },
    }),
    setup: { lease: false },
    want: "dhcp",
  },
  {
    name: "a renewal without a lease whose source is not its ciaddr (another VM's address as source)",
    frame: dhcpClientFrame({
      src: "192.168.64.6",
      dst: GATEWAY,
      messageType: DhcpMessageType.REQUEST,
      dhcp: { clientAddress: VM_IP },
    }),
    setup: { lease: false },
    want: "ip-spoof",
  },
  {
    name: "a renewal without a lease from an address and ciaddr it may not hold, to another host",
    frame: dhcpClientFrame({
      src: VM_IP,
      dst: "192.168.64.9",
      messageType: DhcpMessageType.REQUEST,
      dhcp: { clientAddress: VM_IP },
    }),
    setup: { lease: false, allow: ["192.168.64.0/24"] },
    want: "no-lease",
  },
  {
    name: "a DHCPRELEASE from an address while softnet knows no lease (nothing to renew)",
    frame: dhcpClientFrame({
      src: VM_IP,
      dst: GATEWAY,
      messageType: DhcpMessageType.RELEASE,
      dhcp: { clientAddress: VM_IP },
    }),
    setup: { lease: false },
    want: "no-lease",
  },
  {
    name: "a DHCP message from the client port to another port of the gateway, forged source, no lease",
    frame: udpFrame({ src: "10.66.66.66", dst: GATEWAY, sport: 68, dport: 9999, payload: DISCOVER_MESSAGE }),
    setup: { lease: false, block: ["0.0.0.0/0"] },
    want: "no-lease",
  },
  {
    name: "a DNS query from the client port to the gateway, another VM's address as source, no lease",
    frame: udpFrame({ src: "192.168.64.6", dst: GATEWAY, sport: 68, dport: 53, payload: DISCOVER_MESSAGE }),
    setup: { lease: false, block: ["0.0.0.0/0"] },
    want: "no-lease",
  },
  {
    name: "from 0.0.0.0 port 68 to another port of the gateway while holding a lease, --block 0.0.0.0/0",
    frame: udpFrame({ src: "0.0.0.0", dst: GATEWAY, sport: 68, dport: 9999, payload: DISCOVER_MESSAGE }),
    setup: { block: ["0.0.0.0/0"] },
    want: "ip-spoof",
  },
  {
    name: "from the lease, port 68, to a global address: ordinary UDP, not DHCP",
    frame: udpFrame({ dst: "1.1.1.1", sport: 68, dport: 9999 }),
    want: "global-destination",
  },
  {
    name: "to the DHCP server port from a port other than the client's",
    frame: udpFrame({ dst: GATEWAY, sport: 40000, dport: 67, payload: DISCOVER_MESSAGE }),
    want: "dhcp-ports",
  },
  {
    name: "DHCP unicast to the gateway on behalf of another MAC",
    frame: dhcpClientFrame({
      src: VM_IP,
      dst: GATEWAY,
      chaddr: OTHER_MAC,
      messageType: DhcpMessageType.REQUEST,
    }),
    setup: { lease: false },
    want: "dhcp-spoof",
  },
  {
    name: "DHCPDISCOVER on behalf of another MAC (pool exhaustion)",
    frame: dhcpClientFrame({ chaddr: OTHER_MAC }),
    setup: { lease: false },
    want: "dhcp-spoof",
  },
  {
    name: "DHCP to broadcast with a truncated BOOTP message",
    frame: udpFrame({ src: "0.0.0.0", dstMac: BROADCAST, dst: "255.255.255.255", sport: 68, dport: 67 }),
    setup: { lease: false },
    want: "malformed-dhcp",
  },
  {
    name: "DHCPDISCOVER with another client's identifier (passes, the identifier cleared: see below)",
    frame: dhcpClientFrame({ dhcp: { clientIdentifier: new Uint8Array([1, 2, 0, 0, 0, 0, 0x99]) } }),
    setup: { lease: false },
    want: "dhcp",
  },
  {
    name: "DHCP unicast renewal to the gateway on behalf of another MAC while holding a lease",
    frame: dhcpClientFrame({
      src: VM_IP,
      dst: GATEWAY,
      chaddr: OTHER_MAC,
      messageType: DhcpMessageType.REQUEST,
    }),
    want: "dhcp-spoof",
  },
  {
    name: "DHCPDISCOVER through a pretended relay (giaddr set)",
    frame: dhcpClientFrame({ dhcp: { gatewayAddress: "10.99.0.1" } }),
    setup: { lease: false },
    want: "dhcp-spoof",
  },
  {
    name: "DHCPDISCOVER with hardware type 6 (IEEE 802)",
    frame: mutate(dhcpClientFrame(), (b) => {
      b[DHCP_AT + 1] = 6;
    }),
    setup: { lease: false },
    want: "dhcp-spoof",
  },
  {
    name: "DHCPDISCOVER with hardware length 16 (chaddr and ten more bytes)",
    frame: mutate(dhcpClientFrame(), (b) => {
      b[DHCP_AT + 2] = 16;
    }),
    setup: { lease: false },
    want: "dhcp-spoof",
  },
  {
    name: "a BOOTREPLY from the VM's client port",
    frame: mutate(dhcpClientFrame(), (b) => {
      b[DHCP_AT] = 2;
    }),
    setup: { lease: false },
    want: "dhcp-spoof",
  },
  {
    name: "DHCPDISCOVER whose options run past the message",
    frame: dhcpClientFrame({ dhcp: { rawOptions: new Uint8Array([12, 50, 0x41]) } }),
    setup: { lease: false },
    want: "malformed-dhcp",
  },
  {
    name: "DHCPDISCOVER without the magic cookie",
    frame: mutate(dhcpClientFrame(), (b) => {
      b[DHCP_AT + 236] = 0;
    }),
    setup: { lease: false },
    want: "malformed-dhcp",
  },
  {
    name: "a DHCP message split into IP fragments (options in the next fragment go unread)",
    frame: dhcpClientFrame({ ip: { moreFragments: true, dontFragment: false } }),
    setup: { lease: false },
    want: "malformed-dhcp",
  },
  {
    name: "DHCP from the gateway's address (how VMs tell the host apart)",
    frame: dhcpClientFrame({ src: GATEWAY }),
    setup: { lease: false },
    want: "ip-spoof",
  },
  {
    name: "DHCP from an address other than the lease while holding one",
    frame: dhcpClientFrame({ src: "192.168.64.6", messageType: DhcpMessageType.REQUEST }),
    want: "ip-spoof",
  },
  {
    name: "DHCP to another of the host's addresses on behalf of another MAC (--allow 0.0.0.0/0)",
    frame: dhcpClientFrame({ src: VM_IP, dst: "192.168.64.255", chaddr: OTHER_MAC }),
    setup: { allow: ["0.0.0.0/0"] },
    want: "dhcp-spoof",
  },
  {
    name: "DHCP to a global address from the lease (passes as global, checked and cleared all the same)",
    frame: dhcpClientFrame({ src: VM_IP, dst: "1.1.1.1", messageType: DhcpMessageType.REQUEST }),
    want: "global-destination",
  },
  {
    name: "DHCP to a private address from the lease",
    frame: dhcpClientFrame({ src: VM_IP, dst: "10.1.2.3", messageType: DhcpMessageType.REQUEST }),
    want: "not-allowed-destination",
  },
  {
    name: "non-DHCP UDP to the limited broadcast",
    frame: udpFrame({ dst: "255.255.255.255", dport: 9 }),
    want: "not-allowed-destination",
  },
  // The next hop: the Ethernet destination of a permitted packet
  {
    name: "to a global address through another router's MAC on the bridge",
    frame: tcpFrame({ dst: "1.1.1.1", dport: 443, dstMac: OTHER_MAC }),
    want: "wrong-next-hop",
  },
  {
    name: "to a global address in a broadcast frame",
    frame: tcpFrame({ dst: "1.1.1.1", dport: 443, dstMac: BROADCAST }),
    want: "wrong-next-hop",
  },
  {
    name: "to an allowed address on the VM's network, to its own MAC",
    frame: tcpFrame({ dst: "192.168.64.7", dport: 22, dstMac: OTHER_MAC }),
    setup: { allow: ["192.168.64.7/32"] },
    want: "allowed-by-rule",
  },
  {
    name: "to an allowed address on the VM's network in a broadcast frame",
    frame: tcpFrame({ dst: "192.168.64.7", dport: 22, dstMac: BROADCAST }),
    setup: { allow: ["192.168.64.7/32"] },
    want: "wrong-next-hop",
  },
  {
    name: "to the network's broadcast address in a broadcast frame, allowed",
    frame: udpFrame({ dst: "192.168.64.255", dport: 9, dstMac: BROADCAST }),
    setup: { allow: ["192.168.64.0/24"] },
    want: "allowed-by-rule",
  },
  {
    name: "to an allowed multicast group in a multicast frame (mDNS)",
    frame: udpFrame({ dst: "224.0.0.251", dport: 5353, dstMac: "01:00:5e:00:00:fb" }),
    setup: { allow: ["224.0.0.0/4"] },
    want: "allowed-by-rule",
  },
  {
    name: "to an allowed private network beyond the VM's, through another MAC",
    frame: tcpFrame({ dst: "10.1.2.3", dport: 80, dstMac: OTHER_MAC }),
    setup: { allow: ["10.0.0.0/8"] },
    want: "wrong-next-hop",
  },
  {
    name: "a DHCP renewal to the gateway address through another MAC (the gateway is on the VM's network)",
    frame: dhcpClientFrame({
      src: VM_IP,
      dst: GATEWAY,
      dstMac: OTHER_MAC,
      messageType: DhcpMessageType.REQUEST,
    }),
    want: "dhcp",
  },
  // Rules
  {
    name: "--allow opens a private network",
    frame: tcpFrame({ dst: "10.1.2.3", dport: 80 }),
    setup: { allow: ["10.0.0.0/8"] },
    want: "allowed-by-rule",
  },
  {
    name: "--block closes a global network",
    frame: tcpFrame({ dst: "1.1.1.1", dport: 443 }),
    setup: { block: ["1.1.1.0/24"] },
    want: "blocked-by-rule",
  },
  {
    name: "--block @host closes the gateway",
    frame: tcpFrame({ dst: GATEWAY, dport: 22 }),
    setup: { block: ["@host"] },
    want: "blocked-by-rule",
  },
  {
    name: "--block 0.0.0.0/0 --allow @host: the gateway stays reachable",
    frame: tcpFrame({ dst: GATEWAY, dport: 22 }),
    setup: { block: ["0.0.0.0/0"], allow: ["@host"] },
    want: "allowed-by-rule",
  },
  {
    name: "--block 0.0.0.0/0 --allow @host: the internet is closed",
    frame: tcpFrame({ dst: "1.1.1.1", dport: 443 }),
    setup: { block: ["0.0.0.0/0"], allow: ["@host"] },
    want: "blocked-by-rule",
  },
  {
    name: "--block on the DNS server wins over the lease's DNS permission",
    frame: udpFrame({ dst: "10.0.0.53", dport: 53 }),
    setup: { block: ["10.0.0.0/8"] },
    want: "blocked-by-rule",
  },
  // Names in --allow: addresses their DNS answers named become /32 allows.
  {
    name: "--block 0.0.0.0/0 --allow github.com: an address an answer for github.com named",
    frame: tcpFrame({ dst: "140.82.112.3", dport: 443 }),
    setup: { block: ["0.0.0.0/0"], names: ["github.com"], answers: [["github.com", "140.82.112.3"]] },
    want: "allowed-by-name",
  },
  {
    name: "--block 0.0.0.0/0 --allow github.com: the same address before any answer named it",
    frame: tcpFrame({ dst: "140.82.112.3", dport: 443 }),
    setup: { block: ["0.0.0.0/0"], names: ["github.com"] },
    want: "blocked-by-rule",
  },
  {
    name: "--allow github.com: an answer for another name allows nothing",
    frame: tcpFrame({ dst: "203.0.113.9", dport: 443 }),
    setup: { block: ["0.0.0.0/0"], names: ["github.com"], answers: [["evil.example", "203.0.113.9"]] },
    want: "blocked-by-rule",
  },
  {
    name: "a learned address outranks a shorter block, a /32 block outranks it",
    frame: tcpFrame({ dst: "140.82.112.3", dport: 443 }),
    setup: {
      block: ["140.82.112.3/32", "140.82.0.0/16"],
      names: ["github.com"],
      answers: [["github.com", "140.82.112.3"]],
    },
    want: "blocked-by-rule",
  },
  {
    name: "--allow github.com: a private answer (rebinding) allows nothing",
    frame: tcpFrame({ dst: "10.1.2.3", dport: 443 }),
    setup: { names: ["github.com"], answers: [["github.com", "10.1.2.3"]] },
    want: "not-allowed-destination",
  },
  {
    name: "--block 0.0.0.0/0 --allow github.com: a query for github.com to the lease's server",
    frame: dnsQueryFrame("github.com", "10.0.0.53"),
    setup: { block: ["0.0.0.0/0"], names: ["github.com"] },
    want: "dns",
  },
  {
    name: "--block 0.0.0.0/0 --allow github.com: a query for another name (exfiltration)",
    frame: dnsQueryFrame("c2VjcmV0.evil.example"),
    setup: { block: ["0.0.0.0/0"], names: ["github.com"] },
    want: "dns-name-not-allowed",
  },
  {
    name: "--allow github.com without default-deny: a query for another name is DNS as before",
    frame: dnsQueryFrame("example.org", "10.0.0.53"),
    setup: { names: ["github.com"] },
    want: "dns",
  },
  {
    name: "--block 0.0.0.0/0 --allow github.com: a query for github.com to another resolver",
    frame: dnsQueryFrame("github.com", "9.9.9.9"),
    setup: { block: ["0.0.0.0/0"], names: ["github.com"] },
    want: "blocked-by-rule",
  },
  {
    name: "--allow 0.0.0.0/0 lets VMs talk to each other",
    frame: tcpFrame({ dst: "192.168.64.6", dport: 22 }),
    setup: { allow: ["0.0.0.0/0"] },
    want: "allowed-by-rule",
  },
  {
    name: "rules never apply to a spoofed source",
    frame: tcpFrame({ src: "192.168.64.6", dst: "10.1.2.3", dport: 80 }),
    setup: { allow: ["0.0.0.0/0"] },
    want: "ip-spoof",
  },
  {
    name: "rules never apply without a lease",
    frame: tcpFrame({ src: "0.0.0.0", dst: "10.1.2.3", dport: 80 }),
    setup: { allow: ["0.0.0.0/0"], lease: false },
    want: "no-lease",
  },
];

describe("what a VM may send (decideFromVm)", () => {
  for (const row of vmRows) {
    test(`${row.name} → ${row.want}`, () => {
      const policy = newPolicy(row.setup);
      expect(fromVm(policy, row.frame, row.at)).toBe(row.want);
    });
  }

  test("until the gateway's MAC is known, only packets for the VM's own network leave", () => {
    const policy = newPolicy({ lease: false });
    // A lease learned without the gateway's MAC (an ACK relayed from another MAC is not the host's).
    policy.lease.grant(parseIpv4(VM_IP)!, LEASE_SECONDS, T0, new Uint32Array(0), 0);
    expect(policy.gatewayMac).toBe(-1);
    expect(fromVm(policy, tcpFrame({ dst: "1.1.1.1", dport: 443 }))).toBe("wrong-next-hop");
    expect(fromVm(policy, tcpFrame({ dst: GATEWAY, dport: 22 }))).toBe("gateway");
    const arp = arpFrame({
      srcMac: HOST_MAC,
      operation: ArpOperation.REPLY,
      senderIp: GATEWAY,
      targetIp: VM_IP,
    });
    policy.observeFromHost(arp, 0, arp.length, T0);
    expect(fromVm(policy, tcpFrame({ dst: "1.1.1.1", dport: 443 }))).toBe("global-destination");
  });

  test("a NAK leaves the VM with no lease, and nothing but DHCP from 0.0.0.0 or a renewal leaves", () => {
    const policy = newPolicy({ block: ["0.0.0.0/0"] });
    const nak = dhcpServerFrame({ messageType: DhcpMessageType.NAK });
    policy.observeFromHost(nak, 0, nak.length, T0);
    const forged = (src: string, dport: number) =>
      udpFrame({ src, dst: GATEWAY, sport: 68, dport, payload: DISCOVER_MESSAGE });
    for (const src of ["10.66.66.66", "192.168.64.6", VM_IP, "0.0.0.0"]) {
      expect(fromVm(policy, forged(src, 9999))).toBe("no-lease");
      expect(fromVm(policy, forged(src, 53))).toBe("no-lease");
    }
    expect(fromVm(policy, dhcpClientFrame({ messageType: DhcpMessageType.DISCOVER }))).toBe("dhcp");
  });

  test("every VM-side reason is covered by a row of the table", () => {
    const covered = new Set(vmRows.map((row) => row.want));
    const hostOnly = new Set([
      "host-arp",
      "host-ipv4",
      "not-for-this-vm",
      "from-another-vm",
      "not-from-gateway",
    ]);
    const missing = REASON_NAMES.filter((name) => !hostOnly.has(name) && !covered.has(name));
    expect(missing).toEqual([]);
  });
});

/** Another VM on the same bridge, behind its own softnet: its MAC and its leased address. */
const OTHER_VM_IP = "192.168.64.6";

describe("what a VM may receive (observeFromHost)", () => {
  // The default state: an isolated VM (no --allow 0.0.0.0/0) whose lease came from the gateway's
  // MAC (HOST_MAC), so softnet knows that MAC.
  const hostRows: Row[] = [
    {
      name: "ARP from the host",
      frame: arpFrame({ srcMac: HOST_MAC, senderIp: GATEWAY, targetIp: VM_IP }),
      want: "host-arp",
    },
    {
      name: "IPv4 from the internet, routed by the host",
      frame: tcpFrame({ srcMac: HOST_MAC, dstMac: VM_MAC, src: "1.1.1.1", dst: VM_IP, dport: 40000 }),
      want: "host-ipv4",
    },
    {
      name: "IPv4 from the host itself",
      frame: icmpEchoFrame({ srcMac: HOST_MAC, dstMac: VM_MAC, src: GATEWAY, dst: VM_IP }),
      want: "host-ipv4",
    },
    {
      name: "a broadcast from the host",
      frame: udpFrame({
        srcMac: HOST_MAC,
        dstMac: BROADCAST,
        src: GATEWAY,
        dst: "192.168.64.255",
        dport: 137,
      }),
      want: "host-ipv4",
    },
    {
      name: "multicast from the host (mDNS)",
      frame: udpFrame({
        srcMac: HOST_MAC,
        dstMac: "01:00:5e:00:00:fb",
        src: GATEWAY,
        dst: "224.0.0.251",
        dport: 5353,
      }),
      want: "host-ipv4",
    },
    {
      name: "IPv6 from the host",
      frame: emitEthernet(
        { source: HOST_MAC, destination: VM_MAC, etherType: EtherType.IPV6 },
        new Uint8Array(46),
      ),
      want: "non-ip-ethertype",
    },
    { name: "a runt from the host", frame: new Uint8Array(10), want: "malformed-ethernet" },
    {
      name: "ARP truncated, from the host",
      frame: arpFrame({ srcMac: HOST_MAC, senderIp: GATEWAY, targetIp: VM_IP }).subarray(0, 14 + 20),
      want: "malformed-arp",
    },
    {
      name: "IPv4 truncated, from the host",
      frame: tcpFrame({ srcMac: HOST_MAC, dstMac: VM_MAC, src: "1.1.1.1", dst: VM_IP, dport: 1 }).subarray(
        0,
        30,
      ),
      want: "malformed-ipv4",
    },
    // Unicast for someone else: a bridge floods it when it does not know (or forgot) the MAC.
    {
      name: "unicast IPv4 to another MAC (flooded by the bridge)",
      frame: udpFrame({ srcMac: HOST_MAC, dstMac: OTHER_MAC, src: "1.1.1.1", dst: OTHER_VM_IP, dport: 9 }),
      want: "not-for-this-vm",
    },
    {
      name: "unicast ARP to another MAC",
      frame: arpFrame({
        srcMac: HOST_MAC,
        dstMac: OTHER_MAC,
        operation: ArpOperation.REPLY,
        senderIp: GATEWAY,
        targetIp: OTHER_VM_IP,
      }),
      want: "not-for-this-vm",
    },
    {
      name: "unicast to another MAC, even with isolation off",
      frame: udpFrame({ srcMac: OTHER_MAC, dstMac: HOST_MAC, src: OTHER_VM_IP, dst: GATEWAY, dport: 9 }),
      setup: { allow: ["0.0.0.0/0"] },
      want: "not-for-this-vm",
    },
    // Another VM, whichever flags its softnet has.
    {
      name: "UDP straight from another VM",
      frame: udpFrame({ srcMac: OTHER_MAC, dstMac: VM_MAC, src: OTHER_VM_IP, dst: VM_IP, dport: 9 }),
      want: "from-another-vm",
    },
    {
      name: "UDP from another VM, routed back by the host (the gateway's MAC)",
      frame: udpFrame({ srcMac: HOST_MAC, dstMac: VM_MAC, src: OTHER_VM_IP, dst: VM_IP, dport: 9 }),
      want: "from-another-vm",
    },
    {
      name: "ping from another VM",
      frame: icmpEchoFrame({ srcMac: OTHER_MAC, dstMac: VM_MAC, src: OTHER_VM_IP, dst: VM_IP }),
      want: "from-another-vm",
    },
    {
      name: "ARP request from another VM",
      frame: arpFrame({ srcMac: OTHER_MAC, senderIp: OTHER_VM_IP, targetIp: VM_IP }),
      want: "from-another-vm",
    },
    {
      name: "ARP probe (sender 0.0.0.0) from another VM",
      frame: arpFrame({ srcMac: OTHER_MAC, senderIp: "0.0.0.0", targetIp: OTHER_VM_IP }),
      want: "from-another-vm",
    },
    {
      name: "another VM's DHCPDISCOVER broadcast (source 0.0.0.0)",
      frame: dhcpClientFrame({ srcMac: OTHER_MAC }),
      want: "from-another-vm",
    },
    {
      name: "another VM's multicast (mDNS)",
      frame: udpFrame({
        srcMac: OTHER_MAC,
        dstMac: "01:00:5e:00:00:fb",
        src: OTHER_VM_IP,
        dst: "224.0.0.251",
        dport: 5353,
      }),
      want: "from-another-vm",
    },
    {
      name: "another VM's traffic before this VM has a lease",
      frame: udpFrame({
        srcMac: OTHER_MAC,
        dstMac: BROADCAST,
        src: OTHER_VM_IP,
        dst: "255.255.255.255",
        dport: 9,
      }),
      setup: { lease: false },
      want: "from-another-vm",
    },
    {
      name: "from outside the network but not from the gateway's MAC (a VM leased on another subnet)",
      frame: udpFrame({ srcMac: OTHER_MAC, dstMac: VM_MAC, src: "10.5.0.7", dst: VM_IP, dport: 9 }),
      want: "not-from-gateway",
    },
    {
      name: "from outside the network, any MAC, while the gateway's MAC is not known yet",
      frame: udpFrame({ srcMac: OTHER_MAC, dstMac: VM_MAC, src: "10.5.0.7", dst: VM_IP, dport: 9 }),
      setup: { lease: false },
      want: "host-ipv4",
    },
    // Isolation off (--allow 0.0.0.0/0): other VMs may talk to this one, as upstream.
    {
      name: "UDP from another VM when isolation is off",
      frame: udpFrame({ srcMac: OTHER_MAC, dstMac: VM_MAC, src: OTHER_VM_IP, dst: VM_IP, dport: 9 }),
      setup: { allow: ["0.0.0.0/0"] },
      want: "host-ipv4",
    },
    {
      name: "ARP from another VM when isolation is off",
      frame: arpFrame({ srcMac: OTHER_MAC, senderIp: OTHER_VM_IP, targetIp: VM_IP }),
      setup: { allow: ["0.0.0.0/0"] },
      want: "host-arp",
    },
  ];
  for (const row of hostRows) {
    test(`${row.name} → ${row.want}`, () => {
      const policy = newPolicy(row.setup);
      expect(reasonName(policy.observeFromHost(row.frame, 0, row.frame.length, T0 + 1000))).toBe(row.want);
    });
  }

  test("every host-side reason is covered by a row of the table", () => {
    const covered = new Set(hostRows.map((row) => row.want));
    const hostReasons = ["host-arp", "host-ipv4", "not-for-this-vm", "from-another-vm", "not-from-gateway"];
    expect(hostReasons.filter((name) => !covered.has(name))).toEqual([]);
  });

  test("the gateway's MAC is learned from the host's own frames, and again when it changes", () => {
    const policy = newPolicy({ lease: false });
    expect(policy.gatewayMac).toBe(-1);
    const arp = arpFrame({ srcMac: HOST_MAC, senderIp: GATEWAY, targetIp: VM_IP });
    policy.observeFromHost(arp, 0, arp.length, T0);
    expect(policy.gatewayMac).toBe(parseMac(HOST_MAC)!);
    expect(drainedEvents(policy)).toEqual([{ kind: "gateway-mac", mac: parseMac(HOST_MAC)!, first: true }]);
    const routed = (srcMac: string) =>
      udpFrame({ srcMac, dstMac: VM_MAC, src: "1.1.1.1", dst: VM_IP, dport: 9 });
    const newMac = "5e:00:00:00:00:02";
    expect(reasonName(policy.observeFromHost(routed(newMac), 0, routed(newMac).length, T0))).toBe(
      "not-from-gateway",
    );
    // The bridge's MAC changed: its next ARP from the gateway's address teaches softnet.
    const moved = arpFrame({ srcMac: newMac, senderIp: GATEWAY, targetIp: VM_IP });
    expect(reasonName(policy.observeFromHost(moved, 0, moved.length, T0))).toBe("host-arp");
    expect(drainedEvents(policy)).toEqual([{ kind: "gateway-mac", mac: parseMac(newMac)!, first: false }]);
    expect(reasonName(policy.observeFromHost(routed(newMac), 0, routed(newMac).length, T0))).toBe(
      "host-ipv4",
    );
    expect(reasonName(policy.observeFromHost(routed(HOST_MAC), 0, routed(HOST_MAC).length, T0))).toBe(
      "not-from-gateway",
    );
    // A repeat from the same MAC is not a change.
    policy.observeFromHost(moved, 0, moved.length, T0);
    expect(drainedEvents(policy)).toEqual([]);
  });

  test("a prefix length outside 1..32 is refused", () => {
    const gateway = parseIpv4(GATEWAY)!;
    for (const prefixLength of [0, 33, 24.5]) {
      expect(
        () =>
          new Policy({
            vmMac: parseMac(VM_MAC)!,
            gateway,
            prefixLength,
            isolated: true,
            rules: RuleTable.compile([], gateway),
          }),
      ).toThrow(RangeError);
    }
  });
});

describe("DHCP snooping learns the lease from the host's server", () => {
  const ack = (extra: Partial<Parameters<typeof dhcpServerFrame>[0]> = {}) =>
    dhcpServerFrame({
      messageType: DhcpMessageType.ACK,
      leaseTimeSeconds: 120,
      dnsServers: ["10.0.0.53"],
      ...extra,
    });

  function snoop(policy: Policy, frame: Uint8Array, nowMs = T0): ReasonCode {
    return policy.observeFromHost(frame, 0, frame.length, nowMs);
  }

  test("an ACK from the gateway grants the address, lease time and DNS servers", () => {
    const policy = newPolicy({ lease: false });
    expect(snoop(policy, ack())).toBe(Reason.PASS_HOST_IPV4);
    expect(drainedEvents(policy).filter((event) => event.kind.startsWith("lease"))).toEqual([
      { kind: "lease-granted" },
    ]);
    expect(policy.lease.address).toBe(parseIpv4(VM_IP)!);
    expect(policy.lease.isDnsServer(parseIpv4("10.0.0.53")!)).toBe(true);
    expect(policy.lease.isDnsServer(parseIpv4(GATEWAY)!)).toBe(false);
    expect(policy.lease.isValidAt(T0 + 119_999)).toBe(true);
    expect(policy.lease.isValidAt(T0 + 120_000)).toBe(false);
  });

  test("a broadcast ACK (client asked for broadcast) is learned too", () => {
    const policy = newPolicy({ lease: false });
    snoop(policy, ack({ dstMac: BROADCAST, dst: "255.255.255.255" }));
    expect(policy.lease.isValidAt(T0)).toBe(true);
  });

  test("a renewal ACK moves the expiry and can change the address", () => {
    const policy = newPolicy({ lease: false });
    snoop(policy, ack());
    const generation = policy.lease.generation;
    snoop(policy, ack({ yourAddress: "192.168.64.7", leaseTimeSeconds: 600 }), T0 + 60_000);
    expect(policy.lease.generation).toBe(generation + 1);
    expect(policy.lease.address).toBe(parseIpv4("192.168.64.7")!);
    expect(policy.lease.isValidAt(T0 + 60_000 + 599_000)).toBe(true);
  });

  test("an infinite lease (0xffffffff) never expires", () => {
    const policy = newPolicy({ lease: false });
    snoop(policy, ack({ leaseTimeSeconds: 0xffffffff }));
    expect(policy.lease.isValidAt(Number.MAX_SAFE_INTEGER)).toBe(true);
  });

  test("a NAK forgets the lease", () => {
    const policy = newPolicy();
    drainedEvents(policy);
    snoop(policy, dhcpServerFrame({ messageType: DhcpMessageType.NAK }));
    expect(drainedEvents(policy)).toEqual([{ kind: "lease-refused" }]);
    expect(policy.lease.isValidAt(T0)).toBe(false);
    expect(fromVm(policy, tcpFrame({ dst: "1.1.1.1", dport: 443 }))).toBe("no-lease");
  });

  const ignored: Array<[string, Uint8Array]> = [
    [
      "an OFFER (not yet a lease)",
      dhcpServerFrame({ messageType: DhcpMessageType.OFFER, leaseTimeSeconds: 120 }),
    ],
    [
      "an ACK without a lease time (answer to DHCPINFORM)",
      dhcpServerFrame({ messageType: DhcpMessageType.ACK }),
    ],
    ["an ACK from a rogue server that is not the gateway", ack({ from: "192.168.64.66" })],
    ["an ACK about another client's MAC", ack({ clientMac: OTHER_MAC })],
    ["an ACK to another VM's MAC", ack({ dstMac: OTHER_MAC })],
    ["an ACK granting 0.0.0.0", ack({ yourAddress: "0.0.0.0" })],
    ["an ACK cut short inside its options", ack().subarray(0, ack().length - 3)],
  ];
  for (const [name, frame] of ignored) {
    test(`ignores ${name}`, () => {
      const policy = newPolicy({ lease: false });
      snoop(policy, frame);
      expect(policy.lease.held).toBe(false);
      expect(drainedEvents(policy).filter((event) => event.kind.startsWith("lease"))).toEqual([]);
    });
  }
});

// Ported from Cirrus Labs softnet (lib/proxy/mod.rs and vm.rs tests), same inputs, same outcomes.
describe("behaviour ported from the original's tests", () => {
  test("blocking takes precedence over allowing the same prefix", () => {
    const policy = newPolicy({ allow: ["66.66.0.0/16"], block: ["66.66.0.0/16"] });
    expect(policy.rules.entries()).toEqual([{ network: "66.66.0.0/16", action: "block" }]);
    expect(fromVm(policy, tcpFrame({ dst: "66.66.66.66", dport: 80 }))).toBe("blocked-by-rule");
  });

  test("block wins the tie whatever order the flags come in", () => {
    const gateway = parseIpv4(GATEWAY)!;
    const blockFirst = RuleTable.compile(
      [...rules([], ["66.66.0.0/16"]), ...rules(["66.66.0.0/16"])],
      gateway,
    );
    expect(blockFirst.entries()).toEqual([{ network: "66.66.0.0/16", action: "block" }]);
  });

  test("the longest prefix match wins", () => {
    const policy = newPolicy({ allow: ["33.33.33.33/32"], block: ["33.33.33.0/24"] });
    expect(fromVm(policy, tcpFrame({ dst: "33.33.33.32", dport: 80 }))).toBe("blocked-by-rule");
    expect(fromVm(policy, tcpFrame({ dst: "33.33.33.33", dport: 80 }))).toBe("allowed-by-rule");
    expect(fromVm(policy, tcpFrame({ dst: "33.33.33.34", dport: 80 }))).toBe("blocked-by-rule");
  });

  test("@host resolves to the gateway once the host link knows it", () => {
    const table = RuleTable.compile(rules(["@host"]), parseIpv4("192.168.64.1")!);
    expect(table.entries()).toEqual([{ network: "192.168.64.1/32", action: "allow" }]);
    expect(RuleTable.compile(rules(["@host"]), undefined).size).toBe(0);
  });

  test("ARP: unspecified request allowed without lease; reply for leased IP allowed; unknown operation refused", () => {
    const noLease = newPolicy({ lease: false });
    expect(fromVm(noLease, arpFrame({ senderIp: "0.0.0.0", targetIp: "192.168.0.2" }))).toBe("arp");
    const leased = newPolicy();
    expect(
      fromVm(leased, arpFrame({ operation: ArpOperation.REPLY, senderIp: VM_IP, targetIp: GATEWAY })),
    ).toBe("arp");
    expect(fromVm(noLease, arpFrame({ operation: 3, senderIp: "0.0.0.0", targetIp: GATEWAY }))).toBe(
      "arp-operation",
    );
  });
});

describe("counters", () => {
  test("pass and drop reasons are told apart", () => {
    expect(isPass(Reason.PASS_DNS)).toBe(true);
    expect(isPass(Reason.PASS_HOST_IPV4)).toBe(true);
    expect(isPass(Reason.MALFORMED_ETHERNET)).toBe(false);
    expect(isPass(Reason.NOT_ALLOWED_DESTINATION)).toBe(false);
  });
});

describe("frames inside a larger buffer (as the loop hands them over)", () => {
  test("decisions read only [offset, offset+length)", () => {
    const policy = newPolicy();
    const frame = tcpFrame({ dst: "1.1.1.1", dport: 443, flags: TcpFlag.SYN });
    const arena = new Uint8Array(4096).fill(0xee);
    arena.set(frame, 2048);
    expect(reasonName(policy.decideFromVm(arena, 2048, frame.length, T0 + 1))).toBe("global-destination");
    // One byte short: the IPv4 total length no longer fits what arrived.
    expect(reasonName(policy.decideFromVm(arena, 2048, frame.length - 1, T0 + 1))).toBe("malformed-ipv4");
  });
});

describe("deciding on learned addresses", () => {
  test("with 1000 addresses learned, frames to and from them allocate nothing", () => {
    const policy = newPolicy({ block: ["0.0.0.0/0"], names: ["*.bench.test"] });
    const base = parseIpv4("20.0.0.0")!;
    for (let answer = 0; answer < 25; answer++) {
      const name = `n${answer}.bench.test`;
      const frame = udpFrame({
        srcMac: HOST_MAC,
        dstMac: VM_MAC,
        src: GATEWAY,
        dst: VM_IP,
        sport: 53,
        dport: 40000,
        payload: emitDnsMessage({
          id: answer,
          response: true,
          question: { name, type: 1 },
          answers: Array.from({ length: 40 }, (_, record) => ({
            owner: name,
            type: "A" as const,
            ttl: 3600,
            address: base + answer * 40 + record + 1,
          })),
        }),
      });
      policy.observeFromHost(frame, 0, frame.length, T0);
    }
    expect(policy.dns.names.size).toBe(1000);
    const out = tcpFrame({ dst: "20.0.2.1", dport: 443, dstMac: HOST_MAC });
    const back = tcpFrame({ srcMac: HOST_MAC, dstMac: VM_MAC, src: "20.0.2.1", dst: VM_IP, dport: 40000 });
    const decide = (rounds: number) => {
      for (let round = 0; round < rounds; round++) {
        if (policy.decideFromVm(out, 0, out.length, T0 + 1000) !== Reason.PASS_ALLOWED_BY_NAME)
          throw new Error("not by name");
        policy.observeFromHost(back, 0, back.length, T0 + 1000);
      }
    };
    decide(1000);
    Bun.gc(true);
    const before = heapStats().objectCount;
    decide(20_000);
    expect(heapStats().objectCount - before).toBeLessThan(10);
    expect(
      policy.dns.names.records().find((record) => record.name === "n12.bench.test")?.packetsForwarded,
    ).toBe(42_000);
  });
});
