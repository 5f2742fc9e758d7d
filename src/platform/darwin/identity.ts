/**
 * The portable identity calls (../identity.ts) bound through the darwin module's C library:
 * libSystem on macOS, glibc when the tests run the macOS runtime on Linux against the vmnet double.
 */
import { type IdentityCalls, identityCallsFrom } from "../identity.ts";
import { DarwinSysError, type DarwinSystem } from "./system.ts";

export function darwinIdentityCalls(system: DarwinSystem): IdentityCalls {
  return identityCallsFrom(system.libc, (call) => new DarwinSysError(system, call, system.errno()));
}
