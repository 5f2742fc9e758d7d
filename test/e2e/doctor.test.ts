// `softnet doctor` on Linux, end to end: the compiled binary (as people run it) in the e2e
// topology's host namespace, where br0 has an address and dnsmasq serves DHCP. Each case breaks one
// thing a VM needs and checks that exactly that check says so, with advice, and that the doctor
// leaves nothing behind: no TAP port, no lease in dnsmasq's file.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { ADDRESSES, check, Daemon, inNamespace, run, Topology, waitFor } from "./lib/index.ts";

const REPO = resolve(import.meta.dir, "../..");
const NOBODY = 65534;

/** Every check a Linux run reports, in order. */
const LINUX_CHECKS = [
  "version",
  "privileges.root",
  "privileges.setuid",
  "privileges.sudo",
  "path",
  "linux.bridge",
  "linux.bridge.up",
  "linux.bridge.ipv4",
  "linux.bridge-acl",
  "linux.tun",
  "linux.tap",
  "linux.isolation",
  "linux.dhcp",
  "linux.nft",
];

interface Check {
  id: string;
  title: string;
  status: "ok" | "problem" | "skipped" | "n/a";
  detail: string;
  advice?: string;
  values?: Record<string, unknown>;
}
interface Report {
  ok: boolean;
  problems: number;
  system: string;
  bridge: string;
  checks: Check[];
}

let topology: Topology;
let work: string;
/** The compiled softnet, in a directory only root and nobody's group can enter. */
let binary: string;
let binDir: string;

beforeAll(async () => {
  topology = await Topology.create();
  work = mkdtempSync(join(tmpdir(), "softnet-doctor-e2e-"));
  binDir = join(work, "bin");
  mkdirSync(binDir);
  binary = join(binDir, "softnet");
  // A plain compile (not the hardened release): what matters here is a softnet that is its own
  // executable, as installed, so that the setuid and PATH checks see a real binary.
  await check(
    [
      process.execPath,
      "build",
      "--compile",
      "--no-compile-autoload-dotenv",
      "--no-compile-autoload-bunfig",
      "src/main.ts",
      "--outfile",
      binary,
    ],
    { cwd: REPO, timeoutMs: 120_000 },
  );
  // The setuid test makes it setuid root for a moment: only root and nobody's group may reach it.
  chownSync(work, 0, NOBODY);
  chmodSync(work, 0o710);
  chownSync(binDir, 0, NOBODY);
  chmodSync(binDir, 0o710);
}, 180_000);

afterAll(async () => {
  await topology?.teardown();
  if (work !== undefined) rmSync(work, { recursive: true, force: true });
});

/** Runs the compiled doctor in the host namespace; `wrap` puts something in front (unshare, setpriv). */
async function doctor(args: string[], wrap: string[] = []) {
  const result = await topology.hostExec([...wrap, binary, "doctor", ...args], { timeoutMs: 60_000 });
  return result;
}

async function doctorJson(args: string[], wrap: string[] = []): Promise<{ code: number; report: Report }> {
  const result = await doctor([...args, "--json"], wrap);
  let report: Report;
  try {
    report = JSON.parse(result.stdout);
  } catch {
    throw new Error(`not JSON (exit ${result.code}):\n${result.stdout}\n${result.stderr}`);
  }
  return { code: result.code, report };
}

function byId(report: Report): Record<string, Check> {
  return Object.fromEntries(report.checks.map((check) => [check.id, check]));
}

/** Interfaces in the host namespace whose name says softnet made them (sn + 6 hex digits). */
async function softnetTaps(): Promise<string[]> {
  const links = JSON.parse(await check(inNamespace(topology.hostNamespace, ["ip", "-j", "link", "show"])));
  return (links as Array<{ ifname: string }>)
    .map((link) => link.ifname)
    .filter((name) => /^sn[0-9a-f]{6}$/.test(name));
}

describe("softnet doctor on Linux", () => {
  test("a healthy bridge: every check ok (or n/a), exit 0, JSON with every check, no lease taken", async () => {
    const portsBefore = await topology.bridgePorts();
    const { code, report } = await doctorJson(["--bridge", topology.bridge, "--path", `${binDir}:/usr/bin`]);
    const checks = byId(report);
    expect(report.checks.map((check) => check.id)).toEqual(LINUX_CHECKS);
    expect(report.checks.filter((check) => check.status === "problem")).toEqual([]);
    expect(code).toBe(0);
    expect(report.ok).toBe(true);
    for (const id of LINUX_CHECKS.filter((id) => id.startsWith("linux.") && id !== "linux.bridge-acl")) {
      expect([id, checks[id]!.status]).toEqual([id, "ok"]);
    }
    expect(checks.path!.status).toBe("ok");
    expect(checks.path!.detail).toContain(`${binary} is this softnet`);
    expect(checks["privileges.root"]!.status).toBe("ok");
    // The DHCP server really answered the probe: dnsmasq logged its OFFER to the throwaway MAC...
    const dhcp = checks["linux.dhcp"]!.values!;
    expect(dhcp.server).toBe(ADDRESSES.gateway);
    expect(dhcp.router).toBe(ADDRESSES.gateway);
    const offered = dhcp.offeredAddress as string;
    const last = Number(offered.split(".")[3]);
    expect(offered.startsWith("192.168.64.")).toBe(true);
    expect(last >= 10 && last <= 99).toBe(true);
    expect(topology.logs()).toContain(`DHCPOFFER(${topology.bridge}) ${offered} ${dhcp.probeMac}`);
    // ...and no lease was taken: DISCOVER only.
    expect(topology.logs()).not.toContain(`DHCPREQUEST(${topology.bridge}) ${offered}`);
    expect(topology.dhcpServerLeases().filter((lease) => lease.mac === dhcp.probeMac)).toEqual([]);
    // The temporary TAP was on the bridge (it has a name) and is gone.
    expect(checks["linux.tap"]!.values!.tap).toMatch(/^sn[0-9a-f]{6}$/);
    expect(await softnetTaps()).toEqual([]);
    expect(await topology.bridgePorts()).toEqual(portsBefore);
  });

  test("the checklist is one line per check, plus what to do for each one that is not ok", async () => {
    const json = await doctorJson(["--bridge", topology.bridge, "--path", binDir]);
    const result = await doctor(["--bridge", topology.bridge, "--path", binDir]);
    expect(result.code).toBe(0);
    const lines = result.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^softnet doctor: softnet \S+ \(\S+\) on Linux .*, bridge br0$/);
    expect(lines.at(-1)).toBe("no problem found");
    const checkLines = lines.filter((line) => /^(ok|PROBLEM|skipped|n\/a) +\S/.test(line));
    expect(checkLines.length).toBe(json.report.checks.length);
    json.report.checks.forEach((check, i) => {
      expect(checkLines[i]).toStartWith(
        `${{ problem: "PROBLEM" }[check.status as "problem"] ?? check.status}`,
      );
      expect(checkLines[i]).toContain(`${check.title}: `);
    });
  });

  test("a bridge without a DHCP server: the DHCP check fails with advice, exit 1, nothing left", async () => {
    const host = topology.hostNamespace;
    await check(["ip", "-n", host, "link", "add", "brnodhcp", "type", "bridge", "stp_state", "0"]);
    await check(["ip", "-n", host, "addr", "add", "10.77.0.1/24", "dev", "brnodhcp"]);
    await check(["ip", "-n", host, "link", "set", "brnodhcp", "up"]);
    const { code, report } = await doctorJson([
      "--bridge",
      "brnodhcp",
      "--dhcp-timeout",
      "2",
      "--path",
      binDir,
    ]);
    const checks = byId(report);
    expect(code).toBe(1);
    expect(report.checks.filter((check) => check.status === "problem").map((check) => check.id)).toEqual([
      "linux.dhcp",
    ]);
    expect(checks["linux.dhcp"]!.detail).toMatch(
      /^no DHCP OFFER within 2 s \(\d+ DISCOVERs from throwaway MAC/,
    );
    expect(checks["linux.dhcp"]!.advice).toContain("run a DHCP server for brnodhcp's subnet on brnodhcp");
    expect(checks["linux.tap"]!.status).toBe("ok");
    expect(await softnetTaps()).toEqual([]);
  });

  test("a missing bridge: said so, with the bridges there are; what needs it is skipped, not faked", async () => {
    const { code, report } = await doctorJson(["--bridge", "nosuchbr0", "--path", binDir]);
    const checks = byId(report);
    expect(code).toBe(1);
    expect(checks["linux.bridge"]!.status).toBe("problem");
    expect(checks["linux.bridge"]!.detail).toBe("there is no network interface nosuchbr0");
    expect(checks["linux.bridge"]!.advice).toContain("bridges here: br0");
    for (const id of ["linux.bridge.up", "linux.bridge.ipv4", "linux.tap", "linux.dhcp"]) {
      expect([id, checks[id]!.status, checks[id]!.detail]).toEqual([
        id,
        "skipped",
        "not checked: bridge nosuchbr0 is missing",
      ]);
    }
    expect(await softnetTaps()).toEqual([]);
  });

  test("no TUN device (an empty /dev/net in a mount namespace): the TUN check fails, no TAP is tried", async () => {
    const { code, report } = await doctorJson(
      ["--bridge", topology.bridge, "--path", binDir],
      [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount -t tmpfs -o size=4k softnet-no-tun /dev/net && exec "$0" "$@"',
      ],
    );
    const checks = byId(report);
    expect(code).toBe(1);
    expect(checks["linux.tun"]!.status).toBe("problem");
    expect(checks["linux.tun"]!.detail).toBe("/dev/net/tun does not exist: softnet cannot create TAP ports");
    expect(checks["linux.tun"]!.advice).toContain("modprobe tun");
    expect(checks["linux.tap"]!.status).toBe("skipped");
    expect(checks["linux.tap"]!.detail).toBe("not checked: /dev/net/tun is not usable");
    expect(checks["linux.dhcp"]!.status).toBe("skipped");
    // The rest of the machine is still checked.
    expect(checks["linux.bridge.ipv4"]!.status).toBe("ok");
    expect(existsSync("/dev/net/tun")).toBe(true); // only the doctor's namespace lost it
    expect(await softnetTaps()).toEqual([]);
  });

  test("SIGINT while it waits for DHCP: the TAP port is removed, exit 130, the lines so far printed", async () => {
    const daemon = new Daemon(
      "softnet doctor (waiting for DHCP)",
      inNamespace(topology.hostNamespace, [binary, "doctor", "--bridge", "brnodhcp", "--dhcp-timeout", "60"]),
    );
    try {
      const tap = await waitFor("the doctor's TAP port on brnodhcp", async () => {
        const ports = JSON.parse(
          await check(
            inNamespace(topology.hostNamespace, ["ip", "-j", "link", "show", "master", "brnodhcp"]),
          ),
        ) as Array<{ ifname: string }>;
        return ports[0]?.ifname;
      });
      expect(await daemon.stop("SIGINT")).toBe(130);
      expect(daemon.log).toContain("interrupted: SIGINT before every check had run");
      expect(daemon.log).toContain("/dev/net/tun is usable: ");
      const left = await run(inNamespace(topology.hostNamespace, ["ip", "link", "show", tap]));
      expect(left.code).not.toBe(0);
      expect(await softnetTaps()).toEqual([]);
    } finally {
      await daemon.stop("SIGKILL");
    }
  });

  test("started setuid root by nobody: root is given back before the first check, the rest says 'needs root'", async () => {
    // A directory only root can read, with a softnet in it: the PATH lookup finds it only if the
    // doctor still ran as root, so it proves the drop came first.
    const rootOnly = join(work, "root-only");
    mkdirSync(rootOnly, { mode: 0o700 });
    symlinkSync(binary, join(rootOnly, "softnet"));
    const portsBefore = await topology.bridgePorts();
    chmodSync(binary, 0o4755);
    let result: { code: number; report: Report };
    try {
      result = await doctorJson(
        ["--bridge", topology.bridge, "--path", `${rootOnly}:${binDir}`],
        ["setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", "--reset-env", "--"],
      );
    } finally {
      chmodSync(binary, 0o755);
    }
    const checks = byId(result.report);
    expect(result.code).toBe(1);
    expect(checks["privileges.root"]!.status).toBe("problem");
    // effectiveUidNow is read when the checks run: root was given back before them.
    expect(checks["privileges.root"]!.values).toEqual({
      realUid: NOBODY,
      effectiveUid: 0,
      effectiveUidNow: NOBODY,
    });
    expect(checks["privileges.root"]!.detail).toContain(`started by uid ${NOBODY} through the setuid bit`);
    expect(checks["privileges.setuid"]!.status).toBe("ok");
    expect(checks["privileges.setuid"]!.detail).toContain("it gave this run root");
    // As root, stat would have seen the root-only one (and access(2), which asks as the real user, refused it).
    expect(checks.path!.values!.found).toBe(join(binDir, "softnet"));
    expect(checks.path!.values!.notExecutable).toEqual([]);
    for (const id of ["linux.tap", "linux.dhcp", "linux.isolation"]) {
      expect([id, checks[id]!.status, checks[id]!.detail]).toEqual([id, "skipped", "needs root: not run"]);
    }
    expect(checks["linux.tun"]!.detail).toBe("/dev/net/tun exists; opening it needs root: not run");
    expect(await topology.bridgePorts()).toEqual(portsBefore);
  });

  test("without --bridge: a usage error naming the bridges there are", async () => {
    const result = await doctor([]);
    expect(result.code).toBe(2);
    expect(result.stdout).toBe("");
    expect(result.stderr).toMatch(/^softnet: doctor needs --bridge on Linux \(.*bridges here: .*br0.*\)\n$/);
  });
});
