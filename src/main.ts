#!/usr/bin/env bun
/**
 * Entry point: parse the command line, run softnet until it is told to stop, and turn any failure
 * into one line on stderr (`softnet: what failed: why`) and an exit code: 0 clean stop, 1 failure,
 * 2 bad usage.
 */
import { parseCommandLine } from "./cli.ts";
import { describeError, exitCodeFor } from "./errors.ts";
import { initSentry, reportFatal } from "./sentry.ts";

export async function main(args: readonly string[]): Promise<number> {
  let parsed: ReturnType<typeof parseCommandLine>;
  try {
    parsed = parseCommandLine(args);
  } catch (error) {
    process.stderr.write(`softnet: ${describeError(error)}\n`);
    return exitCodeFor(error);
  }
  if (parsed.kind === "print") {
    process.stdout.write(parsed.text);
    return 0;
  }
  try {
    await initSentry(process.env);
    const { runSoftnet } = await import("./runtime.ts");
    return await runSoftnet(parsed.options);
  } catch (error) {
    const line = describeError(error);
    process.stderr.write(`softnet: ${line}\n`);
    await reportFatal(error, line).catch(() => {});
    return exitCodeFor(error);
  }
}

if (import.meta.main) {
  process.exitCode = await main(process.argv.slice(2));
}
