/**
 * How a test starts this very Bun again, or a program built for this process's architecture.
 *
 * Natively that is just the path. test/arm64 runs suites with the linux-aarch64 Bun under qemu-user
 * on an x86-64 host: the kernel there cannot execute an AArch64 file itself (no binfmt_misc
 * registration is assumed), so a child has to be started through the same emulator. The arm64
 * runner passes the emulator's command line in SOFTNET_TEST_EMULATOR (a JSON array, e.g.
 * ["/usr/bin/qemu-aarch64","-L","/usr/aarch64-linux-gnu"]); children inherit it.
 */
import { requireFile, requireTool, type Tool } from "./tools.ts";

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

/**
 * The C compiler that builds programs and libraries this process can run or load, with the target
 * it names. Natively: the system's `cc`. When this Bun is the linux-aarch64 one under qemu-user on
 * an x86-64 host (test/arm64), `cc` still builds for the host, so Debian's cross compiler it is
 * (its C headers come from libc6-dev-arm64-cross and linux-libc-dev-arm64-cross).
 */
export function compilerForThisProcess(): { compiler: Tool; machine: string; crossCompiling: boolean } {
  const wanted = process.arch === "arm64" ? "aarch64" : process.arch === "x64" ? "x86_64" : process.arch;
  const system = Bun.spawnSync([requireTool("cc"), "-dumpmachine"], { stdout: "pipe", stderr: "pipe" });
  const machine = system.stdout.toString().trim();
  if (machine.startsWith(`${wanted}-`)) return { compiler: "cc", machine, crossCompiling: false };
  if (wanted !== "aarch64") throw new Error(`no C compiler for ${process.arch}: cc builds for "${machine}"`);
  requireFile("/usr/aarch64-linux-gnu/include/bits/libc-header-start.h");
  return { compiler: "aarch64-linux-gnu-gcc", machine: "aarch64-linux-gnu", crossCompiling: true };
}
