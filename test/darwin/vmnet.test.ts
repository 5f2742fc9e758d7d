// The vmnet host link (src/platform/darwin/vmnet.ts), the very code that runs on macOS, run on Linux
// against the vmnet double (test/vmnet-double), which backs each interface with a TAP on a bridge
// in a private network namespace. What this proves and what only a Mac can: see the module comments
// and the lead's report; in short, ABI shapes, call sequences, threading and byte order are checked
// by the double, vmnet's own behaviour is not.

import { heapStats } from "bun:jsc";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { describeError, SoftnetError } from "../../src/errors.ts";
import { openDarwinSystem } from "../../src/platform/darwin/system.ts";
import {
  fallbackMaxPackets,
  openVmnet,
  type VmnetLink,
  type VmnetOptions,
  VmnetStatus,
} from "../../src/platform/darwin/vmnet.ts";
import { FrameBatch, SendOutcome } from "../../src/platform/link.ts";
import { epollReactorBackend } from "../../src/platform/linux/epoll-reactor.ts";
import { Reactor } from "../../src/platform/reactor.ts";
import { thrownBy } from "../support/errors.ts";
import { arpFrame } from "../support/frames.ts";
import {
  buildDouble,
  type DoubleControl,
  doubleControl,
  doubleLibraries,
  Inject,
  inPrivateNetworkNamespace,
  makeBridge,
  run,
  tempPath,
  waitFor,
} from "./support.ts";

inPrivateNetworkNamespace(import.meta.path, "vmnet host link against the double", (namespace) => {
  const BRIDGE = "sdbr0"; // 198.18.0.1/24 (benchmarking range, RFC 2544), MTU 1500
  const GATEWAY = 0xc6120001;
  let path: string;
  let double: DoubleControl;
  const logPath = tempPath("vmnet-calls.log");
  const links: VmnetLink[] = [];

  function open(options: Partial<VmnetOptions> = {}): VmnetLink {
    const link = openVmnet({ mode: "nat", isolate: true, libraries: doubleLibraries(path), ...options });
    links.push(link);
    return link;
  }

  /** Call log lines written since the last call of this function. */
  let logOffset = 0;
  function newLogLines(): string[] {
    const text = existsSync(logPath) ? readFileSync(logPath, "utf8") : "";
    const lines = text.slice(logOffset).split("\n").filter(Boolean);
    logOffset = text.length;
    return lines;
  }

  const openFds = () => readdirSync("/proc/self/fd").length;

  beforeAll(() => {
    expect(run(["ip", "netns", "identify", String(process.pid)]).trim()).toBe(namespace);
    // No IPv6 chatter (router solicitations, MLD) on the test bridge: every frame here is ours.
    writeFileSync("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
    writeFileSync("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1");
    makeBridge(BRIDGE, "198.18.0.1/24");
    path = buildDouble();
    double = doubleControl(path);
    double.configure(BRIDGE);
    rmSync(logPath, { force: true });
    double.setLog(logPath);
  });

  afterEach(() => {
    for (const link of links.splice(0)) link.close();
    double.setLimits(64, 64);
    // Every misuse the double can see is a violation; the module must commit none.
    expect(double.violations()).toEqual({ count: 0, last: "" });
    newLogLines();
  });

  afterAll(() => rmSync(logPath, { force: true }));

  const isArpReplyFrom = (ip: string) => (frame: Uint8Array) =>
    frame.length >= 42 &&
    frame[12] === 0x08 &&
    frame[13] === 0x06 &&
    frame[21] === 2 &&
    frame.subarray(28, 32).join(".") === ip;

  /** Puts frames in slots 0..n-1 of a batch and sends them all; returns what send() returned. */
  function sendFrames(link: VmnetLink, frames: Uint8Array[], outcomes?: Uint8Array): number {
    const batch = new FrameBatch(Math.max(frames.length, 1), 2048);
    frames.forEach((frame, slot) => {
      batch.bytes.set(frame, batch.offsetOf(slot));
      batch.lengths[slot] = frame.length;
    });
    return link.send(batch, Uint16Array.from(frames.keys()), frames.length, outcomes);
  }

  /** Receives until `count` frames matching `match` arrived or time ran out; returns them. */
  async function receiveMatching(
    link: VmnetLink,
    match: (frame: Uint8Array) => boolean,
    count = 1,
    ms = 3000,
    batch = new FrameBatch(16, 2048),
  ): Promise<Uint8Array[]> {
    const found: Uint8Array[] = [];
    const deadline = performance.now() + ms;
    while (found.length < count && performance.now() < deadline) {
      const received = link.receive(batch);
      for (let slot = 0; slot < received; slot++) {
        const offset = batch.offsetOf(slot);
        const frame = batch.bytes.slice(offset, offset + batch.lengths[slot]!);
        if (match(frame)) found.push(frame);
      }
      if (received === 0) await Bun.sleep(5);
    }
    return found;
  }

  async function waitForwarding(): Promise<void> {
    const tap = double.lastTap();
    await waitFor(() => readFileSync(`/sys/class/net/${tap}/brport/state`, "ascii").trim() === "3");
  }

  describe("starting an interface", () => {
    test("reads gateway, subnet, MTU, max packet size and batch limits from vmnet's parameters", () => {
      double.setLimits(32, 16);
      const link = open();
      expect(link.gateway).toBe(GATEWAY);
      expect(link.subnetMask).toBe(0xffffff00);
      expect(link.prefixLength).toBe(24);
      expect(link.mtu).toBe(1500);
      expect(link.maxPacketSize).toBe(1514);
      expect(link.maxFrameSize).toBe(1514);
      expect(link.readMaxPackets).toBe(32);
      expect(link.writeMaxPackets).toBe(16);
      expect(link.description).toBe("vmnet shared (NAT) interface 198.18.0.1/24");
      expect(link.pollFd).toBeGreaterThan(2);
      expect(newLogLines()).toEqual([
        "start mode=1001 isolation=true",
        `start-completion status=1000 tap=${double.lastTap()}`,
        "events on mask=1",
      ]);
      // The double copies isolation onto its bridge port: the flag has a visible effect.
      expect(readFileSync(`/sys/class/net/${double.lastTap()}/brport/isolated`, "ascii").trim()).toBe("1");
    });

    test("host mode and isolation off are passed through (--vm-net-type host, --allow 0.0.0.0/0)", () => {
      const link = open({ mode: "host", isolate: false });
      expect(link.description).toStartWith("vmnet host interface");
      expect(newLogLines()[0]).toBe("start mode=1000 isolation=false");
      expect(readFileSync(`/sys/class/net/${double.lastTap()}/brport/isolated`, "ascii").trim()).toBe("0");
    });

    test("without vmnet_read/write_max_packets in the parameters, batches fall back to Apple's documented limit", () => {
      double.setLimits(0, 0);
      const link = open();
      expect(link.readMaxPackets).toBe(fallbackMaxPackets(1514));
      expect(link.writeMaxPackets).toBe(173); // 256 KiB / 1514 bytes
    });

    test("on vmnet without the read/write max packets keys at all (before macOS 15) the same fallback applies", () => {
      const oldPath = buildDouble("old-macos");
      const old = doubleControl(oldPath);
      old.configure(BRIDGE);
      const system = openDarwinSystem(doubleLibraries(oldPath));
      expect(system.vmnetKey("vmnet_read_max_packets_key")).toBe(0);
      expect(system.vmnetKey("vmnet_mtu_key")).not.toBe(0);
      const link = openVmnet({ mode: "nat", isolate: true, system });
      try {
        expect(link.readMaxPackets).toBe(173);
        expect(link.writeMaxPackets).toBe(173); // 256 KiB / 1514 bytes
      } finally {
        link.close();
      }
      expect(old.violations().count).toBe(0);
    });

    test("a failed start leaves no fd, semaphore or queue behind", () => {
      const before = openFds();
      for (let i = 0; i < 3; i++) {
        double.inject(Inject.START_COMPLETION, VmnetStatus.FAILURE);
        expect(() => open()).toThrow(SoftnetError);
      }
      expect(openFds()).toBe(before);
      expect(double.callCount("dispatch_release")).toBeGreaterThanOrEqual(3 * 4); // queue + 3 semaphores
    });
  });

  describe("vmnet_return_t from the start completion becomes a named error with a hint", () => {
    const cases: Array<[number, string, string]> = [
      [1001, "VMNET_FAILURE", "is another process using the shared network?"],
      [1002, "VMNET_MEM_FAILURE", "short of memory"],
      [1003, "VMNET_INVALID_ARGUMENT", "please report this as a bug"],
      [1004, "VMNET_SETUP_INCOMPLETE", "try again"],
      [1005, "VMNET_INVALID_ACCESS", "not running as root?"],
      [1006, "VMNET_PACKET_TOO_BIG", "MTU"],
      [1007, "VMNET_BUFFER_EXHAUSTED", "heavy network load"],
      [1008, "VMNET_TOO_MANY_PACKETS", "please report this as a bug"],
      [1009, "VMNET_SHARING_SERVICE_BUSY", "Internet Sharing"],
      [1010, "VMNET_NOT_AUTHORIZED", "softnet must run as root"],
      [4242, "unknown vmnet status", "cannot start"],
    ];
    for (const [status, name, hint] of cases) {
      test(`${status} ${name}`, () => {
        double.inject(Inject.START_COMPLETION, status);
        const caught = thrownBy(open);
        expect(caught).toBeInstanceOf(SoftnetError);
        const line = describeError(caught);
        expect(line).toStartWith(`cannot start the vmnet interface: ${name} (${status}): `);
        expect(line).toContain(hint);
      });
    }

    test("vmnet_start_interface returning NULL", () => {
      double.inject(Inject.START_NULL, 1);
      expect(() => open()).toThrow("vmnet_start_interface returned no interface");
    });

    test("a start completion that never comes times out instead of hanging", () => {
      double.inject(Inject.START_SILENT, 1);
      const started = performance.now();
      expect(() => open({ timeoutMs: 300 })).toThrow("did not finish starting the interface within 0.3 s");
      expect(performance.now() - started).toBeLessThan(2000);
    });

    test("a refused event subscription stops the interface again", () => {
      double.inject(Inject.EVENTS, VmnetStatus.INVALID_ARGUMENT);
      expect(() => open()).toThrow("cannot subscribe to the vmnet interface's packet events");
      expect(newLogLines().slice(-2)).toEqual(["events off", "stop rules_left=0"]);
    });
  });

  describe("frames", () => {
    test("a frame written to vmnet reaches the host, and the host's reply comes back through vmnet_read", async () => {
      const link = open();
      await waitForwarding();
      expect(sendFrames(link, [arpFrame({ senderIp: "198.18.0.10", targetIp: "198.18.0.1" })])).toBe(1);
      const [reply] = await receiveMatching(link, isArpReplyFrom("198.18.0.1"));
      expect(reply).toBeDefined();
      expect(reply!.subarray(38, 42).join(".")).toBe("198.18.0.10");
    });

    test("batches never exceed vmnet's read and write limits, and a receive fills the whole batch", async () => {
      double.setLimits(4, 3);
      const link = open();
      await waitForwarding();
      double.largestRead();
      double.largestWrite(); // both reset when read
      const requests = Array.from({ length: 10 }, (_, i) =>
        arpFrame({ senderIp: `198.18.0.${20 + i}`, targetIp: "198.18.0.1" }),
      );
      expect(sendFrames(link, requests)).toBe(10);
      expect(double.largestWrite()).toBe(3);
      await Bun.sleep(100); // let all ten replies queue up on the TAP
      const batch = new FrameBatch(16, 2048);
      const received = link.receive(batch); // several reads of at most 4, in one receive
      let replies = 0;
      for (let slot = 0; slot < received; slot++) {
        const offset = batch.offsetOf(slot);
        if (isArpReplyFrom("198.18.0.1")(batch.bytes.subarray(offset, offset + batch.lengths[slot]!)))
          replies++;
      }
      expect(replies).toBe(10);
      expect(double.largestRead()).toBe(4);
    });

    test("receive and send allocate nothing per frame", async () => {
      const link = open();
      await waitForwarding();
      const out = new FrameBatch(8, 2048);
      const into = new FrameBatch(64, 2048);
      const request = arpFrame({ senderIp: "198.18.0.10", targetIp: "198.18.0.1" });
      for (let slot = 0; slot < 8; slot++) {
        out.bytes.set(request, out.offsetOf(slot));
        out.lengths[slot] = request.length;
      }
      const slots = Uint16Array.of(0, 1, 2, 3, 4, 5, 6, 7);
      let received = 0;
      const rounds = (n: number) => {
        for (let i = 0; i < n; i++) {
          link.send(out, slots, 8);
          received += link.receive(into);
        }
      };
      rounds(500); // warm up: vectors built, code compiled
      Bun.gc(true);
      const before = heapStats().objectCount;
      rounds(5000);
      expect(heapStats().objectCount - before).toBeLessThan(10);
      expect(received).toBeGreaterThan(5000);
    });

    test("frames shorter than an Ethernet header or larger than the max packet size are not handed to vmnet", () => {
      const link = open();
      const writes = double.callCount("vmnet_write");
      const batch = new FrameBatch(3, 2048);
      batch.lengths[0] = 10;
      batch.lengths[1] = 1515;
      batch.lengths[2] = 0;
      const outcomes = new Uint8Array(3).fill(0xff);
      expect(link.send(batch, Uint16Array.of(0, 1, 2), 3, outcomes)).toBe(0);
      expect([...outcomes]).toEqual([
        SendOutcome.REFUSED_TOO_SHORT,
        SendOutcome.REFUSED_TOO_LONG,
        SendOutcome.REFUSED_TOO_SHORT,
      ]);
      expect(double.callCount("vmnet_write")).toBe(writes);
    });

    test("a refused frame in the middle of a batch is marked; the frames around it are written", async () => {
      const link = open();
      const before = arpFrame({ senderIp: "198.18.0.10", targetIp: "198.18.0.1" });
      const after = arpFrame({ senderIp: "198.18.0.10", targetIp: "198.18.0.2" });
      const outcomes = new Uint8Array(3).fill(0xff);
      expect(sendFrames(link, [before, new Uint8Array(10), after], outcomes)).toBe(2);
      expect([...outcomes]).toEqual([SendOutcome.SENT, SendOutcome.REFUSED_TOO_SHORT, SendOutcome.SENT]);
    });

    test("a failed vmnet_write counts nothing as written, whatever it left in *pktcnt", () => {
      // vmnet.h promises *pktcnt only on success; the double leaves garbage there otherwise.
      const link = open();
      const request = arpFrame({ senderIp: "198.18.0.10", targetIp: "198.18.0.1" });
      for (const status of [VmnetStatus.BUFFER_EXHAUSTED, VmnetStatus.MEM_FAILURE]) {
        double.inject(Inject.WRITE, status);
        expect(sendFrames(link, [request, request, request])).toBe(0);
      }
      const outcomes = new Uint8Array(2).fill(0xff);
      double.inject(Inject.WRITE, VmnetStatus.BUFFER_EXHAUSTED);
      expect(sendFrames(link, [request, request], outcomes)).toBe(0);
      expect([...outcomes]).toEqual([SendOutcome.NO_ROOM, SendOutcome.NO_ROOM]);
      double.inject(Inject.WRITE, VmnetStatus.PACKET_TOO_BIG);
      expect(sendFrames(link, [request, request], outcomes)).toBe(0);
      // The whole chunk: vmnet did not say which.
      expect([...outcomes]).toEqual([SendOutcome.REFUSED_TOO_LONG, SendOutcome.REFUSED_TOO_LONG]);
      expect(sendFrames(link, [request, request], outcomes)).toBe(2); // and the next write counts again
      expect([...outcomes]).toEqual([SendOutcome.SENT, SendOutcome.SENT]);
    });

    test("refuses batches whose slots could truncate a packet", () => {
      const link = open();
      expect(() => link.receive(new FrameBatch(4, 1500))).toThrow(RangeError);
      expect(link.receive(new FrameBatch(4, 1514))).toBe(0);
    });

    test("no room in vmnet drops the batch quietly; a failed read is fatal and named", () => {
      const link = open();
      double.inject(Inject.WRITE, VmnetStatus.BUFFER_EXHAUSTED);
      expect(sendFrames(link, [arpFrame({ senderIp: "198.18.0.10", targetIp: "198.18.0.1" })])).toBe(0);
      double.inject(Inject.WRITE, VmnetStatus.PACKET_TOO_BIG);
      const outcomes = new Uint8Array(1);
      expect(
        sendFrames(link, [arpFrame({ senderIp: "198.18.0.10", targetIp: "198.18.0.1" })], outcomes),
      ).toBe(0);
      expect(outcomes[0]).toBe(SendOutcome.REFUSED_TOO_LONG);
      double.inject(Inject.WRITE, VmnetStatus.INVALID_ACCESS);
      expect(() => sendFrames(link, [arpFrame({ senderIp: "198.18.0.10", targetIp: "198.18.0.1" })])).toThrow(
        "cannot write packets to vmnet",
      );
      double.inject(Inject.READ, VmnetStatus.FAILURE);
      const caught = thrownBy(() => link.receive(new FrameBatch(4, 2048)));
      expect(describeError(caught)).toContain("cannot read packets from vmnet shared (NAT) interface");
      expect(describeError(caught)).toContain("VMNET_FAILURE (1001)");
    });
  });

  describe("the event callback wakes the main loop", () => {
    test("a packet for the VM makes pollFd readable; the reactor's handler receives it; idle stays idle", async () => {
      const link = open();
      await waitForwarding();
      const reactor = new Reactor(epollReactorBackend());
      try {
        const batch = new FrameBatch(16, 2048);
        let wakeups = 0;
        let replies = 0;
        reactor.watch(link.pollFd, () => {
          wakeups++;
          for (let count = link.receive(batch); count > 0; count = link.receive(batch)) {
            for (let slot = 0; slot < count; slot++) {
              const offset = batch.offsetOf(slot);
              if (isArpReplyFrom("198.18.0.1")(batch.bytes.subarray(offset, offset + batch.lengths[slot]!)))
                replies++;
            }
          }
          return false;
        });
        await Bun.sleep(100);
        expect(wakeups).toBe(0); // nothing arrived, nothing woke us
        expect(sendFrames(link, [arpFrame({ senderIp: "198.18.0.10", targetIp: "198.18.0.1" })])).toBe(1);
        await waitFor(() => replies === 1, 3000, "the reply through the reactor");
        expect(link.events).toBeGreaterThanOrEqual(1);
        expect(double.callCount("(event block invoked)")).toBeGreaterThanOrEqual(1);
        const settled = wakeups;
        await Bun.sleep(100);
        expect(wakeups).toBe(settled); // drained: no further wake-ups
        reactor.unwatch(0);
      } finally {
        reactor.close();
      }
    });
  });

  describe("port forwarding", () => {
    test("rules are added with the address in network byte order and ports in host order", async () => {
      const link = open();
      newLogLines();
      await link.install(
        [
          { externalPort: 2222, internalPort: 22 },
          { externalPort: 8080, internalPort: 80 },
        ],
        0xc6120002,
      );
      expect(newLogLines()).toEqual([
        "forward add protocol=6 external=2222 family=2 address=198.18.0.2 internal=22",
        "forward add protocol=6 external=8080 family=2 address=198.18.0.2 internal=80",
      ]);
      expect(link.forwardedPorts).toEqual([2222, 8080]);
    });

    test("install moves existing rules: the old ones are removed first", async () => {
      const link = open();
      const ports = [
        { externalPort: 2222, internalPort: 22 },
        { externalPort: 8080, internalPort: 80 },
      ];
      await link.install(ports, 0xc6120002);
      newLogLines();
      await link.install(ports, 0xc6120003);
      expect(newLogLines()).toEqual([
        "forward remove protocol=6 external=8080 family=2",
        "forward remove protocol=6 external=2222 family=2",
        "forward add protocol=6 external=2222 family=2 address=198.18.0.3 internal=22",
        "forward add protocol=6 external=8080 family=2 address=198.18.0.3 internal=80",
      ]);
      await link.removeAll();
      expect(newLogLines()).toEqual([
        "forward remove protocol=6 external=8080 family=2",
        "forward remove protocol=6 external=2222 family=2",
      ]);
      expect(link.forwardedPorts).toEqual([]);
      await link.removeAll(); // nothing installed: no calls
      expect(newLogLines()).toEqual([]);
    });

    test("a refused rule is an error naming the port, and the loop keeps running while vmnet answers", async () => {
      const link = open();
      double.inject(Inject.ADD_FORWARD, VmnetStatus.FAILURE);
      let caught: unknown;
      await link.install([{ externalPort: 2222, internalPort: 22 }], 0xc6120002).catch((error) => {
        caught = error;
      });
      expect(describeError(caught)).toStartWith(
        "cannot forward TCP port 2222 to 198.18.0.2:22: VMNET_FAILURE (1001)",
      );
      double.inject(Inject.ADD_FORWARD_SYNC, VmnetStatus.INVALID_ARGUMENT);
      await expect(link.install([{ externalPort: 2222, internalPort: 22 }], 0xc6120002)).rejects.toThrow(
        "cannot forward TCP port 2222",
      );
      expect(link.forwardedPorts).toEqual([]);
      // Concurrent requests are serialised: both complete, in order.
      const first = link.install([{ externalPort: 2222, internalPort: 22 }], 0xc6120002);
      const second = link.install([{ externalPort: 2222, internalPort: 22 }], 0xc6120004);
      await Promise.all([first, second]);
      expect(newLogLines().slice(-3)).toEqual([
        "forward add protocol=6 external=2222 family=2 address=198.18.0.2 internal=22",
        "forward remove protocol=6 external=2222 family=2",
        "forward add protocol=6 external=2222 family=2 address=198.18.0.4 internal=22",
      ]);
    });
  });

  describe("port forwarding on a vmnet without the address-family functions (before macOS 11)", () => {
    test("frames still flow; --expose is refused before the interface starts, naming what is missing", async () => {
      const oldPath = buildDouble("before-macos-11");
      const old = doubleControl(oldPath);
      old.configure(BRIDGE);
      const system = openDarwinSystem(doubleLibraries(oldPath));
      expect(system.vmnetForwarding).toBeUndefined();
      expect(system.vmnetForwardingMissing).toBe("vmnet_interface_add_ip_port_forwarding_rule");
      const message =
        `--expose needs vmnet port forwarding, but ${oldPath} does not export ` +
        "vmnet_interface_add_ip_port_forwarding_rule (vmnet's port forwarding with an address family needs macOS 11 or later)";

      const starts = old.callCount("vmnet_start_interface");
      const refused = thrownBy(() => openVmnet({ mode: "nat", isolate: true, system, portForwarding: true }));
      expect(refused).toBeInstanceOf(SoftnetError);
      expect(describeError(refused)).toBe(message);
      expect(old.callCount("vmnet_start_interface")).toBe(starts); // nothing was started

      const link = openVmnet({ mode: "nat", isolate: true, system });
      try {
        const tap = old.lastTap();
        await waitFor(() => readFileSync(`/sys/class/net/${tap}/brport/state`, "ascii").trim() === "3");
        expect(sendFrames(link, [arpFrame({ senderIp: "198.18.0.10", targetIp: "198.18.0.1" })])).toBe(1);
        expect(await receiveMatching(link, isArpReplyFrom("198.18.0.1"))).toHaveLength(1);
        let caught: unknown;
        await link.install([{ externalPort: 2222, internalPort: 22 }], 0xc6120002).catch((error) => {
          caught = error;
        });
        expect(describeError(caught)).toBe(message);
        expect(link.forwardedPorts).toEqual([]);
        await link.removeAll(); // nothing installed: nothing to do, no error
      } finally {
        link.close();
      }
      expect(old.violations()).toEqual({ count: 0, last: "" });
    });
  });

  describe("stopping", () => {
    test("close() removes the rules, turns events off, stops the interface and releases everything", async () => {
      const before = openFds();
      const link = openVmnet({ mode: "nat", isolate: true, libraries: doubleLibraries(path) });
      const tap = double.lastTap();
      expect(openFds()).toBe(before + 3); // the wake-up socketpair, and the double's TAP
      await link.install([{ externalPort: 2222, internalPort: 22 }], 0xc6120002);
      newLogLines();
      link.close();
      link.close();
      expect(newLogLines()).toEqual([
        "forward remove protocol=6 external=2222 family=2",
        "events off",
        "stop rules_left=0",
      ]);
      expect(openFds()).toBe(before);
      expect(existsSync(`/sys/class/net/${tap}`)).toBe(false);
      expect(() => link.receive(new FrameBatch(2, 2048))).toThrow("is closed");
    });

    test("close() during a pending port-forward request waits for it and removes that rule too", async () => {
      const link = open();
      newLogLines();
      double.inject(Inject.FORWARD_DELAY, 200);
      const install = link.install([{ externalPort: 2222, internalPort: 22 }], 0xc6120002);
      await Bun.sleep(30); // the add request is out, its completion 200 ms away
      link.close();
      await expect(install).rejects.toThrow("was closed meanwhile");
      expect(newLogLines()).toEqual([
        "forward add protocol=6 external=2222 family=2 address=198.18.0.2 internal=22",
        "forward remove protocol=6 external=2222 family=2",
        "events off",
        "stop rules_left=0",
      ]);
      await expect(link.install([{ externalPort: 2222, internalPort: 22 }], 0xc6120002)).rejects.toThrow(
        "is closed",
      );
    });

    test("a stop completion that reports a failure is an error, after everything was released", () => {
      const before = openFds();
      const link = openVmnet({ mode: "nat", isolate: true, libraries: doubleLibraries(path) });
      double.inject(Inject.STOP, VmnetStatus.FAILURE);
      expect(() => link.close()).toThrow("cannot stop the vmnet interface");
      expect(openFds()).toBe(before);
    });
  });
});
