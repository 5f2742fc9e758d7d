#!/usr/bin/env bun
import type { SoftnetOptions } from "./cli.ts";
/**
 * Entry point: parse the command line, run softnet until it is told to stop, and turn any failure
 * into one line on stderr (`softnet: what failed: why`) and an exit code: 0 clean stop, 1 failure,
 * 2 bad usage.
 */
import { parseCommandLine } from "./cli.ts";
import { describeError, exitCodeFor } from "./errors.ts";
import { fatalLine } from "./log.ts";
import { enableErrorReports, errorReportsWanted, loadErrorReporter, reportFatal } from "./sentry.ts";
import { writeStderr, writeStdout } from "./stdio.ts";

export async function main(args: readonly string[]): Promise<number> {
  let parsed: ReturnType<typeof parseCommandLine>;
  try {
    parsed = parseCommandLine(args);
  } catch (error) {
    writeStderr(`softnet: ${describeError(error)}\n`);
    return exitCodeFor(error);
  }
  if (parsed.kind === "print") {
    writeStdout(parsed.text);
    return 0;
  }
  if (parsed.kind === "doctor") {
    try {
      const { runDoctor } = await import("./doctor/index.ts");
      return await runDoctor(parsed.options);
    } catch (error) {
      writeStderr(`softnet: ${describeError(error)}\n`);
      return exitCodeFor(error);
    }
  }
  try {
    // Sentry starts inside the runtime, after the privilege drop (sentry.ts enableErrorReports);
    // its code is loaded now, with the rest of the program's.
    loadErrorReporter(process.env);
    const { runSoftnet } = await import("./runtime.ts");
    return await runSoftnet(parsed.options);
  } catch (error) {
    const line = describeError(error);
    writeStderr(fatalLine(parsed.options.logFormat, line));
    await reportFatalUnprivileged(error, line, parsed.options);
    return exitCodeFor(error);
  }
}

/**
 * Reports a fatal error when SENTRY_DSN asks for it, never as root: a failure before the drop is
 * printed first, then softnet drops privileges for good and reports it. Best effort: a report that
 * cannot be made (the drop itself failed, Sentry unreachable) changes nothing about the exit.
 */
async function reportFatalUnprivileged(error: unknown, line: string, options: SoftnetOptions): Promise<void> {
  if (!errorReportsWanted(process.env)) return;
  try {
    const { dropForErrorReport } = await import("./runtime.ts");
    await dropForErrorReport(options);
    if (await enableErrorReports(process.env)) await reportFatal(error, line);
  } catch {
    // Already printed; the report is not worth a second failure line.
  }
}

if (import.meta.main) {
  // No top-level await: the exit code is set when main() settles; nothing here has to wait for it.
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
