#!/usr/bin/env bun
/**
 * The setuid-root attack lab: installs a Linux softnet binary setuid root in a root-owned
 * directory and runs it as an unprivileged user with one attack at a time, recording what
 * happened. test/release/setuid.test.ts asserts on it; run directly it prints the table that
 * README "Security model" quotes:
 *
 *   bun scripts/release/setuid-attacks.ts dist/softnet-linux-x64 [other builds to compare...]
 *
 * Every attack's "attacker code" creates a marker in a directory only root can write to and
 * prints its euid. An attack counts as exploited when that code ran as root, an inspector
 * (debugger) listened or an attacker's debugger got a connection, a file appeared where only
 * root can write, or a Bun/JavaScriptCore option from the environment visibly took effect.
 * Needs root, setpriv (util-linux), ss (iproute2), useradd; Linux only.
 */
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";

export const ATTACKER = "softnet-attacker";

export interface Outcome {
  attack: string;
  /** Attacker code ran with euid 0. */
  rootCode: boolean;
  /** Attacker code ran at all (any euid). */
  code: boolean;
  /** An inspector listened (TCP or a socket file), or softnet connected to the attacker's debugger. */
  inspector: boolean;
  /** A file appeared in the root-only directory that the attacker code did not make. */
  rootFile: boolean;
  /** A JSC option from the environment took effect (its dump appeared). */
  jscOption: boolean;
  /** softnet --version printed softnet's version under this attack. */
  versionOk: boolean;
  exitCode: number | null;
  output: string;
}

export function exploited(outcome: Outcome): boolean {
  return outcome.rootCode || outcome.inspector || outcome.rootFile || outcome.jscOption;
}

export interface AttackContext {
  /** The attacker's own directory (their cwd): plant files here. */
  dir: string;
  /** A root-only directory: attacker code tries to create `${rootOnly}/<attack>`. */
  rootOnly: string;
  /** JavaScript that creates the marker and prints ATTACKER-CODE euid=N. */
  evilJs: string;
  /** A file holding evilJs. */
  evilPath: string;
  /** A free TCP port on 127.0.0.1 for an inspector. */
  port: number;
  /** A shared object whose constructor does what evilJs does (when gcc exists). */
  evilSo: string | undefined;
}

export interface Attack {
  id: string;
  what: string;
  env?: (context: AttackContext) => Record<string, string>;
  args?: (context: AttackContext) => string[];
  argv0?: string;
  /** Files to plant in the attacker's directory before the run. */
  plant?: (context: AttackContext) => void;
  /** The run may wait for a debugger: give it this long, then kill it. */
  waits?: boolean;
}

const VERSION_ARGS = () => ["--version"];

export const ATTACKS: Attack[] = [
  {
    id: "none",
    what: "no attack (baseline)",
  },
  {
    id: "BUN_BE_BUN",
    what: "BUN_BE_BUN=1 softnet -e CODE",
    env: () => ({ BUN_BE_BUN: "1" }),
    args: (c) => ["-e", c.evilJs],
  },
  {
    id: "BUN_BE_BUN-file",
    what: "BUN_BE_BUN=1 softnet evil.js",
    env: () => ({ BUN_BE_BUN: "1" }),
    args: (c) => [c.evilPath],
  },
  {
    id: "BUN_OPTIONS-preload",
    what: "BUN_OPTIONS=--preload evil.js",
    env: (c) => ({ BUN_OPTIONS: `--preload ${c.evilPath}` }),
  },
  {
    id: "BUN_OPTIONS-inspect",
    what: "BUN_OPTIONS=--inspect-brk=127.0.0.1:PORT",
    env: (c) => ({ BUN_OPTIONS: `--inspect-brk=127.0.0.1:${c.port}/softnet-attack` }),
    waits: true,
  },
  {
    id: "BUN_OPTIONS-cpu-prof",
    what: "BUN_OPTIONS=--cpu-prof --cpu-prof-dir=ROOT-ONLY (file written as root)",
    env: (c) => ({ BUN_OPTIONS: `--cpu-prof --cpu-prof-dir=${c.rootOnly}` }),
  },
  {
    id: "BUN_INSPECT",
    what: "BUN_INSPECT=127.0.0.1:PORT?break=1",
    env: (c) => ({ BUN_INSPECT: `127.0.0.1:${c.port}/softnet-attack?break=1` }),
    waits: true,
  },
  {
    id: "BUN_INSPECT_CONNECT_TO",
    what: "BUN_INSPECT=ws+unix://... BUN_INSPECT_CONNECT_TO=unix://attacker.sock",
    env: (c) => ({
      BUN_INSPECT: `ws+unix://${c.dir}/inspector.sock`,
      BUN_INSPECT_CONNECT_TO: `unix://${c.dir}/debugger.sock`,
    }),
    waits: true,
  },
  {
    id: "BUN_INSPECT_PRELOAD",
    what: "BUN_INSPECT + BUN_INSPECT_PRELOAD=evil.js",
    env: (c) => ({
      BUN_INSPECT: `127.0.0.1:${c.port}/softnet-attack?break=1`,
      BUN_INSPECT_PRELOAD: c.evilPath,
    }),
    waits: true,
  },
  {
    id: "JSC_",
    what: "JSC_dumpOptions=1 (JavaScriptCore options from the environment)",
    env: () => ({ JSC_dumpOptions: "1" }),
  },
  {
    id: "BUN_JSC_",
    what: "BUN_JSC_dumpOptions=2",
    env: () => ({ BUN_JSC_dumpOptions: "2" }),
  },
  {
    id: "NODE_OPTIONS",
    what: "NODE_OPTIONS=--require evil.js",
    env: (c) => ({ NODE_OPTIONS: `--require ${c.evilPath}` }),
  },
  {
    id: "BUN_BYTECODE_ORDER_OUT",
    what: "BUN_BYTECODE_ORDER_OUT=ROOT-ONLY/file (file written as root)",
    env: (c) => ({ BUN_BYTECODE_ORDER_OUT: `${c.rootOnly}/bytecode-order` }),
  },
  {
    id: "dotenv",
    what: ".env in the cwd (BUN_INSPECT, BUN_OPTIONS, NODE_OPTIONS)",
    plant: (c) =>
      writeFileSync(
        join(c.dir, ".env"),
        `BUN_INSPECT=127.0.0.1:${c.port}/softnet-attack?break=1\nBUN_OPTIONS=--preload ${c.evilPath}\nNODE_OPTIONS=--require ${c.evilPath}\n`,
      ),
    waits: true,
  },
  {
    id: "bunfig",
    what: "bunfig.toml with preload in the cwd",
    plant: (c) => writeFileSync(join(c.dir, "bunfig.toml"), `preload = [${JSON.stringify(c.evilPath)}]\n`),
  },
  {
    id: "TMPDIR",
    what: "TMPDIR=attacker dir with planted files and symlinks into ROOT-ONLY",
    env: (c) => ({ TMPDIR: join(c.dir, "tmp"), BUN_TMPDIR: join(c.dir, "tmp") }),
    plant: (c) => {
      const tmp = join(c.dir, "tmp");
      mkdirSync(tmp, { recursive: true });
      for (const name of ["bun", ".bun", "bunfig.toml", "softnet", "bun-build"]) {
        spawnSync("ln", ["-s", join(c.rootOnly, `via-tmpdir-${name}`), join(tmp, name)]);
      }
      writeFileSync(join(tmp, "preload.js"), c.evilJs);
    },
  },
  {
    id: "LD_PRELOAD",
    what: "LD_PRELOAD=evil.so",
    env: (c): Record<string, string> => (c.evilSo ? { LD_PRELOAD: c.evilSo } : {}),
  },
  {
    id: "BUN_TCC_OPTIONS",
    what: "BUN_TCC_OPTIONS=-run evil.c",
    env: (c) => ({ BUN_TCC_OPTIONS: `-run ${join(c.dir, "evil.c")}` }),
  },
  {
    id: "argv0-bun",
    what: "argv[0]=bun (exec -a bun softnet -e CODE)",
    argv0: "bun",
    args: (c) => ["-e", c.evilJs],
  },
  {
    id: "argv0-bunx",
    what: "argv[0]=bunx",
    argv0: "bunx",
    args: (c) => [c.evilPath],
  },
  {
    id: "argv0-node",
    what: "argv[0]=node",
    argv0: "node",
    args: (c) => [c.evilPath],
  },
];

function sh(argv: string[]): { code: number; out: string } {
  const result = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8" });
  return { code: result.status ?? -1, out: `${result.stdout ?? ""}${result.stderr ?? ""}` };
}

function freePort(): number {
  return 20000 + Math.floor(Math.random() * 20000);
}

/** A root-owned directory with a setuid-root copy of the binary, and the attacker's user. */
export class SetuidLab {
  readonly base: string;
  readonly binary: string;
  readonly rootOnly: string;
  readonly uid: number;
  readonly gid: number;
  private evilSo: string | undefined;

  private constructor(sourceBinary: string) {
    if (process.getuid?.() !== 0) throw new Error("the setuid lab needs root");
    if (sh(["id", "-u", ATTACKER]).code !== 0) {
      const added = sh(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", ATTACKER]);
      if (added.code !== 0) throw new Error(`useradd ${ATTACKER}: ${added.out}`);
    }
    this.uid = Number(sh(["id", "-u", ATTACKER]).out.trim());
    this.gid = Number(sh(["id", "-g", ATTACKER]).out.trim());
    // /var/tmp, not a tmpfs that might be mounted nosuid.
    this.base = mkdtempSync("/var/tmp/softnet-setuid-");
    chmodSync(this.base, 0o755);
    mkdirSync(join(this.base, "bin"), { mode: 0o755 });
    this.binary = join(this.base, "bin", "softnet");
    copyFileSync(sourceBinary, this.binary);
    chownSync(this.binary, 0, 0);
    chmodSync(this.binary, 0o4755);
    this.rootOnly = join(this.base, "root-only");
    mkdirSync(this.rootOnly, { mode: 0o700 });
    const mountOptions = sh(["findmnt", "-no", "OPTIONS", "-T", this.binary]).out;
    if (/\bnosuid\b/.test(mountOptions)) throw new Error(`${this.base} is on a nosuid mount`);
  }

  static create(sourceBinary: string): SetuidLab {
    return new SetuidLab(sourceBinary);
  }

  cleanup(): void {
    rmSync(this.base, { recursive: true, force: true });
  }

  /** A fresh attacker-owned directory for one attack. */
  private attackerDir(id: string): string {
    const dir = join(this.base, `attacker-${id.replace(/[^A-Za-z0-9_-]/g, "_")}`);
    mkdirSync(dir, { mode: 0o755 });
    chownSync(dir, this.uid, this.gid);
    return dir;
  }

  private compileEvilSo(dir: string, marker: string): string | undefined {
    if (this.evilSo) return this.evilSo;
    if (!existsSync("/usr/bin/gcc")) return undefined;
    const source = join(dir, "evil-so.c");
    writeFileSync(
      source,
      `#include <stdio.h>\n#include <unistd.h>\n__attribute__((constructor)) static void evil(void) {\n` +
        `  FILE *f = fopen("${marker}", "w"); if (f) { fprintf(f, "euid=%d\\n", geteuid()); fclose(f); }\n` +
        `  fprintf(stderr, "ATTACKER-CODE euid=%d\\n", geteuid());\n}\n`,
    );
    const so = join(this.base, "evil.so");
    if (sh(["gcc", "-shared", "-fPIC", "-o", so, source]).code !== 0) return undefined;
    chmodSync(so, 0o755);
    this.evilSo = so;
    return so;
  }

  private context(attack: Attack): AttackContext {
    const dir = this.attackerDir(attack.id);
    const marker = join(this.rootOnly, `code-${attack.id}`);
    const evilJs =
      `(()=>{const e=process.geteuid();try{process.getBuiltinModule("fs").writeFileSync(${JSON.stringify(marker)},"euid="+e)}catch{}` +
      `console.log("ATTACKER-CODE euid="+e);console.error("ATTACKER-CODE euid="+e);return e})();`;
    const evilPath = join(dir, "evil.js");
    writeFileSync(evilPath, evilJs);
    writeFileSync(
      join(dir, "evil.c"),
      `int main(void){return 0;}\n__attribute__((constructor)) static void evil(void){}\n`,
    );
    const evilSo = this.compileEvilSo(dir, join(this.rootOnly, "code-LD_PRELOAD"));
    return { dir, rootOnly: this.rootOnly, evilJs, evilPath, port: freePort(), evilSo };
  }

  /**
   * argv that runs `binary args` as the attacker with exactly `env`: setpriv changes user and
   * execs in place, env -i execs the binary with the attack's variables, so none of them reaches
   * a process that runs before the binary (setpriv runs as root). With `argv0`, bash's exec -a
   * sets argv[0].
   */
  asAttacker(binary: string, args: string[], env: Record<string, string> = {}, argv0?: string): string[] {
    const setpriv = ["setpriv", `--reuid=${this.uid}`, `--regid=${this.gid}`, "--init-groups", "--"];
    const variables = Object.entries(env).map(([key, value]) => `${key}=${value}`);
    if (argv0 === undefined) return [...setpriv, "/usr/bin/env", "-i", ...variables, binary, ...args];
    return [
      ...setpriv,
      "/usr/bin/env",
      "-i",
      ...variables,
      "/bin/bash",
      "-c",
      'exec -a "$0" "$@"',
      argv0,
      binary,
      ...args,
    ];
  }

  async run(attack: Attack, binary = this.binary): Promise<Outcome> {
    const context = this.context(attack);
    attack.plant?.(context);
    spawnSync("chown", ["-R", `${this.uid}:${this.gid}`, context.dir]);
    const before = new Set(readdirSync(this.rootOnly));
    const env: Record<string, string> = {
      PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
      ...(attack.env?.(context) ?? {}),
    };
    const args = attack.args?.(context) ?? VERSION_ARGS();
    // A debugger the attacker runs, for BUN_INSPECT_CONNECT_TO.
    let debuggerConnections = 0;
    const debuggerSocket = join(context.dir, "debugger.sock");
    const listener = Bun.listen({
      unix: debuggerSocket,
      socket: {
        open() {
          debuggerConnections++;
        },
        data() {},
      },
    });
    chmodSync(debuggerSocket, 0o777);
    const child = Bun.spawn(this.asAttacker(binary, args, env, attack.argv0), {
      env: { PATH: env.PATH! },
      cwd: context.dir,
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    });
    let inspector = false;
    const deadline = Date.now() + (attack.waits ? 2500 : 10000);
    while (Date.now() < deadline && child.exitCode === null && child.signalCode === null) {
      if (await inspectorListening(child.pid, context.port)) inspector = true;
      if (inspector) {
        // Prove it: drive the inspector as an attacker would.
        await evaluateThroughInspector(context.port, context.evilJs);
        await Bun.sleep(300);
        break;
      }
      await Bun.sleep(100);
    }
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    const exitCode = await child.exited;
    const output = `${await new Response(child.stdout).text()}${await new Response(child.stderr).text()}`;
    listener.stop(true);
    if (existsSync(join(context.dir, "inspector.sock"))) inspector = true;
    if (debuggerConnections > 0) inspector = true;
    const after = readdirSync(this.rootOnly).filter((name) => !before.has(name));
    const codeMarker = after.find((name) => name.startsWith("code-"));
    const markerText = codeMarker ? readFileSync(join(this.rootOnly, codeMarker), "utf8") : "";
    const euids = [...output.matchAll(/ATTACKER-CODE euid=(\d+)/g)].map((match) => Number(match[1]));
    const version = await this.versionUnder(attack, context, env);
    return {
      attack: attack.id,
      rootCode: markerText.includes("euid=0") || euids.includes(0),
      code: codeMarker !== undefined || euids.length > 0,
      inspector,
      rootFile: after.some((name) => !name.startsWith("code-")),
      jscOption: /JSC options:/.test(output),
      versionOk: version,
      exitCode,
      output: output.trim(),
    };
  }

  /** softnet --version under the same environment and directory still prints softnet's version. */
  private async versionUnder(
    attack: Attack,
    context: AttackContext,
    env: Record<string, string>,
  ): Promise<boolean> {
    if (attack.waits || attack.argv0) return true; // checked by the attack run itself, or argv-only
    const child = Bun.spawn(this.asAttacker(this.binary, ["--version"], env), {
      env: { PATH: env.PATH! },
      cwd: context.dir,
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 10000);
    await child.exited;
    clearTimeout(timer);
    const out = await new Response(child.stdout).text();
    return /^softnet \S+ \(\S+\)\n$/.test(out);
  }
}

/** True when `pid` (or a child) listens on TCP, or anything listens on 127.0.0.1:port. */
async function inspectorListening(pid: number, port: number): Promise<boolean> {
  const ss = spawnSync("ss", ["-Hltnp"], { encoding: "utf8" });
  if (ss.stdout?.includes(`pid=${pid},`)) return true;
  return await new Promise<boolean>((resolve) => {
    const socket = connect({ host: "127.0.0.1", port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.on("error", () => resolve(false));
    socket.setTimeout(300, () => {
      socket.destroy();
      resolve(false);
    });
  });
}

/**
 * Connects to a Bun inspector on 127.0.0.1:port as an attacker would and evaluates `code`. Bun
 * serves it at the path from BUN_INSPECT / --inspect, URL-encoded ("?break=1" becomes "%3Fbreak=1").
 */
async function evaluateThroughInspector(port: number, code: string): Promise<void> {
  for (const path of ["/softnet-attack", "/softnet-attack%3Fbreak=1", "/softnet-attack%3Fwait=1"]) {
    if (await evaluateAt(`ws://127.0.0.1:${port}${path}`, code)) return;
  }
}

function evaluateAt(url: string, code: string): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    let ws: WebSocket;
    try {
      ws = new WebSocket(url);
    } catch {
      resolve(false);
      return;
    }
    let opened = false;
    const done = () => {
      try {
        ws.close();
      } catch {}
      resolve(opened);
    };
    const timer = setTimeout(done, 1500);
    ws.onopen = () => {
      opened = true;
      ws.send(JSON.stringify({ id: 1, method: "Runtime.evaluate", params: { expression: code } }));
    };
    ws.onmessage = (event) => {
      if (String(event.data).includes('"id":1')) {
        clearTimeout(timer);
        setTimeout(done, 100);
      }
    };
    ws.onerror = () => {
      clearTimeout(timer);
      done();
    };
  });
}

export function describeOutcome(outcome: Outcome): string {
  if (outcome.rootCode) return "EXPLOITED: attacker code ran as root";
  const parts: string[] = [];
  if (outcome.inspector) parts.push("inspector open");
  if (outcome.rootFile) parts.push("root file written");
  if (outcome.jscOption) parts.push("JSC option applied");
  if (outcome.code) parts.push("attacker code ran (not root)");
  if (parts.length > 0) return `EXPLOITED: ${parts.join(", ")}`;
  return outcome.versionOk ? "blocked" : "blocked (but --version failed)";
}

if (import.meta.main) {
  const binaries = process.argv.slice(2);
  if (binaries.length === 0) {
    console.error("usage: setuid-attacks.ts BINARY [BINARY...]");
    process.exit(2);
  }
  const labs = binaries.map((binary) => SetuidLab.create(binary));
  try {
    console.log(`| attack | ${binaries.join(" | ")} |`);
    console.log(`| --- | ${binaries.map(() => "---").join(" | ")} |`);
    for (const attack of ATTACKS) {
      const cells: string[] = [];
      for (const lab of labs) cells.push(describeOutcome(await lab.run(attack)));
      console.log(`| ${attack.what} | ${cells.join(" | ")} |`);
    }
  } finally {
    for (const lab of labs) lab.cleanup();
  }
}
