/**
 * The VM side of softnet on Linux: an AF_UNIX SOCK_DGRAM socket (Tart hands over one end of a
 * socketpair as `--vm-fd`, usually 0) where one datagram is one Ethernet frame, without a header.
 *
 * Frames move in batches with recvmmsg/sendmmsg: one system call per batch instead of one per frame
 * is what lets Bun keep up with a C forwarder. The mmsghdr and iovec arrays are built once per
 * FrameBatch and point straight into batch.bytes, so a receive or send allocates nothing.
 *
 * How a vanished VM shows up (measured on Linux 6.x; see test/platform/datagram-link.test.ts):
 * when the other end of a socketpair is closed, this end does NOT become readable and reports no
 * EPOLLHUP, and recvmmsg keeps returning EAGAIN; only sending reveals it, with ECONNREFUSED on the
 * first send and ENOTCONN on every later one (EPIPE if the peer shut the socket down instead). So
 * send() returns -1 for those, and receive() does too should the kernel ever report them there.
 */
import type { Pointer } from "bun:ffi";
import { readlinkSync } from "node:fs";
import { SoftnetError } from "../../errors.ts";
import { checkDatagramSocket, type DatagramSocketProbe, stableAddress } from "../ffi-helpers.ts";
import { type FrameBatch, type FrameLink, markUnsent, SendOutcome } from "../link.ts";
import {
  AF_UNIX,
  Errno,
  lastErrno,
  libc,
  MSG_DONTWAIT,
  MSG_NOSIGNAL,
  MSG_TRUNC,
  SO_DOMAIN,
  SO_SNDBUF,
  SO_TYPE,
  SOCK_DGRAM,
  SOL_SOCKET,
  SysError,
} from "./libc.ts";

/**
 * Our send buffer bounds how many frames can wait in the kernel for the VM to read them: Linux
 * charges an AF_UNIX datagram to the sender until the receiver takes it, and neither the receiver's
 * SO_RCVBUF nor net.unix.max_dgram_qlen applies between socketpair ends (both measured). The
 * default (208 KiB) holds about 90 full-size frames; 1 MiB (the kernel doubles it to 2 MiB, capped
 * by net.core.wmem_max) holds about 900, enough to ride out a burst from the host while the guest is
 * briefly descheduled. It matches what Tart sets on its end. SO_RCVBUF is left alone: it has no
 * effect on AF_UNIX datagram sockets on Linux; the VM's own send buffer bounds frames coming to us.
 */
const SEND_BUFFER_BYTES = 1 << 20;

// Linux LP64 layouts (x86_64 and arm64), in 32-bit words:
// struct mmsghdr (64 bytes) = struct msghdr { void *msg_name @0; socklen_t msg_namelen @8;
//   struct iovec *msg_iov @16; size_t msg_iovlen @24; void *msg_control @32; size_t msg_controllen @40;
//   int msg_flags @48 } + unsigned int msg_len @56.
// struct iovec (16 bytes) = { void *iov_base @0; size_t iov_len @8 }.
const MMSGHDR_BYTES = 64;
const IOVEC_BYTES = 16;
const MMSGHDR_WORDS = MMSGHDR_BYTES / 4;
const IOVEC_WORDS = IOVEC_BYTES / 4;
const MSG_IOV_WORD = 16 / 4;
const MSG_IOVLEN_WORD = 24 / 4;
const MSG_FLAGS_WORD = 48 / 4;
const MSG_LEN_WORD = 56 / 4;
const TWO_TO_32 = 2 ** 32;

/**
 * Native message vectors for one FrameBatch:
 * [receive mmsghdr × capacity][send mmsghdr × capacity][receive iovec × capacity][send iovec × capacity].
 * Receive header i always describes slot i. Send header j is filled per send with the j-th slot
 * listed by the caller.
 */
class MessageVectors {
  readonly words: Uint32Array;
  readonly receiveHeaders: number;
  readonly sendHeaders: number;
  readonly firstSendIovecWord: number;
  /** Address of each slot, split into 32-bit halves so filling an iovec needs no arithmetic. */
  readonly slotAddressLow: Uint32Array;
  readonly slotAddressHigh: Uint32Array;

  constructor(
    readonly batch: FrameBatch,
    readonly bytesAddress: number,
  ) {
    const capacity = batch.capacity;
    // A fresh ArrayBuffer (not `new Uint32Array(n)`) so the vectors never live inline in the view.
    const memory = new ArrayBuffer(capacity * 2 * (MMSGHDR_BYTES + IOVEC_BYTES));
    this.words = new Uint32Array(memory);
    const base = stableAddress(this.words);
    this.receiveHeaders = base;
    this.sendHeaders = base + capacity * MMSGHDR_BYTES;
    const receiveIovecs = capacity * 2 * MMSGHDR_BYTES;
    const sendIovecs = receiveIovecs + capacity * IOVEC_BYTES;
    this.firstSendIovecWord = sendIovecs / 4;
    this.slotAddressLow = new Uint32Array(capacity);
    this.slotAddressHigh = new Uint32Array(capacity);
    for (let slot = 0; slot < capacity; slot++) {
      const address = bytesAddress + batch.offsetOf(slot);
      this.slotAddressLow[slot] = address >>> 0;
      this.slotAddressHigh[slot] = Math.floor(address / TWO_TO_32);

      const receiveHeader = slot * MMSGHDR_WORDS;
      this.setAddress(receiveHeader + MSG_IOV_WORD, base + receiveIovecs + slot * IOVEC_BYTES);
      this.words[receiveHeader + MSG_IOVLEN_WORD] = 1;
      const receiveIovec = receiveIovecs / 4 + slot * IOVEC_WORDS;
      this.setAddress(receiveIovec, address);
      this.words[receiveIovec + 2] = batch.slotSize;

      const sendHeader = (capacity + slot) * MMSGHDR_WORDS;
      this.setAddress(sendHeader + MSG_IOV_WORD, base + sendIovecs + slot * IOVEC_BYTES);
      this.words[sendHeader + MSG_IOVLEN_WORD] = 1;
    }
  }

  private setAddress(word: number, address: number): void {
    this.words[word] = address >>> 0;
    this.words[word + 1] = Math.floor(address / TWO_TO_32);
  }
}

/** A FrameLink over a connected AF_UNIX datagram socket. Owns the fd: close() closes it. */
export class DatagramLink implements FrameLink {
  readonly description: string;
  readonly pollFd: number;
  /** Datagrams larger than a batch slot: the kernel truncated them; they are reported with length 0. */
  truncatedFrames = 0;

  private readonly fd: number;
  private closed = false;
  private vectors: MessageVectors | undefined;
  private readonly vectorsByBatch = new WeakMap<FrameBatch, MessageVectors>();

  /**
   * Takes over `fd`, which must be a connected AF_UNIX SOCK_DGRAM socket (it is checked; the error
   * names the option, e.g. "--vm-fd 5 is not a datagram socket (it is /dev/pts/0)").
   *
   * Non-blocking I/O comes from MSG_DONTWAIT on every call rather than O_NONBLOCK on the fd:
   * O_NONBLOCK is a property of the open file description, which this fd shares with whoever passed
   * it (Tart's end of stdin, or a shell), and changing it would change their I/O too.
   */
  constructor(fd: number, options: { optionName?: string } = {}) {
    const optionName = options.optionName ?? "--vm-fd";
    checkDatagramSocket(linuxSocketProbe, fd, optionName);
    const sendBuffer = new Int32Array([SEND_BUFFER_BYTES]);
    if (libc.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, sendBuffer, 4) < 0) {
      throw new SoftnetError(`cannot size the send buffer of ${optionName} ${fd}`, {
        cause: new SysError("setsockopt(SO_SNDBUF)", lastErrno()),
      });
    }
    this.fd = fd;
    this.pollFd = fd;
    this.description = `vm socket fd ${fd}`;
  }

  receive(batch: FrameBatch): number {
    const vectors = this.vectorsFor(batch);
    const received = libc.recvmmsg(
      this.fd,
      vectors.receiveHeaders as Pointer,
      batch.capacity,
      MSG_DONTWAIT,
      null,
    );
    if (received < 0) {
      const errno = lastErrno();
      batch.count = 0;
      if (errno === Errno.EAGAIN || errno === Errno.EINTR) return 0;
      if (isPeerGone(errno)) return -1;
      throw new SoftnetError(`cannot receive frames from ${this.description}`, {
        cause: new SysError("recvmmsg", errno),
      });
    }
    const words = vectors.words;
    const lengths = batch.lengths;
    for (let i = 0; i < received; i++) {
      const header = i * MMSGHDR_WORDS;
      // A zero-length datagram is a legal (empty) frame on SOCK_DGRAM, not end of file: it is passed
      // on with length 0 and the policy drops it as malformed.
      if ((words[header + MSG_FLAGS_WORD]! & MSG_TRUNC) !== 0) {
        lengths[i] = 0;
        this.truncatedFrames++;
      } else {
        lengths[i] = words[header + MSG_LEN_WORD]!;
      }
    }
    batch.count = received;
    return received;
  }

  send(batch: FrameBatch, slots: Uint16Array, count: number, outcomes?: Uint8Array): number {
    if (count <= 0) return 0;
    const vectors = this.vectorsFor(batch);
    const words = vectors.words;
    const lengths = batch.lengths;
    for (let j = 0; j < count; j++) {
      const slot = slots[j]!;
      const iovec = vectors.firstSendIovecWord + j * IOVEC_WORDS;
      words[iovec] = vectors.slotAddressLow[slot]!;
      words[iovec + 1] = vectors.slotAddressHigh[slot]!;
      words[iovec + 2] = lengths[slot]!;
    }
    let sent = 0;
    let next = 0;
    while (next < count) {
      const result = libc.sendmmsg(
        this.fd,
        (vectors.sendHeaders + next * MMSGHDR_BYTES) as Pointer,
        count - next,
        MSG_DONTWAIT | MSG_NOSIGNAL,
      );
      if (result > 0) {
        // A short count means message `next + result` failed; its error is lost, so go round again
        // to learn it (EAGAIN: stop; peer gone: ECONNREFUSED or ENOTCONN).
        markUnsent(outcomes, slots, next, next + result, SendOutcome.SENT);
        sent += result;
        next += result;
        continue;
      }
      const errno = result === 0 ? Errno.EAGAIN : lastErrno();
      if (errno === Errno.EAGAIN || errno === Errno.ENOBUFS) {
        markUnsent(outcomes, slots, next, count, SendOutcome.NO_ROOM); // receiver full: drop the rest
        break;
      }
      if (errno === Errno.EINTR) continue;
      if (isPeerGone(errno)) return -1;
      if (errno === Errno.EMSGSIZE) {
        // Only this frame is too large for the socket (net/unix/af_unix.c, unix_dgram_sendmsg:
        // len > sk_sndbuf - 32): mark it, send the others.
        if (outcomes !== undefined) outcomes[slots[next]!] = SendOutcome.REFUSED_TOO_LONG;
        next++;
        continue;
      }
      throw new SoftnetError(`cannot send frames to ${this.description}`, {
        cause: new SysError("sendmmsg", errno),
      });
    }
    return sent;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    libc.close(this.fd);
  }

  private vectorsFor(batch: FrameBatch): MessageVectors {
    // One native call per batch operation re-checks that the batch's bytes have not moved since the
    // vectors were built (see stableAddress); normally the cached vectors are used as they are.
    const bytesAddress = stableAddress(batch.bytes);
    let vectors = this.vectors;
    if (vectors === undefined || vectors.batch !== batch) {
      vectors = this.vectorsByBatch.get(batch);
    }
    if (vectors === undefined || vectors.bytesAddress !== bytesAddress) {
      vectors = new MessageVectors(batch, bytesAddress);
      this.vectorsByBatch.set(batch, vectors);
    }
    this.vectors = vectors;
    return vectors;
  }
}

function isPeerGone(errno: number): boolean {
  return (
    errno === Errno.ECONNREFUSED ||
    errno === Errno.ENOTCONN ||
    errno === Errno.EPIPE ||
    errno === Errno.ECONNRESET
  );
}

const socketFamilies: Record<number, string> = {
  1: "AF_UNIX",
  2: "AF_INET",
  10: "AF_INET6",
  16: "AF_NETLINK",
  17: "AF_PACKET",
};
const socketTypes: Record<number, string> = { 1: "stream", 2: "datagram", 3: "raw", 5: "seqpacket" };

/** checkDatagramSocket's calls on Linux: SO_DOMAIN gives the family, /proc names a non-socket. */
const linuxSocketProbe: DatagramSocketProbe = {
  AF_UNIX,
  SOCK_DGRAM,
  EBADF: Errno.EBADF,
  ENOTSOCK: Errno.ENOTSOCK,
  ENOTCONN: Errno.ENOTCONN,
  socketType: (fd) => socketOption(fd, SO_TYPE),
  socketFamily: (fd) => socketOption(fd, SO_DOMAIN),
  familyCall: "getsockopt(SO_DOMAIN)",
  peerError: (fd) => {
    const address = new Uint8Array(112);
    const addressLength = new Uint32Array([address.length]);
    return libc.getpeername(fd, address, addressLength) < 0 ? lastErrno() : 0;
  },
  callError: (call, errno) => new SysError(call, errno),
  notASocket: (fd) => `is not a datagram socket (it is ${describeFd(fd)})`,
  describeSocket: (family, type) =>
    `it is an ${socketFamilies[family] ?? `family ${family}`} ${socketTypes[type] ?? `type ${type}`} socket`,
};

/** getsockopt(fd, SOL_SOCKET, option) for an int option: its value, or -errno. */
function socketOption(fd: number, option: number): number {
  const value = new Int32Array(1);
  const length = new Uint32Array([4]);
  return libc.getsockopt(fd, SOL_SOCKET, option, value, length) < 0 ? -lastErrno() : value[0]!;
}

/** What an fd refers to, as /proc shows it: "/dev/pts/0", "pipe:[1234]", "anon_inode:[eventfd]". */
function describeFd(fd: number): string {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return "something else";
  }
}
