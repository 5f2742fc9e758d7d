/**
 * --expose, the part Linux and macOS share: before any forward is asked for, each external port
 * is bound by one TCP socket on 0.0.0.0:port, without SO_REUSEADDR or SO_REUSEPORT and never
 * listening. If the bind fails with EADDRINUSE, something on this host uses the port and softnet
 * refuses to start, in one line naming the port (and, where the platform can tell, its holder).
 * What each platform then does with the socket, and why, is in its own module:
 * - Linux (linux/port-hold.ts) keeps it for as long as softnet runs, so a later service cannot
 *   take the port that the DNAT rules divert;
 * - macOS (darwin/port-check.ts) releases it at once, because whether vmnet's forward itself
 *   binds the port is not known (see there).
 *
 * The C calls come in through PortBindCalls (glibc on Linux, libSystem on macOS), as identity.ts
 * takes IdentityCalls, so this module binds no library itself.
 */
import type { ExposedPort } from "../cli.ts";
import { SoftnetError } from "../errors.ts";

/**
 * Which `struct sockaddr_in` the C library's bind() reads. Both are 16 bytes with the port (in
 * network order) at 2..3 and the address at 4..7; they differ in the first two bytes:
 * - "linux": { sa_family_t sin_family (16 bits, host order); in_port_t sin_port; struct in_addr
 *   sin_addr; unsigned char sin_zero[8] } (Linux include/uapi/linux/in.h, __SOCK_SIZE__ 16);
 * - "xnu": { __uint8_t sin_len; sa_family_t sin_family (8 bits: __uint8_t,
 *   bsd/sys/_types/_sa_family_t.h); in_port_t sin_port; struct in_addr sin_addr; char
 *   sin_zero[8] } (xnu bsd/netinet/in.h, the 4.4BSD layout). xnu's bind copies the caller's
 *   address_len bytes and then overwrites sa_len with address_len (bsd/kern/uipc_syscalls.c,
 *   getsockaddr/getsockaddr_s); sin_len is still set to 16, as the header defines it.
 */
export type SockaddrInLayout = "linux" | "xnu";

/** The C library functions and numbers this module needs, supplied by the platform. */
export interface PortBindCalls {
  /** int socket(int domain, int type, int protocol); */
  socket(domain: number, type: number, protocol: number): number;
  /** int bind(int socket, const struct sockaddr *address, socklen_t address_len); */
  bind(fd: number, address: Uint8Array, length: number): number;
  /** int close(int fd); */
  close(fd: number): number;
  /** The error of the call that just failed, with its errno (read it first thing). */
  lastError(call: string): Error & { readonly errno: number };
  readonly AF_INET: number;
  readonly SOCK_STREAM: number;
  /** OR-ed into socket()'s type: SOCK_CLOEXEC where the kernel has it, else 0. */
  readonly socketTypeFlags: number;
  /** EADDRINUSE in the numbering of the kernel underneath. */
  readonly EADDRINUSE: number;
  readonly sockaddrIn: SockaddrInLayout;
  /**
   * "held by ...": who uses a port this host refused, when the platform can tell; undefined when
   * it cannot (the refusal then names the port only).
   */
  describeHolder?(port: number): string | undefined;
}

/** struct sockaddr_in for INADDR_ANY (0.0.0.0) and `port`, in the C library's layout. */
export function ipv4AnyAddress(port: number, layout: SockaddrInLayout, AF_INET: number): Uint8Array {
  const address = new Uint8Array(16);
  const view = new DataView(address.buffer);
  if (layout === "xnu") {
    view.setUint8(0, address.length); // sin_len
    view.setUint8(1, AF_INET); // sin_family
  } else {
    view.setUint16(0, AF_INET, true); // sin_family, host order (little-endian on x86_64 and arm64)
  }
  view.setUint16(2, port, false); // sin_port, network order; sin_addr = INADDR_ANY and sin_zero stay 0
  return address;
}

/** The sockets bound to the exposed ports; release() gives them back. */
export class HeldPorts {
  constructor(
    private readonly calls: PortBindCalls,
    private readonly fds: number[],
  ) {}

  release(): void {
    for (const fd of this.fds.splice(0)) this.calls.close(fd);
  }
}

/**
 * Binds every exposed host port (each external port once), or throws naming the first one that is
 * in use, having closed what it bound before.
 */
export function holdExposedPorts(ports: readonly ExposedPort[], calls: PortBindCalls): HeldPorts {
  const fds: number[] = [];
  try {
    for (const port of new Set(ports.map((p) => p.externalPort))) fds.push(holdPort(port, calls));
  } catch (error) {
    for (const fd of fds) calls.close(fd);
    throw error;
  }
  return new HeldPorts(calls, fds);
}

function holdPort(port: number, calls: PortBindCalls): number {
  const fd = calls.socket(calls.AF_INET, calls.SOCK_STREAM | calls.socketTypeFlags, 0);
  if (fd < 0) {
    throw new SoftnetError(`cannot expose port ${port}`, { cause: calls.lastError("socket(AF_INET)") });
  }
  const address = ipv4AnyAddress(port, calls.sockaddrIn, calls.AF_INET);
  if (calls.bind(fd, address, address.length) === 0) return fd;
  const failure = calls.lastError(`bind(0.0.0.0:${port})`);
  calls.close(fd);
  if (failure.errno === calls.EADDRINUSE) {
    const holder = calls.describeHolder?.(port);
    const inUse = `cannot expose port ${port}: it is in use on this host`;
    throw new SoftnetError(holder === undefined ? inUse : `${inUse} (${holder})`);
  }
  throw new SoftnetError(`cannot expose port ${port}`, { cause: failure });
}
