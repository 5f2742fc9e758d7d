/**
 * --reject: an answer for the VM when softnet drops a frame for its destination, so that the guest
 * fails at once ("Connection refused", "Packet filtered") instead of waiting for a timeout.
 * Cirrus Labs softnet only drops (its issue 31 asks for this); so does softnet without --reject.
 *
 * Only frames the policy dropped for where they go (`blocked-by-rule`, `not-allowed-destination`)
 * are answered, and only when they really are the VM's own: its MAC, its leased address, a unicast
 * destination. Those reasons already imply the MAC and the lease (policy.ts decides them last), and
 * buildRejectReply checks both again, so that no change to the policy's order can turn a reply on
 * for a spoofed frame. The answer:
 *
 * - TCP: a reset, as a TCP in the CLOSED state makes one (RFC 9293 3.10.7.1; RFC 793 p. 36): to a
 *   segment without ACK, <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK> where SYN and FIN count one
 *   each in SEG.LEN; to a segment with ACK, <SEQ=SEG.ACK><CTL=RST>. Never to a reset (RFC 9293
 *   3.10.7.1: "An incoming segment containing a RST is discarded").
 * - Anything else: ICMP destination unreachable, code 13 "communication administratively
 *   prohibited" (RFC 1812 5.2.7.1), quoting the dropped packet's IP header and the first 8 bytes of
 *   its data (RFC 792), which is what the guest's stack matches to the socket.
 *
 * Both come from the dropped packet's destination address (the guest's stack looks the TCP
 * connection up by it; ping names it) and from the gateway's MAC as the policy learned it
 * (policy.gatewayMac): to the guest, they are frames from its router, like all its off-link
 * traffic. Until softnet has seen a frame from the gateway's address it knows no gateway MAC, and
 * then it answers nothing (the frame is dropped silently, as without --reject). In practice that
 * never happens while a reply could be due: the lease the VM needs to send anything is learned
 * from the DHCP server's ACK, which comes from the gateway's own address and teaches its MAC.
 *
 * Never answered (RFC 1122 3.2.2, RFC 1812 4.3.2.7): an ICMP error message (or an ICMP type not
 * known to be a query), a fragment other than the first, a packet to a broadcast or multicast
 * address (IP or Ethernet), a source that is not one host's unicast address. A malformed packet
 * (truncated TCP, UDP or ICMP header) gets nothing either.
 *
 * Pure and allocation-free: buildRejectReply writes into a buffer the caller owns and returns the
 * reply's length (at most REJECT_REPLY_MAX_BYTES), or 0 when no reply is due.
 */

import { isMulticastMac, readU16, writeMac, writeU16 } from "../wire/bytes.ts";
import {
  Ethernet,
  EtherType,
  ethernetDestination,
  ethernetSource,
  isValidEthernet,
} from "../wire/ethernet.ts";
import { Icmp, IcmpType, isIcmpQuery, UnreachableCode, writeIcmpChecksum } from "../wire/icmp.ts";
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
  writeIpv4Header,
} from "../wire/ipv4.ts";
import {
  checkTcp,
  Tcp,
  TcpFlag,
  tcpAcknowledgment,
  tcpFlags,
  tcpSequence,
  writeTcpHeader,
} from "../wire/tcp.ts";
import { isValidUdp, Udp } from "../wire/udp.ts";
import type { Policy } from "./policy.ts";
import { REASON_COUNT, REJECT_REASONS } from "./reasons.ts";

const REJECTED = new Uint8Array(REASON_COUNT);
for (const reason of REJECT_REASONS) REJECTED[reason] = 1;

/** True for the reasons --reject answers (a flag of each reason's row in reasons.ts). */
export function isRejectReason(reason: number): boolean {
  return REJECTED[reason] === 1;
}

/** How much of the dropped packet's data an ICMP error quotes after its IP header (RFC 792). */
const QUOTED_DATA_BYTES = 8;
/** The largest IPv4 header: IHL 15 (RFC 791). Headers with options never get this far, but may. */
const MAXIMUM_IPV4_HEADER_BYTES = 60;
/** TTL of the replies: the usual initial value (RFC 1700's 64, Linux's and macOS's default). */
const REPLY_TTL = 64;

/** A TCP reset: Ethernet, IPv4 and TCP headers, no options, no data. */
export const TCP_RESET_BYTES =
  Ethernet.HEADER_LENGTH + Ipv4.MINIMUM_HEADER_LENGTH + Tcp.MINIMUM_HEADER_LENGTH;
/** The longest reply: ICMP quoting a header with 40 bytes of options and 8 bytes of data (110). */
export const REJECT_REPLY_MAX_BYTES =
  Ethernet.HEADER_LENGTH +
  Ipv4.MINIMUM_HEADER_LENGTH +
  Icmp.HEADER_LENGTH +
  MAXIMUM_IPV4_HEADER_BYTES +
  QUOTED_DATA_BYTES;

const FIRST_OCTET_THIS_NETWORK = 0;
const FIRST_OCTET_LOOPBACK = 127;
/** 224.0.0.0: multicast, then reserved (240/4) and the limited broadcast. */
const FIRST_NON_UNICAST = 0xe0000000;

/**
 * True when `address` can be one host's own address, as a source or a destination of a reply
 * (RFC 1122 3.2.1.3): not "this network" (0/8), loopback (127/8), multicast, reserved or limited
 * broadcast (224/3 and up), nor the network or broadcast address of the VM's network (a /31 or /32
 * has none, RFC 3021).
 */
export function isHostAddress(address: number, network: number, prefixLength: number): boolean {
  const firstOctet = address >>> 24;
  if (firstOctet === FIRST_OCTET_THIS_NETWORK || firstOctet === FIRST_OCTET_LOOPBACK) return false;
  if (address >= FIRST_NON_UNICAST) return false;
  if (prefixLength > 30) return true;
  // prefixLength is 1..30 here (Policy refuses 0), so both shifts are by 2..31 bits.
  if (address >>> (32 - prefixLength) !== network >>> (32 - prefixLength)) return true;
  const hostMask = 0xffffffff >>> prefixLength;
  const host = (address & hostMask) >>> 0;
  return host !== 0 && host !== hostMask;
}

/**
 * Writes the answer to a frame the policy dropped for `reason` (bytes[offset, offset+length)) into
 * out[outOffset, ...), which must have REJECT_REPLY_MAX_BYTES of room. Returns the reply's length,
 * or 0 when none is due (see the top of this file). Never throws on any input; allocates nothing.
 */
export function buildRejectReply(
  policy: Policy,
  reason: number,
  bytes: Uint8Array,
  offset: number,
  length: number,
  nowMs: number,
  out: Uint8Array,
  outOffset: number,
): number {
  if (!isRejectReason(reason)) return 0;
  const gatewayMac = policy.gatewayMac;
  if (gatewayMac < 0) return 0; // no gateway MAC learned yet: drop silently
  if (!isValidEthernet(bytes, offset, length)) return 0;
  if (readU16(bytes, offset + Ethernet.ETHER_TYPE) !== EtherType.IPV4) return 0;
  const vmMac = ethernetSource(bytes, offset);
  if (vmMac !== policy.vmMac || isMulticastMac(vmMac)) return 0;
  if (isMulticastMac(ethernetDestination(bytes, offset))) return 0; // broadcast or multicast frame

  const ip = offset + Ethernet.HEADER_LENGTH;
  const headerLength = checkIpv4(bytes, ip, length - Ethernet.HEADER_LENGTH);
  if (headerLength === 0) return 0;
  const source = ipv4Source(bytes, ip);
  const destination = ipv4Destination(bytes, ip);
  if (!policy.lease.isValidSource(source, nowMs)) return 0;
  const { gateway, prefixLength } = policy;
  if (!isHostAddress(source, gateway, prefixLength) || !isHostAddress(destination, gateway, prefixLength)) {
    return 0;
  }
  if (ipv4FragmentOffset(bytes, ip) !== 0) return 0; // only the first fragment has the headers
  const fragmented = ipv4MoreFragments(bytes, ip);
  const protocol = ipv4Protocol(bytes, ip);
  const l4 = ip + headerLength;
  const l4Length = ipv4TotalLength(bytes, ip) - headerLength;

  if (protocol === IpProtocol.TCP) {
    const tcpHeaderLength = checkTcp(bytes, l4, l4Length);
    if (tcpHeaderLength === 0) return 0;
    if ((tcpFlags(bytes, l4) & TcpFlag.RST) !== 0) return 0;
    // SEG.LEN of a first fragment is unknown (its data continues elsewhere): ICMP says enough.
    if (!fragmented) {
      return writeReset(
        bytes,
        l4,
        l4Length - tcpHeaderLength,
        source,
        destination,
        vmMac,
        gatewayMac,
        out,
        outOffset,
      );
    }
  } else if (protocol === IpProtocol.UDP) {
    if (fragmented ? l4Length < Udp.HEADER_LENGTH : !isValidUdp(bytes, l4, l4Length)) return 0;
  } else if (protocol === IpProtocol.ICMP) {
    if (l4Length < Icmp.HEADER_LENGTH || !isIcmpQuery(bytes[l4 + Icmp.TYPE])) return 0;
  }
  const quoted = headerLength + Math.min(QUOTED_DATA_BYTES, l4Length);
  return writeProhibited(bytes, ip, quoted, source, destination, vmMac, gatewayMac, out, outOffset);
}

/** Ethernet header of a reply: to the VM, from the gateway. */
function writeEthernetHeader(out: Uint8Array, frame: number, vmMac: number, gatewayMac: number): void {
  writeMac(out, frame + Ethernet.DESTINATION, vmMac);
  writeMac(out, frame + Ethernet.SOURCE, gatewayMac);
  writeU16(out, frame + Ethernet.ETHER_TYPE, EtherType.IPV4);
}

/** The reset for the TCP segment at bytes[tcp...] with `dataLength` bytes of data (RFC 9293 3.10.7.1). */
function writeReset(
  bytes: Uint8Array,
  tcp: number,
  dataLength: number,
  vmAddress: number,
  peerAddress: number,
  vmMac: number,
  gatewayMac: number,
  out: Uint8Array,
  frame: number,
): number {
  const flags = tcpFlags(bytes, tcp);
  let sequence: number;
  let acknowledgment: number;
  let replyFlags: number;
  if ((flags & TcpFlag.ACK) !== 0) {
    sequence = tcpAcknowledgment(bytes, tcp);
    acknowledgment = 0;
    replyFlags = TcpFlag.RST;
  } else {
    const segmentLength =
      dataLength + ((flags & TcpFlag.SYN) !== 0 ? 1 : 0) + ((flags & TcpFlag.FIN) !== 0 ? 1 : 0);
    sequence = 0;
    acknowledgment = (tcpSequence(bytes, tcp) + segmentLength) >>> 0;
    replyFlags = TcpFlag.RST | TcpFlag.ACK;
  }
  const replyIp = frame + Ethernet.HEADER_LENGTH;
  const replyTcp = replyIp + Ipv4.MINIMUM_HEADER_LENGTH;
  writeEthernetHeader(out, frame, vmMac, gatewayMac);
  writeIpv4Header(
    out,
    replyIp,
    Ipv4.MINIMUM_HEADER_LENGTH + Tcp.MINIMUM_HEADER_LENGTH,
    IpProtocol.TCP,
    peerAddress,
    vmAddress,
    REPLY_TTL,
  );
  writeTcpHeader(
    out,
    replyTcp,
    Tcp.MINIMUM_HEADER_LENGTH,
    peerAddress,
    vmAddress,
    readU16(bytes, tcp + Tcp.DESTINATION_PORT),
    readU16(bytes, tcp + Tcp.SOURCE_PORT),
    sequence,
    acknowledgment,
    replyFlags,
    0,
  );
  return TCP_RESET_BYTES;
}

/**
 * ICMP destination unreachable, administratively prohibited, quoting bytes[ip, ip+quoted): the
 * dropped packet's IP header and up to 8 bytes of its data (RFC 792; RFC 1812 5.2.7.1).
 */
function writeProhibited(
  bytes: Uint8Array,
  ip: number,
  quoted: number,
  vmAddress: number,
  peerAddress: number,
  vmMac: number,
  gatewayMac: number,
  out: Uint8Array,
  frame: number,
): number {
  const replyIp = frame + Ethernet.HEADER_LENGTH;
  const icmp = replyIp + Ipv4.MINIMUM_HEADER_LENGTH;
  const icmpLength = Icmp.HEADER_LENGTH + quoted;
  writeEthernetHeader(out, frame, vmMac, gatewayMac);
  writeIpv4Header(
    out,
    replyIp,
    Ipv4.MINIMUM_HEADER_LENGTH + icmpLength,
    IpProtocol.ICMP,
    peerAddress,
    vmAddress,
    REPLY_TTL,
  );
  out[icmp + Icmp.TYPE] = IcmpType.DESTINATION_UNREACHABLE;
  out[icmp + Icmp.CODE] = UnreachableCode.ADMINISTRATIVELY_PROHIBITED;
  // Bytes 4..8 are unused for this code (RFC 792; RFC 1191's next-hop MTU is for code 4 only).
  writeU16(out, icmp + 4, 0);
  writeU16(out, icmp + 6, 0);
  const quote = icmp + Icmp.HEADER_LENGTH;
  for (let i = 0; i < quoted; i++) out[quote + i] = bytes[ip + i]; // no subarray: no view per reply
  writeIcmpChecksum(out, icmp, icmpLength);
  return Ethernet.HEADER_LENGTH + Ipv4.MINIMUM_HEADER_LENGTH + icmpLength;
}

/**
 * Replies per second each reject reason may send, and how many may go at once. Replies go to the
 * VM alone (its MAC, its leased address), never to a third party, so they cannot be reflected or
 * amplified at anyone; the limit bounds what a guest can make softnet do on its behalf. 100 a
 * second with a burst of 100 lets every connection a busy guest opens at once to blocked addresses
 * (a browser, a package manager trying its mirrors) fail at once; beyond that frames are dropped
 * silently, as without --reject, and the guest waits for its own timeout. Linux limits its own
 * ICMP errors in the same range (net.ipv4.icmp_msgs_per_sec 1000 with icmp_msgs_burst 50 for a
 * whole host, Documentation/networking/ip-sysctl.rst). A reply costs about what forwarding a frame
 * costs, so 200 a second are nothing next to the hundreds of thousands of frames softnet forwards.
 */
export const REJECT_REPLIES_PER_SECOND = 100;
export const REJECT_REPLY_BURST = 100;

/** What Rejecter.answer returns when the reply was due but the reason's bucket was empty. */
export const RATE_LIMITED = -1;

/**
 * buildRejectReply behind a token bucket per reason (two Float64Arrays indexed by reason: nothing
 * is allocated per frame). The clock is passed in, as everywhere in the policy.
 */
export class Rejecter {
  private readonly tokens: Float64Array;
  private readonly refilledAtMs: Float64Array;

  constructor(
    private readonly policy: Policy,
    private readonly perSecond = REJECT_REPLIES_PER_SECOND,
    private readonly burst = REJECT_REPLY_BURST,
  ) {
    this.tokens = new Float64Array(REASON_COUNT).fill(burst);
    this.refilledAtMs = new Float64Array(REASON_COUNT).fill(Number.NEGATIVE_INFINITY);
  }

  /**
   * The answer to a frame dropped for `reason`, written into out[outOffset, ...) (room for
   * REJECT_REPLY_MAX_BYTES): its length; 0 when none is due; RATE_LIMITED when one was due but the
   * reason used up its replies for now. Only due replies take a token.
   */
  answer(
    reason: number,
    bytes: Uint8Array,
    offset: number,
    length: number,
    nowMs: number,
    out: Uint8Array,
    outOffset: number,
  ): number {
    const replyLength = buildRejectReply(this.policy, reason, bytes, offset, length, nowMs, out, outOffset);
    if (replyLength === 0) return 0;
    return this.take(reason, nowMs) ? replyLength : RATE_LIMITED;
  }

  private take(reason: number, nowMs: number): boolean {
    const elapsed = nowMs - this.refilledAtMs[reason];
    if (elapsed > 0) {
      this.tokens[reason] = Math.min(this.burst, this.tokens[reason] + (elapsed / 1000) * this.perSecond);
      this.refilledAtMs[reason] = nowMs;
    }
    if (this.tokens[reason] < 1) return false;
    this.tokens[reason] -= 1;
    return true;
  }
}
