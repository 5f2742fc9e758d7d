/**
 * softnet's data-path benchmark (Linux, root). In one run on this machine it builds its C programs
 * with the system cc, sets up a private network namespace with a bridge, and prints:
 * - frames/s and Gbit/s at 64 and 1500 bytes, VM→host and host→VM, through softnet (full filtering,
 *   valid lease, global destination) and through a C reference relay on the same socketpair → TAP
 *   path, the ratios softnet / C, and the generators' own ceilings;
 * - the same cells through softnet --capture (every frame into a pcapng file on tmpfs) and the
 *   ratios softnet --capture / softnet: what capturing costs;
 * - softnet's idle CPU and peak RSS;
 * - start-up (scripts/bench/startup.ts): `--version` and exec → first forwarded frame of the release
 *   binary (built into node_modules/.cache/softnet-bench when stale), of the development path
 *   (`bun src/main.ts`), of Bun's floor (a hello world compiled as the release) and of the C relay;
 * - TCP throughput of a real guest (iperf3) through softnet, through a transparent socat relay and
 *   over a plain veth.
 * It prints figures and goals; it never judges performance in its exit status: 0 when every
 * measurement was made, 1 when one could not be, 2 on bad usage.
 *
 *   sudo bun run bench [--quick] [--json PATH] [--skip-tcp] [--skip-capture] [--pin] [--release PATH]
 *
 * The throughput cells run the release binary, as users do.
 */

import { readFileSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus, release } from "node:os";
import { DIRECTIONS, type Direction, FrameBench } from "./bench/frames.ts";
import { GuestTcpBench } from "./bench/guest-tcp.ts";
import { header, judge, type Machine, type Report, render } from "./bench/report.ts";
import { StartupBench } from "./bench/startup.ts";
import { compilePrograms, Resources } from "./bench/system.ts";

const USAGE = `usage: bun scripts/bench.ts [--quick] [--json PATH] [--skip-tcp] [--skip-capture] [--pin] [--release PATH]
       [--direction vm-to-host|host-to-vm] [--repetitions N] [--skip-names]
  --quick      smoke run: one 1 s run per cell, 1 s idle, 1 s iperf3 (proves the benchmark still runs)
  --json PATH  also write the results as JSON to PATH
  --skip-tcp   leave out the iperf3 section (which needs the e2e tools: scripts/e2e-deps.sh)
  --skip-capture  leave out the softnet --capture runs (the cost of capturing every frame)
  --pin        generator on CPU 0, forwarder on CPU 1 (taskset); by default the scheduler places them
  --release PATH  measure this softnet binary instead of building the release one
  --direction D   measure only this direction's cells (to study one direction; the other's ratios are left out)
  --repetitions N  runs per cell and forwarder (default 9, --quick 1)
  --skip-names  leave out softnet with 1000 learned names (the cost of --allow <name>)`;

interface Options {
  quick: boolean;
  json?: string;
  skipTcp: boolean;
  skipCapture: boolean;
  pin: boolean;
  release?: string;
  directions: Direction[];
  repetitions?: number;
  skipNames: boolean;
}

function usageError(message: string): never {
  console.error(`bench: ${message}\n${USAGE}`);
  process.exit(2);
}

function parseArgs(argv: string[]): Options {
  const options: Options = {
    quick: false,
    skipTcp: false,
    skipCapture: false,
    pin: false,
    directions: DIRECTIONS,
    skipNames: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--quick") options.quick = true;
    else if (arg === "--skip-tcp") options.skipTcp = true;
    else if (arg === "--skip-capture") options.skipCapture = true;
    else if (arg === "--pin") options.pin = true;
    else if (arg === "--json" && argv[i + 1] !== undefined) options.json = argv[++i];
    else if (arg.startsWith("--json=")) options.json = arg.slice("--json=".length);
    else if (arg === "--release" && argv[i + 1] !== undefined) options.release = argv[++i];
    else if (arg === "--skip-names") options.skipNames = true;
    else if (arg === "--direction") {
      const direction = argv[++i];
      if (!DIRECTIONS.includes(direction as Direction))
        usageError(`--direction takes ${DIRECTIONS.join(" or ")}`);
      options.directions = [direction as Direction];
    } else if (arg === "--repetitions") {
      const count = argv[++i] ?? "";
      if (!/^[1-9]\d?$/.test(count)) usageError("--repetitions takes a whole number from 1 to 99");
      options.repetitions = Number(count);
    } else if (arg === "--help" || arg === "-h") {
      console.log(USAGE);
      process.exit(0);
    } else {
      console.error(`bench: unknown argument ${arg}\n${USAGE}`);
      process.exit(2);
    }
  }
  return options;
}

const options = parseArgs(process.argv.slice(2));
const pin = options.pin;
const capture = !options.skipCapture;
if (process.platform !== "linux" || process.getuid?.() !== 0) {
  console.error("bench: run as root on Linux (it creates network namespaces, a bridge and TAP devices)");
  process.exit(1);
}

// Full run: many short runs per cell rather than one long one, C relay and softnet alternating: this
// 2-core VM's throughput drifts by ±30 % over seconds, and the median of interleaved runs is what
// stays comparable between the two forwarders.
const config: Report["config"] = options.quick
  ? {
      quick: true,
      warmupSeconds: 0.2,
      cellSeconds: 1,
      repetitions: options.repetitions ?? 1,
      idleSeconds: 1,
      iperfSeconds: 1,
      pin,
      capture,
      directions: options.directions,
      names: !options.skipNames,
    }
  : {
      quick: false,
      warmupSeconds: 0.3,
      cellSeconds: 1,
      repetitions: options.repetitions ?? 9,
      idleSeconds: 3,
      iperfSeconds: 5,
      pin,
      capture,
      directions: options.directions,
      names: !options.skipNames,
    };
const errors: string[] = [];
const fail = (what: string, error: unknown) => {
  const message = error instanceof Error ? error.message : String(error);
  errors.push(`${what}: ${message}`);
  console.error(`  ! ${what}: ${message.split("\n")[0]}`);
};
const say = (line: string) => console.error(`  … ${line}`);
const started = performance.now();
const loadAverageAtStart = Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]);

const resources = new Resources();
let compiler = "cc ?";
let report: Report | undefined;
try {
  const programs = compilePrograms(resources.workDir);
  compiler = programs.compiler;
  const machine: Machine = {
    nproc: availableParallelism(),
    cpuModel: cpus()[0]?.model ?? "unknown CPU",
    kernel: release(),
    bun: Bun.version,
    compiler,
    date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    loadAverageAtStart,
  };
  for (const line of header(machine, config)) console.log(line);
  console.error("progress (stderr):");

  const startup = new StartupBench(
    resources,
    programs,
    options.quick ? { version: 10, firstFrame: 5 } : { version: 30, firstFrame: 15 },
    fail,
    say,
  );
  const releaseCommand = await startup.prepare(options.release);
  await startup.measureVersion();
  // The throughput cells run what users run; the development path if the release cannot be had.
  const frames = new FrameBench(
    resources,
    programs,
    releaseCommand ?? [process.execPath, "src/main.ts"],
    config,
    fail,
    say,
  );
  try {
    frames.setUp();
    await frames.measureGeneratorCeilings();
    await frames.measureForwarders();
    await startup.measureFirstFrame(frames);
  } catch (error) {
    fail("frame benchmark", error);
  } finally {
    resources.removeNamespace(frames.namespace);
  }

  const tcp = new GuestTcpBench(resources, config.iperfSeconds, fail, say);
  if (!options.skipTcp) await tcp.run();

  const { ratios, goals } = judge(frames.results, startup.results);
  report = {
    machine,
    config,
    frames: frames.results,
    startup: startup.results,
    ratios,
    goals,
    tcp: tcp.results,
    errors,
  };
  for (const line of render(report)) console.log(line);
  console.log(`\n(whole run: ${((performance.now() - started) / 1000).toFixed(0)} s)`);
} catch (error) {
  fail("benchmark", error);
  for (const line of errors) console.error(line);
} finally {
  resources.cleanup();
}

if (options.json !== undefined) {
  writeFileSync(options.json, `${JSON.stringify(report ?? { errors }, null, 2)}\n`);
  console.log(`results written to ${options.json}`);
}
process.exit(errors.length > 0 ? 1 : 0);
