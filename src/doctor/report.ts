/**
 * What `softnet doctor` found: one result per check, printed as a checklist for people or as JSON
 * for bug reports. Pure: no I/O here, the caller prints.
 *
 * A check is "ok", a "problem" (with what to do about it), "skipped" (it could not run, and the line
 * says why: needs root, or an earlier check failed), or "n/a" (it does not apply here, e.g. bootpd on
 * the vmnet double). Only problems fail the run: exit 0 when there is none, 1 otherwise.
 */

export type CheckStatus = "ok" | "problem" | "skipped" | "n/a";

/** A value a check saw, for the JSON report (and the text line's detail). */
export type CheckValue = string | number | boolean | null | readonly string[] | readonly number[];

export interface CheckResult {
  /** Stable identifier, e.g. "linux.dhcp"; bug reports and tests refer to it. */
  readonly id: string;
  /** What is checked, in a few words: "a DHCP server answers on the bridge". */
  readonly title: string;
  readonly status: CheckStatus;
  /** What was seen, one sentence: "OFFER of 192.168.64.23 from 192.168.64.1, lease 600 s". */
  readonly detail: string;
  /** For a problem (and for a skip that a person can undo): what to do. */
  readonly advice?: string;
  /** The values behind the detail, named, for the JSON report. */
  readonly values?: Readonly<Record<string, CheckValue>>;
}

export interface DoctorReport {
  readonly softnet: { readonly version: string; readonly commit: string; readonly executable: string };
  /** "Linux 6.18.44 x64", "macOS 15.1 arm64", "vmnet double on Linux 6.18.44 x64 (not macOS)". */
  readonly system: string;
  /** The bridge checked (Linux); undefined on macOS. */
  readonly bridge?: string;
  readonly checks: readonly CheckResult[];
  /** Set when SIGINT/SIGTERM stopped the run before every check had run. */
  readonly interrupted?: string;
}

export function problemCount(report: DoctorReport): number {
  return report.checks.filter((check) => check.status === "problem").length;
}

/** 0 when every check passed (or did not apply), 1 when any found a problem or the run was cut short. */
export function exitCodeOf(report: DoctorReport): number {
  return problemCount(report) === 0 && report.interrupted === undefined ? 0 : 1;
}

const STATUS_LABEL: Record<CheckStatus, string> = {
  ok: "ok",
  problem: "PROBLEM",
  skipped: "skipped",
  "n/a": "n/a",
};
const LABEL_WIDTH = 8;

/**
 * The checklist: a header, then one line per check (`ok       title: detail`), each problem or
 * skip followed by an indented "what to do" line, then a verdict.
 */
export function formatChecklist(report: DoctorReport): string {
  const lines = [
    `softnet doctor: softnet ${report.softnet.version} (${report.softnet.commit}) on ${report.system}` +
      (report.bridge === undefined ? "" : `, bridge ${report.bridge}`),
  ];
  const indent = " ".repeat(LABEL_WIDTH + 1);
  for (const check of report.checks) {
    lines.push(`${STATUS_LABEL[check.status].padEnd(LABEL_WIDTH)} ${check.title}: ${check.detail}`);
    if (check.advice !== undefined && check.status !== "ok")
      lines.push(`${indent}what to do: ${check.advice}`);
  }
  const problems = problemCount(report);
  if (report.interrupted !== undefined) lines.push(`interrupted: ${report.interrupted}`);
  lines.push(
    problems === 0
      ? report.interrupted === undefined
        ? "no problem found"
        : "no problem found before the interruption"
      : `${problems} problem${problems === 1 ? "" : "s"} found`,
  );
  return `${lines.join("\n")}\n`;
}

/** The report as one JSON document (pretty-printed: people paste it into bug reports). */
export function formatJson(report: DoctorReport): string {
  return `${JSON.stringify({ ...report, ok: exitCodeOf(report) === 0, problems: problemCount(report) }, null, 2)}\n`;
}

/**
 * Collects results in order. `skipUnless` makes the "could not run" lines uniform: every check that
 * cannot run still gets its line, saying why, so nothing is skipped silently.
 */
export class Checklist {
  readonly results: CheckResult[] = [];

  /** Adds a result; one with the same id (a placeholder) is replaced in place. */
  add(result: CheckResult): CheckResult {
    const at = this.results.findIndex((existing) => existing.id === result.id);
    if (at < 0) this.results.push(result);
    else this.results[at] = result;
    return result;
  }

  ok(id: string, title: string, detail: string, values?: Record<string, CheckValue>): CheckResult {
    return this.add({ id, title, status: "ok", detail, values });
  }

  problem(
    id: string,
    title: string,
    detail: string,
    advice: string,
    values?: Record<string, CheckValue>,
  ): CheckResult {
    return this.add({ id, title, status: "problem", detail, advice, values });
  }

  skipped(id: string, title: string, why: string, advice?: string): CheckResult {
    return this.add({ id, title, status: "skipped", detail: why, advice });
  }

  notApplicable(id: string, title: string, why: string, values?: Record<string, CheckValue>): CheckResult {
    return this.add({ id, title, status: "n/a", detail: why, values });
  }

  /** The same as add(), named for where a placeholder is filled in. */
  replace(result: CheckResult): CheckResult {
    return this.add(result);
  }

  get(id: string): CheckResult | undefined {
    return this.results.find((result) => result.id === id);
  }

  passed(id: string): boolean {
    return this.get(id)?.status === "ok";
  }
}

/** The line every root-only check prints when the doctor is not root. */
export const NEEDS_ROOT = "needs root: not run";
export const NEEDS_ROOT_ADVICE = "run the doctor as root: sudo softnet doctor ...";
