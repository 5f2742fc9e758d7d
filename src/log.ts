/**
 * Logging to stderr, one line per event: `softnet[pid] LEVEL message`. Nothing here runs per frame
 * unless a line will actually be written: drop logs go through DropLog, a token bucket per reason.
 */
import type { LogLevel } from "./cli.ts";
import { writeStderr } from "./stdio.ts";

const LEVEL_RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

export class Logger {
  private rank: number;

  constructor(
    level: LogLevel = "info",
    private readonly write: (line: string) => void = writeStderr,
  ) {
    this.rank = LEVEL_RANK[level];
  }

  setLevel(level: LogLevel): void {
    this.rank = LEVEL_RANK[level];
  }

  enabled(level: LogLevel): boolean {
    return LEVEL_RANK[level] <= this.rank;
  }

  error(message: string): void {
    this.emit("error", message);
  }
  warn(message: string): void {
    this.emit("warn", message);
  }
  info(message: string): void {
    this.emit("info", message);
  }
  debug(message: string): void {
    this.emit("debug", message);
  }

  private emit(level: LogLevel, message: string): void {
    if (LEVEL_RANK[level] > this.rank) return;
    this.write(`softnet[${process.pid}] ${level}: ${message}\n`);
  }
}

/**
 * Rate limit for per-frame events: each key (a drop reason) may log `burst` lines, refilled at
 * `perSecond`; what is suppressed is counted and reported with the next line that gets through.
 * take() allocates nothing, so it can be asked on every dropped frame.
 */
export class RateLimiter {
  private readonly tokens: Float64Array;
  private readonly refilledAtMs: Float64Array;
  private readonly suppressed: Float64Array;

  constructor(
    keys: number,
    private readonly burst = 5,
    private readonly perSecond = 1,
  ) {
    this.tokens = new Float64Array(keys).fill(burst);
    this.refilledAtMs = new Float64Array(keys);
    this.suppressed = new Float64Array(keys);
  }

  /** Returns -1 when the event must not be logged, else how many were suppressed since the last one. */
  take(key: number, nowMs: number): number {
    const elapsed = nowMs - this.refilledAtMs[key];
    if (elapsed > 0) {
      this.tokens[key] = Math.min(this.burst, this.tokens[key] + (elapsed / 1000) * this.perSecond);
      this.refilledAtMs[key] = nowMs;
    }
    if (this.tokens[key] < 1) {
      this.suppressed[key]++;
      return -1;
    }
    this.tokens[key] -= 1;
    const suppressed = this.suppressed[key];
    this.suppressed[key] = 0;
    return suppressed;
  }
}
