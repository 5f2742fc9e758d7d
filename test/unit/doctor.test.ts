/**
 * `softnet doctor`'s parts that need no root and no network: the DHCP and ARP probe frames (built
 * and read with src/wire), the probe loop over a scripted link, the checklist and its exit code,
 * the command line, and the PATH lookup. The checks themselves run end to end in
 * test/e2e/doctor.test.ts (Linux) and test/darwin/doctor.test.ts (the macOS path on the double).
 */
import { describe, expect, test } from "bun:test";
import { chmodSync, linkSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { decideCaller } from "../../src/caller.ts";
import { parseCommandLine } from "../../src/cli.ts";
import type { DoctorOptions } from "../../src/doctor/cli.ts";
import { type DoctorContext, lookUpSoftnet, pathCheck, sameFile } from "../../src/doctor/common.ts";
import { type BridgeAccessList, bridgeAccessCheck } from "../../src/doctor/linux.ts";
import {
  arpProbeFrame,
  discoverFrame,
  isArpReplyFrom,
  LinkProbe,
  offerIn,
  throwawayMac,
} from "../../src/doctor/probe.ts";
import {
  Checklist,
  type DoctorReport,
  exitCodeOf,
  formatChecklist,
  formatJson,
} from "../../src/doctor/report.ts";
import { SoftnetError, UsageError } from "../../src/errors.ts";
import type { FrameBatch, FrameLink } from "../../src/platform/link.ts";
import { ArpOperation, emitArp, parseArp } from "../../src/wire/arp.ts";
import { formatMac, parseMac } from "../../src/wire/bytes.ts";
import { BootpOp, DhcpMessageType, parseDhcp } from "../../src/wire/dhcp.ts";
import { EtherType, emitEthernet, parseEthernet } from "../../src/wire/ethernet.ts";
import { parseIpv4Packet } from "../../src/wire/ipv4.ts";
import { parseUdp } from "../../src/wire/udp.ts";
import { dhcpClientFrame, dhcpServerFrame, udpFrame } from "../support/frames.ts";

const PROBE_MAC = parseMac("02:d0:c0:00:00:07")!;
const XID = 0x5eed_1234;
const GATEWAY = 0xc0a8_4001; // 192.168.64.1

function offerFor(mac: number, xid: number, overrides: Record<string, unknown> = {}): Uint8Array {
  return dhcpServerFrame({
    messageType: DhcpMessageType.OFFER,
    clientMac: formatMac(mac),
    xid,
    yourAddress: "192.168.64.23",
    router: "192.168.64.1",
    leaseTimeSeconds: 600,
    dnsServers: ["192.168.64.1"],
    dstMac: formatMac(mac),
    ...overrides,
  });
}

/** The same bytes marked as a later fragment (offset 8): they carry no UDP header. */
function laterFragment(frame: Uint8Array): Uint8Array {
  const copy = frame.slice();
  copy[14 + 6] = 0x00; // flags: neither DF nor MF
  copy[14 + 7] = 0x01; // fragment offset 1 × 8 bytes
  return copy;
}

/** The DHCP payload of a frame, read back through the wire module. */
function dhcpOf(frame: Uint8Array) {
  const ip = parseIpv4Packet(frame.subarray(14))!;
  const udp = parseUdp(ip.payload)!;
  return { ethernet: parseEthernet(frame)!, ip: ip.repr, udp: udp.repr, dhcp: parseDhcp(udp.payload)! };
}

describe("the DHCP probe's frames", () => {
  test("a DISCOVER from the throwaway MAC, broadcast, chaddr = source MAC, never a REQUEST", () => {
    const { ethernet, ip, udp, dhcp } = dhcpOf(discoverFrame(PROBE_MAC, XID));
    expect(ethernet).toEqual({
      destination: "ff:ff:ff:ff:ff:ff",
      source: "02:d0:c0:00:00:07",
      etherType: EtherType.IPV4,
    });
    expect([ip.source, ip.destination, ip.checksumValid]).toEqual(["0.0.0.0", "255.255.255.255", true]);
    expect(udp).toEqual({ sourcePort: 68, destinationPort: 67 });
    expect(dhcp.op).toBe(BootpOp.REQUEST);
    expect(dhcp.messageType).toBe(DhcpMessageType.DISCOVER);
    expect(dhcp.xid).toBe(XID);
    expect(dhcp.clientMac).toBe("02:d0:c0:00:00:07");
  });

  test("the OFFER for this MAC and transaction is read, with what it offers", () => {
    const offer = offerIn(offerFor(PROBE_MAC, XID), PROBE_MAC, XID);
    expect(offer?.from).toBe("192.168.64.1");
    expect(offer?.dhcp.yourAddress).toBe("192.168.64.23");
    expect(offer?.dhcp.leaseTimeSeconds).toBe(600);
    expect(offer?.dhcp.router).toBe("192.168.64.1");
  });

  test.each([
    ["another transaction", offerFor(PROBE_MAC, XID + 1)],
    ["another client's OFFER", offerFor(PROBE_MAC + 1, XID)],
    ["an ACK", offerFor(PROBE_MAC, XID, { messageType: DhcpMessageType.ACK })],
    ["a NAK", offerFor(PROBE_MAC, XID, { messageType: DhcpMessageType.NAK })],
    ["the DISCOVER itself (client to server)", discoverFrame(PROBE_MAC, XID)],
    ["a client frame", dhcpClientFrame({ srcMac: formatMac(PROBE_MAC) })],
    ["a DNS answer", udpFrame({ src: "192.168.64.1", dst: "192.168.64.23", sport: 53, dport: 68 })],
    ["a truncated OFFER", offerFor(PROBE_MAC, XID).subarray(0, 200)],
    ["a later IPv4 fragment", laterFragment(offerFor(PROBE_MAC, XID))],
  ])("ignores %s", (_name, frame) => {
    expect(offerIn(frame, PROBE_MAC, XID)).toBeUndefined();
  });

  test("never throws, whatever arrives", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
        expect(offerIn(bytes, PROBE_MAC, XID)).toBeUndefined();
        expect(isArpReplyFrom(bytes, GATEWAY, PROBE_MAC)).toBe(false);
      }),
      { numRuns: 2000 },
    );
    // Every prefix of a valid OFFER is cut short somewhere: none matches, none throws.
    const offer = offerFor(PROBE_MAC, XID);
    expect(offerIn(offer, PROBE_MAC, XID)).toBeDefined();
    for (let length = 0; length < offer.length; length++) {
      expect(offerIn(offer.subarray(0, length), PROBE_MAC, XID)).toBeUndefined();
    }
  });

  test("throwaway MACs are unicast and locally administered, whatever the random bytes", () => {
    for (let first = 0; first < 256; first++) {
      const mac = throwawayMac(Uint8Array.of(first, 1, 2, 3, 4, 5));
      const firstOctet = Math.floor(mac / 2 ** 40);
      expect(firstOctet & 0x01).toBe(0); // unicast
      expect(firstOctet & 0x02).toBe(2); // locally administered
      expect(mac % 2 ** 40).toBe(0x01_0203_0405);
    }
    expect(throwawayMac()).not.toBe(throwawayMac());
  });

  test("ARP probes ask for the gateway from 0.0.0.0; only the gateway's reply to us counts", () => {
    const probe = parseArp(arpProbeFrame(PROBE_MAC, GATEWAY).subarray(14));
    expect(probe).toEqual({
      operation: ArpOperation.REQUEST,
      senderMac: "02:d0:c0:00:00:07",
      senderIp: "0.0.0.0",
      targetMac: "00:00:00:00:00:00",
      targetIp: "192.168.64.1",
    });
    const reply = (senderIp: string, targetMac: string, operation: number = ArpOperation.REPLY) =>
      emitEthernet(
        { source: "5e:00:00:00:00:01", destination: targetMac, etherType: EtherType.ARP },
        emitArp({ operation, senderMac: "5e:00:00:00:00:01", senderIp, targetMac, targetIp: "0.0.0.0" }),
      );
    expect(isArpReplyFrom(reply("192.168.64.1", "02:d0:c0:00:00:07"), GATEWAY, PROBE_MAC)).toBe(true);
    expect(isArpReplyFrom(reply("192.168.64.9", "02:d0:c0:00:00:07"), GATEWAY, PROBE_MAC)).toBe(false);
    expect(isArpReplyFrom(reply("192.168.64.1", "02:d0:c0:00:00:08"), GATEWAY, PROBE_MAC)).toBe(false);
    expect(
      isArpReplyFrom(reply("192.168.64.1", "02:d0:c0:00:00:07", ArpOperation.REQUEST), GATEWAY, PROBE_MAC),
    ).toBe(false);
  });
});

/** A link that records what it is sent and hands back what `respond` makes of it. */
class ScriptedLink implements FrameLink {
  readonly description = "scripted link";
  readonly pollFd = -1;
  readonly sent: Uint8Array[] = [];
  private readonly waiting: Uint8Array[] = [];
  constructor(private readonly respond: (frame: Uint8Array) => Uint8Array[]) {}

  receive(batch: FrameBatch): number {
    let count = 0;
    while (count < batch.capacity && this.waiting.length > 0) {
      const frame = this.waiting.shift()!;
      batch.bytes.set(frame, batch.offsetOf(count));
      batch.lengths[count++] = frame.length;
    }
    batch.count = count;
    return count;
  }

  send(batch: FrameBatch, slots: Uint16Array, count: number): number {
    for (let i = 0; i < count; i++) {
      const start = batch.offsetOf(slots[i]!);
      const frame = batch.bytes.slice(start, start + batch.lengths[slots[i]!]!);
      this.sent.push(frame);
      this.waiting.push(...this.respond(frame));
    }
    return count;
  }

  close(): void {}
}

describe("the probe loop over a link", () => {
  test("a server that answers: the OFFER for our DISCOVER comes back, after other traffic", async () => {
    const link = new ScriptedLink((frame) => {
      const { dhcp } = dhcpOf(frame);
      // Someone else's OFFER first, then ours.
      return [offerFor(PROBE_MAC + 5, dhcp.xid), offerFor(parseMac(dhcp.clientMac)!, dhcp.xid)];
    });
    const result = await new LinkProbe({ link, maxFrameSize: 1514 }).dhcpOffer(PROBE_MAC, 5000);
    expect(result.offer?.dhcp.yourAddress).toBe("192.168.64.23");
    expect(result.offer?.dhcp.clientMac).toBe(formatMac(PROBE_MAC));
    expect(result.discovers).toBe(1);
    expect(link.sent.map((frame) => dhcpOf(frame).dhcp.messageType)).toEqual([DhcpMessageType.DISCOVER]);
  });

  test("no server: no offer, and nothing but DISCOVERs sent", async () => {
    const link = new ScriptedLink(() => []);
    const result = await new LinkProbe({ link, maxFrameSize: 1514 }).dhcpOffer(PROBE_MAC, 250, 100);
    expect(result.offer).toBeUndefined();
    expect(result.discovers).toBeGreaterThanOrEqual(1);
    expect(link.sent.length).toBe(result.discovers);
    for (const frame of link.sent) expect(dhcpOf(frame).dhcp.messageType).toBe(DhcpMessageType.DISCOVER);
  });

  test("an interruption ends the wait", async () => {
    const link = new ScriptedLink(() => []);
    let stop = false;
    const waiting = new LinkProbe({ link, maxFrameSize: 1514 }, () => stop).dhcpOffer(PROBE_MAC, 60_000);
    stop = true;
    expect((await waiting).offer).toBeUndefined();
  });

  test("an ARP burst counts the gateway's replies and reports the rest", async () => {
    const link = new ScriptedLink((frame) => {
      const probe = parseArp(frame.subarray(14))!;
      return [
        emitEthernet(
          { source: "5e:00:00:00:00:01", destination: probe.senderMac, etherType: EtherType.ARP },
          emitArp({
            operation: ArpOperation.REPLY,
            senderMac: "5e:00:00:00:00:01",
            senderIp: probe.targetIp,
            targetMac: probe.senderMac,
            targetIp: "0.0.0.0",
          }),
        ),
        dhcpClientFrame({ srcMac: "02:00:00:00:00:99" }),
      ];
    });
    let settledAfterSend = false;
    const burst = await new LinkProbe({ link, maxFrameSize: 1514 }).arpBurst(
      PROBE_MAC,
      GATEWAY,
      20,
      10,
      () => {
        settledAfterSend = link.sent.length === 20;
      },
    );
    expect(burst).toEqual({ sent: 20, replies: 20, otherFrames: 20 });
    expect(settledAfterSend).toBe(true);
  });
});

function report(statuses: Array<"ok" | "problem" | "skipped" | "n/a">, interrupted?: string): DoctorReport {
  const list = new Checklist();
  statuses.forEach((status, i) => {
    if (status === "problem") list.problem(`c${i}`, `check ${i}`, `saw ${i}`, `fix ${i}`);
    else if (status === "skipped") list.skipped(`c${i}`, `check ${i}`, `why ${i}`, `undo ${i}`);
    else if (status === "n/a") list.notApplicable(`c${i}`, `check ${i}`, `not here ${i}`);
    else list.ok(`c${i}`, `check ${i}`, `saw ${i}`, { value: i });
  });
  return {
    softnet: { version: "1.2.3", commit: "abc", executable: "/x/softnet" },
    system: "Linux 6 x64",
    bridge: "br0",
    checks: list.results,
    interrupted,
  };
}

describe("the checklist and the exit code", () => {
  test("exit 0 without problems (skips and n/a do not fail a run), 1 with one, 1 when interrupted", () => {
    expect(exitCodeOf(report(["ok", "n/a", "skipped"]))).toBe(0);
    expect(exitCodeOf(report(["ok", "problem", "ok"]))).toBe(1);
    expect(exitCodeOf(report(["ok"], "SIGINT"))).toBe(1);
  });

  test("one line per check; problems and skips say what to do; a verdict at the end", () => {
    const text = formatChecklist(report(["ok", "problem", "skipped", "n/a"]));
    expect(text.split("\n")).toEqual([
      "softnet doctor: softnet 1.2.3 (abc) on Linux 6 x64, bridge br0",
      "ok       check 0: saw 0",
      "PROBLEM  check 1: saw 1",
      "         what to do: fix 1",
      "skipped  check 2: why 2",
      "         what to do: undo 2",
      "n/a      check 3: not here 3",
      "1 problem found",
      "",
    ]);
    expect(formatChecklist(report(["ok"]))).toEndWith("no problem found\n");
  });

  test("JSON has every check with its status and values, and the verdict", () => {
    const json = JSON.parse(formatJson(report(["ok", "problem"])));
    expect(json.ok).toBe(false);
    expect(json.problems).toBe(1);
    expect(json.softnet).toEqual({ version: "1.2.3", commit: "abc", executable: "/x/softnet" });
    expect(json.checks.map((check: { id: string; status: string }) => [check.id, check.status])).toEqual([
      ["c0", "ok"],
      ["c1", "problem"],
    ]);
    expect(json.checks[0].values).toEqual({ value: 0 });
    expect(json.checks[1].advice).toBe("fix 1");
  });

  test("a result with the id of an earlier one replaces it in place (placeholders)", () => {
    const list = new Checklist();
    list.skipped("a", "A", "not reached");
    list.ok("b", "B", "fine");
    list.problem("a", "A", "broken", "fix it");
    expect(list.results.map((result) => [result.id, result.status])).toEqual([
      ["a", "problem"],
      ["b", "ok"],
    ]);
  });
});

describe("softnet doctor's command line", () => {
  function doctor(args: string[]): DoctorOptions {
    const parsed = parseCommandLine(["doctor", ...args]);
    if (parsed.kind !== "doctor") throw new Error(`not the doctor: ${parsed.kind}`);
    return parsed.options;
  }
  function usageError(args: string[]): string {
    try {
      parseCommandLine(["doctor", ...args]);
    } catch (error) {
      expect(error).toBeInstanceOf(UsageError);
      return (error as UsageError).what;
    }
    throw new Error(`accepted: ${args.join(" ")}`);
  }

  test("defaults, and every option", () => {
    expect(doctor([])).toEqual({
      bridge: undefined,
      json: false,
      path: undefined,
      bootpdLeaseTimeSeconds: 600,
      dhcpTimeoutSeconds: 10,
      vmMac: undefined,
    });
    expect(
      doctor([
        "--bridge",
        "br0",
        "--json",
        "--path",
        "/a:/b",
        "--bootpd-lease-time",
        "120",
        "--dhcp-timeout",
        "3",
        "--vm-mac-address",
        "12:34:56:78:9a:bc",
      ]),
    ).toEqual({
      bridge: "br0",
      json: true,
      path: "/a:/b",
      bootpdLeaseTimeSeconds: 120,
      dhcpTimeoutSeconds: 3,
      vmMac: 0x123456789abc,
    });
  });

  test.each([
    [["--bridge", "a/b"], /invalid --bridge "a\/b"/],
    [["--dhcp-timeout", "0"], /invalid --dhcp-timeout "0"/],
    [["--dhcp-timeout", "61"], /invalid --dhcp-timeout "61"/],
    [["--bootpd-lease-time", "0"], /invalid --bootpd-lease-time "0"/],
    [["--vm-fd", "0"], /unknown option '--vm-fd'/],
    [["--vm-mac-address", "01:00:5e:00:00:01"], /invalid --vm-mac-address "01:00:5e:00:00:01"/],
    [["--vm-mac-address", "nope"], /invalid --vm-mac-address "nope"/],
    [["extra"], /too many arguments/],
  ])("%p is refused", (args, message) => {
    expect(usageError(args)).toMatch(message);
  });

  test("--help prints the doctor's help; softnet's own command line is unchanged", () => {
    const help = parseCommandLine(["doctor", "--help"]);
    expect(help.kind).toBe("print");
    expect(help.kind === "print" && help.text).toContain("Usage: softnet doctor [options]");
    const main = parseCommandLine(["--help"]);
    expect(main.kind === "print" && main.text).toContain("softnet doctor");
    // "doctor" anywhere but first is still a stray argument to softnet itself.
    expect(() =>
      parseCommandLine(["--vm-fd", "0", "--vm-mac-address", "02:00:00:00:00:01", "doctor"]),
    ).toThrow(/too many arguments/);
  });
});

describe("which softnet Tart would find on PATH", () => {
  function tree() {
    const root = mkdtempSync(join(tmpdir(), "softnet-doctor-path-"));
    const dirs = ["a", "b", "c"].map((name) => {
      const dir = join(root, name);
      Bun.spawnSync(["mkdir", dir]);
      return dir;
    });
    return { root, dirs, [Symbol.dispose]: () => rmSync(root, { recursive: true, force: true }) };
  }

  test("the first executable softnet wins; non-executable ones and relative entries are reported", () => {
    using t = tree();
    const [a, b, c] = t.dirs as [string, string, string];
    writeFileSync(join(a, "softnet"), "not executable");
    chmodSync(join(a, "softnet"), 0o644);
    writeFileSync(join(b, "softnet"), "#!/bin/sh\n");
    chmodSync(join(b, "softnet"), 0o755);
    writeFileSync(join(c, "softnet"), "#!/bin/sh\n");
    chmodSync(join(c, "softnet"), 0o755);
    expect(lookUpSoftnet(["", "relative/bin", a, join(t.root, "missing"), b, c].join(":"))).toEqual({
      found: join(b, "softnet"),
      ignored: ["(empty: the current directory)", "relative/bin"],
      notExecutable: [join(a, "softnet")],
    });
    expect(lookUpSoftnet(a).found).toBeUndefined();
  });

  test("same file means same device and inode: a symlink or hard link is, a copy is not", () => {
    using t = tree();
    const [a, b] = t.dirs as [string, string];
    const original = join(a, "softnet");
    writeFileSync(original, "binary");
    symlinkSync(original, join(b, "via-symlink"));
    linkSync(original, join(b, "via-hardlink"));
    writeFileSync(join(b, "copy"), "binary");
    expect(sameFile(join(b, "via-symlink"), original)).toBe(true);
    expect(sameFile(join(b, "via-hardlink"), original)).toBe(true);
    expect(sameFile(join(b, "copy"), original)).toBe(false);
    expect(sameFile(join(b, "missing"), original)).toBe(false);
  });

  function context(self: string, overrides: Partial<DoctorContext>): DoctorContext {
    return {
      started: { realUid: 0, effectiveUid: 0, realGid: 0 },
      caller: { kind: "root", uid: 0, gid: 0, groups: undefined },
      asRoot: true,
      identity: undefined as never,
      env: {},
      pathOption: undefined,
      self: { path: self, compiled: true, command: [self] },
      interrupted: () => false,
      asCaller: (work) => work(),
      cleanups: new Set(),
      ...overrides,
    };
  }

  test("ok when PATH's softnet is this one, a problem when it is another, skipped when PATH is unknown", () => {
    using t = tree();
    const [a, b] = t.dirs as [string, string];
    const self = join(a, "softnet-1.2.3");
    writeFileSync(self, "this");
    chmodSync(self, 0o755);
    symlinkSync(self, join(a, "softnet"));
    writeFileSync(join(b, "softnet"), "another");
    chmodSync(join(b, "softnet"), 0o755);

    const ok = new Checklist();
    pathCheck(ok, context(self, { pathOption: `${a}:${b}` }));
    expect(ok.get("path")?.status).toBe("ok");
    expect(ok.get("path")?.detail).toContain(`${join(a, "softnet")} (→ ${self}) is this softnet`);

    const other = new Checklist();
    pathCheck(other, context(self, { pathOption: `${b}:${a}` }));
    expect(other.get("path")?.status).toBe("problem");
    expect(other.get("path")?.detail).toContain(`Tart would start ${join(b, "softnet")}`);

    // Under sudo the environment's PATH is sudo's: without --path the check cannot tell.
    const underSudo = new Checklist();
    const sudoEnv = { PATH: `${a}`, SUDO_UID: "1000", SUDO_GID: "1000" };
    pathCheck(
      underSudo,
      context(self, { env: sudoEnv, caller: decideCaller({ uid: 0, gid: 0, groups: [0] }, sudoEnv) }),
    );
    expect(underSudo.get("path")?.status).toBe("skipped");
    expect(underSudo.get("path")?.advice).toContain('--path "$PATH"');

    // The lookup runs as the caller: asCaller is where the doctor becomes them.
    let asCallerRan = false;
    pathCheck(
      new Checklist(),
      context(self, {
        pathOption: a,
        asCaller: (work) => {
          asCallerRan = true;
          return work();
        },
      }),
    );
    expect(asCallerRan).toBe(true);
  });
});

describe("the bridge access list check", () => {
  // Shaped like enforceBridgeAcl: root is not limited, others may use br0 only.
  const onlyBr0: BridgeAccessList = {
    path: "/etc/softnet/bridge.conf",
    enforce(bridge, caller) {
      if (caller.kind === "root" || bridge === "br0") return;
      throw new SoftnetError(`uid ${caller.uid} may not use bridge ${bridge}`, {
        hint: "ask root to allow it",
      });
    },
  };
  const started = (realUid: number, env: Record<string, string> = {}) => ({
    caller: decideCaller({ uid: realUid, gid: realUid, groups: [] }, env),
  });

  test("no list in this build: n/a, and the bridge may be used", () => {
    const list = new Checklist();
    expect(bridgeAccessCheck(list, started(0), "br1", undefined)).toBe(true);
    expect(list.get("linux.bridge-acl")?.status).toBe("n/a");
  });

  test("the caller behind sudo is refused a bridge: a problem with the list's own advice", () => {
    const list = new Checklist();
    expect(bridgeAccessCheck(list, started(0, { SUDO_UID: "1000" }), "br1", onlyBr0)).toBe(false);
    const result = list.get("linux.bridge-acl")!;
    expect(result.status).toBe("problem");
    expect(result.detail).toBe(
      "softnet started by uid 1000 would refuse br1: uid 1000 may not use bridge br1",
    );
    expect(result.advice).toBe("ask root to allow it");
  });

  test("allowed callers, and root, who is not limited", () => {
    const allowed = new Checklist();
    expect(bridgeAccessCheck(allowed, started(1000), "br0", onlyBr0)).toBe(true);
    expect(allowed.get("linux.bridge-acl")?.detail).toBe("/etc/softnet/bridge.conf lets uid 1000 use br0");
    const root = new Checklist();
    expect(bridgeAccessCheck(root, started(0), "br1", onlyBr0)).toBe(true);
    expect(root.get("linux.bridge-acl")?.detail).toStartWith(
      "root is not limited by /etc/softnet/bridge.conf",
    );
  });
});
