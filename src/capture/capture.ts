/**
 * --capture: every frame softnet reads, both directions, into a pcapng file, each marked with its
 * direction and, when softnet did not pass it on, why (a packet comment), so Wireshark shows the
 * verdict beside the packet.
 *
 * The file has one interface, the VM's network card as softnet sees it. Direction follows the
 * VM's point of view, as a capture inside the guest would: frames the VM sent are outbound, frames
 * from the host on their way to the VM are inbound (pcapng.ts PacketDirection). Dropped frames
 * carry `dropped: <reason>: <what it means>` (the names and words of src/policy/reasons.ts);
 * frames the policy passed that the receiving side had no buffer space for carry `unsent: ...`, and
 * those its kernel refused (the link's send outcome: too short, too long, link down) `refused: ...`;
 * answers softnet made itself for the VM (--reject) are inbound and carry `synthesised: ...`.
 *
 * Per frame nothing is allocated: blocks are written into one preallocated buffer (comments are
 * encoded once, at start), and the buffer goes to the file in one write per drain (flush(), which
 * the runtime calls after each drain of a link) or when it is full. The file only ever holds whole
 * blocks, so it stays readable at any moment: --capture-limit stops writing before a block would
 * cross it, and a failed write (disk full) is cut back to the last whole block. Neither stops
 * softnet: the VM keeps its network, the log says once what happened.
 */
import { release } from "node:os";
import type { CaptureOptions } from "../cli.ts";
import { SoftnetError } from "../errors.ts";
import type { Logger } from "../log.ts";
import {
  type FrameBatch,
  SEND_OUTCOME_COUNT,
  SEND_OUTCOME_EXPLANATIONS,
  SendOutcome,
} from "../platform/link.ts";
import { isPass, REASON_COUNT, REASON_EXPLANATIONS, REJECT_REASONS, reasonName } from "../policy/reasons.ts";
import {
  type CaptureStatus,
  formatSize,
  SYNTHESISED,
  TrafficDirection,
  type TrafficDirectionCode,
  UNSENT,
} from "../stats.ts";
import { COMMIT, VERSION } from "../version.ts";
import { formatMac } from "../wire/bytes.ts";
import { CaptureFile, type CaptureSink } from "./file.ts";
import {
  EPB_HEADER,
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
} from "./pcapng.ts";

/** Enough for hundreds of frames per write; a frame block is at most ~66 KiB (64 KiB slots). */
const BUFFER_BYTES = 1024 * 1024;
const INTERFACE_ID = 0;

export interface FrameCaptureOptions {
  sink: CaptureSink;
  /** The file's name, for logs and the counters. */
  path: string;
  limitBytes: number;
  logger: Logger;
  vmMac: number;
  /** The host link, e.g. "tap sn025e10 on br0" or "vmnet shared". */
  hostLink: string;
  /** The largest frame a batch slot holds: the interface's SnapLen. */
  maxFrameBytes: number;
  /** e.g. "softnet 0.3.0 (abc1234)". */
  application: string;
  /** e.g. "Linux 6.1.0" (shb_os). */
  operatingSystem: string;
  /** e.g. "x64" (shb_hardware). */
  hardware: string;
  /** Microseconds since 1970-01-01 UTC, read once per batch. */
  wallClockMicros: () => number;
}

const State = { WRITING: 0, LIMIT_REACHED: 1, FAILED: 2 } as const;

export class FrameCapture {
  private readonly buffer = new Uint8Array(new ArrayBuffer(BUFFER_BYTES));
  private readonly view = new DataView(this.buffer.buffer);
  /** Bytes of whole blocks in the buffer, not yet written. */
  private filled = 0;
  /** Bytes in the file. */
  private written = 0;
  private frames = 0;
  private state: number = State.WRITING;
  private closed = false;
  private failure = "";
  /**
   * [direction][outcome * 256 + verdict] → the packet comment's UTF-8 bytes, or undefined for none.
   * The outcome part counts only for UNSENT verdicts (commentIndex).
   */
  private readonly comments: Array<Array<Uint8Array | undefined>>;
  private readonly flagsByDirection = [PacketDirection.OUTBOUND, PacketDirection.INBOUND];
  /** Per batch (there are two), one view per slot, made on first use: see writeEnhancedPacket. */
  private readonly slotViews = new Map<FrameBatch, Uint8Array[]>();

  constructor(private readonly options: FrameCaptureOptions) {
    this.comments = [TrafficDirection.FROM_VM, TrafficDirection.FROM_HOST].map((direction) =>
      buildComments(direction),
    );
  }

  /** Writes the header blocks: from here on the file is a valid (empty) capture. */
  start(): void {
    const { vmMac, hostLink } = this.options;
    const mac = formatMac(vmMac);
    const section = encodeSectionHeader([
      textOption(SectionHeaderOption.HARDWARE, this.options.hardware),
      textOption(SectionHeaderOption.OS, this.options.operatingSystem),
      textOption(SectionHeaderOption.USER_APPLICATION, this.options.application),
    ]);
    const iface = encodeInterfaceDescription(LINKTYPE_ETHERNET, this.options.maxFrameBytes, [
      textOption(InterfaceOption.NAME, `vm ${mac} via ${hostLink}`),
      textOption(
        InterfaceOption.DESCRIPTION,
        `softnet between VM ${mac} and ${hostLink}: outbound = sent by the VM, inbound = sent to the VM; ` +
          `frames softnet did not pass on have a comment saying why`,
      ),
      macOption(vmMac),
      { code: InterfaceOption.TIMESTAMP_RESOLUTION, value: Uint8Array.of(MICROSECONDS) },
    ]);
    if (section.length + iface.length > this.options.limitBytes) {
      throw new Error(`--capture-limit ${this.options.limitBytes} is smaller than the file's header`);
    }
    this.buffer.set(section, 0);
    this.buffer.set(iface, section.length);
    this.filled = section.length + iface.length;
    this.flush();
  }

  /**
   * Appends slots 0..count of batch, each with its verdict (a reason, plus UNSENT with the send
   * outcome saying why), as Enhanced Packet Blocks. Writes to the file only when the buffer is full;
   * flush() writes the rest. The frames of one batch arrived in one receive call and share its
   * timestamp.
   */
  recordBatch(
    direction: TrafficDirectionCode,
    batch: FrameBatch,
    verdicts: Uint8Array,
    outcomes: Uint8Array,
    count: number,
  ): void {
    if (this.state !== State.WRITING || this.closed || count === 0) return;
    const timestamp = this.options.wallClockMicros();
    const comments = this.comments[direction];
    const flags = this.flagsByDirection[direction];
    const views = this.viewsOf(batch);
    const reserve = EPB_HEADER + batch.slotSize; // writeEnhancedPacket copies whole slots
    for (let slot = 0; slot < count; slot++) {
      const length = batch.lengths[slot];
      const comment = comments[commentIndex(verdicts[slot], outcomes[slot])];
      const blockLength = enhancedPacketLength(length, comment === undefined ? 0 : comment.length);
      if (this.written + this.filled + blockLength > this.options.limitBytes) {
        this.stopAtLimit();
        return;
      }
      if (this.filled + Math.max(blockLength, reserve) > this.buffer.length) {
        this.flush();
        if (this.state !== State.WRITING) return;
      }
      this.filled = writeEnhancedPacket(
        this.buffer,
        this.view,
        this.filled,
        INTERFACE_ID,
        timestamp,
        views[slot],
        length,
        flags,
        comment,
      );
      this.frames++;
    }
  }

  /** Writes what the buffer holds (whole blocks) to the file. */
  flush(): void {
    if (this.filled === 0 || this.state === State.FAILED || this.closed) return;
    const length = this.filled;
    this.filled = 0;
    try {
      this.options.sink.write(this.buffer, length);
      this.written += length;
    } catch (error) {
      this.fail(error);
    }
  }

  /** Flushes and closes the file. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    this.options.sink.close();
  }

  get status(): CaptureStatus {
    const state =
      this.state === State.LIMIT_REACHED
        ? "stopped at --capture-limit"
        : this.state === State.FAILED
          ? `stopped: ${this.failure}`
          : this.closed
            ? "closed"
            : "writing";
    return {
      path: this.options.path,
      frames: this.frames,
      bytes: this.written + this.filled,
      limitBytes: this.options.limitBytes,
      state,
    };
  }

  private viewsOf(batch: FrameBatch): Uint8Array[] {
    let views = this.slotViews.get(batch);
    if (views === undefined) {
      views = [];
      for (let slot = 0; slot < batch.capacity; slot++) {
        const offset = batch.offsetOf(slot);
        views.push(batch.bytes.subarray(offset, offset + batch.slotSize));
      }
      this.slotViews.set(batch, views);
    }
    return views;
  }

  private stopAtLimit(): void {
    this.flush();
    if (this.state !== State.WRITING) return;
    this.state = State.LIMIT_REACHED;
    const { path, limitBytes, logger } = this.options;
    logger.warn(
      `capture ${path} reached --capture-limit ${formatSize(limitBytes)} after ${this.frames} frames: ` +
        "no more frames are written (softnet keeps forwarding)",
      "capture-limit",
      { path, limit_bytes: limitBytes, frames: this.frames, bytes: this.written },
    );
  }

  private fail(error: unknown): void {
    this.state = State.FAILED;
    this.failure = error instanceof Error ? error.message : String(error);
    // A short write may have left part of a block: cut the file back to the last whole one.
    try {
      this.options.sink.truncate(this.written);
    } catch {
      // The file is already damaged beyond what softnet can repair; the log line says so.
    }
    const { path, logger } = this.options;
    logger.error(
      `capture ${path} stopped after ${this.frames} frames: ${this.failure} (softnet keeps forwarding)`,
      "capture-failed",
      { path, error: this.failure, bytes: this.written },
    );
  }
}

/** Where a frame's comment is in buildComments' table: the outcome matters for UNSENT frames only. */
function commentIndex(verdict: number, outcome: number): number {
  if ((verdict & UNSENT) === 0 || outcome >= SEND_OUTCOME_COUNT) return verdict;
  return outcome * 256 + verdict;
}

/**
 * Comments per verdict byte and send outcome for one direction: drops say why, unsent frames say
 * where they stuck, refused ones what the receiving kernel refused.
 */
function buildComments(direction: TrafficDirectionCode): Array<Uint8Array | undefined> {
  const utf8 = new TextEncoder();
  const receiver = direction === TrafficDirection.FROM_VM ? "the host link" : "the VM's socket";
  const comments: Array<Uint8Array | undefined> = new Array(256 * SEND_OUTCOME_COUNT).fill(undefined);
  /** Why a frame marked UNSENT with this outcome was not handed on. */
  const notSent = (outcome: number, what: string) =>
    outcome === SendOutcome.NO_ROOM || outcome === SendOutcome.SENT
      ? `unsent: ${receiver} had no buffer space (${what})`
      : `refused: ${receiver}: ${SEND_OUTCOME_EXPLANATIONS[outcome]} (${what})`;
  for (let reason = 0; reason < REASON_COUNT; reason++) {
    if (isPass(reason as never)) {
      for (let outcome = 0; outcome < SEND_OUTCOME_COUNT; outcome++) {
        comments[outcome * 256 + (reason | UNSENT)] = utf8.encode(
          notSent(outcome, `passed as ${reasonName(reason)}`),
        );
      }
    } else {
      comments[reason] = utf8.encode(`dropped: ${reasonName(reason)}: ${REASON_EXPLANATIONS[reason]}`);
    }
  }
  // --reject answers go to the VM: recorded with the frames from the host, marked as softnet's own.
  if (direction === TrafficDirection.FROM_HOST) {
    for (const reason of REJECT_REASONS) {
      const made = `synthesised: reject for ${reasonName(reason)}`;
      comments[SYNTHESISED | reason] = utf8.encode(made);
      for (let outcome = 0; outcome < SEND_OUTCOME_COUNT; outcome++) {
        comments[outcome * 256 + (SYNTHESISED | UNSENT | reason)] = utf8.encode(notSent(outcome, made));
      }
    }
  }
  return comments;
}

/**
 * Opens the --capture file and writes its header. Call it after the privilege drop: the file is
 * created as whoever this process is then (see file.ts).
 */
export function openCapture(
  capture: CaptureOptions,
  context: { logger: Logger; vmMac: number; hostLink: string; maxFrameBytes: number },
): FrameCapture {
  const file = CaptureFile.open(capture.path, capture.overwrite);
  const frameCapture = new FrameCapture({
    sink: file,
    path: capture.path,
    limitBytes: capture.limitBytes,
    logger: context.logger,
    vmMac: context.vmMac,
    hostLink: context.hostLink,
    maxFrameBytes: context.maxFrameBytes,
    application: `softnet ${VERSION} (${COMMIT})`,
    operatingSystem: `${process.platform === "darwin" ? "macOS (Darwin)" : "Linux"} ${release()}`,
    hardware: process.arch,
    // performance.now() is monotonic and sub-millisecond; anchored once to the wall clock.
    wallClockMicros: () => Math.round((performance.timeOrigin + performance.now()) * 1000),
  });
  try {
    frameCapture.start();
  } catch (error) {
    file.close();
    throw new SoftnetError(`cannot write the capture file ${capture.path}`, { cause: error });
  }
  return frameCapture;
}
