/**
 * Big-endian field access and address text formats. Addresses are numbers, never objects: an IPv4
 * address is a uint32 and a MAC address is a 48-bit integer (exact in a double), so comparing
 * them on the per-frame path allocates nothing.
 */

export function readU16(bytes: Uint8Array, offset: number): number {
  return (bytes[offset] << 8) | bytes[offset + 1];
}

export function readU32(bytes: Uint8Array, offset: number): number {
  return (
    ((bytes[offset] << 24) | (bytes[offset + 1] << 16) | (bytes[offset + 2] << 8) | bytes[offset + 3]) >>> 0
  );
}

/** A MAC address at `offset` as a 48-bit integer. */
export function readMac(bytes: Uint8Array, offset: number): number {
  return readU16(bytes, offset) * 0x1_0000_0000 + readU32(bytes, offset + 2);
}

export function writeU16(bytes: Uint8Array, offset: number, value: number): void {
  bytes[offset] = (value >>> 8) & 0xff;
  bytes[offset + 1] = value & 0xff;
}

export function writeU32(bytes: Uint8Array, offset: number, value: number): void {
  bytes[offset] = (value >>> 24) & 0xff;
  bytes[offset + 1] = (value >>> 16) & 0xff;
  bytes[offset + 2] = (value >>> 8) & 0xff;
  bytes[offset + 3] = value & 0xff;
}

export function writeMac(bytes: Uint8Array, offset: number, mac: number): void {
  writeU16(bytes, offset, Math.floor(mac / 0x1_0000_0000));
  writeU32(bytes, offset + 2, mac % 0x1_0000_0000);
}

export function formatIpv4(address: number): string {
  return `${address >>> 24}.${(address >>> 16) & 0xff}.${(address >>> 8) & 0xff}.${address & 0xff}`;
}

const IPV4_OCTET = /^(0|[1-9][0-9]{0,2})$/;

/**
 * Parses dotted-quad IPv4 text strictly: four decimal octets 0..255, no leading zeros (which some
 * parsers read as octal, so "010.0.0.1" is ambiguous and refused). Returns undefined when invalid.
 */
export function parseIpv4(text: string): number | undefined {
  const octets = text.split(".");
  if (octets.length !== 4) return undefined;
  let address = 0;
  for (const octet of octets) {
    if (!IPV4_OCTET.test(octet)) return undefined;
    const value = Number(octet);
    if (value > 255) return undefined;
    address = address * 256 + value;
  }
  return address;
}

export function formatMac(mac: number): string {
  const hex = mac.toString(16).padStart(12, "0");
  return hex.match(/../g)!.join(":");
}

const MAC_TEXT = /^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$/;

/** Parses "aa:bb:cc:dd:ee:ff" (or with dashes, as Windows prints them). Undefined when invalid. */
export function parseMac(text: string): number | undefined {
  if (!MAC_TEXT.test(text)) return undefined;
  return Number.parseInt(text.replace(/[:-]/g, ""), 16);
}

export const BROADCAST_MAC = 0xffff_ffff_ffff;

/** The I/G bit: set on multicast and broadcast destinations, never valid as a source. */
export function isMulticastMac(mac: number): boolean {
  return Math.floor(mac / 0x100_0000_0000) % 2 === 1;
}
