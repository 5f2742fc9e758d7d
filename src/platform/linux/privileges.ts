/**
 * Dropping root after set-up, before the first frame is read.
 *
 * softnet needs root (or CAP_NET_ADMIN) only to attach to the host's network. Once the links are
 * open it becomes an ordinary user: the person who started it (the real user of a setuid binary,
 * with exactly the groups it had; SUDO_UID when root runs it through sudo), or for a real root
 * --user/--group, else nobody (identity.ts resolveDropTarget). The drop is verified:
 * uid/euid/suid and gid/egid/sgid must all be the target, and so must an exact group list,
 * regaining root must fail, and
 * no capability may remain but CAP_NET_ADMIN, kept only when --expose needs it for nftables.
 * Linux only for now; macOS has no setresuid and needs its own sequence.
 */
import { readFileSync } from "node:fs";
import { SoftnetError } from "../../errors.ts";
import {
  checkNotRootByMistake,
  type DropTarget,
  type IdentityCalls,
  identityCallsFrom,
  setTargetGroups,
  verifyGroups,
} from "../identity.ts";
import { lastSysError, libc, type SysError } from "./libc.ts";

/** glibc's identity calls for the portable parts (identity.ts). */
export const linuxIdentityCalls: IdentityCalls = identityCallsFrom(libc, lastSysError);

const CAP_NET_ADMIN = 12;
const PR_SET_KEEPCAPS = 8;
const PR_SET_NO_NEW_PRIVS = 38;
const PR_CAP_AMBIENT = 47;
const PR_CAP_AMBIENT_RAISE = 2;
const LINUX_CAPABILITY_VERSION_3 = 0x20080522;

function check(result: number, what: string): void {
  if (result !== 0) {
    const cause: SysError = lastSysError(what);
    throw new SoftnetError("cannot drop privileges", { cause });
  }
}

/**
 * Becomes `target` for good. With keepNetAdmin, CAP_NET_ADMIN survives in the permitted, effective,
 * inheritable and ambient sets of this thread (the one that spawns nft); every other capability,
 * and every capability of every other thread, is gone.
 */
export function dropPrivileges(target: DropTarget, options: { keepNetAdmin: boolean }): void {
  checkNotRootByMistake(target);
  if (libc.geteuid() !== 0) {
    dropCapabilitiesOnly(target, options.keepNetAdmin);
    return;
  }
  if (options.keepNetAdmin) check(libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "prctl(PR_SET_KEEPCAPS)");
  const groups = setTargetGroups(linuxIdentityCalls, target);
  check(groups.result, groups.call);
  // glibc applies set*id to every thread of the process (Bun has several), not just this one.
  check(libc.setresgid(target.gid, target.gid, target.gid), "setresgid");
  check(libc.setresuid(target.uid, target.uid, target.uid), "setresuid");
  if (options.keepNetAdmin && target.uid !== 0) {
    keepOnlyNetAdmin();
    check(libc.prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0), "prctl(PR_SET_KEEPCAPS)");
  }
  // From here on no exec can raise privileges again (setuid binaries, file capabilities).
  check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)");
  verifyDropped(target, options.keepNetAdmin);
}

/** Permitted, effective and inheritable = {CAP_NET_ADMIN}, raised into the ambient set for nft. */
function keepOnlyNetAdmin(): void {
  setCapabilities(1 << CAP_NET_ADMIN);
  check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_ADMIN, 0, 0), "prctl(PR_CAP_AMBIENT_RAISE)");
}

function setCapabilities(mask: number): void {
  const header = new Uint32Array([LINUX_CAPABILITY_VERSION_3, 0]);
  // struct __user_cap_data_struct[2] { effective, permitted, inheritable }: bits 0-31 live in [0].
  const data = new Uint32Array([mask, mask, mask, 0, 0, 0]);
  check(libc.capset(header, data), "capset");
}

/**
 * Started by a non-root user who holds CAP_NET_ADMIN (file capabilities, or a service manager's
 * ambient set): the identity stays, the capabilities go. Another --user needs root.
 */
function dropCapabilitiesOnly(target: DropTarget, keepNetAdmin: boolean): void {
  if (target.uid !== libc.getuid() || target.gid !== libc.getgid()) {
    throw new SoftnetError("cannot drop privileges to another user or group without root", {
      hint: "leave out --user/--group, or start softnet as root",
    });
  }
  if (keepNetAdmin) keepOnlyNetAdmin();
  else setCapabilities(0);
  check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)");
  verifyDropped(target, keepNetAdmin);
}

/** Reads the credentials back from the kernel; any mismatch is fatal. */
export function verifyDropped(target: DropTarget, keepNetAdmin: boolean): void {
  const ids = new Uint32Array(3);
  const fail = (why: string) => {
    throw new SoftnetError("privilege drop did not take effect", { cause: new Error(why) });
  };
  if (libc.getresuid(ids.subarray(0, 1), ids.subarray(1, 2), ids.subarray(2, 3)) !== 0)
    fail("getresuid failed");
  if (ids[0] !== target.uid || ids[1] !== target.uid || ids[2] !== target.uid) {
    fail(`uids are ${ids.join("/")}, expected ${target.uid}`);
  }
  if (libc.getresgid(ids.subarray(0, 1), ids.subarray(1, 2), ids.subarray(2, 3)) !== 0)
    fail("getresgid failed");
  if (ids[0] !== target.gid || ids[1] !== target.gid || ids[2] !== target.gid) {
    fail(`gids are ${ids.join("/")}, expected ${target.gid}`);
  }
  verifyGroups(linuxIdentityCalls, target);
  if (target.uid === 0) return;
  if (libc.setuid(0) === 0) fail("setuid(0) succeeded after the drop");
  const allowed = keepNetAdmin ? BigInt(1 << CAP_NET_ADMIN) : 0n;
  const status = readFileSync("/proc/thread-self/status", "utf8");
  for (const field of ["CapEff", "CapPrm"]) {
    const value = BigInt(`0x${status.match(new RegExp(`^${field}:\\s*([0-9a-f]+)`, "m"))?.[1] ?? "ffff"}`);
    if ((value & ~allowed) !== 0n)
      fail(`${field} is ${value.toString(16)}, expected at most ${allowed.toString(16)}`);
  }
}

/** True when this process may set up the host link without sudo. */
export function hasSetupPrivileges(): boolean {
  if (libc.geteuid() === 0) return true;
  const status = readFileSync("/proc/thread-self/status", "utf8");
  const effective = BigInt(`0x${status.match(/^CapEff:\s*([0-9a-f]+)/m)?.[1] ?? "0"}`);
  return (effective & BigInt(1 << CAP_NET_ADMIN)) !== 0n;
}
