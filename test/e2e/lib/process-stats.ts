// What a running process costs, read from /proc: the figures the soak prints every minute and the
// fault tests compare before and after a flood. Everything is read from the outside, so it works
// the same for the development path (bun src/main.ts) and a release binary.
import { readdirSync, readFileSync, readlinkSync } from "node:fs";

export interface ProcessStats {
  /** Resident set size (VmRSS), KiB. */
  rssKiB: number;
  /** Of which anonymous memory (RssAnon: the heaps, JavaScript's included), KiB. */
  anonRssKiB: number;
  /** Of which file-backed pages (RssFile: the executable and libraries, paged in as used), KiB. */
  fileRssKiB: number;
  /** Peak resident set size so far (VmHWM), KiB. */
  peakRssKiB: number;
  /** Open file descriptors (entries of /proc/PID/fd). */
  fds: number;
  threads: number;
  /** User + system CPU time of every thread so far, seconds. */
  cpuSeconds: number;
}

const CLOCK_TICKS_PER_SECOND = 100; // USER_HZ: 100 on every Linux architecture softnet runs on

function statusField(status: string, name: string): number {
  const match = status.match(new RegExp(`^${name}:\\s*(\\d+)`, "m"));
  if (match === null) throw new Error(`no ${name} in /proc status`);
  return Number(match[1]);
}

/** The figures of pid now. Throws when the process is gone. */
export function processStats(pid: number): ProcessStats {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after "(comm)": state is field 3, utime field 14, stime field 15 (proc(5)).
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return {
    rssKiB: statusField(status, "VmRSS"),
    anonRssKiB: statusField(status, "RssAnon"),
    fileRssKiB: statusField(status, "RssFile"),
    peakRssKiB: statusField(status, "VmHWM"),
    fds: readdirSync(`/proc/${pid}/fd`).length,
    threads: statusField(status, "Threads"),
    cpuSeconds: (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND,
  };
}

/** Names of what pid's fds point to, counted (socket:[...] → "socket"), to say which kind grew. */
export function fdKinds(pid: number): Map<string, number> {
  const kinds = new Map<string, number>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed meanwhile
    }
    const kind = target.replace(/:\[\d+\]$/, "").replace(/^\/.*/, "file");
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
  }
  return kinds;
}
