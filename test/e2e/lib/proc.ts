// Running commands and long-lived daemons for the e2e harness: bounded in time, their output kept
// for failure messages, and every daemon killed by whoever started it.
import type { Subprocess } from "bun";

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Killed (SIGKILL) after this long; code is then 124, like coreutils' timeout. */
  timeoutMs?: number;
  stdin?: string;
  cwd?: string;
}

/** Runs argv to completion and returns its exit code and output. Never throws on a non-zero exit. */
export async function run(argv: string[], options: RunOptions = {}): Promise<RunResult> {
  const child = Bun.spawn(argv, {
    stdin: options.stdin === undefined ? "ignore" : new TextEncoder().encode(options.stdin),
    stdout: "pipe",
    stderr: "pipe",
    cwd: options.cwd,
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, options.timeoutMs ?? 15_000);
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  clearTimeout(timer);
  return { code: timedOut ? 124 : code, stdout, stderr };
}

/** Like run, but throws with the command's output when it exits non-zero. Returns stdout. */
export async function check(argv: string[], options: RunOptions = {}): Promise<string> {
  const result = await run(argv, options);
  if (result.code !== 0) {
    throw new Error(
      `\`${argv.join(" ")}\` exited ${result.code}: ${result.stderr.trim() || result.stdout.trim()}`,
    );
  }
  return result.stdout;
}

/** Synchronous run, for the process 'exit' safety net where nothing asynchronous runs any more. */
export function runSync(argv: string[]): RunResult {
  const result = Bun.spawnSync(argv, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  return { code: result.exitCode ?? -1, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
}

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
}

/**
 * Polls probe until it returns something other than undefined/false/null, and returns that.
 * Throws after timeoutMs with `what` and the last probe error, so a failing wait says what it
 * waited for instead of timing out the whole test.
 */
export async function waitFor<T>(
  what: string,
  probe: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  options: WaitOptions = {},
): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== null && value !== false) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() >= deadline) {
      const cause = lastError instanceof Error ? `: ${lastError.message}` : "";
      throw new Error(`timed out after ${options.timeoutMs ?? 10_000} ms waiting for ${what}${cause}`);
    }
    await Bun.sleep(options.intervalMs ?? 50);
  }
}

const OUTPUT_LIMIT = 256 * 1024;

export interface DaemonOptions {
  /** fd to use as the child's stdin (e.g. a socketpair end); /dev/null otherwise. */
  stdinFd?: number;
  /** fds given to the child as 3, 4, ... */
  extraFds?: number[];
  cwd?: string;
  env?: Record<string, string | undefined>;
}

/** A long-lived child whose stdout and stderr are drained continuously (pipes never fill up). */
export class Daemon {
  readonly process: Subprocess<"ignore" | number, "pipe", "pipe">;
  private output = "";
  private outputListeners: Array<() => void> = [];
  exitCode: number | null = null;
  readonly exited: Promise<number>;

  constructor(
    readonly name: string,
    readonly argv: string[],
    options: DaemonOptions = {},
  ) {
    this.process = Bun.spawn(argv, {
      stdio: [options.stdinFd ?? "ignore", "pipe", "pipe", ...(options.extraFds ?? [])],
      cwd: options.cwd,
      env: options.env === undefined ? undefined : { ...process.env, ...options.env },
    }) as Subprocess<"ignore" | number, "pipe", "pipe">;
    const drains = [this.drain(this.process.stdout), this.drain(this.process.stderr)];
    this.exited = this.process.exited.then(async (code) => {
      await Promise.all(drains);
      this.exitCode = code;
      this.notify();
      return code;
    });
  }

  get pid(): number {
    return this.process.pid;
  }

  get running(): boolean {
    return this.exitCode === null;
  }

  /** Everything the daemon printed so far, stdout and stderr interleaved (last 256 KiB). */
  get log(): string {
    return this.output;
  }

  private async drain(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      this.output += decoder.decode(chunk, { stream: true });
      if (this.output.length > OUTPUT_LIMIT) this.output = this.output.slice(-OUTPUT_LIMIT);
      this.notify();
    }
  }

  private notify(): void {
    for (const listener of this.outputListeners.splice(0)) listener();
  }

  /** Resolves once the daemon's output matches pattern; rejects if it exits first or on timeout. */
  async waitForOutput(pattern: RegExp, timeoutMs = 10_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const match = this.output.match(pattern);
      if (match) return match;
      if (!this.running) {
        throw new Error(`${this.name} exited ${this.exitCode} before printing ${pattern}:\n${this.output}`);
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new Error(
          `timed out waiting for ${this.name} to print ${pattern}; it printed:\n${this.output}`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.outputListeners.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /**
   * Sends signal, waits up to graceMs for the exit, then SIGKILLs. Returns the exit status as
   * Bun reports it: the exit code, or 128 + the signal number when a signal ended the process
   * (so "exited 0 on SIGINT" and "died of SIGINT" (130) are told apart). Idempotent.
   */
  async stop(signal: NodeJS.Signals = "SIGTERM", graceMs = 3_000): Promise<number> {
    if (this.running) {
      this.process.kill(signal);
      const timer = setTimeout(() => this.process.kill("SIGKILL"), graceMs);
      await this.exited;
      clearTimeout(timer);
    }
    return this.exitCode!;
  }

  /** For the synchronous 'exit' safety net. */
  killNow(): void {
    if (this.running) this.process.kill("SIGKILL");
  }
}
