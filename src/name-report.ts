/**
 * The names part of the counters report: every name the VM looked up, whether its queries passed,
 * the addresses its answers named and the packets to them, and the two lists a person acts on:
 * the --allow value that lets through what was dropped, and the names whose addresses carried
 * the VM's traffic (the allow list that locks a job down to what it used).
 */
import type { LearnedNames, NameRecord } from "./policy/learned-names.ts";
import { formatIpv4 } from "./wire/bytes.ts";

/** Names listed one per line in the text report; the JSON report has them all. */
const NAMES_LISTED = 50;
/** Addresses shown per name in the text report. */
const ADDRESSES_LISTED = 4;

export interface NameReport {
  lines: string[];
  fields: Record<string, unknown>;
}

function wasRefused(record: NameRecord): boolean {
  return record.allowedBy === "" && (record.queriesDropped > 0 || record.packetsDropped > 0);
}

/** Builds the names section (allocates freely: it runs when a person asks, not per frame). */
export function nameReport(learned: LearnedNames): NameReport {
  const records = learned.records();
  const lines: string[] = [];
  const refused = records.filter(wasRefused).map((record) => record.name);
  const used = records.filter((record) => record.packetsForwarded > 0).map((record) => record.name);
  if (records.length === 0) {
    lines.push("  names: none looked up");
  } else {
    lines.push(
      `  names looked up: ${records.length}${learned.unlistedLookups > 0 ? ` (+${learned.unlistedLookups} not listed)` : ""}`,
    );
    for (const record of records.slice(0, NAMES_LISTED)) {
      const addresses = [...record.addresses];
      const shown = addresses.slice(0, ADDRESSES_LISTED).map(formatIpv4).join(", ");
      const more = addresses.length > ADDRESSES_LISTED ? ` +${addresses.length - ADDRESSES_LISTED}` : "";
      lines.push(
        `    ${record.name}: ${record.allowedBy === "" ? "not allowed by name" : `allowed by ${record.allowedBy}`}; ` +
          `queries ${record.queriesPassed} passed, ${record.queriesDropped} dropped; ` +
          `addresses ${shown === "" ? "none" : `${shown}${more}`}; ` +
          `packets ${record.packetsForwarded} forwarded, ${record.packetsDropped} dropped`,
      );
    }
    if (records.length > NAMES_LISTED)
      lines.push(`    (${records.length - NAMES_LISTED} more in the JSON report)`);
  }
  if (refused.length > 0) lines.push(`  to allow what was dropped: --allow ${refused.join(",")}`);
  if (used.length > 0) lines.push(`  names whose addresses carried traffic: --allow ${used.join(",")}`);
  return {
    lines,
    fields: {
      looked_up: records.map((record) => ({
        name: record.name,
        allowed_by: record.allowedBy === "" ? null : record.allowedBy,
        queries_passed: record.queriesPassed,
        queries_dropped: record.queriesDropped,
        addresses: [...record.addresses].map(formatIpv4),
        packets_forwarded: record.packetsForwarded,
        packets_dropped: record.packetsDropped,
      })),
      not_listed: learned.unlistedLookups,
      allow_to_pass_dropped: refused,
      allow_what_was_used: used,
    },
  };
}
