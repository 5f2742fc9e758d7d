/**
 * The filter loop: where the pure policy meets the links.
 *
 * Each direction has a preallocated FrameBatch. Draining a link means: receive a batch, decide on
 * every frame in place, list the accepted slots, send them to the other link from the same memory.
 * Nothing is allocated per frame; the only per-frame work besides the decision is a counter
 * increment. Drops are logged through a per-reason token bucket, so a flood of forged frames costs a
 * few log lines, not a log line each.
 *
 * The loop does not wait by itself: the runtime wires drainFromVm/drainFromHost to readiness
 * notifications (a Reactor on Linux, the vmnet event pipe on macOS) and calls tick() once a second.
 */

import type { Logger } from "./log.ts";
import { RateLimiter } from "./log.ts";
import {
  FrameBatch,
  type FrameLink,
  SEND_OUTCOME_COUNT,
  SEND_OUTCOME_NAMES,
  SendOutcome,
} from "./platform/link.ts";
import type { LearnEvent } from "./policy/learned-names.ts";
import type { Policy } from "./policy/policy.ts";
import { isPass, REASON_COUNT, REASON_EXPLANATIONS, reasonName, SPOOF_REASONS } from "./policy/reasons.ts";
import { isRejectReason, RATE_LIMITED, REJECT_REPLY_MAX_BYTES, type Rejecter } from "./policy/reject.ts";
import { buildLeaseRelease, LEASE_RELEASE_FRAME_BYTES } from "./policy/release.ts";
import { reportWarningOnce } from "./sentry.ts";
import {
  describeLease,
  SYNTHESISED,
  TrafficCounters,
  TrafficDirection,
  type TrafficDirectionCode,
  UNSENT,
} from "./stats.ts";
import { formatIpv4, formatMac, readU16 } from "./wire/bytes.ts";
import { describeFrame } from "./wire/describe.ts";
import { Ethernet, EtherType } from "./wire/ethernet.ts";
import { Ipv4, ipv4Destination } from "./wire/ipv4.ts";

/** Why the loop stopped. */
export type StopCause =
  | { kind: "vm-closed" }
  | { kind: "signal"; signal: string }
  | { kind: "fatal"; error: unknown };

export interface FilterLoopOptions {
  policy: Policy;
  vm: FrameLink;
  host: FrameLink;
  /** Frames from the VM land here. */
  vmBatch: FrameBatch;
  /** Frames from the host land here. */
  hostBatch: FrameBatch;
  logger: Logger;
  /** Monotonic milliseconds; the policy's lease expiry is measured with it. */
  clock: () => number;
  /** Called when the lease changes (granted, renewed, refused, expired). */
  onLeaseChange?: () => void;
  /** Called once when the loop must stop. */
  onStop: (cause: StopCause) => void;
  /** --capture: sees every batch with its verdicts, after the send (src/capture). */
  capture?: FrameRecorder;
  /** --reject: answers frames dropped for their destination (src/policy/reject.ts). */
  reject?: Rejecter;
}

/** What the loop hands each batch to, besides its own counters. */
export interface FrameRecorder {
  /**
   * Slots 0..count of batch; verdicts[slot] is the policy's reason, plus UNSENT if the other side
   * did not take it, and then outcomes[slot] (a SendOutcome) says why.
   */
  recordBatch(
    direction: TrafficDirectionCode,
    batch: FrameBatch,
    verdicts: Uint8Array,
    outcomes: Uint8Array,
    count: number,
  ): void;
}

/** Reasons that mean a guest tried to impersonate someone: logged at warn, others at debug. */
const SPOOFS = new Set<number>(SPOOF_REASONS);

export class FilterLoop {
  /**
   * Frames and bytes each way, per reason and send outcome: softnet's only counters (the drop
   * summary, the SIGUSR2/exit report and the stop line read them).
   */
  readonly traffic = new TrafficCounters();
  /** Per direction, the verdict of every slot of the last batch (see record()). */
  private readonly vmVerdicts: Uint8Array;
  private readonly hostVerdicts: Uint8Array;
  /** Per direction, the send outcome of every accepted slot of the last batch, written by the link. */
  private readonly vmOutcomes: Uint8Array;
  private readonly hostOutcomes: Uint8Array;
  private readonly vmSlots: Uint16Array;
  private readonly hostSlots: Uint16Array;
  private readonly dropLog = new RateLimiter(REASON_COUNT, 5, 1);
  private readonly debugEnabled: boolean;
  private stopped = false;
  private leaseWasValid = false;
  /** The counters as the last drop summary saw them (reasons of both directions, unsent, refused). */
  private readonly reasonsAtLastSummary = new Float64Array(2 * REASON_COUNT);
  private readonly unsentAtLastSummary = new Float64Array(2);
  private readonly refusedAtLastSummary = new Float64Array(2 * SEND_OUTCOME_COUNT);
  /** --reject: the answers to one batch from the VM, made in place and sent to the VM together. */
  private readonly replyBatch: FrameBatch | undefined;
  private readonly replySlots: Uint16Array | undefined;
  private readonly replyVerdicts: Uint8Array | undefined;
  private readonly replyOutcomes: Uint8Array | undefined;

  constructor(private readonly options: FilterLoopOptions) {
    this.vmSlots = new Uint16Array(options.vmBatch.capacity);
    this.hostSlots = new Uint16Array(options.hostBatch.capacity);
    this.vmVerdicts = new Uint8Array(options.vmBatch.capacity);
    this.hostVerdicts = new Uint8Array(options.hostBatch.capacity);
    this.vmOutcomes = new Uint8Array(options.vmBatch.capacity);
    this.hostOutcomes = new Uint8Array(options.hostBatch.capacity);
    this.debugEnabled = options.logger.enabled("debug");
    if (options.reject !== undefined) {
      const capacity = options.vmBatch.capacity; // at most one answer per frame of a batch
      this.replyBatch = new FrameBatch(capacity, Math.max(64, REJECT_REPLY_MAX_BYTES));
      this.replySlots = Uint16Array.from({ length: capacity }, (_, slot) => slot);
      this.replyVerdicts = new Uint8Array(capacity);
      this.replyOutcomes = new Uint8Array(capacity);
    }
  }

  /**
   * Moves up to `budget` frames from the VM to the host. Returns true when the budget ran out
   * before the VM socket was empty (call again soon), false when a receive found nothing.
   *
   * A short batch does not end the drain: frames that came while the batch was decided and sent
   * are read at once. Ending on a short batch instead handed the link back to the readiness thread
   * with frames already waiting, so every burst paid two thread wake-ups (the reactor's and this
   * thread's) where one extra empty read() does (host->VM at line rate: 15,500 context switches
   * per 2 s on each thread before, 4,500 after, measured with perf stat).
   */
  drainFromVm(budget: number): boolean {
    const { vm, host, vmBatch: batch, policy, clock } = this.options;
    const slots = this.vmSlots;
    let handled = 0;
    while (handled < budget && !this.stopped) {
      const received = this.receive(vm, batch);
      if (received <= 0) return false;
      const now = clock();
      let accepted = 0;
      let replies = 0;
      for (let slot = 0; slot < received; slot++) {
        const offset = slot * batch.slotSize;
        const reason = policy.decideFromVm(batch.bytes, offset, batch.lengths[slot], now);
        this.vmVerdicts[slot] = reason;
        if (isPass(reason)) slots[accepted++] = slot;
        else {
          this.logDrop("from VM", reason, batch, slot, now);
          if (isRejectReason(reason)) replies = this.answer(reason, batch, slot, now, replies);
        }
      }
      if (accepted > 0 && this.send(host, batch, slots, accepted, this.vmOutcomes) < 0) {
        this.stop({ kind: "fatal", error: new Error(`${host.description} went away`) });
        return false;
      }
      this.record(TrafficDirection.FROM_VM, batch, received, slots, accepted);
      if (replies > 0 && !this.sendReplies(replies)) return false;
      handled += received;
    }
    return !this.stopped;
  }

  /** Moves up to `budget` frames from the host to the VM, snooping DHCP on the way (see drainFromVm). */
  drainFromHost(budget: number): boolean {
    const { vm, host, hostBatch: batch, policy, clock } = this.options;
    const slots = this.hostSlots;
    let handled = 0;
    while (handled < budget && !this.stopped) {
      const received = this.receive(host, batch);
      if (received <= 0) return false;
      const now = clock();
      let accepted = 0;
      for (let slot = 0; slot < received; slot++) {
        const offset = slot * batch.slotSize;
        const reason = policy.observeFromHost(batch.bytes, offset, batch.lengths[slot], now);
        this.hostVerdicts[slot] = reason;
        if (isPass(reason)) slots[accepted++] = slot;
        else this.logDrop("to VM", reason, batch, slot, now);
      }
      if (policy.events.size > 0) this.handleSnoopEvents(now);
      if (accepted > 0 && this.send(vm, batch, slots, accepted, this.hostOutcomes) < 0) {
        this.stop({ kind: "vm-closed" });
        return false;
      }
      this.record(TrafficDirection.FROM_HOST, batch, received, slots, accepted);
      handled += received;
    }
    return !this.stopped;
  }

  /** Once a second: notice lease expiry, and summarise drops at info level once a minute. */
  tick(): void {
    const now = this.options.clock();
    // Addresses learned from DNS answers whose time is over are forgotten (learned-names.ts).
    this.options.policy.dns.names.expire(now);
    const valid = this.options.policy.lease.isValidAt(now);
    if (this.leaseWasValid && !valid) {
      this.leaseWasValid = false;
      const address = formatIpv4(this.options.policy.lease.address);
      this.options.logger.info(`lease for ${address} expired; the VM must renew it`, "lease-expired", {
        lease: { address },
      });
      this.options.onLeaseChange?.();
    }
  }

  /**
   * A line like "dropped since last summary: 3 mac-spoof, 1 not-allowed-destination", or "".
   * `counts`, when given, receives the same per reason (for JSON logs).
   */
  dropSummary(counts?: Record<string, number>): string {
    const traffic = this.traffic;
    const parts: string[] = [];
    for (let reason = 0; reason < REASON_COUNT; reason++) {
      if (isPass(reason as never)) continue;
      let delta = 0;
      for (let direction = 0; direction < 2; direction++) {
        const index = direction * REASON_COUNT + reason;
        delta += traffic.reasonFrames[index] - this.reasonsAtLastSummary[index];
        this.reasonsAtLastSummary[index] = traffic.reasonFrames[index];
      }
      if (delta > 0) parts.push(`${delta} ${reasonName(reason)}`);
      if (delta > 0 && counts !== undefined) counts[reasonName(reason)] = delta;
    }
    const toHost = traffic.unsentFrames[TrafficDirection.FROM_VM] - this.unsentAtLastSummary[0];
    const toVm = traffic.unsentFrames[TrafficDirection.FROM_HOST] - this.unsentAtLastSummary[1];
    if (toHost + toVm > 0) parts.push(`${toHost} to the host and ${toVm} to the VM for lack of buffer space`);
    if (counts !== undefined && toHost + toVm > 0) counts["no-buffer-space"] = toHost + toVm;
    this.unsentAtLastSummary[0] = traffic.unsentFrames[TrafficDirection.FROM_VM];
    this.unsentAtLastSummary[1] = traffic.unsentFrames[TrafficDirection.FROM_HOST];
    const receivers = ["the host", "the VM"];
    for (let direction = 0; direction < 2; direction++) {
      const refusals: string[] = [];
      for (let outcome = 0; outcome < SEND_OUTCOME_COUNT; outcome++) {
        const index = direction * SEND_OUTCOME_COUNT + outcome;
        const delta = traffic.refusedFrames[index] - this.refusedAtLastSummary[index];
        this.refusedAtLastSummary[index] = traffic.refusedFrames[index];
        if (delta <= 0) continue;
        refusals.push(`${delta} ${SEND_OUTCOME_NAMES[outcome]}`);
        if (counts !== undefined) {
          const key = `refused-to-${direction === 0 ? "host" : "vm"}-${SEND_OUTCOME_NAMES[outcome]}`;
          counts[key] = delta;
        }
      }
      if (refusals.length > 0)
        parts.push(`refused by ${receivers[direction]}'s kernel: ${refusals.join(", ")}`);
    }
    return parts.join(", ");
  }

  /**
   * At a clean stop: sends the host's DHCP server a DHCPRELEASE for the VM's lease, as the VM's
   * client would (policy/release.ts), so its address returns to the pool now rather than when the
   * lease runs out, and forgets the lease. Only a valid lease whose ACK named its server is
   * released. True when the release was sent. Runs once, after the loop stopped: not the hot path.
   */
  releaseLease(): boolean {
    const { policy, host, logger, clock } = this.options;
    const batch = new FrameBatch(1, Math.max(64, LEASE_RELEASE_FRAME_BYTES));
    // Any xid: the server does not answer a DHCPRELEASE (RFC 2131 4.4.6).
    const xid = Math.floor(Math.random() * 0x1_0000_0000);
    const length = buildLeaseRelease(policy, clock(), xid, batch.bytes, 0);
    if (length === 0) return false;
    batch.lengths[0] = length;
    batch.count = 1;
    const address = formatIpv4(policy.lease.address);
    let sent: number;
    try {
      sent = host.send(batch, new Uint16Array(1), 1);
    } catch (error) {
      logger.warn(`could not release the lease for ${address}: ${String(error)}`, "lease-release-failed");
      return false;
    }
    if (sent !== 1) {
      logger.warn(
        `could not release the lease for ${address}: the host link took no frame`,
        "lease-release-failed",
      );
      return false;
    }
    policy.lease.clear();
    logger.info(`released the lease for ${address} at the DHCP server`, "lease-released", {
      lease: { address },
    });
    return true;
  }

  stop(cause: StopCause): void {
    if (this.stopped) return;
    this.stopped = true;
    this.options.onStop(cause);
  }

  /**
   * Sends the accepted slots, each slot's outcome written by the link into `outcomes`. Every listed
   * slot starts as NO_ROOM, so a slot the link did not get to counts as unsent, never as sent.
   * Returns the link's answer (-1: peer gone).
   */
  private send(
    link: FrameLink,
    batch: FrameBatch,
    slots: Uint16Array,
    accepted: number,
    outcomes: Uint8Array,
  ): number {
    for (let i = 0; i < accepted; i++) outcomes[slots[i]] = SendOutcome.NO_ROOM;
    return link.send(batch, slots, accepted, outcomes);
  }

  /**
   * After a batch was sent on: marks each accepted slot the link did not send UNSENT (its outcome
   * says why), then counts the batch and hands it to the capture. Allocates nothing.
   */
  private record(
    direction: TrafficDirectionCode,
    batch: FrameBatch,
    received: number,
    slots: Uint16Array,
    accepted: number,
  ): void {
    const fromVm = direction === TrafficDirection.FROM_VM;
    const verdicts = fromVm ? this.vmVerdicts : this.hostVerdicts;
    const outcomes = fromVm ? this.vmOutcomes : this.hostOutcomes;
    let noRoom = 0;
    for (let i = 0; i < accepted; i++) {
      const outcome = outcomes[slots[i]];
      if (outcome === SendOutcome.SENT) continue;
      verdicts[slots[i]] |= UNSENT;
      if (outcome === SendOutcome.NO_ROOM) noRoom++;
    }
    // The VM is not reading fast enough; the original tolerates this the same way.
    if (noRoom > 0 && !fromVm) {
      reportWarningOnce("enobufs-to-vm", "frames to the VM dropped: its socket buffer is full (ENOBUFS)");
    }
    this.traffic.recordBatch(direction, batch, verdicts, outcomes, received);
    this.options.capture?.recordBatch(direction, batch, verdicts, outcomes, received);
  }

  /**
   * --reject: writes the answer to a dropped frame into the next reply slot. Returns how many
   * replies the batch has now.
   */
  private answer(reason: number, batch: FrameBatch, slot: number, now: number, replies: number): number {
    const reject = this.options.reject;
    const replyBatch = this.replyBatch;
    if (reject === undefined || replyBatch === undefined || this.replyVerdicts === undefined) return replies;
    const length = reject.answer(
      reason,
      batch.bytes,
      slot * batch.slotSize,
      batch.lengths[slot],
      now,
      replyBatch.bytes,
      replies * replyBatch.slotSize,
    );
    if (length === RATE_LIMITED) this.traffic.rejectsRateLimited[reason]++;
    if (length <= 0) return replies;
    replyBatch.lengths[replies] = length;
    this.replyVerdicts[replies] = SYNTHESISED | reason;
    return replies + 1;
  }

  /** Sends the batch's replies to the VM, then counts and records them. False when the VM is gone. */
  private sendReplies(count: number): boolean {
    const { replyBatch, replySlots, replyVerdicts, replyOutcomes } = this;
    if (
      replyBatch === undefined ||
      replySlots === undefined ||
      replyVerdicts === undefined ||
      replyOutcomes === undefined
    ) {
      return true;
    }
    replyBatch.count = count;
    if (this.send(this.options.vm, replyBatch, replySlots, count, replyOutcomes) < 0) {
      this.stop({ kind: "vm-closed" });
      return false;
    }
    for (let i = 0; i < count; i++) if (replyOutcomes[i] !== SendOutcome.SENT) replyVerdicts[i] |= UNSENT;
    this.traffic.recordRejects(replyVerdicts, count);
    this.options.capture?.recordBatch(
      TrafficDirection.FROM_HOST,
      replyBatch,
      replyVerdicts,
      replyOutcomes,
      count,
    );
    return true;
  }

  private receive(link: FrameLink, batch: FrameBatch): number {
    let received: number;
    try {
      received = link.receive(batch);
    } catch (error) {
      this.stop({ kind: "fatal", error });
      return 0;
    }
    if (received < 0) {
      if (link === this.options.vm) this.stop({ kind: "vm-closed" });
      else this.stop({ kind: "fatal", error: new Error(`${link.description} went away`) });
      return 0;
    }
    return received;
  }

  /** What the snoopers learned from the last batch from the host: logged, and passed on. */
  private handleSnoopEvents(now: number): void {
    this.options.policy.events.drain((event) => {
      switch (event.kind) {
        case "lease-granted":
        case "lease-refused":
          this.leaseEvent(event.kind === "lease-granted", now);
          break;
        case "gateway-mac":
          this.gatewayMacEvent(event.mac, event.first);
          break;
        default:
          this.nameEvent(event);
      }
    });
  }

  private leaseEvent(granted: boolean, now: number): void {
    const { policy, logger } = this.options;
    const lease = policy.lease;
    if (granted) {
      const seconds = Number.isFinite(lease.expiresAtMs)
        ? `${Math.round((lease.expiresAtMs - now) / 1000)} s`
        : "ever";
      const dns =
        Array.from(lease.dnsServers.subarray(0, lease.dnsServerCount), formatIpv4).join(", ") || "none";
      logger.info(
        `lease ${this.leaseWasValid ? "renewed" : "learned"}: ${formatIpv4(lease.address)} for ${seconds}, DNS ${dns}`,
        this.leaseWasValid ? "lease-renewed" : "lease-learned",
        { lease: describeLease(lease, now) },
      );
      this.leaseWasValid = true;
    } else {
      logger.info(
        "lease refused by the DHCP server (NAK): the VM has no address until it asks again",
        "lease-refused",
      );
      this.leaseWasValid = false;
    }
    this.options.onLeaseChange?.();
  }

  /** The gateway's MAC was learned or changed: an isolated VM now takes routed traffic only from it. */
  private gatewayMacEvent(gatewayMac: number, first: boolean): void {
    const mac = formatMac(gatewayMac);
    this.options.logger.info(`gateway MAC ${first ? "is" : "changed to"} ${mac}`, "gateway-mac", {
      mac,
      changed: !first,
    });
  }

  /** What a DNS answer taught about a name in --allow (or why it taught nothing). */
  private nameEvent(event: LearnEvent): void {
    const { logger } = this.options;
    switch (event.kind) {
      case "learned":
        logger.debug(
          `learned ${formatIpv4(event.address)} for ${event.name} (--allow ${event.allowedBy}) for at least ${event.seconds} s`,
          "name-learned",
          {
            name: event.name,
            allowed_by: event.allowedBy,
            address: formatIpv4(event.address),
            ttl_s: event.seconds,
          },
        );
        break;
      case "not-global":
        logger.warn(
          `${event.name} (--allow ${event.allowedBy}) answered with ${formatIpv4(event.address)}, which is not a global address: ` +
            "names allow global addresses only (a private answer may be DNS rebinding); allow the network with --allow A.B.C.D/N if you mean it. Said once per name",
          "name-not-global",
          { name: event.name, allowed_by: event.allowedBy, address: formatIpv4(event.address) },
        );
        break;
      case "name-cap":
        logger.warn(
          `${event.name} answered with more than ${event.cap} addresses: the stalest are forgotten as new ones arrive. Said once per name`,
          "name-cap",
          { name: event.name, cap: event.cap },
        );
        break;
      case "total-cap":
        logger.warn(
          `${event.cap} addresses learned from DNS answers are kept already: nothing new is learned until some expire`,
          "names-cap",
          { cap: event.cap },
        );
        break;
    }
  }

  /** The name a DNS answer gave an IPv4 frame's destination, if any (for a drop's log line). */
  private destinationName(bytes: Uint8Array, offset: number, length: number): string | undefined {
    const ip = offset + Ethernet.HEADER_LENGTH;
    if (length < Ethernet.HEADER_LENGTH + Ipv4.MINIMUM_HEADER_LENGTH) return undefined;
    if (readU16(bytes, offset + Ethernet.ETHER_TYPE) !== EtherType.IPV4) return undefined;
    return this.options.policy.dns.names.nameOf(ipv4Destination(bytes, ip));
  }

  /** Logs a dropped frame: spoofing by the VM at warn, anything else at debug, rate-limited per reason. */
  private logDrop(direction: string, reason: number, batch: FrameBatch, slot: number, now: number): void {
    const spoof = SPOOFS.has(reason);
    if (!spoof && !this.debugEnabled) return;
    const suppressed = this.dropLog.take(reason, now);
    if (suppressed < 0) return;
    const frame = describeFrame(batch.bytes, slot * batch.slotSize, batch.lengths[slot]);
    const more = suppressed > 0 ? ` (${suppressed} more like it not logged)` : "";
    // The name a DNS answer gave the destination, so a drop says what the VM was trying to reach.
    const name =
      direction === "from VM"
        ? this.destinationName(batch.bytes, slot * batch.slotSize, batch.lengths[slot])
        : undefined;
    const named = name === undefined ? "" : ` (the address of ${name})`;
    const line = `dropped ${direction}: ${reasonName(reason)}: ${REASON_EXPLANATIONS[reason]}: ${frame}${named}${more}`;
    const fields = {
      direction: direction === "from VM" ? "from-vm" : "to-vm",
      reason: reasonName(reason),
      explanation: REASON_EXPLANATIONS[reason],
      frame,
      destination_name: name ?? null,
      suppressed_before: suppressed,
    };
    if (spoof) this.options.logger.warn(line, "drop", fields);
    else this.options.logger.debug(line, "drop", fields);
  }
}
