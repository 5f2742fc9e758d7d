// The macOS runtime end to end, on Linux: runOnDarwin with the vmnet double in place of
// vmnet.framework/libSystem, a real guest, real dnsmasq (standing in for bootpd), real attack
// tools, tcpdump on the bridge. What this proves of the darwin path, and what only a Mac can, is
// listed in README ("Proven on Linux, to check on a Mac").
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  ADDRESSES,
  BANNER_PORT,
  BANNERS,
  closeFd,
  commandForwarder,
  datagramSocketPair,
  type Forwarder,
  type Guest,
  type GuestLease,
  Topology,
  waitFor,
} from "../e2e/lib/index.ts";
import { bunCommand } from "../support/emulation.ts";

let topology: Topology;
const workDir = mkdtempSync(join(tmpdir(), "softnet-darwin-e2e-"));

beforeAll(async () => {
  topology = await Topology.create();
});

afterAll(async () => {
  await topology?.teardown();
  rmSync(workDir, { recursive: true, force: true });
});

function darwinSoftnet(extraArgs: string[], doubleLog: string) {
  return commandForwarder(`softnet (macOS runtime on the vmnet double) ${extraArgs.join(" ")}`, (context) => [
    ...bunCommand(),
    "test/darwin/softnet-on-double.ts",
    "--double-log",
    doubleLog,
    "--vm-fd",
    "0",
    "--vm-mac-address",
    context.vmMac,
    "--bridge",
    context.bridge,
    "--log-level",
    "debug",
    ...extraArgs,
  ]);
}

describe("the macOS runtime against the vmnet double", () => {
  let guest: Guest;
  let forwarder: Forwarder;
  let lease: GuestLease;
  const doubleLog = join(workDir, "double.log");

  beforeAll(async () => {
    guest = await topology.addGuest();
    forwarder = await guest.attach(darwinSoftnet(["--expose", "2222:22"], doubleLog));
    lease = await guest.dhcp();
  });

  test("the guest gets its lease through vmnet, and softnet learns it", async () => {
    expect(lease.router).toBe(ADDRESSES.gateway);
    await waitFor("softnet to log the lease", () =>
      forwarder.log.includes(`lease learned: ${lease.address}`),
    );
    expect(forwarder.log).toContain("through vmnet");
  });

  test("it reaches the gateway and the global host, not the private server", async () => {
    expect(await guest.ping(ADDRESSES.gateway)).toBe(true);
    expect((await guest.tcpConnect(ADDRESSES.globalHost, BANNER_PORT)).stdout).toContain(BANNERS.globalHost);
    expect(await guest.ping(ADDRESSES.privateServer, { waitSeconds: 1 })).toBe(false);
  });

  test("ARP and IP spoofing do not reach the bridge", async () => {
    const capture = await topology.startCapture();
    const arpspoof = guest.spawn("arpspoof", [
      "arpspoof",
      "-i",
      "eth0",
      "-t",
      ADDRESSES.gateway,
      "192.168.64.50",
    ]);
    await guest.exec(
      ["hping3", "-c", "10", "-i", "u10000", "-S", "-p", "80", "-a", "192.168.64.77", ADDRESSES.globalHost],
      {
        timeoutMs: 10_000,
      },
    );
    await Bun.sleep(2500);
    await arpspoof.stop("SIGKILL");
    await capture.stop();
    expect(arpspoof.log).toMatch(/is-at/);
    expect(await capture.count(`ether src ${guest.mac} and arp and not arp src host ${lease.address}`)).toBe(
      0,
    );
    expect(await capture.count(`ether src ${guest.mac} and ip and not src host ${lease.address}`)).toBe(0);
    expect(forwarder.log).toContain("arp-spoof");
    expect(forwarder.log).toContain("ip-spoof");
  });

  test("--expose of a free port becomes a vmnet port-forwarding rule to the leased address", async () => {
    await waitFor("the forward to be installed", () =>
      forwarder.log.includes(`port forwards installed: TCP 2222→22 to ${lease.address}`),
    );
    const calls = readFileSync(doubleLog, "utf8");
    // Checked at start with xnu's struct sockaddr_in (the double reads it as xnu does), then released.
    expect(calls).toContain("bind sin_len=16 sin_family=2 port=2222 address=0.0.0.0 result=0");
    expect(calls.indexOf("bind ")).toBeLessThan(calls.indexOf("start "));
    expect(calls).toContain(
      `forward add protocol=6 external=2222 family=2 address=${lease.address} internal=22`,
    );
  });

  test("softnet runs as nobody after set-up (setgid/initgroups/setuid through the darwin bindings)", () => {
    const pid = forwarder.daemon.pid;
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    expect(status.match(/^Uid:\s*(.*)$/m)?.[1]).toBe("65534\t65534\t65534\t65534");
    expect(status.match(/^Gid:\s*(.*)$/m)?.[1]).toBe("65534\t65534\t65534\t65534");
  });

  test("SIGINT: exit 0, the forward removed, the interface stopped, no double violations", async () => {
    const port = forwarder.bridgePort;
    expect(await forwarder.stop("SIGINT")).toBe(0);
    expect(readFileSync(doubleLog, "utf8")).toContain("forward remove protocol=6 external=2222 family=2");
    expect(existsSync(`/sys/class/net/${port}`)).toBe(false);
    expect(forwarder.log).toContain("vmnet double: 0 violations");
    await guest.stopAll();
  });
});

describe("--expose of a port in use on the Mac", () => {
  test("is refused in one line, exit 1, before vmnet is asked for anything; the service keeps its port", async () => {
    // A host service on every address (PostgreSQL's port): vmnet's forward, a pf rdr, would divert
    // the connections that reach it from the network.
    const service = await topology.startTcpServer(topology.hostNamespace, "0.0.0.0", 5432, "mac-postgres");
    const doubleLog = join(workDir, "double-port-in-use.log");
    const { vmEnd, hostEnd } = datagramSocketPair();
    try {
      const child = Bun.spawn(
        [
          "ip",
          "netns",
          "exec",
          topology.hostNamespace,
          ...bunCommand(),
          "test/darwin/softnet-on-double.ts",
          "--double-log",
          doubleLog,
          "--vm-fd",
          "0",
          "--vm-mac-address",
          "02:00:00:00:00:5b",
          "--bridge",
          topology.bridge,
          "--expose",
          "5432:22",
        ],
        { stdin: hostEnd, stdout: "ignore", stderr: "pipe" },
      );
      // Without the check softnet would start vmnet and run on: stopped here, so the test fails
      // with what it said instead of hanging.
      const ended = await Promise.race([child.exited, Bun.sleep(30_000).then(() => "still running")]);
      if (ended === "still running") child.kill("SIGKILL");
      const [stderr, code] = await Promise.all([new Response(child.stderr).text(), child.exited]);
      expect({ code, stderr }).toEqual({
        code: 1,
        stderr: "softnet: cannot expose port 5432: it is in use on this host\n",
      });
      // The double's record: the check's bind (xnu's struct sockaddr_in, read by the double as
      // xnu does) met the port in use, and vmnet was never started nor asked for a forward.
      const calls = readFileSync(doubleLog, "utf8");
      expect(calls).toContain("bind sin_len=16 sin_family=2 port=5432 address=0.0.0.0 result=EADDRINUSE");
      expect(calls).not.toContain("start");
      expect(calls).not.toContain("forward add");
      // The service still gets its connections.
      const reply = await topology.hostExec(["nc", "-N", "-w", "2", ADDRESSES.gateway, "5432"], {
        stdin: "",
      });
      expect(reply.stdout).toContain("mac-postgres");
    } finally {
      closeFd(vmEnd);
      closeFd(hostEnd);
      await service.stop("SIGTERM");
    }
  });
});

describe("as root, nothing is compiled (Bun's cc writes into /tmp/bun-cc-<real uid>)", () => {
  // Bun stages its headers once per process, at the first cc(), in /tmp/bun-cc-<real uid>, and
  // follows a `node` entry there wherever it points. Planted in root's own staging directory (as
  // root: this is the test's doing), a symlink catches any compile that runs with real uid 0:
  // before the fix, blocks.c (needed before vmnet starts, as root) was compiled as root.
  test("the native callbacks are compiled as the user softnet drops to, not as root", async () => {
    const rootStaging = "/tmp/bun-cc-0";
    const sentinel = mkdtempSync(join(workDir, "cc-sentinel-"));
    const saved = `${rootStaging}.saved-${process.pid}`;
    if (existsSync(rootStaging)) renameSync(rootStaging, saved);
    mkdirSync(rootStaging, { mode: 0o700 });
    symlinkSync(sentinel, join(rootStaging, "node"));
    const guest = await topology.addGuest();
    try {
      const forwarder = await guest.attach(darwinSoftnet([], join(workDir, "double-cc.log")));
      await waitFor("softnet to forward", () => forwarder.log.includes("forwarding for VM"));
      expect(await forwarder.stop("SIGINT")).toBe(0);
    } finally {
      rmSync(rootStaging, { recursive: true, force: true });
      if (existsSync(saved)) renameSync(saved, rootStaging);
      await guest.stopAll();
    }
    expect(readdirSync(sentinel)).toEqual([]);
    // It did compile, as nobody: Bun's staging directory for uid 65534 holds its headers.
    expect(statSync("/tmp/bun-cc-65534/stdbool.h").uid).toBe(65534);
  });
});
