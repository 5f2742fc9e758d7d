/**
 * The pcapng file format, as far as softnet writes it: one Section Header Block, one Interface
 * Description Block (the VM's network card as softnet sees it), then one Enhanced Packet Block
 * per frame. Every layout and code below is from the IETF draft "PCAP Now Generic (pcapng)
 * Capture File Format", draft-ietf-opsawg-pcapng (IETF-OPSAWG-WG/draft-ietf-opsawg-pcap,
 * draft-ietf-opsawg-pcapng.md); section numbers are that draft's.
 *
 * Header blocks are built once at start-up (allocating is fine there). Enhanced Packet Blocks are
 * written in place into a caller's preallocated buffer: nothing is allocated per frame.
 *
 * Byte order (3.6.1 "Endianness"): a section is written in the byte order of the machine that
 * writes it, announced by the SHB's byte-order magic. Every platform softnet runs on (x86-64 and
 * arm64, Linux and macOS) is little-endian, so little-endian is that native order.
 */

const LITTLE_ENDIAN = true;

/** Block Type codes (section 4.1, 4.2, 4.3; registry in 10.1 "Standardized Block Type Codes"). */
export const BlockType = {
  /** 4.1: the 4 bytes "\n\r\r\n", a palindrome, so it reads the same in either byte order. */
  SECTION_HEADER: 0x0a0d0d0a,
  INTERFACE_DESCRIPTION: 0x00000001,
  ENHANCED_PACKET: 0x00000006,
} as const;

/** 4.1 "Byte-Order Magic": written in the writer's byte order, so readers learn it. */
export const BYTE_ORDER_MAGIC = 0x1a2b3c4d;
/** 4.1: writers MUST write Major Version 1, Minor Version 0. */
export const MAJOR_VERSION = 1;
export const MINOR_VERSION = 0;

/**
 * LinkType of the interface (4.2), from the LinkType registry (draft-ietf-opsawg-pcaplinktype,
 * linktypes.csv: LINKTYPE_ETHERNET = 1, IEEE 802.3 Ethernet): frames start at the destination MAC.
 */
export const LINKTYPE_ETHERNET = 1;

/** Option codes valid in every block (3.5 "Options", table "Common Options"). */
export const CommonOption = { END_OF_OPTIONS: 0, COMMENT: 1 } as const;
/** 4.1, table "Section Header Block Options". */
export const SectionHeaderOption = { HARDWARE: 2, OS: 3, USER_APPLICATION: 4 } as const;
/** 4.2, table "Interface Description Block Options". */
export const InterfaceOption = { NAME: 2, DESCRIPTION: 3, MAC_ADDRESS: 6, TIMESTAMP_RESOLUTION: 9 } as const;
/** 4.3, table "Enhanced Packet Block Options": epb_flags, a 32-bit word (4.3.1). */
export const EnhancedPacketOption = { FLAGS: 2 } as const;

/**
 * 4.3.1 "Enhanced Packet Block Flags Word", bits 0-1: 01 inbound, 10 outbound (bit 0 is the least
 * significant). softnet's interface is the VM's network card: what the VM sent is outbound, what
 * is on its way to the VM is inbound, as a capture inside the guest would mark them.
 */
export const PacketDirection = { INBOUND: 0b01, OUTBOUND: 0b10 } as const;

/**
 * if_tsresol (4.2): 6 means timestamps count microseconds since 1970-01-01 00:00:00 UTC. It is
 * also the default when the option is absent; it is written anyway so no reader has to know that.
 */
export const MICROSECONDS = 6;

/** Fixed part of an EPB: type, length, interface ID, timestamp (2 words), captured and original lengths (4.3). */
export const EPB_HEADER = 28;
/** epb_flags: option code and length (4 bytes), the 32-bit word (4 bytes). */
const EPB_FLAGS_OPTION = 8;
/** Option code + option length in front of every option value (3.5). */
const OPTION_HEADER = 4;
/** The trailing Block Total Length (3.1). */
const TRAILER = 4;
/** The largest value a 16-bit Option Length can hold (3.5). */
export const MAX_OPTION_LENGTH = 0xffff;

/** Values are padded to 32 bits (3.1, 3.5); the padding octets MUST be zero (3.6.2). */
export function padded(length: number): number {
  return (length + 3) & ~3;
}

/** Total length of the EPB writeEnhancedPacket() writes for a frame and a comment of these lengths. */
export function enhancedPacketLength(frameLength: number, commentLength: number): number {
  const comment = commentLength > 0 ? OPTION_HEADER + padded(commentLength) : 0;
  // Options end with opt_endofopt (code 0, length 0): "Code that writes pcapng files MUST put an
  // opt_endofopt option at the end of an option list" (3.5).
  return EPB_HEADER + padded(frameLength) + EPB_FLAGS_OPTION + comment + OPTION_HEADER + TRAILER;
}

/**
 * Writes one Enhanced Packet Block (4.3) at `at` in `out` and returns the offset just after it.
 * Allocates nothing.
 *
 *   0 Block Type = 6 | 4 Block Total Length | 8 Interface ID | 12 Timestamp (upper 32 bits)
 *  16 Timestamp (lower 32 bits) | 20 Captured Packet Length | 24 Original Packet Length
 *  28 Packet Data, padded to 32 bits | Options | Block Total Length
 *
 * `source` is a view that starts at the frame and holds at least frameLength bytes; it may be a
 * whole batch slot (longer than the frame). All of it is copied, because a preallocated view per
 * slot copies in one call where cutting a view to each frame's length would allocate one per
 * frame; what lands past the frame is overwritten by the padding and options or lies beyond the
 * returned offset. So `out` must have room for max(enhancedPacketLength(), 28 + source.length)
 * bytes at `at`.
 */
export function writeEnhancedPacket(
  out: Uint8Array,
  view: DataView,
  at: number,
  interfaceId: number,
  timestamp: number,
  source: Uint8Array,
  frameLength: number,
  flags: number,
  comment: Uint8Array | undefined,
): number {
  const commentLength = comment === undefined ? 0 : comment.length;
  const total = enhancedPacketLength(frameLength, commentLength);
  view.setUint32(at, BlockType.ENHANCED_PACKET, LITTLE_ENDIAN);
  view.setUint32(at + 4, total, LITTLE_ENDIAN);
  view.setUint32(at + 8, interfaceId, LITTLE_ENDIAN);
  // "two 32-bit unsigned integers, representing a single 64-bit unsigned integer, with the first
  // value being the upper 32 bits" (4.3). A microsecond count fits a double exactly (< 2^53).
  const upper = Math.floor(timestamp / 0x1_0000_0000);
  view.setUint32(at + 12, upper, LITTLE_ENDIAN);
  view.setUint32(at + 16, timestamp - upper * 0x1_0000_0000, LITTLE_ENDIAN);
  // Nothing is truncated: captured length = original length = the whole frame.
  view.setUint32(at + 20, frameLength, LITTLE_ENDIAN);
  view.setUint32(at + 24, frameLength, LITTLE_ENDIAN);
  let cursor = at + EPB_HEADER;
  out.set(source, cursor);
  cursor = zeroPad(out, cursor + frameLength);
  view.setUint16(cursor, EnhancedPacketOption.FLAGS, LITTLE_ENDIAN);
  view.setUint16(cursor + 2, 4, LITTLE_ENDIAN);
  view.setUint32(cursor + 4, flags, LITTLE_ENDIAN);
  cursor += EPB_FLAGS_OPTION;
  if (comment !== undefined && commentLength > 0) {
    view.setUint16(cursor, CommonOption.COMMENT, LITTLE_ENDIAN);
    view.setUint16(cursor + 2, commentLength, LITTLE_ENDIAN);
    out.set(comment, cursor + OPTION_HEADER);
    cursor = zeroPad(out, cursor + OPTION_HEADER + commentLength);
  }
  view.setUint32(cursor, CommonOption.END_OF_OPTIONS, LITTLE_ENDIAN); // code 0, length 0
  view.setUint32(cursor + 4, total, LITTLE_ENDIAN);
  return cursor + 8;
}

/** Zeroes from `end` to the next 32-bit boundary (the buffer is reused, so old bytes are there). */
function zeroPad(out: Uint8Array, end: number): number {
  const next = padded(end);
  for (let i = end; i < next; i++) out[i] = 0;
  return next;
}

/** One option of a header block: its code and its value's bytes. */
export interface BlockOption {
  code: number;
  value: Uint8Array;
}

const utf8 = new TextEncoder();

/** A UTF-8 string option (opt_comment, shb_*, if_name, if_description are UTF-8, 3.6.3), cut to fit. */
export function textOption(code: number, text: string): BlockOption {
  let value = utf8.encode(text);
  if (value.length > MAX_OPTION_LENGTH) value = utf8.encode(truncateUtf8(text, MAX_OPTION_LENGTH));
  return { code, value };
}

/** The longest prefix of text whose UTF-8 encoding has at most maxBytes (never splits a character). */
function truncateUtf8(text: string, maxBytes: number): string {
  let bytes = 0;
  let end = 0;
  for (const character of text) {
    const size = utf8.encode(character).length;
    if (bytes + size > maxBytes) break;
    bytes += size;
    end += character.length;
  }
  return text.slice(0, end);
}

/** Options, then opt_endofopt (3.5), as one byte array. */
function encodeOptions(options: readonly BlockOption[]): Uint8Array {
  let length = OPTION_HEADER; // opt_endofopt
  for (const option of options) length += OPTION_HEADER + padded(option.value.length);
  const bytes = new Uint8Array(length);
  const view = new DataView(bytes.buffer);
  let cursor = 0;
  for (const option of options) {
    view.setUint16(cursor, option.code, LITTLE_ENDIAN);
    view.setUint16(cursor + 2, option.value.length, LITTLE_ENDIAN);
    bytes.set(option.value, cursor + OPTION_HEADER);
    cursor += OPTION_HEADER + padded(option.value.length);
  }
  return bytes; // the last 4 bytes are already zero: opt_endofopt
}

/** A block (3.1 "General Block Structure"): type, total length, body, total length again. */
function encodeBlock(type: number, body: Uint8Array): Uint8Array {
  const total = 8 + body.length + TRAILER;
  const bytes = new Uint8Array(total);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, type, LITTLE_ENDIAN);
  view.setUint32(4, total, LITTLE_ENDIAN);
  bytes.set(body, 8);
  view.setUint32(total - 4, total, LITTLE_ENDIAN);
  return bytes;
}

/**
 * Section Header Block (4.1):
 *   0 Block Type | 4 Block Total Length | 8 Byte-Order Magic | 12 Major Version (16) | 14 Minor
 *   Version (16) | 16 Section Length (64, -1 = not specified) | 24 Options | Block Total Length
 * The section length is unknown while softnet streams frames into the file: -1.
 */
export function encodeSectionHeader(options: readonly BlockOption[]): Uint8Array {
  const encoded = encodeOptions(options);
  const body = new Uint8Array(16 + encoded.length);
  const view = new DataView(body.buffer);
  view.setUint32(0, BYTE_ORDER_MAGIC, LITTLE_ENDIAN);
  view.setUint16(4, MAJOR_VERSION, LITTLE_ENDIAN);
  view.setUint16(6, MINOR_VERSION, LITTLE_ENDIAN);
  view.setBigInt64(8, -1n, LITTLE_ENDIAN);
  body.set(encoded, 16);
  return encodeBlock(BlockType.SECTION_HEADER, body);
}

/**
 * Interface Description Block (4.2):
 *   0 Block Type = 1 | 4 Block Total Length | 8 LinkType (16) | 10 Reserved (16, zero) |
 *  12 SnapLen (32) | 16 Options | Block Total Length
 * Its Interface ID is its position in the section: the first IDB is interface 0.
 */
export function encodeInterfaceDescription(
  linkType: number,
  snapLength: number,
  options: readonly BlockOption[],
): Uint8Array {
  const encoded = encodeOptions(options);
  const body = new Uint8Array(8 + encoded.length);
  const view = new DataView(body.buffer);
  view.setUint16(0, linkType, LITTLE_ENDIAN);
  view.setUint16(2, 0, LITTLE_ENDIAN);
  view.setUint32(4, snapLength, LITTLE_ENDIAN);
  body.set(encoded, 8);
  return encodeBlock(BlockType.INTERFACE_DESCRIPTION, body);
}

/** if_MACaddr (4.2): the 6 octets of an EUI-48 address, from a 48-bit integer. */
export function macOption(mac: number): BlockOption {
  const value = new Uint8Array(6);
  let rest = mac;
  for (let i = 5; i >= 0; i--) {
    value[i] = rest % 256;
    rest = Math.floor(rest / 256);
  }
  return { code: InterfaceOption.MAC_ADDRESS, value };
}
