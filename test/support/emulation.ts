/**
 * How a test starts this very Bun again, or a program built for this process's architecture.
 *
 * Natively that is just the path. test/arm64 runs suites with the linux-aarch64 Bun under qemu-user
 * on an x86-64 host: the kernel there cannot execute an AArch64 file itself (no binfmt_misc
 * registration is assumed), so a child has to be started through the same emulator. The arm64
 * runner passes the emulator's command line in SOFTNET_TEST_EMULATOR (a JSON array, e.g.
 * ["/usr/bin/qemu-aarch64","-L","/usr/aarch64-linux-gnu"]); children inherit it.
 */
export const EMULATOR_VARIABLE = "SOFTNET_TEST_EMULATOR";

/** The emulator command line this process runs under, or [] when it runs natively. */
export function emulator(): string[] {
  const value = process.env[EMULATOR_VARIABLE];
  if (value === undefined || value === "") return [];
  const parsed: unknown = JSON.parse(value);
  if (!Array.isArray(parsed) || !parsed.every((part) => typeof part === "string") || parsed.length === 0) {
    throw new Error(`${EMULATOR_VARIABLE} must be a JSON array of strings, not ${value}`);
  }
  return parsed;
}

/** argv that runs `program` (built for this process's architecture), under the emulator if any. */
export function runnable(program: string): string[] {
  return [...emulator(), program];
}

/** argv that starts this Bun again: `[...bunCommand(), "test", file]`. */
export function bunCommand(): string[] {
  return runnable(process.execPath);
}
