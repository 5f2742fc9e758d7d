/** ARP (RFC 826) for Ethernet and IPv4, the only kind softnet forwards. */
import {
  formatIpv4,
  formatMac,
  parseIpv4,
  parseMac,
  readMac,
  readU16,
  readU32,
  writeMac,
  writeU16,
  writeU32,
} from "./bytes.ts";
import { EtherType } from "./ethernet.ts";

/** Field offsets from the start of the ARP packet (Ethernet/IPv4 sizes). */
export const Arp = {
  HARDWARE_TYPE: 0, // 2
  PROTOCOL_TYPE: 2, // 2
  HARDWARE_LENGTH: 4, // 1
  PROTOCOL_LENGTH: 5, // 1
  OPERATION: 6, // 2
  SENDER_HARDWARE_ADDRESS: 8, // 6
  SENDER_PROTOCOL_ADDRESS: 14, // 4
  TARGET_HARDWARE_ADDRESS: 18, // 6
  TARGET_PROTOCOL_ADDRESS: 24, // 4
  LENGTH: 28,
} as const;

export const ArpHardware = { ETHERNET: 1 } as const;
export const ArpOperation = { REQUEST: 1, REPLY: 2 } as const;

/** True when the packet is long enough and is Ethernet/IPv4 ARP (sizes 6 and 4). */
export function isEthernetIpv4Arp(bytes: Uint8Array, offset: number, length: number): boolean {
  return (
    length >= Arp.LENGTH &&
    readU16(bytes, offset + Arp.HARDWARE_TYPE) === ArpHardware.ETHERNET &&
    readU16(bytes, offset + Arp.PROTOCOL_TYPE) === EtherType.IPV4 &&
    bytes[offset + Arp.HARDWARE_LENGTH] === 6 &&
    bytes[offset + Arp.PROTOCOL_LENGTH] === 4
  );
}

export function arpOperation(bytes: Uint8Array, arp: number): number {
  return readU16(bytes, arp + Arp.OPERATION);
}

export function arpSenderMac(bytes: Uint8Array, arp: number): number {
  return readMac(bytes, arp + Arp.SENDER_HARDWARE_ADDRESS);
}

export function arpSenderIp(bytes: Uint8Array, arp: number): number {
  return readU32(bytes, arp + Arp.SENDER_PROTOCOL_ADDRESS);
}

export function arpTargetIp(bytes: Uint8Array, arp: number): number {
  return readU32(bytes, arp + Arp.TARGET_PROTOCOL_ADDRESS);
}

export interface ArpRepr {
  operation: number;
  senderMac: string;
  senderIp: string;
  targetMac: string;
  targetIp: string;
}

export function parseArp(bytes: Uint8Array): ArpRepr | undefined {
  if (!isEthernetIpv4Arp(bytes, 0, bytes.length)) return undefined;
  return {
    operation: arpOperation(bytes, 0),
    senderMac: formatMac(arpSenderMac(bytes, 0)),
    senderIp: formatIpv4(arpSenderIp(bytes, 0)),
    targetMac: formatMac(readMac(bytes, Arp.TARGET_HARDWARE_ADDRESS)),
    targetIp: formatIpv4(arpTargetIp(bytes, 0)),
  };
}

export function emitArp(repr: ArpRepr): Uint8Array {
  const packet = new Uint8Array(Arp.LENGTH);
  writeU16(packet, Arp.HARDWARE_TYPE, ArpHardware.ETHERNET);
  writeU16(packet, Arp.PROTOCOL_TYPE, EtherType.IPV4);
  packet[Arp.HARDWARE_LENGTH] = 6;
  packet[Arp.PROTOCOL_LENGTH] = 4;
  writeU16(packet, Arp.OPERATION, repr.operation);
  writeMac(packet, Arp.SENDER_HARDWARE_ADDRESS, parseMac(repr.senderMac)!);
  writeU32(packet, Arp.SENDER_PROTOCOL_ADDRESS, parseIpv4(repr.senderIp)!);
  writeMac(packet, Arp.TARGET_HARDWARE_ADDRESS, parseMac(repr.targetMac)!);
  writeU32(packet, Arp.TARGET_PROTOCOL_ADDRESS, parseIpv4(repr.targetIp)!);
  return packet;
}
