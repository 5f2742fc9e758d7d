/** TCP headers (RFC 9293): enough to read ports and flags. */
import { parseIpv4, readU16, readU32, writeU16, writeU32 } from "./bytes.ts";
import { finishChecksum, pseudoHeaderSum, sumWords } from "./checksum.ts";
import { IpProtocol } from "./ipv4.ts";

/** Field offsets from the start of the TCP header. */
export const Tcp = {
  SOURCE_PORT: 0, // 2
  DESTINATION_PORT: 2, // 2
  SEQUENCE: 4, // 4
  ACKNOWLEDGMENT: 8, // 4
  DATA_OFFSET: 12, // 1: header length in 32-bit words (high 4 bits)
  FLAGS: 13, // 1
  WINDOW: 14, // 2
  CHECKSUM: 16, // 2
  URGENT: 18, // 2
  MINIMUM_HEADER_LENGTH: 20,
} as const;

export const TcpFlag = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10, URG: 0x20 } as const;

/** Header length in bytes when the header is complete and consistent, else 0. */
export function checkTcp(bytes: Uint8Array, offset: number, available: number): number {
  if (available < Tcp.MINIMUM_HEADER_LENGTH) return 0;
  const headerLength = (bytes[offset + Tcp.DATA_OFFSET] >>> 4) * 4;
  if (headerLength < Tcp.MINIMUM_HEADER_LENGTH || headerLength > available) return 0;
  return headerLength;
}

export function tcpSourcePort(bytes: Uint8Array, tcp: number): number {
  return readU16(bytes, tcp + Tcp.SOURCE_PORT);
}

export function tcpDestinationPort(bytes: Uint8Array, tcp: number): number {
  return readU16(bytes, tcp + Tcp.DESTINATION_PORT);
}

export function tcpFlags(bytes: Uint8Array, tcp: number): number {
  return bytes[tcp + Tcp.FLAGS];
}

export function tcpSequence(bytes: Uint8Array, tcp: number): number {
  return readU32(bytes, tcp + Tcp.SEQUENCE);
}

export function tcpAcknowledgment(bytes: Uint8Array, tcp: number): number {
  return readU32(bytes, tcp + Tcp.ACKNOWLEDGMENT);
}

/**
 * Writes a 20-byte TCP header (no options, urgent pointer 0) at bytes[tcp, tcp+20) and its checksum
 * over the header and the `segmentLength - 20` payload bytes that follow it, with the IPv4
 * pseudo-header of `source` and `destination` (RFC 9293 3.1). Allocates nothing.
 */
export function writeTcpHeader(
  bytes: Uint8Array,
  tcp: number,
  segmentLength: number,
  source: number,
  destination: number,
  sourcePort: number,
  destinationPort: number,
  sequence: number,
  acknowledgment: number,
  flags: number,
  window: number,
): void {
  writeU16(bytes, tcp + Tcp.SOURCE_PORT, sourcePort);
  writeU16(bytes, tcp + Tcp.DESTINATION_PORT, destinationPort);
  writeU32(bytes, tcp + Tcp.SEQUENCE, sequence);
  writeU32(bytes, tcp + Tcp.ACKNOWLEDGMENT, acknowledgment);
  bytes[tcp + Tcp.DATA_OFFSET] = (Tcp.MINIMUM_HEADER_LENGTH / 4) << 4;
  bytes[tcp + Tcp.FLAGS] = flags;
  writeU16(bytes, tcp + Tcp.WINDOW, window);
  writeU16(bytes, tcp + Tcp.CHECKSUM, 0);
  writeU16(bytes, tcp + Tcp.URGENT, 0);
  const sum = sumWords(
    bytes,
    tcp,
    segmentLength,
    pseudoHeaderSum(source, destination, IpProtocol.TCP, segmentLength),
  );
  writeU16(bytes, tcp + Tcp.CHECKSUM, finishChecksum(sum));
}

export interface TcpRepr {
  sourcePort: number;
  destinationPort: number;
  sequence: number;
  acknowledgment: number;
  flags: number;
  window: number;
}

export function parseTcp(bytes: Uint8Array): { repr: TcpRepr; payload: Uint8Array } | undefined {
  const headerLength = checkTcp(bytes, 0, bytes.length);
  if (headerLength === 0) return undefined;
  return {
    repr: {
      sourcePort: tcpSourcePort(bytes, 0),
      destinationPort: tcpDestinationPort(bytes, 0),
      sequence: readU32(bytes, Tcp.SEQUENCE),
      acknowledgment: readU32(bytes, Tcp.ACKNOWLEDGMENT),
      flags: tcpFlags(bytes, 0),
      window: readU16(bytes, Tcp.WINDOW),
    },
    payload: bytes.subarray(headerLength),
  };
}

export function emitTcp(repr: TcpRepr, payload: Uint8Array, source: string, destination: string): Uint8Array {
  const segment = new Uint8Array(Tcp.MINIMUM_HEADER_LENGTH + payload.length);
  writeU16(segment, Tcp.SOURCE_PORT, repr.sourcePort);
  writeU16(segment, Tcp.DESTINATION_PORT, repr.destinationPort);
  writeU32(segment, Tcp.SEQUENCE, repr.sequence);
  writeU32(segment, Tcp.ACKNOWLEDGMENT, repr.acknowledgment);
  segment[Tcp.DATA_OFFSET] = (Tcp.MINIMUM_HEADER_LENGTH / 4) << 4;
  segment[Tcp.FLAGS] = repr.flags;
  writeU16(segment, Tcp.WINDOW, repr.window);
  segment.set(payload, Tcp.MINIMUM_HEADER_LENGTH);
  const sum = sumWords(
    segment,
    0,
    segment.length,
    pseudoHeaderSum(parseIpv4(source)!, parseIpv4(destination)!, IpProtocol.TCP, segment.length),
  );
  writeU16(segment, Tcp.CHECKSUM, finishChecksum(sum));
  return segment;
}
