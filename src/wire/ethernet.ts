/**
 * Ethernet II frames (IEEE 802.3 with an EtherType). No FCS: neither the VM socket nor TAP/vmnet
 * carry it.
 */
import { formatMac, parseMac, readMac, readU16, writeMac, writeU16 } from "./bytes.ts";

/** Field offsets from the start of the frame. */
export const Ethernet = {
  DESTINATION: 0, // 6 bytes
  SOURCE: 6, // 6 bytes
  ETHER_TYPE: 12, // 2 bytes
  HEADER_LENGTH: 14,
} as const;

export const EtherType = {
  IPV4: 0x0800,
  ARP: 0x0806,
  /** 802.1Q: a tagged frame is a different ethertype to us, never unwrapped. */
  VLAN: 0x8100,
  IPV6: 0x86dd,
} as const;

/**
 * Values below 0x0600 in the type field are 802.3 payload lengths, not EtherTypes (and
 * 1501..1535 are undefined). softnet speaks Ethernet II only.
 */
export const MINIMUM_ETHER_TYPE = 0x0600;

/** True when `length` bytes hold an Ethernet II header with a real EtherType. */
export function isValidEthernet(bytes: Uint8Array, offset: number, length: number): boolean {
  return (
    length >= Ethernet.HEADER_LENGTH && readU16(bytes, offset + Ethernet.ETHER_TYPE) >= MINIMUM_ETHER_TYPE
  );
}

export function ethernetDestination(bytes: Uint8Array, frame: number): number {
  return readMac(bytes, frame + Ethernet.DESTINATION);
}

export function ethernetSource(bytes: Uint8Array, frame: number): number {
  return readMac(bytes, frame + Ethernet.SOURCE);
}

export function ethernetType(bytes: Uint8Array, frame: number): number {
  return readU16(bytes, frame + Ethernet.ETHER_TYPE);
}

export interface EthernetRepr {
  destination: string;
  source: string;
  etherType: number;
}

export function parseEthernet(bytes: Uint8Array): EthernetRepr | undefined {
  if (!isValidEthernet(bytes, 0, bytes.length)) return undefined;
  return {
    destination: formatMac(ethernetDestination(bytes, 0)),
    source: formatMac(ethernetSource(bytes, 0)),
    etherType: ethernetType(bytes, 0),
  };
}

/** Builds a frame: header followed by `payload`. */
export function emitEthernet(repr: EthernetRepr, payload: Uint8Array): Uint8Array {
  const frame = new Uint8Array(Ethernet.HEADER_LENGTH + payload.length);
  writeMac(frame, Ethernet.DESTINATION, parseMacOrThrow(repr.destination));
  writeMac(frame, Ethernet.SOURCE, parseMacOrThrow(repr.source));
  writeU16(frame, Ethernet.ETHER_TYPE, repr.etherType);
  frame.set(payload, Ethernet.HEADER_LENGTH);
  return frame;
}

function parseMacOrThrow(text: string): number {
  const mac = parseMac(text);
  if (mac === undefined) throw new RangeError(`not a MAC address: ${text}`);
  return mac;
}
