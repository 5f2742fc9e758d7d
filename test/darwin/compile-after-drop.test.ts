// The macOS way of handing run-time C to TinyCC (a root-owned unlinked file, /dev/fd/N; see
// src/platform/runtime-c.ts) as runOnDarwin uses it: prepared as root, compiled after the switch
// to the user softnet drops to. On Linux /dev/fd/N reopens the file with the file's own permission
// check; on macOS open1 authorizes /dev/fd/N against the same file's mode and owner before
// duplicating the descriptor (xnu, cited in runtime-c.ts): a file only root may read fails both.
import { dlopen, FFIType } from "bun:ffi";
import { expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { linuxSourceFileCalls } from "../../src/platform/linux/epoll-reactor.ts";
import { libc } from "../../src/platform/linux/libc.ts";
import { compileSealedSource, READABLE_BY_ALL, sealText } from "../../src/platform/runtime-c.ts";
import { compileTraceOptions, parseCompileTrace } from "../support/compile-trace.ts";
import { bunCommand, emulator } from "../support/emulation.ts";
import { requireTool } from "../support/tools.ts";
import { REPO } from "./support.ts";

const NOBODY = 65534;

test("the unlinked source file compiles as the user softnet drops to, from offset 0", () => {
  const child = Bun.spawnSync(
    [...bunCommand(), "test/darwin/compile-after-drop-on-double.ts", String(NOBODY), String(NOBODY)],
    { cwd: REPO, stderr: "pipe" },
  );
  const stdout = child.stdout.toString();
  expect(child.exitCode, child.stderr.toString()).toBe(0);
  const result = JSON.parse(stdout.trim().split("\n").at(-1)!) as {
    mode: number;
    offset: number;
    answer?: number;
    error?: string;
  };
  expect(result).toEqual({ mode: READABLE_BY_ALL, offset: 0, answer: 42 });
});

test("a prepared source compiles once: its closed descriptor's number is not compiled again", () => {
  const source = sealText(linuxSourceFileCalls, "a test file", "int answer(void) { return 42; }\n", "memfd");
  const symbols = { answer: { args: [], returns: FFIType.i32 } } as const;
  expect(compileSealedSource(source, symbols).answer()).toBe(42);
  // The number is free again: another file with other C in it is put there (dup2).
  const other = sealText(linuxSourceFileCalls, "another file", "int answer(void) { return 7; }\n", "memfd");
  try {
    expect(glibc.dup2(other.fd, source.fd)).toBe(source.fd);
    expect(() => compileSealedSource(source, symbols)).toThrow("cannot compile a test file");
  } finally {
    other.close();
    libc.close(source.fd);
  }
});

// int dup2(int oldfd, int newfd);  (glibc unistd.h)
const glibc = dlopen("libc.so.6", {
  dup2: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
}).symbols;

test("strace: while the macOS strategy's source compiles, TinyCC opens only /dev/fd/N, a nameless file, and runs nothing", () => {
  const workDir = mkdtempSync(join(tmpdir(), "softnet-compile-after-drop-"));
  try {
    const traceFile = join(workDir, "trace");
    const run = Bun.spawnSync(
      [
        requireTool("strace"),
        ...compileTraceOptions(["write", "unlink", "unlinkat"]),
        "-o",
        traceFile,
        ...bunCommand(),
        join(REPO, "test/darwin/compile-after-drop-on-double.ts"),
        String(NOBODY),
        String(NOBODY),
      ],
      { cwd: REPO, stdout: "pipe", stderr: "pipe" },
    );
    expect(run.stderr.toString()).toContain("COMPILE-END");
    expect(run.exitCode).toBe(0);
    const lines = readFileSync(traceFile, "utf8").split("\n");
    const start = lines.findIndex((line) => line.includes('"COMPILE-START\\n"'));
    const end = lines.findIndex((line) => line.includes('"COMPILE-END\\n"'));
    expect(start).toBeGreaterThan(0);
    expect(end).toBeGreaterThan(start);
    // Under the arm64 step strace sees qemu-user's own system calls too: measured, it reads
    // /proc/self/statm during the compile (the emulator's, not TinyCC's: never a source).
    const emulatorOwn = emulator().length > 0 ? ["/proc/self/statm"] : [];
    const traced = parseCompileTrace(lines.slice(start, end));
    const compile = {
      ...traced,
      readOpens: traced.readOpens.filter((open) => !emulatorOwn.includes(open.split(" -> ")[0]!)),
    };
    expect(compile.execs).toEqual([]);
    // The one file read: the descriptor runtime-c.ts prepared, which on Linux /dev/fd/N reopens;
    // the file behind it has no name left (created by root in /tmp, 0444: checked above).
    expect(compile.readOpens).toHaveLength(1);
    const [, name] =
      /^\/dev\/fd\/\d+ -> (\/tmp\/softnet-source\.\w{6})(?: \(deleted\))?$/.exec(compile.readOpens[0]!) ?? [];
    expect(name).toBeDefined();
    // Its name was gone before the compile began: unlinked by root right after mkstemp.
    // (unlink, or unlinkat where the C library or qemu-user makes that call instead)
    const unlinked = (line: string) => line.includes(`"${name}"`) && /\bunlink(?:at)?\(.*\) = 0$/.test(line);
    expect(lines.slice(0, start).some(unlinked)).toBe(true);
    // What Bun writes: its staged headers, by names relative to /tmp/bun-cc-<uid>, never read.
    for (const path of compile.writeOpens) expect(path).not.toContain("/");
  } finally {
    rmSync(workDir, { recursive: true, force: true });
  }
});
