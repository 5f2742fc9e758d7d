/**
 * The DNS snooper: what `--allow example.com` needs from the VM's DNS traffic.
 *
 * - Host to VM: it reads the answers that reach the VM's leased address from a DNS server the
 *   lease named (UDP, or TCP when one segment holds a whole message) and teaches the learned
 *   names (learned-names.ts) the addresses an allowed name stands for. An answer from any other
 *   server teaches nothing: a VM that may reach some resolver could otherwise claim that
 *   github.com lives anywhere.
 * - VM to host: it decides on queries to those servers by their question name: a query for an
 *   allowed name passes even where the rules block the server (names are learned from it); under
 *   default-deny (--block 0.0.0.0/0) a query for any other name is dropped, so DNS cannot carry
 *   data out under names nobody allowed. Every query name is counted for the report.
 *
 * Pure: frames are read in place; learning (once per DNS answer) is the only place that allocates.
 */
import { readU16 } from "../wire/bytes.ts";
import { DNS_PORT, readDnsMessage, readDnsQuestionName } from "../wire/dns.ts";
import {
  IpProtocol,
  ipv4FragmentOffset,
  ipv4MoreFragments,
  ipv4Protocol,
  ipv4TotalLength,
} from "../wire/ipv4.ts";
import { checkTcp, tcpDestinationPort, tcpSourcePort } from "../wire/tcp.ts";
import { isValidUdp, Udp, udpDestinationPort, udpLength, udpSourcePort } from "../wire/udp.ts";
import type { LearnedNames } from "./learned-names.ts";
import { Reason, type ReasonCode } from "./reasons.ts";
import type { SnoopEvents } from "./snoop-events.ts";

/** decideQuery's answer when the query's name decides nothing: the rules do. */
export const UNDECIDED = -1;

/** DNS over TCP prefixes each message with its length (RFC 1035 4.2.2). */
const TCP_LENGTH_PREFIX = 2;

export class DnsSnooper {
  /** The last query's name while the rules decide on it (see countUndecidedQuery). */
  private pendingQueryName: string | undefined;

  constructor(
    readonly names: LearnedNames,
    private readonly events: SnoopEvents,
    /** The rules deny what they do not allow (--block 0.0.0.0/0). */
    private readonly defaultDeny: boolean,
  ) {}

  /**
   * A packet from the VM's leased address to a DNS server of its lease (at `ip`, IPv4 header
   * `headerLength` bytes, already checked), port 53 or not. Returns PASS_DNS or
   * DNS_NAME_NOT_ALLOWED when the name decides, UNDECIDED when the rules must (then call
   * countUndecidedQuery with their verdict).
   */
  decideQuery(bytes: Uint8Array, ip: number, headerLength: number): ReasonCode {
    this.pendingQueryName = undefined;
    if (ipv4FragmentOffset(bytes, ip) !== 0) return UNDECIDED;
    const active = this.names.active;
    const transport = ip + headerLength;
    const available = ipv4TotalLength(bytes, ip) - headerLength;
    let name: string | undefined;
    const protocol = ipv4Protocol(bytes, ip);
    if (protocol === IpProtocol.UDP) {
      if (!isValidUdp(bytes, transport, available) || udpDestinationPort(bytes, transport) !== DNS_PORT) {
        return UNDECIDED;
      }
      name = readDnsQuestionName(
        bytes,
        transport + Udp.HEADER_LENGTH,
        udpLength(bytes, transport) - Udp.HEADER_LENGTH,
      );
    } else if (protocol === IpProtocol.TCP) {
      const tcpHeader = checkTcp(bytes, transport, available);
      if (tcpHeader === 0 || tcpDestinationPort(bytes, transport) !== DNS_PORT) return UNDECIDED;
      const data = transport + tcpHeader;
      const dataLength = available - tcpHeader;
      // A segment without data (the handshake, acknowledgements, the close) carries no name.
      if (dataLength === 0) return active ? Reason.PASS_DNS : UNDECIDED;
      if (dataLength > TCP_LENGTH_PREFIX && readU16(bytes, data) === dataLength - TCP_LENGTH_PREFIX) {
        name = readDnsQuestionName(bytes, data + TCP_LENGTH_PREFIX, dataLength - TCP_LENGTH_PREFIX);
      }
    } else {
      return UNDECIDED;
    }
    if (name === undefined) return active && this.defaultDeny ? Reason.DNS_NAME_NOT_ALLOWED : UNDECIDED;
    if (active && this.names.allowedPattern(name) !== undefined) {
      this.names.countQuery(name, true);
      return Reason.PASS_DNS;
    }
    if (active && this.defaultDeny) {
      this.names.countQuery(name, false);
      return Reason.DNS_NAME_NOT_ALLOWED;
    }
    this.pendingQueryName = name;
    return UNDECIDED;
  }

  /** Counts the query decideQuery left to the rules, with the rules' verdict. */
  countUndecidedQuery(passed: boolean): void {
    if (this.pendingQueryName === undefined) return;
    this.names.countQuery(this.pendingQueryName, passed);
    this.pendingQueryName = undefined;
  }

  /**
   * A packet that reaches the VM's leased address from a DNS server of its lease, through the
   * gateway (the caller checks all three). A whole DNS response from port 53 teaches the learned
   * names; anything else is ignored. A fragmented answer is not read (its records would be in
   * fragments softnet does not reassemble).
   */
  observeResponse(bytes: Uint8Array, ip: number, headerLength: number, nowMs: number): void {
    if (ipv4FragmentOffset(bytes, ip) !== 0 || ipv4MoreFragments(bytes, ip)) return;
    const transport = ip + headerLength;
    const available = ipv4TotalLength(bytes, ip) - headerLength;
    const protocol = ipv4Protocol(bytes, ip);
    let message: ReturnType<typeof readDnsMessage>;
    if (protocol === IpProtocol.UDP) {
      if (!isValidUdp(bytes, transport, available) || udpSourcePort(bytes, transport) !== DNS_PORT) return;
      message = readDnsMessage(
        bytes,
        transport + Udp.HEADER_LENGTH,
        udpLength(bytes, transport) - Udp.HEADER_LENGTH,
      );
    } else if (protocol === IpProtocol.TCP) {
      const tcpHeader = checkTcp(bytes, transport, available);
      if (tcpHeader === 0 || tcpSourcePort(bytes, transport) !== DNS_PORT) return;
      const data = transport + tcpHeader;
      const dataLength = available - tcpHeader;
      if (dataLength <= TCP_LENGTH_PREFIX || readU16(bytes, data) !== dataLength - TCP_LENGTH_PREFIX) return;
      message = readDnsMessage(bytes, data + TCP_LENGTH_PREFIX, dataLength - TCP_LENGTH_PREFIX);
    } else {
      return;
    }
    if (message !== undefined) this.names.learn(message, nowMs, this.events);
  }
}
