/**
 * The printed table and the JSON document. Goals are shown beside the figures with whether they are
 * met; nothing here decides the exit status (only a measurement that could not be made does).
 */
import { type Cell, type Direction, type FrameResults, median } from "./frames.ts";
import type { TcpResult } from "./guest-tcp.ts";
import { type StartupResults, type StartupSample, type StartupSubject, SUBJECT_NAMES } from "./startup.ts";

export interface Machine {
  nproc: number;
  cpuModel: string;
  kernel: string;
  bun: string;
  compiler: string;
  date: string;
  /** 1-minute load average when the benchmark started: other work on the machine makes figures noisy. */
  loadAverageAtStart: number;
}

export interface Goal {
  figure: string;
  value: number | undefined;
  unit: string;
  goal: string;
  met: boolean | undefined;
  note?: string;
}

export interface Report {
  machine: Machine;
  config: {
    quick: boolean;
    warmupSeconds: number;
    cellSeconds: number;
    repetitions: number;
    idleSeconds: number;
    iperfSeconds: number;
    pin: boolean;
    /** softnet --capture was measured too. */
    capture: boolean;
    /** The directions measured (both unless --direction). */
    directions: Direction[];
    /** softnet with 1000 learned names was measured too. */
    names: boolean;
  };
  frames: FrameResults;
  startup: StartupResults;
  ratios: Array<{
    direction: Direction;
    size: number;
    metric: "frames/s" | "Gbit/s";
    /** Median over median. */
    ratio: number | undefined;
    /** Best run over best run. */
    bestRatio: number | undefined;
    /**
     * Median of the runs' own ratios: repetition i of softnet over repetition i of the C relay, run
     * back to back. The machine's throughput drifts over seconds; a pair shares the drift.
     */
    pairedRatio: number | undefined;
  }>;
  goals: Goal[];
  tcp: TcpResult[];
  errors: string[];
}

const ARROW: Record<Direction, string> = { "vm-to-host": "VM→host", "host-to-vm": "host→VM" };
const MB = 1e6;

const integer = (value: number) => Math.round(value).toLocaleString("en-US");
const percent = (value: number | undefined, digits = 1) =>
  value === undefined || !Number.isFinite(value) ? "n/a" : `${(value * 100).toFixed(digits)} %`;
const verdict = (met: boolean | undefined) => (met === undefined ? "not measured" : met ? "met" : "NOT met");

function findCell(
  frames: FrameResults,
  forwarder: string,
  direction: Direction,
  size: number,
): Cell | undefined {
  return frames.cells.find(
    (cell) => cell.forwarder === forwarder && cell.direction === direction && cell.size === size,
  );
}

function startupMedian(samples: StartupSample[], subject: StartupSubject): number | undefined {
  return samples.find((sample) => sample.subject === subject)?.medianWallMs;
}

/** Ratios softnet / C relay and the goals of issues 3 and 11, from the measured figures. */
export function judge(
  frames: FrameResults,
  startup: StartupResults,
): { ratios: Report["ratios"]; goals: Goal[] } {
  const ratios: Report["ratios"] = [];
  const goals: Goal[] = [];
  for (const size of [64, 1500]) {
    for (const direction of ["vm-to-host", "host-to-vm"] as Direction[]) {
      const softnet = findCell(frames, "softnet", direction, size);
      const relay = findCell(frames, "C relay", direction, size);
      const metric = size === 64 ? "frames/s" : "Gbit/s";
      const ratio =
        softnet && relay && relay.framesPerSecond > 0
          ? softnet.framesPerSecond / relay.framesPerSecond
          : undefined;
      const bestRatio =
        softnet && relay && relay.framesPerSecond > 0
          ? Math.max(...softnet.repetitions) / Math.max(...relay.repetitions)
          : undefined;
      const pairs =
        softnet && relay
          ? softnet.repetitions
              .slice(0, relay.repetitions.length)
              .map((rate, i) => rate / relay.repetitions[i]!)
              .filter((pair) => Number.isFinite(pair))
          : [];
      const pairedRatio = median(pairs);
      ratios.push({ direction, size, metric, ratio, bestRatio, pairedRatio });
      const threshold = size === 64 ? 0.8 : 0.95;
      goals.push({
        figure: `${ARROW[direction]} ${size} B ${metric}, softnet / C relay`,
        value: ratio === undefined ? undefined : ratio * 100,
        unit: "%",
        goal: `≥ ${threshold * 100} %`,
        met: ratio === undefined ? undefined : ratio >= threshold,
        note:
          bestRatio === undefined
            ? undefined
            : `best run / best run: ${percent(bestRatio)}` +
              (pairedRatio === undefined || pairs.length < 2
                ? ""
                : `; run by run: median ${percent(pairedRatio)} (${percent(Math.min(...pairs))}–${percent(Math.max(...pairs))})`),
      });
    }
  }
  const process = frames.process.softnet;
  goals.push({
    figure: "softnet peak RSS (VmHWM after the throughput runs)",
    value: process?.peakRssBytes === undefined ? undefined : process.peakRssBytes / MB,
    unit: "MB",
    goal: "≤ 60 MB",
    met: process?.peakRssBytes === undefined ? undefined : process.peakRssBytes <= 60 * MB,
  });
  for (const [figure, value, limit] of [
    ["release binary --version, exec → exit (median)", startupMedian(startup.version, "release"), 40],
    [
      "release binary, exec → first forwarded frame (median)",
      startupMedian(startup.firstFrame, "release"),
      60,
    ],
    [
      "bun src/main.ts, exec → first forwarded frame (median)",
      startupMedian(startup.firstFrame, "development"),
      150,
    ],
  ] as const) {
    goals.push({
      figure,
      value,
      unit: "ms",
      goal: `≤ ${limit} ms`,
      met: value === undefined ? undefined : value <= limit,
    });
  }
  goals.push({
    figure: "softnet idle CPU (no traffic)",
    value: process?.idleCpu === undefined ? undefined : process.idleCpu * 100,
    unit: "%",
    goal: "≈ 0 % (< 1 %)",
    met: process?.idleCpu === undefined ? undefined : process.idleCpu < 0.01,
  });
  return { ratios, goals };
}

function table(rows: string[][], alignRight: boolean[]): string[] {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => (row[column] ?? "").length)));
  return rows.map((row) =>
    row
      .map((text, column) =>
        alignRight[column] ? text.padStart(widths[column]!) : text.padEnd(widths[column]!),
      )
      .join("  ")
      .trimEnd(),
  );
}

export function header(machine: Machine, config: Report["config"]): string[] {
  const runs =
    config.repetitions > 1
      ? `${config.repetitions} runs of ${config.cellSeconds} s per cell and forwarder (C relay and softnet alternating, median shown)`
      : `1 run of ${config.cellSeconds} s per cell and forwarder`;
  return [
    `softnet benchmark, ${machine.date}${config.quick ? " (QUICK smoke run: figures are rough)" : ""}`,
    `machine: nproc ${machine.nproc}, ${machine.cpuModel}, kernel ${machine.kernel}, Bun ${machine.bun}, ${machine.compiler}`,
    `load average at start: ${machine.loadAverageAtStart.toFixed(2)}` +
      (machine.loadAverageAtStart > 0.5 ? " (other work is running here: expect noisy figures)" : ""),
    `method: ${runs}, each after ${config.warmupSeconds} s warm-up; idle CPU over ${config.idleSeconds} s; ` +
      `iperf3 ${config.iperfSeconds} s each way`,
    config.pin
      ? "note: --pin: generator/sink on CPU 0, forwarder (all its threads) on CPU 1; figures are for this machine only."
      : `note: the C generator/sink and the forwarder share the same ${machine.nproc} cores (nothing is pinned); ` +
        "figures are for this machine only.",
  ];
}

/** softnet --capture against softnet without it: the price of writing every frame to a file. */
function renderCaptureCost(report: Report): string[] {
  const { frames } = report;
  const lines = [
    "",
    "The cost of --capture (every frame, both directions, into a pcapng file on tmpfs; the file is emptied between runs)",
  ];
  const rows: string[][] = [
    ["cell", "softnet frames/s", "with --capture", "--capture / softnet", "CPU without → with"],
  ];
  for (const direction of ["vm-to-host", "host-to-vm"] as Direction[]) {
    for (const size of [64, 1500]) {
      const plain = findCell(frames, "softnet", direction, size);
      const capturing = findCell(frames, "softnet --capture", direction, size);
      rows.push([
        `${ARROW[direction]} ${size} B`,
        plain ? integer(plain.framesPerSecond) : "not measured",
        capturing ? integer(capturing.framesPerSecond) : "not measured",
        plain && capturing && plain.framesPerSecond > 0
          ? percent(capturing.framesPerSecond / plain.framesPerSecond)
          : "n/a",
        plain && capturing ? `${percent(plain.forwarderCpu, 0)} → ${percent(capturing.forwarderCpu, 0)}` : "",
      ]);
    }
  }
  lines.push(...table(rows, [false, true, true, true, true]).map((line) => `  ${line}`));
  const figures = frames.process["softnet --capture"];
  if (figures?.captureState !== undefined) {
    lines.push(`  softnet --capture's counters at exit: ${figures.captureState}`);
  }
  lines.push("  (figures, not judgements: timings are never asserted; the ratio is of the median runs)");
  return lines;
}

/** softnet matching 1000 learned addresses against softnet without names: the price of --allow <name>. */
function renderNamesCost(report: Report): string[] {
  const { frames } = report;
  const lines = [
    "",
    "The cost of names in --allow (--block 0.0.0.0/0 --allow *.bench.test, 1000 addresses learned from DNS answers; every frame passes on one)",
  ];
  const rows: string[][] = [
    ["cell", "softnet frames/s", "with 1000 names", "names / softnet", "CPU without → with"],
  ];
  for (const direction of ["vm-to-host", "host-to-vm"] as Direction[]) {
    for (const size of [64, 1500]) {
      const plain = findCell(frames, "softnet", direction, size);
      const named = findCell(frames, "softnet, 1000 names learned", direction, size);
      rows.push([
        `${ARROW[direction]} ${size} B`,
        plain ? integer(plain.framesPerSecond) : "not measured",
        named ? integer(named.framesPerSecond) : "not measured",
        plain && named && plain.framesPerSecond > 0
          ? percent(named.framesPerSecond / plain.framesPerSecond)
          : "n/a",
        plain && named ? `${percent(plain.forwarderCpu, 0)} → ${percent(named.forwarderCpu, 0)}` : "",
      ]);
    }
  }
  lines.push(...table(rows, [false, true, true, true, true]).map((line) => `  ${line}`));
  lines.push("  (figures, not judgements: timings are never asserted; the ratio is of the median runs)");
  return lines;
}

export function render(report: Report): string[] {
  const { frames } = report;
  const lines: string[] = [];
  lines.push(
    "",
    "Frame throughput at saturation (sizes include the 14-byte Ethernet header, no FCS; Gbit/s = frames/s × size × 8)",
    "  VM→host: sendmmsg of valid frames (VM MAC/IP, UDP to 8.8.8.8) into the VM end; delivered = TAP rx_packets.",
    "  host→VM: write() of frames to the VM MAC into a TAP port on br0; delivered = datagrams at the VM end (recvmmsg).",
    "  generator alone: the same generator against a null forwarder (discard on the socketpair / a TAP reader).",
  );
  const rows: string[][] = [
    [
      "direction",
      "size",
      "forwarder",
      "frames/s",
      "runs (min–max)",
      "Gbit/s",
      "offered/s",
      "loss",
      "fwd CPU (sys)",
      "gen CPU",
      "others",
      "limit",
    ],
  ];
  const kilo = (value: number) => `${Math.round(value / 1000)}k`;
  for (const direction of ["vm-to-host", "host-to-vm"] as Direction[]) {
    for (const size of [64, 1500]) {
      for (const forwarder of [
        "C relay",
        "softnet",
        "softnet --capture",
        "softnet, 1000 names learned",
        "null forwarder",
      ]) {
        if (forwarder === "softnet --capture" && !report.config.capture) continue;
        const cell = findCell(frames, forwarder, direction, size);
        const name = forwarder === "null forwarder" ? "(generator alone)" : forwarder;
        if (!cell) {
          rows.push([ARROW[direction], `${size} B`, name, "not measured", "", "", "", "", "", "", "", ""]);
          continue;
        }
        const nullForwarder = forwarder === "null forwarder";
        const limit = nullForwarder
          ? "generator"
          : cell.forwarderCpu >= 0.85
            ? "forwarder CPU"
            : (cell.lossAtTapQueue ?? 0) > 0.005
              ? "wake-ups"
              : cell.loss > 0.005
                ? "VM-end sink"
                : "generator";
        const range =
          cell.repetitions.length > 1
            ? `${kilo(Math.min(...cell.repetitions))}–${kilo(Math.max(...cell.repetitions))}`
            : "";
        const loss = nullForwarder
          ? "-"
          : `${percent(cell.loss, 2)}${cell.lossAtTapQueue !== undefined && cell.loss > 0.0001 ? ` (${percent(cell.lossAtTapQueue, 2)} at TAP queue)` : ""}`;
        rows.push([
          ARROW[direction],
          `${size} B`,
          name,
          integer(cell.framesPerSecond),
          range,
          cell.gbitPerSecond.toFixed(2),
          integer(cell.offeredPerSecond),
          loss,
          `${percent(cell.forwarderCpu, 0)} (${percent(cell.forwarderSysCpu, 0)})`,
          percent(cell.generatorCpu, 0),
          percent(cell.otherCpu, 0),
          limit,
        ]);
      }
    }
  }
  lines.push(
    ...table(rows, [false, true, false, true, true, true, true, true, true, true, true, false]).map(
      (line) => `  ${line}`,
    ),
  );
  lines.push(
    "  CPU: 100 % = one core, all threads; (sys) = the kernel's part, in the forwarder's system calls; others = the",
    "  rest of the machine's busy CPU in the window (other processes, ksoftirqd): noise when > a few %. offered/s, loss",
    "  and CPU are those of the median run. VM→host has back-pressure (a full socketpair blocks the generator): no",
    "  loss there, offered = delivered. limit (a reading of the median run, not a proof): 'forwarder CPU' = it used",
    "  ≥ 85 % of a core; 'wake-ups' = its TAP queue (1000 frames) overflowed while it had CPU to spare, i.e. it was",
    "  asleep or not scheduled (on this 2-vCPU VM, cross-CPU wake-ups are slow and generator and forwarder often end",
    "  up sharing one CPU); 'VM-end sink' = frames dropped at the VM end; 'generator' = none of these.",
  );

  lines.push("", "softnet / C relay, against the performance goals");
  const goalRows: string[][] = [["figure", "value", "goal", "", ""]];
  for (const goal of report.goals) {
    const value = goal.value === undefined ? "not measured" : `${goal.value.toFixed(1)} ${goal.unit}`;
    goalRows.push([goal.figure, value, goal.goal, verdict(goal.met), goal.note ?? ""]);
  }
  lines.push(...table(goalRows, [false, true, false, false, false]).map((line) => `  ${line}`));
  lines.push(
    "  (the ratio of the medians decides 'met'; the best-run ratio and the run-by-run ratios (each softnet run over the relay run next to it) show how much of a gap may be noise)",
  );
  const other = report.ratios.filter((ratio) => ratio.ratio !== undefined);
  if (other.length > 0) {
    const mixed = [64, 1500].map((size) => {
      const parts = (["vm-to-host", "host-to-vm"] as Direction[]).map((direction) => {
        const softnet = findCell(frames, "softnet", direction, size);
        const relay = findCell(frames, "C relay", direction, size);
        return `${ARROW[direction]} ${softnet && relay ? percent(softnet.gbitPerSecond / relay.gbitPerSecond) : "n/a"}`;
      });
      return `${size} B: ${parts.join(", ")}`;
    });
    lines.push(`  (frames/s and Gbit/s ratios are the same figure at a fixed size: ${mixed.join("; ")})`);
  }

  if (report.config.capture) lines.push(...renderCaptureCost(report));
  lines.push(...renderNamesCost(report));

  lines.push("", "softnet process");
  const softnet = frames.process.softnet;
  if (softnet) {
    if (softnet.peakRssBytes !== undefined && softnet.rssBytes !== undefined) {
      lines.push(
        `  memory: VmHWM ${(softnet.peakRssBytes / MB).toFixed(1)} MB (${(softnet.peakRssBytes / 2 ** 20).toFixed(1)} MiB), ` +
          `VmRSS now ${(softnet.rssBytes / MB).toFixed(1)} MB`,
      );
    }
    if (softnet.idleCpu !== undefined) {
      lines.push(
        `  idle: ${percent(softnet.idleCpu, 2)} CPU over ${softnet.idleSeconds?.toFixed(1)} s with no traffic ` +
          `(/proc/PID/stat, 10 ms ticks; threads' schedstat run time: ${percent(softnet.idleCpuPrecise, 3)})`,
      );
    }
    lines.push(
      `  ran as uid ${softnet.uidAfterStart ?? "?"} after set-up; SIGINT → exit status ${softnet.exitStatusOnSigint ?? "?"}`,
    );
    if (softnet.lastLogLine) lines.push(`  its last words: ${softnet.lastLogLine.trim()}`);
  } else {
    lines.push("  not measured (softnet did not run)");
  }
  lines.push(...renderStartup(report.startup));

  lines.push(
    "",
    "Real guest TCP throughput (iperf3, server on the gateway 192.168.64.1 in the host namespace)",
    "  Both relayed rows also pay the guest's own socat (its eth0 TAP ⇄ socketpair, as Tart's VM end): the",
    "  'no softnet' baseline is socat + socat, not the kernel alone; the veth row is the kernel alone.",
    "  In parentheses: CPU of the relaying processes during the run (100 % = one core).",
  );
  const tcpRows: string[][] = [["path", "guest→host", "host→guest"]];
  const gbit = (value: number | undefined, retransmits: number | undefined, cpu?: Record<string, number>) => {
    if (value === undefined) return "not measured";
    const notes = Object.entries(cpu ?? {}).map(([role, share]) => `${role} ${percent(share, 0)}`);
    if (retransmits) notes.push(`${retransmits} retr`);
    return `${value.toFixed(2)} Gbit/s${notes.length > 0 ? ` (${notes.join(", ")})` : ""}`;
  };
  for (const result of report.tcp) {
    tcpRows.push([
      result.description,
      gbit(result.guestToHostGbit, result.guestToHostRetransmits, result.guestToHostCpu),
      gbit(result.hostToGuestGbit, result.hostToGuestRetransmits, result.hostToGuestCpu),
    ]);
  }
  const relay = report.tcp.find((result) => result.path === "socat relay");
  const viaSoftnet = report.tcp.find((result) => result.path === "softnet");
  if (relay && viaSoftnet) {
    const ratio = (a: number | undefined, b: number | undefined) =>
      a === undefined || b === undefined || b === 0 ? "n/a" : percent(a / b);
    tcpRows.push([
      "softnet / socat relay",
      ratio(viaSoftnet.guestToHostGbit, relay.guestToHostGbit),
      ratio(viaSoftnet.hostToGuestGbit, relay.hostToGuestGbit),
    ]);
  }
  if (report.tcp.length === 0) tcpRows.push(["not measured", "", ""]);
  lines.push(...table(tcpRows, [false, true, true]).map((line) => `  ${line}`));

  if (report.errors.length > 0) {
    lines.push("", `Measurements that could not be made (${report.errors.length}):`);
    for (const error of report.errors) lines.push(`  - ${error.split("\n").slice(0, 6).join("\n    ")}`);
  }
  return lines;
}

const ms = (value: number | undefined) => (value === undefined ? "not measured" : `${value.toFixed(1)} ms`);
const times = (a: number | undefined, b: number | undefined) =>
  a === undefined || b === undefined || b === 0 ? "n/a" : `${(a / b).toFixed(1)}×`;

/** The start-up table: medians, ratios to Bun's floor and to the C relay, the load they ran under. */
export function renderStartup(startup: StartupResults): string[] {
  const lines = [
    "",
    "Start-up (subjects take turns run by run, after a warm-up run each; medians; CPU = all threads, user + system)",
    `  load average (1 min): ${startup.loadAverage.before.toFixed(2)} before, ${startup.loadAverage.after?.toFixed(2) ?? "?"} after` +
      " (a busy machine inflates wall times; CPU much less)",
  ];
  if (startup.release) {
    const built =
      startup.release.built.length > 0 ? `; built in this run: ${startup.release.built.join(", ")}` : "";
    lines.push(
      `  release binary: ${startup.release.path} (${(startup.release.bytes / 2 ** 20).toFixed(1)} MiB${built})`,
    );
  }
  const floor = startupMedian(startup.version, "floor");
  const relay = startupMedian(startup.firstFrame, "C relay");
  const rows: string[][] = [["", "wall", "CPU", "runs (min–max)", "ratio"]];
  const row = (sample: StartupSample, ratio: string) => {
    const range =
      sample.wallMs.length > 0
        ? `${Math.min(...sample.wallMs).toFixed(0)}–${Math.max(...sample.wallMs).toFixed(0)} ms (${sample.wallMs.length})`
        : "";
    rows.push([
      `    ${SUBJECT_NAMES[sample.subject]}`,
      ms(sample.medianWallMs),
      ms(sample.medianCpuMs),
      range,
      ratio,
    ]);
  };
  rows.push(["  --version, exec → exit", "", "", "", "× Bun's floor"]);
  for (const sample of startup.version) row(sample, times(sample.medianWallMs, floor));
  rows.push(["  exec → first forwarded frame (a DHCP DISCOVER on the bridge)", "", "", "", "× C relay"]);
  for (const sample of startup.firstFrame) row(sample, times(sample.medianWallMs, relay));
  lines.push(...table(rows, [false, true, true, true, true]));
  const release = startupMedian(startup.firstFrame, "release");
  const development = startupMedian(startup.firstFrame, "development");
  lines.push(
    `  release binary: first frame ${times(release, floor)} Bun's floor (hello world exec → exit), ` +
      `${times(release, relay)} the C relay; development path / release: --version ` +
      `${times(startupMedian(startup.version, "development"), startupMedian(startup.version, "release"))}, ` +
      `first frame ${times(development, release)}`,
  );
  return lines;
}
