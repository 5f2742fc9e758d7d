/**
 * The portable identity calls (../identity.ts) bound through the darwin module's C library:
 * libSystem on macOS, glibc when the tests run the macOS runtime on Linux against the vmnet double.
 */
import type { Pointer } from "bun:ffi";
import type { IdentityCalls } from "../identity.ts";
import { DarwinSysError, type DarwinSystem } from "./system.ts";

export function darwinIdentityCalls(system: DarwinSystem): IdentityCalls {
  const { libc } = system;
  return {
    getuid: () => libc.getuid(),
    geteuid: () => libc.geteuid(),
    getgid: () => libc.getgid(),
    getegid: () => libc.getegid(),
    setuid: (uid) => libc.setuid(uid),
    setgid: (gid) => libc.setgid(gid),
    initgroups: (user, gid) => libc.initgroups(user, gid),
    setgroups: (count, groups) => libc.setgroups(count, groups),
    getpwnam: (name) => libc.getpwnam(name) as Pointer | null,
    getpwuid: (uid) => libc.getpwuid(uid) as Pointer | null,
    getgrnam: (name) => libc.getgrnam(name) as Pointer | null,
    execv: (path, argv) => libc.execv(path, argv),
    lastError: (call) => new DarwinSysError(system, call, system.errno()),
  };
}
