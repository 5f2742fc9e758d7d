/**
 * Dropping root after set-up, before the first frame is read.
 *
 * softnet needs root (or CAP_NET_ADMIN) only to attach to the host's network. Once the links are
 * open it becomes an ordinary user: --user/--group, by default the person who started it (the real
 * user of a setuid binary, or SUDO_UID when root runs it through sudo), else nobody. The drop is
 * verified: uid/euid/suid and gid/egid/sgid must all be the target, regaining root must fail, and
 * no capability may remain but CAP_NET_ADMIN, kept only when --expose needs it for nftables.
 * Linux only for now; macOS has no setresuid and needs its own sequence.
 */
import { CString, type Pointer, ptr, read } from "bun:ffi";
import { readFileSync } from "node:fs";
import { SoftnetError } from "../errors.ts";
import { cString, lastSysError, libc, type SysError } from "./libc.ts";

export interface DropTarget {
  uid: number;
  gid: number;
  /** For initgroups(); undefined when the uid has no passwd entry (then no supplementary groups). */
  userName: string | undefined;
  /** How the target was chosen, for the log: "--user", "the caller of this setuid binary", ... */
  chosenBy: string;
}

const CAP_NET_ADMIN = 12;
const PR_SET_KEEPCAPS = 8;
const PR_SET_NO_NEW_PRIVS = 38;
const PR_CAP_AMBIENT = 47;
const PR_CAP_AMBIENT_RAISE = 2;
const LINUX_CAPABILITY_VERSION_3 = 0x20080522;

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
}

// struct passwd { char *pw_name; char *pw_passwd; uid_t pw_uid; gid_t pw_gid; ... }: uid at 16 and
// gid at 20 on LP64 Linux and macOS alike. struct group { char *gr_name; char *gr_passwd; gid_t gr_gid; }
function passwdAt(pointer: Pointer | null): PasswdEntry | undefined {
  if (pointer === null) return undefined;
  const namePointer = read.ptr(pointer, 0) as Pointer | 0;
  return {
    name: namePointer === 0 ? "" : new CString(namePointer).toString(),
    uid: read.u32(pointer, 16),
    gid: read.u32(pointer, 20),
  };
}

export function lookupUser(name: string): PasswdEntry | undefined {
  return passwdAt(libc.getpwnam(cString(name)) as Pointer | null);
}

export function lookupUid(uid: number): PasswdEntry | undefined {
  return passwdAt(libc.getpwuid(uid) as Pointer | null);
}

export function lookupGroup(name: string): number | undefined {
  const pointer = libc.getgrnam(cString(name));
  if (pointer === null) return undefined;
  return read.u32(pointer, 16);
}

/**
 * Whom to become. SUDO_UID is believed only when the real uid is already 0: for a setuid binary
 * the environment belongs to the caller, who could otherwise name root as the "invoking user".
 */
export function resolveDropTarget(
  options: { user: string | undefined; group: string | undefined },
  env: Record<string, string | undefined>,
): DropTarget {
  let uid: number;
  let gid: number;
  let userName: string | undefined;
  let chosenBy: string;
  const realUid = libc.getuid();
  if (options.user !== undefined) {
    const entry = /^[0-9]+$/.test(options.user) ? lookupUid(Number(options.user)) : lookupUser(options.user);
    if (entry === undefined) {
      throw new SoftnetError(`cannot drop privileges: unknown user "${options.user}" (from --user)`);
    }
    ({ uid, gid, name: userName } = entry);
    chosenBy = "--user";
  } else if (realUid !== 0) {
    uid = realUid;
    gid = libc.getgid();
    userName = lookupUid(uid)?.name;
    chosenBy = "the user who started softnet";
  } else if (env.SUDO_UID !== undefined && /^[1-9][0-9]*$/.test(env.SUDO_UID)) {
    uid = Number(env.SUDO_UID);
    const entry = lookupUid(uid);
    gid =
      env.SUDO_GID !== undefined && /^[0-9]+$/.test(env.SUDO_GID)
        ? Number(env.SUDO_GID)
        : (entry?.gid ?? uid);
    userName = entry?.name;
    chosenBy = "the user who ran sudo";
  } else {
    const nobody = lookupUser("nobody");
    if (nobody === undefined) {
      throw new SoftnetError('cannot drop privileges: there is no user "nobody"', {
        hint: "name a user with --user",
      });
    }
    ({ uid, gid, name: userName } = nobody);
    chosenBy = "default for root";
  }
  if (options.group !== undefined) {
    const groupGid = /^[0-9]+$/.test(options.group) ? Number(options.group) : lookupGroup(options.group);
    if (groupGid === undefined) {
      throw new SoftnetError(`cannot drop privileges: unknown group "${options.group}" (from --group)`);
    }
    gid = groupGid;
  }
  return { uid, gid, userName, chosenBy };
}

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
  if (libc.geteuid() !== 0) {
    dropCapabilitiesOnly(target, options.keepNetAdmin);
    return;
  }
  if (options.keepNetAdmin) check(libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "prctl(PR_SET_KEEPCAPS)");
  if (target.userName !== undefined) {
    check(libc.initgroups(cString(target.userName), target.gid), "initgroups");
  } else {
    check(libc.setgroups(0, null), "setgroups");
  }
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

/** "nobody (uid 65534, gid 65534)" for the log. */
export function describeTarget(target: DropTarget): string {
  return `${target.userName ?? "uid"} (uid ${target.uid}, gid ${target.gid}; ${target.chosenBy})`;
}

/** sudo's fixed location: never looked up through PATH (this code may run setuid root). */
const SUDO_PATH = "/usr/bin/sudo";

/**
 * How this process was started, to start it again: the executable and the arguments before the
 * user's. A compiled softnet is its own executable; from source it is bun plus the script.
 */
export function selfCommand(argv: readonly string[] = process.argv): {
  executable: string;
  prefix: string[];
} {
  const script = argv[1];
  if (script === undefined || script.startsWith("/$bunfs/"))
    return { executable: process.execPath, prefix: [] };
  return { executable: process.execPath, prefix: [script] };
}

/** True when this process may set up the host link without sudo. */
export function hasSetupPrivileges(): boolean {
  if (libc.geteuid() === 0) return true;
  const status = readFileSync("/proc/thread-self/status", "utf8");
  const effective = BigInt(`0x${status.match(/^CapEff:\s*([0-9a-f]+)/m)?.[1] ?? "0"}`);
  return (effective & BigInt(1 << CAP_NET_ADMIN)) !== 0n;
}

/**
 * Not root: if passwordless sudo works for exactly this command (probed with
 * --sudo-escalation-probing), replace this process with `sudo ... --sudo-escalation-done --user
 * <real uid> --group <real gid>`, keeping the VM's fd, which execv leaves open. Returns only when
 * escalation is impossible, with the error to report.
 */
export function escalateWithSudo(userArgs: readonly string[]): SoftnetError {
  const fix =
    "run softnet as root, allow it in sudoers (user ALL=(root) NOPASSWD: /path/to/softnet), " +
    "or make it setuid root (chown root softnet && chmod u+s softnet)";
  if (userArgs.includes("--sudo-escalation-done")) {
    return new SoftnetError("root privileges are required, and sudo did not provide them", { hint: fix });
  }
  if (!Bun.file(SUDO_PATH).size) {
    return new SoftnetError(`root privileges are required and sudo is not installed (${SUDO_PATH})`, {
      hint: fix,
    });
  }
  const { executable, prefix } = selfCommand();
  const probe = Bun.spawnSync(
    [SUDO_PATH, "-n", executable, ...prefix, ...userArgs, "--sudo-escalation-probing"],
    {
      stdin: "ignore",
      stdout: "ignore",
      stderr: "ignore",
    },
  );
  if (probe.exitCode !== 0) {
    return new SoftnetError("root privileges are required and passwordless sudo is not available", {
      hint: fix,
    });
  }
  const argv = [
    "sudo",
    "--non-interactive",
    "--preserve-env=SENTRY_DSN,CIRRUS_SENTRY_TAGS",
    executable,
    ...prefix,
    ...userArgs,
    "--sudo-escalation-done",
    // Whom to drop back to once root: the caller, unless the command line already says.
    ...(userArgs.some((arg) => arg === "--user" || arg.startsWith("--user="))
      ? []
      : ["--user", String(libc.getuid())]),
    ...(userArgs.some((arg) => arg === "--group" || arg.startsWith("--group="))
      ? []
      : ["--group", String(libc.getgid())]),
  ];
  const strings = argv.map(cString);
  const pointers = new BigUint64Array(strings.length + 1);
  strings.forEach((text, i) => {
    pointers[i] = BigInt(ptr(text));
  });
  libc.execv(cString(SUDO_PATH), pointers);
  return new SoftnetError("cannot run sudo to gain root privileges", {
    cause: lastSysError("execv"),
    hint: fix,
  });
}
