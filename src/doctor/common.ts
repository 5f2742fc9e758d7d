/**
 * The checks that are the same on Linux and macOS: which softnet this is, how it gets root, and
 * whether Tart would start this very file.
 *
 * The doctor's own privileges: its root-only checks (a TAP port, a DHCP probe, nftables, vmnet)
 * run only when the person who started it is root (`sudo softnet doctor`, or root itself). A
 * setuid-root softnet started by someone else gives the doctor root too, but the doctor gives it
 * back before its first check (index.ts), so that `softnet doctor` is no way for any local user
 * to act as root; it reports that the setuid bit worked and skips the root-only checks with a
 * "needs root" line.
 */
import { accessSync, constants, realpathSync, type Stats, statSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import type { Caller } from "../caller.ts";
import {
  escalationCommand,
  type IdentityCalls,
  ROOT_OWNED_COPY,
  SUDO_PATH,
  selfCommand,
} from "../platform/identity.ts";
import { COMMIT, VERSION } from "../version.ts";
import type { Checklist } from "./report.ts";

/** Who started the doctor and what it is, captured before anything else ran. */
export interface DoctorContext {
  /** getuid()/geteuid()/getgid() at start, before any drop. */
  readonly started: { readonly realUid: number; readonly effectiveUid: number; readonly realGid: number };
  /** Who started it (caller.ts): the same answer softnet itself gets. */
  readonly caller: Caller;
  /** True when the root-only checks may run: started by root (real and effective uid 0). */
  readonly asRoot: boolean;
  readonly identity: IdentityCalls;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** The PATH Tart would search (--path), when given. */
  readonly pathOption: string | undefined;
  /** This softnet: the compiled executable, or bun and the script when run from source. */
  readonly self: SelfFile;
  /** True once SIGINT/SIGTERM asked the doctor to stop. */
  readonly interrupted: () => boolean;
  /**
   * Runs `work` as the person behind sudo (SUDO_UID) when root was started through sudo, so that
   * what they name (--path) is looked at with their rights, not root's. Plain `work()` otherwise.
   */
  readonly asCaller: <T>(work: () => T) => T;
  /**
   * Undo steps for what a check holds right now (a TAP port, a vmnet interface, bootpd's saved
   * setting): a check adds its step while it holds something and deletes it when done; on
   * SIGINT/SIGTERM index.ts runs whatever is left.
   */
  readonly cleanups: Set<() => void>;
}

export interface SelfFile {
  /** The file that is "this softnet": the executable, or the script run by bun. */
  readonly path: string;
  /** True for a `bun build --compile` binary, false when bun runs the source. */
  readonly compiled: boolean;
  /** The command that starts it again (what sudo is asked for). */
  readonly command: readonly string[];
}

export function selfFile(argv: readonly string[] = process.argv): SelfFile {
  const { executable, prefix } = selfCommand(argv);
  const script = prefix[0];
  return {
    path: script === undefined ? executable : resolve(script),
    compiled: script === undefined,
    command: [executable, ...prefix.map((part) => resolve(part))],
  };
}

export function versionCheck(list: Checklist, self: SelfFile): void {
  list.ok(
    "version",
    "version",
    `softnet ${VERSION} (commit ${COMMIT}), Bun ${Bun.version}, ${process.platform}-${process.arch}, ` +
      `${self.compiled ? "compiled binary" : "from source"} ${self.path}`,
    {
      version: VERSION,
      commit: COMMIT,
      bun: Bun.version,
      platform: process.platform,
      arch: process.arch,
      executable: self.path,
      compiled: self.compiled,
    },
  );
}

function describeMode(info: Stats): string {
  return `owner uid ${info.uid}, mode ${(info.mode & 0o7777).toString(8).padStart(4, "0")}`;
}

/**
 * privileges.root, privileges.setuid, privileges.sudo. softnet (and Tart) need one working way to
 * root: softnet installed setuid root, or a passwordless sudo rule for it.
 */
export async function privilegeChecks(list: Checklist, context: DoctorContext): Promise<void> {
  const { started, self } = context;
  const setuidStart = started.realUid !== 0 && started.effectiveUid === 0;
  if (context.asRoot) {
    const viaSudo = context.caller.kind === "sudo-user" ? context.caller.uid : undefined;
    list.ok(
      "privileges.root",
      "the doctor runs as root",
      `uid 0${viaSudo === undefined ? "" : ` (through sudo, for uid ${viaSudo})`}: every check can run`,
      {
        realUid: started.realUid,
        effectiveUid: started.effectiveUid,
        effectiveUidNow: context.identity.geteuid(),
      },
    );
  } else {
    list.problem(
      "privileges.root",
      "the doctor runs as root",
      setuidStart
        ? `started by uid ${started.realUid} through the setuid bit: the doctor gives that root back at once ` +
            "(it must not let anyone act as root), so the checks that need root do not run"
        : `running as uid ${started.realUid}: the checks that need root do not run`,
      'run it as root: sudo softnet doctor ... (add --path "$PATH" to check which softnet Tart finds)',
      {
        realUid: started.realUid,
        effectiveUid: started.effectiveUid,
        effectiveUidNow: context.identity.geteuid(),
      },
    );
  }

  // The setuid bit, on the file that is this softnet.
  let setuidRoot = false;
  if (!self.compiled) {
    list.notApplicable(
      "privileges.setuid",
      "softnet is installed setuid root",
      `running from source (${self.command.join(" ")}): the setuid bit applies to a compiled softnet`,
    );
  } else {
    let info: Stats | undefined;
    try {
      info = statSync(self.path);
    } catch (error) {
      list.problem(
        "privileges.setuid",
        "softnet is installed setuid root",
        `cannot stat ${self.path}: ${(error as Error).message}`,
        "reinstall softnet",
      );
    }
    if (info !== undefined) {
      const bit = (info.mode & 0o4000) !== 0; // S_ISUID;
      const values = { path: self.path, uid: info.uid, mode: (info.mode & 0o7777).toString(8), setuidStart };
      if (bit && info.uid === 0) {
        setuidRoot = true;
        if (started.realUid !== 0 && started.effectiveUid !== 0) {
          list.problem(
            "privileges.setuid",
            "softnet is installed setuid root",
            `${self.path} is setuid root (${describeMode(info)}) but started by uid ${started.realUid} it did ` +
              "not get root: is its file system mounted nosuid?",
            'install softnet on a file system without nosuid, or use the sudoers rule (README "Install")',
            values,
          );
        } else {
          list.ok(
            "privileges.setuid",
            "softnet is installed setuid root",
            `${self.path}: ${describeMode(info)}${setuidStart ? "; it gave this run root, as it will for Tart" : ""}`,
            values,
          );
        }
      } else if (bit) {
        list.problem(
          "privileges.setuid",
          "softnet is installed setuid root",
          `${self.path} has the setuid bit but belongs to uid ${info.uid}, not root: it gives nobody root`,
          `sudo chown root ${self.path} && sudo chmod u+s ${self.path}, or remove the bit and use the sudoers rule`,
          values,
        );
      } else {
        list.notApplicable(
          "privileges.setuid",
          "softnet is installed setuid root",
          `${self.path} is not setuid (${describeMode(info)}): softnet needs the sudoers rule below, ` +
            "or Tart asks for a password once to make it setuid root",
          values,
        );
      }
    }
  }

  // The sudoers rule: what softnet itself asks sudo for when it is not root.
  const { executable, prefix } = escalationCommand();
  const probe = [SUDO_PATH, "-n", "-k", executable, ...prefix, "--help"];
  const copyNote = executable === ROOT_OWNED_COPY ? ` (the root-owned copy ${ROOT_OWNED_COPY})` : "";
  if (context.asRoot || setuidStart) {
    // Run as root, sudo would say yes to anything; a setuid start is already proven above.
    list.skipped(
      "privileges.sudo",
      "a passwordless sudo rule for softnet",
      `not tested ${context.asRoot ? "as root" : "when started setuid"}: softnet would ask sudo for ` +
        `${[executable, ...prefix].join(" ")}${copyNote}`,
      setuidRoot ? undefined : "run softnet doctor without sudo, as the user who runs Tart, to test the rule",
    );
    return;
  }
  if (!Bun.file(SUDO_PATH).size) {
    const detail = `${SUDO_PATH} is not installed`;
    if (setuidRoot) list.notApplicable("privileges.sudo", "a passwordless sudo rule for softnet", detail);
    else list.problem("privileges.sudo", "a passwordless sudo rule for softnet", detail, sudoAdvice(self));
    return;
  }
  const result = await runBounded(probe, 10_000);
  const values = { command: probe.join(" "), exitCode: result.code, stderr: result.stderr };
  if (result.code === 0) {
    list.ok(
      "privileges.sudo",
      "a passwordless sudo rule for softnet",
      `${probe.join(" ")} works: softnet gets root through sudo${copyNote}`,
      values,
    );
  } else {
    const why =
      `${probe.join(" ")} failed (${result.code === 124 ? "timed out" : `exit ${result.code}`}` +
      `${result.stderr === "" ? "" : `: ${result.stderr}`})`;
    if (setuidRoot) {
      list.notApplicable(
        "privileges.sudo",
        "a passwordless sudo rule for softnet",
        `${why}; not needed: softnet is setuid root`,
        values,
      );
    } else {
      list.problem("privileges.sudo", "a passwordless sudo rule for softnet", why, sudoAdvice(self), values);
    }
  }
}

function sudoAdvice(self: SelfFile): string {
  return (
    `install a root-owned copy at ${ROOT_OWNED_COPY} and allow it in sudoers ` +
    `(USER ALL=(root) NOPASSWD: ${ROOT_OWNED_COPY}; README "Install"), ` +
    `or make softnet setuid root (sudo chown root ${self.path} && sudo chmod u+s ${self.path})`
  );
}

/** Runs argv with no input; kills it after `timeoutMs` (code 124, as coreutils' timeout). */
export async function runBounded(
  argv: readonly string[],
  timeoutMs: number,
  env: Record<string, string> | undefined = undefined,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = Bun.spawn([...argv], { stdin: "ignore", stdout: "pipe", stderr: "pipe", env });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, timeoutMs);
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  clearTimeout(timer);
  return { code: timedOut ? 124 : code, stdout: stdout.trim(), stderr: stderr.trim().split("\n")[0] ?? "" };
}

/** Where a PATH lookup for `softnet` ends, the way a shell (and Tart) does it. */
export interface PathLookup {
  /** The first executable regular file named softnet, or undefined. */
  readonly found: string | undefined;
  /** Entries that are not absolute (empty = the current directory): not searched. */
  readonly ignored: readonly string[];
  /** Files named softnet passed over because they are not executable. */
  readonly notExecutable: readonly string[];
}

export function lookUpSoftnet(path: string): PathLookup {
  const ignored: string[] = [];
  const notExecutable: string[] = [];
  for (const entry of path.split(":")) {
    if (!isAbsolute(entry)) {
      ignored.push(entry === "" ? "(empty: the current directory)" : entry);
      continue;
    }
    const candidate = join(entry, "softnet");
    try {
      if (!statSync(candidate).isFile()) continue;
    } catch {
      continue; // not there (or a dangling symlink): the lookup goes on
    }
    try {
      accessSync(candidate, constants.X_OK);
      return { found: candidate, ignored, notExecutable };
    } catch {
      notExecutable.push(candidate);
    }
  }
  return { found: undefined, ignored, notExecutable };
}

/** Same file: same device and inode (what sudo compares too), after following symlinks. */
export function sameFile(a: string, b: string): boolean {
  try {
    const left = statSync(a);
    const right = statSync(b);
    return left.dev === right.dev && left.ino === right.ino;
  } catch {
    return false;
  }
}

/** path: the `softnet` Tart would start is this one. */
export function pathCheck(list: Checklist, context: DoctorContext): void {
  const title = "Tart finds this softnet on PATH";
  const viaSudo = context.caller.kind === "sudo-user";
  let path = context.pathOption;
  let source = "--path";
  if (path === undefined && context.env.PATH !== undefined && !viaSudo) {
    path = context.env.PATH;
    source = "PATH";
  }
  if (path === undefined) {
    list.skipped(
      "path",
      title,
      viaSudo
        ? "PATH unknown: under sudo the environment's PATH is sudo's, not yours"
        : 'PATH unknown: softnet clears its environment (README "Security model")',
      'pass yours: softnet doctor --path "$PATH" ... (with sudo too: sudo softnet doctor --path "$PATH")',
    );
    return;
  }
  const lookup = context.asCaller(() => lookUpSoftnet(path));
  const values = {
    source,
    found: lookup.found ?? null,
    self: context.self.path,
    ignoredEntries: lookup.ignored,
    notExecutable: lookup.notExecutable,
  };
  if (lookup.found === undefined) {
    list.problem(
      "path",
      title,
      `no executable softnet in ${source} (${path})` +
        (lookup.notExecutable.length === 0 ? "" : `; not executable: ${lookup.notExecutable.join(", ")}`),
      `put softnet on PATH (Homebrew links it into /opt/homebrew/bin; or a symlink to ${context.self.path})`,
      values,
    );
    return;
  }
  const found = lookup.found;
  const resolved = context.asCaller(() => {
    try {
      return realpathSync(found);
    } catch {
      return found;
    }
  });
  const shown = resolved === found ? found : `${found} (→ ${resolved})`;
  if (context.asCaller(() => sameFile(found, context.self.path))) {
    list.ok("path", title, `${shown} is this softnet`, { ...values, resolved });
  } else {
    list.problem(
      "path",
      title,
      `Tart would start ${shown}, which is not this softnet (${context.self.path})`,
      `remove or reorder the other one, or check that one instead: ${found} doctor`,
      { ...values, resolved },
    );
  }
}
