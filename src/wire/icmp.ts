/** ICMPv4 (RFC 792): type, code and the echo fields. */
import { readU16, writeU16 } from "./bytes.ts";
import { internetChecksum } from "./checksum.ts";

export const Icmp = {
  TYPE: 0, // 1
  CODE: 1, // 1
  CHECKSUM: 2, // 2
  IDENTIFIER: 4, // 2 (echo)
  SEQUENCE: 6, // 2 (echo)
  HEADER_LENGTH: 8,
} as const;

export const IcmpType = {
  ECHO_REPLY: 0,
  DESTINATION_UNREACHABLE: 3,
  SOURCE_QUENCH: 4,
  REDIRECT: 5,
  ECHO_REQUEST: 8,
  ROUTER_ADVERTISEMENT: 9,
  ROUTER_SOLICITATION: 10,
  TIME_EXCEEDED: 11,
  PARAMETER_PROBLEM: 12,
  TIMESTAMP: 13,
  TIMESTAMP_REPLY: 14,
  INFORMATION_REQUEST: 15,
  INFORMATION_REPLY: 16,
  ADDRESS_MASK_REQUEST: 17,
  ADDRESS_MASK_REPLY: 18,
} as const;

/** Destination unreachable codes (RFC 792, RFC 1812 5.2.7.1). */
export const UnreachableCode = {
  /** "Communication administratively prohibited": a filter refused the packet (RFC 1812 5.2.7.1). */
  ADMINISTRATIVELY_PROHIBITED: 13,
} as const;

/**
 * The ICMP query (informational) types: echo (RFC 792), router discovery (RFC 1256), timestamp and
 * information (RFC 792), address mask (RFC 950). Every other type is an error message (destination
 * unreachable, source quench, redirect, time exceeded, parameter problem) or one this code does not
 * know; RFC 1122 3.2.2 forbids an ICMP error about an error message, and an unknown type is treated
 * as one, as Linux does (net/ipv4/icmp.c, icmp_send: types beyond NR_ICMP_TYPES are never answered).
 */
export function isIcmpQuery(type: number): boolean {
  return (
    type === IcmpType.ECHO_REPLY ||
    type === IcmpType.ECHO_REQUEST ||
    type === IcmpType.ROUTER_ADVERTISEMENT ||
    type === IcmpType.ROUTER_SOLICITATION ||
    (type >= IcmpType.TIMESTAMP && type <= IcmpType.ADDRESS_MASK_REPLY)
  );
}

/** Writes the checksum of the ICMP message at bytes[icmp, icmp+length) (RFC 792). Allocates nothing. */
export function writeIcmpChecksum(bytes: Uint8Array, icmp: number, length: number): void {
  writeU16(bytes, icmp + Icmp.CHECKSUM, 0);
  writeU16(bytes, icmp + Icmp.CHECKSUM, internetChecksum(bytes, icmp, length));
}

export function isValidIcmp(_bytes: Uint8Array, _offset: number, available: number): boolean {
  return available >= Icmp.HEADER_LENGTH;
}

export function icmpType(bytes: Uint8Array, icmp: number): number {
  return bytes[icmp + Icmp.TYPE];
}

export interface IcmpEchoRepr {
  type: number;
  code: number;
  identifier: number;
  sequence: number;
  checksumValid: boolean;
}

export function parseIcmp(bytes: Uint8Array): { repr: IcmpEchoRepr; payload: Uint8Array } | undefined {
  if (!isValidIcmp(bytes, 0, bytes.length)) return undefined;
  return {
    repr: {
      type: bytes[Icmp.TYPE],
      code: bytes[Icmp.CODE],
      identifier: readU16(bytes, Icmp.IDENTIFIER),
      sequence: readU16(bytes, Icmp.SEQUENCE),
      checksumValid: internetChecksum(bytes, 0, bytes.length) === 0,
    },
    payload: bytes.subarray(Icmp.HEADER_LENGTH),
  };
}

export function emitIcmp(repr: Omit<IcmpEchoRepr, "checksumValid">, payload: Uint8Array): Uint8Array {
  const message = new Uint8Array(Icmp.HEADER_LENGTH + payload.length);
  message[Icmp.TYPE] = repr.type;
  message[Icmp.CODE] = repr.code;
  writeU16(message, Icmp.IDENTIFIER, repr.identifier);
  writeU16(message, Icmp.SEQUENCE, repr.sequence);
  message.set(payload, Icmp.HEADER_LENGTH);
  writeU16(message, Icmp.CHECKSUM, internetChecksum(message, 0, message.length));
  return message;
}
