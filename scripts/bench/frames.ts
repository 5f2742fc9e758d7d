/**
 * Frame-level benchmark: one private namespace with a bridge br0 (192.168.64.1/24, the VM's
 * gateway), a TAP port gen0 for the host-side generator and a TAP port null0 for the null
 * forwarder. The C relay and softnet each sit between their own socketpair and their own TAP port
 * on br0, exactly as softnet runs for a VM; the C tools drive traffic through one of them at a time.
 *
 * Both forwarders run side by side for the whole throughput part and their runs alternate (C,
 * softnet, softnet, C, ...), so that slow drifts of this shared machine hit both alike; each cell
 * reports the median of its repetitions.
 */
import { chownSync, existsSync, mkdtempSync, rmSync, truncateSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseIpv4 } from "../../src/wire/bytes.ts";
import { DhcpMessageType } from "../../src/wire/dhcp.ts";
import { emitDnsMessage } from "../../src/wire/dns.ts";
import { closeFd, datagramSocketPair } from "../../test/e2e/lib/socketpair.ts";
import {
  dhcpClientFrame,
  dhcpServerFrame,
  GATEWAY,
  udpFrame,
  VM_IP,
  VM_MAC,
} from "../../test/support/frames.ts";
import {
  cpuSeconds,
  lastJson,
  Output,
  type Resources,
  runTool,
  runtimeBetween,
  sh,
  shMaybe,
  sleep,
  statusBytes,
  statusField,
  threadRuntimes,
} from "./system.ts";

export const REPOSITORY = resolve(import.meta.dir, "../..");
export const BRIDGE = "br0";
const BRIDGE_MAC = "02:5e:00:00:00:01";
const GENERATOR_MAC = "02:5e:00:00:00:02";
const GEN_TAP = "gen0";
const NULL_TAP = "null0";
const RELAY_TAP = "cref0";
/** Globally routable: softnet passes VM frames to it once the VM has a lease. */
const GLOBAL_DESTINATION = "8.8.8.8";

export type Direction = "vm-to-host" | "host-to-vm";
export const DIRECTIONS: Direction[] = ["vm-to-host", "host-to-vm"];
export const SIZES = [64, 1500] as const;
export type ForwarderName =
  | "C relay"
  | "softnet"
  | "softnet --capture"
  | "softnet, 1000 names learned"
  | "null forwarder";
type RealForwarder = "C relay" | "softnet" | "softnet --capture" | "softnet, 1000 names learned";
/** softnet with --capture into a file on tmpfs: what capturing every frame costs. */
export const CAPTURING = "softnet --capture";
/**
 * softnet with --block 0.0.0.0/0 --allow *.bench.test, after DNS answers taught it 1000 addresses
 * for names below bench.test, 8.8.8.8 among them: every frame to or from 8.8.8.8 passes on a
 * learned address. What matching against learned addresses costs.
 */
export const NAMED = "softnet, 1000 names learned";
/** Learned addresses: 25 answers of 40 A records (an answer stays well inside one 1500-byte frame). */
const NAMED_ANSWERS = 25;
const RECORDS_PER_ANSWER = 40;

export interface Timing {
  warmupSeconds: number;
  cellSeconds: number;
  repetitions: number;
  idleSeconds: number;
  /** Generator on CPU 0, forwarder on CPU 1 (taskset), instead of leaving placement to the scheduler. */
  pin: boolean;
  /** Also run softnet with --capture (a third forwarder). */
  capture: boolean;
  /** The directions to measure. */
  directions: Direction[];
  /** Also run softnet with 1000 learned names. */
  names: boolean;
}

/** What the tools print for one run (see tools.c). */
interface ToolRun {
  sentPps: number;
  deliveredPps: number;
  windowSeconds: number;
  sentTotal: number;
  deliveredTotal: number;
  droppedAtTapQueue?: number;
  forwarderCpu: number;
  forwarderSysCpu: number;
  generatorCpu: number;
  generatorBlocked?: number;
  machineCpu: number;
  gaps?: number;
  reordered?: number;
  badLength?: number;
}

export interface Cell {
  forwarder: ForwarderName;
  direction: Direction;
  size: number;
  /** Frames per second delivered through the forwarder in the measured window (median run). */
  framesPerSecond: number;
  gbitPerSecond: number;
  /** frames/s of every repetition, in the order they ran. */
  repetitions: number[];
  /** Frames per second the generator offered (wrote) in the same window. */
  offeredPerSecond: number;
  /** 1 - delivered/sent over the whole run including warm-up and a 300 ms drain. */
  loss: number;
  /** Part of the loss that overflowed the forwarder TAP's queue (host→VM: the forwarder read too slowly). */
  lossAtTapQueue?: number;
  /** CPU of the forwarder (all threads) in the window, 1.0 = one core; and the kernel's part of it. */
  forwarderCpu: number;
  forwarderSysCpu: number;
  generatorCpu: number;
  /** CPU used by everything else on the machine in the window (cores): other processes, ksoftirqd, ... */
  otherCpu: number;
  raw: ToolRun;
}

export interface ProcessFigures {
  /** From /proc/PID/stat utime+stime (10 ms ticks). */
  idleCpu?: number;
  /** The same from the threads' schedstat run time (nanoseconds). */
  idleCpuPrecise?: number;
  idleSeconds?: number;
  peakRssBytes?: number;
  rssBytes?: number;
  uidAfterStart?: string;
  exitStatusOnSigint?: number;
  lastLogLine?: string;
  /** softnet --capture: its counters' capture line at exit (frames, bytes, state). */
  captureState?: string;
}

export interface FrameResults {
  cells: Cell[];
  process: Partial<Record<ForwarderName, ProcessFigures>>;
}

/** What `tools firstframe` reports for one start (see tools.c). */
export interface FirstFrameRun {
  firstFrameMs: number;
  /** CPU time of all its threads by the first frame. */
  cpuMs: number;
  interfaceMs: number;
  exitStatus: number;
  stopMs: number;
}

interface Forwarder {
  name: RealForwarder;
  pid: number;
  port: string;
  /** The VM end of its socketpair (ours). */
  vmEnd: number;
  output: Output;
  /** softnet --capture: its capture file. */
  capturePath?: string;
  running(): boolean;
  stop(): Promise<number>;
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

export function median(values: number[]): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export class FrameBench {
  readonly namespace: string;
  readonly results: FrameResults = { cells: [], process: {} };

  /**
   * `softnet` is the command that starts softnet, without its arguments: the release binary, or
   * `bun src/main.ts` (run in the repository).
   */
  constructor(
    private readonly resources: Resources,
    private readonly programs: { relay: string; tools: string },
    private readonly softnet: string[],
    private readonly timing: Timing,
    private readonly fail: (what: string, error: unknown) => void,
    private readonly say: (line: string) => void,
  ) {
    this.namespace = resources.namespaceName("frames");
  }

  private ns(argv: string[]): string[] {
    return ["ip", "netns", "exec", this.namespace, ...argv];
  }

  /** argv under `taskset -c cpu` when pinning is on. */
  private pinned(argv: string[], cpu: number): string[] {
    return this.timing.pin ? ["taskset", "-c", String(cpu), ...argv] : argv;
  }

  private ip(...args: string[]): string {
    return sh(["ip", "-n", this.namespace, ...args]);
  }

  setUp(): void {
    this.resources.addNamespace(this.namespace);
    this.ip("link", "set", "lo", "up");
    // No IPv6: no router solicitations or MLD reports from ports coming up, only our frames. No
    // IGMP reports either: the bridge sends them from the gateway's address (224.0.0.22, at random
    // times in its first seconds up), so softnet would learn the bridge's MAC as the gateway's and
    // drop the generator's frames from 8.8.8.8 as not-from-gateway until the next ACK.
    sh(
      this.ns([
        "sh",
        "-c",
        "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; " +
          "echo 0 > /proc/sys/net/ipv4/igmp_link_local_mcast_reports",
      ]),
    );
    this.ip(
      "link",
      "add",
      BRIDGE,
      "address",
      BRIDGE_MAC,
      "type",
      "bridge",
      "stp_state",
      "0",
      "forward_delay",
      "0",
    );
    this.ip("addr", "add", `${GATEWAY}/24`, "dev", BRIDGE);
    this.ip("link", "set", BRIDGE, "up");
    // VM frames to 8.8.8.8 go to the generator's MAC (the gateway's, as softnet learned it): the
    // bridge hands them to the generator's TAP or drops them, and nothing answers. ip_forward
    // stays 0. (The count is taken where they leave softnet: its TAP's rx_packets.)
    for (const tap of [GEN_TAP, NULL_TAP]) {
      this.ip("tuntap", "add", "dev", tap, "mode", "tap");
      this.ip("link", "set", tap, "master", BRIDGE, "up");
    }
    this.ip("link", "set", GEN_TAP, "address", GENERATOR_MAC);
  }

  private portsWithCarrier(): string[] {
    const links = JSON.parse(this.ip("-j", "link", "show", "master", BRIDGE)) as Array<{
      ifname: string;
      flags: string[];
    }>;
    return links.filter((link) => link.flags.includes("LOWER_UP")).map((link) => link.ifname);
  }

  private async waitForPort(
    pick: (ports: string[]) => string | undefined,
    isRunning: () => boolean,
  ): Promise<string> {
    const deadline = Date.now() + 15_000;
    for (;;) {
      const port = pick(this.portsWithCarrier());
      if (port !== undefined) return port;
      if (!isRunning()) throw new Error("the forwarder exited before its port came up");
      if (Date.now() > deadline) throw new Error("timed out waiting for the forwarder's port on the bridge");
      await sleep(20);
    }
  }

  /** Host→VM frames go to the VM MAC: a static entry sends them to the port under test only. */
  private pinVmMac(port: string): void {
    sh(["bridge", "-n", this.namespace, "fdb", "replace", VM_MAC, "dev", port, "master", "static"]);
  }

  /**
   * A directory on tmpfs (/dev/shm) that the user softnet drops to (nobody) may write to: the
   * capture then costs what the writer costs, not what a disk costs.
   */
  private captureFile(): string {
    const directory = mkdtempSync(
      join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), "softnet-bench-capture-"),
    );
    chownSync(directory, 65534, 65534);
    this.resources.onCleanup(() => rmSync(directory, { recursive: true, force: true }));
    return join(directory, "bench.pcapng");
  }

  /**
   * DNS answers from the gateway (the lease's DNS server) to the VM, injected on the host side like
   * the ACK: 1000 global addresses for 25 names below bench.test, the first of them 8.8.8.8. Then
   * the counters (SIGUSR2) must list the 25 names, or the cell would measure something else.
   */
  private async teachNames(forwarder: Forwarder): Promise<void> {
    for (let answer = 0; answer < NAMED_ANSWERS; answer++) {
      const name = `n${answer}.bench.test`;
      const addresses = Array.from({ length: RECORDS_PER_ANSWER }, (_, record) => {
        const index = answer * RECORDS_PER_ANSWER + record;
        // 8.8.8.8 first, then 20.0.0.1 and up (global, RFC 6890 has no special block there).
        return index === 0 ? parseIpv4(GLOBAL_DESTINATION)! : parseIpv4("20.0.0.0")! + index;
      });
      const frame = udpFrame({
        srcMac: GENERATOR_MAC,
        dstMac: VM_MAC,
        src: GATEWAY,
        dst: VM_IP,
        sport: 53,
        dport: 33333,
        payload: emitDnsMessage({
          id: answer,
          response: true,
          question: { name, type: 1 },
          answers: addresses.map((address) => ({ owner: name, type: "A" as const, ttl: 3600, address })),
        }),
      });
      const injected = await runTool(
        this.resources,
        this.ns([this.programs.tools, "inject", GEN_TAP, "1", "0", hex(frame)]),
      );
      if (injected.code !== 0) throw new Error(`cannot inject a DNS answer: ${injected.stderr.trim()}`);
    }
    process.kill(forwarder.pid, "SIGUSR2");
    await forwarder.output.waitFor(
      new RegExp(`names looked up: ${NAMED_ANSWERS}\\b`),
      5_000,
      forwarder.running,
    );
  }

  private async startForwarder(name: RealForwarder): Promise<Forwarder> {
    const capturePath = name === CAPTURING ? this.captureFile() : undefined;
    const argv =
      name === "C relay"
        ? this.ns([this.programs.relay, "0", RELAY_TAP, BRIDGE])
        : this.ns([
            ...this.softnet,
            "--vm-fd",
            "0",
            "--vm-mac-address",
            VM_MAC,
            "--bridge",
            BRIDGE,
            ...(capturePath === undefined ? [] : ["--capture", capturePath, "--capture-limit", "1T"]),
            ...(name === NAMED ? ["--block", "0.0.0.0/0", "--allow", "*.bench.test"] : []),
          ]);
    const pair = datagramSocketPair();
    const before = new Set(this.portsWithCarrier());
    const child = this.resources.spawn(this.pinned(argv, 1), { stdin: pair.hostEnd, cwd: REPOSITORY });
    closeFd(pair.hostEnd);
    const output = new Output(child);
    let exitCode: number | null = null;
    void child.exited.then((code) => {
      exitCode = code;
    });
    const running = () => exitCode === null;
    let closed = false;
    const forwarder: Forwarder = {
      name,
      pid: child.pid, // `ip netns exec` execs the command: this is the forwarder's own pid
      port: "",
      vmEnd: pair.vmEnd,
      output,
      capturePath,
      running,
      async stop() {
        if (running()) {
          child.kill("SIGINT");
          const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
          await child.exited;
          clearTimeout(timer);
        }
        await output.done;
        if (!closed) closeFd(pair.vmEnd);
        closed = true;
        return child.exitCode ?? -1;
      },
    };
    try {
      forwarder.port = await this.waitForPort((ports) => ports.find((port) => !before.has(port)), running);
      if (name !== "C relay") await output.waitFor(/forwarding for VM/, 10_000, running);
      this.pinVmMac(forwarder.port);
      // The lease: a DHCP ACK from the gateway for VM_IP, injected on the host side. It comes from
      // the generator's MAC: softnet learns the gateway's MAC from frames sent from the gateway's
      // address, and takes frames from beyond the VM's network (host→VM: from 8.8.8.8) only from
      // that MAC (not-from-gateway). The generator plays the routing gateway on its own port: the
      // bridge drops frames that enter a port with the bridge's own MAC as their source.
      const ack = dhcpServerFrame({
        messageType: DhcpMessageType.ACK,
        leaseTimeSeconds: 3600,
        dnsServers: [GATEWAY],
        clientMac: VM_MAC,
        yourAddress: VM_IP,
        from: GATEWAY,
        dst: VM_IP,
        dstMac: VM_MAC,
      });
      ack.set(Buffer.from(GENERATOR_MAC.replaceAll(":", ""), "hex"), 6); // Ethernet source
      const injected = await runTool(
        this.resources,
        this.ns([this.programs.tools, "inject", GEN_TAP, "3", "20", hex(ack)]),
      );
      if (injected.code !== 0) throw new Error(`cannot inject the DHCP ACK: ${injected.stderr.trim()}`);
      if (name !== "C relay") await output.waitFor(/lease learned/, 5_000, running);
      if (name === NAMED) await this.teachNames(forwarder);
    } catch (error) {
      await forwarder.stop();
      throw new Error(`${describeError(error)}\n${output.text.trim()}`);
    }
    return forwarder;
  }

  private async run(
    forwarder: ForwarderName,
    direction: Direction,
    size: number,
    vmEnd: number,
    port: string,
    pid: number,
  ): Promise<Cell> {
    const { warmupSeconds: warmup, cellSeconds: secs } = this.timing;
    const common = [String(size), String(warmup), String(secs)];
    const argv =
      direction === "vm-to-host"
        ? [
            this.programs.tools,
            "v2h",
            ...common,
            port === NULL_TAP ? "-" : `/sys/class/net/${port}/statistics/rx_packets`,
            String(pid),
            // The VM's next hop: the MAC softnet learned as the gateway's (the generator's, from
            // the ACK below). softnet sends off-network packets only to that MAC (wrong-next-hop).
            GENERATOR_MAC,
            VM_MAC,
            VM_IP,
            GLOBAL_DESTINATION,
          ]
        : [
            this.programs.tools,
            "h2v",
            ...common,
            GEN_TAP,
            port,
            String(pid),
            VM_MAC,
            GENERATOR_MAC,
            GLOBAL_DESTINATION,
            VM_IP,
          ];
    if (direction === "host-to-vm") this.pinVmMac(port);
    const result = await runTool(this.resources, this.pinned(this.ns(argv), 0), {
      fds: [vmEnd],
      timeoutMs: (warmup + secs + 10) * 1000,
    });
    const raw = lastJson<ToolRun>(result.stdout);
    if (result.code !== 0 || raw === undefined) {
      throw new Error(
        `tools ${argv[1]} exited ${result.code}: ${result.stderr.trim() || result.stdout.trim()}`,
      );
    }
    const nullForwarder = forwarder === "null forwarder";
    const delivered = nullForwarder ? raw.sentPps : raw.deliveredPps;
    const cell: Cell = {
      forwarder,
      direction,
      size,
      framesPerSecond: delivered,
      gbitPerSecond: (delivered * size * 8) / 1e9,
      repetitions: [delivered],
      offeredPerSecond: raw.sentPps,
      loss: nullForwarder || raw.sentTotal === 0 ? 0 : Math.max(0, 1 - raw.deliveredTotal / raw.sentTotal),
      forwarderCpu: raw.forwarderCpu,
      forwarderSysCpu: raw.forwarderSysCpu,
      generatorCpu: raw.generatorCpu,
      otherCpu: Math.max(0, raw.machineCpu - raw.forwarderCpu - raw.generatorCpu),
      raw,
    };
    if (
      !nullForwarder &&
      direction === "host-to-vm" &&
      raw.droppedAtTapQueue !== undefined &&
      raw.sentTotal > 0
    ) {
      cell.lossAtTapQueue = Math.max(0, raw.droppedAtTapQueue) / raw.sentTotal;
    }
    if (!nullForwarder && raw.deliveredTotal <= 0) {
      throw new Error(`no frame got through ${forwarder} (${direction}, ${size} B): ${JSON.stringify(raw)}`);
    }
    return cell;
  }

  /** The run with the median frames/s stands for the cell; every repetition's rate is kept. */
  private combine(runs: Cell[]): Cell {
    const sorted = [...runs].sort((a, b) => a.framesPerSecond - b.framesPerSecond);
    const chosen = sorted[Math.floor((sorted.length - 1) / 2)]!;
    const rates = runs.map((run) => run.framesPerSecond);
    const middle = median(rates)!;
    return {
      ...chosen,
      framesPerSecond: middle,
      gbitPerSecond: (middle * chosen.size * 8) / 1e9,
      repetitions: rates,
    };
  }

  private describeRun(cell: Cell): string {
    return (
      `${cell.forwarder.padEnd(14)} ${cell.direction.padEnd(10)} ${String(cell.size).padStart(4)} B: ` +
      `${Math.round(cell.framesPerSecond).toLocaleString("en-US")} frames/s, ${cell.gbitPerSecond.toFixed(2)} Gbit/s, ` +
      `forwarder CPU ${Math.round(cell.forwarderCpu * 100)} %`
    );
  }

  /** Up to 3 runs of one null-forwarder cell, combined like the others. */
  private async repeat(what: string, once: () => Promise<Cell>): Promise<void> {
    const runs: Cell[] = [];
    for (let repetition = 0; repetition < Math.min(3, this.timing.repetitions); repetition++) {
      try {
        const cell = await once();
        runs.push(cell);
        this.say(this.describeRun(cell));
      } catch (error) {
        this.fail(what, error);
        return;
      }
    }
    this.results.cells.push(this.combine(runs));
  }

  /** The generators' own ceilings: the same tools against a forwarder that does nothing. */
  async measureGeneratorCeilings(): Promise<void> {
    if (this.timing.directions.includes("vm-to-host")) await this.measureVmToHostCeiling();
    if (this.timing.directions.includes("host-to-vm")) await this.measureHostToVmCeiling();
  }

  private async measureVmToHostCeiling(): Promise<void> {
    // VM→host: a C process that receives and discards (recvmmsg) on the other end of the socketpair.
    const pair = datagramSocketPair();
    const drain = this.resources.spawn(this.ns([this.programs.tools, "drain"]), { fds: [pair.hostEnd] });
    closeFd(pair.hostEnd);
    try {
      for (const size of SIZES) {
        await this.repeat(`generator ceiling VM→host ${size} B`, () =>
          this.run("null forwarder", "vm-to-host", size, pair.vmEnd, NULL_TAP, drain.pid),
        );
      }
    } finally {
      drain.kill("SIGKILL");
      await drain.exited;
      closeFd(pair.vmEnd);
    }
  }

  private async measureHostToVmCeiling(): Promise<void> {
    // host→VM: frames cross the bridge to null0, whose reader discards them (poll + read until EAGAIN).
    const pair2 = datagramSocketPair();
    closeFd(pair2.hostEnd);
    const reader = this.resources.spawn(this.ns([this.programs.tools, "tapdrain", NULL_TAP]));
    try {
      await this.waitForPort(
        (ports) => ports.find((port) => port === NULL_TAP),
        () => reader.exitCode === null,
      );
      for (const size of SIZES) {
        await this.repeat(`generator ceiling host→VM ${size} B`, () =>
          this.run("null forwarder", "host-to-vm", size, pair2.vmEnd, NULL_TAP, reader.pid),
        );
      }
    } finally {
      reader.kill("SIGKILL");
      await reader.exited;
      closeFd(pair2.vmEnd);
      shMaybe(["bridge", "-n", this.namespace, "fdb", "del", VM_MAC, "dev", NULL_TAP, "master"]);
    }
  }

  /**
   * Both forwarders side by side: every cell runs `repetitions` times per forwarder, alternating
   * which goes first; then softnet's idle CPU and memory. Returns false when softnet could not start.
   */
  async measureForwarders(): Promise<boolean> {
    const forwarders: Forwarder[] = [];
    // softnets first: one refuses to start while the bridge has its VM MAC on another port, so the
    // pin of the softnet started before it is taken off first (each host→VM run pins VM_MAC to the
    // port under test again with `fdb replace`); the relay's port gets VM_MAC pinned once it is up.
    const names: RealForwarder[] = ["softnet"];
    if (this.timing.capture) names.push(CAPTURING);
    if (this.timing.names) names.push(NAMED);
    names.push("C relay");
    for (const name of names) {
      for (const started of forwarders) {
        shMaybe(["bridge", "-n", this.namespace, "fdb", "del", VM_MAC, "dev", started.port, "master"]);
      }
      try {
        forwarders.push(await this.startForwarder(name));
        this.results.process[name] = {};
      } catch (error) {
        this.fail(`starting ${name}`, error);
      }
    }
    try {
      for (const forwarder of forwarders) {
        this.results.process[forwarder.name]!.uidAfterStart = statusField(forwarder.pid, "Uid")?.split(
          /\s+/,
        )[0];
      }
      const runs = new Map<string, Cell[]>();
      for (let repetition = 0; repetition < this.timing.repetitions; repetition++) {
        for (const direction of this.timing.directions) {
          for (const size of SIZES) {
            const order = repetition % 2 === 0 ? forwarders : [...forwarders].reverse();
            for (const forwarder of order) {
              const what = `${forwarder.name} ${direction} ${size} B (repetition ${repetition + 1})`;
              try {
                if (!forwarder.running()) throw new Error(`${forwarder.name} is not running any more`);
                const cell = await this.run(
                  forwarder.name,
                  direction,
                  size,
                  forwarder.vmEnd,
                  forwarder.port,
                  forwarder.pid,
                );
                // The capture file lives on tmpfs: empty it after every run. softnet's write offset
                // stays where it was, so the file becomes sparse and its holes cost no memory.
                if (forwarder.capturePath !== undefined) truncateSync(forwarder.capturePath, 0);
                const key = `${forwarder.name}/${direction}/${size}`;
                runs.set(key, [...(runs.get(key) ?? []), cell]);
                this.say(`${this.describeRun(cell)} [${repetition + 1}/${this.timing.repetitions}]`);
              } catch (error) {
                this.fail(what, error);
              }
            }
          }
        }
      }
      for (const cells of runs.values()) this.results.cells.push(this.combine(cells));

      const softnet = forwarders.find((forwarder) => forwarder.name === "softnet");
      if (softnet?.running()) {
        const figures = this.results.process.softnet!;
        try {
          await sleep(1000); // let the socket buffers drain and timers settle
          const before = cpuSeconds(softnet.pid);
          const beforePrecise = threadRuntimes(softnet.pid);
          const start = performance.now();
          await sleep(this.timing.idleSeconds * 1000);
          const seconds = (performance.now() - start) / 1000;
          figures.idleCpu = (cpuSeconds(softnet.pid) - before) / seconds;
          figures.idleCpuPrecise = runtimeBetween(beforePrecise, threadRuntimes(softnet.pid)) / seconds;
          figures.idleSeconds = seconds;
          figures.peakRssBytes = statusBytes(softnet.pid, "VmHWM");
          figures.rssBytes = statusBytes(softnet.pid, "VmRSS");
        } catch (error) {
          this.fail("softnet idle CPU and RSS", error);
        }
      } else if (softnet) {
        this.fail("softnet idle CPU and RSS", new Error(`softnet exited: ${softnet.output.text.trim()}`));
      }
    } finally {
      for (const forwarder of forwarders) {
        const figures = this.results.process[forwarder.name]!;
        figures.exitStatusOnSigint = await forwarder.stop();
        figures.captureState = forwarder.output.text
          .split("\n")
          .filter((line) => /capture: \d+ frames/.test(line))
          .pop()
          ?.replace(/^.*capture: /, "");
        figures.lastLogLine = forwarder.output.text
          .trim()
          .split("\n")
          .filter((line) => /stopped/.test(line))
          .pop();
      }
    }
    return forwarders.some((forwarder) => forwarder.name === "softnet");
  }

  /**
   * One start of `command` (its end of a fresh socketpair on fd 0), from fork to its first VM→host
   * frame (a DHCP DISCOVER) on the bridge side, then SIGINT; `command` needs the namespace's bridge
   * and VM_MAC free on it.
   */
  async firstFrameRun(command: string[]): Promise<FirstFrameRun> {
    const discover = dhcpClientFrame({ srcMac: VM_MAC, messageType: DhcpMessageType.DISCOVER });
    const output = await runTool(
      this.resources,
      this.ns([this.programs.tools, "firstframe", VM_MAC, "10000", hex(discover), "--", ...command]),
      { cwd: REPOSITORY },
    );
    const parsed = lastJson<FirstFrameRun>(output.stdout);
    if (output.code !== 0 || parsed === undefined || parsed.firstFrameMs < 0) {
      throw new Error(`firstframe exited ${output.code}: ${output.stderr.trim()} ${output.stdout.trim()}`);
    }
    return parsed;
  }
}
