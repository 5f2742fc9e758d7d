/**
 * Builders for whole Ethernet frames, written with the wire module's emit functions, so that every
 * test reads like the traffic it describes: `udpFrame({ from: VM, to: "8.8.8.8", dport: 53 })`.
 */
import { ArpOperation, emitArp } from "../../src/wire/arp.ts";
import { BootpOp, DhcpMessageType, DhcpPort, type DhcpRepr, emitDhcp } from "../../src/wire/dhcp.ts";
import { EtherType, emitEthernet } from "../../src/wire/ethernet.ts";
import { emitIcmp, IcmpType } from "../../src/wire/icmp.ts";
import { emitIpv4, IpProtocol, type Ipv4Repr } from "../../src/wire/ipv4.ts";
import { emitTcp, TcpFlag } from "../../src/wire/tcp.ts";
import { emitUdp } from "../../src/wire/udp.ts";

export const VM_MAC = "02:00:00:00:00:01";
export const OTHER_MAC = "02:00:00:00:00:99";
export const HOST_MAC = "5e:00:00:00:00:01";
export const BROADCAST = "ff:ff:ff:ff:ff:ff";
export const GATEWAY = "192.168.64.1";
export const VM_IP = "192.168.64.5";

interface IpFrameOptions {
  srcMac?: string;
  dstMac?: string;
  src?: string;
  dst: string;
  ip?: Partial<Ipv4Repr>;
}

function ipFrame(options: IpFrameOptions, protocol: number, l4: Uint8Array): Uint8Array {
  const packet = emitIpv4(
    { source: options.src ?? VM_IP, destination: options.dst, protocol, ...options.ip },
    l4,
  );
  return emitEthernet(
    { source: options.srcMac ?? VM_MAC, destination: options.dstMac ?? HOST_MAC, etherType: EtherType.IPV4 },
    packet,
  );
}

export function udpFrame(
  options: IpFrameOptions & { sport?: number; dport: number; payload?: Uint8Array },
): Uint8Array {
  const l4 = emitUdp(
    { sourcePort: options.sport ?? 40000, destinationPort: options.dport },
    options.payload ?? new Uint8Array(16),
    options.src ?? VM_IP,
    options.dst,
  );
  return ipFrame(options, IpProtocol.UDP, l4);
}

export function tcpFrame(
  options: IpFrameOptions & { sport?: number; dport: number; flags?: number; payload?: Uint8Array },
): Uint8Array {
  const l4 = emitTcp(
    {
      sourcePort: options.sport ?? 40000,
      destinationPort: options.dport,
      sequence: 1,
      acknowledgment: 0,
      flags: options.flags ?? TcpFlag.SYN,
      window: 65535,
    },
    options.payload ?? new Uint8Array(0),
    options.src ?? VM_IP,
    options.dst,
  );
  return ipFrame(options, IpProtocol.TCP, l4);
}

export function icmpEchoFrame(options: IpFrameOptions & { payloadLength?: number }): Uint8Array {
  const l4 = emitIcmp(
    { type: IcmpType.ECHO_REQUEST, code: 0, identifier: 1, sequence: 1 },
    new Uint8Array(options.payloadLength ?? 56),
  );
  return ipFrame(options, IpProtocol.ICMP, l4);
}

export function arpFrame(options: {
  srcMac?: string;
  dstMac?: string;
  operation?: number;
  senderMac?: string;
  senderIp: string;
  targetIp: string;
}): Uint8Array {
  const arp = emitArp({
    operation: options.operation ?? ArpOperation.REQUEST,
    senderMac: options.senderMac ?? options.srcMac ?? VM_MAC,
    senderIp: options.senderIp,
    targetMac: "00:00:00:00:00:00",
    targetIp: options.targetIp,
  });
  return emitEthernet(
    { source: options.srcMac ?? VM_MAC, destination: options.dstMac ?? BROADCAST, etherType: EtherType.ARP },
    arp,
  );
}

/**
 * A DHCP client message from the VM (DISCOVER/REQUEST), broadcast unless told otherwise. `dhcp`
 * overrides fields of the BOOTP/DHCP message (client identifier, giaddr, raw options, ...).
 */
export function dhcpClientFrame(
  options: {
    srcMac?: string;
    dstMac?: string;
    src?: string;
    dst?: string;
    chaddr?: string;
    messageType?: number;
    dhcp?: Partial<DhcpRepr>;
    ip?: Partial<Ipv4Repr>;
  } = {},
): Uint8Array {
  const dhcp = emitDhcp({
    op: BootpOp.REQUEST,
    xid: 0x1234_5678,
    clientMac: options.chaddr ?? options.srcMac ?? VM_MAC,
    messageType: options.messageType ?? DhcpMessageType.DISCOVER,
    ...options.dhcp,
  });
  return udpFrame({
    srcMac: options.srcMac,
    dstMac:
      options.dstMac ??
      (options.dst === undefined || options.dst === "255.255.255.255" ? BROADCAST : HOST_MAC),
    src: options.src ?? "0.0.0.0",
    dst: options.dst ?? "255.255.255.255",
    sport: DhcpPort.CLIENT,
    dport: DhcpPort.SERVER,
    payload: dhcp,
    ip: options.ip,
  });
}

/** A DHCP server reply from the host (OFFER/ACK/NAK) to the VM. */
export function dhcpServerFrame(
  options: Partial<DhcpRepr> & { messageType: number; from?: string; dstMac?: string; dst?: string },
): Uint8Array {
  const dhcp = emitDhcp({
    op: BootpOp.REPLY,
    xid: 0x1234_5678,
    clientMac: options.clientMac ?? VM_MAC,
    yourAddress: options.yourAddress ?? (options.messageType === DhcpMessageType.NAK ? "0.0.0.0" : VM_IP),
    serverIdentifier: options.serverIdentifier ?? GATEWAY,
    ...options,
  });
  return udpFrame({
    srcMac: HOST_MAC,
    dstMac: options.dstMac ?? VM_MAC,
    src: options.from ?? GATEWAY,
    dst: options.dst ?? VM_IP,
    sport: DhcpPort.SERVER,
    dport: DhcpPort.CLIENT,
    payload: dhcp,
  });
}

export function etherFrame(etherType: number, payloadLength = 46, srcMac = VM_MAC): Uint8Array {
  return emitEthernet({ source: srcMac, destination: HOST_MAC, etherType }, new Uint8Array(payloadLength));
}
