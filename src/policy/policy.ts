/**
 * softnet's filter: what a VM may send (decideFromVm) and what it may receive (observeFromHost).
 * Beside the decisions sit the snoopers, which learn from what passes: the DHCP snooper owns the
 * lease the VM-side decisions depend on (dhcp-snooper.ts), the DNS snooper the addresses that names
 * in --allow stand for (dns-snooper.ts). What they learn reaches the loop as events (events).
 *
 * Pure: no I/O, no clock of its own. Every call reads a frame in place (bytes[offset, offset+length))
 * and returns a Reason; nothing is allocated per frame. The one write: decideFromVm clears, in
 * place, the DHCP options that would let a VM choose its own identity at the host's DHCP server
 * (stripClientOptions), in a frame it lets through.
 */

import { ArpOperation, arpOperation, arpSenderIp, arpSenderMac, isEthernetIpv4Arp } from "../wire/arp.ts";
import { BROADCAST_MAC, isMulticastMac, readU16, writeMac, writeU16, writeU32 } from "../wire/bytes.ts";
import { checksumAfterReplacing, sumWords } from "../wire/checksum.ts";
import {
  asInitReboot,
  BootpOp,
  DhcpMessage,
  DhcpMessageType,
  DhcpPort,
  InitReboot,
  readDhcp,
  stripClientOptions,
} from "../wire/dhcp.ts";
import {
  Ethernet,
  EtherType,
  ethernetDestination,
  ethernetSource,
  isValidEthernet,
} from "../wire/ethernet.ts";
import {
  checkIpv4,
  IpProtocol,
  Ipv4,
  ipv4Destination,
  ipv4FragmentOffset,
  ipv4MoreFragments,
  ipv4Protocol,
  ipv4Source,
  ipv4TotalLength,
} from "../wire/ipv4.ts";
import {
  isValidUdp,
  Udp,
  udpDestinationPort,
  udpLength,
  udpSourcePort,
  updateUdpChecksumAfterClearing,
} from "../wire/udp.ts";
import { isGlobal, LIMITED_BROADCAST, networkContains, UNSPECIFIED } from "./address.ts";
import { DhcpSnooper } from "./dhcp-snooper.ts";
import { DnsSnooper, UNDECIDED } from "./dns-snooper.ts";
import { LearnedNames } from "./learned-names.ts";
import type { Lease } from "./lease.ts";
import { NamePatterns } from "./name-patterns.ts";
import { isPass, Reason, type ReasonCode } from "./reasons.ts";
import { RuleAction, type RuleTable } from "./rules.ts";
import { SnoopEvents } from "./snoop-events.ts";

const DNS_PORT = 53;
const ETHERNET_HARDWARE_TYPE = 1;
const ETHERNET_ADDRESS_LENGTH = 6;
/** 224.0.0.0: from here on, multicast, reserved and broadcast; never a host's own address. */
const FIRST_MULTICAST = 0xe0000000;
/** No MAC is known yet (a MAC is a 48-bit integer, never negative). */
const UNKNOWN_MAC = -1;

export interface PolicyConfig {
  /** The VM's MAC address (48-bit integer). */
  vmMac: number;
  /** The host's address on the VM's network: DHCP replies come from it, the VM may always reach it. */
  gateway: number;
  /** The prefix length of the VM's network (the host link's), 1..32: other VMs live inside it. */
  prefixLength: number;
  /**
   * True unless the VM's rules allow everything (--allow 0.0.0.0/0): the VM then receives nothing
   * from other VMs, only from the host, and the host link isolates it too where it can.
   */
  isolated: boolean;
  /** Compiled with `names` as its learned addresses, when names are given. */
  rules: RuleTable;
  /** What DNS answers taught (names in --allow, and the report); none when left out. */
  names?: LearnedNames;
}

export class Policy {
  readonly vmMac: number;
  readonly gateway: number;
  readonly prefixLength: number;
  readonly isolated: boolean;
  readonly rules: RuleTable;
  /** What the snoopers (and the gateway's MAC) taught since the loop last drained it. */
  readonly events = new SnoopEvents();
  readonly dhcp: DhcpSnooper;
  readonly dns: DnsSnooper;
  /** The lease the DHCP snooper learned. */
  readonly lease: Lease;
  /** The MAC that frames from the gateway's own address come from, -1 until one arrived. */
  gatewayMac = UNKNOWN_MAC;
  /** The VM's own DHCP messages are read into this (the snooper has its own for the host's). */
  private readonly clientMessage = new DhcpMessage();

  constructor(config: PolicyConfig) {
    if (!Number.isInteger(config.prefixLength) || config.prefixLength < 1 || config.prefixLength > 32) {
      throw new RangeError(`the VM network's prefix length must be 1..32, got ${config.prefixLength}`);
    }
    this.vmMac = config.vmMac;
    this.gateway = config.gateway;
    this.prefixLength = config.prefixLength;
    this.isolated = config.isolated;
    this.rules = config.rules;
    this.dhcp = new DhcpSnooper(this.vmMac, this.gateway, this.events);
    this.lease = this.dhcp.lease;
    const names = config.names ?? new LearnedNames(new NamePatterns([]));
    this.dns = new DnsSnooper(names, this.events, config.rules.deniesByDefault);
  }

  /** Decides whether a frame the VM sent may go to the host. */
  decideFromVm(bytes: Uint8Array, offset: number, length: number, nowMs: number): ReasonCode {
    return this.classifyFromVm(bytes, offset, length, nowMs);
  }

  /** Decides whether a frame from the host may go to the VM, and snoops DHCP replies addressed to it. */
  observeFromHost(bytes: Uint8Array, offset: number, length: number, nowMs: number): ReasonCode {
    return this.classifyFromHost(bytes, offset, length, nowMs);
  }

  private classifyFromVm(bytes: Uint8Array, offset: number, length: number, nowMs: number): ReasonCode {
    if (!isValidEthernet(bytes, offset, length)) return Reason.MALFORMED_ETHERNET;
    if (ethernetSource(bytes, offset) !== this.vmMac) return Reason.MAC_SPOOF;
    const etherType = readU16(bytes, offset + Ethernet.ETHER_TYPE);
    const payload = offset + Ethernet.HEADER_LENGTH;
    const payloadLength = length - Ethernet.HEADER_LENGTH;
    if (etherType === EtherType.IPV4) return this.classifyIpv4FromVm(bytes, payload, payloadLength, nowMs);
    if (etherType === EtherType.ARP) return this.classifyArpFromVm(bytes, payload, payloadLength, nowMs);
    return Reason.NON_IP_ETHERTYPE;
  }

  private classifyArpFromVm(bytes: Uint8Array, arp: number, length: number, nowMs: number): ReasonCode {
    if (!isEthernetIpv4Arp(bytes, arp, length)) return Reason.MALFORMED_ARP;
    const operation = arpOperation(bytes, arp);
    if (operation !== ArpOperation.REQUEST && operation !== ArpOperation.REPLY) return Reason.ARP_OPERATION;
    if (arpSenderMac(bytes, arp) !== this.vmMac) return Reason.ARP_SPOOF;
    const senderIp = arpSenderIp(bytes, arp);
    if (this.lease.isValidAt(nowMs)) {
      return senderIp === this.lease.address ? Reason.PASS_ARP : Reason.ARP_SPOOF;
    }
    // Without a lease the VM may only probe (RFC 5227 ARP probes carry sender 0.0.0.0).
    return senderIp === UNSPECIFIED ? Reason.PASS_ARP : Reason.ARP_SPOOF;
  }

  private classifyIpv4FromVm(bytes: Uint8Array, ip: number, available: number, nowMs: number): ReasonCode {
    const headerLength = checkIpv4(bytes, ip, available);
    if (headerLength === 0) return Reason.MALFORMED_IPV4;
    if (headerLength !== Ipv4.MINIMUM_HEADER_LENGTH) return Reason.IPV4_OPTIONS;
    const source = ipv4Source(bytes, ip);
    const destination = ipv4Destination(bytes, ip);
    // Ports exist only in the first fragment; later fragments never match a port-based rule.
    const isFirstUdp = ipv4Protocol(bytes, ip) === IpProtocol.UDP && ipv4FragmentOffset(bytes, ip) === 0;
    const udp = ip + headerLength;
    const udpAvailable = ipv4TotalLength(bytes, ip) - headerLength;

    // Anything for the DHCP server port meets the DHCP checks wherever it is addressed: a host's
    // DHCP server reads port 67 on each of its addresses, and a VM that may reach the gateway (or,
    // with --allow, any of the host's addresses) must not reach the server past those checks. Only
    // the client port talks to it (RFC 2131 4.1: client 68, server 67); UDP from port 68 to any
    // other port is no DHCP and meets the rules like any packet.
    if (
      isFirstUdp &&
      udpAvailable >= Udp.HEADER_LENGTH &&
      udpDestinationPort(bytes, udp) === DhcpPort.SERVER
    ) {
      if (udpSourcePort(bytes, udp) !== DhcpPort.CLIENT) return Reason.DHCP_PORTS;
      const verdict = this.classifyDhcpFromVm(bytes, ip, udp, udpAvailable, source, destination, nowMs);
      return isPass(verdict) ? this.checkNextHop(bytes, ip, verdict) : verdict;
    }

    const udpValid = isFirstUdp && isValidUdp(bytes, udp, udpAvailable);
    if (this.lease.isValidSource(source, nowMs)) {
      const verdict = this.classifyFromLeasedAddress(
        bytes,
        ip,
        headerLength,
        udp,
        isFirstUdp,
        udpValid,
        destination,
        nowMs,
      );
      // For the report: which name's addresses carried traffic, and which were refused.
      const names = this.dns.names;
      if (isPass(verdict)) names.countForwarded(destination, nowMs);
      else if (verdict === Reason.BLOCKED_BY_RULE || verdict === Reason.NOT_ALLOWED_DESTINATION) {
        names.countDropped(destination);
      }
      return verdict;
    }
    if (!this.lease.isValidAt(nowMs)) return Reason.NO_LEASE;
    return Reason.IP_SPOOF;
  }

  /** A packet from the VM's own leased address: where may it go? */
  private classifyFromLeasedAddress(
    bytes: Uint8Array,
    ip: number,
    headerLength: number,
    udp: number,
    isFirstUdp: boolean,
    udpValid: boolean,
    destination: number,
    nowMs: number,
  ): ReasonCode {
    // DNS to a server of the lease is decided by the question's name when names are in play.
    const isDnsServer = this.lease.isDnsServer(destination);
    if (isDnsServer) {
      const byName = this.dns.decideQuery(bytes, ip, headerLength);
      if (byName !== UNDECIDED) return isPass(byName) ? this.checkNextHop(bytes, ip, byName) : byName;
    }
    let verdict = this.permittedDestination(bytes, udp, udpValid, destination, nowMs);
    if (isPass(verdict)) verdict = this.checkNextHop(bytes, ip, verdict);
    else if (verdict === Reason.NOT_ALLOWED_DESTINATION && isFirstUdp && !udpValid)
      verdict = Reason.MALFORMED_UDP;
    if (isDnsServer) this.dns.countUndecidedQuery(isPass(verdict));
    return verdict;
  }

  /**
   * Which MAC a permitted packet may be sent to. The Ethernet destination picks the next hop: a
   * packet for beyond the VM's network sent to another router's MAC on the bridge would go around
   * the host's routing, NAT and firewall. So:
   *
   * - For beyond the gateway's network: the gateway's MAC only, as learned from the host's own
   *   frames (classifyHostSource). Until it is known, nothing: the VM's ARP for the gateway is
   *   answered first, so this holds back only what a guest sends before it has resolved it.
   * - Inside the gateway's network: any unicast MAC. The destination address is on the link, so
   *   whichever host the frame reaches can only deliver it there, and the rules allowed that
   *   address already (softnet knows no other neighbour's MAC to check it against).
   * - A broadcast or multicast frame carries only what such frames are for: the limited and the
   *   network's broadcast address, and multicast groups (RFC 1112 6.4, RFC 919/922). A unicast
   *   packet in one would be flooded to every host on the bridge, any of them a router.
   */
  private checkNextHop(bytes: Uint8Array, ip: number, verdict: ReasonCode): ReasonCode {
    // Read again: a DHCP request may have been readdressed (sourceAsUnspecified).
    const destination = ipv4Destination(bytes, ip);
    const destinationMac = ethernetDestination(bytes, ip - Ethernet.HEADER_LENGTH);
    const onLink = networkContains(this.gateway, this.prefixLength, destination);
    if (isMulticastMac(destinationMac)) {
      if (destination >= FIRST_MULTICAST) return verdict;
      const hostBits = this.prefixLength === 32 ? 0 : 0xffffffff >>> this.prefixLength;
      if (onLink && hostBits !== 0 && (destination & hostBits) >>> 0 === hostBits) return verdict;
      return Reason.WRONG_NEXT_HOP;
    }
    if (onLink) return verdict;
    return destinationMac === this.gatewayMac ? verdict : Reason.WRONG_NEXT_HOP;
  }

  /**
   * Where a packet from the VM's leased address may go: your rules first, then global addresses,
   * the gateway, and UDP to the lease's DNS servers. NOT_ALLOWED_DESTINATION when none permits it.
   */
  private permittedDestination(
    bytes: Uint8Array,
    udp: number,
    udpValid: boolean,
    destination: number,
    nowMs: number,
  ): ReasonCode {
    const action = this.rules.lookup(destination, nowMs);
    if (action === RuleAction.ALLOW) return Reason.PASS_ALLOWED_BY_RULE;
    if (action === RuleAction.ALLOW_BY_NAME) return Reason.PASS_ALLOWED_BY_NAME;
    if (action === RuleAction.BLOCK) return Reason.BLOCKED_BY_RULE;
    if (isGlobal(destination)) return Reason.PASS_GLOBAL;
    if (destination === this.gateway) return Reason.PASS_GATEWAY;
    if (udpValid && udpDestinationPort(bytes, udp) === DNS_PORT && this.lease.isDnsServer(destination)) {
      return Reason.PASS_DNS;
    }
    return Reason.NOT_ALLOWED_DESTINATION;
  }

  /**
   * A DHCP client message (UDP 68 to 67). To the host's server (broadcast, or unicast to the
   * gateway) it passes before any rule, or the VM could never get or renew a lease; elsewhere it
   * needs what any packet needs. Either way it must be well formed, ask for this VM's MAC as a
   * client talking directly to the server, and come from a source a DHCP client uses:
   *
   * - 0.0.0.0, before the client has an address (RFC 2131 4.1; INIT, INIT-REBOOT, and REBINDING
   *   as busybox udhcpc sends it);
   * - the leased address, while softnet knows the lease (RENEWING and REBINDING, 4.4.5);
   * - while softnet knows no lease (it restarted under a VM that kept its address), a DHCPREQUEST
   *   whose source is its ciaddr: the client renewing or rebinding a lease softnet missed. That
   *   address may be another VM's, so it never reaches the host as a source: the request leaves
   *   readdressed from 0.0.0.0 to the limited broadcast (sourceAsUnspecified) as an INIT-REBOOT
   *   request for that address (asInitReboot: ciaddr 0, option 50, no option 54; RFC 2131
   *   4.3.2), which the server judges by its own lease table. It ACKs only the lease it holds for
   *   this VM's MAC, and answers anything else with a broadcast NAK (4.3.2). With ciaddr 0 it
   *   answers the client's hardware address (4.1), so the ACK reaches the VM without the host
   *   resolving an address softnet cannot vouch for (it drops the VM's ARP from it while it knows
   *   no lease). A request with no room for option 50 without growing (no 6 PAD bytes in a row,
   *   and fewer than 7 free at the end of its options) leaves readdressed only, ciaddr kept: a
   *   REBINDING request whose answers go to ciaddr, where ARP for that address leads. The host's
   *   stack answers no datagram from 0.0.0.0 with an ICMP error (RFC 1122 3.2.2).
   *
   * The options that would let the VM choose another identity at the server are cleared before it
   * leaves (stripClientOptions), so the server knows the VM by its MAC alone: one lease per VM,
   * never another client's, and no name another VM registered.
   */
  private classifyDhcpFromVm(
    bytes: Uint8Array,
    ip: number,
    udp: number,
    udpAvailable: number,
    source: number,
    destination: number,
    nowMs: number,
  ): ReasonCode {
    // Options in a later fragment would reach the server unread. No client fragments DHCP.
    if (ipv4MoreFragments(bytes, ip)) return Reason.MALFORMED_DHCP;
    if (!isValidUdp(bytes, udp, udpAvailable)) return Reason.MALFORMED_UDP;
    const dhcp = udp + Udp.HEADER_LENGTH;
    const dhcpLength = udpLength(bytes, udp) - Udp.HEADER_LENGTH;
    const message = this.clientMessage;
    if (!readDhcp(bytes, dhcp, dhcpLength, message)) return Reason.MALFORMED_DHCP;
    if (
      message.op !== BootpOp.REQUEST ||
      message.hardwareType !== ETHERNET_HARDWARE_TYPE ||
      message.hardwareLength !== ETHERNET_ADDRESS_LENGTH ||
      message.clientMac !== this.vmMac ||
      // A non-zero giaddr claims a relay: the server would pick the network from it and answer
      // the relay, not the VM.
      message.gatewayAddress !== UNSPECIFIED
    ) {
      return Reason.DHCP_SPOOF;
    }

    const toServer = destination === LIMITED_BROADCAST || destination === this.gateway;
    const leaseValid = this.lease.isValidAt(nowMs);
    let verdict: ReasonCode;
    let readdress = false;
    if (source === UNSPECIFIED) {
      if (!toServer) return leaseValid ? Reason.IP_SPOOF : Reason.NO_LEASE;
      verdict = Reason.PASS_DHCP;
    } else if (leaseValid) {
      if (source !== this.lease.address) return Reason.IP_SPOOF;
      verdict = toServer ? Reason.PASS_DHCP : this.permittedDestination(bytes, udp, true, destination, nowMs);
    } else {
      // No lease known: only a renewal of the address the client says it holds, to the server.
      if (source === this.gateway || source >= FIRST_MULTICAST || message.clientAddress !== source) {
        return Reason.IP_SPOOF;
      }
      if (!toServer || message.messageType !== DhcpMessageType.REQUEST) return Reason.NO_LEASE;
      verdict = Reason.PASS_DHCP;
      readdress = true;
    }
    if (!isPass(verdict)) return verdict;

    const clearedSum = stripClientOptions(bytes, dhcp, dhcpLength);
    if (clearedSum < 0) return Reason.MALFORMED_DHCP; // readDhcp walked the same list; never trust it
    if (clearedSum > 0) updateUdpChecksumAfterClearing(bytes, udp, clearedSum);
    if (readdress) {
      // Summed before and after: the rewrite moves bytes anywhere in the options. Rare (once per
      // renewal after a restart), so a walk over the message is cheap enough.
      const sumBefore = sumWords(bytes, dhcp, dhcpLength);
      const rewritten = asInitReboot(bytes, dhcp, dhcpLength, source);
      if (rewritten === InitReboot.MALFORMED) return Reason.MALFORMED_DHCP; // readDhcp walked it
      if (rewritten === InitReboot.REWRITTEN) {
        updateUdpChecksum(bytes, udp, sumBefore, sumWords(bytes, dhcp, dhcpLength));
      }
      sourceAsUnspecified(bytes, ip, udp);
    }
    return verdict;
  }

  private classifyFromHost(bytes: Uint8Array, offset: number, length: number, nowMs: number): ReasonCode {
    if (!isValidEthernet(bytes, offset, length)) return Reason.MALFORMED_ETHERNET;
    // A bridge floods a unicast frame to every port when it has not learned (or has forgotten)
    // where its destination MAC is: such a frame is someone else's, whatever it carries.
    const destinationMac = ethernetDestination(bytes, offset);
    if (destinationMac !== this.vmMac && !isMulticastMac(destinationMac)) return Reason.NOT_FOR_THIS_VM;
    const etherType = readU16(bytes, offset + Ethernet.ETHER_TYPE);
    const payload = offset + Ethernet.HEADER_LENGTH;
    const payloadLength = length - Ethernet.HEADER_LENGTH;
    const sourceMac = ethernetSource(bytes, offset);
    if (etherType === EtherType.ARP) {
      if (!isEthernetIpv4Arp(bytes, payload, payloadLength)) return Reason.MALFORMED_ARP;
      return this.classifyHostSource(arpSenderIp(bytes, payload), sourceMac, Reason.PASS_HOST_ARP);
    }
    if (etherType !== EtherType.IPV4) return Reason.NON_IP_ETHERTYPE;
    const headerLength = checkIpv4(bytes, payload, payloadLength);
    if (headerLength === 0) return Reason.MALFORMED_IPV4;
    if (destinationMac === this.vmMac || destinationMac === BROADCAST_MAC) {
      this.dhcp.observe(bytes, payload, payloadLength, nowMs);
    }
    const source = ipv4Source(bytes, payload);
    const verdict = this.classifyHostSource(source, sourceMac, Reason.PASS_HOST_IPV4);
    if (verdict === Reason.PASS_HOST_IPV4) {
      this.dns.names.countForwarded(source, nowMs);
      // Answers teach only from a server of the lease, to the leased address, through the gateway.
      if (
        destinationMac === this.vmMac &&
        sourceMac === this.gatewayMac &&
        this.lease.isDnsServer(source) &&
        ipv4Destination(bytes, payload) === this.lease.address &&
        this.lease.isValidAt(nowMs)
      ) {
        this.dns.observeResponse(bytes, payload, headerLength, nowMs);
      }
    }
    return verdict;
  }

  /**
   * Whether a VM may receive ARP or IPv4 from `source` (the ARP sender or IPv4 source address)
   * sent by `sourceMac`. Every VM behind softnet can only send from its own MAC and its leased
   * address (never the gateway's: see isDhcpClientSource), so:
   *
   * - From the gateway's address: the host itself. Passes, and its MAC is remembered as the
   *   gateway's (learned again whenever it changes: a Linux bridge's MAC can, as ports come and go).
   * - An isolated VM receives nothing else from its own network: any other address in it, and
   *   0.0.0.0 (DHCP and ARP probes), can only be another VM, whichever flags that VM's softnet has.
   *   Port isolation on the bridge does not stop them: a port with isolation off reaches all.
   * - From beyond its network (the internet, the LAN behind the host), an isolated VM takes only
   *   what the host routes to it: frames from the gateway's MAC, once that is known. This covers
   *   a VM whose lease lies outside the gateway's subnet (a bridge with more than one) and any
   *   device on the bridge that is not behind softnet.
   *
   * A VM with isolation off (--allow 0.0.0.0/0) receives from the other VMs as well, as upstream.
   */
  private classifyHostSource(source: number, sourceMac: number, pass: ReasonCode): ReasonCode {
    if (source === this.gateway) {
      if (sourceMac !== this.gatewayMac && !isMulticastMac(sourceMac)) {
        this.events.push({ kind: "gateway-mac", mac: sourceMac, first: this.gatewayMac === UNKNOWN_MAC });
        this.gatewayMac = sourceMac;
      }
      return pass;
    }
    if (!this.isolated) return pass;
    if (source === UNSPECIFIED || networkContains(this.gateway, this.prefixLength, source)) {
      return Reason.FROM_ANOTHER_VM;
    }
    if (this.gatewayMac !== UNKNOWN_MAC && sourceMac !== this.gatewayMac) return Reason.NOT_FROM_GATEWAY;
    return pass;
  }
}

/**
 * Readdresses a DHCP request in place from 0.0.0.0 to 255.255.255.255, in a broadcast frame
 * (Linux takes 0.0.0.0 as a source only towards the limited broadcast: ip_route_input_slow). The
 * IPv4 header and UDP checksums follow incrementally (RFC 1624 eqn. 3), the UDP one through its
 * pseudo-header (RFC 768); a UDP checksum of zero (none sent) stays zero.
 */
function sourceAsUnspecified(bytes: Uint8Array, ip: number, udp: number): void {
  const oldSum = addressWords(ipv4Source(bytes, ip)) + addressWords(ipv4Destination(bytes, ip));
  const newSum = addressWords(UNSPECIFIED) + addressWords(LIMITED_BROADCAST);
  writeU32(bytes, ip + Ipv4.SOURCE, UNSPECIFIED);
  writeU32(bytes, ip + Ipv4.DESTINATION, LIMITED_BROADCAST);
  const ipChecksum = readU16(bytes, ip + Ipv4.CHECKSUM);
  writeU16(bytes, ip + Ipv4.CHECKSUM, checksumAfterReplacing(ipChecksum, oldSum, newSum));
  updateUdpChecksum(bytes, udp, oldSum, newSum);
  writeMac(bytes, ip - Ethernet.HEADER_LENGTH + Ethernet.DESTINATION, BROADCAST_MAC);
}

/**
 * The UDP checksum after the words it covers changed from summing to `oldSum` to `newSum`
 * (RFC 1624 eqn. 3); a checksum of zero (none sent) stays zero, and a computed zero is sent as
 * all ones (RFC 768).
 */
function updateUdpChecksum(bytes: Uint8Array, udp: number, oldSum: number, newSum: number): void {
  const checksum = readU16(bytes, udp + Udp.CHECKSUM);
  if (checksum === 0) return;
  writeU16(bytes, udp + Udp.CHECKSUM, checksumAfterReplacing(checksum, oldSum, newSum) || 0xffff);
}

/** An IPv4 address as the sum of its two 16-bit words, as checksums see it. */
function addressWords(address: number): number {
  return (address >>> 16) + (address & 0xffff);
}
