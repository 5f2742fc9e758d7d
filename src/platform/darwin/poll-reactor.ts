/**
 * The macOS native reactor: a thread blocked in poll(2) (see poll-reactor.c and the generic Reactor
 * in ../reactor.ts). Built from a DarwinSystem, so the C library it calls is the one the darwin
 * module was given: libSystem on macOS, glibc when the tests run the darwin runtime on Linux.
 */
import { cc } from "bun:ffi";
import { readFileSync } from "node:fs";
import { SoftnetError } from "../../errors.ts";
import { NATIVE_REACTOR_SYMBOLS, type NativeReactor, type ReactorBackend } from "../reactor.ts";
import { writePrivateSource } from "./blocks.ts";
// `type: "file"` makes `bun build --compile` embed the C source; the import is its path.
import pollReactorSourcePath from "./poll-reactor.c" with { type: "file" };
import { DarwinSysError, type DarwinSystem } from "./system.ts";

/** struct libc_functions in poll-reactor.c, in declaration order. */
const LIBC_FUNCTIONS = [
  "poll",
  "pipe",
  "read",
  "write",
  "close",
  "pthread_create",
  "pthread_join",
  "calloc",
  "free",
] as const;

const compiled = new WeakMap<DarwinSystem, NativeReactor>();

/**
 * Compiles poll-reactor.c once per system. As for the vmnet blocks, the source reaches TinyCC
 * through a file of our own (a memfd on Linux, an unlinked mkstemp file on macOS), and `flags` is
 * always given so that BUN_TCC_OPTIONS can never inject options into a root process.
 */
function compile(system: DarwinSystem): NativeReactor {
  const cached = compiled.get(system);
  if (cached !== undefined) return cached;
  let file: { fd: number; path: string };
  try {
    file = writePrivateSource(system, readFileSync(pollReactorSourcePath, "utf8"));
  } catch (error) {
    throw new SoftnetError("cannot prepare the readiness reactor", { cause: error });
  }
  try {
    const native = cc({
      source: file.path,
      flags: ["-std=c11", "-nostdlib"],
      symbols: NATIVE_REACTOR_SYMBOLS,
    }).symbols;
    compiled.set(system, native);
    return native;
  } finally {
    system.libc.close(file.fd);
  }
}

export function pollReactorBackend(system: DarwinSystem): ReactorBackend {
  // Looked up with dlsym in the C library the system was opened with: only the reactor's thread
  // calls these, so they are not bound as JavaScript functions.
  const addresses = LIBC_FUNCTIONS.map((name) => {
    const address = system.dataAddress("libc", name);
    if (address === 0)
      throw new SoftnetError(`the C library has no ${name}(), which the readiness reactor needs`);
    return address;
  });
  addresses.push(system.errnoFunctionAddress);
  return {
    name: "poll",
    native: compile(system),
    libcFunctions: BigUint64Array.from(addresses, (address) => BigInt(address)),
    sysError: (call, negativeErrno) => new DarwinSysError(system, call, -negativeErrno),
  };
}
