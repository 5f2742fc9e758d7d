/**
 * Logs for people and for fleets: the text lines stay exactly as they were, --log-format json
 * writes one object per line with time, level, pid, event, message and the event's own fields;
 * the filter loop and the port forwards log their events with those fields; the counters softnet
 * prints on SIGUSR2 and at exit count frames and bytes each way, per reason, and what did not fit.
 */

import { heapStats } from "bun:jsc";
import { describe, expect, test } from "bun:test";
import { describeError, SoftnetError } from "../../src/errors.ts";
import { FilterLoop, type FrameRecorder } from "../../src/filter-loop.ts";
import { fatalLine, type LogFields, Logger } from "../../src/log.ts";
import {
  FrameBatch,
  type FrameLink,
  SEND_OUTCOME_COUNT,
  SendOutcome,
  type SendOutcomeCode,
} from "../../src/platform/link.ts";
import { Policy } from "../../src/policy/policy.ts";
import { Reason } from "../../src/policy/reasons.ts";
import { RuleTable } from "../../src/policy/rules.ts";
import { PortForwards } from "../../src/port-forwards.ts";
import { counterSignalsOf } from "../../src/signals.ts";
import { counterReport, TrafficDirection, type TrafficDirectionCode, UNSENT } from "../../src/stats.ts";
import { parseIpv4, parseMac } from "../../src/wire/bytes.ts";
import { DhcpMessageType } from "../../src/wire/dhcp.ts";
import {
  dhcpServerFrame,
  etherFrame,
  GATEWAY,
  HOST_MAC,
  OTHER_MAC,
  tcpFrame,
  VM_IP,
  VM_MAC,
} from "../support/frames.ts";

const FIXED_TIME = new Date("2026-01-02T03:04:05.678Z");

function jsonLogger(level: "debug" | "info" | "error" = "debug") {
  const lines: string[] = [];
  const logger = new Logger(level, (line) => lines.push(line), { format: "json", now: () => FIXED_TIME });
  const records = () =>
    lines.map((line) => {
      expect(line.endsWith("\n")).toBe(true);
      expect(line.slice(0, -1)).not.toContain("\n"); // one object, one line
      return JSON.parse(line) as LogFields;
    });
  return { logger, lines, records };
}

/** C0, DEL, C1, U+2028 and U+2029: what a terminal or a line reader may act on. */
function controlCharactersIn(text: string): string[] {
  return [...text].filter((c) => {
    const code = c.charCodeAt(0);
    return code < 0x20 || (code >= 0x7f && code <= 0x9f) || code === 0x2028 || code === 0x2029;
  });
}

describe("the logger", () => {
  test("text: a newline, CR, ESC or C1 control in a message is escaped, so one event stays one line", () => {
    const lines: string[] = [];
    const logger = new Logger("debug", (line) => lines.push(line));
    logger.warn("cannot capture to x\nsoftnet[1] warn: forged\r\u001b[2J\u009b1m\u2028end\tok\\n");
    logger.report("info", ["first\nsoftnet[1] error: forged", "second\u0007"], "counters", {});
    expect(lines).toEqual([
      `softnet[${process.pid}] warn: cannot capture to x\\nsoftnet[1] warn: forged\\r\\x1b[2J\\x9b1m\\u2028end\\tok\\n\n`,
      `softnet[${process.pid}] info: first\\nsoftnet[1] error: forged\n` +
        `softnet[${process.pid}] info: second\\x07\n`,
    ]);
    expect(controlCharactersIn(lines.join(""))).toEqual(["\n", "\n", "\n"]);
  });

  test("json: control characters in the message and in fields are escaped, and read back unchanged", () => {
    const { logger, lines, records } = jsonLogger();
    const outside = "eth0\nsoftnet[1] warn: forged\u001b[31m\u009b\u2028\u007f";
    logger.info(`lease learned for ${outside}`, "lease-learned", { host_name: outside });
    expect(lines).toHaveLength(1);
    expect(controlCharactersIn(lines[0]!.slice(0, -1))).toEqual([]);
    const [record] = records();
    expect(record!.host_name).toBe(outside);
    expect(record!.message).toBe(`lease learned for ${outside}`);
  });

  test("a fatal line escapes control characters in both formats; describeError does too", () => {
    const error = new SoftnetError("cannot capture to /tmp/x\nsoftnet[1] warn: forged\u001b[2J", {
      cause: new Error("open '/tmp/x\nsoftnet[1] warn: forged\u001b[2J'"),
    });
    const line = describeError(error);
    expect(line).toBe(
      "cannot capture to /tmp/x\\nsoftnet[1] warn: forged\\x1b[2J: open '/tmp/x\\nsoftnet[1] warn: forged\\x1b[2J'",
    );
    expect(fatalLine("text", "a\nb\u001b")).toBe("softnet: a\\nb\\x1b\n");
    const json = fatalLine("json", "a\nb\u009b", FIXED_TIME);
    expect(controlCharactersIn(json.slice(0, -1))).toEqual([]);
    expect((JSON.parse(json) as LogFields).message).toBe("a\nb\u009b");
  });

  test("a fatal error is the usual line in text, and one JSON object with --log-format json", () => {
    expect(fatalLine("text", "the filter loop failed: boom")).toBe("softnet: the filter loop failed: boom\n");
    const json = fatalLine("json", "the filter loop failed: boom", FIXED_TIME);
    expect(json.endsWith("\n")).toBe(true);
    expect(JSON.parse(json)).toEqual({
      time: FIXED_TIME.toISOString(),
      level: "error",
      pid: process.pid,
      event: "fatal",
      message: "the filter loop failed: boom",
    });
  });

  test("text: the line is what it always was, whatever event and fields are passed", () => {
    const lines: string[] = [];
    const logger = new Logger("info", (line) => lines.push(line));
    logger.info("lease learned: 192.168.64.5 for 120 s, DNS none", "lease-learned", { lease: { a: 1 } });
    logger.warn("plain");
    logger.debug("not shown", "drop", { reason: "ip-spoof" });
    expect(lines).toEqual([
      `softnet[${process.pid}] info: lease learned: 192.168.64.5 for 120 s, DNS none\n`,
      `softnet[${process.pid}] warn: plain\n`,
    ]);
  });

  test("json: time, level, pid, event, message, then the fields; reserved names cannot be replaced", () => {
    const { logger, records } = jsonLogger();
    logger.info("lease learned", "lease-learned", {
      lease: { address: "192.168.64.5", expires_in_s: 120, dns: ["192.168.64.1"] },
      level: "spoofed",
      message: "spoofed",
      skipped: undefined,
    });
    logger.error("plain line");
    expect(records()).toEqual([
      {
        time: "2026-01-02T03:04:05.678Z",
        level: "info",
        pid: process.pid,
        event: "lease-learned",
        message: "lease learned",
        lease: { address: "192.168.64.5", expires_in_s: 120, dns: ["192.168.64.1"] },
      },
      {
        time: "2026-01-02T03:04:05.678Z",
        level: "error",
        pid: process.pid,
        event: "log",
        message: "plain line",
      },
    ]);
  });

  test("json: a message with quotes, newlines and non-ASCII stays one valid line", () => {
    const { logger, records } = jsonLogger();
    logger.warn('a "quoted"\nline → ünïcode', "drop", { frame: "02:00 > ff:ff\t\u0001" });
    expect(records()[0]).toMatchObject({
      message: 'a "quoted"\nline → ünïcode',
      frame: "02:00 > ff:ff\t\u0001",
    });
  });

  test("json: --log-level still filters", () => {
    const { logger, lines } = jsonLogger("error");
    logger.info("no");
    logger.warn("no");
    logger.error("yes");
    expect(lines.length).toBe(1);
  });

  test("a report is one line per row in text and one object in json; force ignores the level", () => {
    const text: string[] = [];
    const quiet = new Logger("error", (line) => text.push(line));
    quiet.report("info", ["counters (exit) after 5 s:", "  lease: none"], "counters", { uptime_s: 5 });
    expect(text).toEqual([]);
    quiet.report(
      "info",
      ["counters (SIGUSR2) after 5 s:", "  lease: none"],
      "counters",
      { uptime_s: 5 },
      true,
    );
    expect(text).toEqual([
      `softnet[${process.pid}] info: counters (SIGUSR2) after 5 s:\nsoftnet[${process.pid}] info:   lease: none\n`,
    ]);
    const { logger, records } = jsonLogger("error");
    logger.report("info", ["a", "b"], "counters", { uptime_s: 5 }, true);
    expect(records()).toEqual([
      {
        time: FIXED_TIME.toISOString(),
        level: "info",
        pid: process.pid,
        event: "counters",
        message: "a\nb",
        uptime_s: 5,
      },
    ]);
  });
});

/** In-memory links, as in filter-loop.test.ts. */
class MemoryLink implements FrameLink {
  readonly pollFd = -1;
  incoming: Uint8Array[] = [];
  sent: Uint8Array[] = [];
  room = Number.POSITIVE_INFINITY;
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
  /** Frames of these lengths are refused one by one with the given outcome, as a kernel would. */
  refuse = new Map<number, SendOutcomeCode>();
  send(batch: FrameBatch, slots: Uint16Array, count: number, outcomes?: Uint8Array): number {
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

/** A FrameRecorder that remembers each batch's verdicts, and the send outcomes of unsent frames. */
class VerdictRecorder implements FrameRecorder {
  readonly batches: Array<{
    direction: TrafficDirectionCode;
    verdicts: number[];
    lengths: number[];
    unsentOutcomes: Array<number | null>;
  }> = [];
  recordBatch(
    direction: TrafficDirectionCode,
    batch: FrameBatch,
    verdicts: Uint8Array,
    outcomes: Uint8Array,
    count: number,
  ): void {
    const unsentOutcomes = Array.from(verdicts.subarray(0, count), (verdict, slot) =>
      verdict & UNSENT ? outcomes[slot] : null,
    );
    this.batches.push({
      direction,
      verdicts: Array.from(verdicts.subarray(0, count)),
      lengths: Array.from(batch.lengths.subarray(0, count)),
      unsentOutcomes,
    });
  }
}

function loopWith(logger: Logger, capture?: FrameRecorder) {
  const gateway = parseIpv4(GATEWAY)!;
  const policy = new Policy({
    vmMac: parseMac(VM_MAC)!,
    gateway,
    prefixLength: 24,
    rules: RuleTable.compile([], gateway),
    isolated: true,
  });
  const vm = new MemoryLink("vm");
  const host = new MemoryLink("host");
  let now = 1000;
  const loop = new FilterLoop({
    policy,
    vm,
    host,
    vmBatch: new FrameBatch(8, 1518),
    hostBatch: new FrameBatch(8, 1518),
    logger,
    clock: () => now,
    onStop: () => {},
    capture,
  });
  const ack = dhcpServerFrame({
    messageType: DhcpMessageType.ACK,
    leaseTimeSeconds: 120,
    dnsServers: [GATEWAY],
  });
  return {
    policy,
    vm,
    host,
    loop,
    ack,
    advance: (ms: number) => {
      now += ms;
    },
    now: () => now,
  };
}

describe("events from the filter loop and the port forwards, as JSON", () => {
  test("lease learned, renewed and expired carry the lease", () => {
    const { logger, records } = jsonLogger();
    const { host, loop, ack, advance } = loopWith(logger);
    host.incoming.push(ack);
    loop.drainFromHost(1024);
    advance(10_000);
    host.incoming.push(ack);
    loop.drainFromHost(1024);
    advance(120_000);
    loop.tick();
    const leaseRecords = records().filter(({ event }) => event !== "gateway-mac");
    expect(leaseRecords.map(({ event, lease, message }) => ({ event, lease, message }))).toEqual([
      {
        event: "lease-learned",
        lease: { address: VM_IP, expires_in_s: 120, dns: [GATEWAY] },
        message: `lease learned: ${VM_IP} for 120 s, DNS ${GATEWAY}`,
      },
      {
        event: "lease-renewed",
        lease: { address: VM_IP, expires_in_s: 120, dns: [GATEWAY] },
        message: `lease renewed: ${VM_IP} for 120 s, DNS ${GATEWAY}`,
      },
      {
        event: "lease-expired",
        lease: { address: VM_IP },
        message: `lease for ${VM_IP} expired; the VM must renew it`,
      },
    ]);
  });

  test("a NAK is a lease-refused event", () => {
    const { logger, records } = jsonLogger();
    const { host, loop } = loopWith(logger);
    host.incoming.push(dhcpServerFrame({ messageType: DhcpMessageType.NAK }));
    loop.drainFromHost(1024);
    // The NAK came from the gateway's address: its MAC is learned on the way.
    expect(records().map((record) => record.event)).toEqual(["lease-refused", "gateway-mac"]);
    expect(records()[1]).toMatchObject({ mac: HOST_MAC, changed: false });
  });

  test("a drop carries its reason, what it means, and the frame in one line", () => {
    const { logger, records } = jsonLogger();
    const { vm, loop } = loopWith(logger);
    vm.incoming.push(tcpFrame({ srcMac: OTHER_MAC, dst: "1.1.1.1", dport: 443 }));
    loop.drainFromVm(1024);
    const [drop] = records();
    expect(drop).toMatchObject({
      level: "warn",
      event: "drop",
      direction: "from-vm",
      reason: "mac-spoof",
      explanation: "source MAC is not the VM's --vm-mac-address",
      suppressed_before: 0,
    });
    expect(drop!.frame).toContain(`${OTHER_MAC} > `);
    expect(drop!.message).toBe(`dropped from VM: mac-spoof: ${drop!.explanation}: ${drop!.frame}`);
  });

  test("port forwards installed and removed", async () => {
    const { logger, records } = jsonLogger();
    let desired = parseIpv4(VM_IP)!;
    const forwards = new PortForwards(
      [{ externalPort: 2222, internalPort: 22 }],
      { install: async () => {}, removeAll: async () => {} },
      logger,
      () => desired,
    );
    await forwards.reconcile();
    desired = -1;
    await forwards.reconcile();
    expect(records().map(({ event, ports, address, reason }) => ({ event, ports, address, reason }))).toEqual(
      [
        { event: "forwards-installed", ports: "2222→22", address: VM_IP, reason: undefined },
        { event: "forwards-removed", ports: "2222→22", address: undefined, reason: "no-lease" },
      ],
    );
  });
});

describe("the counters", () => {
  test("frames and bytes each way, per reason, and frames that found no room", () => {
    const capture = new VerdictRecorder();
    const { vm, host, loop, ack, policy, now } = loopWith(new Logger("error", () => {}), capture);
    host.incoming.push(ack);
    loop.drainFromHost(1024);
    const good = tcpFrame({ dst: "1.1.1.1", dport: 443 });
    const spoofed = tcpFrame({ src: "192.168.64.77", dst: "1.1.1.1", dport: 443 });
    const ipv6 = etherFrame(0x86dd, 100);
    host.room = 2; // the third good frame finds the host link full
    vm.incoming.push(good, spoofed, good, ipv6, good);
    loop.drainFromVm(1024);

    const traffic = loop.traffic;
    const FROM_VM = TrafficDirection.FROM_VM;
    const FROM_HOST = TrafficDirection.FROM_HOST;
    expect(traffic.receivedFrames[FROM_VM]).toBe(5);
    expect(traffic.receivedBytes[FROM_VM]).toBe(3 * good.length + spoofed.length + ipv6.length);
    expect(traffic.deliveredFrames[FROM_VM]).toBe(2);
    expect(traffic.deliveredBytes[FROM_VM]).toBe(2 * good.length);
    expect(traffic.unsentFrames[FROM_VM]).toBe(1);
    expect(traffic.droppedFrames(FROM_VM)).toBe(2);
    expect(traffic.receivedFrames[FROM_HOST]).toBe(1);
    expect(traffic.deliveredBytes[FROM_HOST]).toBe(ack.length);

    // The capture saw the same verdicts, the unsent one marked.
    expect(capture.batches[1]).toEqual({
      direction: FROM_VM,
      verdicts: [
        Reason.PASS_GLOBAL,
        Reason.IP_SPOOF,
        Reason.PASS_GLOBAL,
        Reason.NON_IP_ETHERTYPE,
        Reason.PASS_GLOBAL | UNSENT,
      ],
      lengths: [good.length, spoofed.length, good.length, ipv6.length, good.length],
      unsentOutcomes: [null, null, null, null, SendOutcome.NO_ROOM],
    });

    const report = counterReport({
      trigger: "SIGUSR2",
      traffic,
      lease: policy.lease,
      nowMs: now() + 3_723_000,
      startedAtMs: now(),
      exposed: "2222→22",
      forwardsInstalledFor: parseIpv4(VM_IP)!,
      capture: { path: "vm.pcapng", frames: 6, bytes: 999, limitBytes: 4096, state: "writing" },
    });
    expect(report.lines).toEqual([
      "counters (SIGUSR2) after 1 h 2 min 3 s:",
      `  from the VM: 5 frames, ${traffic.receivedBytes[FROM_VM]} bytes; to the host: 2 frames, ${2 * good.length} bytes; dropped 2; unsent for lack of buffer space 1; refused by the host's kernel 0`,
      "    passed: 3 global-destination",
      "    dropped: 1 non-ip-ethertype, 1 ip-spoof",
      `  from the host: 1 frames, ${ack.length} bytes; to the VM: 1 frames, ${ack.length} bytes; dropped 0; unsent for lack of buffer space 0; refused by the VM's kernel 0`,
      "    passed: 1 host-ipv4",
      "    dropped: none",
      "  lease: none (192.168.64.5 expired)",
      `  port forwards: TCP 2222→22 to ${VM_IP}`,
      "  capture: 6 frames, 999 bytes in vm.pcapng (limit 4 KiB; writing)",
    ]);
    expect(report.fields).toMatchObject({
      trigger: "SIGUSR2",
      uptime_s: 3723,
      from_vm: {
        frames: 5,
        delivered_frames: 2,
        dropped_frames: 2,
        unsent_frames: 1,
        passed: { "global-destination": 3 },
        dropped: { "non-ip-ethertype": 1, "ip-spoof": 1 },
      },
      from_host: { frames: 1, delivered_frames: 1, dropped_frames: 0, unsent_frames: 0 },
      lease: null,
      forwards: { installed: true, ports: "2222→22", address: VM_IP },
      capture: { path: "vm.pcapng", frames: 6, bytes: 999, limit_bytes: 4096, state: "writing" },
    });
  });

  test("a frame the receiving kernel refuses mid-batch is counted, summarised and captured as refused, not as unsent", () => {
    const capture = new VerdictRecorder();
    const { vm, host, loop, ack, policy, now } = loopWith(new Logger("error", () => {}), capture);
    host.incoming.push(ack);
    loop.drainFromHost(1024);
    const good = tcpFrame({ dst: "1.1.1.1", dport: 443 });
    const big = tcpFrame({ dst: "1.1.1.1", dport: 443, payload: new Uint8Array(100) });
    host.refuse.set(big.length, SendOutcome.REFUSED_TOO_LONG);
    vm.incoming.push(good, big, good, good);
    loop.drainFromVm(1024);

    // The link took the frames on either side of the refused one.
    expect(host.sent).toEqual([good, good, good]);
    const traffic = loop.traffic;
    const FROM_VM = TrafficDirection.FROM_VM;
    expect(traffic.deliveredFrames[FROM_VM]).toBe(3);
    expect(traffic.deliveredBytes[FROM_VM]).toBe(3 * good.length);
    expect(traffic.unsentFrames[FROM_VM]).toBe(0);
    expect(traffic.refusedTotal(FROM_VM)).toBe(1);
    expect(traffic.refusedFrames[FROM_VM * SEND_OUTCOME_COUNT + SendOutcome.REFUSED_TOO_LONG]).toBe(1);
    // The capture marks the refused frame, the second, and no other.
    expect(capture.batches[1]).toEqual({
      direction: FROM_VM,
      verdicts: [Reason.PASS_GLOBAL, Reason.PASS_GLOBAL | UNSENT, Reason.PASS_GLOBAL, Reason.PASS_GLOBAL],
      lengths: [good.length, big.length, good.length, good.length],
      unsentOutcomes: [null, SendOutcome.REFUSED_TOO_LONG, null, null],
    });
    // The minute's summary, the report and the stop line read the same counters.
    const dropped: Record<string, number> = {};
    expect(loop.dropSummary(dropped)).toBe("refused by the host's kernel: 1 too-long");
    expect(dropped).toEqual({ "refused-to-host-too-long": 1 });
    const report = counterReport({
      trigger: "exit",
      traffic,
      lease: policy.lease,
      nowMs: now(),
      startedAtMs: now(),
      exposed: "",
      forwardsInstalledFor: -1,
      capture: undefined,
    });
    expect(report.lines[1]).toEndWith(
      "dropped 0; unsent for lack of buffer space 0; refused by the host's kernel 1",
    );
    expect(report.lines[4]).toBe("    refused: 1 too-long");
    expect(report.fields.from_vm).toMatchObject({ delivered_frames: 3, unsent_frames: 0, refused_frames: 1 });
  });

  test("frames a link cut short (longer than a slot) are reported with their direction", () => {
    const { policy, loop, now } = loopWith(new Logger("error", () => {}));
    const report = counterReport({
      trigger: "exit",
      traffic: loop.traffic,
      lease: policy.lease,
      nowMs: now(),
      startedAtMs: now(),
      exposed: "",
      forwardsInstalledFor: -1,
      capture: undefined,
      truncatedFrames: [2, 0],
    });
    expect(report.lines[4]).toBe(
      "    truncated: 2 longer than softnet's frame slots (counted as malformed-ethernet)",
    );
    expect(report.lines.filter((line) => line.includes("truncated")).length).toBe(1);
    expect(report.fields.from_vm).toMatchObject({ truncated_frames: 2 });
    expect(report.fields.from_host).toMatchObject({ truncated_frames: 0 });
  });

  test("the lease as the report shows it while it is valid", () => {
    const { host, loop, ack, policy, now } = loopWith(new Logger("error", () => {}));
    host.incoming.push(ack);
    loop.drainFromHost(1024);
    const report = counterReport({
      trigger: "exit",
      traffic: loop.traffic,
      lease: policy.lease,
      nowMs: now() + 20_000,
      startedAtMs: now(),
      exposed: "",
      forwardsInstalledFor: -1,
      capture: undefined,
    });
    expect(report.lines.slice(-2)).toEqual([
      `  lease: ${VM_IP}, expires in 100 s, DNS ${GATEWAY}`,
      "  port forwards: none (no --expose)",
    ]);
    expect(report.fields.lease).toEqual({ address: VM_IP, expires_in_s: 100, dns: [GATEWAY] });
    expect(report.fields.capture).toBeNull();
  });

  test("asked for with SIGUSR2 everywhere, and with SIGINFO (Ctrl-T) only where it exists: macOS", () => {
    expect(counterSignalsOf("linux")).toEqual(["SIGUSR2"]);
    expect(counterSignalsOf("darwin")).toEqual(["SIGUSR2", "SIGINFO"]);
  });

  test("counting allocates nothing per frame", () => {
    const { vm, host, loop, ack } = loopWith(new Logger("error", () => {}));
    host.incoming.push(ack);
    loop.drainFromHost(1024);
    const frames = [
      tcpFrame({ dst: "1.1.1.1", dport: 443 }),
      tcpFrame({ src: "10.1.1.1", dst: "1.1.1.1", dport: 1 }),
    ];
    // A VM link that hands out the same 8 frames forever, without allocating.
    let left = 0;
    vm.receive = (batch: FrameBatch) => {
      if (left <= 0) return 0;
      left--;
      for (let slot = 0; slot < 8; slot++) {
        batch.bytes.set(frames[slot % 2]!, batch.offsetOf(slot));
        batch.lengths[slot] = frames[slot % 2]!.length;
      }
      return 8;
    };
    host.send = (_batch, _slots, count) => count;
    const rounds = (n: number) => {
      left = n;
      loop.drainFromVm(n * 8 + 8);
    };
    rounds(200);
    Bun.gc(true);
    const before = heapStats().objectCount;
    rounds(5000);
    expect(heapStats().objectCount - before).toBeLessThan(10);
    expect(loop.traffic.receivedFrames[TrafficDirection.FROM_VM]).toBe(5200 * 8);
  });
});
