/**
 * What the benchmark needs from the machine: compiling its C programs, a private network namespace,
 * child processes it tracks so that they are all gone when it exits (normally, on an error or on
 * Ctrl-C), and readings from /proc and /sys.
 */

import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { destroyNamespaceSync } from "../../test/e2e/lib/netns.ts";

export const BENCH_PREFIX = "softnet-bench-";
const OWNED_NAME = /^softnet-bench-(\d+)(?:-|$)/;

/** Runs argv to completion (synchronously); throws with its output when it fails. Returns stdout. */
export function sh(argv: string[]): string {
  const result = Bun.spawnSync(argv, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  if (result.exitCode !== 0) {
    const output = `${result.stderr.toString()}${result.stdout.toString()}`.trim();
    throw new Error(`\`${argv.join(" ")}\` exited ${result.exitCode}: ${output}`);
  }
  return result.stdout.toString();
}

/** Like sh, but returns undefined instead of throwing. */
export function shMaybe(argv: string[]): string | undefined {
  try {
    return sh(argv);
  } catch {
    return undefined;
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Everything the benchmark created, undone in reverse order by cleanup(). */
export class Resources {
  readonly workDir: string;
  private readonly children = new Set<Subprocess>();
  private readonly namespaces: string[] = [];
  private readonly extraCleanups: Array<() => void> = [];
  private cleanedUp = false;

  constructor() {
    removeLeftovers();
    this.workDir = mkdtempSync(join(tmpdir(), `${BENCH_PREFIX}${process.pid}-`));
    process.on("exit", () => this.cleanup());
    for (const [signal, number] of [
      ["SIGINT", 2],
      ["SIGTERM", 15],
      ["SIGHUP", 1],
    ] as const) {
      process.on(signal, () => {
        process.stderr.write(`\nbench: ${signal}: cleaning up\n`);
        this.cleanup();
        process.exit(128 + number);
      });
    }
  }

  /** A namespace name of this run: softnet-bench-<pid>-<role>. */
  namespaceName(role: string): string {
    return `${BENCH_PREFIX}${process.pid}-${role}`;
  }

  addNamespace(name: string): void {
    this.namespaces.push(name);
    sh(["ip", "netns", "add", name]);
  }

  removeNamespace(name: string): void {
    const index = this.namespaces.indexOf(name);
    if (index >= 0) this.namespaces.splice(index, 1);
    if (existsSync(`/run/netns/${name}`)) destroyNamespaceSync(name);
  }

  onCleanup(step: () => void): void {
    this.extraCleanups.push(step);
  }

  /** Spawns argv and tracks it until it exits. */
  spawn(
    argv: string[],
    options: { fds?: number[]; stdin?: number | "ignore"; cwd?: string } = {},
  ): Subprocess {
    const child = Bun.spawn(argv, {
      stdio: [options.stdin ?? "ignore", "pipe", "pipe", ...(options.fds ?? [])],
      cwd: options.cwd,
    });
    this.children.add(child);
    void child.exited.then(() => this.children.delete(child));
    return child;
  }

  /** Synchronous: it also runs from the process 'exit' event. Idempotent. */
  cleanup(): void {
    if (this.cleanedUp) return;
    this.cleanedUp = true;
    for (const child of this.children) {
      try {
        process.kill(child.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    for (const step of this.extraCleanups.reverse()) {
      try {
        step();
      } catch {
        // best effort
      }
    }
    for (const name of [...this.namespaces].reverse()) {
      if (existsSync(`/run/netns/${name}`)) destroyNamespaceSync(name);
    }
    rmSync(this.workDir, { recursive: true, force: true });
  }
}

/** Namespaces and temp dirs of earlier benchmark runs whose process is gone (killed with SIGKILL). */
function removeLeftovers(): void {
  const isLeftover = (name: string): boolean => {
    const owner = name.match(OWNED_NAME);
    return owner !== null && Number(owner[1]) !== process.pid && !processAlive(Number(owner[1]));
  };
  const listed = shMaybe(["ip", "-j", "netns", "list"])?.trim();
  const namespaces = listed ? (JSON.parse(listed) as Array<{ name: string }>).map((entry) => entry.name) : [];
  for (const name of namespaces.filter(isLeftover)) destroyNamespaceSync(name);
  for (const entry of readdirSync(tmpdir()).filter(isLeftover)) {
    rmSync(join(tmpdir(), entry), { recursive: true, force: true });
  }
}

/** Compiles the C programs with the system cc into dir. Returns their paths. */
export function compilePrograms(dir: string): {
  relay: string;
  tools: string;
  exectime: string;
  compiler: string;
} {
  const compiler = sh(["cc", "--version"]).split("\n")[0]!.trim();
  const paths = { relay: join(dir, "relay"), tools: join(dir, "tools"), exectime: join(dir, "exectime") };
  for (const [name, output] of Object.entries(paths)) {
    sh(["cc", "-O2", "-Wall", "-o", output, join(import.meta.dir, `${name}.c`)]);
  }
  return { ...paths, compiler };
}

/** utime + stime of every thread of pid, in seconds. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state): utime is field 14, stime field 15.
  return (Number(fields[11]) + Number(fields[12])) / clockTicks();
}

/** Run time of each live thread of pid from /proc/PID/task/TID/schedstat, in nanoseconds, by thread id. */
export function threadRuntimes(pid: number): Map<string, number> {
  const runtimes = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      runtimes.set(tid, Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]));
    } catch {
      // the thread exited meanwhile
    }
  }
  return runtimes;
}

/**
 * CPU seconds spent between two threadRuntimes() readings: threads present in both count their
 * difference, threads started in between count whole (threads that exited in between are lost).
 */
export function runtimeBetween(before: Map<string, number>, after: Map<string, number>): number {
  let total = 0;
  for (const [tid, ns] of after) total += ns - (before.get(tid) ?? 0);
  return total / 1e9;
}

let ticks: number | undefined;
function clockTicks(): number {
  ticks ??= Number(shMaybe(["getconf", "CLK_TCK"])?.trim() || 100);
  return ticks;
}

/** A field of /proc/PID/status in bytes (VmHWM, VmRSS: "12345 kB"). */
export function statusBytes(pid: number, field: string): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const match = status.match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"));
  if (!match) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

export function statusField(pid: number, field: string): string | undefined {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return status.match(new RegExp(`^${field}:\\s+(.*)$`, "m"))?.[1];
}

/** Collects a child's stdout/stderr continuously (so pipes never fill), for waits and messages. */
export class Output {
  text = "";
  private listeners: Array<() => void> = [];
  readonly done: Promise<void>;

  constructor(child: Subprocess) {
    const drain = async (stream: ReadableStream<Uint8Array> | number | undefined | null) => {
      if (!(stream instanceof ReadableStream)) return;
      const decoder = new TextDecoder();
      for await (const chunk of stream) {
        this.text += decoder.decode(chunk, { stream: true });
        if (this.text.length > 1 << 20) this.text = this.text.slice(-(1 << 19));
        for (const listener of this.listeners.splice(0)) listener();
      }
    };
    this.done = Promise.all([drain(child.stdout), drain(child.stderr)]).then(() => {
      for (const listener of this.listeners.splice(0)) listener();
    });
  }

  /** Resolves when pattern shows up; rejects after timeoutMs or when the streams end without it. */
  async waitFor(pattern: RegExp, timeoutMs: number, isRunning: () => boolean): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (pattern.test(this.text)) return;
      if (!isRunning()) throw new Error(`it exited before printing ${pattern}: ${this.text.trim()}`);
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`timed out waiting for ${pattern}; output: ${this.text.trim()}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(remaining, 100));
        this.listeners.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}

/** Runs argv (tracked) to completion with extra fds 3, 4, ...; returns code and output. */
export async function runTool(
  resources: Resources,
  argv: string[],
  { fds = [], timeoutMs = 30_000, cwd }: { fds?: number[]; timeoutMs?: number; cwd?: string } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = resources.spawn(argv, { fds, cwd });
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout as ReadableStream).text(),
    new Response(child.stderr as ReadableStream).text(),
    child.exited,
  ]);
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** The last line of stdout that parses as a JSON object. */
export function lastJson<T>(stdout: string): T | undefined {
  for (const line of stdout.trim().split("\n").reverse()) {
    if (!line.startsWith("{")) continue;
    try {
      return JSON.parse(line) as T;
    } catch {
      // not this one
    }
  }
  return undefined;
}

export function sleep(ms: number): Promise<void> {
  return Bun.sleep(ms);
}
