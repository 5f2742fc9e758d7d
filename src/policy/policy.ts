/**
 * softnet's filter: what a VM may send (decideFromVm) and what it may receive (observeFromHost),
 * plus DHCP snooping, which feeds the lease that the VM-side decisions depend on.
 *
 * Pure: no I/O, no clock of its own. Every call reads a frame in place (bytes[offset, offset+length))
 * and returns a Reason; nothing is allocated per frame.
 */

import { ArpOperation, arpOperation, arpSenderIp, arpSenderMac, isEthernetIpv4Arp } from "../wire/arp.ts";
import { BROADCAST_MAC, readU16 } from "../wire/bytes.ts";
import { BootpOp, DhcpMessage, DhcpMessageType, DhcpPort, readDhcp } from "../wire/dhcp.ts";
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
  ipv4Protocol,
  ipv4Source,
  ipv4TotalLength,
} from "../wire/ipv4.ts";
import { isValidUdp, Udp, udpDestinationPort, udpLength, udpSourcePort } from "../wire/udp.ts";
import { isGlobal, LIMITED_BROADCAST, UNSPECIFIED } from "./address.ts";
import { Lease } from "./lease.ts";
import { REASON_COUNT, Reason, type ReasonCode } from "./reasons.ts";
import { RuleAction, type RuleTable } from "./rules.ts";

const DNS_PORT = 53;
const ETHERNET_HARDWARE_TYPE = 1;

export interface PolicyConfig {
  /** The VM's MAC address (48-bit integer). */
  vmMac: number;
  /** The host's address on the VM's network: DHCP replies come from it, the VM may always reach it. */
  gateway: number;
  rules: RuleTable;
}

/** What the last observeFromHost() learned from DHCP, for the loop to log. */
export const SnoopEvent = { NONE: 0, LEASE_GRANTED: 1, LEASE_REFUSED: 2 } as const;

export class Policy {
  readonly vmMac: number;
  readonly gateway: number;
  readonly rules: RuleTable;
  readonly lease = new Lease();
  /** Frames per reason, both directions. */
  readonly counters = new Float64Array(REASON_COUNT);
  /** Set by observeFromHost when it snooped a DHCP ACK or NAK; the caller resets it. */
  lastSnoopEvent: number = SnoopEvent.NONE;
  private readonly dhcp = new DhcpMessage();

  constructor(config: PolicyConfig) {
    this.vmMac = config.vmMac;
    this.gateway = config.gateway;
    this.rules = config.rules;
  }

  /** Decides whether a frame the VM sent may go to the host. */
  decideFromVm(bytes: Uint8Array, offset: number, length: number, nowMs: number): ReasonCode {
    const reason = this.classifyFromVm(bytes, offset, length, nowMs);
    this.counters[reason]++;
    return reason;
  }

  /** Decides whether a frame from the host may go to the VM, and snoops DHCP replies addressed to it. */
  observeFromHost(bytes: Uint8Array, offset: number, length: number, nowMs: number): ReasonCode {
    const reason = this.classifyFromHost(bytes, offset, length, nowMs);
    this.counters[reason]++;
    return reason;
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
    const udpValid = isFirstUdp && isValidUdp(bytes, udp, udpAvailable);

    if (this.lease.isValidSource(source, nowMs)) {
      // Unicast renewals to the host's DHCP server keep the lease alive: no rule may break them.
      if (udpValid && destination === this.gateway && isDhcpRequestPorts(bytes, udp)) return Reason.PASS_DHCP;
      const action = this.rules.lookup(destination);
      if (action === RuleAction.ALLOW) return Reason.PASS_ALLOWED_BY_RULE;
      if (action === RuleAction.BLOCK) return Reason.BLOCKED_BY_RULE;
      if (isGlobal(destination)) return Reason.PASS_GLOBAL;
      if (destination === this.gateway) return Reason.PASS_GATEWAY;
      if (isFirstUdp && !udpValid) return Reason.MALFORMED_UDP;
      if (udpValid && udpDestinationPort(bytes, udp) === DNS_PORT && this.lease.isDnsServer(destination)) {
        return Reason.PASS_DNS;
      }
    }

    // DHCP to the host's server passes with or without a lease, or the VM could never get one:
    // broadcast, and unicast to the gateway too, so a VM that keeps its lease across a softnet
    // restart renews at T1 instead of losing its network until T2. The payload must ask on behalf
    // of this VM's MAC: otherwise a guest could drain the pool with invented client addresses.
    if ((destination === LIMITED_BROADCAST || destination === this.gateway) && isFirstUdp) {
      if (!udpValid) return Reason.MALFORMED_UDP;
      if (isDhcpRequestPorts(bytes, udp)) {
        return this.isOwnDhcpRequest(bytes, udp) ? Reason.PASS_DHCP : Reason.DHCP_SPOOF;
      }
    }

    if (!this.lease.isValidAt(nowMs)) return Reason.NO_LEASE;
    if (source !== this.lease.address) return Reason.IP_SPOOF;
    return Reason.NOT_ALLOWED_DESTINATION;
  }

  private isOwnDhcpRequest(bytes: Uint8Array, udp: number): boolean {
    const message = this.dhcp;
    const dhcpLength = udpLength(bytes, udp) - Udp.HEADER_LENGTH;
    if (!readDhcp(bytes, udp + Udp.HEADER_LENGTH, dhcpLength, message)) return false;
    return (
      message.op === BootpOp.REQUEST &&
      message.hardwareType === ETHERNET_HARDWARE_TYPE &&
      message.hardwareLength === 6 &&
      message.clientMac === this.vmMac
    );
  }

  private classifyFromHost(bytes: Uint8Array, offset: number, length: number, nowMs: number): ReasonCode {
    if (!isValidEthernet(bytes, offset, length)) return Reason.MALFORMED_ETHERNET;
    const etherType = readU16(bytes, offset + Ethernet.ETHER_TYPE);
    if (etherType === EtherType.ARP) return Reason.PASS_HOST_ARP;
    if (etherType !== EtherType.IPV4) return Reason.NON_IP_ETHERTYPE;
    const destinationMac = ethernetDestination(bytes, offset);
    if (destinationMac === this.vmMac || destinationMac === BROADCAST_MAC) {
      this.snoopDhcpReply(bytes, offset + Ethernet.HEADER_LENGTH, length - Ethernet.HEADER_LENGTH, nowMs);
    }
    return Reason.PASS_HOST_IPV4;
  }

  /**
   * Learns the lease from the host DHCP server's ACK (address, lease time, DNS servers) and forgets
   * it on a NAK. Only replies from the gateway, about this VM's MAC, count; anything malformed is
   * ignored (it still reaches the VM, whose own client judges it, as in the original).
   */
  private snoopDhcpReply(bytes: Uint8Array, ip: number, available: number, nowMs: number): void {
    const headerLength = checkIpv4(bytes, ip, available);
    if (headerLength === 0) return;
    if (ipv4Source(bytes, ip) !== this.gateway) return;
    if (ipv4Protocol(bytes, ip) !== IpProtocol.UDP || ipv4FragmentOffset(bytes, ip) !== 0) return;
    const udp = ip + headerLength;
    if (!isValidUdp(bytes, udp, ipv4TotalLength(bytes, ip) - headerLength)) return;
    if (udpSourcePort(bytes, udp) !== DhcpPort.SERVER && udpDestinationPort(bytes, udp) !== DhcpPort.CLIENT)
      return;
    const message = this.dhcp;
    if (!readDhcp(bytes, udp + Udp.HEADER_LENGTH, udpLength(bytes, udp) - Udp.HEADER_LENGTH, message)) return;
    if (message.op !== BootpOp.REPLY || message.clientMac !== this.vmMac) return;
    if (message.messageType === DhcpMessageType.ACK) {
      // An ACK without a lease time answers DHCPINFORM and grants nothing.
      if (message.leaseTimeSeconds === -1 || message.yourAddress === UNSPECIFIED) return;
      this.lease.grant(
        message.yourAddress,
        message.leaseTimeSeconds,
        nowMs,
        message.dnsServers,
        message.dnsServerCount,
      );
      this.lastSnoopEvent = SnoopEvent.LEASE_GRANTED;
    } else if (message.messageType === DhcpMessageType.NAK) {
      this.lease.clear();
      this.lastSnoopEvent = SnoopEvent.LEASE_REFUSED;
    }
  }
}

/** DHCP client-to-server ports, as the original matches them: source 68 or destination 67. */
function isDhcpRequestPorts(bytes: Uint8Array, udp: number): boolean {
  return udpSourcePort(bytes, udp) === DhcpPort.CLIENT || udpDestinationPort(bytes, udp) === DhcpPort.SERVER;
}
