/**
 * Who softnet runs as, in the parts that POSIX shares between Linux and macOS: whom to drop to,
 * becoming that user, checking it took, and getting root through sudo. The C calls come in through
 * IdentityCalls (glibc on Linux, libSystem on macOS), so this module binds no library itself.
 */
import { CString, type Pointer, ptr, read } from "bun:ffi";
import { lstatSync, type Stats } from "node:fs";
import { SoftnetError } from "../errors.ts";

/** The C library functions this module needs, bound by the platform. */
export interface IdentityCalls {
  getuid(): number;
  geteuid(): number;
  getgid(): number;
  getegid(): number;
  setuid(uid: number): number;
  setgid(gid: number): number;
  seteuid(uid: number): number;
  setegid(gid: number): number;
  /** setreuid/setregid take (uid_t)-1 as "unchanged": pass UNCHANGED_ID. */
  setreuid(ruid: number, euid: number): number;
  setregid(rgid: number, egid: number): number;
  initgroups(user: Buffer, gid: number): number;
  setgroups(count: number, groups: null): number;
  getpwnam(name: Buffer): Pointer | null;
  getpwuid(uid: number): Pointer | null;
  getgrnam(name: Buffer): Pointer | null;
  execv(path: Buffer, argv: BigUint64Array): number;
  /** The error of the call that just failed (reads errno). */
  lastError(call: string): Error;
}

/** A bun:ffi symbol table that binds the identity functions under their C names. */
export type IdentitySymbols = {
  [name in Exclude<keyof IdentityCalls, "lastError">]: (...args: never[]) => unknown;
};

/**
 * IdentityCalls over a bun:ffi symbol table (glibc's or libSystem's): the same C names, with
 * pointer results typed as the portable code reads them.
 */
export function identityCallsFrom(
  symbols: IdentitySymbols,
  lastError: (call: string) => Error,
): IdentityCalls {
  const calls = symbols as unknown as Omit<IdentityCalls, "lastError">;
  return {
    getuid: () => calls.getuid(),
    geteuid: () => calls.geteuid(),
    getgid: () => calls.getgid(),
    getegid: () => calls.getegid(),
    setuid: (uid) => calls.setuid(uid),
    setgid: (gid) => calls.setgid(gid),
    seteuid: (uid) => calls.seteuid(uid),
    setegid: (gid) => calls.setegid(gid),
    setreuid: (ruid, euid) => calls.setreuid(ruid, euid),
    setregid: (rgid, egid) => calls.setregid(rgid, egid),
    initgroups: (user, gid) => calls.initgroups(user, gid),
    setgroups: (count, groups) => calls.setgroups(count, groups),
    getpwnam: (name) => calls.getpwnam(name),
    getpwuid: (uid) => calls.getpwuid(uid),
    getgrnam: (name) => calls.getgrnam(name),
    execv: (path, argv) => calls.execv(path, argv),
    lastError,
  };
}

function cString(text: string): Buffer {
  return Buffer.from(`${text}\0`, "utf8");
}

export interface DropTarget {
  uid: number;
  gid: number;
  /** For initgroups(); undefined when the uid has no passwd entry (then no supplementary groups). */
  userName: string | undefined;
  /** How the target was chosen, for the log: "--user", "the caller of this setuid binary", ... */
  chosenBy: string;
}

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

function lookupUser(calls: IdentityCalls, name: string): PasswdEntry | undefined {
  return passwdAt(calls.getpwnam(cString(name)));
}

function lookupUid(calls: IdentityCalls, uid: number): PasswdEntry | undefined {
  return passwdAt(calls.getpwuid(uid));
}

function lookupGroup(calls: IdentityCalls, name: string): number | undefined {
  const pointer = calls.getgrnam(cString(name));
  if (pointer === null) return undefined;
  return read.u32(pointer, 16);
}

/**
 * Whom to become. SUDO_UID is believed only when the real uid is already 0: for a setuid binary
 * the environment belongs to the caller, who could otherwise name root as the "invoking user".
 */
export function resolveDropTarget(
  calls: IdentityCalls,
  options: { user: string | undefined; group: string | undefined },
  env: Record<string, string | undefined>,
): DropTarget {
  let uid: number;
  let gid: number;
  let userName: string | undefined;
  let chosenBy: string;
  const realUid = calls.getuid();
  if (options.user !== undefined) {
    const entry = /^[0-9]+$/.test(options.user)
      ? lookupUid(calls, Number(options.user))
      : lookupUser(calls, options.user);
    if (entry === undefined) {
      throw new SoftnetError(`cannot drop privileges: unknown user "${options.user}" (from --user)`);
    }
    ({ uid, gid, name: userName } = entry);
    chosenBy = "--user";
  } else if (realUid !== 0) {
    uid = realUid;
    gid = calls.getgid();
    userName = lookupUid(calls, uid)?.name;
    chosenBy = "the user who started softnet";
  } else if (env.SUDO_UID !== undefined && /^[1-9][0-9]*$/.test(env.SUDO_UID)) {
    uid = Number(env.SUDO_UID);
    const entry = lookupUid(calls, uid);
    gid =
      env.SUDO_GID !== undefined && /^[0-9]+$/.test(env.SUDO_GID)
        ? Number(env.SUDO_GID)
        : (entry?.gid ?? uid);
    userName = entry?.name;
    chosenBy = "the user who ran sudo";
  } else {
    const nobody = lookupUser(calls, "nobody");
    if (nobody === undefined) {
      throw new SoftnetError('cannot drop privileges: there is no user "nobody"', {
        hint: "name a user with --user",
      });
    }
    ({ uid, gid, name: userName } = nobody);
    chosenBy = "default for root";
  }
  // A setuid-root softnet is started by someone who is not root: they may not use it to become
  // somebody else. (Through sudo the real uid is 0 and --user/--group are sudo's business.)
  if (realUid !== 0 && options.user !== undefined && uid !== realUid) {
    throw new SoftnetError(`--user ${options.user}: only root may make softnet run as another user`, {
      hint: "leave out --user; a setuid softnet drops to the user who started it",
    });
  }
  if (options.group !== undefined) {
    const groupGid = /^[0-9]+$/.test(options.group)
      ? Number(options.group)
      : lookupGroup(calls, options.group);
    if (groupGid === undefined) {
      throw new SoftnetError(`cannot drop privileges: unknown group "${options.group}" (from --group)`);
    }
    gid = groupGid;
    if (realUid !== 0 && gid !== calls.getgid()) {
      throw new SoftnetError(`--group ${options.group}: only root may make softnet run as another group`, {
        hint: "leave out --group; a setuid softnet drops to the group of the user who started it",
      });
    }
  }
  return { uid, gid, userName, chosenBy };
}

/**
 * True when the person who started softnet is root: root itself, or root through sudo without an
 * unprivileged SUDO_UID. A setuid softnet (real uid not 0) or `sudo softnet` run by a user is
 * started by that user, who must not get root's choices (privileged ports, any bridge). SUDO_UID is
 * believed only when the real uid is 0, as in resolveDropTarget: for a setuid binary the
 * environment belongs to the caller.
 */
export function startedByRoot(
  calls: Pick<IdentityCalls, "getuid">,
  env: Record<string, string | undefined>,
): boolean {
  if (calls.getuid() !== 0) return false;
  return !(env.SUDO_UID !== undefined && /^[1-9][0-9]*$/.test(env.SUDO_UID));
}

/** "nobody (uid 65534, gid 65534)" for the log. */
export function describeTarget(target: DropTarget): string {
  return `${target.userName ?? "uid"} (uid ${target.uid}, gid ${target.gid}; ${target.chosenBy})`;
}

/**
 * Becomes `target` with the calls POSIX has everywhere (the macOS path; Linux uses setres*id and
 * also drops capabilities): supplementary groups, then the group, then the user, since changing
 * the user first would take away the right to change the rest.
 */
export function becomeUser(calls: IdentityCalls, target: DropTarget): void {
  const check = (result: number, call: string) => {
    if (result !== 0) throw new SoftnetError("cannot drop privileges", { cause: calls.lastError(call) });
  };
  if (target.userName !== undefined)
    check(calls.initgroups(cString(target.userName), target.gid), "initgroups");
  else check(calls.setgroups(0, null), "setgroups");
  check(calls.setgid(target.gid), "setgid");
  check(calls.setuid(target.uid), "setuid");
  verifyIdentity(calls, target);
}

/** (uid_t)-1 and (gid_t)-1: "leave this id as it is" for setreuid/setregid (POSIX). */
export const UNCHANGED_ID = 0xffff_ffff;

/**
 * Runs `work` as `target` for a moment and comes back to root: real and effective user and group
 * and the supplementary groups become the target's, while the saved user id stays 0 so that root
 * can be taken back for what only root may do afterwards (opening vmnet). For work that must happen
 * before that but must not happen as root: Bun's cc() writes header files into
 * /tmp/bun-cc-<real uid> (a directory the caller may have planted) and on macOS runs xcrun; as the
 * target, real uid included, both are that user's own doing in that user's own directory.
 *
 * POSIX setreuid: changing the real id sets the saved id to the (new) effective id, which is still
 * 0 at that point (xnu bsd/kern/kern_prot.c setreuid; Linux kernel/sys.c __sys_setreuid), and
 * seteuid may later return to any of real or saved. The supplementary groups are not restored:
 * root needs none of them, and the final drop sets the target's anyway.
 */
export function asTargetUser<T>(calls: IdentityCalls, target: DropTarget, work: () => T): T {
  const fail = (call: string): never => {
    throw new SoftnetError(`cannot act as ${target.userName ?? `uid ${target.uid}`} for a moment`, {
      cause: calls.lastError(call),
    });
  };
  if (calls.geteuid() !== 0) return work(); // not root: already nobody else's
  const realUid = calls.getuid();
  const realGid = calls.getgid();
  const effectiveGid = calls.getegid();
  if (target.userName !== undefined) {
    if (calls.initgroups(cString(target.userName), target.gid) !== 0) fail("initgroups");
  } else if (calls.setgroups(0, null) !== 0) fail("setgroups");
  if (calls.setregid(target.gid, UNCHANGED_ID) !== 0) fail("setregid");
  if (calls.setegid(target.gid) !== 0) fail("setegid");
  if (calls.setreuid(target.uid, UNCHANGED_ID) !== 0) fail("setreuid");
  if (calls.seteuid(target.uid) !== 0) fail("seteuid");
  const now = [calls.getuid(), calls.geteuid(), calls.getgid(), calls.getegid()];
  if (now.join() !== [target.uid, target.uid, target.gid, target.gid].join()) {
    throw new SoftnetError(`cannot act as ${target.userName ?? `uid ${target.uid}`} for a moment`, {
      cause: new Error(`uid/euid/gid/egid are ${now.join("/")}`),
    });
  }
  try {
    return work();
  } finally {
    // Back to root, in the reverse order; failing here leaves the process neither root nor dropped.
    if (calls.seteuid(0) !== 0) fail("seteuid(0)");
    if (calls.setreuid(realUid, UNCHANGED_ID) !== 0) fail("setreuid");
    // egid first: setregid sets the saved gid to the effective one, as it was at exec.
    if (calls.setegid(effectiveGid) !== 0) fail("setegid");
    if (calls.setregid(realGid, UNCHANGED_ID) !== 0) fail("setregid");
  }
}

/** Reads uid/euid/gid/egid back and makes sure root cannot be regained; any mismatch is fatal. */
export function verifyIdentity(calls: IdentityCalls, target: DropTarget): void {
  const ids = [calls.getuid(), calls.geteuid(), calls.getgid(), calls.getegid()];
  const wanted = [target.uid, target.uid, target.gid, target.gid];
  if (ids.some((id, i) => id !== wanted[i])) {
    throw new SoftnetError("privilege drop did not take effect", {
      cause: new Error(`uid/euid/gid/egid are ${ids.join("/")}, expected ${wanted.join("/")}`),
    });
  }
  if (target.uid !== 0 && calls.setuid(0) === 0) {
    throw new SoftnetError("privilege drop did not take effect", {
      cause: new Error("setuid(0) succeeded after the drop"),
    });
  }
}

/** sudo's fixed location: never looked up through PATH (this code may run setuid root). */
export const SUDO_PATH = "/usr/bin/sudo";

/**
 * Where README tells administrators to install the copy of softnet that sudoers names. A sudoers
 * rule for the Homebrew path (/opt/homebrew/bin/softnet, a symlink into a Cellar the user owns)
 * would let any process of that user swap the binary and get passwordless root; this copy is
 * root's alone. Tart starts the `softnet` it finds on PATH (the Homebrew one), so that one asks
 * sudo for this copy when it exists and is safe.
 */
export const ROOT_OWNED_COPY = "/usr/local/libexec/softnet";

/**
 * True when `path` is a regular file that only root can change: it and every directory above it
 * owned by uid 0 and writable by nobody else (no group or other write bit), no symlink on the way.
 */
export function isRootOwnedAndLocked(path: string): boolean {
  if (!path.startsWith("/")) return false;
  const parts = path.split("/").filter((part) => part !== "");
  for (let i = 0; i <= parts.length; i++) {
    const at = `/${parts.slice(0, i).join("/")}`;
    let info: Stats;
    try {
      info = lstatSync(at);
    } catch {
      return false;
    }
    const last = i === parts.length;
    if (last ? !info.isFile() : !info.isDirectory()) return false;
    if (info.uid !== 0 || (info.mode & 0o022) !== 0) return false;
  }
  return true;
}

/** What to run through sudo: the root-owned copy when it is safe, else this very executable. */
export function escalationCommand(
  rootOwnedCopy: string = ROOT_OWNED_COPY,
  argv: readonly string[] = process.argv,
): { executable: string; prefix: string[] } {
  if (isRootOwnedAndLocked(rootOwnedCopy)) return { executable: rootOwnedCopy, prefix: [] };
  return selfCommand(argv);
}

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

/**
 * Not root: if passwordless sudo works for exactly this command (probed with
 * --sudo-escalation-probing), replace this process with `sudo ... --sudo-escalation-done --user
 * <real uid> --group <real gid>`, keeping the VM's fd, which execv leaves open. Returns only when
 * escalation is impossible, with the error to report.
 */
export function escalateWithSudo(calls: IdentityCalls, userArgs: readonly string[]): SoftnetError {
  const fix =
    `run softnet as root, install a root-owned copy at ${ROOT_OWNED_COPY} and allow it in sudoers ` +
    `(user ALL=(root) NOPASSWD: ${ROOT_OWNED_COPY}; see README "Install"), ` +
    "or make it setuid root (chown root softnet && chmod u+s softnet)";
  if (userArgs.includes("--sudo-escalation-done")) {
    return new SoftnetError("root privileges are required, and sudo did not provide them", { hint: fix });
  }
  if (!Bun.file(SUDO_PATH).size) {
    return new SoftnetError(`root privileges are required and sudo is not installed (${SUDO_PATH})`, {
      hint: fix,
    });
  }
  const { executable, prefix } = escalationCommand();
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
      : ["--user", String(calls.getuid())]),
    ...(userArgs.some((arg) => arg === "--group" || arg.startsWith("--group="))
      ? []
      : ["--group", String(calls.getgid())]),
  ];
  const strings = argv.map(cString);
  const pointers = new BigUint64Array(strings.length + 1);
  strings.forEach((text, i) => {
    pointers[i] = BigInt(ptr(text));
  });
  calls.execv(cString(SUDO_PATH), pointers);
  return new SoftnetError("cannot run sudo to gain root privileges", {
    cause: calls.lastError("execv"),
    hint: fix,
  });
}
