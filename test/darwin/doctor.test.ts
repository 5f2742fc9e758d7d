// `softnet doctor`'s macOS path against the vmnet double: runDarwinDoctor with the same
// DarwinLibraries injection runOnDarwin takes (test/darwin/doctor-on-double.ts), in the e2e
// topology's host namespace, where the double backs vmnet with TAP ports on br0 and dnsmasq stands
// in for bootpd. What only a Mac can answer (vmnet's real numbers, bootpd) the doctor answers
// there; here each check must run, report the double's values, say it ran on the double, and
// fail when the double is made to fail.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fallbackMaxPackets, VmnetStatus } from "../../src/platform/darwin/vmnet.ts";
import { check, Topology } from "../e2e/lib/index.ts";
import { bunCommand, emulator } from "../support/emulation.ts";
import { checkoutReadableByOthers, readableBun } from "../support/readable-checkout.ts";
import { fullLeaseFile, type HostScenario } from "./host-fixtures.ts";
import { Inject, REPO } from "./support.ts";

const SCRIPT = "test/darwin/doctor-on-double.ts";
const NOBODY = 65534;

const DARWIN_CHECKS = [
  "version",
  "privileges.root",
  "privileges.setuid",
  "privileges.sudo",
  "path",
  "darwin.system",
  "darwin.symbols",
  "darwin.callbacks.compile",
  "darwin.bootpd",
  "darwin.vmnet.host",
  "darwin.vmnet.shared",
  "darwin.dhcp",
  "darwin.privilege-drop",
  "darwin.forward",
  "darwin.events",
  "darwin.callbacks.thread",
  "darwin.stop",
  "darwin.firewall",
  "darwin.leases.pool",
  "darwin.leases.clash",
  "darwin.subnet.routes",
  "darwin.bootpd.service",
  "darwin.local-network",
];
/** The lines that need root (the host checks read what a user may read too). */
const ROOT_ONLY_CHECKS = DARWIN_CHECKS.slice(
  DARWIN_CHECKS.indexOf("darwin.bootpd"),
  DARWIN_CHECKS.indexOf("darwin.stop") + 1,
);

interface Check {
  id: string;
  status: "ok" | "problem" | "skipped" | "n/a";
  detail: string;
  advice?: string;
  values?: Record<string, unknown>;
}

let topology: Topology;
let work: string;
let pathDir: string;

beforeAll(async () => {
  topology = await Topology.create();
  work = mkdtempSync(join(tmpdir(), "softnet-doctor-darwin-"));
  // What Tart would find on PATH: this very script (executable, like an installed softnet).
  pathDir = join(work, "bin");
  mkdirSync(pathDir);
  symlinkSync(join(REPO, SCRIPT), join(pathDir, "softnet"));
});

afterAll(async () => {
  await topology?.teardown();
  if (work !== undefined) rmSync(work, { recursive: true, force: true });
});

/** The double script's arguments for a Mac whose answers differ from a healthy one's. */
function scenario(overrides: HostScenario): string[] {
  return ["--host-scenario", JSON.stringify(overrides)];
}

let runs = 0;
/** Runs the doctor on the double in the host namespace; returns its JSON, exit code and stderr. */
async function doctorOnDouble(
  options: { double?: string[]; doctor?: string[]; wrap?: string[]; log?: boolean; cwd?: string } = {},
) {
  const log = join(work, `double-${++runs}.log`);
  const argv = [
    ...(options.wrap ?? []),
    // From the readable copy, by the Bun there (and the emulator, under the arm64 step): the user
    // the run is wrapped as may not reach this checkout.
    ...(options.cwd === undefined ? bunCommand() : [...emulator(), readableBun()]),
    SCRIPT,
    ...(options.log === false ? [] : ["--double-log", log]),
    ...(options.double ?? []),
    "--json",
    "--path",
    pathDir,
    "--dhcp-timeout",
    "5",
    ...(options.doctor ?? []),
  ];
  const result = await topology.hostExec(argv, { cwd: options.cwd ?? REPO, timeoutMs: 60_000 });
  let report: { ok: boolean; system: string; checks: Check[] };
  try {
    report = JSON.parse(result.stdout);
  } catch {
    throw new Error(`not JSON (exit ${result.code}):\n${result.stdout}\n${result.stderr}`);
  }
  const checks = Object.fromEntries(report.checks.map((check) => [check.id, check])) as Record<string, Check>;
  return {
    code: result.code,
    report,
    checks,
    stderr: result.stderr,
    doubleLog: () => readFileSync(log, "utf8"),
  };
}

describe("softnet doctor's macOS path against the vmnet double", () => {
  test("everything works: every check ok (bootpd and Local Network n/a), exit 0, each result names the double", async () => {
    const portsBefore = await topology.bridgePorts();
    const run = await doctorOnDouble({ double: ["--double-bridge", topology.bridge] });
    const { checks } = run;
    expect(run.report.checks.map((check) => check.id)).toEqual(DARWIN_CHECKS);
    expect(run.report.checks.filter((check) => check.status === "problem")).toEqual([]);
    expect(run.code).toBe(0);
    expect(run.stderr).toContain("vmnet double: 0 violations");
    expect(run.report.system).toMatch(/^vmnet double on Linux /);
    for (const id of DARWIN_CHECKS.filter((id) => id.startsWith("darwin."))) {
      expect([id, checks[id]!.values?.system]).toEqual([id, run.report.system]);
      if (id !== "darwin.bootpd" && id !== "darwin.local-network")
        expect([id, checks[id]!.status]).toEqual([id, "ok"]);
    }
    expect(checks["darwin.system"]!.detail).toContain("not macOS: the results below are the double's");
    expect(checks["darwin.bootpd"]!.status).toBe("n/a");
    expect(checks["darwin.bootpd"]!.detail).toContain("there is no bootpd here");

    // The data symbols' values are the key strings the double exports.
    expect(checks["darwin.symbols"]!.values!.vmnet_mtu_key).toBe("vmnet_mtu");
    // The double's interface mirrors br0: MTU 1500, max packet size MTU + 14, batches of 64.
    for (const id of ["darwin.vmnet.host", "darwin.vmnet.shared"]) {
      expect(checks[id]!.values).toMatchObject({
        gateway: "192.168.64.1",
        subnetMask: "255.255.255.0",
        mtu: 1500,
        maxPacketSize: 1514,
        maxPacketSizeMinusMtu: 14,
        readMaxPackets: 64,
        writeMaxPackets: 64,
        readMaxPacketsReported: true,
      });
    }
    // DHCP through vmnet: dnsmasq offered, nobody leased.
    const dhcp = checks["darwin.dhcp"]!.values!;
    expect(topology.logs()).toContain(
      `DHCPOFFER(${topology.bridge}) ${dhcp.offeredAddress} ${dhcp.probeMac}`,
    );
    expect(topology.dhcpServerLeases().filter((lease) => lease.mac === dhcp.probeMac)).toEqual([]);
    // The forward was added and removed by vmnet calls, after the drop to nobody.
    expect(checks["darwin.privilege-drop"]!.values).toMatchObject({ uid: NOBODY, gid: NOBODY });
    const forward = checks["darwin.forward"]!.values!;
    const log = run.doubleLog();
    expect(log).toContain(
      `forward add protocol=6 external=${forward.externalPort} family=2 address=${dhcp.offeredAddress} internal=22`,
    );
    expect(log).toContain(`forward remove protocol=6 external=${forward.externalPort}`);
    expect(log.match(/^start mode=(\d+)/gm)).toEqual(["start mode=1000", "start mode=1001"]);
    expect(log.match(/^stop rules_left=0$/gm)?.length).toBe(2);
    expect(checks["darwin.stop"]!.values!.uid).toBe(NOBODY);
    // The burst: every probe answered, and event callbacks counted while JavaScript slept.
    const events = checks["darwin.events"]!.values!;
    expect(events.replies).toBe(events.probesSent);
    expect(events.eventsWhileIdle as number).toBeGreaterThan(0);
    expect(await topology.bridgePorts()).toEqual(portsBefore);
  });

  test("vmnet before macOS 15 (no read/write max packets keys): softnet's fallback, said so", async () => {
    const run = await doctorOnDouble({
      double: ["--double-bridge", topology.bridge, "--double-variant", "old-macos"],
    });
    expect(run.code).toBe(0);
    const shared = run.checks["darwin.vmnet.shared"]!;
    expect(shared.values).toMatchObject({
      readMaxPackets: fallbackMaxPackets(1514),
      writeMaxPackets: fallbackMaxPackets(1514),
      readMaxPacketsReported: false,
      writeMaxPacketsReported: false,
    });
    expect(shared.detail).toContain(
      "(softnet's fallback: vmnet has no vmnet_read_max_packets_key before macOS 15)",
    );
    expect(run.checks["darwin.symbols"]!.detail).toContain(
      "read/write max packets keys absent (before macOS 15)",
    );
  });

  test("vmnet refuses to start: that mode's check fails with vmnet's status and what to do", async () => {
    const run = await doctorOnDouble({
      double: [
        "--double-bridge",
        topology.bridge,
        "--inject",
        `${Inject.START_COMPLETION}:${VmnetStatus.FAILURE}`,
      ],
    });
    expect(run.code).toBe(1);
    const host = run.checks["darwin.vmnet.host"]!;
    expect(host.status).toBe("problem");
    expect(host.detail).toContain("cannot start the vmnet interface: VMNET_FAILURE (1001)");
    expect(host.advice).toContain("another process using the shared network");
    expect(run.checks["darwin.vmnet.shared"]!.status).toBe("ok");
    expect(run.stderr).toContain("vmnet double: 0 violations");
  });

  test("no DHCP server behind vmnet: the DHCP check fails with advice; the rest still runs", async () => {
    const host = topology.hostNamespace;
    await check(["ip", "-n", host, "link", "add", "brnobootpd", "type", "bridge", "stp_state", "0"]);
    await check(["ip", "-n", host, "addr", "add", "10.78.0.1/24", "dev", "brnobootpd"]);
    await check(["ip", "-n", host, "link", "set", "brnobootpd", "up"]);
    const run = await doctorOnDouble({
      double: ["--double-bridge", "brnobootpd", "--no-host-fixtures"],
      doctor: ["--dhcp-timeout", "2"],
    });
    expect(run.code).toBe(1);
    expect(run.report.checks.filter((check) => check.status === "problem").map((check) => check.id)).toEqual([
      "darwin.dhcp",
    ]);
    expect(run.checks["darwin.dhcp"]!.detail).toMatch(/^no DHCP OFFER within 2 s/);
    expect(run.checks["darwin.dhcp"]!.advice).toContain("no DHCP server answering");
    expect(run.checks["darwin.firewall"]!.status).toBe("n/a");

    // With a Mac's answers standing in (firewall off, bootpd loaded), the silence is bootpd's own.
    const wedged = await doctorOnDouble({
      double: ["--double-bridge", "brnobootpd", ...scenario({ global: "firewall-global.off" })],
      doctor: ["--dhcp-timeout", "2"],
    });
    expect(
      wedged.report.checks.filter((check) => check.status === "problem").map((check) => check.id),
    ).toEqual(["darwin.dhcp", "darwin.bootpd.service"]);
    expect(wedged.checks["darwin.bootpd.service"]!.detail).toContain("bootpd may be wedged");
    expect(wedged.checks["darwin.bootpd.service"]!.advice).toBe(
      "sudo launchctl kickstart -kp system/com.apple.bootpd",
    );
    expect(wedged.checks["darwin.dhcp"]!.advice).toContain("bootpd is loaded but did not answer");
    // The subnet the host checks use is the one vmnet reported.
    expect(wedged.checks["darwin.subnet.routes"]!.values!.subnet).toBe("10.78.0.0/24");
    // A firewall that blocks bootpd is named in the DHCP line's advice instead.
    const blocked = await doctorOnDouble({
      double: ["--double-bridge", "brnobootpd", ...scenario({ bootpd: "firewall-apps.blocked" })],
      doctor: ["--dhcp-timeout", "2"],
    });
    expect(blocked.checks["darwin.dhcp"]!.advice).toContain("the firewall blocks bootpd");
    expect(blocked.checks["darwin.bootpd.service"]!.status).toBe("ok");
    // Without an offer the forward goes to the subnet's second address.
    expect(run.checks["darwin.forward"]!.values!.address).toBe("10.78.0.2");
    expect(run.checks["darwin.forward"]!.status).toBe("ok");
  });

  test("each reason a VM gets no address is named, with its remedy, from a Mac's answers", async () => {
    // Firewall blocking bootpd, a full pool, a VPN route over the shared subnet.
    const first = await doctorOnDouble({
      double: [
        "--double-bridge",
        topology.bridge,
        ...scenario({
          bootpd: "firewall-apps.blocked",
          leases: { text: fullLeaseFile(253, 0x685bf986) },
          routes: "routes.vpn",
        }),
      ],
    });
    expect(first.code).toBe(1);
    expect(first.stderr).toContain("vmnet double: 0 violations");
    const problems = (run: typeof first) =>
      run.report.checks.filter((check) => check.status === "problem").map((check) => check.id);
    expect(problems(first)).toEqual(["darwin.firewall", "darwin.leases.pool", "darwin.subnet.routes"]);
    expect(first.checks["darwin.firewall"]!.advice).toContain(
      "sudo /usr/libexec/ApplicationFirewall/socketfilterfw --add /usr/libexec/bootpd",
    );
    expect(first.checks["darwin.leases.pool"]!.detail).toContain("253 of 253 addresses");
    expect(first.checks["darwin.leases.pool"]!.advice).toContain("--bootpd-lease-time");
    expect(first.checks["darwin.subnet.routes"]!.detail).toContain("via utun4");

    // A managed Mac blocking everything, clones sharing an identifier, bootpd's job missing.
    const second = await doctorOnDouble({
      double: [
        "--double-bridge",
        topology.bridge,
        ...scenario({
          managed: true,
          global: "firewall-global.state2",
          blockall: "firewall-blockall.on",
          leases: "leases.clones",
          service: "missing",
        }),
      ],
      doctor: ["--vm-mac-address", "52:54:00:12:34:01"],
    });
    expect(problems(second)).toEqual(["darwin.firewall", "darwin.leases.clash", "darwin.bootpd.service"]);
    expect(second.checks["darwin.firewall"]!.advice).toContain("managed by a profile");
    expect(second.checks["darwin.leases.clash"]!.detail).toContain("52:54:00:12:34:01, 52:54:00:12:34:02");
    expect(second.checks["darwin.leases.clash"]!.values!.vmLeases).toEqual(["192.168.64.5"]);
    expect(second.checks["darwin.bootpd.service"]!.detail).toContain("Internet Sharing did not start it");
  });

  test("bootpd's lease time (stand-in preferences): written, read back, matched by the OFFER, put back", async () => {
    // dnsmasq on br0 hands out 120 s leases: the stand-in for bootpd "uses" what was written.
    const run = await doctorOnDouble({
      double: ["--double-bridge", topology.bridge, "--fake-bootpd"],
      doctor: ["--bootpd-lease-time", "120"],
    });
    expect(run.code).toBe(0);
    const bootpd = run.checks["darwin.bootpd"]!;
    expect(bootpd.status).toBe("ok");
    expect(bootpd.values).toMatchObject({
      written: 120,
      before: "not set (bootpd's default)",
      readBack: "120 s",
      offeredLeaseSeconds: 120,
      restored: "ok",
    });
    expect(bootpd.detail).toContain("bootpd offered exactly 120 s: it uses the setting");
    expect(run.stderr).toContain('fake preferences after: {"unrelated":"kept"}');
    expect(run.stderr).toContain("fake objects alive: 0");

    // Another lease time than the server's: the mismatch is named.
    const other = await doctorOnDouble({
      double: ["--double-bridge", topology.bridge, "--fake-bootpd"],
      doctor: ["--bootpd-lease-time", "600"],
    });
    expect(other.checks["darwin.bootpd"]!.detail).toContain("bootpd offered 120 s, not 600");
  });

  test("not root: the symbols and the compile are checked; vmnet is not touched, each line says 'needs root'", async () => {
    const portsBefore = await topology.bridgePorts();
    const run = await doctorOnDouble({
      double: ["--double-bridge", topology.bridge],
      wrap: ["setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", "--"],
      log: false,
      cwd: checkoutReadableByOthers(),
    });
    expect(run.code).toBe(1);
    expect(run.checks["privileges.root"]!.status).toBe("problem");
    expect(run.checks["darwin.symbols"]!.status).toBe("ok");
    expect(run.checks["darwin.callbacks.compile"]!.status).toBe("ok");
    for (const id of ROOT_ONLY_CHECKS) {
      expect([id, run.checks[id]!.status, run.checks[id]!.detail]).toEqual([
        id,
        "skipped",
        "needs root: not run",
      ]);
    }
    expect(await topology.bridgePorts()).toEqual(portsBefore);
  });
});
