/**
 * The VM side of softnet on macOS: the AF_UNIX SOCK_DGRAM socket Tart hands over (`--vm-fd`, usually
 * 0), one datagram per Ethernet frame.
 *
 * macOS has no recvmmsg/sendmmsg (recvmsg_x/sendmsg_x exist but are private, undocumented system
 * calls: not worth the risk for a setuid binary), so this link moves one frame per system call:
 * recvmsg into a slot (recvmsg rather than recv, because only msg_flags tells a datagram that was
 * cut short, MSG_TRUNC, from one that exactly filled the slot) and send from a slot. One msghdr and
 * one iovec are preallocated; per frame only the iovec's address and length are rewritten, so a
 * receive or send allocates nothing.
 *
 * The constants come from the kernel underneath (system.ts KERNEL), so the same code runs on Linux
 * in CI: MSG_DONTWAIT is 0x80 on macOS and 0x40 on Linux, EAGAIN 35 and 11, and so on. On macOS
 * SO_NOSIGPIPE on the socket keeps every send from raising SIGPIPE (macOS 11+ also has MSG_NOSIGNAL,
 * but the socket option covers all sends on every version); on Linux sends carry MSG_NOSIGNAL.
 *
 * When the VM's end closes (Tart died without stopping softnet), macOS and Linux differ, and softnet
 * must notice on both. xnu (apple-oss-distributions/xnu, bsd/kern/uipc_usrreq.c, uipc_socket.c,
 * uipc_syscalls.c): socketpair() connects the two datagram sockets to each other; closing one runs
 * unp_detach, which calls unp_drop(ECONNRESET) on ours: `so_error = ECONNRESET` once, and
 * unp_disconnect clears SS_ISCONNECTED, with no wake-up of a poll() already waiting. Then:
 * - recv (soreceive) returns the datagrams still queued first, then ECONNRESET once (clearing
 *   so_error), then EAGAIN for ever;
 * - poll (EVFILT_READ, filt_soread) reports readable while data or so_error is pending, and never
 *   again after that;
 * - send (sosendcheck) returns so_error if still pending (ECONNRESET, cleared), then EDESTADDRREQ:
 *   not connected, and send() gives no address;
 * - getpeername returns ENOTCONN (SS_ISCONNECTED is clear) without touching so_error.
 * EPIPE and ECONNREFUSED do not occur on this path. Linux instead keeps recv at EAGAIN, and send
 * says ECONNREFUSED, then ENOTCONN.
 * So the link remembers a gone peer for good once any call saw it (the one ECONNRESET may arrive
 * with the last frames, and poll will not report the socket again), and peerClosed() lets the
 * caller ask, with getpeername, when no call has seen it.
 */
import type { Pointer } from "bun:ffi";
import { SoftnetError } from "../../errors.ts";
import { checkDatagramSocket, type DatagramSocketProbe, stableAddress } from "../ffi-helpers.ts";
import { type FrameBatch, type FrameLink, markUnsent, SendOutcome } from "../link.ts";
import { DarwinSysError, type DarwinSystem } from "./system.ts";

/**
 * Our send buffer. On macOS it also caps the size of one datagram (sosendcheck: EMSGSIZE when a
 * datagram exceeds so_snd's high-water mark, and net.local.dgram.maxdgram, uipc_usrreq.c
 * unpdg_sendspace, is only 2 KiB by default), on Linux it bounds the frames queued for the VM. Tart
 * sets the same on its end; set it here too for callers that do not.
 */
const SEND_BUFFER_BYTES = 1 << 20;
const TWO_TO_32 = 2 ** 32;

/** A FrameLink over a connected AF_UNIX datagram socket, per-frame calls. Owns the fd. */
export class DarwinDatagramLink implements FrameLink {
  readonly description: string;
  readonly pollFd: number;
  /** Datagrams larger than a slot: cut short by the kernel, reported with length 0. */
  truncatedFrames = 0;
  private closed = false;
  /** Set for good once a call saw that the VM closed its end; receive and send then return -1. */
  private gone = false;
  /** getpeername's out-parameters for peerClosed(), preallocated. */
  private readonly peerAddress = new Uint8Array(new ArrayBuffer(128));
  private readonly peerAddressLength = new Uint32Array(new ArrayBuffer(4));
  private readonly header: Uint32Array;
  private readonly headerAddress: number;
  private readonly iovecWord: number;
  private readonly flagsWord: number;
  private readonly receiveFlags: number;
  private readonly sendFlags: number;

  /**
   * Takes over `fd`, which must be a connected AF_UNIX SOCK_DGRAM socket (checked; the error names
   * the option). Non-blocking comes from MSG_DONTWAIT on every call, not O_NONBLOCK: the open file
   * description is shared with whoever passed the fd, and fcntl is variadic (unsafe to bind on arm64).
   */
  constructor(
    private readonly system: DarwinSystem,
    private readonly fd: number,
    options: { optionName?: string } = {},
  ) {
    const optionName = options.optionName ?? "--vm-fd";
    const { kernel, libc } = system;
    checkDatagramSocket(darwinSocketProbe(system), fd, optionName);
    const value = new Int32Array([SEND_BUFFER_BYTES]);
    if (libc.setsockopt(fd, kernel.SOL_SOCKET, kernel.SO_SNDBUF, value, 4) < 0) {
      throw new SoftnetError(`cannot size the send buffer of ${optionName} ${fd}`, {
        cause: new DarwinSysError(system, "setsockopt(SO_SNDBUF)", system.errno()),
      });
    }
    if (kernel.SO_NOSIGPIPE !== 0) {
      value[0] = 1;
      if (libc.setsockopt(fd, kernel.SOL_SOCKET, kernel.SO_NOSIGPIPE, value, 4) < 0) {
        throw new SoftnetError(`cannot set SO_NOSIGPIPE on ${optionName} ${fd}`, {
          cause: new DarwinSysError(system, "setsockopt(SO_NOSIGPIPE)", system.errno()),
        });
      }
    }
    // [struct msghdr][struct iovec], zeroed: no name, no control data.
    const msghdr = kernel.msghdr;
    this.header = new Uint32Array(new ArrayBuffer(msghdr.bytes + 16));
    this.headerAddress = stableAddress(this.header);
    const iovecAddress = this.headerAddress + msghdr.bytes;
    this.header[msghdr.iov / 4] = iovecAddress >>> 0;
    this.header[msghdr.iov / 4 + 1] = Math.floor(iovecAddress / TWO_TO_32);
    this.header[msghdr.iovlen / 4] = 1; // int on macOS, size_t (upper half stays 0) on Linux
    this.iovecWord = msghdr.bytes / 4;
    this.flagsWord = msghdr.flags / 4;
    this.receiveFlags = kernel.MSG_DONTWAIT;
    this.sendFlags = kernel.MSG_DONTWAIT | kernel.MSG_NOSIGNAL;
    this.pollFd = fd;
    this.description = `vm socket fd ${fd}`;
  }

  /**
   * True once the VM has closed its end of the socket. Remembered from receive and send; otherwise
   * asked of the kernel: on macOS getpeername fails with ENOTCONN once the peer is gone (the call
   * reads SS_ISCONNECTED and leaves so_error and queued frames alone). Meant for a periodic check:
   * after the peer goes, macOS never again reports this socket readable, so without traffic towards
   * the VM neither receive nor send might ever run. (On Linux getpeername still answers until a send
   * fails, and the send reports it.)
   */
  peerClosed(): boolean {
    if (this.gone || this.closed) return this.gone;
    this.peerAddressLength[0] = this.peerAddress.length;
    if (this.system.libc.getpeername(this.fd, this.peerAddress, this.peerAddressLength) < 0) {
      if (this.system.errno() === this.system.kernel.errno.ENOTCONN) this.gone = true;
    }
    return this.gone;
  }

  receive(batch: FrameBatch): number {
    if (this.gone) {
      batch.count = 0;
      return -1;
    }
    const { libc, kernel } = this.system;
    const header = this.header;
    const base = stableAddress(batch.bytes);
    const slotSize = batch.slotSize;
    const lengths = batch.lengths;
    const truncated = kernel.MSG_TRUNC;
    let count = 0;
    while (count < batch.capacity) {
      const address = base + count * slotSize;
      header[this.iovecWord] = address >>> 0;
      header[this.iovecWord + 1] = Math.floor(address / TWO_TO_32);
      header[this.iovecWord + 2] = slotSize;
      header[this.flagsWord] = 0;
      const length = libc.recvmsg(this.fd, this.headerAddress as Pointer, this.receiveFlags);
      if (length >= 0) {
        // A zero-length datagram is a legal empty frame, not end of file: the policy drops it.
        if ((header[this.flagsWord]! & truncated) !== 0) {
          lengths[count++] = 0;
          this.truncatedFrames++;
        } else {
          lengths[count++] = length;
        }
        continue;
      }
      const errno = this.system.errno();
      if (errno === kernel.errno.EAGAIN) break;
      if (errno === kernel.errno.EINTR) continue;
      if (isPeerGone(this.system, errno)) {
        // xnu reports the close once, after the last queued datagram, possibly in this very call:
        // hand over what arrived and remember the loss; every later call returns -1.
        this.gone = true;
        batch.count = count;
        return count > 0 ? count : -1;
      }
      batch.count = count;
      throw new SoftnetError(`cannot receive frames from ${this.description}`, {
        cause: new DarwinSysError(this.system, "recvmsg", errno),
      });
    }
    batch.count = count;
    return count;
  }

  send(batch: FrameBatch, slots: Uint16Array, count: number, outcomes?: Uint8Array): number {
    if (this.gone) return -1;
    const { libc, kernel } = this.system;
    const base = stableAddress(batch.bytes);
    const slotSize = batch.slotSize;
    const lengths = batch.lengths;
    let sent = 0;
    for (let j = 0; j < count; j++) {
      const slot = slots[j]!;
      const result = libc.send(this.fd, (base + slot * slotSize) as Pointer, lengths[slot]!, this.sendFlags);
      if (result >= 0) {
        sent++;
        if (outcomes !== undefined) outcomes[slot] = SendOutcome.SENT;
        continue;
      }
      const errno = this.system.errno();
      // The VM is not reading fast enough: drop the rest, as the original does with ENOBUFS. (xnu
      // says ENOBUFS when the VM's receive buffer is full, uipc_send's sbappendaddr; Linux EAGAIN.)
      if (errno === kernel.errno.EAGAIN || errno === kernel.errno.ENOBUFS) {
        markUnsent(outcomes, slots, j, count, SendOutcome.NO_ROOM);
        break;
      }
      if (errno === kernel.errno.EINTR) {
        j--;
        continue;
      }
      if (isPeerGone(this.system, errno)) {
        this.gone = true;
        return -1;
      }
      if (errno === kernel.errno.EMSGSIZE) {
        // This frame only is larger than the socket carries: the others are still sent.
        if (outcomes !== undefined) outcomes[slot] = SendOutcome.REFUSED_TOO_LONG;
        continue;
      }
      throw new SoftnetError(`cannot send frames to ${this.description}`, {
        cause: new DarwinSysError(this.system, "send", errno),
      });
    }
    return sent;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.system.libc.close(this.fd);
  }
}

/**
 * The errors that mean the VM's end is gone. macOS (see the module comment): ECONNRESET (so_error
 * from unp_drop, on recv or send), EDESTADDRREQ (send once disconnected), EPIPE (sosendcheck on a
 * defunct socket). Linux: ECONNREFUSED (the first send to a closed peer), then ENOTCONN.
 */
function isPeerGone(system: DarwinSystem, errno: number): boolean {
  const e = system.kernel.errno;
  return (
    errno === e.ECONNRESET ||
    errno === e.EDESTADDRREQ ||
    errno === e.EPIPE ||
    errno === e.ECONNREFUSED ||
    errno === e.ENOTCONN
  );
}

/**
 * checkDatagramSocket's calls on macOS. macOS has no SO_DOMAIN: the family comes from the socket's
 * own address (getsockname).
 */
function darwinSocketProbe(system: DarwinSystem): DatagramSocketProbe {
  const { kernel, libc } = system;
  return {
    AF_UNIX: kernel.AF_UNIX,
    SOCK_DGRAM: kernel.SOCK_DGRAM,
    EBADF: kernel.errno.EBADF,
    ENOTSOCK: kernel.errno.ENOTSOCK,
    ENOTCONN: kernel.errno.ENOTCONN,
    socketType: (fd) => {
      const value = new Int32Array(1);
      const length = new Uint32Array([4]);
      return libc.getsockopt(fd, kernel.SOL_SOCKET, kernel.SO_TYPE, value, length) < 0
        ? -system.errno()
        : value[0]!;
    },
    socketFamily: (fd) => {
      const address = new Uint8Array(128);
      const addressLength = new Uint32Array([address.length]);
      return libc.getsockname(fd, address, addressLength) < 0
        ? -system.errno()
        : address[kernel.sockaddrFamilyOffset]!;
    },
    familyCall: "getsockname",
    peerError: (fd) => {
      const address = new Uint8Array(128);
      const addressLength = new Uint32Array([address.length]);
      return libc.getpeername(fd, address, addressLength) < 0 ? system.errno() : 0;
    },
    callError: (call, errno) => new DarwinSysError(system, call, errno),
    notASocket: () => "is not a socket",
    describeSocket: (family, type) => `family ${family}, type ${type}`,
  };
}
