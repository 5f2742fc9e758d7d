/**
 * Flag values that softnet's command line (cli.ts) and the doctor's (doctor/cli.ts) both take, parsed
 * the same way in both, with the same UsageError naming the flag and the value (exit code 2). Both
 * command lines import this module; it imports neither.
 */
import { UsageError } from "./errors.ts";
import { isPlainInterfaceName } from "./interface-name.ts";

/** `invalid --flag "value": why`, the one shape of every bad-value error on either command line. */
export function invalid(flag: string, value: string, why: string): UsageError {
  return new UsageError(`invalid ${flag} ${JSON.stringify(value)}: ${why}`);
}

const MAX_LEASE_SECONDS = 0xffff_fffe; // 0xffffffff means "infinite" to DHCP

/** --bootpd-lease-time: whole seconds, short of DHCP's "infinite". */
export function parseLeaseTime(text: string): number {
  if (!/^[1-9][0-9]{0,9}$/.test(text) || Number(text) > MAX_LEASE_SECONDS) {
    throw invalid("--bootpd-lease-time", text, `expected whole seconds from 1 to ${MAX_LEASE_SECONDS}`);
  }
  return Number(text);
}

/** --bridge: a Linux interface name of letters, digits, '-', '_' and '.' (interface-name.ts). */
export function parseInterfaceName(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (!isPlainInterfaceName(value)) {
    throw invalid(
      "--bridge",
      value,
      "not a network interface name (1 to 15 letters, digits, '-', '_' or '.')",
    );
  }
  return value;
}
