/**
 * The Linux native reactor: a thread blocked in epoll_wait on EPOLLONESHOT registrations (see
 * epoll-reactor.c and the generic Reactor in ../reactor.ts).
 */

import { NATIVE_REACTOR_SYMBOLS, type NativeReactor, type ReactorBackend } from "../reactor.ts";
import {
  compileSealedSource,
  F_ADD_SEALS,
  prepareSealedSource,
  type SealedSource,
  type SourceFileCalls,
} from "../runtime-c.ts";
// `type: "file"` makes `bun build --compile` embed the C source; the import is its path.
import reactorSourcePath from "./epoll-reactor.c" with { type: "file" };
import { Errno, functionAddress, lastSysError, libc, pthread, SysError } from "./libc.ts";

let compiled: NativeReactor | undefined;

/** glibc's calls for a sealed memfd (runtime-c.ts); the Linux runtime never uses a temporary file. */
export const linuxSourceFileCalls: SourceFileCalls = {
  memfdCreate: (name, flags) => libc.memfd_create(name, flags),
  addSeals: (fd, seals) => libc.fcntl(fd, F_ADD_SEALS, seals),
  tempFile: undefined,
  write: (fd, bytes, length) => libc.write(fd, bytes, length),
  close: (fd) => libc.close(fd),
  lastError: (call) => lastSysError(call),
};

/**
 * Reads epoll-reactor.c into a sealed memfd (runtime-c.ts). The runtime calls it while root, before
 * the drop; the compile happens afterwards, from that descriptor.
 */
export function prepareEpollReactorSource(): SealedSource {
  return prepareSealedSource(linuxSourceFileCalls, "the readiness reactor", reactorSourcePath);
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

/**
 * The epoll backend for Reactor, compiled once per process from `source` (prepared before the drop)
 * or, when none is given (tests, tools that never were root), from a source prepared now.
 */
export function epollReactorBackend(source?: SealedSource): ReactorBackend {
  if (compiled === undefined) {
    compiled = compileSealedSource(source ?? prepareEpollReactorSource(), NATIVE_REACTOR_SYMBOLS);
  } else {
    source?.close();
  }
  return {
    name: "epoll",
    native: compiled,
    libcFunctions: libcFunctionTable(),
    sysError: (call, negativeErrno) => new SysError(call, -negativeErrno),
    watchHint: (negativeErrno) =>
      negativeErrno === -Errno.EPERM ? "epoll cannot watch regular files or directories" : undefined,
  };
}
