/**
 * The Linux native reactor: a thread blocked in epoll_wait on EPOLLONESHOT registrations (see
 * epoll-reactor.c and the generic Reactor in ../reactor.ts).
 */
import { cc } from "bun:ffi";
import { readFileSync } from "node:fs";
import { SoftnetError } from "../../errors.ts";
import { Errno, functionAddress, lastSysError, libc, MFD_CLOEXEC, pthread, SysError } from "../libc.ts";
import { NATIVE_REACTOR_SYMBOLS, type NativeReactor, type ReactorBackend } from "../reactor.ts";
// `type: "file"` makes `bun build --compile` embed the C source; the import is its path.
import reactorSourcePath from "./epoll-reactor.c" with { type: "file" };

let compiled: NativeReactor | undefined;

/**
 * Compiles epoll-reactor.c once per process, on first use (a few milliseconds).
 *
 * The source always reaches TinyCC through a memfd: inside a `bun build --compile` binary the
 * embedded file lives at /$bunfs/..., a path only Bun's own file APIs understand, so TinyCC cannot
 * open it. A memfd has no name in the file system (nothing to race or replace, which matters for a
 * setuid binary), and /proc/self/fd/N lets TinyCC open it like a file. Using the same path when
 * running from the source tree means the tests exercise exactly what the release binary does.
 *
 * `flags` is always given: when it is absent Bun takes TinyCC's options from the BUN_TCC_OPTIONS
 * environment variable (verified on 1.4.5: -D and -nostdlib from it take effect), which would let
 * whoever starts a setuid-root softnet change code that then runs as root. -nostdlib keeps TinyCC
 * from searching the file system for libc at all (see epoll-reactor.c).
 */
function compileReactor() {
  const source = readFileSync(reactorSourcePath, "utf8");
  const memfd = libc.memfd_create("softnet-reactor.c", MFD_CLOEXEC);
  if (memfd < 0) {
    throw new SoftnetError("cannot compile the readiness reactor", { cause: lastSysError("memfd_create") });
  }
  try {
    const bytes = Buffer.from(source, "utf8");
    let written = 0;
    while (written < bytes.length) {
      const result = libc.write(memfd, bytes.subarray(written), bytes.length - written);
      if (result < 0) {
        throw new SoftnetError("cannot compile the readiness reactor", { cause: lastSysError("write") });
      }
      written += result;
    }
    return cc({
      source: `/proc/self/fd/${memfd}`,
      flags: ["-std=c11", "-nostdlib"],
      symbols: NATIVE_REACTOR_SYMBOLS,
    }).symbols;
  } finally {
    libc.close(memfd);
  }
}

/** struct libc_functions in epoll-reactor.c, in declaration order. */
function libcFunctionTable(): BigUint64Array {
  const functions = [
    libc.epoll_create1,
    libc.epoll_ctl,
    libc.epoll_wait,
    libc.eventfd,
    libc.write,
    libc.close,
    pthread.pthread_create,
    pthread.pthread_join,
    libc.calloc,
    libc.free,
    libc.__errno_location,
  ];
  return BigUint64Array.from(functions, (fn) => BigInt(functionAddress(fn)));
}

/** The epoll backend for Reactor (compiled on first use, once per process). */
export function epollReactorBackend(): ReactorBackend {
  compiled ??= compileReactor();
  return {
    name: "epoll",
    native: compiled,
    libcFunctions: libcFunctionTable(),
    sysError: (call, negativeErrno) => new SysError(call, -negativeErrno),
    watchHint: (negativeErrno) =>
      negativeErrno === -Errno.EPERM ? "epoll cannot watch regular files or directories" : undefined,
  };
}
