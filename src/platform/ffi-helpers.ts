/**
 * FFI helpers both platforms share: pure functions over bun:ffi that bind no library, so importing
 * this module has no side effect on either platform (linux/libc.ts binds glibc when imported, which
 * would fail on macOS; darwin/system.ts binds only when asked). Each platform passes its own calls.
 */
import { ptr } from "bun:ffi";
import { SoftnetError } from "../errors.ts";

/**
 * The address of a typed array's bytes, for memory the kernel will read or write later through a
 * pointer stored in another structure (an iovec, a vmpktdesc). JavaScriptCore keeps small typed
 * arrays (under ~4 KiB) inline and moves their bytes into a new ArrayBuffer the first time anything
 * reads `.buffer`, which would leave such a pointer dangling (measured on Bun 1.4.5). Reading
 * `.buffer` first makes that move happen now; afterwards the bytes stay put while the array is alive.
 */
export function stableAddress(view: NodeJS.TypedArray): number {
  void view.buffer;
  return ptr(view);
}

/** A NUL-terminated copy of `text` for `const char *` arguments that must outlive a call. */
export function cString(text: string): Buffer {
  return Buffer.from(`${text}\0`, "utf8");
}

/** What checkDatagramSocket needs from a platform: its calls, numbers and wording. */
export interface DatagramSocketProbe {
  readonly AF_UNIX: number;
  readonly SOCK_DGRAM: number;
  readonly EBADF: number;
  readonly ENOTSOCK: number;
  readonly ENOTCONN: number;
  /** getsockopt(fd, SOL_SOCKET, SO_TYPE): the socket's type, or -errno. */
  socketType(fd: number): number;
  /** The socket's address family, or -errno, from the call `familyCall` names. */
  socketFamily(fd: number): number;
  readonly familyCall: string;
  /** getpeername(fd): 0 when the socket has a peer, else errno. */
  peerError(fd: number): number;
  /** The platform's error for a failed call. */
  callError(call: string, errno: number): Error;
  /** The rest of the sentence "<option> <fd> …" for an fd that is not a socket. */
  notASocket(fd: number): string;
  /** What a socket of another family or type is, e.g. "it is an AF_INET stream socket". */
  describeSocket(family: number, type: number): string;
}

/** Throws a SoftnetError that a person can act on unless `fd` is a connected AF_UNIX datagram socket. */
export function checkDatagramSocket(probe: DatagramSocketProbe, fd: number, optionName: string): void {
  const hint = "pass one end of socketpair(AF_UNIX, SOCK_DGRAM), as Tart does on fd 0";
  if (!Number.isInteger(fd) || fd < 0) {
    throw new SoftnetError(`${optionName} ${fd} is not a file descriptor number`, { hint });
  }
  const type = probe.socketType(fd);
  if (type === -probe.EBADF) {
    throw new SoftnetError(`${optionName} ${fd} is not an open file descriptor`, { hint });
  }
  if (type === -probe.ENOTSOCK) {
    throw new SoftnetError(`${optionName} ${fd} ${probe.notASocket(fd)}`, { hint });
  }
  if (type < 0) {
    throw new SoftnetError(`cannot inspect ${optionName} ${fd}`, {
      cause: probe.callError("getsockopt(SO_TYPE)", -type),
    });
  }
  const family = probe.socketFamily(fd);
  if (family < 0) {
    throw new SoftnetError(`cannot inspect ${optionName} ${fd}`, {
      cause: probe.callError(probe.familyCall, -family),
    });
  }
  if (family !== probe.AF_UNIX || type !== probe.SOCK_DGRAM) {
    throw new SoftnetError(
      `${optionName} ${fd} is not a datagram socket (${probe.describeSocket(family, type)})`,
      { hint },
    );
  }
  // An unconnected socket would fail every send (ENOTCONN, EDESTADDRREQ), which means "VM gone" to us.
  const errno = probe.peerError(fd);
  if (errno === probe.ENOTCONN) {
    throw new SoftnetError(`${optionName} ${fd} is a datagram socket but is not connected to a peer`, {
      hint,
    });
  }
  if (errno !== 0) {
    throw new SoftnetError(`cannot inspect ${optionName} ${fd}`, {
      cause: probe.callError("getpeername", errno),
    });
  }
}
