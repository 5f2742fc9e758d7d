// The macOS way of handing run-time C to TinyCC (a root-owned unlinked file, /dev/fd/N; see
// src/platform/runtime-c.ts) as runOnDarwin uses it: prepared as root, compiled after the switch
// to the user softnet drops to. On Linux /dev/fd/N reopens the file with the file's own permission
// check; on macOS open1 authorizes /dev/fd/N against the same file's mode and owner before
// duplicating the descriptor (xnu, cited in runtime-c.ts): a file only root may read fails both.
import { FFIType } from "bun:ffi";
import { expect, test } from "bun:test";
import { linuxSourceFileCalls } from "../../src/platform/linux/epoll-reactor.ts";
import { compileSealedSource, READABLE_BY_ALL, sealText } from "../../src/platform/runtime-c.ts";
import { bunCommand } from "../support/emulation.ts";
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
  // The number is free again: the next file opened takes it, with other C in it.
  const other = sealText(linuxSourceFileCalls, "another file", "int answer(void) { return 7; }\n", "memfd");
  try {
    expect(other.fd).toBe(source.fd);
    expect(() => compileSealedSource(source, symbols)).toThrow("cannot compile a test file");
  } finally {
    other.close();
  }
});
