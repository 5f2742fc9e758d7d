// The macOS doctor's reasons for "the VM gets no address" (src/doctor/darwin-host.ts), and the pure
// readers behind them (darwin-host-parse.ts), fed the fixtures in test/darwin/fixtures/host/.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HOST_COMMANDS, hostChecks, readBounded, runFixed } from "../../src/doctor/darwin-host.ts";
import {
  clashingRoutes,
  leaseCensus,
  normaliseHardwareAddress,
  parseFirewallAllowsBuiltIn,
  parseFirewallAppList,
  parseFirewallBlockAll,
  parseFirewallGlobalState,
  parseLaunchctlPrint,
  parseLeaseFile,
  parseRoutes,
  parseVmnetPreferences,
  sharedAddresses,
  sharedIdentifiers,
} from "../../src/doctor/darwin-host-parse.ts";
import { Checklist } from "../../src/doctor/report.ts";
import { fixtureReader, fullLeaseFile, HOST_FIXTURES, type HostScenario } from "../darwin/host-fixtures.ts";

const fixture = (name: string) => readFileSync(join(HOST_FIXTURES, name), "utf8");
const SHARED = { network: 0xc0a84000, prefixLength: 24 };
const VMNET = { gateway: 0xc0a84001, mask: 0xffffff00 };

describe("bootpd's lease file", () => {
  test("entries as PLCache_write writes them: unpadded hex bytes, hex expiry, an entry with no lease", () => {
    const file = parseLeaseFile(fixture("leases.healthy"));
    expect(file.kind).toBe("entries");
    if (file.kind !== "entries") return;
    expect(file.malformedLines).toBe(0);
    expect(file.entries).toHaveLength(3);
    expect(file.entries[0]).toMatchObject({
      name: "runner-1",
      ipAddress: 0xc0a84002,
      hardwareAddress: "b6:1c:42:af:96:18",
      expiresAt: 0x685bf986,
    });
    expect(file.entries[2]!.hardwareAddress).toBe("02:00:00:00:00:04");
    expect(file.entries[2]!.expiresAt).toBeUndefined();
    expect(leaseCensus(file.entries, SHARED, 0x685bf900)).toEqual({
      inSubnet: 3,
      live: 1,
      expired: 1,
      permanent: 1,
      pool: 253,
    });
  });

  test("empty, truncated and foreign text: no throw, said so", () => {
    expect(parseLeaseFile("")).toEqual({ kind: "entries", entries: [], malformedLines: 0 });
    expect(parseLeaseFile(fixture("leases.garbage")).kind).toBe("unreadable");
    expect(parseLeaseFile(fixture("leases.truncated"))).toMatchObject({ kind: "unreadable" });
    const bad = parseLeaseFile("{\n\tip_address=192.168.64.7\n\tlease=soon\n}\n");
    expect(bad.kind === "entries" && bad.entries[0]!.badLease).toBe(true);
    expect(parseLeaseFile(`{\n\tname=${"x".repeat(5000)}\n}\n`).kind).toBe("unreadable");
  });

  test("hardware addresses other than six-byte Ethernet are not taken for MACs", () => {
    expect(normaliseHardwareAddress("1,a:b:c:d:e:f")).toBe("0a:0b:0c:0d:0e:0f");
    expect(normaliseHardwareAddress("ff,0:1:2")).toBeUndefined();
    expect(normaliseHardwareAddress("1,a:b:c:d:e")).toBeUndefined();
  });

  test("clones sharing an identifier, and two VMs on one address, are found", () => {
    const clones = parseLeaseFile(fixture("leases.clones"));
    if (clones.kind !== "entries") throw new Error("unreadable");
    expect(sharedIdentifiers(clones.entries, SHARED)).toEqual([
      {
        identifier: "ff,0:0:0:1:0:1:2c:aa:bb:cc:dd:ee:ff:11:22:33",
        hardwareAddresses: ["52:54:00:12:34:01", "52:54:00:12:34:02"],
        addresses: ["192.168.64.5", "192.168.64.6"],
      },
    ]);
    const one = parseLeaseFile(fixture("leases.one-address"));
    if (one.kind !== "entries") throw new Error("unreadable");
    expect(sharedAddresses(one.entries, SHARED, 0x685bf000)).toEqual([
      { address: "192.168.64.2", hardwareAddresses: ["32:d3:d8:9e:5c:53", "b6:1c:42:af:96:18"] },
    ]);
    // Once both have expired, bootpd may hand the address to either: not a clash.
    expect(sharedAddresses(one.entries, SHARED, 0x7000_0000)).toEqual([]);
  });
});

describe("socketfilterfw, plutil, netstat and launchctl answers", () => {
  test("the firewall's answers", () => {
    expect(parseFirewallGlobalState(fixture("firewall-global.on"))).toBe(1);
    expect(parseFirewallGlobalState(fixture("firewall-global.off"))).toBe(0);
    expect(parseFirewallGlobalState(fixture("firewall-global.state2"))).toBe(2);
    expect(parseFirewallGlobalState("")).toBeUndefined();
    expect(parseFirewallBlockAll(fixture("firewall-blockall.on"))).toBe(true);
    expect(parseFirewallBlockAll(fixture("firewall-blockall.off"))).toBe(false);
    expect(parseFirewallBlockAll("")).toBeUndefined();
    const bootpd = "/usr/libexec/bootpd";
    expect(parseFirewallAppList(fixture("firewall-apps.permitted"), bootpd)).toBe("permitted");
    expect(parseFirewallAppList(fixture("firewall-apps.blocked"), bootpd)).toBe("blocked");
    // Not in the list: absent, though --getappblocked would have said "permitted" for it.
    expect(parseFirewallAppList(fixture("firewall-apps.absent"), bootpd)).toBe("absent");
    expect(parseFirewallAppList("", bootpd)).toBe("absent");
    // A path that only contains bootpd's is another application.
    expect(
      parseFirewallAppList("1 : /usr/libexec/bootpd-helper\n ( Block incoming connections )\n", bootpd),
    ).toBe("absent");
    // The entry without its verdict line: unknown, not a guess.
    expect(
      parseFirewallAppList("ALF: total number of apps = 1 \n\n1 : /usr/libexec/bootpd \n", bootpd),
    ).toBeUndefined();
    expect(parseFirewallAllowsBuiltIn(fixture("firewall-allowsigned.enabled"))).toBe(true);
    expect(parseFirewallAllowsBuiltIn(fixture("firewall-allowsigned.disabled"))).toBe(false);
  });

  test("vmnet's preferences as plutil prints them; a bad value is unreadable, no keys is the default", () => {
    expect(parseVmnetPreferences(fixture("vmnet-preferences.xml"))).toEqual({
      kind: "set",
      address: 0x0a4d4001,
      mask: 0xffffff00,
    });
    expect(parseVmnetPreferences("<plist><dict/></plist>")).toEqual({
      kind: "set",
      address: undefined,
      mask: undefined,
    });
    expect(parseVmnetPreferences("bplist00\u0000").kind).toBe("unreadable");
    expect(
      parseVmnetPreferences(
        "<plist><dict><key>Shared_Net_Address</key><string>192.168.064.1</string></dict></plist>",
      ).kind,
    ).toBe("unreadable");
  });

  test("routes: BSD-abbreviated destinations; only a foreign route over the subnet clashes", () => {
    const routes = parseRoutes(fixture("routes.plain"));
    expect(routes.find((route) => route.interfaceName === "bridge100")!.destination).toEqual(SHARED);
    expect(
      routes.find((route) => route.gateway === "127.0.0.1" && route.flags === "UCS")!.destination,
    ).toEqual({
      network: 0x7f000000,
      prefixLength: 8,
    });
    expect(clashingRoutes(routes, SHARED)).toEqual([]);
    const vpn = clashingRoutes(parseRoutes(fixture("routes.vpn")), SHARED);
    expect(vpn.map((route) => route.interfaceName)).toEqual(["utun4"]);
    expect(vpn[0]!.destination).toEqual({ network: 0xc0a84000, prefixLength: 18 });
    expect(parseRoutes("")).toEqual([]);
    expect(parseRoutes("Destination Gateway Flags Netif Expire\n300.1 x U en0\n")).toEqual([]);
  });

  test("launchctl print: running, not loaded, unreadable", () => {
    expect(parseLaunchctlPrint(0, fixture("bootpd-service.running"), "")).toEqual({
      kind: "loaded",
      running: true,
      pid: 4711,
      lastExit: "0",
    });
    expect(parseLaunchctlPrint(113, "", fixture("bootpd-service.missing"))).toEqual({ kind: "not-loaded" });
    expect(parseLaunchctlPrint(1, "", "Operation not permitted").kind).toBe("unreadable");
  });

  test("the programs run are fixed absolute paths with fixed arguments", () => {
    for (const argv of Object.values(HOST_COMMANDS)) expect(argv[0]!.startsWith("/")).toBe(true);
  });
});

async function run(
  scenario: HostScenario,
  input: { dhcpUnanswered?: boolean; vmMac?: number; macosMajor?: number } = {},
) {
  const list = new Checklist();
  const causes = await hostChecks(list, fixtureReader(scenario), {
    vmnet: VMNET,
    vmnetRunning: true,
    dhcpUnanswered: input.dhcpUnanswered ?? false,
    vmMac: input.vmMac,
    macosMajor: input.macosMajor ?? 15,
    systemName: "macOS 15.1 arm64",
  });
  return { causes, get: (id: string) => list.get(id)!, list };
}

describe("each cause is named, with what to do", () => {
  test("a healthy Mac: every line ok (Local Network n/a)", async () => {
    const { list, causes } = await run({});
    expect(causes).toEqual([]);
    expect(list.results.map((result) => [result.id, result.status])).toEqual([
      ["darwin.firewall", "ok"],
      ["darwin.leases.pool", "ok"],
      ["darwin.leases.clash", "ok"],
      ["darwin.subnet.routes", "ok"],
      ["darwin.bootpd.service", "ok"],
      ["darwin.local-network", "n/a"],
    ]);
  });

  test("the firewall blocks bootpd: add and unblock; managed: a profile entry", async () => {
    const blocked = await run({ bootpd: "firewall-apps.blocked" }, { dhcpUnanswered: true });
    expect(blocked.get("darwin.firewall").status).toBe("problem");
    expect(blocked.get("darwin.firewall").advice).toContain("--add /usr/libexec/bootpd");
    expect(blocked.get("darwin.firewall").advice).toContain("--unblock /usr/libexec/bootpd");
    expect(blocked.causes).toContain("the firewall blocks bootpd");
    const managed = await run({ bootpd: "firewall-apps.blocked", managed: true });
    expect(managed.get("darwin.firewall").advice).toContain("com.apple.security.firewall");
    const absent = await run({
      bootpd: "firewall-apps.absent",
      allowsigned: "firewall-allowsigned.disabled",
    });
    expect(absent.get("darwin.firewall").status).toBe("problem");
    // macOS 15: no entry of its own, allowed as built-in signed software.
    const builtIn = await run({ bootpd: "firewall-apps.absent" });
    expect(builtIn.get("darwin.firewall").status).toBe("ok");
  });

  test("block-all, and a permitted entry that is stale", async () => {
    const all = await run({ global: "firewall-global.state2", blockall: "firewall-blockall.on" });
    expect(all.get("darwin.firewall").detail).toContain("blocks all incoming connections");
    expect(all.get("darwin.firewall").advice).toContain("--setblockall off");
    const stale = await run({}, { dhcpUnanswered: true });
    expect(stale.get("darwin.firewall").detail).toContain("may be stale");
    expect(stale.get("darwin.firewall").advice).toContain("--remove /usr/libexec/bootpd");
    const off = await run({ global: "firewall-global.off" }, { dhcpUnanswered: true });
    expect(off.get("darwin.firewall").status).toBe("ok");
  });

  test("a full pool: counted against the subnet, with the lease-time remedy", async () => {
    const full = await run({ leases: { text: fullLeaseFile(253, 0x685bf986) } });
    const pool = full.get("darwin.leases.pool");
    expect(pool.status).toBe("problem");
    expect(pool.values).toMatchObject({ inSubnet: 253, live: 253, pool: 253 });
    expect(pool.advice).toContain("--bootpd-lease-time");
    expect(pool.advice).toContain("launchctl kickstart -kp system/com.apple.bootpd");
    // All expired: bootpd can reclaim them, so not a problem, but said.
    const expired = await run({ leases: { text: fullLeaseFile(253, 0x685bf986) }, now: 0x7000_0000 });
    expect(expired.get("darwin.leases.pool").status).toBe("ok");
    expect(expired.get("darwin.leases.pool").detail).toContain("reclaims expired leases only");
  });

  test("no lease file, or an unreadable one", async () => {
    const missing = await run({ leases: "missing" });
    expect(missing.get("darwin.leases.pool").detail).toContain("does not exist");
    const unreadable = await run({ leases: "unreadable" });
    expect(unreadable.get("darwin.leases.pool").status).toBe("skipped");
    expect(unreadable.get("darwin.leases.clash").detail).toContain("EACCES");
  });

  test("clones with one identifier; two VMs with one address; this VM's own leases", async () => {
    const clones = await run({ leases: "leases.clones" });
    expect(clones.get("darwin.leases.clash").status).toBe("problem");
    expect(clones.get("darwin.leases.clash").detail).toContain("52:54:00:12:34:01, 52:54:00:12:34:02");
    const one = await run({ leases: "leases.one-address" });
    expect(one.get("darwin.leases.clash").detail).toContain("192.168.64.2 is leased to");
    const mine = await run({}, { vmMac: 0xb61c42af9618 });
    expect(mine.get("darwin.leases.clash").detail).toContain("b6:1c:42:af:96:18 holds 192.168.64.2");
  });

  test("a VPN route over vmnet's subnet names its interface and the plist remedy", async () => {
    const vpn = await run({ routes: "routes.vpn" });
    const routes = vpn.get("darwin.subnet.routes");
    expect(routes.status).toBe("problem");
    expect(routes.detail).toContain("192.168.64.0/18 via utun4");
    expect(routes.advice).toContain("com.apple.vmnet.plist Shared_Net_Address");
  });

  test("bootpd not loaded while vmnet runs; loaded but silent", async () => {
    const missing = await run({ service: "missing" });
    expect(missing.get("darwin.bootpd.service").status).toBe("problem");
    expect(missing.get("darwin.bootpd.service").advice).toContain("launchctl");
    const wedged = await run({ global: "firewall-global.off" }, { dhcpUnanswered: true });
    expect(wedged.get("darwin.bootpd.service").detail).toContain("may be wedged");
    expect(wedged.get("darwin.bootpd.service").advice).toBe(
      "sudo launchctl kickstart -kp system/com.apple.bootpd",
    );
  });

  test("Local Network privacy: before macOS 15 there is none; from 15 what TN3179 settles and what not", async () => {
    expect((await run({}, { macosMajor: 14 })).get("darwin.local-network").detail).toContain(
      "before macOS 15",
    );
    expect((await run({})).get("darwin.local-network").detail).toContain("not settled");
  });
});

describe("how the release reads the Mac: bounded, fixed, no environment", () => {
  test("a program gets none of the doctor's environment", async () => {
    process.env.SOFTNET_DOCTOR_LEAK = "leaked";
    try {
      const output = await runFixed(["/bin/sh", "-c", 'echo "[$SOFTNET_DOCTOR_LEAK]"']);
      expect(output).toEqual({ code: 0, stdout: "[]\n", stderr: "" });
    } finally {
      delete process.env.SOFTNET_DOCTOR_LEAK;
    }
  });

  test("endless output is cut at the bound and the program killed; so is one that never ends", async () => {
    const endless = await runFixed([
      "/bin/sh",
      "-c",
      "while :; do echo 0123456789abcdef0123456789abcdef; done",
    ]);
    expect(endless.code).not.toBe(0);
    expect(endless.stdout.length).toBeLessThanOrEqual(1 << 20);
    const stuck = await runFixed(["/bin/sleep", "60"], 200);
    expect(stuck.code).not.toBe(0);
  });

  test("files: missing, a directory, too large, and one that reads", () => {
    const dir = mkdtempSync(join(tmpdir(), "softnet-doctor-host-"));
    try {
      expect(readBounded(join(dir, "absent"))).toEqual({ kind: "missing" });
      expect(readBounded(dir).kind).toBe("unreadable");
      writeFileSync(join(dir, "big"), Buffer.alloc((1 << 20) + 1, 0x41));
      expect(readBounded(join(dir, "big"))).toMatchObject({ kind: "unreadable" });
      writeFileSync(join(dir, "leases"), fixture("leases.healthy"));
      expect(readBounded(join(dir, "leases"))).toEqual({ kind: "text", text: fixture("leases.healthy") });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
