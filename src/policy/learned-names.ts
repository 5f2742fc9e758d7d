/**
 * What the VM's DNS answers taught: which addresses the names it looked up stand for, which of
 * them an allowed name (`--allow example.com`) lets the VM reach and until when, and, for the
 * report, per name: whether its queries passed, the addresses its answers named, and how many
 * packets to them were forwarded or dropped.
 *
 * Pure, no clock of its own: times are milliseconds passed in. The per-packet calls (allows,
 * countForwarded, countDropped, nameOf) read one Map by a number key and write numbers in place:
 * they allocate nothing. Learning runs once per DNS answer.
 */
import { addressesForQuestion, type DnsMessage } from "../wire/dns.ts";
import { isGlobal } from "./address.ts";
import type { NamePatterns } from "./name-patterns.ts";

/**
 * How long an address stays allowed, and how much memory that may take. The record's TTL is
 * bounded below by ttlFloorSeconds (clients and language runtimes keep an answer a little longer
 * than its TTL, and CDNs answer with TTLs of 20-60 s) and above by ttlCeilingSeconds (an address
 * a name no longer stands for is not kept for a day). After the TTL, the address stays allowed
 * while the VM exchanges traffic with it, until idleSeconds pass without any, so a long download
 * outlives a short TTL.
 */
export interface LearningLimits {
  ttlFloorSeconds: number;
  ttlCeilingSeconds: number;
  idleSeconds: number;
  /** Addresses kept per name; a name that answers with more replaces its stalest. */
  addressesPerName: number;
  /** Addresses kept in total; beyond it nothing new is learned until some expire. */
  addresses: number;
  /** Names kept in the report; beyond it lookups are counted but not listed. */
  reportedNames: number;
}

export const DEFAULT_LEARNING_LIMITS: LearningLimits = {
  ttlFloorSeconds: 60,
  ttlCeilingSeconds: 3600,
  idleSeconds: 600,
  addressesPerName: 64,
  addresses: 4096,
  reportedNames: 1024,
};

/** What the VM looked up under one name, for the report. Counters grow in place. */
export interface NameRecord {
  name: string;
  /** The --allow pattern that matches the name, or "" when none does. */
  allowedBy: string;
  queriesPassed: number;
  queriesDropped: number;
  /** Packets to and from the addresses its answers named, forwarded and dropped. */
  packetsForwarded: number;
  packetsDropped: number;
  /** The addresses its answers named (at most addressesPerName, first seen first). */
  addresses: Set<number>;
}

/** One address an answer named. */
interface AddressEntry {
  address: number;
  record: NameRecord;
  /** True when record.allowedBy allows it: a learned /32 allow, until `until`. */
  allowed: boolean;
  /** Until when (ms) the TTL alone keeps it. */
  ttlUntil: number;
  /** Until when (ms) it stays: the later of ttlUntil and the last traffic plus the idle time. */
  until: number;
}

/** What learning from one answer did, for the loop to log (never per packet). */
export type LearnEvent =
  | { kind: "learned"; name: string; allowedBy: string; address: number; seconds: number }
  | { kind: "not-global"; name: string; allowedBy: string; address: number }
  | { kind: "name-cap"; name: string; cap: number }
  | { kind: "total-cap"; cap: number };

export class LearnedNames {
  private readonly byAddress = new Map<number, AddressEntry>();
  private readonly byName = new Map<string, NameRecord>();
  /** Names whose non-global answer was already reported, so it is said once per name. */
  private readonly nonGlobalReported = new Set<string>();
  private totalCapReported = false;
  private readonly nameCapReported = new Set<string>();
  /** Lookups beyond the report's cap of names. */
  unlistedLookups = 0;

  constructor(
    readonly patterns: NamePatterns,
    readonly limits: LearningLimits = DEFAULT_LEARNING_LIMITS,
  ) {}

  /** True when names are allowed at all (an --allow name was given). */
  get active(): boolean {
    return this.patterns.size > 0;
  }

  /** The --allow pattern that allows a question name, or undefined. */
  allowedPattern(name: string): string | undefined {
    return this.patterns.match(name);
  }

  /** Counts a query the VM sent for `name`, passed or dropped. */
  countQuery(name: string, passed: boolean): void {
    const record = this.recordFor(name);
    if (record === undefined) return;
    if (passed) record.queriesPassed++;
    else record.queriesDropped++;
  }

  /**
   * Learns from a DNS response that reached the VM from one of its lease's DNS servers (the caller
   * checks where it came from). Every A record whose owner is the question name or on its CNAME
   * chain is noted for the report; when the question name is allowed and the address is global,
   * it becomes a learned allow for its TTL (bounded by the limits).
   */
  learn(message: DnsMessage, nowMs: number, events: { push(event: LearnEvent): unknown }): void {
    if (!message.isResponse || message.rcode !== 0 || message.questionName === "") return;
    const answers = addressesForQuestion(message);
    if (answers.length === 0) return;
    const record = this.recordFor(message.questionName);
    if (record === undefined) return;
    const { ttlFloorSeconds, ttlCeilingSeconds } = this.limits;
    for (const answer of answers) {
      const address = answer.address;
      const global = isGlobal(address);
      const allowed = record.allowedBy !== "" && global;
      if (record.allowedBy !== "" && !global && !this.nonGlobalReported.has(record.name)) {
        this.nonGlobalReported.add(record.name);
        events.push({ kind: "not-global", name: record.name, allowedBy: record.allowedBy, address });
      }
      const seconds = Math.min(Math.max(answer.ttl, ttlFloorSeconds), ttlCeilingSeconds);
      const ttlUntil = nowMs + seconds * 1000;
      let entry = this.byAddress.get(address);
      if (entry !== undefined) {
        // An address two names share belongs to the one that allows it, else to the latest.
        if (entry.record !== record && (allowed || !entry.allowed)) {
          entry.record.addresses.delete(address);
          entry.record = record;
        }
        if (allowed) entry.allowed = true;
        entry.ttlUntil = Math.max(entry.ttlUntil, ttlUntil);
        entry.until = Math.max(entry.until, ttlUntil);
      } else {
        if (this.byAddress.size >= this.limits.addresses) {
          this.expire(nowMs);
          if (this.byAddress.size >= this.limits.addresses) {
            if (!this.totalCapReported) {
              this.totalCapReported = true;
              events.push({ kind: "total-cap", cap: this.limits.addresses });
            }
            continue;
          }
        }
        if (record.addresses.size >= this.limits.addressesPerName) {
          this.dropStalest(record);
          if (!this.nameCapReported.has(record.name)) {
            this.nameCapReported.add(record.name);
            events.push({ kind: "name-cap", name: record.name, cap: this.limits.addressesPerName });
          }
        }
        entry = { address, record, allowed, ttlUntil, until: ttlUntil };
        this.byAddress.set(address, entry);
      }
      record.addresses.add(address);
      if (allowed) {
        events.push({ kind: "learned", name: record.name, allowedBy: record.allowedBy, address, seconds });
      }
    }
  }

  /** True when a learned allow covers `address` now. Per packet: allocates nothing. */
  allows(address: number, nowMs: number): boolean {
    const entry = this.byAddress.get(address);
    return entry?.allowed === true && nowMs < entry.until;
  }

  /**
   * Counts a packet forwarded to or from `address` and, when an answer named it, keeps it for
   * the idle time from now. Per packet: allocates nothing.
   */
  countForwarded(address: number, nowMs: number): void {
    const entry = this.byAddress.get(address);
    if (entry === undefined || nowMs >= entry.until) return;
    entry.record.packetsForwarded++;
    const idleUntil = nowMs + this.limits.idleSeconds * 1000;
    if (idleUntil > entry.until) entry.until = idleUntil;
  }

  /** Counts a packet to `address` that the rules dropped. Per packet: allocates nothing. */
  countDropped(address: number): void {
    const entry = this.byAddress.get(address);
    if (entry !== undefined) entry.record.packetsDropped++;
  }

  /** The name an answer gave `address` (for a drop's log line), or undefined. */
  nameOf(address: number): string | undefined {
    return this.byAddress.get(address)?.record.name;
  }

  /** Forgets the addresses whose time is over; returns how many. Call from a timer. */
  expire(nowMs: number): number {
    let removed = 0;
    for (const [address, entry] of this.byAddress) {
      if (nowMs >= entry.until) {
        this.byAddress.delete(address);
        removed++;
      }
    }
    if (removed > 0) this.totalCapReported = false;
    return removed;
  }

  /** How many addresses are kept now (allowed or only named). */
  get size(): number {
    return this.byAddress.size;
  }

  /** The report's records, in the order the names were first looked up. */
  records(): readonly NameRecord[] {
    return [...this.byName.values()];
  }

  private recordFor(name: string): NameRecord | undefined {
    const known = this.byName.get(name);
    if (known !== undefined) return known;
    const allowedBy = this.patterns.match(name) ?? "";
    const record: NameRecord = {
      name,
      allowedBy,
      queriesPassed: 0,
      queriesDropped: 0,
      packetsForwarded: 0,
      packetsDropped: 0,
      addresses: new Set(),
    };
    if (this.byName.size < this.limits.reportedNames) {
      this.byName.set(name, record);
      return record;
    }
    this.unlistedLookups++;
    // Past the report's cap an allowed name still works: it is left out of the report, not out
    // of the filter. Other names are only counted.
    return allowedBy === "" ? undefined : record;
  }

  /** Removes the address of `record` that would expire first. */
  private dropStalest(record: NameRecord): void {
    let stalest: AddressEntry | undefined;
    for (const address of record.addresses) {
      const entry = this.byAddress.get(address);
      if (
        entry !== undefined &&
        entry.record === record &&
        (stalest === undefined || entry.until < stalest.until)
      ) {
        stalest = entry;
      }
    }
    if (stalest === undefined) {
      // Addresses another name took over: only the set remembers them.
      const first = record.addresses.values().next();
      if (!first.done) record.addresses.delete(first.value);
      return;
    }
    record.addresses.delete(stalest.address);
    this.byAddress.delete(stalest.address);
  }
}
