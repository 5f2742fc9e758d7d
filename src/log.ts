/**
 * Logging to stderr, one line per event.
 *
 * - text (the default): `softnet[pid] LEVEL: message`, for people;
 * - json (--log-format json): one JSON object per line, for a fleet's log shipper:
 *   `{"time":"2026-01-02T03:04:05.678Z","level":"info","pid":42,"event":"lease-learned",
 *   "message":"lease learned: ...", "lease":{...}}`. `time`, `level`, `pid`, `event` and `message`
 *   are always there; the call site adds its own fields (snake_case), which never replace those.
 *
 * Call sites pass the message, an event name, and fields: `logger.info(text, "lease-learned",
 * { lease })`. Fields are only read in JSON mode. Nothing here runs per frame unless a line will
 * actually be written: drop logs go through RateLimiter, a token bucket per reason.
 */
import type { LogFormat, LogLevel } from "./cli.ts";
import { escapeControlCharacters, jsonWithoutControlCharacters } from "./printable.ts";
import { writeStderr } from "./stdio.ts";

const LEVEL_RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

/** Names of the events softnet logs; "log" is for lines that have no event of their own. */
export type LogEvent =
  | "log"
  | "startup"
  | "lease-learned"
  | "lease-renewed"
  | "lease-refused"
  | "lease-expired"
  | "lease-released"
  | "lease-release-failed"
  | "drop"
  | "drop-summary"
  | "gateway-mac"
  | "name-learned"
  | "name-not-global"
  | "name-cap"
  | "names-cap"
  | "forwards-installed"
  | "forwards-removed"
  | "forwards-failed"
  | "forwards-lost"
  | "signal"
  | "stop"
  | "counters"
  | "capture-limit"
  | "capture-failed"
  | "cleanup-failed"
  | "fatal";

export type LogFields = Record<string, unknown>;

export interface LoggerOptions {
  format?: LogFormat;
  /** Wall-clock time for JSON lines; tests pass a fixed one. */
  now?: () => Date;
}

export class Logger {
  private rank: number;
  private readonly format: LogFormat;
  private readonly now: () => Date;

  constructor(
    level: LogLevel = "info",
    private readonly write: (line: string) => void = writeStderr,
    options: LoggerOptions = {},
  ) {
    this.rank = LEVEL_RANK[level];
    this.format = options.format ?? "text";
    this.now = options.now ?? (() => new Date());
  }

  setLevel(level: LogLevel): void {
    this.rank = LEVEL_RANK[level];
  }

  enabled(level: LogLevel): boolean {
    return LEVEL_RANK[level] <= this.rank;
  }

  error(message: string, event: LogEvent = "log", fields?: LogFields): void {
    this.emit("error", message, event, fields);
  }
  warn(message: string, event: LogEvent = "log", fields?: LogFields): void {
    this.emit("warn", message, event, fields);
  }
  info(message: string, event: LogEvent = "log", fields?: LogFields): void {
    this.emit("info", message, event, fields);
  }
  debug(message: string, event: LogEvent = "log", fields?: LogFields): void {
    this.emit("debug", message, event, fields);
  }

  /**
   * A report of several lines (the counters): in text, one log line each, so that every line
   * keeps the `softnet[pid] level:` prefix that grep and journald expect; in JSON, one object with
   * the lines joined as its message. `force` writes it whatever --log-level says (a person asked
   * for it with a signal).
   */
  report(level: LogLevel, lines: readonly string[], event: LogEvent, fields: LogFields, force = false): void {
    if (!force && LEVEL_RANK[level] > this.rank) return;
    if (this.format === "json") {
      this.write(this.jsonLine(level, lines.join("\n"), event, fields));
      return;
    }
    this.write(lines.map((line) => this.textLine(level, line)).join(""));
  }

  private emit(level: LogLevel, message: string, event: LogEvent, fields: LogFields | undefined): void {
    if (LEVEL_RANK[level] > this.rank) return;
    this.write(
      this.format === "json" ? this.jsonLine(level, message, event, fields) : this.textLine(level, message),
    );
  }

  /** Control characters in the message are escaped (printable.ts): one event, one line. */
  private textLine(level: LogLevel, message: string): string {
    return `softnet[${process.pid}] ${level}: ${escapeControlCharacters(message)}\n`;
  }

  private jsonLine(level: LogLevel, message: string, event: LogEvent, fields: LogFields | undefined): string {
    const record: LogFields = { time: this.now().toISOString(), level, pid: process.pid, event, message };
    if (fields !== undefined) {
      for (const [key, value] of Object.entries(fields)) {
        if (!(key in record) && value !== undefined) record[key] = value;
      }
    }
    return `${jsonWithoutControlCharacters(JSON.stringify(record))}\n`;
  }
}

/**
 * main()'s last words when softnet fails after the command line was read: `softnet: what failed:
 * why` for people, or with --log-format json one more JSON line (event "fatal"), so that a log
 * shipper never meets a line it cannot parse.
 */
export function fatalLine(format: LogFormat, line: string, now: Date = new Date()): string {
  if (format !== "json") return `softnet: ${escapeControlCharacters(line)}\n`;
  const record = { time: now.toISOString(), level: "error", pid: process.pid, event: "fatal", message: line };
  return `${jsonWithoutControlCharacters(JSON.stringify(record))}\n`;
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
