/**
 * The soak: softnet for a long time with a real guest and a mixed load, watched for leaks.
 *
 *   sudo bun scripts/soak.ts [--minutes 30] [--binary dist/softnet-linux-x64] [--expiry-at MINUTE]
 *
 * A throwaway topology (test/e2e/lib: a bridge with dnsmasq handing out 2-minute leases, a global
 * test host 8.8.8.8, a private server) and one guest behind softnet (`bun src/main.ts` by default,
 * `--binary` for a release build) with `--expose 2222:22`. While it runs:
 * - allowed traffic: pings and UDP to the global host, pings from the host to the guest, and
 *   every minute a TCP connection, a DNS query and a connection through the exposed port;
 * - blocked traffic: pings and TCP SYNs to the private server (which must never answer);
 * - spoofed traffic: hping3 with random and forged source addresses, arpspoof claiming another
 *   address, macof bursts of forged source MACs every 10 s;
 * - lease renewals every minute (udhcpc renews at T1, half of dnsmasq's 2-minute minimum lease),
 *   and, when the run is 5 minutes or longer, one expiry: the guest's DHCP client is stopped, the
 *   lease must expire in softnet (forwards removed, traffic dropped), then the guest asks again.
 *
 * Every minute it prints softnet's RSS (and its change since minute 1), split into anonymous
 * memory (the heaps, JavaScript's included: the heap alone is not visible from outside the
 * process) and file-backed pages (the executable, paged in as it is used), peak RSS, open fds,
 * threads, CPU, the renewals softnet saw, its log lines, the probes' outcome and softnet's own
 * per-minute drop summary. It exits 1 when RSS grew by 5 % or more
 * after the first minute, when the fd count grew, when a lease was lost (an expiry or NAK softnet
 * was not made to see, or renewals missing), when a probe failed, or when softnet died. A leak
 * check, not a timing: nothing here depends on how fast the machine is.
 * The test suite runs a 2-minute soak (test/e2e/soak.test.ts).
 */
import { closeSync, existsSync, openSync, readFileSync, readSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import {
  ADDRESSES,
  BANNER_PORT,
  BANNERS,
  commandForwarder,
  DHCP_LEASE_SECONDS,
  DNS_NAMES,
  type Forwarder,
  type Guest,
  Topology,
  waitFor,
} from "../test/e2e/lib/index.ts";
import { type ProcessStats, processStats } from "../test/e2e/lib/process-stats.ts";
import { requireTools } from "../test/support/tools.ts";

export interface SoakOptions {
  minutes: number;
  /** A release binary to soak instead of `bun src/main.ts`. */
  binary?: string;
  /** The minute at which the guest stops renewing so that its lease expires; undefined: none. */
  expiryAt?: number;
  /** Where each line of the report goes (default: console.log). */
  print?: (line: string) => void;
}

export interface SoakMinute extends ProcessStats {
  minute: number;
  /** Share of one CPU softnet used during the minute, percent. */
  cpuPercent: number;
  /** "lease renewed" lines softnet logged during the minute. */
  renewals: number;
  logLines: number;
  /** What failed among the minute's probes (empty: all passed), or why they were skipped. */
  probes: string[];
  phase: Phase;
}

export interface SoakReport {
  minutes: SoakMinute[];
  rssGrowthPercent: number;
  fdGrowth: number;
  renewals: number;
  expiry?: { expiredAfterSeconds: number; releasedAfterSeconds: number };
  failures: string[];
  exitStatus: number;
}

type Phase = "leased" | "expiring" | "re-leasing";

const EXPOSED = { external: 2222, internal: 22, banner: "hello-from-soak-guest" };
const RSS_GROWTH_LIMIT_PERCENT = 5;

/** Reads softnet's log file as it grows (the Daemon's in-memory log is capped; a soak's is not). */
class LogFollower {
  private offset = 0;
  private partial = "";
  readonly all: string[] = [];
  constructor(readonly path: string) {}

  /** Lines written since the last call. */
  newLines(): string[] {
    if (!existsSync(this.path)) return [];
    const size = statSync(this.path).size;
    if (size <= this.offset) return [];
    const bytes = Buffer.alloc(size - this.offset);
    const fd = openSync(this.path, "r");
    try {
      readSync(fd, bytes, 0, bytes.length, this.offset);
    } finally {
      closeSync(fd);
    }
    this.offset = size;
    const lines = (this.partial + bytes.toString("utf8")).split("\n");
    this.partial = lines.pop() ?? "";
    this.all.push(...lines);
    return lines;
  }
}

export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const print = options.print ?? ((line: string) => console.log(line));
  const failures: string[] = [];
  const minutes: SoakMinute[] = [];
  requireTools(["hping3", "arpspoof", "macof", "nc", "nft"]); // the load and the probes
  const topology = await Topology.create();
  let forwarder: Forwarder | undefined;
  let exitStatus = -1;
  let expiry: SoakReport["expiry"];
  try {
    const guest = await topology.addGuest();
    const logPath = join(topology.workDir, "softnet.log");
    const binary = options.binary === undefined ? undefined : resolve(options.binary);
    const command = binary === undefined ? [process.execPath, "src/main.ts"] : [binary];
    forwarder = await guest.attach(
      commandForwarder(`softnet (${binary ?? "bun src/main.ts"})`, (context) => [
        // stderr to a file: a soak's log outgrows the Daemon's in-memory buffer. exec keeps the pid.
        "sh",
        "-c",
        'exec "$@" 2>>"$0"',
        logPath,
        ...command,
        "--vm-fd",
        "0",
        "--vm-mac-address",
        context.vmMac,
        "--bridge",
        context.bridge,
        "--expose",
        `${EXPOSED.external}:${EXPOSED.internal}`,
      ]),
    );
    const log = new LogFollower(logPath);
    const pid = forwarder.daemon.pid;
    const lease = await guest.dhcp();
    await guest.startTcpServer(EXPOSED.internal, EXPOSED.banner);
    await waitFor("softnet to install the port forward", () =>
      readFileSync(logPath, "utf8").includes("port forwards installed"),
    );
    print(
      `soak: ${options.minutes} min of softnet (pid ${pid}, ${binary ?? "bun src/main.ts"}) with guest ${lease.address}, ` +
        `${DHCP_LEASE_SECONDS} s leases${options.expiryAt === undefined ? "" : `, lease expiry at minute ${options.expiryAt}`}`,
    );
    startLoad(topology, guest, lease.address);

    let phase: Phase = "leased";
    const expiryTask =
      options.expiryAt === undefined
        ? undefined
        : (async () => {
            await Bun.sleep(options.expiryAt! * 60_000);
            const result = await letLeaseExpire(topology, guest, forwarder!, log, (next) => {
              phase = next;
            });
            expiry = result.timings;
            failures.push(...result.failures);
            phase = "leased";
          })().catch((error: Error) => {
            failures.push(`lease expiry: ${error.message}`);
            phase = "leased";
          });

    print(
      "minute  RSS MiB  vs min 1  anon MiB  file MiB  peak MiB  fds  threads  CPU %  renewals  log lines  probes",
    );
    const startedAt = performance.now();
    let previous = processStats(pid);
    let previousAt = startedAt;
    let checkedLines = 0;
    for (let minute = 1; minute <= options.minutes; minute++) {
      const phaseAtStart = phase;
      await Bun.sleep(Math.max(0, startedAt + minute * 60_000 - performance.now()));
      if (!forwarder.running) {
        failures.push(`softnet exited (${forwarder.daemon.exitCode}) during minute ${minute}`);
        break;
      }
      const probes =
        phase === "leased" && phaseAtStart === "leased"
          ? await probe(topology, guest)
          : ["skipped: the lease is made to expire in this minute"];
      const stats = steadyStats(pid);
      const now = performance.now();
      const lines = log.newLines();
      const row: SoakMinute = {
        minute,
        ...stats,
        cpuPercent: ((stats.cpuSeconds - previous.cpuSeconds) / ((now - previousAt) / 1000)) * 100,
        renewals: lines.filter((line) => line.includes("lease renewed")).length,
        logLines: lines.length,
        probes,
        phase,
      };
      minutes.push(row);
      previous = stats;
      previousAt = now;
      const first = minutes[0]!;
      const growth = minute === 1 ? "—" : `${percent(row.rssKiB, first.rssKiB)}`;
      print(
        `${pad(minute, 6)}  ${pad(mib(row.rssKiB), 7)}  ${pad(growth, 8)}  ${pad(mib(row.anonRssKiB), 8)}  ` +
          `${pad(mib(row.fileRssKiB), 8)}  ${pad(mib(row.peakRssKiB), 8)}  ` +
          `${pad(row.fds, 3)}  ${pad(row.threads, 7)}  ${pad(row.cpuPercent.toFixed(1), 5)}  ${pad(row.renewals, 8)}  ` +
          `${pad(row.logLines, 9)}  ${probes.length === 0 ? "ok" : probes.join("; ")}`,
      );
      // softnet's own per-minute count of what it dropped: the blocked and spoofed load, seen.
      const dropped = lines.findLast((line) => line.includes("dropped in the last minute: "));
      if (dropped !== undefined)
        print(`        softnet: ${dropped.slice(dropped.indexOf("dropped in the last minute"))}`);
      for (const failed of probes.filter((text) => !text.startsWith("skipped"))) {
        failures.push(`minute ${minute}: ${failed}`);
      }
      // A lease lost without being made to: softnet saw it expire or refused outside the expiry phase.
      for (const line of log.all.slice(checkedLines)) {
        if (
          /lease for .* expired|lease refused/.test(line) &&
          phase === "leased" &&
          phaseAtStart === "leased"
        ) {
          failures.push(`minute ${minute}: lost lease: ${line}`);
        }
      }
      checkedLines = log.all.length;
    }
    await expiryTask;

    const first = minutes[0];
    const last = minutes.at(-1);
    const rssGrowthPercent = first && last ? ((last.rssKiB - first.rssKiB) / first.rssKiB) * 100 : 0;
    const fdGrowth = first && last ? last.fds - first.fds : 0;
    const renewals = minutes.reduce((sum, row) => sum + row.renewals, 0);
    if (minutes.length >= 2 && rssGrowthPercent >= RSS_GROWTH_LIMIT_PERCENT) {
      failures.push(
        `RSS grew ${rssGrowthPercent.toFixed(1)} % after the first minute (${first!.rssKiB} → ${last!.rssKiB} KiB)`,
      );
    }
    if (fdGrowth > 0) failures.push(`open fds grew from ${first!.fds} to ${last!.fds}`);
    // udhcpc renews every 60 s while it holds a lease: one a minute, less the minutes of the expiry.
    const leasedMinutes = minutes.filter((row) => row.phase === "leased").length;
    if (renewals < leasedMinutes - 2) {
      failures.push(
        `only ${renewals} renewals seen by softnet in ${leasedMinutes} leased minutes: a lease was lost`,
      );
    }

    exitStatus = forwarder.running ? await forwarder.stop("SIGINT") : (forwarder.daemon.exitCode ?? -1);
    log.newLines();
    if (exitStatus !== 0) failures.push(`softnet exited ${exitStatus} on SIGINT`);
    const lastLines = log.all.filter((line) => line.startsWith("softnet")).slice(-2);
    print(
      `soak: RSS ${first ? mib(first.rssKiB) : "?"} → ${last ? mib(last.rssKiB) : "?"} MiB after minute 1 ` +
        `(${rssGrowthPercent.toFixed(2)} %, limit ${RSS_GROWTH_LIMIT_PERCENT} %), fds ${first?.fds} → ${last?.fds}, ` +
        `${renewals} renewals, ${log.all.length} log lines in all` +
        (expiry === undefined
          ? ""
          : `; lease expired ${expiry.expiredAfterSeconds.toFixed(0)} s after the client stopped, renewed ${expiry.releasedAfterSeconds.toFixed(1)} s after it started again`),
    );
    print(`soak: softnet's last words: ${lastLines.join(" | ")}`);
    print(
      failures.length === 0
        ? "soak: PASS"
        : `soak: FAIL\n${failures.map((text) => `  - ${text}`).join("\n")}`,
    );
    return { minutes, rssGrowthPercent, fdGrowth, renewals, expiry, failures, exitStatus };
  } finally {
    await topology.teardown();
  }
}

/** The figures, with the fd count read until it holds still (an nft child's pipes come and go). */
function steadyStats(pid: number): ProcessStats {
  let stats = processStats(pid);
  for (let attempt = 0; attempt < 5; attempt++) {
    Bun.sleepSync(100);
    const again = processStats(pid);
    if (again.fds === stats.fds) return again;
    stats = again;
  }
  return stats;
}

/** The load generators: started once, stopped at teardown. */
function startLoad(topology: Topology, guest: Guest, guestAddress: string): void {
  const G = ADDRESSES.globalHost;
  // hping3 exits when its route goes away, as it does while udhcpc starts over after the expiry
  // (its "deconfig" flushes eth0): started again a second later, so the load is the same after it.
  const hping3 = (...args: string[]) => again(1, ["hping3", "-q", ...args]);
  // Allowed, both directions.
  guest.spawn("ping global host", ["ping", "-q", "-n", "-i", "0.2", G]);
  guest.spawn("udp to global host", hping3("--udp", "-p", "9", "-i", "u2000", G));
  topology.spawn(topology.hostNamespace, "ping from the host", [
    "ping",
    "-q",
    "-n",
    "-i",
    "0.01",
    guestAddress,
  ]);
  // Blocked.
  guest.spawn("ping private server", ["ping", "-q", "-n", "-i", "0.2", ADDRESSES.privateServer]);
  guest.spawn("syn to private server", hping3("-S", "-p", "80", "-i", "u5000", ADDRESSES.privateServer));
  // Spoofed: forged source addresses, forged ARP, forged MACs.
  guest.spawn("random sources", hping3("--rand-source", "-S", "-p", "80", "-i", "u5000", G));
  guest.spawn(
    "forged source",
    hping3("-a", "192.168.64.200", "--udp", "-p", "53", "-i", "u10000", ADDRESSES.gateway),
  );
  guest.spawn("arpspoof", ["arpspoof", "-i", "eth0", "-t", ADDRESSES.gateway, "192.168.64.99"]);
  guest.spawn("macof every 10 s", again(10, ["macof", "-i", "eth0", "-n", "200"]));
}

/**
 * argv of a shell that runs `argv` again `pauseSeconds` after each exit, until it is told to stop.
 * On SIGTERM it kills the running child before it exits itself: an orphaned hping3 or macof would
 * keep the output pipe open, and teardown would wait for an end of output that never comes.
 */
function again(pauseSeconds: number, argv: string[]): string[] {
  return [
    "sh",
    "-c",
    `trap 'kill $child 2>/dev/null; exit 0' TERM INT; while :; do "$@" 2>/dev/null & child=$!; wait $child; sleep ${pauseSeconds} & child=$!; wait $child; done`,
    "sh",
    ...argv,
  ];
}

/** The minute's checks that what must pass passes and what must not does not. Returns what failed. */
async function probe(topology: Topology, guest: Guest): Promise<string[]> {
  const failed: string[] = [];
  if (!(await guest.ping(ADDRESSES.globalHost, { count: 2 }))) failed.push("ping to the global host failed");
  const banner = await guest.tcpConnect(ADDRESSES.globalHost, BANNER_PORT);
  if (!banner.stdout.includes(BANNERS.globalHost)) failed.push("TCP to the global host failed");
  const dns = await guest.dnsQuery(ADDRESSES.gateway, DNS_NAMES.example, { timeoutSeconds: 2 });
  if (!dns.answers.includes(ADDRESSES.globalHost)) failed.push("DNS through the gateway failed");
  const blocked = await guest.tcpConnect(ADDRESSES.privateServer, BANNER_PORT, { timeoutSeconds: 1 });
  if (blocked.stdout.includes(BANNERS.privateServer)) failed.push("the private server was reached");
  const exposed = await topology.hostExec(
    ["nc", "-N", "-w", "2", ADDRESSES.gateway, String(EXPOSED.external)],
    {
      stdin: "",
    },
  );
  if (!exposed.stdout.includes(EXPOSED.banner))
    failed.push(`--expose ${EXPOSED.external} did not reach the guest`);
  return failed;
}

/**
 * Stops the guest's DHCP client (no release: the VM just stops renewing), waits for softnet to let
 * the lease expire and remove the forwards, checks that the guest's traffic is then dropped, and
 * starts the client again: softnet must learn the new lease and put the forwards back.
 */
async function letLeaseExpire(
  topology: Topology,
  guest: Guest,
  forwarder: Forwarder,
  log: LogFollower,
  setPhase: (phase: Phase) => void,
): Promise<{ timings: NonNullable<SoakReport["expiry"]>; failures: string[] }> {
  const failures: string[] = [];
  const logged = (pattern: RegExp) =>
    readFileSync(log.path, "utf8")
      .split("\n")
      .filter((line) => pattern.test(line)).length;
  setPhase("expiring");
  const expiredBefore = logged(/lease for .* expired/);
  const stoppedAt = performance.now();
  await guest.stopDhcp();
  await waitFor(
    "softnet to let the lease expire",
    () => !forwarder.running || logged(/lease for .* expired/) > expiredBefore,
    { timeoutMs: (DHCP_LEASE_SECONDS + 30) * 1000, intervalMs: 500 },
  );
  const expiredAfterSeconds = (performance.now() - stoppedAt) / 1000;
  await Bun.sleep(2_000);
  if (!readFileSync(log.path, "utf8").includes("port forwards removed"))
    failures.push("forwards not removed on expiry");
  const tables = await topology.hostExec(["nft", "list", "tables"]);
  if (tables.stdout.includes("softnet_"))
    failures.push(`an nft table is left after the expiry: ${tables.stdout.trim()}`);
  if (await guest.ping(ADDRESSES.globalHost, { waitSeconds: 1 }))
    failures.push("traffic passed without a lease");
  setPhase("re-leasing");
  const learnedBefore = logged(/lease learned/);
  const installedBefore = logged(/port forwards installed/);
  const restartedAt = performance.now();
  guest.startDhcp();
  await waitFor("softnet to learn the new lease", () => logged(/lease learned/) > learnedBefore, {
    timeoutMs: 30_000,
    intervalMs: 200,
  });
  const releasedAfterSeconds = (performance.now() - restartedAt) / 1000;
  await waitFor(
    "the forwards to be installed again",
    () => logged(/port forwards installed/) > installedBefore,
    {
      timeoutMs: 10_000,
      intervalMs: 200,
    },
  );
  await guest.waitForLease();
  if (!(await guest.ping(ADDRESSES.globalHost))) failures.push("no traffic after the new lease");
  return { timings: { expiredAfterSeconds, releasedAfterSeconds }, failures };
}

function mib(kib: number): string {
  return (kib / 1024).toFixed(1);
}

function percent(value: number, base: number): string {
  const change = ((value - base) / base) * 100;
  return `${change >= 0 ? "+" : ""}${change.toFixed(2)} %`;
}

function pad(value: string | number, width: number): string {
  return String(value).padStart(width);
}

async function main(args: string[]): Promise<number> {
  const value = (flag: string): string | undefined => {
    const at = args.indexOf(flag);
    return at === -1 ? undefined : args[at + 1];
  };
  const minutes = Number(value("--minutes") ?? 30);
  if (!Number.isInteger(minutes) || minutes < 2) {
    console.error("soak: --minutes takes a whole number of minutes, at least 2");
    return 2;
  }
  const expiryFlag = value("--expiry-at");
  // The expiry takes about three minutes (the 2-minute lease runs out, then a new one): only in
  // runs long enough to have steady minutes on both sides of it.
  const expiryAt =
    expiryFlag !== undefined ? Number(expiryFlag) : minutes >= 5 ? Math.floor(minutes / 2) : undefined;
  if (expiryAt !== undefined && (!Number.isInteger(expiryAt) || expiryAt < 2 || expiryAt + 3 > minutes)) {
    console.error(`soak: --expiry-at must leave the first minute and 3 minutes after it: 2..${minutes - 3}`);
    return 2;
  }
  if (process.getuid?.() !== 0) {
    console.error("soak: run as root (network namespaces, a bridge, TAP devices): sudo bun scripts/soak.ts");
    return 1;
  }
  const report = await runSoak({ minutes, binary: value("--binary"), expiryAt });
  return report.failures.length === 0 ? 0 : 1;
}

if (import.meta.main) {
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
