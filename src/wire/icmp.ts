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

export const IcmpType = { ECHO_REPLY: 0, DESTINATION_UNREACHABLE: 3, ECHO_REQUEST: 8 } as const;

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
