/**
 * Netlink, the kernel's message interface for networking: the parts every netlink family shares.
 * softnet speaks two families: rtnetlink (NETLINK_ROUTE: links, the bridge's forwarding database,
 * bridge port flags; linux/bridge.ts) and sock_diag (NETLINK_SOCK_DIAG: the VM socket's peer;
 * linux/peer-watch.ts). softnet runs as root while it configures the bridge, so it talks to the
 * kernel directly instead of running `ip` or `bridge`.
 *
 * A message is a struct nlmsghdr, a family-specific fixed header, then attributes (struct nlattr:
 * u16 length, u16 type, data, padded to 4 bytes). Everything the kernel sends back is parsed with
 * bounds checks: a length field is never trusted to stay inside the bytes actually received, and a
 * malformed reply is an error, never an out-of-range read.
 *
 * Byte order: netlink headers and attributes are in host order. Both architectures softnet runs on
 * (x86_64, arm64 Linux) are little-endian, so every DataView access here says `true`.
 *
 * Sources: include/uapi/linux/netlink.h (nlmsghdr, nlmsgerr, NLM_F_*, NLMSG_*, NLA_F_*,
 * NETLINK_CAP_ACK, NETLINK_EXT_ACK, NLMSGERR_ATTR_MSG), include/linux/socket.h (SOL_NETLINK),
 * net/netlink/af_netlink.c (netlink_ack: layout of an error reply, NLM_F_CAPPED/NLM_F_ACK_TLVS;
 * netlink_recvmsg: the next part of a dump is produced inside recvmsg, so a reply is always queued
 * by the time the previous call returns).
 */
import { SoftnetError } from "../../errors.ts";
import {
  AF_NETLINK,
  Errno,
  lastErrno,
  libc,
  MSG_DONTWAIT,
  MSG_TRUNC,
  SOCK_CLOEXEC,
  SysError,
} from "./libc.ts";

// include/uapi/linux/netlink.h
export const NETLINK_ROUTE = 0;
export const NETLINK_SOCK_DIAG = 4;
export const NLM_F_REQUEST = 0x01;
export const NLM_F_MULTI = 0x02;
export const NLM_F_ACK = 0x04;
export const NLM_F_DUMP_INTR = 0x10;
export const NLM_F_DUMP = 0x100 | 0x200; // NLM_F_ROOT | NLM_F_MATCH
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
/** In an error reply: only the request's header was echoed back (NETLINK_CAP_ACK). */
const NLM_F_CAPPED = 0x100;
/** In an error reply: extended-ack attributes follow the echoed request. */
const NLM_F_ACK_TLVS = 0x200;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLA_F_NESTED = 1 << 15;
const NLA_TYPE_MASK = ~(NLA_F_NESTED | (1 << 14)) & 0xffff; // without NESTED and NET_BYTEORDER
const NLMSGERR_ATTR_MSG = 1;
const SOCK_RAW = 3;
const SOL_NETLINK = 270; // include/linux/socket.h
const NETLINK_CAP_ACK = 10;
const NETLINK_EXT_ACK = 11;

/** struct nlmsghdr: u32 nlmsg_len, u16 nlmsg_type, u16 nlmsg_flags, u32 nlmsg_seq, u32 nlmsg_pid. */
export const NLMSG_HEADER_BYTES = 16;
/** struct nlattr: u16 nla_len, u16 nla_type. */
export const NLA_HEADER_BYTES = 4;
/** struct nlmsgerr: int error, then the request's struct nlmsghdr. */
const NLMSGERR_BYTES = 4 + NLMSG_HEADER_BYTES;

/** NLMSG_ALIGN / NLA_ALIGN: netlink pads everything to 4 bytes. */
export function align4(length: number): number {
  return (length + 3) & ~3;
}

/** Largest reply we accept in one recv: the kernel's dump skbs are at most 32 KiB. */
const RECEIVE_BYTES = 64 * 1024;

/** A request the kernel refused: errno, and the kernel's own explanation when it gave one (extack). */
export class NetlinkError extends SysError {
  readonly kernelMessage: string | undefined;
  constructor(request: string, errno: number, kernelMessage: string | undefined) {
    super(request, errno);
    this.name = "NetlinkError";
    this.kernelMessage = kernelMessage;
    if (kernelMessage !== undefined) this.message = `${this.message}: ${kernelMessage}`;
  }
}

/** One well-formed message of a reply: where its payload (after struct nlmsghdr) lies. */
export interface MessageSpan {
  type: number;
  flags: number;
  sequence: number;
  /** Offset of the payload in the receive buffer. */
  payload: number;
  /** Bytes of payload, already checked to lie inside what was received. */
  payloadLength: number;
}

/**
 * Calls visit(span) for each message in bytes[0, length). Returns false when a header is malformed
 * (shorter than struct nlmsghdr, or a length that runs past the received bytes): the rest of the
 * buffer cannot be trusted then.
 */
export function walkMessages(view: DataView, length: number, visit: (span: MessageSpan) => void): boolean {
  let offset = 0;
  while (offset + NLMSG_HEADER_BYTES <= length) {
    const messageLength = view.getUint32(offset, true);
    if (messageLength < NLMSG_HEADER_BYTES || offset + messageLength > length) return false;
    visit({
      type: view.getUint16(offset + 4, true),
      flags: view.getUint16(offset + 6, true),
      sequence: view.getUint32(offset + 8, true),
      payload: offset + NLMSG_HEADER_BYTES,
      payloadLength: messageLength - NLMSG_HEADER_BYTES,
    });
    offset += align4(messageLength);
  }
  return offset >= length;
}

/** One attribute: its type (flags masked off), whether it is nested, and where its data lies. */
export interface AttributeSpan {
  type: number;
  nested: boolean;
  data: number;
  dataLength: number;
}

/**
 * Calls visit(span) for each attribute in bytes[start, end). Returns false at the first malformed
 * one (nla_len below the header size or past `end`); the attributes before it were visited.
 */
export function walkAttributes(
  view: DataView,
  start: number,
  end: number,
  visit: (span: AttributeSpan) => void,
): boolean {
  let offset = start;
  while (offset + NLA_HEADER_BYTES <= end) {
    const attributeLength = view.getUint16(offset, true);
    if (attributeLength < NLA_HEADER_BYTES || offset + attributeLength > end) return false;
    const rawType = view.getUint16(offset + 2, true);
    visit({
      type: rawType & NLA_TYPE_MASK,
      nested: (rawType & NLA_F_NESTED) !== 0,
      data: offset + NLA_HEADER_BYTES,
      dataLength: attributeLength - NLA_HEADER_BYTES,
    });
    offset += align4(attributeLength);
  }
  return true;
}

/** The first attribute of `type` in bytes[start, end), or undefined (also when malformed before it). */
export function findAttribute(
  view: DataView,
  start: number,
  end: number,
  type: number,
): AttributeSpan | undefined {
  let found: AttributeSpan | undefined;
  walkAttributes(view, start, end, (span) => {
    if (found === undefined && span.type === type) found = span;
  });
  return found;
}

/** Typed reads of an attribute's data that return undefined when the data is too short. */
export const attribute = {
  u8: (view: DataView, span: AttributeSpan | undefined): number | undefined =>
    span !== undefined && span.dataLength >= 1 ? view.getUint8(span.data) : undefined,
  u16: (view: DataView, span: AttributeSpan | undefined): number | undefined =>
    span !== undefined && span.dataLength >= 2 ? view.getUint16(span.data, true) : undefined,
  u32: (view: DataView, span: AttributeSpan | undefined): number | undefined =>
    span !== undefined && span.dataLength >= 4 ? view.getUint32(span.data, true) : undefined,
  bytes: (view: DataView, span: AttributeSpan | undefined): Uint8Array | undefined =>
    span === undefined
      ? undefined
      : new Uint8Array(view.buffer, view.byteOffset + span.data, span.dataLength),
  /** A NUL-terminated (or unterminated) string attribute, read as ASCII up to the first NUL. */
  string: (view: DataView, span: AttributeSpan | undefined): string | undefined => {
    if (span === undefined) return undefined;
    const bytes = new Uint8Array(view.buffer, view.byteOffset + span.data, span.dataLength);
    const end = bytes.indexOf(0);
    return Buffer.from(end < 0 ? bytes : bytes.subarray(0, end)).toString("latin1");
  },
};

/**
 * Builds one request: struct nlmsghdr, the family's fixed header, then attributes. Set-up code
 * only (it allocates); the per-second peer watch keeps its own preallocated request.
 */
export class NetlinkMessage {
  private bytes = new Uint8Array(256);
  private view = new DataView(this.bytes.buffer);
  private length: number;

  /** `header` is the family's fixed header (struct ifinfomsg, ndmsg, ...), copied as given. */
  constructor(
    readonly type: number,
    readonly flags: number,
    header: Uint8Array,
  ) {
    this.length = NLMSG_HEADER_BYTES;
    this.append(header);
  }

  u8(type: number, value: number): this {
    return this.attribute(type, Uint8Array.of(value));
  }

  u16(type: number, value: number): this {
    const data = new Uint8Array(2);
    new DataView(data.buffer).setUint16(0, value, true);
    return this.attribute(type, data);
  }

  u32(type: number, value: number): this {
    const data = new Uint8Array(4);
    new DataView(data.buffer).setUint32(0, value, true);
    return this.attribute(type, data);
  }

  attribute(type: number, data: Uint8Array): this {
    const start = this.reserveAttribute(type);
    this.append(data);
    this.closeAttribute(start);
    return this;
  }

  /** An attribute holding the attributes `fill` adds (NLA_F_NESTED set, as the kernel expects). */
  nested(type: number, fill: (message: this) => void): this {
    const start = this.reserveAttribute(type | NLA_F_NESTED);
    fill(this);
    this.closeAttribute(start);
    return this;
  }

  /** The finished bytes with nlmsg_len, nlmsg_seq and the flags (plus `extraFlags`) filled in. */
  encode(sequence: number, extraFlags = 0): Uint8Array {
    this.view.setUint32(0, this.length, true);
    this.view.setUint16(4, this.type, true);
    this.view.setUint16(6, this.flags | extraFlags, true);
    this.view.setUint32(8, sequence, true);
    this.view.setUint32(12, 0, true); // nlmsg_pid 0: the kernel
    return this.bytes.subarray(0, this.length);
  }

  private reserveAttribute(type: number): number {
    const start = this.length;
    this.append(new Uint8Array(NLA_HEADER_BYTES));
    this.view.setUint16(start + 2, type, true);
    return start;
  }

  private closeAttribute(start: number): void {
    this.view.setUint16(start, this.length - start, true); // nla_len excludes trailing padding
    this.append(new Uint8Array(align4(this.length) - this.length));
  }

  private append(data: Uint8Array): void {
    const needed = this.length + data.length;
    if (needed > this.bytes.length) {
      const grown = new Uint8Array(Math.max(needed, this.bytes.length * 2));
      grown.set(this.bytes.subarray(0, this.length));
      this.bytes = grown;
      this.view = new DataView(grown.buffer);
    }
    this.bytes.set(data, this.length);
    this.length = needed;
  }
}

/**
 * Opens an AF_NETLINK socket of `protocol`; returns the fd, or -errno. Low level, for callers that
 * must open it in another namespace (peer-watch.ts); others use NetlinkSocket.open.
 */
export function openNetlinkFd(protocol: number): number {
  const fd = libc.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol);
  return fd >= 0 ? fd : -lastErrno();
}

/**
 * A netlink socket for set-up work: requests acknowledged one at a time, and dumps. Every reply is
 * read with MSG_DONTWAIT: the kernel answers inside sendmsg()/recvmsg(), so "nothing queued" means
 * it will never answer, not "wait longer".
 */
export class NetlinkSocket {
  private readonly receiveBuffer = new Uint8Array(RECEIVE_BYTES);
  private readonly receiveView = new DataView(this.receiveBuffer.buffer);
  private sequence = 0;

  private constructor(readonly fd: number) {}

  /** Opens a socket of `protocol` in softnet's network namespace; throws SoftnetError. */
  static open(protocol: number, what: string): NetlinkSocket {
    const fd = openNetlinkFd(protocol);
    if (fd < 0)
      throw new SoftnetError(`cannot open a netlink socket to ${what}`, {
        cause: new SysError("socket(AF_NETLINK)", -fd),
      });
    const socket = new NetlinkSocket(fd);
    // Error replies echo only the request's header, and carry the kernel's explanation (extack).
    // Both are conveniences: kernels before 4.12 lack them, and the parsing below copes either way.
    socket.setOption(NETLINK_CAP_ACK, 1);
    socket.setOption(NETLINK_EXT_ACK, 1);
    return socket;
  }

  /**
   * Sends `message` (NLM_F_ACK is added) and waits for the kernel's acknowledgement. Throws a
   * NetlinkError with the kernel's errno (and explanation) when it refused.
   */
  request(message: NetlinkMessage, name: string): void {
    const sequence = this.send(message, NLM_F_ACK, name);
    const length = this.receive(name);
    let outcome: NetlinkError | "ok" | undefined;
    const wellFormed = walkMessages(this.receiveView, length, (span) => {
      if (outcome !== undefined || span.sequence !== sequence || span.type !== NLMSG_ERROR) return;
      outcome = this.errorOf(span, name) ?? "ok";
    });
    if (!wellFormed) throw new NetlinkError(name, Errno.EIO, "malformed reply from the kernel");
    if (outcome === undefined) throw new NetlinkError(name, Errno.EIO, "the kernel sent no acknowledgement");
    if (outcome !== "ok") throw outcome;
  }

  /**
   * Sends `message` as a dump request and calls visit(span, view) for each reply message until the
   * kernel says NLMSG_DONE. A dump the kernel reports as interrupted (the table changed while it
   * was being read) is repeated, up to three times.
   */
  dump(message: NetlinkMessage, name: string, visit: (span: MessageSpan, view: DataView) => void): void {
    for (let attempt = 1; ; attempt++) {
      const collected: Array<{ span: MessageSpan; bytes: Uint8Array }> = [];
      const interrupted = this.dumpOnce(message, name, (span) => {
        // Copied out: the receive buffer is reused by the next recv.
        collected.push({
          span: { ...span, payload: 0 },
          bytes: this.receiveBuffer.slice(span.payload, span.payload + span.payloadLength),
        });
      });
      if (interrupted && attempt < 3) continue;
      if (interrupted)
        throw new NetlinkError(name, Errno.EAGAIN, "the table kept changing while it was read");
      for (const { span, bytes } of collected) visit(span, new DataView(bytes.buffer));
      return;
    }
  }

  close(): void {
    libc.close(this.fd);
  }

  /** One pass of a dump; true when the kernel flagged it as interrupted (NLM_F_DUMP_INTR). */
  private dumpOnce(message: NetlinkMessage, name: string, visit: (span: MessageSpan) => void): boolean {
    const sequence = this.send(message, NLM_F_DUMP, name);
    let interrupted = false;
    for (;;) {
      const length = this.receive(name);
      let done = false;
      let failure: NetlinkError | undefined;
      const wellFormed = walkMessages(this.receiveView, length, (span) => {
        if (done || failure !== undefined || span.sequence !== sequence) return;
        if ((span.flags & NLM_F_DUMP_INTR) !== 0) interrupted = true;
        if (span.type === NLMSG_DONE) done = true;
        else if (span.type === NLMSG_ERROR) failure = this.errorOf(span, name) ?? undefined;
        else visit(span);
      });
      if (!wellFormed) throw new NetlinkError(name, Errno.EIO, "malformed reply from the kernel");
      if (failure !== undefined) throw failure;
      if (done) return interrupted;
    }
  }

  /** Sends `message` with NLM_F_REQUEST | extraFlags; returns the sequence number it carries. */
  private send(message: NetlinkMessage, extraFlags: number, name: string): number {
    const sequence = ++this.sequence;
    const bytes = message.encode(sequence, NLM_F_REQUEST | extraFlags);
    const sent = libc.send(this.fd, bytes, bytes.length, 0);
    if (sent !== bytes.length) {
      throw new NetlinkError(name, sent < 0 ? lastErrno() : Errno.EIO, sent < 0 ? undefined : "short send");
    }
    return sequence;
  }

  /** One datagram into the receive buffer; its length. */
  private receive(name: string): number {
    const length = libc.recv(this.fd, this.receiveBuffer, RECEIVE_BYTES, MSG_DONTWAIT | MSG_TRUNC);
    if (length < 0) {
      const errno = lastErrno();
      throw new NetlinkError(name, errno, errno === Errno.EAGAIN ? "the kernel sent no reply" : undefined);
    }
    if (length > RECEIVE_BYTES) throw new NetlinkError(name, Errno.EMSGSIZE, `a ${length}-byte reply`);
    return length;
  }

  /**
   * The error an NLMSG_ERROR message carries, or undefined for an acknowledgement (error 0).
   * struct nlmsgerr { int error; struct nlmsghdr msg; } then, with NLM_F_ACK_TLVS, attributes
   * after the echoed request (only its header when NLM_F_CAPPED).
   */
  private errorOf(span: MessageSpan, name: string): NetlinkError | undefined {
    const view = this.receiveView;
    if (span.payloadLength < 4) return new NetlinkError(name, Errno.EIO, "truncated error reply");
    const error = view.getInt32(span.payload, true);
    if (error === 0) return undefined;
    let kernelMessage: string | undefined;
    if ((span.flags & NLM_F_ACK_TLVS) !== 0 && span.payloadLength >= NLMSGERR_BYTES) {
      const echoed =
        (span.flags & NLM_F_CAPPED) !== 0
          ? NLMSG_HEADER_BYTES
          : align4(view.getUint32(span.payload + 4, true));
      const start = span.payload + 4 + echoed;
      const end = span.payload + span.payloadLength;
      if (start <= end)
        kernelMessage = attribute.string(view, findAttribute(view, start, end, NLMSGERR_ATTR_MSG));
    }
    // The kernel sends a negative errno; anything else is not an error it could have meant.
    return new NetlinkError(name, error < 0 && error > -4096 ? -error : Errno.EIO, kernelMessage);
  }

  private setOption(option: number, value: number): void {
    // Best effort (see open): an older kernel without the option still works.
    libc.setsockopt(this.fd, SOL_NETLINK, option, Int32Array.of(value), 4);
  }
}
