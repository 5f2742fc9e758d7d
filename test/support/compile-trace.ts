/**
 * Reading an strace of softnet's run-time C compile (runtime-c.ts): which files TinyCC opened, and
 * whether the source it read was a sealed memfd.
 */

/**
 * strace options: threads followed, descriptors shown with their paths (-y), no signal noise;
 * `alsoTraced` adds system calls (write, to see a probe's markers).
 */
export function compileTraceOptions(alsoTraced: readonly string[] = []): string[] {
  const calls = ["open", "openat", "openat2", "creat", "execve", "memfd_create", "fcntl", ...alsoTraced];
  return ["-f", "-y", "-qq", "-e", "signal=none", "-e", `trace=${calls.join(",")}`];
}

export interface CompileTrace {
  /** Files opened for reading that are not directories, as "path -> what the descriptor is". */
  readonly readOpens: string[];
  /** Files opened for writing (Bun staging its headers), by path. */
  readonly writeOpens: string[];
  /** Programs started. */
  readonly execs: string[];
  /** The memfds sealed with all four seals, by descriptor number. */
  readonly sealedMemfds: number[];
}

const OPEN =
  /^\d+\s+(?:open|openat|openat2|creat)\((?:[^,]*, )?"([^"]*)", ([A-Z_|]+)[^)]*\) = (\d+)(?:<([^>]*)>)?/;

/** Parses the lines of an `strace -y` trace made with COMPILE_TRACE_OPTIONS. */
export function parseCompileTrace(lines: readonly string[]): CompileTrace {
  const readOpens: string[] = [];
  const writeOpens: string[] = [];
  const execs: string[] = [];
  const sealedMemfds: number[] = [];
  for (const line of lines) {
    const sealed = /fcntl\((\d+)<\/memfd:[^>]*>[^,]*, F_ADD_SEALS, (\S+)\) = 0/.exec(line);
    if (sealed !== null) {
      const seals = sealed[2]!.split("|").sort();
      if (seals.join("|") === "F_SEAL_GROW|F_SEAL_SEAL|F_SEAL_SHRINK|F_SEAL_WRITE") {
        sealedMemfds.push(Number(sealed[1]));
      }
      continue;
    }
    const exec = /^\d+\s+execve\("([^"]*)"/.exec(line);
    if (exec !== null) {
      execs.push(exec[1]!);
      continue;
    }
    const open = OPEN.exec(line);
    if (open === null) continue;
    const [, path, flags, , target] = open;
    if (flags!.includes("O_DIRECTORY")) continue;
    if (flags!.includes("O_WRONLY") || flags!.includes("O_RDWR")) writeOpens.push(path!);
    else readOpens.push(`${path} -> ${target ?? "?"}`);
  }
  return { readOpens, writeOpens, execs, sealedMemfds };
}
