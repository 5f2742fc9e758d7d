/**
 * --reject in the filter loop, with in-memory links: the answer goes to the VM (never to the host),
 * only with --reject, is counted per reason (sent, unsent, rate-limited), shows in the counters
 * report, and reaches the capture as a frame to the VM with its own comment, which tshark reads.
 * Nothing is allocated per frame.
 */
import { heapStats } from "bun:jsc";
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FrameCapture } from "../../src/capture/capture.ts";
import type { CaptureSink } from "../../src/capture/file.ts";
import { FilterLoop, type FrameRecorder, type StopCause } from "../../src/filter-loop.ts";
import { Logger } from "../../src/log.ts";
import { FrameBatch, type FrameLink, SendOutcome } from "../../src/platform/link.ts";
import { Reason } from "../../src/policy/reasons.ts";
import { REJECT_REPLY_BURST, Rejecter } from "../../src/policy/reject.ts";
import {
  counterReport,
  SYNTHESISED,
  TrafficDirection,
  type TrafficDirectionCode,
  UNSENT,
} from "../../src/stats.ts";
import { parseMac } from "../../src/wire/bytes.ts";
import { TcpFlag } from "../../src/wire/tcp.ts";
import { haveTool, readWithTshark } from "../support/capture-readers.ts";
import { REQUIRED_IN_CI } from "../support/ci.ts";
import { OTHER_MAC, tcpFrame, udpFrame, VM_MAC } from "../support/frames.ts";
import { DATAGRAM, leasedPolicy, PROHIBITED, RESET, SYN, T0 } from "./reject-fixtures.ts";

/** A link backed by arrays: `incoming` is what receive() hands out, `sent` what send() got. */
class MemoryLink implements FrameLink {
  readonly pollFd = -1;
  incoming: Uint8Array[] = [];
  sent: Uint8Array[] = [];
  /** How many more frames send() accepts before reporting "no room" (ENOBUFS/EAGAIN). */
  room = Number.POSITIVE_INFINITY;
  gone = false;
  /** Keep copies of what is sent (off for the allocation test). */
  keep = true;
  constructor(readonly description: string) {}
  receive(batch: FrameBatch): number {
    let count = 0;
    while (count < batch.capacity && this.incoming.length > 0) {
      const frame = this.incoming.shift()!;
      batch.bytes.set(frame, batch.offsetOf(count));
      batch.lengths[count++] = frame.length;
    }
    batch.count = count;
    return count;
  }
  send(batch: FrameBatch, slots: Uint16Array, count: number, outcomes?: Uint8Array): number {
    if (this.gone) return -1;
    let sent = 0;
    if (outcomes !== undefined) for (let j = 0; j < count; j++) outcomes[slots[j]] = SendOutcome.NO_ROOM;
    for (; sent < count && this.room > 0; sent++, this.room--) {
      if (outcomes !== undefined) outcomes[slots[sent]] = SendOutcome.SENT;
      if (!this.keep) continue;
      const offset = batch.offsetOf(slots[sent]);
      this.sent.push(batch.bytes.slice(offset, offset + batch.lengths[slots[sent]]));
    }
    return sent;
  }
  close(): void {}
}

/** What the loop handed the capture: direction and verdicts of each batch. */
class Recorder implements FrameRecorder {
  batches: Array<{ direction: TrafficDirectionCode; verdicts: number[]; frames: Uint8Array[] }> = [];
  recordBatch(
    direction: TrafficDirectionCode,
    batch: FrameBatch,
    verdicts: Uint8Array,
    _outcomes: Uint8Array,
    count: number,
  ): void {
    const frames: Uint8Array[] = [];
    for (let slot = 0; slot < count; slot++) {
      frames.push(batch.bytes.slice(batch.offsetOf(slot), batch.offsetOf(slot) + batch.lengths[slot]));
    }
    this.batches.push({ direction, verdicts: [...verdicts.subarray(0, count)], frames });
  }
}

function setup(options: { reject: boolean; block?: string[]; capture?: FrameRecorder; perSecond?: number }) {
  const policy = leasedPolicy(options.block ?? []);
  const vm = new MemoryLink("vm");
  const host = new MemoryLink("host");
  const stops: StopCause[] = [];
  let now = T0;
  const loop = new FilterLoop({
    policy,
    vm,
    host,
    vmBatch: new FrameBatch(64, 1518),
    hostBatch: new FrameBatch(64, 1518),
    logger: new Logger("error", () => {}),
    clock: () => now,
    onStop: (cause) => stops.push(cause),
    capture: options.capture,
    reject: options.reject ? new Rejecter(policy, options.perSecond, options.perSecond) : undefined,
  });
  return {
    policy,
    vm,
    host,
    loop,
    stops,
    advance: (ms: number) => {
      now += ms;
    },
    now: () => now,
  };
}

describe("the loop with --reject", () => {
  test("a SYN and a datagram to a blocked network: nothing to the host, the answers to the VM", () => {
    const { vm, host, loop } = setup({ reject: true, block: ["10.99.0.0/24"] });
    const allowed = tcpFrame({ dst: "8.8.8.8", dport: 443 });
    vm.incoming.push(SYN, allowed, DATAGRAM);
    expect(loop.drainFromVm(1024)).toBe(false);
    expect(host.sent).toEqual([allowed]);
    expect(vm.sent).toEqual([RESET, PROHIBITED]);
    expect(loop.traffic.rejectsSent[Reason.BLOCKED_BY_RULE]).toBe(2);
    // Answers are not frames from the host: the host→VM counters stay as they were.
    expect(loop.traffic.receivedFrames[TrafficDirection.FROM_HOST]).toBe(0);
    expect(loop.traffic.deliveredFrames[TrafficDirection.FROM_HOST]).toBe(0);
  });

  test("without --reject the same frames get nothing (the original's behaviour)", () => {
    const { vm, host, loop } = setup({ reject: false, block: ["10.99.0.0/24"] });
    vm.incoming.push(SYN, DATAGRAM);
    loop.drainFromVm(1024);
    expect(host.sent).toEqual([]);
    expect(vm.sent).toEqual([]);
    expect(loop.traffic.rejectsSent[Reason.BLOCKED_BY_RULE]).toBe(0);
  });

  test("spoofed frames and resets get nothing, even with --reject", () => {
    const { vm, loop } = setup({ reject: true });
    vm.incoming.push(
      tcpFrame({ srcMac: OTHER_MAC, dst: "10.99.0.1", dport: 80 }),
      tcpFrame({ src: "192.168.64.77", dst: "10.99.0.1", dport: 80 }),
      tcpFrame({ dst: "10.99.0.1", dport: 80, flags: TcpFlag.RST }),
    );
    loop.drainFromVm(1024);
    expect(vm.sent).toEqual([]);
  });

  test("a flood: 100 answers at once, then the rate limit, counted per reason", () => {
    const { vm, loop, advance } = setup({ reject: true });
    for (let i = 0; i < 300; i++) vm.incoming.push(SYN);
    loop.drainFromVm(1024);
    expect(vm.sent.length).toBe(REJECT_REPLY_BURST);
    expect(loop.traffic.rejectsSent[Reason.NOT_ALLOWED_DESTINATION]).toBe(REJECT_REPLY_BURST);
    expect(loop.traffic.rejectsRateLimited[Reason.NOT_ALLOWED_DESTINATION]).toBe(300 - REJECT_REPLY_BURST);
    advance(1000);
    vm.incoming.push(SYN);
    loop.drainFromVm(1024);
    expect(vm.sent.length).toBe(REJECT_REPLY_BURST + 1);
  });

  test("a VM socket without room: the answers are counted unsent and marked so for the capture", () => {
    const recorder = new Recorder();
    const { vm, loop } = setup({ reject: true, capture: recorder });
    vm.room = 1;
    vm.incoming.push(SYN, DATAGRAM);
    loop.drainFromVm(1024);
    expect(vm.sent).toEqual([RESET]);
    expect(loop.traffic.rejectsSent[Reason.NOT_ALLOWED_DESTINATION]).toBe(1);
    expect(loop.traffic.rejectsUnsent[Reason.NOT_ALLOWED_DESTINATION]).toBe(1);
    const answers = recorder.batches.filter((batch) => batch.direction === TrafficDirection.FROM_HOST);
    expect(answers.map((batch) => batch.verdicts)).toEqual([
      [SYNTHESISED | Reason.NOT_ALLOWED_DESTINATION, SYNTHESISED | UNSENT | Reason.NOT_ALLOWED_DESTINATION],
    ]);
    expect(answers[0].frames).toEqual([RESET, PROHIBITED]);
  });

  test("the VM gone when an answer is sent stops the loop as a closed VM", () => {
    const { vm, loop, stops } = setup({ reject: true });
    vm.gone = true;
    vm.incoming.push(SYN);
    expect(loop.drainFromVm(1024)).toBe(false);
    expect(stops).toEqual([{ kind: "vm-closed" }]);
  });

  test("the counters report says what was answered", () => {
    const { vm, loop, policy, now } = setup({ reject: true, block: ["10.99.0.53/32"] });
    for (let i = 0; i < 101; i++) vm.incoming.push(SYN);
    vm.incoming.push(DATAGRAM);
    loop.drainFromVm(1024);
    const report = counterReport({
      trigger: "SIGUSR2",
      traffic: loop.traffic,
      lease: policy.lease,
      nowMs: now(),
      startedAtMs: T0,
      exposed: "",
      forwardsInstalledFor: -1,
      capture: undefined,
      reject: true,
    });
    expect(report.lines).toContain(
      "  answered (--reject): 1 blocked-by-rule, 100 not-allowed-destination; " +
        "rate-limited 1 not-allowed-destination; unsent for lack of buffer space none",
    );
    expect(report.fields.reject).toEqual({
      sent: { "blocked-by-rule": 1, "not-allowed-destination": 100 },
      rate_limited: { "not-allowed-destination": 1 },
      unsent: {},
    });
    const off = counterReport({
      trigger: "exit",
      traffic: loop.traffic,
      lease: policy.lease,
      nowMs: now(),
      startedAtMs: T0,
      exposed: "",
      forwardsInstalledFor: -1,
      capture: undefined,
    });
    expect(off.lines.some((line) => line.includes("--reject"))).toBe(false);
    expect(off.fields.reject).toBeNull();
  });

  test("answering allocates nothing per frame", () => {
    const { vm, loop } = setup({ reject: true, perSecond: 1e9 });
    vm.keep = false;
    const burst = Array.from({ length: 64 }, (_, i) => (i % 2 === 0 ? SYN : DATAGRAM));
    const rounds = (count: number) => {
      for (let i = 0; i < count; i++) {
        vm.incoming.push(...burst);
        loop.drainFromVm(1024);
      }
    };
    rounds(200);
    Bun.gc(true);
    const before = heapStats().objectCount;
    rounds(2000);
    // The test's own arrays (push, shift) come and go; what grows per frame would be thousands.
    expect(heapStats().objectCount - before).toBeLessThan(200);
    expect(loop.traffic.rejectsSent[Reason.NOT_ALLOWED_DESTINATION]).toBe(2200 * 64);
  });
});

class MemorySink implements CaptureSink {
  chunks: Uint8Array[] = [];
  write(bytes: Uint8Array, length: number): void {
    this.chunks.push(bytes.slice(0, length));
  }
  truncate(): void {}
  close(): void {}
}

describe.skipIf(!haveTool("tshark") && !REQUIRED_IN_CI)("--reject in a capture, read by tshark", () => {
  test("the answer is an inbound frame saying it was synthesised, after the dropped frame", async () => {
    const sink = new MemorySink();
    const capture = new FrameCapture({
      sink,
      path: "reject.pcapng",
      limitBytes: 1 << 20,
      logger: new Logger("error", () => {}),
      vmMac: parseMac(VM_MAC)!,
      hostLink: "tap sn0200 on br0",
      maxFrameBytes: 1518,
      application: "softnet test",
      operatingSystem: "Linux test",
      hardware: "x64",
      wallClockMicros: () => 1_767_323_045_000_000,
    });
    capture.start();
    const { vm, loop } = setup({ reject: true, block: ["10.99.0.53/32"], capture });
    vm.room = 1;
    vm.incoming.push(udpFrame({ dst: "8.8.8.8", dport: 53 }), SYN, DATAGRAM);
    loop.drainFromVm(1024);
    capture.close();
    const dir = mkdtempSync(join(tmpdir(), "softnet-reject-loop-"));
    try {
      const path = join(dir, "reject.pcapng");
      writeFileSync(path, Buffer.concat(sink.chunks));
      const frames = await readWithTshark(path);
      expect(frames.map((frame) => [frame.direction, frame.comments])).toEqual([
        ["outbound", []],
        [
          "outbound",
          [
            "dropped: not-allowed-destination: " +
              "destination is not global, the gateway, or a DHCP-provided DNS server",
          ],
        ],
        ["outbound", ["dropped: blocked-by-rule: destination blocked by --block"]],
        ["inbound", ["synthesised: reject for not-allowed-destination"]],
        [
          "inbound",
          ["unsent: the VM's socket had no buffer space (synthesised: reject for blocked-by-rule)"],
        ],
      ]);
      expect(frames[3].hex).toBe(Buffer.from(RESET).toString("hex"));
      expect(frames[4].hex).toBe(Buffer.from(PROHIBITED).toString("hex"));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
