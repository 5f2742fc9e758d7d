/**
 * The macOS native reactor: a thread blocked in poll(2) (see poll-reactor.c and the generic Reactor
 * in ../reactor.ts). Built from a DarwinSystem, so the C library it calls is the one the darwin
 * module was given: libSystem on macOS, glibc when the tests run the darwin runtime on Linux.
 */
import { SoftnetError } from "../../errors.ts";
import { NATIVE_REACTOR_SYMBOLS, type NativeReactor, type ReactorBackend } from "../reactor.ts";
import { compileSealedSource, prepareSealedSource, type SealedSource } from "../runtime-c.ts";
// `type: "file"` makes `bun build --compile` embed the C source; the import is its path.
import pollReactorSourcePath from "./poll-reactor.c" with { type: "file" };
import { DarwinSysError, type DarwinSystem, sourceFileCalls } from "./system.ts";

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

/** Reads poll-reactor.c into a sealed or read-only descriptor (runtime-c.ts); call it while root. */
export function preparePollReactorSource(system: DarwinSystem): SealedSource {
  return prepareSealedSource(sourceFileCalls(system), "the readiness reactor", pollReactorSourcePath);
}

/** Compiles poll-reactor.c once per system, from `source` or, without one (tests), a source prepared now. */
function compile(system: DarwinSystem, source: SealedSource | undefined): NativeReactor {
  const cached = compiled.get(system);
  if (cached !== undefined) {
    source?.close();
    return cached;
  }
  const native = compileSealedSource(source ?? preparePollReactorSource(system), NATIVE_REACTOR_SYMBOLS);
  compiled.set(system, native);
  return native;
}

export function pollReactorBackend(system: DarwinSystem, source?: SealedSource): ReactorBackend {
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
    native: compile(system, source),
    libcFunctions: BigUint64Array.from(addresses, (address) => BigInt(address)),
    sysError: (call, negativeErrno) => new DarwinSysError(system, call, -negativeErrno),
  };
}
