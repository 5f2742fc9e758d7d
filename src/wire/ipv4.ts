/** IPv4 headers (RFC 791). */
import { formatIpv4, parseIpv4, readU16, readU32, writeU16, writeU32 } from "./bytes.ts";
import { internetChecksum } from "./checksum.ts";

/** Field offsets from the start of the IPv4 header. */
export const Ipv4 = {
  VERSION_AND_HEADER_LENGTH: 0, // 1: version (4 bits), IHL in 32-bit words (4 bits)
  TOS: 1, // 1
  TOTAL_LENGTH: 2, // 2: header + payload, bytes
  IDENTIFICATION: 4, // 2
  FLAGS_AND_FRAGMENT_OFFSET: 6, // 2: reserved, DF, MF (3 bits), offset in 8-byte units (13 bits)
  TTL: 8, // 1
  PROTOCOL: 9, // 1
  CHECKSUM: 10, // 2
  SOURCE: 12, // 4
  DESTINATION: 16, // 4
  MINIMUM_HEADER_LENGTH: 20,
} as const;

export const IpProtocol = { ICMP: 1, TCP: 6, UDP: 17 } as const;

const FLAG_DONT_FRAGMENT = 0x4000;
const FLAG_MORE_FRAGMENTS = 0x2000;
const FRAGMENT_OFFSET_MASK = 0x1fff;

/**
 * Validates an IPv4 header against the bytes that arrived and returns its length in bytes, or 0
 * when the packet is malformed: shorter than a header, not version 4, IHL < 5, IHL beyond the
 * total length, or a total length beyond what arrived. Trailing bytes (Ethernet padding) are fine.
 */
export function checkIpv4(bytes: Uint8Array, offset: number, available: number): number {
  if (available < Ipv4.MINIMUM_HEADER_LENGTH) return 0;
  const versionAndLength = bytes[offset];
  if (versionAndLength >>> 4 !== 4) return 0;
  const headerLength = (versionAndLength & 0x0f) * 4;
  if (headerLength < Ipv4.MINIMUM_HEADER_LENGTH) return 0;
  const totalLength = readU16(bytes, offset + Ipv4.TOTAL_LENGTH);
  if (totalLength < headerLength || totalLength > available) return 0;
  return headerLength;
}

export function ipv4HeaderLength(bytes: Uint8Array, ip: number): number {
  return (bytes[ip] & 0x0f) * 4;
}

export function ipv4TotalLength(bytes: Uint8Array, ip: number): number {
  return readU16(bytes, ip + Ipv4.TOTAL_LENGTH);
}

export function ipv4Protocol(bytes: Uint8Array, ip: number): number {
  return bytes[ip + Ipv4.PROTOCOL];
}

export function ipv4Source(bytes: Uint8Array, ip: number): number {
  return readU32(bytes, ip + Ipv4.SOURCE);
}

export function ipv4Destination(bytes: Uint8Array, ip: number): number {
  return readU32(bytes, ip + Ipv4.DESTINATION);
}

/** Offset of this fragment's data in the original datagram, in bytes. Non-zero: no L4 header here. */
export function ipv4FragmentOffset(bytes: Uint8Array, ip: number): number {
  return (readU16(bytes, ip + Ipv4.FLAGS_AND_FRAGMENT_OFFSET) & FRAGMENT_OFFSET_MASK) * 8;
}

export function ipv4MoreFragments(bytes: Uint8Array, ip: number): boolean {
  return (readU16(bytes, ip + Ipv4.FLAGS_AND_FRAGMENT_OFFSET) & FLAG_MORE_FRAGMENTS) !== 0;
}

/**
 * Writes a 20-byte IPv4 header (no options) with its checksum into bytes[ip, ip+20), for a packet
 * softnet makes itself. Identification 0 with Don't Fragment: an atomic datagram (DF set, not a
 * fragment), whose identification RFC 6864 4.1 lets a sender set to any value. Allocates nothing.
 */
export function writeIpv4Header(
  bytes: Uint8Array,
  ip: number,
  totalLength: number,
  protocol: number,
  source: number,
  destination: number,
  ttl: number,
): void {
  bytes[ip + Ipv4.VERSION_AND_HEADER_LENGTH] = 0x40 | (Ipv4.MINIMUM_HEADER_LENGTH / 4);
  bytes[ip + Ipv4.TOS] = 0;
  writeU16(bytes, ip + Ipv4.TOTAL_LENGTH, totalLength);
  writeU16(bytes, ip + Ipv4.IDENTIFICATION, 0);
  writeU16(bytes, ip + Ipv4.FLAGS_AND_FRAGMENT_OFFSET, FLAG_DONT_FRAGMENT);
  bytes[ip + Ipv4.TTL] = ttl;
  bytes[ip + Ipv4.PROTOCOL] = protocol;
  writeU16(bytes, ip + Ipv4.CHECKSUM, 0);
  writeU32(bytes, ip + Ipv4.SOURCE, source);
  writeU32(bytes, ip + Ipv4.DESTINATION, destination);
  writeU16(bytes, ip + Ipv4.CHECKSUM, internetChecksum(bytes, ip, Ipv4.MINIMUM_HEADER_LENGTH));
}

export interface Ipv4Repr {
  source: string;
  destination: string;
  protocol: number;
  ttl: number;
  identification: number;
  dontFragment: boolean;
  moreFragments: boolean;
  /** Bytes; a multiple of 8. */
  fragmentOffset: number;
  /** Raw option bytes, a multiple of 4 long. */
  options: Uint8Array;
  checksumValid: boolean;
}

export function parseIpv4Packet(bytes: Uint8Array): { repr: Ipv4Repr; payload: Uint8Array } | undefined {
  const headerLength = checkIpv4(bytes, 0, bytes.length);
  if (headerLength === 0) return undefined;
  const flags = readU16(bytes, Ipv4.FLAGS_AND_FRAGMENT_OFFSET);
  const repr: Ipv4Repr = {
    source: formatIpv4(ipv4Source(bytes, 0)),
    destination: formatIpv4(ipv4Destination(bytes, 0)),
    protocol: ipv4Protocol(bytes, 0),
    ttl: bytes[Ipv4.TTL],
    identification: readU16(bytes, Ipv4.IDENTIFICATION),
    dontFragment: (flags & FLAG_DONT_FRAGMENT) !== 0,
    moreFragments: (flags & FLAG_MORE_FRAGMENTS) !== 0,
    fragmentOffset: (flags & FRAGMENT_OFFSET_MASK) * 8,
    options: bytes.slice(Ipv4.MINIMUM_HEADER_LENGTH, headerLength),
    checksumValid: internetChecksum(bytes, 0, headerLength) === 0,
  };
  return { repr, payload: bytes.subarray(headerLength, ipv4TotalLength(bytes, 0)) };
}

export const defaultIpv4Fields = {
  ttl: 64,
  identification: 0,
  dontFragment: true,
  moreFragments: false,
  fragmentOffset: 0,
  options: new Uint8Array(0),
} as const;

/** Builds an IPv4 packet with a correct header checksum. */
export function emitIpv4(
  repr: Omit<Ipv4Repr, "checksumValid" | keyof typeof defaultIpv4Fields> & Partial<Ipv4Repr>,
  payload: Uint8Array,
): Uint8Array {
  const options = repr.options ?? defaultIpv4Fields.options;
  if (options.length % 4 !== 0 || options.length > 40)
    throw new RangeError("IPv4 options must be 0..40 bytes, a multiple of 4");
  const headerLength = Ipv4.MINIMUM_HEADER_LENGTH + options.length;
  const packet = new Uint8Array(headerLength + payload.length);
  packet[Ipv4.VERSION_AND_HEADER_LENGTH] = 0x40 | (headerLength / 4);
  writeU16(packet, Ipv4.TOTAL_LENGTH, packet.length);
  writeU16(packet, Ipv4.IDENTIFICATION, repr.identification ?? defaultIpv4Fields.identification);
  const fragmentOffset = repr.fragmentOffset ?? 0;
  if (fragmentOffset % 8 !== 0) throw new RangeError("fragment offset must be a multiple of 8");
  const flags =
    ((repr.dontFragment ?? defaultIpv4Fields.dontFragment) ? FLAG_DONT_FRAGMENT : 0) |
    ((repr.moreFragments ?? false) ? FLAG_MORE_FRAGMENTS : 0) |
    (fragmentOffset / 8);
  writeU16(packet, Ipv4.FLAGS_AND_FRAGMENT_OFFSET, flags);
  packet[Ipv4.TTL] = repr.ttl ?? defaultIpv4Fields.ttl;
  packet[Ipv4.PROTOCOL] = repr.protocol;
  writeU32(packet, Ipv4.SOURCE, parseIpv4(repr.source)!);
  writeU32(packet, Ipv4.DESTINATION, parseIpv4(repr.destination)!);
  packet.set(options, Ipv4.MINIMUM_HEADER_LENGTH);
  writeU16(packet, Ipv4.CHECKSUM, internetChecksum(packet, 0, headerLength));
  packet.set(payload, headerLength);
  return packet;
}
