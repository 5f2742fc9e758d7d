// openTapOnBridge against real TAP devices and bridges. Needs root.
//
// Everything happens in a private network namespace: this file, run normally, creates a namespace
// and runs itself again inside it with `ip netns exec` (which also mounts a /sys that shows the
// namespace's interfaces). Deleting the namespace afterwards removes every bridge and TAP the tests
// made, even if the inner run crashed, and the host's own interfaces are never touched.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, realpathSync } from "node:fs";
import { resolve } from "node:path";
import { FrameBatch } from "../../src/platform/link.ts";
import { epollReactorBackend } from "../../src/platform/linux/epoll-reactor.ts";
import { openTapOnBridge, type TapOnBridge } from "../../src/platform/linux/tap.ts";
import { Reactor } from "../../src/platform/reactor.ts";
import { REQUIRED_IN_CI } from "../support/ci.ts";
import { bunCommand } from "../support/emulation.ts";
import { expectSoftnetError } from "../support/errors.ts";
import { requireTool, toolPath } from "../support/tools.ts";

const NETNS_VARIABLE = "SOFTNET_TEST_NETNS";
const insideNamespace = process.env[NETNS_VARIABLE];

function run(command: string[]): string {
  const result = Bun.spawnSync(command, { stdout: "pipe", stderr: "pipe" });
  if (result.exitCode !== 0) {
    throw new Error(`${command.join(" ")} failed (${result.exitCode}): ${result.stderr.toString().trim()}`);
  }
  return result.stdout.toString();
}

if (insideNamespace === undefined) {
  const canRun = process.getuid?.() === 0 && toolPath("ip") !== null && existsSync("/dev/net/tun");
  test.skipIf(!canRun && !REQUIRED_IN_CI)(
    "TAP tests, run inside a private network namespace",
    () => {
      requireTool("ip");
      const namespace = `softnet-test-${process.pid}`;
      run(["ip", "netns", "add", namespace]);
      try {
        const inner = Bun.spawnSync(
          ["ip", "netns", "exec", namespace, ...bunCommand(), "test", import.meta.path],
          {
            cwd: resolve(import.meta.dir, "../.."),
            env: { ...process.env, [NETNS_VARIABLE]: namespace },
            stdout: "inherit",
            stderr: "inherit",
          },
        );
        expect(inner.exitCode).toBe(0);
      } finally {
        run(["ip", "netns", "del", namespace]);
      }
    },
    120_000,
  );
} else {
  tapTests(insideNamespace);
}

function tapTests(namespace: string): void {
  const BRIDGE = "sntbr0"; // 198.18.0.1/24 (benchmarking range, RFC 2544), MTU 1400
  const BRIDGE_WITHOUT_IPV4 = "sntbr1";
  const GATEWAY = 0xc6120001; // 198.18.0.1
  const taps: TapOnBridge[] = [];

  function openTap(isolate = true, name?: string): TapOnBridge {
    const tap = openTapOnBridge({ bridge: BRIDGE, isolate, name });
    taps.push(tap);
    return tap;
  }

  beforeAll(() => {
    // Refuse to create bridges anywhere but in the namespace made for this run.
    expect(run(["ip", "netns", "identify", String(process.pid)]).trim()).toBe(namespace);
    run(["ip", "link", "set", "lo", "up"]);
    run(["ip", "link", "add", BRIDGE, "type", "bridge"]);
    run(["ip", "link", "set", BRIDGE, "mtu", "1400"]);
    run(["ip", "addr", "add", "198.18.0.1/24", "dev", BRIDGE]);
    run(["ip", "link", "set", BRIDGE, "up"]);
    run(["ip", "link", "add", BRIDGE_WITHOUT_IPV4, "type", "bridge"]);
  });

  afterAll(() => {
    for (const tap of taps) tap.close();
    // The outer run deletes the namespace, and with it anything left here.
  });

  const bridgeMac = (): number[] =>
    readFileSync(`/sys/class/net/${BRIDGE}/address`, "ascii")
      .trim()
      .split(":")
      .map((byte) => Number.parseInt(byte, 16));

  function sysfs(path: string): string {
    return readFileSync(`/sys/class/net/${path}`, "ascii").trim();
  }

  async function waitFor(condition: () => boolean, ms = 3000): Promise<void> {
    const deadline = performance.now() + ms;
    while (!condition()) {
      if (performance.now() > deadline) throw new Error("condition not met in time");
      await Bun.sleep(5);
    }
  }

  /** Waits until the bridge forwards through the port (STP is off, so this is quick). */
  async function waitForwarding(tap: TapOnBridge): Promise<void> {
    await waitFor(() => sysfs(`${tap.name}/brport/state`) === "3"); // BR_STATE_FORWARDING
  }

  /** Writes one frame into slot 0 of a fresh batch and sends it; returns frames sent. */
  function sendFrame(tap: TapOnBridge, bytes: Uint8Array): number {
    const batch = new FrameBatch(1, 2048);
    batch.bytes.set(bytes, 0);
    batch.lengths[0] = bytes.length;
    return tap.send(batch, Uint16Array.of(0), 1);
  }

  /** Receives until a frame satisfies `match` or time runs out; returns it or null. */
  async function receiveMatching(
    tap: TapOnBridge,
    match: (frame: Uint8Array) => boolean,
    ms = 2000,
  ): Promise<Uint8Array | null> {
    const batch = new FrameBatch(16, tap.maxFrameSize);
    const deadline = performance.now() + ms;
    while (performance.now() < deadline) {
      const count = tap.receive(batch);
      expect(count).toBeGreaterThanOrEqual(0);
      for (let slot = 0; slot < count; slot++) {
        const offset = batch.offsetOf(slot);
        const frame = batch.bytes.slice(offset, offset + batch.lengths[slot]!);
        if (match(frame)) return frame;
      }
      if (count === 0) await Bun.sleep(5);
    }
    return null;
  }

  const VM_MAC = [0x02, 0x53, 0x4e, 0x00, 0x00, 0x02];
  const VM_IP = [198, 18, 0, 2];

  function arpRequestForGateway(): Uint8Array {
    const frame = new Uint8Array(60);
    frame.fill(0xff, 0, 6);
    frame.set(VM_MAC, 6);
    frame.set([0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01], 12); // ARP, Ethernet/IPv4, request
    frame.set(VM_MAC, 22);
    frame.set(VM_IP, 28);
    frame.set([198, 18, 0, 1], 38);
    return frame;
  }

  function isArpReplyToVm(frame: Uint8Array): boolean {
    return (
      frame.length >= 42 &&
      frame[12] === 0x08 &&
      frame[13] === 0x06 &&
      frame[21] === 2 && // opcode reply
      frame.subarray(28, 32).join(".") === "198.18.0.1" &&
      frame.subarray(38, 42).join(".") === VM_IP.join(".")
    );
  }

  /** A broadcast frame with an experimental ethertype and a marker only this test uses. */
  function markedFrame(marker: number): Uint8Array {
    const frame = new Uint8Array(64);
    frame.fill(0xff, 0, 6);
    frame.set(VM_MAC, 6);
    frame.set([0x88, 0xb5], 12); // IEEE 802 local experimental ethertype
    new DataView(frame.buffer).setUint32(14, marker);
    return frame;
  }

  const hasMarker = (marker: number) => (frame: Uint8Array) =>
    frame.length >= 18 &&
    frame[12] === 0x88 &&
    frame[13] === 0xb5 &&
    new DataView(frame.buffer, frame.byteOffset).getUint32(14) === marker;

  const interfaces = () => readdirSync("/sys/class/net").sort();

  describe("openTapOnBridge", () => {
    test("reads the bridge's address, prefix and MTU, and sets up an isolated port", () => {
      const tap = openTap();
      expect(tap.name).toMatch(/^sn[0-9a-f]{6}$/);
      expect(tap.bridge).toBe(BRIDGE);
      expect(tap.gateway).toBe(GATEWAY);
      expect(tap.prefixLength).toBe(24);
      expect(tap.mtu).toBe(1400);
      expect(tap.maxFrameSize).toBe(1414);
      expect(tap.description).toBe(`tap ${tap.name} on ${BRIDGE}`);
      expect(realpathSync(`/sys/class/net/${tap.name}/master`)).toEndWith(`/${BRIDGE}`);
      expect(sysfs(`${tap.name}/brport/isolated`)).toBe("1");
      expect(sysfs(`${tap.name}/mtu`)).toBe("1400");
      expect(Number.parseInt(sysfs(`${tap.name}/flags`), 16) & 1).toBe(1); // IFF_UP
      expect(sysfs(`${BRIDGE}/mtu`)).toBe("1400"); // enslaving did not change the bridge
      expect(tap.pollFd).toBeGreaterThanOrEqual(0);
    });

    test("isolation off on request, and a given name is used", () => {
      const tap = openTap(false, "sntap-given");
      expect(tap.name).toBe("sntap-given");
      expect(sysfs("sntap-given/brport/isolated")).toBe("0");
    });

    test("the kernel's reply to a frame sent through the TAP comes back through it (ARP)", async () => {
      const tap = openTap();
      await waitForwarding(tap);
      // Ask up to five times: a request sent while the port is still settling may go unanswered.
      let reply: Uint8Array | null = null;
      for (let attempt = 0; attempt < 5 && reply === null; attempt++) {
        expect(sendFrame(tap, arpRequestForGateway())).toBe(1);
        reply = await receiveMatching(tap, isArpReplyToVm, 1000);
      }
      expect(reply).not.toBeNull();
      expect([...reply!.subarray(0, 6)]).toEqual(VM_MAC); // to the VM
      expect([...reply!.subarray(6, 12)]).toEqual(bridgeMac()); // from the bridge
    });

    test("the reactor wakes up when a TAP has frames", async () => {
      const tap = openTap();
      await waitForwarding(tap);
      const reactor = new Reactor(epollReactorBackend());
      try {
        const batch = new FrameBatch(8, tap.maxFrameSize);
        let gotReply = false;
        reactor.watch(tap.pollFd, () => {
          for (let count = tap.receive(batch); count > 0; count = tap.receive(batch)) {
            for (let slot = 0; slot < count; slot++) {
              const offset = batch.offsetOf(slot);
              if (isArpReplyToVm(batch.bytes.subarray(offset, offset + batch.lengths[slot]!)))
                gotReply = true;
            }
          }
          return false;
        });
        expect(sendFrame(tap, arpRequestForGateway())).toBe(1);
        await waitFor(() => gotReply);
      } finally {
        reactor.close();
      }
    });

    test("isolated ports reach non-isolated ports but not each other", async () => {
      const sender = openTap(true);
      const open = openTap(false);
      const isolated = openTap(true);
      for (const tap of [sender, open, isolated]) await waitForwarding(tap);
      const marker = 0x5e4d0001;
      expect(sendFrame(sender, markedFrame(marker))).toBe(1);
      const atOpen = await receiveMatching(open, hasMarker(marker));
      expect(atOpen).toEqual(markedFrame(marker)); // the very bytes sent
      // The same broadcast was flooded by now; the isolated port must not have it.
      expect(await receiveMatching(isolated, hasMarker(marker), 300)).toBeNull();
      // And the other way: from the non-isolated port, both isolated ports get it.
      const back = 0x5e4d0002;
      expect(sendFrame(open, markedFrame(back))).toBe(1);
      expect(await receiveMatching(isolated, hasMarker(back))).not.toBeNull();
      expect(await receiveMatching(sender, hasMarker(back))).not.toBeNull();
    });

    test("a frame the kernel refuses is skipped and counted; the rest of the batch goes out", async () => {
      const sender = openTap(false);
      const listener = openTap(false);
      for (const tap of [sender, listener]) await waitForwarding(tap);
      const batch = new FrameBatch(3, 2048);
      const marker = 0x5e4d0003;
      batch.bytes.set(markedFrame(marker), batch.offsetOf(2));
      batch.lengths[0] = 10; // shorter than an Ethernet header: EINVAL
      batch.lengths[2] = 64;
      expect(sender.send(batch, Uint16Array.of(0, 2), 2)).toBe(1);
      expect(sender.rejectedFrames).toBe(1);
      expect(await receiveMatching(listener, hasMarker(marker))).not.toBeNull();
    });

    test("refuses batches whose slots could truncate a frame", () => {
      const tap = openTap();
      expect(() => tap.receive(new FrameBatch(4, 1024))).toThrow(RangeError);
      expect(tap.receive(new FrameBatch(4, tap.maxFrameSize))).toBeGreaterThanOrEqual(0);
    });

    test("close() deletes the TAP", async () => {
      const tap = openTapOnBridge({ bridge: BRIDGE, isolate: true });
      expect(existsSync(`/sys/class/net/${tap.name}`)).toBe(true);
      tap.close();
      tap.close();
      await waitFor(() => !existsSync(`/sys/class/net/${tap.name}`), 2000);
      expect(readdirSync(`/sys/class/net/${BRIDGE}/brif`)).not.toContain(tap.name);
    });

    test("a TAP deleted from outside makes receive and send return -1", () => {
      const tap = openTap();
      run(["ip", "link", "del", tap.name]);
      const batch = new FrameBatch(2, tap.maxFrameSize);
      expect(tap.receive(batch)).toBe(-1);
      batch.lengths[0] = 60;
      expect(tap.send(batch, Uint16Array.of(0), 1)).toBe(-1);
    });
  });

  describe("openTapOnBridge errors", () => {
    test("a bridge that does not exist", () => {
      expectSoftnetError(
        () => openTapOnBridge({ bridge: "sntnope", isolate: true }),
        "bridge sntnope does not exist",
      );
    });

    test("an interface that is not a bridge", () => {
      expectSoftnetError(() => openTapOnBridge({ bridge: "lo", isolate: true }), "lo is not a bridge");
    });

    test("a bridge without an IPv4 address, leaving no TAP behind", () => {
      const before = interfaces();
      expectSoftnetError(
        () => openTapOnBridge({ bridge: BRIDGE_WITHOUT_IPV4, isolate: true }),
        `bridge ${BRIDGE_WITHOUT_IPV4} has no IPv4 address`,
      );
      expect(interfaces()).toEqual(before);
    });

    test("invalid or taken names", () => {
      expectSoftnetError(
        () => openTapOnBridge({ bridge: "bad/name", isolate: true }),
        '--bridge "bad/name" is not a valid network interface name',
      );
      expectSoftnetError(
        () => openTapOnBridge({ bridge: "x".repeat(16), isolate: true }),
        "is not a valid network interface name",
      );
      expectSoftnetError(
        () => openTapOnBridge({ bridge: BRIDGE, isolate: true, name: "lo" }),
        "cannot create TAP device lo: an interface with that name exists",
      );
    });
  });
}
