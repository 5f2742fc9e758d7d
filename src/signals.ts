/**
 * The signals softnet answers: those that stop it cleanly and those that print its counters.
 * Handlers stay installed until the function each registration returns is called.
 */

/**
 * The signals that ask for the counters. SIGINFO exists on macOS (Ctrl-T, sys/signal.h) and not
 * on Linux; Bun maps the name "SIGINFO" to the platform's SIGINFO where <signal.h> defines it
 * (oven-sh/bun src/bun.js/bindings/BunProcess.cpp, loadSignalNumberMap), so it is only asked for
 * where it exists.
 */
export function counterSignalsOf(platform: NodeJS.Platform): NodeJS.Signals[] {
  return platform === "darwin" ? ["SIGUSR2", "SIGINFO"] : ["SIGUSR2"];
}

/**
 * The signals that stop softnet cleanly (exit 0, forwards and TAP removed): besides SIGINT and
 * SIGTERM, every signal whose default action would end it without its cleanup and that Bun
 * leaves at that default (measured on Bun 1.4.5 running a script; the release binary is checked
 * for SIGHUP in test/release/setuid-root-work.test.ts:
 * SIGHUP, SIGQUIT, SIGUSR1, SIGALRM, SIGSTKFLT, SIGXCPU, SIGVTALRM, SIGPROF and SIGIO end the
 * process; Bun ignores SIGPIPE, SIGXFSZ and SIGPWR; SIGUSR1 starts no inspector). Not here:
 * SIGKILL (cannot be caught), faults (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS:
 * no JavaScript should run after one) and real-time signals (Bun cannot name them). After any of
 * those the TAP and the forwards' table still go with the process (tap.ts, nftables.ts); only the
 * closing log lines are missing. SIGUSR2 (and SIGINFO) print the counters instead.
 */
const STOP_SIGNALS: readonly NodeJS.Signals[] = [
  "SIGINT",
  "SIGTERM",
  "SIGHUP",
  "SIGQUIT",
  "SIGUSR1",
  "SIGALRM",
  "SIGXCPU",
  "SIGVTALRM",
  "SIGPROF",
  ...(process.platform === "linux" ? (["SIGSTKFLT", "SIGIO"] as NodeJS.Signals[]) : []),
];

/** Calls `onStop` for every stop signal until the returned function is called. */
export function onStopSignals(onStop: (signal: NodeJS.Signals) => void): () => void {
  return onSignals(STOP_SIGNALS, onStop);
}

/** Calls `onCounters` for every counter signal of this platform until the returned function is called. */
export function onCounterSignals(onCounters: (signal: NodeJS.Signals) => void): () => void {
  return onSignals(counterSignalsOf(process.platform), onCounters);
}

function onSignals(
  signals: readonly NodeJS.Signals[],
  handler: (signal: NodeJS.Signals) => void,
): () => void {
  for (const signal of signals) process.on(signal, handler);
  return () => {
    for (const signal of signals) process.off(signal, handler);
  };
}
