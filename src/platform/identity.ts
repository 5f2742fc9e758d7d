/**
 * Who softnet runs as, in the parts that POSIX shares between Linux and macOS: whom to drop to,
 * becoming that user, checking it took, and getting root through sudo. The C calls come in through
 * IdentityCalls (glibc on Linux, libSystem on macOS), so this module binds no library itself.
 */
import { CString, type Pointer, ptr, read } from "bun:ffi";
import { lstatSync, type Stats } from "node:fs";
import { type Caller, decideCaller, type StartCredentials } from "../caller.ts";
import { SoftnetError } from "../errors.ts";
import { cString } from "./ffi-helpers.ts";

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
  setgroups(count: number, groups: Uint32Array | null): number;
  /** getgroups(size, list): with size 0 only the count. */
  getgroups(size: number, groups: Uint32Array | null): number;
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
    getgroups: (size, groups) => calls.getgroups(size, groups),
    getpwnam: (name) => calls.getpwnam(name),
    getpwuid: (uid) => calls.getpwuid(uid),
    getgrnam: (name) => calls.getgrnam(name),
    execv: (path, argv) => calls.execv(path, argv),
    lastError,
  };
}

export interface DropTarget {
  uid: number;
  gid: number;
  /** For the log, and for initgroups() when `groups` is undefined; undefined without a passwd entry. */
  userName: string | undefined;
  /**
   * The supplementary groups, exactly (setgroups): a setuid caller's own, as it had them at exec.
   * undefined: the group database's for userName (initgroups), or none without a userName.
   */
  groups: readonly number[] | undefined;
  /** True only when a real root (no SUDO_UID) chose uid 0: nobody else may end up as root. */
  rootAllowed: boolean;
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
 * The ids this process was started with, read before anything changes them: the real uid and
 * gid, and the supplementary groups (getgroups(2): a setuid exec leaves them as the caller had
 * them; POSIX getgroups, Linux kernel/groups.c, xnu bsd/kern/kern_prot.c getgroups).
 */
export function readStartCredentials(calls: IdentityCalls): StartCredentials {
  const uid = calls.getuid();
  const gid = calls.getgid();
  // The count may change between the two calls only if something else in this process called
  // setgroups: nothing has yet, but a short read is retried rather than trusted.
  for (let attempt = 0; attempt < 3; attempt++) {
    const count = calls.getgroups(0, null);
    if (count < 0) break;
    const list = new Uint32Array(Math.max(count, 1));
    const read = calls.getgroups(count, count === 0 ? null : list);
    if (read === count) return { uid, gid, groups: [...list.subarray(0, count)] };
  }
  throw new SoftnetError("cannot read the supplementary groups softnet was started with", {
    cause: calls.lastError("getgroups"),
  });
}

/** Who started this process (caller.ts), from the ids it had at exec and its environment. */
export function callerOf(calls: IdentityCalls, env: Record<string, string | undefined>): Caller {
  return decideCaller(readStartCredentials(calls), env, (uid) => lookupUid(calls, uid)?.gid);
}

/**
 * Who started this softnet, decided once, from the ids it had at exec, before anything changed
 * them (macOS's asTargetUser leaves the caller's groups in place): every later question (the drop,
 * the bridge list, the port guard, an error report's drop) gets this same answer.
 */
let startedBy: Caller | undefined;

export function decideCallerOnce(calls: IdentityCalls): Caller {
  startedBy ??= callerOf(calls, process.env);
  return startedBy;
}

/** What --user/--group name, as ids; undefined where the flag was not given. */
function namedIds(
  calls: IdentityCalls,
  options: { user: string | undefined; group: string | undefined },
): { user: PasswdEntry | undefined; gid: number | undefined } {
  let user: PasswdEntry | undefined;
  if (options.user !== undefined) {
    user = /^[0-9]+$/.test(options.user)
      ? lookupUid(calls, Number(options.user))
      : lookupUser(calls, options.user);
    if (user === undefined) {
      throw new SoftnetError(`cannot drop privileges: unknown user "${options.user}" (from --user)`);
    }
  }
  let gid: number | undefined;
  if (options.group !== undefined) {
    gid = /^[0-9]{1,10}$/.test(options.group) ? Number(options.group) : lookupGroup(calls, options.group);
    if (gid === undefined) {
      throw new SoftnetError(`cannot drop privileges: unknown group "${options.group}" (from --group)`);
    }
  }
  return { user, gid };
}

/**
 * Whom to become, for `caller` (caller.ts). Only a real root chooses: --user/--group may name
 * anyone (root included), and without them softnet drops to nobody. Anyone else (a user through
 * sudo, a user through the setuid bit) becomes exactly themselves: --user/--group may only name
 * that same user and group, and are refused otherwise; their supplementary groups are the ones
 * they had (setuid) or the group database's for them (sudo), never more.
 */
export function resolveDropTarget(
  calls: IdentityCalls,
  caller: Caller,
  options: { user: string | undefined; group: string | undefined },
): DropTarget {
  const named = namedIds(calls, options);
  if (caller.kind === "root") {
    let target: Omit<DropTarget, "rootAllowed" | "groups">;
    if (named.user !== undefined) {
      target = { uid: named.user.uid, gid: named.user.gid, userName: named.user.name, chosenBy: "--user" };
    } else {
      const nobody = lookupUser(calls, "nobody");
      if (nobody === undefined) {
        throw new SoftnetError('cannot drop privileges: there is no user "nobody"', {
          hint: "name a user with --user",
        });
      }
      target = { uid: nobody.uid, gid: nobody.gid, userName: nobody.name, chosenBy: "default for root" };
    }
    if (named.gid !== undefined) target.gid = named.gid;
    return { ...target, groups: undefined, rootAllowed: true };
  }
  const who = caller.kind === "sudo-user" ? "through sudo" : "through the setuid bit";
  if (named.user !== undefined && named.user.uid !== caller.uid) {
    throw new SoftnetError(
      `--user ${options.user}: softnet started by uid ${caller.uid} (${who}) runs only as uid ${caller.uid}`,
      { hint: "leave out --user: only root (not through sudo) may make softnet run as another user" },
    );
  }
  if (named.gid !== undefined && named.gid !== caller.gid) {
    throw new SoftnetError(
      `--group ${options.group}: softnet started by uid ${caller.uid} (${who}) runs only as gid ${caller.gid}`,
      { hint: "leave out --group: only root (not through sudo) may make softnet run as another group" },
    );
  }
  return {
    uid: caller.uid,
    gid: caller.gid,
    userName: lookupUid(calls, caller.uid)?.name,
    groups: caller.groups,
    rootAllowed: false,
    chosenBy: caller.kind === "sudo-user" ? "the user who ran sudo" : "the user who started softnet",
  };
}

/**
 * Sets the supplementary groups of `target` (the first step of every drop): its exact list, or
 * the group database's for its user, or none.
 */
export function setTargetGroups(calls: IdentityCalls, target: DropTarget): { result: number; call: string } {
  if (target.groups !== undefined) {
    const list = Uint32Array.from(target.groups);
    return { result: calls.setgroups(list.length, list.length === 0 ? null : list), call: "setgroups" };
  }
  if (target.userName !== undefined) {
    return { result: calls.initgroups(cString(target.userName), target.gid), call: "initgroups" };
  }
  return { result: calls.setgroups(0, null), call: "setgroups" };
}

/** Refuses a target of uid 0 that a real root did not choose: no way into root but root's own. */
export function checkNotRootByMistake(target: DropTarget): void {
  if (target.uid === 0 && !target.rootAllowed) {
    throw new SoftnetError("cannot drop privileges: softnet runs as root only when a real root asks for it");
  }
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
  checkNotRootByMistake(target);
  const groups = setTargetGroups(calls, target);
  check(groups.result, groups.call);
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
  checkNotRootByMistake(target);
  const realUid = calls.getuid();
  const realGid = calls.getgid();
  const effectiveGid = calls.getegid();
  const groups = setTargetGroups(calls, target);
  if (groups.result !== 0) fail(groups.call);
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
  verifyGroups(calls, target);
  if (target.uid !== 0 && calls.setuid(0) === 0) {
    throw new SoftnetError("privilege drop did not take effect", {
      cause: new Error("setuid(0) succeeded after the drop"),
    });
  }
}

/** When the target has an exact group list, the process must now have that list and no other group. */
export function verifyGroups(calls: IdentityCalls, target: DropTarget): void {
  if (target.groups === undefined) return;
  const now = readStartCredentials(calls).groups;
  const wanted = new Set(target.groups);
  const extra = now.filter((gid) => !wanted.has(gid));
  if (extra.length > 0 || new Set(now).size !== wanted.size) {
    throw new SoftnetError("privilege drop did not take effect", {
      cause: new Error(`supplementary groups are [${now.join(",")}], expected [${target.groups.join(",")}]`),
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

/** The variables softnet asks sudo to keep (error reports), when they are set. */
const PRESERVED_THROUGH_SUDO = ["SENTRY_DSN", "CIRRUS_SENTRY_TAGS"] as const;

/**
 * The user's arguments without --user/--group (either form): the re-exec names the caller itself.
 * Whatever this misses (a --user hidden as another option's value) still meets the refusal of any
 * --user but the caller under sudo (resolveDropTarget).
 */
export function withoutIdentityFlags(args: readonly string[]): string[] {
  const kept: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--user" || arg === "--group") {
      i++; // and its value
      continue;
    }
    if (arg.startsWith("--user=") || arg.startsWith("--group=")) continue;
    kept.push(arg);
  }
  return kept;
}

/**
 * Not root: if passwordless sudo works for exactly this command (probed with
 * --sudo-escalation-probing), replace this process with `sudo ... --sudo-escalation-done --user
 * <real uid> --group <real gid>`, keeping the VM's fd, which execv leaves open. The caller's own
 * ids always: a --user/--group on the command line is dropped, since under sudo softnet runs only
 * as the person who asked (and refuses any other). When SENTRY_DSN is set and the sudoers rule does
 * not let it through ("sorry, you are not allowed to set the following environment variables"),
 * softnet asks again without it and `warn`s that error reports are off. Returns only when
 * escalation is impossible, with the error to report.
 */
export function escalateWithSudo(
  calls: IdentityCalls,
  userArgs: readonly string[],
  warn: (line: string) => void = (line) => process.stderr.write(`softnet: warning: ${line}\n`),
): SoftnetError {
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
  const args = [
    ...withoutIdentityFlags(userArgs),
    "--sudo-escalation-done",
    "--user",
    String(calls.getuid()),
    "--group",
    String(calls.getgid()),
  ];
  const probe = (sudoOptions: string[]) =>
    Bun.spawnSync(
      [SUDO_PATH, "-n", ...sudoOptions, executable, ...prefix, ...args, "--sudo-escalation-probing"],
      { stdin: "ignore", stdout: "ignore", stderr: "ignore" },
    ).exitCode === 0;
  const preserved = PRESERVED_THROUGH_SUDO.filter((name) => process.env[name] !== undefined);
  let sudoOptions = preserved.length === 0 ? [] : [`--preserve-env=${preserved.join(",")}`];
  if (!probe(sudoOptions)) {
    if (sudoOptions.length === 0 || !probe([])) {
      return new SoftnetError("root privileges are required and passwordless sudo is not available", {
        hint: fix,
      });
    }
    warn(
      `sudo does not let ${preserved.join(" and ")} through (the sudoers rule has no SETENV): ` +
        "running without them, so no error reports will be sent",
    );
    sudoOptions = [];
  }
  const argv = ["sudo", "--non-interactive", ...sudoOptions, executable, ...prefix, ...args];
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
