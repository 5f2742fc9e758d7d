import { escapeControlCharacters } from "./printable.ts";

/**
 * One error type for everything softnet reports to a person. `what` says what failed in words a
 * user understands, `cause` keeps the chain (a SysError, a vmnet return code, another SoftnetError),
 * and `hint` says what to do about it. main() prints it as one line: `softnet: what: why (hint)`.
 */
export class SoftnetError extends Error {
  readonly what: string;
  readonly hint: string | undefined;

  constructor(what: string, options?: { cause?: unknown; hint?: string }) {
    super(what, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "SoftnetError";
    this.what = what;
    this.hint = options?.hint;
  }
}

/** A bad command line: printed the same way, but the exit code is 2. */
export class UsageError extends SoftnetError {
  constructor(what: string, options?: { cause?: unknown; hint?: string }) {
    super(what, options);
    this.name = "UsageError";
  }
}

/**
 * Flattens an error and its causes into `what: why: deeper why`, with hints appended once. Messages
 * often embed what came from outside (a path, an argument, an interface name), so control
 * characters are escaped here (printable.ts): the line stays one line whoever prints it.
 */
export function describeError(error: unknown): string {
  const parts: string[] = [];
  const hints: string[] = [];
  let current: unknown = error;
  for (let depth = 0; current !== undefined && current !== null && depth < 8; depth++) {
    if (current instanceof SoftnetError) {
      parts.push(current.what);
      if (current.hint) hints.push(current.hint);
    } else if (current instanceof Error) {
      parts.push(current.message);
    } else {
      parts.push(String(current));
    }
    current = current instanceof Error ? current.cause : undefined;
  }
  const line = parts.filter((part, i) => part !== "" && part !== parts[i - 1]).join(": ");
  return escapeControlCharacters(hints.length > 0 ? `${line} (${hints.join("; ")})` : line);
}

export function exitCodeFor(error: unknown): number {
  return error instanceof UsageError ? 2 : 1;
}
