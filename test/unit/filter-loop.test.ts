/**
 * The filter loop with in-memory links: frames are decided in place and only accepted slots are
 * forwarded, a full receiver drops and counts instead of failing, budgets bound each drain, the
 * lease events reach the port forwards, and a vanished VM stops the loop cleanly.
 */
import { describe, expect, test } from "bun:test";
import { FilterLoop, type StopCause } from "../../src/filter-loop.ts";
import { Logger } from "../../src/log.ts";
import { FrameBatch, type FrameLink, SendOutcome, type SendOutcomeCode } from "../../src/platform/link.ts";
import { Policy } from "../../src/policy/policy.ts";
import { RuleTable } from "../../src/policy/rules.ts";
import { type PortForwardBackend, PortForwards } from "../../src/port-forwards.ts";
import { TrafficDirection } from "../../src/stats.ts";
import {
  formatIpv4,
  formatMac,
  parseIpv4,
  parseMac,
  readMac,
  readU16,
  readU32,
} from "../../src/wire/bytes.ts";
import { finishChecksum, internetChecksum, pseudoHeaderSum, sumWords } from "../../src/wire/checksum.ts";
import { DhcpMessageType, parseDhcp } from "../../src/wire/dhcp.ts";
import { parseUdp } from "../../src/wire/udp.ts";
import {
  dhcpServerFrame,
  GATEWAY,
  HOST_MAC,
  OTHER_MAC,
  tcpFrame,
  udpFrame,
  VM_IP,
  VM_MAC,
} from "../support/frames.ts";

/** A link backed by arrays: `incoming` is what receive() hands out, `sent` what send() got. */
class MemoryLink implements FrameLink {
  readonly pollFd = -1;
  incoming: Uint8Array[] = [];
  sent: Uint8Array[] = [];
  /** How many more frames send() accepts before reporting "no room" (ENOBUFS/EAGAIN). */
  room = Number.POSITIVE_INFINITY;
  gone = false;
  receives = 0;
  constructor(readonly description: string) {}
  receive(batch: FrameBatch): number {
    this.receives++;
    if (this.gone) return -1;
    let count = 0;
    while (count < batch.capacity && this.incoming.length > 0) {
      const frame = this.incoming.shift()!;
      batch.bytes.set(frame, batch.offsetOf(count));
      batch.lengths[count++] = frame.length;
    }
    batch.count = count;
    return count;
  }
  /** Frames of these lengths are refused one by one with the given outcome, as a kernel would. */
  refuse = new Map<number, SendOutcomeCode>();
  send(batch: FrameBatch, slots: Uint16Array, count: number, outcomes?: Uint8Array): number {
    if (this.gone) return -1;
    let sent = 0;
    for (let j = 0; j < count; j++) {
      const slot = slots[j];
      const refusal = this.refuse.get(batch.lengths[slot]);
      if (refusal !== undefined) {
        if (outcomes !== undefined) outcomes[slot] = refusal;
        continue; // this frame only: the rest of the batch goes on
      }
      if (this.room <= 0) {
        if (outcomes !== undefined) for (let k = j; k < count; k++) outcomes[slots[k]] = SendOutcome.NO_ROOM;
        break;
      }
      this.room--;
      sent++;
      if (outcomes !== undefined) outcomes[slot] = SendOutcome.SENT;
      const offset = batch.offsetOf(slot);
      this.sent.push(batch.bytes.slice(offset, offset + batch.lengths[slot]));
    }
    return sent;
  }
  close(): void {}
}

function setup(batchCapacity = 4) {
  const gateway = parseIpv4(GATEWAY)!;
  const policy = new Policy({
    vmMac: parseMac(VM_MAC)!,
    gateway,
    prefixLength: 24,
    isolated: true,
    rules: RuleTable.compile([], gateway),
  });
  const vm = new MemoryLink("vm");
  const host = new MemoryLink("host");
  const lines: string[] = [];
  const stops: StopCause[] = [];
  let leaseChanges = 0;
  let now = 1000;
  const loop = new FilterLoop({
    policy,
    vm,
    host,
    vmBatch: new FrameBatch(batchCapacity, 1518),
    hostBatch: new FrameBatch(batchCapacity, 1518),
    logger: new Logger("debug", (line) => lines.push(line)),
    clock: () => now,
    onLeaseChange: () => leaseChanges++,
    onStop: (cause) => stops.push(cause),
  });
  const grantLease = (seconds = 600) => {
    host.incoming.push(dhcpServerFrame({ messageType: DhcpMessageType.ACK, leaseTimeSeconds: seconds }));
    loop.drainFromHost(1024);
  };
  return {
    policy,
    vm,
    host,
    lines,
    stops,
    loop,
    grantLease,
    leaseChanges: () => leaseChanges,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

describe("the filter loop", () => {
  test("forwards accepted frames byte for byte and drops the rest", () => {
    const { vm, host, loop, grantLease } = setup();
    grantLease();
    const good = tcpFrame({ dst: "1.1.1.1", dport: 443 });
    const spoofed = tcpFrame({ srcMac: OTHER_MAC, dst: "1.1.1.1", dport: 443 });
    const privateDst = tcpFrame({ dst: "10.0.0.1", dport: 443 });
    vm.incoming.push(good, spoofed, privateDst, good);
    expect(loop.drainFromVm(1024)).toBe(false);
    expect(host.sent).toEqual([good, good]);
    expect(loop.traffic.deliveredFrames[TrafficDirection.FROM_VM]).toBe(2);
  });

  test("spoofing is logged at warn with its reason, rate limited per reason", () => {
    const { vm, loop, lines, grantLease } = setup();
    grantLease();
    for (let i = 0; i < 50; i++)
      vm.incoming.push(tcpFrame({ srcMac: OTHER_MAC, dst: "1.1.1.1", dport: 443 }));
    loop.drainFromVm(1024);
    const warnings = lines.filter((line) => line.includes("warn: dropped from VM: mac-spoof"));
    expect(warnings.length).toBe(5); // the burst, then silence until tokens refill
    expect(warnings[0]).toContain(`${OTHER_MAC} > `);
  });

  test("the VM gets nothing from another VM; the drops are logged at debug, the gateway's MAC at info", () => {
    const { vm, host, loop, lines, grantLease } = setup();
    grantLease(); // from the gateway's MAC 5e:00:00:00:00:01
    expect(lines.some((line) => line.includes("info: gateway MAC is 5e:00:00:00:00:01"))).toBe(true);
    const fromGateway = tcpFrame({
      srcMac: "5e:00:00:00:00:01",
      dstMac: VM_MAC,
      src: "1.1.1.1",
      dst: VM_IP,
      dport: 40000,
    });
    const fromNeighbour = udpFrame({
      srcMac: OTHER_MAC,
      dstMac: VM_MAC,
      src: "192.168.64.6",
      dst: VM_IP,
      dport: 9,
    });
    const flooded = udpFrame({
      srcMac: "5e:00:00:00:00:01",
      dstMac: OTHER_MAC,
      src: "1.1.1.1",
      dst: "192.168.64.6",
      dport: 9,
    });
    vm.sent.length = 0;
    host.incoming.push(fromNeighbour, fromGateway, flooded);
    loop.drainFromHost(1024);
    expect(vm.sent).toEqual([fromGateway]);
    expect(lines.some((line) => line.includes("debug: dropped to VM: from-another-vm: "))).toBe(true);
    expect(lines.some((line) => line.includes("debug: dropped to VM: not-for-this-vm: "))).toBe(true);
    expect(loop.dropSummary()).toBe("1 not-for-this-vm, 1 from-another-vm");
  });

  test("a receiver without room drops and counts, and the loop goes on", () => {
    const { vm, host, loop, grantLease } = setup();
    grantLease();
    host.room = 1;
    for (let i = 0; i < 3; i++) vm.incoming.push(tcpFrame({ dst: "1.1.1.1", dport: 443 }));
    loop.drainFromVm(1024);
    expect(loop.traffic.deliveredFrames[TrafficDirection.FROM_VM]).toBe(1);
    expect(loop.traffic.unsentFrames[TrafficDirection.FROM_VM]).toBe(2);
    host.room = Number.POSITIVE_INFINITY;
    vm.incoming.push(tcpFrame({ dst: "1.1.1.1", dport: 443 }));
    loop.drainFromVm(1024);
    expect(loop.traffic.deliveredFrames[TrafficDirection.FROM_VM]).toBe(2);
    // The minute's summary says what happened since the last one, then starts over.
    expect(loop.dropSummary()).toBe("2 to the host and 0 to the VM for lack of buffer space");
    expect(loop.dropSummary()).toBe("");
  });

  test("frames that arrive while a batch is sent are read in the same drain; only an empty receive ends it", () => {
    const { vm, host, loop, grantLease } = setup(4);
    grantLease();
    // A short batch, and while it is sent two more frames come (as they do at line rate): the drain
    // reads again instead of handing the link back to the readiness thread with frames waiting.
    const late = [tcpFrame({ dst: "1.1.1.1", dport: 443 }), tcpFrame({ dst: "1.1.1.2", dport: 443 })];
    const send = host.send.bind(host);
    host.send = (batch, slots, count, outcomes) => {
      vm.incoming.push(...late.splice(0));
      return send(batch, slots, count, outcomes);
    };
    for (let i = 0; i < 3; i++) vm.incoming.push(tcpFrame({ dst: "1.1.1.3", dport: 443 }));
    const receivesBefore = vm.receives;
    expect(loop.drainFromVm(1024)).toBe(false);
    expect(host.sent.length).toBe(5);
    expect(vm.receives - receivesBefore).toBe(3); // 3 frames, 2 frames, then nothing
    // The same from the host to the VM.
    const hostLate = [
      udpFrame({ src: "8.8.8.8", dst: VM_IP, srcMac: HOST_MAC, dstMac: VM_MAC, dport: 5000 }),
    ];
    const vmSend = vm.send.bind(vm);
    vm.send = (batch, slots, count, outcomes) => {
      host.incoming.push(...hostLate.splice(0));
      return vmSend(batch, slots, count, outcomes);
    };
    host.incoming.push(
      udpFrame({ src: "8.8.8.8", dst: VM_IP, srcMac: HOST_MAC, dstMac: VM_MAC, dport: 5000 }),
    );
    const sentBefore = vm.sent.length;
    expect(loop.drainFromHost(1024)).toBe(false);
    expect(vm.sent.length - sentBefore).toBe(2);
    expect(host.incoming.length).toBe(0);
  });

  test("a drain stops at its budget and says there is more", () => {
    const { vm, loop, grantLease } = setup(4);
    grantLease();
    for (let i = 0; i < 20; i++) vm.incoming.push(tcpFrame({ dst: "1.1.1.1", dport: 443 }));
    expect(loop.drainFromVm(8)).toBe(true);
    expect(vm.incoming.length).toBe(12);
    expect(loop.drainFromVm(1024)).toBe(false);
    expect(vm.incoming.length).toBe(0);
  });

  test("the lease learned from the host is logged and announced; its expiry too", () => {
    const { loop, lines, grantLease, leaseChanges, advance, policy } = setup();
    grantLease(120);
    expect(lines.some((line) => line.includes(`lease learned: ${VM_IP} for 120 s`))).toBe(true);
    expect(leaseChanges()).toBe(1);
    grantLease(120);
    expect(lines.some((line) => line.includes(`lease renewed: ${VM_IP}`))).toBe(true);
    advance(120_000);
    loop.tick();
    expect(policy.lease.isValidAt(1000 + 120_000)).toBe(false);
    expect(lines.some((line) => line.includes(`lease for ${VM_IP} expired`))).toBe(true);
    expect(leaseChanges()).toBe(3);
  });

  test("at a stop, the lease is released at the server that granted it, as the VM's client would", () => {
    const { loop, host, lines, grantLease, policy } = setup();
    expect(loop.releaseLease()).toBe(false); // no lease: nothing to release
    expect(host.sent).toEqual([]);
    grantLease(600);
    expect(loop.releaseLease()).toBe(true);
    expect(host.sent.length).toBe(1);
    const frame = host.sent[0]!;
    // Read back with the wire module's own parsers, and checked against what RFC 2131 4.4.6 asks.
    expect(formatMac(readMac(frame, 0))).toBe(HOST_MAC); // the gateway's MAC, learned from its ACK
    expect(formatMac(readMac(frame, 6))).toBe(VM_MAC);
    expect(internetChecksum(frame, 14, 20)).toBe(0);
    expect(formatIpv4(readU32(frame, 14 + 12))).toBe(VM_IP);
    expect(formatIpv4(readU32(frame, 14 + 16))).toBe(GATEWAY);
    const udp = parseUdp(frame.subarray(34, 14 + readU16(frame, 16)));
    expect(udp?.repr).toEqual({ sourcePort: 68, destinationPort: 67 });
    const pseudo = pseudoHeaderSum(parseIpv4(VM_IP)!, parseIpv4(GATEWAY)!, 17, readU16(frame, 34 + 4));
    expect(finishChecksum(sumWords(frame, 34, readU16(frame, 34 + 4), pseudo))).toBe(0);
    const release = parseDhcp(udp!.payload);
    expect(release).toMatchObject({
      op: 1,
      messageType: DhcpMessageType.RELEASE,
      clientAddress: VM_IP,
      yourAddress: "0.0.0.0",
      gatewayAddress: "0.0.0.0",
      clientMac: VM_MAC,
      serverIdentifier: GATEWAY,
    });
    expect(udp!.payload.length).toBeGreaterThanOrEqual(300);
    expect(policy.lease.isValidAt(1000)).toBe(false);
    expect(lines.some((line) => line.includes(`released the lease for ${VM_IP}`))).toBe(true);
    // Released once: a second stop finds no lease.
    expect(loop.releaseLease()).toBe(false);
    expect(host.sent.length).toBe(1);
  });

  test("a lease whose ACK named no server is not released (there is nowhere to send it)", () => {
    const { loop, host, policy } = setup();
    const ack = dhcpServerFrame({ messageType: DhcpMessageType.ACK, leaseTimeSeconds: 600 });
    // Drop option 54 (code, length 4, address: 6 bytes right after option 53's 3).
    const options = 14 + 20 + 8 + 240 + 3;
    expect(ack[options]).toBe(54);
    ack.fill(0, options, options + 6);
    policy.observeFromHost(ack, 0, ack.length, 1000);
    expect(policy.lease.isValidAt(1000)).toBe(true);
    expect(loop.releaseLease()).toBe(false);
    expect(host.sent).toEqual([]);
  });

  test("the VM going away stops the loop as a clean stop, once", () => {
    const { vm, host, loop, stops, grantLease } = setup();
    grantLease();
    vm.gone = true;
    host.incoming.push(
      tcpFrame({ srcMac: "5e:00:00:00:00:01", dstMac: VM_MAC, src: "1.1.1.1", dst: VM_IP, dport: 40000 }),
    );
    loop.drainFromHost(1024);
    loop.drainFromVm(1024);
    expect(stops).toEqual([{ kind: "vm-closed" }]);
  });

  test("a host link that throws stops the loop with the error", () => {
    const { host, loop, stops } = setup();
    host.receive = () => {
      throw new Error("boom");
    };
    loop.drainFromHost(1024);
    expect(stops.length).toBe(1);
    expect(stops[0].kind).toBe("fatal");
  });
});

describe("port forwards follow the lease", () => {
  class RecordingBackend implements PortForwardBackend {
    calls: string[] = [];
    failNext = false;
    async install(ports: readonly { externalPort: number; internalPort: number }[], address: number) {
      if (this.failNext) {
        this.failNext = false;
        throw new Error("nft said no");
      }
      this.calls.push(
        `install ${ports.map((p) => `${p.externalPort}:${p.internalPort}`).join(",")} ${formatIpv4(address)}`,
      );
    }
    async removeAll() {
      this.calls.push("removeAll");
    }
  }

  test("installed with a lease, moved on a new address, removed on expiry and at close", async () => {
    const backend = new RecordingBackend();
    let desired = -1;
    const lines: string[] = [];
    const forwards = new PortForwards(
      [{ externalPort: 2222, internalPort: 22 }],
      backend,
      new Logger("info", (l) => lines.push(l)),
      () => desired,
    );
    await forwards.reconcile();
    expect(backend.calls).toEqual([]); // nothing installed, nothing to remove
    desired = parseIpv4("192.168.64.5")!;
    await forwards.reconcile();
    await forwards.reconcile(); // no change, no call
    desired = parseIpv4("192.168.64.7")!;
    await forwards.reconcile();
    desired = -1;
    await forwards.reconcile();
    desired = parseIpv4("192.168.64.7")!;
    await forwards.reconcile();
    await forwards.close();
    expect(backend.calls).toEqual([
      "install 2222:22 192.168.64.5",
      "install 2222:22 192.168.64.7",
      "removeAll",
      "install 2222:22 192.168.64.7",
      "removeAll",
    ]);
  });

  test("a failed install is logged and retried on the next reconcile", async () => {
    const backend = new RecordingBackend();
    backend.failNext = true;
    const lines: string[] = [];
    const forwards = new PortForwards(
      [{ externalPort: 2222, internalPort: 22 }],
      backend,
      new Logger("info", (l) => lines.push(l)),
      () => parseIpv4("192.168.64.5")!,
    );
    await forwards.reconcile();
    expect(lines.some((l) => l.includes("could not update port forwards (2222→22): nft said no"))).toBe(true);
    await forwards.reconcile();
    expect(backend.calls).toEqual(["install 2222:22 192.168.64.5"]);
  });

  test("reconciles that arrive while one runs are folded into one more pass", async () => {
    const backend = new RecordingBackend();
    let desired = parseIpv4("192.168.64.5")!;
    const forwards = new PortForwards(
      [{ externalPort: 1, internalPort: 2 }],
      backend,
      new Logger("error", () => {}),
      () => desired,
    );
    const first = forwards.reconcile();
    desired = parseIpv4("192.168.64.6")!;
    const second = forwards.reconcile();
    const third = forwards.reconcile();
    await Promise.all([first, second, third]);
    expect(backend.calls).toEqual(["install 1:2 192.168.64.5", "install 1:2 192.168.64.6"]);
  });
});
