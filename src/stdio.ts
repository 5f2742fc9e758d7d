/**
 * softnet's own output: what it prints on stdout (--version, --help) and every line on stderr.
 *
 * Through Bun's native file sinks, not process.stdout/process.stderr: the first touch of either
 * builds Node's stream machinery, which cost the release binary about 25 ms of CPU, more than
 * the rest of `softnet --version` (measured with scripts/bench/startup.ts; README "Development").
 * The behaviour is the same as process.stderr.write's (checked on Bun 1.4.5 against a pipe whose
 * reader stalls, blocking or O_NONBLOCK): what the pipe cannot take yet is queued in order, the
 * filter loop never blocks on a log line, and the queue is written out before a natural exit
 * (process.exit() would cut it short, as it would process.stderr's).
 */
import type { FileSink } from "bun";

let stdoutSink: FileSink | undefined;
let stderrSink: FileSink | undefined;

export function writeStdout(text: string): void {
  stdoutSink ??= Bun.stdout.writer();
  stdoutSink.write(text);
  stdoutSink.flush();
}

export function writeStderr(text: string): void {
  stderrSink ??= Bun.stderr.writer();
  stderrSink.write(text);
  stderrSink.flush();
}
