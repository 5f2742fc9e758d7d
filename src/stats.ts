/**
 * What softnet has done since it started, counted per frame without allocating (typed arrays
 * indexed by direction and reason), and the report it prints when asked (SIGUSR2, SIGINFO on
 * macOS) and at exit.
 *
 * The loop marks each frame of a batch with a verdict byte: the policy's reason, with UNSENT added
 * when the reason let it pass but the receiving side did not take it. Why not is the frame's send
 * outcome (SendOutcome in src/platform/link.ts, one byte per slot written by the link): no buffer
 * space, or refused by the kernel (too short, too long, link down). These counters are the only
 * ones softnet keeps: the once-a-minute drop summary, the SIGUSR2/exit report and the stop line
 * all read them, and the capture sees the same verdicts and outcomes.
 */

import { nameReport } from "./name-report.ts";
import { type FrameBatch, SEND_OUTCOME_COUNT, SEND_OUTCOME_NAMES, SendOutcome } from "./platform/link.ts";
import type { LearnedNames } from "./policy/learned-names.ts";
import type { Lease } from "./policy/lease.ts";
import { isPass, REASON_COUNT, reasonName } from "./policy/reasons.ts";
import { formatIpv4 } from "./wire/bytes.ts";

/** Which side a frame came from. */
export const TrafficDirection = { FROM_VM: 0, FROM_HOST: 1 } as const;
export type TrafficDirectionCode = (typeof TrafficDirection)[keyof typeof TrafficDirection];

/**
 * Added to a verdict when a frame the policy passed was not handed on: the receiver had no buffer
 * space, or its kernel refused the frame; the slot's send outcome says which.
 */
export const UNSENT = 0x80;
/**
 * Added to a verdict for a frame softnet made itself: a --reject answer to the VM, whose reason
 * part is the reason of the drop it answers (src/policy/reject.ts). Such frames are counted by
 * recordRejects, never by recordBatch.
 */
export const SYNTHESISED = 0x40;
/** The reason part of a verdict. */
export const REASON_MASK = 0x3f;
if (REASON_COUNT > REASON_MASK)
  throw new Error("reasons no longer fit beside the UNSENT and SYNTHESISED bits");

export class TrafficCounters {
  /** Per direction (TrafficDirection): frames and bytes softnet received from that side. */
  readonly receivedFrames = new Float64Array(2);
  readonly receivedBytes = new Float64Array(2);
  /** Per direction: frames and bytes handed on to the other side. */
  readonly deliveredFrames = new Float64Array(2);
  readonly deliveredBytes = new Float64Array(2);
  /** Per direction: frames the policy passed that the other side had no buffer space for. */
  readonly unsentFrames = new Float64Array(2);
  /**
   * Per direction and send outcome: frames the policy passed that the other side's kernel refused,
   * index direction * SEND_OUTCOME_COUNT + outcome (only the REFUSED_* outcomes are used).
   */
  readonly refusedFrames = new Float64Array(2 * SEND_OUTCOME_COUNT);
  /** Frames per reason, per direction: index direction * REASON_COUNT + reason. */
  readonly reasonFrames = new Float64Array(2 * REASON_COUNT);
  /** --reject: answers sent to the VM, per reason of the drop they answer. */
  readonly rejectsSent = new Float64Array(REASON_COUNT);
  /** --reject: answers the VM's socket had no buffer space for, per reason. */
  readonly rejectsUnsent = new Float64Array(REASON_COUNT);
  /** --reject: answers that were due but not made, the reason's rate limit being used up. */
  readonly rejectsRateLimited = new Float64Array(REASON_COUNT);

  /**
   * Counts slots 0..count of batch with their verdicts; outcomes[slot] says why an UNSENT one was
   * not handed on. Allocates nothing.
   */
  recordBatch(
    direction: TrafficDirectionCode,
    batch: FrameBatch,
    verdicts: Uint8Array,
    outcomes: Uint8Array,
    count: number,
  ): void {
    const lengths = batch.lengths;
    const reasonBase = direction * REASON_COUNT;
    let bytes = 0;
    let delivered = 0;
    let deliveredBytes = 0;
    let unsent = 0;
    for (let slot = 0; slot < count; slot++) {
      const verdict = verdicts[slot];
      const length = lengths[slot];
      const reason = verdict & REASON_MASK;
      bytes += length;
      this.reasonFrames[reasonBase + reason]++;
      if (verdict & UNSENT) {
        const outcome = outcomes[slot];
        if (outcome === SendOutcome.NO_ROOM || outcome >= SEND_OUTCOME_COUNT) unsent++;
        else this.refusedFrames[direction * SEND_OUTCOME_COUNT + outcome]++;
      } else if (isPass(reason as never)) {
        delivered++;
        deliveredBytes += length;
      }
    }
    this.receivedFrames[direction] += count;
    this.receivedBytes[direction] += bytes;
    this.deliveredFrames[direction] += delivered;
    this.deliveredBytes[direction] += deliveredBytes;
    this.unsentFrames[direction] += unsent;
  }

  /** Counts the --reject answers in slots 0..count, each verdict SYNTHESISED + reason (+ UNSENT). */
  recordRejects(verdicts: Uint8Array, count: number): void {
    // Answers are tiny and well-formed: one the VM's socket did not take is counted as unsent,
    // whatever the send outcome.
    for (let slot = 0; slot < count; slot++) {
      const verdict = verdicts[slot];
      const reason = verdict & REASON_MASK;
      if (verdict & UNSENT) this.rejectsUnsent[reason]++;
      else this.rejectsSent[reason]++;
    }
  }

  /** Frames the other side's kernel refused in one direction, all refusals together. */
  refusedTotal(direction: TrafficDirectionCode): number {
    let refused = 0;
    for (let outcome = 0; outcome < SEND_OUTCOME_COUNT; outcome++) {
      refused += this.refusedFrames[direction * SEND_OUTCOME_COUNT + outcome];
    }
    return refused;
  }

  /** Frames dropped by the policy (not counting unsent ones) in one direction. */
  droppedFrames(direction: TrafficDirectionCode): number {
    let dropped = 0;
    for (let reason = 0; reason < REASON_COUNT; reason++) {
      if (!isPass(reason as never)) dropped += this.reasonFrames[direction * REASON_COUNT + reason];
    }
    return dropped;
  }
}

/** What the capture file has so far, for the report (see src/capture/capture.ts). */
export interface CaptureStatus {
  path: string;
  frames: number;
  bytes: number;
  limitBytes: number;
  /** "writing", "stopped at --capture-limit", "stopped: <why>" */
  state: string;
}

export interface CounterSources {
  /** What triggered the report: a signal name, or "exit". */
  trigger: string;
  traffic: TrafficCounters;
  lease: Lease;
  nowMs: number;
  startedAtMs: number;
  /** --expose as "2222→22, 8080→80", or "" when nothing is exposed. */
  exposed: string;
  /** Where the forwards point now, or -1 when none are installed. */
  forwardsInstalledFor: number;
  capture: CaptureStatus | undefined;
  /** --reject is on: report the answers made. */
  reject?: boolean;
  /** What the VM looked up, and the allow lists that follow (name-report.ts). */
  names?: LearnedNames;
  /**
   * Per direction, frames the receiving link cut short because they were longer than a batch slot
   * (FrameLink.truncatedFrames; the policy counted them as malformed-ethernet).
   */
  truncatedFrames?: readonly [number, number];
}

/** The report: lines for the text log, and the same as structured fields for JSON logs. */
export interface CounterReport {
  lines: string[];
  fields: Record<string, unknown>;
}

const DIRECTION_NAMES = ["from_vm", "from_host"] as const;

/** Builds the report (allocates freely: it runs when a person asks, not per frame). */
export function counterReport(sources: CounterSources): CounterReport {
  const { traffic, lease, nowMs } = sources;
  const uptimeSeconds = Math.max(0, Math.floor((nowMs - sources.startedAtMs) / 1000));
  const lines = [`counters (${sources.trigger}) after ${formatDuration(uptimeSeconds)}:`];
  const fields: Record<string, unknown> = { trigger: sources.trigger, uptime_s: uptimeSeconds };

  const sides = [
    { from: "the VM", to: "the host" },
    { from: "the host", to: "the VM" },
  ];
  for (const direction of [TrafficDirection.FROM_VM, TrafficDirection.FROM_HOST]) {
    const side = sides[direction];
    const dropped = traffic.droppedFrames(direction);
    lines.push(
      `  from ${side.from}: ${traffic.receivedFrames[direction]} frames, ${traffic.receivedBytes[direction]} bytes; ` +
        `to ${side.to}: ${traffic.deliveredFrames[direction]} frames, ${traffic.deliveredBytes[direction]} bytes; ` +
        `dropped ${dropped}; unsent for lack of buffer space ${traffic.unsentFrames[direction]}; ` +
        `refused by ${side.to}'s kernel ${traffic.refusedTotal(direction)}`,
    );
    const refused: Record<string, number> = {};
    for (let outcome = 0; outcome < SEND_OUTCOME_COUNT; outcome++) {
      const count = traffic.refusedFrames[direction * SEND_OUTCOME_COUNT + outcome];
      if (count > 0) refused[SEND_OUTCOME_NAMES[outcome]] = count;
    }
    const passed: Record<string, number> = {};
    const drops: Record<string, number> = {};
    for (let reason = 0; reason < REASON_COUNT; reason++) {
      const count = traffic.reasonFrames[direction * REASON_COUNT + reason];
      if (count === 0) continue;
      (isPass(reason as never) ? passed : drops)[reasonName(reason)] = count;
    }
    const list = (counts: Record<string, number>) =>
      Object.entries(counts)
        .map(([name, count]) => `${count} ${name}`)
        .join(", ") || "none";
    lines.push(`    passed: ${list(passed)}`, `    dropped: ${list(drops)}`);
    if (Object.keys(refused).length > 0) lines.push(`    refused: ${list(refused)}`);
    const truncated = sources.truncatedFrames?.[direction] ?? 0;
    if (truncated > 0) {
      lines.push(
        `    truncated: ${truncated} longer than softnet's frame slots (counted as malformed-ethernet)`,
      );
    }
    fields[DIRECTION_NAMES[direction]] = {
      frames: traffic.receivedFrames[direction],
      bytes: traffic.receivedBytes[direction],
      delivered_frames: traffic.deliveredFrames[direction],
      delivered_bytes: traffic.deliveredBytes[direction],
      dropped_frames: dropped,
      unsent_frames: traffic.unsentFrames[direction],
      refused_frames: traffic.refusedTotal(direction),
      refused,
      truncated_frames: sources.truncatedFrames?.[direction] ?? 0,
      passed,
      dropped: drops,
    };
  }

  if (sources.reject === true) {
    const counts = (values: Float64Array) => {
      const byReason: Record<string, number> = {};
      for (let reason = 0; reason < REASON_COUNT; reason++) {
        if (values[reason] > 0) byReason[reasonName(reason)] = values[reason];
      }
      return byReason;
    };
    const list = (byReason: Record<string, number>) =>
      Object.entries(byReason)
        .map(([name, count]) => `${count} ${name}`)
        .join(", ") || "none";
    const sent = counts(traffic.rejectsSent);
    const unsent = counts(traffic.rejectsUnsent);
    const rateLimited = counts(traffic.rejectsRateLimited);
    lines.push(
      `  answered (--reject): ${list(sent)}; rate-limited ${list(rateLimited)}; ` +
        `unsent for lack of buffer space ${list(unsent)}`,
    );
    fields.reject = { sent, rate_limited: rateLimited, unsent };
  } else {
    fields.reject = null;
  }

  const leaseFields = describeLease(lease, nowMs);
  fields.lease = leaseFields;
  if (leaseFields === null) {
    lines.push(
      lease.address !== 0 && lease.held
        ? `  lease: none (${formatIpv4(lease.address)} expired)`
        : "  lease: none",
    );
  } else {
    lines.push(
      `  lease: ${leaseFields.address}, expires ${leaseFields.expires_in_s === null ? "never" : `in ${leaseFields.expires_in_s} s`}, ` +
        `DNS ${leaseFields.dns.join(", ") || "none"}`,
    );
  }

  if (sources.exposed === "") {
    lines.push("  port forwards: none (no --expose)");
    fields.forwards = null;
  } else if (sources.forwardsInstalledFor === -1) {
    lines.push(`  port forwards: not installed (TCP ${sources.exposed} wait for a lease)`);
    fields.forwards = { installed: false, ports: sources.exposed };
  } else {
    const address = formatIpv4(sources.forwardsInstalledFor);
    lines.push(`  port forwards: TCP ${sources.exposed} to ${address}`);
    fields.forwards = { installed: true, ports: sources.exposed, address };
  }

  if (sources.names !== undefined) {
    const names = nameReport(sources.names);
    lines.push(...names.lines);
    fields.names = names.fields;
  }

  const capture = sources.capture;
  if (capture === undefined) {
    fields.capture = null;
  } else {
    lines.push(
      `  capture: ${capture.frames} frames, ${capture.bytes} bytes in ${capture.path} ` +
        `(limit ${formatSize(capture.limitBytes)}; ${capture.state})`,
    );
    fields.capture = {
      path: capture.path,
      frames: capture.frames,
      bytes: capture.bytes,
      limit_bytes: capture.limitBytes,
      state: capture.state,
    };
  }
  return { lines, fields };
}

/** The lease as log fields, or null when the VM holds no valid lease. */
export function describeLease(
  lease: Lease,
  nowMs: number,
): { address: string; expires_in_s: number | null; dns: string[] } | null {
  if (!lease.isValidAt(nowMs)) return null;
  return {
    address: formatIpv4(lease.address),
    expires_in_s: Number.isFinite(lease.expiresAtMs) ? Math.round((lease.expiresAtMs - nowMs) / 1000) : null,
    dns: Array.from(lease.dnsServers.subarray(0, lease.dnsServerCount), formatIpv4),
  };
}

/** 3725 → "1 h 2 min 5 s". */
export function formatDuration(totalSeconds: number): string {
  const hours = Math.floor(totalSeconds / 3600);
  const minutes = Math.floor((totalSeconds % 3600) / 60);
  const seconds = totalSeconds % 60;
  if (hours > 0) return `${hours} h ${minutes} min ${seconds} s`;
  if (minutes > 0) return `${minutes} min ${seconds} s`;
  return `${seconds} s`;
}

/** 104857600 → "100 MiB", 5000 → "5000 bytes": exact, in the units --capture-limit accepts. */
export function formatSize(bytes: number): string {
  for (const [unit, size] of [
    ["TiB", 1024 ** 4],
    ["GiB", 1024 ** 3],
    ["MiB", 1024 ** 2],
    ["KiB", 1024],
  ] as const) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size} ${unit}`;
  }
  return `${bytes} bytes`;
}
