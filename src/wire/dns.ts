/**
 * DNS messages (RFC 1035 4.1): the header, the question and the answer section, with names that may
 * be compressed (RFC 1035 4.1.4). softnet reads the answers its VM receives from the lease's DNS
 * servers to learn which addresses an allowed name stands for, and the questions the VM asks to
 * keep them to allowed names. It never trusts a count, a length or a pointer: every read is checked
 * against the message's end, and a compression pointer must point strictly before the place it
 * was read from, so following pointers always ends (a loop or a forward pointer is malformed).
 *
 * Reading is for DNS traffic only, never for the bulk of frames, so the results are plain objects.
 */
import { readU16, readU32 } from "./bytes.ts";

/** Header field offsets from the start of the message (RFC 1035 4.1.1). */
export const Dns = {
  ID: 0, // 2
  FLAGS: 2, // 2: QR(1) OPCODE(4) AA TC RD RA Z(3) RCODE(4)
  QUESTION_COUNT: 4, // 2
  ANSWER_COUNT: 6, // 2
  AUTHORITY_COUNT: 8, // 2
  ADDITIONAL_COUNT: 10, // 2
  HEADER_LENGTH: 12,
} as const;

export const DnsFlag = {
  RESPONSE: 0x8000,
  OPCODE_MASK: 0x7800,
  TRUNCATED: 0x0200,
  RCODE_MASK: 0x000f,
} as const;

/** Record and question types softnet reads (RFC 1035 3.2.2; AAAA RFC 3596 2.1). */
export const DnsType = { A: 1, CNAME: 5, AAAA: 28 } as const;
/** The Internet class (RFC 1035 3.2.4). */
export const DNS_CLASS_IN = 1;
export const DNS_PORT = 53;

/** RFC 1035 2.3.4: a name is at most 255 octets on the wire (so at most 253 as text). */
export const MAX_NAME_WIRE_LENGTH = 255;
/** Label length octets with the top bits 01 or 10 are extended label types (RFC 6891 5): refused. */
const LABEL_KIND_MASK = 0xc0;
const LABEL_POINTER = 0xc0;
/** Links of a CNAME chain followed within one answer; real chains are a handful long. */
export const MAX_CNAME_CHAIN = 16;

/** One resource record of the answer section that softnet uses (A or CNAME, class IN). */
export interface DnsAnswer {
  /** Owner name as text, lowercase, no trailing dot (see readDnsName for other bytes). */
  owner: string;
  type: number;
  /** Seconds, RFC 2181 8: a value with the top bit set is treated as zero. */
  ttl: number;
  /** For A: the address as a uint32; otherwise 0. */
  address: number;
  /** For CNAME: the canonical name as text; otherwise "". */
  target: string;
}

export interface DnsMessage {
  id: number;
  isResponse: boolean;
  opcode: number;
  truncated: boolean;
  rcode: number;
  /** The first question's name and type ("" and -1 when the message has no question). */
  questionName: string;
  questionType: number;
  questionClass: number;
  /** The A and CNAME records of the answer section, in order; other records are skipped. */
  answers: DnsAnswer[];
}

/** A name read from a message: its text and where the bytes after it start. */
interface NameRead {
  text: string;
  next: number;
}

const scratchName: NameRead = { text: "", next: 0 };

/**
 * Reads the name at `at` in the message `bytes[start, end)`. Returns false when it is malformed:
 * past the end, a reserved label kind, a pointer that does not point strictly backwards, or longer
 * than 255 octets. The text is lowercase with labels joined by "."; a byte other than a letter, a
 * digit, "-" or "_" (a dot inside a label, a space, a control byte) is written as "\DDD" (RFC 1035
 * 5.1), so such a label can never match a name pattern, and the text is safe to log.
 */
function readName(bytes: Uint8Array, start: number, end: number, at: number, out: NameRead): boolean {
  let position = at;
  let next = -1; // where the name ends in the place it was read from (after the first pointer)
  let wireLength = 0;
  let text = "";
  for (;;) {
    if (position >= end) return false;
    const length = bytes[position];
    if ((length & LABEL_KIND_MASK) === LABEL_POINTER) {
      if (position + 1 >= end) return false;
      const target = start + (((length & 0x3f) << 8) | bytes[position + 1]);
      if (target >= position) return false; // strictly backwards: no loops, no forward jumps
      if (next === -1) next = position + 2;
      position = target;
      continue;
    }
    if ((length & LABEL_KIND_MASK) !== 0) return false;
    wireLength += length + 1;
    if (wireLength > MAX_NAME_WIRE_LENGTH) return false;
    if (length === 0) {
      out.text = text;
      out.next = next === -1 ? position + 1 : next;
      return true;
    }
    if (position + 1 + length > end) return false;
    if (text !== "") text += ".";
    for (let index = position + 1; index <= position + length; index++) {
      const byte = bytes[index];
      if (byte >= 0x41 && byte <= 0x5a) text += String.fromCharCode(byte + 0x20);
      else if (
        (byte >= 0x61 && byte <= 0x7a) ||
        (byte >= 0x30 && byte <= 0x39) ||
        byte === 0x2d /* - */ ||
        byte === 0x5f /* _ */
      ) {
        text += String.fromCharCode(byte);
      } else text += `\\${byte.toString().padStart(3, "0")}`;
    }
    position += 1 + length;
  }
}

/** RFC 2181 8: a TTL with the most significant bit set is treated as zero. */
function ttlOf(raw: number): number {
  return raw > 0x7fffffff ? 0 : raw;
}

/**
 * Reads the header, the first question and the answer section of the DNS message in
 * `bytes[offset, offset + length)`. Returns undefined when any of it is malformed; records after
 * the answer section are not read. A message with several questions (which no server sends,
 * RFC 9619) is read for its first.
 */
export function readDnsMessage(bytes: Uint8Array, offset: number, length: number): DnsMessage | undefined {
  const end = offset + length;
  if (length < Dns.HEADER_LENGTH || end > bytes.length) return undefined;
  const flags = readU16(bytes, offset + Dns.FLAGS);
  const questionCount = readU16(bytes, offset + Dns.QUESTION_COUNT);
  const answerCount = readU16(bytes, offset + Dns.ANSWER_COUNT);
  const message: DnsMessage = {
    id: readU16(bytes, offset + Dns.ID),
    isResponse: (flags & DnsFlag.RESPONSE) !== 0,
    opcode: (flags & DnsFlag.OPCODE_MASK) >>> 11,
    truncated: (flags & DnsFlag.TRUNCATED) !== 0,
    rcode: flags & DnsFlag.RCODE_MASK,
    questionName: "",
    questionType: -1,
    questionClass: -1,
    answers: [],
  };
  let position = offset + Dns.HEADER_LENGTH;
  for (let question = 0; question < questionCount; question++) {
    if (!readName(bytes, offset, end, position, scratchName)) return undefined;
    position = scratchName.next;
    if (position + 4 > end) return undefined;
    if (question === 0) {
      message.questionName = scratchName.text;
      message.questionType = readU16(bytes, position);
      message.questionClass = readU16(bytes, position + 2);
    }
    position += 4;
  }
  for (let answer = 0; answer < answerCount; answer++) {
    if (!readName(bytes, offset, end, position, scratchName)) return undefined;
    const owner = scratchName.text;
    position = scratchName.next;
    // TYPE(2) CLASS(2) TTL(4) RDLENGTH(2), then RDATA (RFC 1035 4.1.3)
    if (position + 10 > end) return undefined;
    const type = readU16(bytes, position);
    const recordClass = readU16(bytes, position + 2);
    const ttl = ttlOf(readU32(bytes, position + 4));
    const dataLength = readU16(bytes, position + 8);
    const data = position + 10;
    if (data + dataLength > end) return undefined;
    position = data + dataLength;
    if (recordClass !== DNS_CLASS_IN) continue;
    if (type === DnsType.A) {
      if (dataLength !== 4) return undefined;
      message.answers.push({ owner, type, ttl, address: readU32(bytes, data), target: "" });
    } else if (type === DnsType.CNAME) {
      // The target may be compressed; it must lie within the record's own data.
      if (!readName(bytes, offset, data + dataLength, data, scratchName)) return undefined;
      if (scratchName.next !== data + dataLength) return undefined;
      message.answers.push({ owner, type, ttl, address: 0, target: scratchName.text });
    }
  }
  return message;
}

/**
 * The question of a DNS query in `bytes[offset, offset + length)`, without reading the rest:
 * what the VM asks for. Returns undefined when the header or the first question is malformed.
 */
export function readDnsQuestionName(bytes: Uint8Array, offset: number, length: number): string | undefined {
  const end = offset + length;
  if (length < Dns.HEADER_LENGTH || end > bytes.length) return undefined;
  if (readU16(bytes, offset + Dns.QUESTION_COUNT) === 0) return undefined;
  if (!readName(bytes, offset, end, offset + Dns.HEADER_LENGTH, scratchName)) return undefined;
  if (scratchName.next + 4 > end) return undefined;
  return scratchName.text;
}

/**
 * The names an answer makes the question name stand for: the question name and every name reached
 * from it through the message's own CNAME records (in any order, at most MAX_CNAME_CHAIN links).
 * Records for other owners are not followed: a server's answer about names nobody asked for
 * teaches nothing.
 */
export function canonicalChain(message: DnsMessage): string[] {
  const chain = [message.questionName];
  for (let link = 0; link < MAX_CNAME_CHAIN; link++) {
    const current = chain[chain.length - 1];
    let next: string | undefined;
    for (const answer of message.answers) {
      if (answer.type === DnsType.CNAME && answer.owner === current) {
        next = answer.target;
        break;
      }
    }
    if (next === undefined || chain.includes(next)) break;
    chain.push(next);
  }
  return chain;
}

/**
 * The A records of an answer that belong to its question: owner is the question name or on its
 * CNAME chain. Each with its own TTL.
 */
export function addressesForQuestion(message: DnsMessage): DnsAnswer[] {
  const chain = canonicalChain(message);
  return message.answers.filter((answer) => answer.type === DnsType.A && chain.includes(answer.owner));
}

export interface DnsMessageRepr {
  id: number;
  response: boolean;
  rcode?: number;
  question: { name: string; type: number };
  answers?: Array<
    { owner: string; ttl: number } & ({ type: "A"; address: number } | { type: "CNAME"; target: string })
  >;
}

function encodeName(name: string): number[] {
  const out: number[] = [];
  if (name !== "") {
    for (const label of name.split(".")) {
      out.push(label.length, ...Array.from(label, (char) => char.charCodeAt(0)));
    }
  }
  out.push(0);
  return out;
}

/**
 * Builds a DNS message without compression, for tests and tools (the reader's mirror). Names are
 * ASCII text with "." between labels.
 */
export function emitDnsMessage(repr: DnsMessageRepr): Uint8Array {
  const out: number[] = [];
  const u16 = (value: number) => out.push((value >>> 8) & 0xff, value & 0xff);
  const u32 = (value: number) => {
    u16(Math.floor(value / 0x10000));
    u16(value & 0xffff);
  };
  u16(repr.id);
  u16((repr.response ? DnsFlag.RESPONSE | 0x0180 : 0x0100) | (repr.rcode ?? 0)); // RD, and RA in answers
  u16(1);
  u16(repr.answers?.length ?? 0);
  u16(0);
  u16(0);
  out.push(...encodeName(repr.question.name));
  u16(repr.question.type);
  u16(DNS_CLASS_IN);
  for (const answer of repr.answers ?? []) {
    out.push(...encodeName(answer.owner));
    u16(answer.type === "A" ? DnsType.A : DnsType.CNAME);
    u16(DNS_CLASS_IN);
    u32(answer.ttl);
    if (answer.type === "A") {
      u16(4);
      u32(answer.address);
    } else {
      const target = encodeName(answer.target);
      u16(target.length);
      out.push(...target);
    }
  }
  return Uint8Array.from(out);
}
