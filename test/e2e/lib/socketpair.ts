// A socketpair(AF_UNIX, SOCK_DGRAM) through bun:ffi: Bun has no API for it, and the e2e tests
// need exactly what Tart creates — one datagram per Ethernet frame — to hand one end to the
// guest's relay and the other to the forwarder under test. The lead may swap this for
// src/platform/linux/libc.ts once that exists.
import { dlopen, FFIType, read } from "bun:ffi";

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
// Set on both ends so neither leaks into processes that are not handed it explicitly.
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_SNDBUF = 7;
const SO_RCVBUF = 8;

const libc = dlopen("libc.so.6", {
  // int socketpair(int domain, int type, int protocol, int sv[2]);
  socketpair: { args: [FFIType.i32, FFIType.i32, FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
  // int setsockopt(int sockfd, int level, int optname, const void *optval, socklen_t optlen);
  setsockopt: {
    args: [FFIType.i32, FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.u32],
    returns: FFIType.i32,
  },
  // int close(int fd);
  close: { args: [FFIType.i32], returns: FFIType.i32 },
  // int *__errno_location(void);
  __errno_location: { args: [], returns: FFIType.ptr },
});

function errno(): number {
  const location = libc.symbols.__errno_location();
  return location === null ? -1 : read.i32(location, 0);
}

export interface DatagramPair {
  /** The end given to the guest's TAP relay (the VM side, as Virtualization.framework holds it). */
  vmEnd: number;
  /** The end given to the forwarder (softnet's --vm-fd, or the transparent relay). */
  hostEnd: number;
}

function setBuffer(fd: number, option: number, bytes: number): void {
  const value = new Int32Array([bytes]);
  if (libc.symbols.setsockopt(fd, SOL_SOCKET, option, value, 4) !== 0) {
    throw new Error(`setsockopt(${fd}, ${option}) failed: errno ${errno()}`);
  }
}

/** Creates an AF_UNIX SOCK_DGRAM pair with Tart's buffer sizes (4 MiB receive, 1 MiB send). */
export function datagramSocketPair(): DatagramPair {
  const fds = new Int32Array(2);
  if (libc.symbols.socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, fds) !== 0) {
    throw new Error(`socketpair(AF_UNIX, SOCK_DGRAM) failed: errno ${errno()}`);
  }
  for (const fd of fds) {
    setBuffer(fd, SO_RCVBUF, 4 * 1024 * 1024);
    setBuffer(fd, SO_SNDBUF, 1024 * 1024);
  }
  return { vmEnd: fds[0]!, hostEnd: fds[1]! };
}

/** Closes an fd this process holds (after it was handed to a child, the child keeps its copy). */
export function closeFd(fd: number): void {
  libc.symbols.close(fd);
}
