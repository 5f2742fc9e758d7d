/** UDP headers (RFC 768). */
import { parseIpv4, readU16, writeU16 } from "./bytes.ts";
import { checksumAfterClearing, finishChecksum, pseudoHeaderSum, sumWords } from "./checksum.ts";
import { IpProtocol } from "./ipv4.ts";

/** Field offsets from the start of the UDP header. */
export const Udp = {
  SOURCE_PORT: 0, // 2
  DESTINATION_PORT: 2, // 2
  LENGTH: 4, // 2: header + data
  CHECKSUM: 6, // 2
  HEADER_LENGTH: 8,
} as const;

/** True when a full header arrived and its length field fits what arrived. */
export function isValidUdp(bytes: Uint8Array, offset: number, available: number): boolean {
  if (available < Udp.HEADER_LENGTH) return false;
  const length = readU16(bytes, offset + Udp.LENGTH);
  return length >= Udp.HEADER_LENGTH && length <= available;
}

export function udpSourcePort(bytes: Uint8Array, udp: number): number {
  return readU16(bytes, udp + Udp.SOURCE_PORT);
}

export function udpDestinationPort(bytes: Uint8Array, udp: number): number {
  return readU16(bytes, udp + Udp.DESTINATION_PORT);
}

export function udpLength(bytes: Uint8Array, udp: number): number {
  return readU16(bytes, udp + Udp.LENGTH);
}

/**
 * Keeps a datagram's checksum right after bytes of its payload were set to zero in place
 * (`clearedSum` as checksumAfterClearing takes it, word-aligned from the UDP header). A checksum of
 * zero means the sender sent none (RFC 768, allowed over IPv4) and stays zero; a computed zero is
 * sent as all ones.
 */
export function updateUdpChecksumAfterClearing(bytes: Uint8Array, udp: number, clearedSum: number): void {
  const checksum = readU16(bytes, udp + Udp.CHECKSUM);
  if (checksum === 0) return;
  writeU16(bytes, udp + Udp.CHECKSUM, checksumAfterClearing(checksum, clearedSum) || 0xffff);
}

export interface UdpRepr {
  sourcePort: number;
  destinationPort: number;
}

export function parseUdp(bytes: Uint8Array): { repr: UdpRepr; payload: Uint8Array } | undefined {
  if (!isValidUdp(bytes, 0, bytes.length)) return undefined;
  return {
    repr: { sourcePort: udpSourcePort(bytes, 0), destinationPort: udpDestinationPort(bytes, 0) },
    payload: bytes.subarray(Udp.HEADER_LENGTH, udpLength(bytes, 0)),
  };
}

/** Builds a UDP datagram whose checksum covers the IPv4 pseudo-header of source/destination. */
export function emitUdp(repr: UdpRepr, payload: Uint8Array, source: string, destination: string): Uint8Array {
  const datagram = new Uint8Array(Udp.HEADER_LENGTH + payload.length);
  writeU16(datagram, Udp.SOURCE_PORT, repr.sourcePort);
  writeU16(datagram, Udp.DESTINATION_PORT, repr.destinationPort);
  writeU16(datagram, Udp.LENGTH, datagram.length);
  datagram.set(payload, Udp.HEADER_LENGTH);
  const sum = sumWords(
    datagram,
    0,
    datagram.length,
    pseudoHeaderSum(parseIpv4(source)!, parseIpv4(destination)!, IpProtocol.UDP, datagram.length),
  );
  // A computed zero is sent as all ones: zero means "no checksum" in UDP over IPv4.
  writeU16(datagram, Udp.CHECKSUM, finishChecksum(sum) || 0xffff);
  return datagram;
}
