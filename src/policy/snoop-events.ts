/**
 * What the snoopers learned from the traffic they watched, for the loop to act on (log, move port
 * forwards): a queue the policy fills while it decides on a batch and the loop drains after it.
 * Lease events are shared constants and the queue keeps its array, so a DHCP ACK allocates
 * nothing; what DNS teaches is rare enough to carry its own object.
 */
import type { LearnEvent } from "./learned-names.ts";

export type SnoopEvent =
  | { kind: "lease-granted" }
  | { kind: "lease-refused" }
  | { kind: "gateway-mac"; mac: number; first: boolean }
  | LearnEvent;

export const LEASE_GRANTED: SnoopEvent = Object.freeze({ kind: "lease-granted" });
export const LEASE_REFUSED: SnoopEvent = Object.freeze({ kind: "lease-refused" });

/**
 * Events kept between two drains at most. The loop drains after every batch from the host (at most
 * one event per frame, batches far smaller than this), so the cap only bounds memory against a bug.
 */
const MAX_PENDING = 1024;

export class SnoopEvents {
  private readonly pending: SnoopEvent[] = [];

  push(event: SnoopEvent): void {
    if (this.pending.length < MAX_PENDING) this.pending.push(event);
  }

  get size(): number {
    return this.pending.length;
  }

  /** Hands every pending event to `handle`, in order, and empties the queue. */
  drain(handle: (event: SnoopEvent) => void): void {
    if (this.pending.length === 0) return;
    for (let index = 0; index < this.pending.length; index++) handle(this.pending[index]);
    this.pending.length = 0;
  }
}
