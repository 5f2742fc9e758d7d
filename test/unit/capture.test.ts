/**
 * The --capture writer: its blocks byte for byte against blocks built by hand from the pcapng
 * draft (draft-ietf-opsawg-pcapng 4.1 SHB, 4.2 IDB, 4.3 EPB), then whole files read back by real
 * readers (tshark and tcpdump): directions, drop reasons as comments, the exact bytes of the
 * frames handed in, the size limit (whole blocks only) and a failing disk.
 */

import { heapStats } from "bun:jsc";
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FrameCapture } from "../../src/capture/capture.ts";
import type { CaptureSink } from "../../src/capture/file.ts";
import {
  encodeInterfaceDescription,
  encodeSectionHeader,
  enhancedPacketLength,
  InterfaceOption,
  LINKTYPE_ETHERNET,
  MICROSECONDS,
  macOption,
  PacketDirection,
  SectionHeaderOption,
  textOption,
  writeEnhancedPacket,
} from "../../src/capture/pcapng.ts";
import { Logger } from "../../src/log.ts";
import { FrameBatch, SendOutcome } from "../../src/platform/link.ts";
import { Reason } from "../../src/policy/reasons.ts";
import { TrafficDirection, type TrafficDirectionCode, UNSENT } from "../../src/stats.ts";
import { parseMac } from "../../src/wire/bytes.ts";
import { haveTool, hex, readWithTcpdump, readWithTshark } from "../support/capture-readers.ts";
import { REQUIRED_IN_CI } from "../support/ci.ts";
import {
  arpFrame,
  etherFrame,
  GATEWAY,
  icmpEchoFrame,
  OTHER_MAC,
  tcpFrame,
  udpFrame,
  VM_IP,
  VM_MAC,
} from "../support/frames.ts";

/** Little-endian 32-bit words, for writing expected blocks the way the draft draws them. */
function words(...values: number[]): number[] {
  return values.flatMap((value) => [value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, value >>> 24]);
}
const ascii = (text: string) => [...text].map((character) => character.charCodeAt(0));

describe("blocks, byte for byte against the draft's layouts", () => {
  test("Section Header Block (4.1) with shb_userappl", () => {
    const block = encodeSectionHeader([textOption(SectionHeaderOption.USER_APPLICATION, "softnet")]);
    expect([...block]).toEqual([
      ...words(0x0a0d0d0a), // Block Type: "\n\r\r\n"
      ...words(44), // Block Total Length
      ...words(0x1a2b3c4d), // Byte-Order Magic, little-endian: 4d 3c 2b 1a
      0x01,
      0x00,
      0x00,
      0x00, // Major Version 1, Minor Version 0
      ...[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // Section Length -1: not specified
      0x04,
      0x00,
      0x07,
      0x00,
      ...ascii("softnet"),
      0x00, // shb_userappl (4), length 7, padded to 8
      0x00,
      0x00,
      0x00,
      0x00, // opt_endofopt
      ...words(44), // Block Total Length again
    ]);
  });

  test("Interface Description Block (4.2): Ethernet, SnapLen, if_name, if_MACaddr, if_tsresol", () => {
    const block = encodeInterfaceDescription(LINKTYPE_ETHERNET, 1518, [
      textOption(InterfaceOption.NAME, "vm"),
      macOption(parseMac("02:00:00:00:00:01")!),
      { code: InterfaceOption.TIMESTAMP_RESOLUTION, value: Uint8Array.of(MICROSECONDS) },
    ]);
    expect([...block]).toEqual([
      ...words(1), // Block Type: IDB
      ...words(52),
      0x01,
      0x00,
      0x00,
      0x00, // LinkType 1 (LINKTYPE_ETHERNET), Reserved 0
      ...words(1518), // SnapLen
      0x02,
      0x00,
      0x02,
      0x00,
      ...ascii("vm"),
      0x00,
      0x00, // if_name (2), length 2, padded
      0x06,
      0x00,
      0x06,
      0x00,
      0x02,
      0x00,
      0x00,
      0x00,
      0x00,
      0x01,
      0x00,
      0x00, // if_MACaddr (6), 6 octets, padded
      0x09,
      0x00,
      0x01,
      0x00,
      0x06,
      0x00,
      0x00,
      0x00, // if_tsresol (9): 10^-6
      0x00,
      0x00,
      0x00,
      0x00, // opt_endofopt
      ...words(52),
    ]);
  });

  test("Enhanced Packet Block (4.3): timestamp halves, lengths, padding, epb_flags, opt_comment", () => {
    // A dirty buffer: the writer reuses its buffer, so every padding octet must be written as zero.
    const out = new Uint8Array(128).fill(0xaa);
    const view = new DataView(out.buffer);
    const frame = Uint8Array.of(1, 2, 3, 4, 5);
    const end = writeEnhancedPacket(
      out,
      view,
      4,
      0,
      0x1_0000_0002, // microseconds: upper word 1, lower word 2
      frame,
      5,
      PacketDirection.OUTBOUND,
      new TextEncoder().encode("ab"),
    );
    expect(end).toBe(4 + 60);
    expect(enhancedPacketLength(5, 2)).toBe(60);
    expect([...out.subarray(4, end)]).toEqual([
      ...words(6), // Block Type: EPB
      ...words(60),
      ...words(0), // Interface ID 0
      ...words(1), // Timestamp, upper 32 bits
      ...words(2), // Timestamp, lower 32 bits
      ...words(5), // Captured Packet Length
      ...words(5), // Original Packet Length
      1,
      2,
      3,
      4,
      5,
      0,
      0,
      0, // Packet Data, padded to 32 bits with zeros
      0x02,
      0x00,
      0x04,
      0x00,
      ...words(0b10), // epb_flags (2): bits 0-1 = 10, outbound (4.3.1)
      0x01,
      0x00,
      0x02,
      0x00,
      ...ascii("ab"),
      0x00,
      0x00, // opt_comment (1), "ab", padded
      0x00,
      0x00,
      0x00,
      0x00, // opt_endofopt
      ...words(60),
    ]);
    expect(out[0]).toBe(0xaa); // nothing written before `at`
  });

  test("an EPB without a comment, from a whole batch slot (longer than the frame)", () => {
    const out = new Uint8Array(64).fill(0xaa);
    const slot = Uint8Array.of(9, 8, 7, 6, 0xee, 0xee, 0xee, 0xee); // a 4-byte frame in an 8-byte slot
    const end = writeEnhancedPacket(
      out,
      new DataView(out.buffer),
      0,
      0,
      7,
      slot,
      4,
      PacketDirection.INBOUND,
      undefined,
    );
    expect([...out.subarray(0, end)]).toEqual([
      ...words(6),
      ...words(48),
      ...words(0),
      ...words(0),
      ...words(7),
      ...words(4),
      ...words(4),
      9,
      8,
      7,
      6, // exactly 4 bytes: nothing of the slot beyond the frame
      0x02,
      0x00,
      0x04,
      0x00,
      ...words(0b01), // epb_flags: inbound
      0x00,
      0x00,
      0x00,
      0x00,
      ...words(48),
    ]);
  });
});

/** A sink that keeps what is written, and can be told to fail. */
class MemorySink implements CaptureSink {
  chunks: Uint8Array[] = [];
  /** When set, write() stores this many bytes of the next call, then throws (a full disk). */
  failAfterBytes: number | undefined;
  truncatedTo: number | undefined;
  closed = false;
  writes = 0;
  write(bytes: Uint8Array, length: number): void {
    this.writes++;
    if (this.failAfterBytes !== undefined) {
      this.chunks.push(bytes.slice(0, Math.min(length, this.failAfterBytes)));
      throw new Error("ENOSPC: no space left on device, write");
    }
    this.chunks.push(bytes.slice(0, length));
  }
  truncate(length: number): void {
    this.truncatedTo = length;
    const all = this.bytes();
    this.chunks = [all.slice(0, length)];
  }
  close(): void {
    this.closed = true;
  }
  bytes(): Uint8Array {
    return new Uint8Array(Buffer.concat(this.chunks));
  }
}

const VM_MAC_NUMBER = parseMac(VM_MAC)!;
/** 2026-01-02T03:04:05.678901Z in microseconds. */
const TIMESTAMP_MICROS = 1_767_323_045_678_901;

function newCapture(sink: CaptureSink, limitBytes = 1 << 20, lines: string[] = []) {
  return new FrameCapture({
    sink,
    path: "test.pcapng",
    limitBytes,
    logger: new Logger("debug", (line) => lines.push(line)),
    vmMac: VM_MAC_NUMBER,
    hostLink: "tap sn0200 on br0",
    maxFrameBytes: 1518,
    application: "softnet test",
    operatingSystem: "Linux test",
    hardware: "x64",
    wallClockMicros: () => TIMESTAMP_MICROS,
  });
}

function fill(batch: FrameBatch, frames: Uint8Array[]): void {
  frames.forEach((frame, slot) => {
    batch.bytes.set(frame, batch.offsetOf(slot));
    batch.lengths[slot] = frame.length;
  });
}

const work = mkdtempSync(join(tmpdir(), "softnet-capture-test-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));
let fileCount = 0;
function save(bytes: Uint8Array): string {
  const path = join(work, `capture-${++fileCount}.pcapng`);
  writeFileSync(path, bytes);
  return path;
}

const readersPresent = haveTool("tshark") && haveTool("tcpdump");
const withReaders = test.skipIf(!readersPresent && !REQUIRED_IN_CI);

describe("a capture read back by tshark and tcpdump", () => {
  // What a VM sends: one frame each for a pass, a spoof, an IPv6 frame, an ARP lie, and one that
  // passed but found the host link full.
  const fromVm = [
    udpFrame({ dst: "8.8.8.8", dport: 53 }),
    tcpFrame({ src: "10.9.9.9", dst: "8.8.8.8", dport: 80 }),
    etherFrame(0x86dd, 60),
    arpFrame({ senderIp: GATEWAY, targetIp: "192.168.64.9" }),
    icmpEchoFrame({ dst: "8.8.8.8", payloadLength: 1400 }),
    udpFrame({ srcMac: OTHER_MAC, dst: "8.8.8.8", dport: 53 }),
  ];
  const fromVmVerdicts = [
    Reason.PASS_GLOBAL,
    Reason.IP_SPOOF,
    Reason.NON_IP_ETHERTYPE,
    Reason.ARP_SPOOF,
    Reason.PASS_GLOBAL | UNSENT,
    Reason.MAC_SPOOF,
  ];
  // What the host sends the VM: a reply that passes, a frame that does not (an IPv6 one).
  const fromHost = [
    udpFrame({
      src: "8.8.8.8",
      dst: VM_IP,
      sport: 53,
      dport: 40000,
      srcMac: "5e:00:00:00:00:01",
      dstMac: VM_MAC,
    }),
    etherFrame(0x86dd, 80, "5e:00:00:00:00:01"),
    // Passed, then refused by the VM socket's kernel (EMSGSIZE) while the frames around it went on.
    udpFrame({
      src: "8.8.8.8",
      dst: VM_IP,
      sport: 53,
      dport: 40001,
      srcMac: "5e:00:00:00:00:01",
      dstMac: VM_MAC,
    }),
    udpFrame({
      src: "8.8.8.8",
      dst: VM_IP,
      sport: 53,
      dport: 40002,
      srcMac: "5e:00:00:00:00:01",
      dstMac: VM_MAC,
    }),
  ];
  const fromHostVerdicts = [
    Reason.PASS_HOST_IPV4,
    Reason.NON_IP_ETHERTYPE,
    Reason.PASS_HOST_IPV4 | UNSENT,
    Reason.PASS_HOST_IPV4,
  ];
  const fromHostOutcomes = [
    SendOutcome.SENT,
    SendOutcome.SENT,
    SendOutcome.REFUSED_TOO_LONG,
    SendOutcome.SENT,
  ];

  function record(
    capture: FrameCapture,
    direction: TrafficDirectionCode,
    frames: Uint8Array[],
    verdicts: number[],
    outcomes: number[] = verdicts.map((verdict) =>
      verdict & UNSENT ? SendOutcome.NO_ROOM : SendOutcome.SENT,
    ),
  ) {
    const batch = new FrameBatch(8, 1518);
    fill(batch, frames);
    capture.recordBatch(
      direction,
      batch,
      Uint8Array.from(verdicts),
      Uint8Array.from(outcomes),
      frames.length,
    );
  }

  withReaders("directions, reasons as comments, and the very bytes handed in", async () => {
    const sink = new MemorySink();
    const capture = newCapture(sink);
    capture.start();
    record(capture, TrafficDirection.FROM_VM, fromVm, fromVmVerdicts);
    record(capture, TrafficDirection.FROM_HOST, fromHost, fromHostVerdicts, fromHostOutcomes);
    capture.close();
    expect(sink.closed).toBe(true);
    const path = save(sink.bytes());

    const frames = await readWithTshark(path);
    expect(frames.map((frame) => frame.hex)).toEqual([...fromVm, ...fromHost].map(hex));
    expect(frames.map((frame) => frame.direction)).toEqual([
      ...fromVm.map(() => "outbound" as const),
      ...fromHost.map(() => "inbound" as const),
    ]);
    expect(frames.map((frame) => frame.comments)).toEqual([
      [],
      ["dropped: ip-spoof: source address is not the VM's leased address"],
      ["dropped: non-ip-ethertype: only IPv4 and ARP are forwarded (IPv6, VLAN tags and others are not)"],
      ["dropped: arp-spoof: ARP sender is not the VM's MAC and leased address"],
      ["unsent: the host link had no buffer space (passed as global-destination)"],
      ["dropped: mac-spoof: source MAC is not the VM's --vm-mac-address"],
      [],
      ["dropped: non-ip-ethertype: only IPv4 and ARP are forwarded (IPv6, VLAN tags and others are not)"],
      ["refused: the VM's socket: too long for the link (EMSGSIZE) (passed as host-ipv4)"],
      [],
    ]);
    for (const frame of frames) {
      expect(frame.interfaceName).toBe(`vm ${VM_MAC} via tap sn0200 on br0`);
      expect(frame.interfaceDescription).toContain("outbound = sent by the VM, inbound = sent to the VM");
      expect(frame.timeEpoch).toMatch(/^1767323045\.678901/);
    }
    // libpcap's reader (tcpdump) sees the same frames, byte for byte.
    expect(await readWithTcpdump(path)).toEqual([...fromVm, ...fromHost].map(hex));
  });

  withReaders(
    "--capture-limit: writing stops before the limit, the file holds whole blocks, one warning",
    async () => {
      const sink = new MemorySink();
      const lines: string[] = [];
      const limit = 4096;
      const capture = newCapture(sink, limit, lines);
      capture.start();
      const frame = icmpEchoFrame({ dst: "8.8.8.8", payloadLength: 200 });
      for (let round = 0; round < 10; round++) {
        record(
          capture,
          TrafficDirection.FROM_VM,
          [frame, frame, frame],
          [Reason.PASS_GLOBAL, Reason.PASS_GLOBAL, Reason.PASS_GLOBAL],
        );
        capture.flush();
      }
      capture.close();
      const bytes = sink.bytes();
      expect(bytes.length).toBeLessThanOrEqual(limit);
      // The next block would not have fitted: the file is as full as whole blocks allow.
      expect(bytes.length + enhancedPacketLength(frame.length, 0)).toBeGreaterThan(limit);
      const frames = await readWithTshark(save(bytes)); // throws if a block were cut short
      expect(frames.length).toBeGreaterThan(5);
      expect(frames.length).toBeLessThan(30);
      expect(frames.every((read) => read.hex === hex(frame))).toBe(true);
      expect(capture.status.frames).toBe(frames.length);
      expect(capture.status.state).toBe("stopped at --capture-limit");
      const warnings = lines.filter((line) => line.includes("reached --capture-limit"));
      expect(warnings).toEqual([
        `softnet[${process.pid}] warn: capture test.pcapng reached --capture-limit 4 KiB after ${frames.length} frames: no more frames are written (softnet keeps forwarding)\n`,
      ]);
    },
  );

  withReaders(
    "a write that fails half-way is cut back to the last whole block; capturing stops, once",
    async () => {
      const sink = new MemorySink();
      const lines: string[] = [];
      const capture = newCapture(sink, 1 << 20, lines);
      capture.start();
      record(capture, TrafficDirection.FROM_VM, [fromVm[0]!], [Reason.PASS_GLOBAL]);
      capture.flush();
      const good = sink.bytes().length;
      sink.failAfterBytes = 10; // the disk fills up 10 bytes into the next write
      record(
        capture,
        TrafficDirection.FROM_VM,
        [fromVm[0]!, fromVm[1]!],
        [Reason.PASS_GLOBAL, Reason.IP_SPOOF],
      );
      capture.flush();
      expect(sink.truncatedTo).toBe(good);
      expect(capture.status.state).toBe("stopped: ENOSPC: no space left on device, write");
      const writesSoFar = sink.writes;
      record(capture, TrafficDirection.FROM_VM, [fromVm[0]!], [Reason.PASS_GLOBAL]);
      capture.flush();
      capture.close();
      expect(sink.writes).toBe(writesSoFar); // nothing more is attempted
      expect(lines.filter((line) => line.includes("capture test.pcapng stopped"))).toHaveLength(1);
      const frames = await readWithTshark(save(sink.bytes()));
      expect(frames.map((frame) => frame.hex)).toEqual([hex(fromVm[0]!)]);
    },
  );
});

describe("the cost", () => {
  test("recording batches allocates nothing per frame, and writes once per flush", () => {
    const sink = new MemorySink();
    const capture = newCapture(sink, 2 ** 40);
    capture.start();
    const batch = new FrameBatch(64, 1518);
    const frames = Array.from({ length: 64 }, (_, i) =>
      i % 2 === 0
        ? udpFrame({ dst: "8.8.8.8", dport: 53 })
        : tcpFrame({ src: "10.0.0.9", dst: "8.8.8.8", dport: 80 }),
    );
    fill(batch, frames);
    const verdicts = Uint8Array.from(frames, (_, i) => (i % 2 === 0 ? Reason.PASS_GLOBAL : Reason.IP_SPOOF));
    const outcomes = new Uint8Array(64);
    // A sink that counts writes but keeps nothing, so only the capture's own allocations show.
    let writes = 0;
    (sink as { write: CaptureSink["write"] }).write = () => {
      writes++;
    };
    const rounds = (n: number) => {
      for (let i = 0; i < n; i++) {
        capture.recordBatch(TrafficDirection.FROM_VM, batch, verdicts, outcomes, 64);
        if (i % 4 === 3) capture.flush();
      }
    };
    rounds(400);
    Bun.gc(true);
    const before = heapStats().objectCount;
    const writesBefore = writes;
    rounds(4000);
    expect(heapStats().objectCount - before).toBeLessThan(10);
    // 4000 batches of 64 frames, flushed every 4 batches: 1000 writes (the 1 MiB buffer never fills).
    expect(writes - writesBefore).toBe(1000);
    expect(capture.status.frames).toBe(4400 * 64);
  });
});
