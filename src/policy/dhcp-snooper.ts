/**
 * The DHCP snooper: learns the VM's lease from the host DHCP server's replies (the ACK's address,
 * lease time, DNS servers and server identifier) and forgets it on a NAK. It owns the Lease that
 * the VM-side decisions read. Pure and allocation-free: it reads a frame in place and reports what
 * it learned as a shared event.
 */
import { BootpOp, DhcpMessage, DhcpMessageType, DhcpPort, readDhcp } from "../wire/dhcp.ts";
import {
  checkIpv4,
  IpProtocol,
  ipv4FragmentOffset,
  ipv4Protocol,
  ipv4Source,
  ipv4TotalLength,
} from "../wire/ipv4.ts";
import { isValidUdp, Udp, udpDestinationPort, udpLength, udpSourcePort } from "../wire/udp.ts";
import { UNSPECIFIED } from "./address.ts";
import { Lease } from "./lease.ts";
import { LEASE_GRANTED, LEASE_REFUSED, type SnoopEvents } from "./snoop-events.ts";

export class DhcpSnooper {
  readonly lease = new Lease();
  private readonly message = new DhcpMessage();

  constructor(
    private readonly vmMac: number,
    private readonly gateway: number,
    private readonly events: SnoopEvents,
  ) {}

  /**
   * Reads an IPv4 packet from the host (at `ip`, `available` bytes) that is addressed to the VM's
   * MAC or broadcast. Only replies from the gateway, about this VM's MAC, count; a malformed reply
   * is ignored (it still reaches the VM, whose own client judges it, as in the original).
   */
  observe(bytes: Uint8Array, ip: number, available: number, nowMs: number): void {
    const headerLength = checkIpv4(bytes, ip, available);
    if (headerLength === 0) return;
    if (ipv4Source(bytes, ip) !== this.gateway) return;
    if (ipv4Protocol(bytes, ip) !== IpProtocol.UDP || ipv4FragmentOffset(bytes, ip) !== 0) return;
    const udp = ip + headerLength;
    if (!isValidUdp(bytes, udp, ipv4TotalLength(bytes, ip) - headerLength)) return;
    if (udpSourcePort(bytes, udp) !== DhcpPort.SERVER && udpDestinationPort(bytes, udp) !== DhcpPort.CLIENT)
      return;
    const message = this.message;
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
        message.serverIdentifier,
      );
      this.events.push(LEASE_GRANTED);
    } else if (message.messageType === DhcpMessageType.NAK) {
      this.lease.clear();
      this.events.push(LEASE_REFUSED);
    }
  }
}
