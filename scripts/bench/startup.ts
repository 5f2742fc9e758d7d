/**
 * Start-up, in one run on this machine, of what users run against what it is measured by:
 * - `--version`, exec to exit (the cheapest thing softnet does): the release binary, the
 *   development path (`bun src/main.ts`) and Bun's floor (a one-line hello world compiled exactly
 *   as the release: release.ts);
 * - exec to the first forwarded frame (a DHCP DISCOVER seen on the bridge side, frames.ts
 *   firstFrameRun): the release binary, the development path and the C relay.
 * Wall time is what a VM start waits for; CPU time (every thread, user + system) is reported beside
 * it because other work on a shared machine inflates it much less. Subjects take turns run by run
 * (the order rotating), after one discarded warm-up run each, so a drift of the machine's load hits
 * all of them alike; medians are reported, with the load average before and after.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { VM_MAC } from "../../test/support/frames.ts";
import { BRIDGE, type FrameBench, median, REPOSITORY } from "./frames.ts";
import { startupBinaries } from "./release.ts";
import { lastJson, type Resources, runTool } from "./system.ts";

export type StartupSubject = "release" | "development" | "floor" | "C relay";

export const SUBJECT_NAMES: Record<StartupSubject, string> = {
  release: "softnet, release binary",
  development: "softnet, bun src/main.ts",
  floor: "hello world, same runtime and flags (Bun's floor)",
  "C relay": "C relay",
};

export interface StartupSample {
  subject: StartupSubject;
  wallMs: number[];
  cpuMs: number[];
  medianWallMs?: number;
  medianCpuMs?: number;
}

export interface StartupResults {
  release?: { path: string; bytes: number; built: string[] };
  /** 1-minute load average before the first and after the last start-up measurement. */
  loadAverage: { before: number; after?: number };
  runs: { version: number; firstFrame: number };
  version: StartupSample[];
  firstFrame: StartupSample[];
}

const loadAverage = () => Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]);

export class StartupBench {
  readonly results: StartupResults;
  private binaries: { release: string; floor: string } | undefined;

  constructor(
    private readonly resources: Resources,
    private readonly programs: { exectime: string; relay: string },
    runs: { version: number; firstFrame: number },
    private readonly fail: (what: string, error: unknown) => void,
    private readonly say: (line: string) => void,
  ) {
    this.results = { loadAverage: { before: loadAverage() }, runs, version: [], firstFrame: [] };
  }

  /** Builds what is stale; returns the command that starts the release binary (undefined if it cannot be had). */
  async prepare(release?: string): Promise<string[] | undefined> {
    try {
      const binaries = await startupBinaries(this.say, release);
      this.binaries = binaries;
      this.results.release = {
        path: binaries.release,
        bytes: Bun.file(binaries.release).size,
        built: binaries.built,
      };
      return [binaries.release];
    } catch (error) {
      this.fail("building the release binary and Bun's floor", error);
      return undefined;
    }
  }

  private commands(kind: "version" | "first-frame"): Array<[StartupSubject, string[]]> {
    const development = [process.execPath, join(REPOSITORY, "src/main.ts")];
    const run = ["--vm-fd", "0", "--vm-mac-address", VM_MAC, "--bridge", BRIDGE];
    const subjects: Array<[StartupSubject, string[]]> = [];
    if (kind === "version") {
      if (this.binaries) subjects.push(["release", [this.binaries.release, "--version"]]);
      subjects.push(["development", [...development, "--version"]]);
      if (this.binaries) subjects.push(["floor", [this.binaries.floor]]);
    } else {
      if (this.binaries) subjects.push(["release", [this.binaries.release, ...run]]);
      subjects.push(["development", [...development, ...run]]);
      subjects.push(["C relay", [this.programs.relay, "0", "cfirst0", BRIDGE]]);
    }
    return subjects;
  }

  /** `runs` rounds of every subject after a warm-up round; the order rotates each round. */
  private async alternate(
    subjects: Array<[StartupSubject, string[]]>,
    runs: number,
    once: (subject: StartupSubject, command: string[]) => Promise<{ wallMs: number; cpuMs: number }>,
    into: StartupSample[],
    what: string,
  ): Promise<void> {
    const samples = new Map<StartupSubject, StartupSample>();
    for (const [subject] of subjects) {
      const sample: StartupSample = { subject, wallMs: [], cpuMs: [] };
      samples.set(subject, sample);
      into.push(sample);
    }
    const broken = new Set<StartupSubject>();
    for (let round = -1; round < runs; round++) {
      const shift = Math.max(round, 0) % subjects.length;
      for (const [subject, command] of [...subjects.slice(shift), ...subjects.slice(0, shift)]) {
        if (broken.has(subject)) continue;
        try {
          const measured = await once(subject, command);
          if (round < 0) continue; // warm-up: page cache, TinyCC's header directory, ...
          samples.get(subject)!.wallMs.push(measured.wallMs);
          samples.get(subject)!.cpuMs.push(measured.cpuMs);
        } catch (error) {
          broken.add(subject);
          this.fail(`${what}: ${SUBJECT_NAMES[subject]}`, error);
        }
      }
    }
    for (const sample of samples.values()) {
      sample.medianWallMs = median(sample.wallMs);
      sample.medianCpuMs = median(sample.cpuMs.filter((ms) => ms >= 0));
      const text = sample.wallMs.map((ms) => ms.toFixed(0)).join(" ");
      this.say(
        `${what}, ${SUBJECT_NAMES[sample.subject]}: median ${sample.medianWallMs?.toFixed(1)} ms (${text})`,
      );
    }
  }

  /** exec → exit of `--version` (and of the hello world); checks what each printed. */
  async measureVersion(): Promise<void> {
    const output = join(this.resources.workDir, "exectime.out");
    const expected: Record<string, RegExp> = {
      release: /^softnet \d+\.\d+\.\d+\S* \([^)]+\)\n$/,
      development: /^softnet \d+\.\d+\.\d+\S* \(dev\)\n$/,
      floor: /^hello\n$/,
    };
    await this.alternate(
      this.commands("version"),
      this.results.runs.version,
      async (subject, command) => {
        const run = await runTool(this.resources, [this.programs.exectime, output, "--", ...command], {
          cwd: REPOSITORY,
        });
        const parsed = lastJson<{ wallMs: number; cpuMs: number; exitStatus: number }>(run.stdout);
        const printed = readFileSync(output, "utf8");
        if (
          run.code !== 0 ||
          parsed === undefined ||
          parsed.exitStatus !== 0 ||
          !expected[subject]!.test(printed)
        ) {
          throw new Error(
            `exit ${parsed?.exitStatus ?? run.code}, printed ${JSON.stringify(printed)} ${run.stderr.trim()}`,
          );
        }
        return parsed;
      },
      this.results.version,
      "--version",
    );
  }

  /** exec → first forwarded frame, in the frame benchmark's namespace (its bridge, nothing else on it). */
  async measureFirstFrame(frames: FrameBench): Promise<void> {
    await this.alternate(
      this.commands("first-frame"),
      this.results.runs.firstFrame,
      async (_subject, command) => {
        const run = await frames.firstFrameRun(command);
        return { wallMs: run.firstFrameMs, cpuMs: run.cpuMs };
      },
      this.results.firstFrame,
      "first frame",
    );
    this.results.loadAverage.after = loadAverage();
  }
}
