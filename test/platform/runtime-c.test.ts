// Run-time C (src/platform/runtime-c.ts) under strace: while bun:ffi's cc() compiles the readiness
// reactor, TinyCC opens exactly one file, the memfd holding the source, sealed beforehand against
// any write; nothing is executed and nothing else is read. Bun itself only writes its staged
// headers (into /tmp/bun-cc-<uid>), which our sources never include.
// Also: no run-time C file uses `inline` (the arm64 x18 scan would not see such code).

import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { compileTraceOptions, parseCompileTrace } from "../support/compile-trace.ts";
import { bunCommand, emulator } from "../support/emulation.ts";
import { requireTool } from "../support/tools.ts";

const REPO = resolve(import.meta.dir, "../..");
const workDir = mkdtempSync(join(tmpdir(), "softnet-runtime-c-"));
afterAll(() => rmSync(workDir, { recursive: true, force: true }));

test("strace: TinyCC opens only the sealed memfd holding the source, and runs nothing", () => {
  const probe = join(workDir, "probe.ts");
  writeFileSync(
    probe,
    `import { epollReactorBackend } from ${JSON.stringify(join(REPO, "src/platform/linux/epoll-reactor.ts"))};
require("node:fs").writeSync(2, "COMPILE-START\\n");
epollReactorBackend();
require("node:fs").writeSync(2, "COMPILE-END\\n");
`,
  );
  const traceFile = join(workDir, "trace");
  const run = Bun.spawnSync(
    [requireTool("strace"), ...compileTraceOptions(["write"]), "-o", traceFile, ...bunCommand(), probe],
    { stdout: "pipe", stderr: "pipe", cwd: workDir },
  );
  expect(run.stderr.toString()).toContain("COMPILE-END");
  expect(run.exitCode).toBe(0);
  const lines = readFileSync(traceFile, "utf8").split("\n");
  const start = lines.findIndex((line) => line.includes('"COMPILE-START\\n"'));
  const end = lines.findIndex((line) => line.includes('"COMPILE-END\\n"'));
  expect(start).toBeGreaterThan(0);
  expect(end).toBeGreaterThan(start);
  const traced = parseCompileTrace(lines.slice(start, end));
  // Under the arm64 step strace sees qemu-user's own system calls too: it reads /proc/self/statm
  // during the compile (the emulator's, never a source; as in test/darwin/compile-after-drop).
  const emulatorOwn = emulator().length > 0 ? ["/proc/self/statm"] : [];
  const compile = {
    ...traced,
    readOpens: traced.readOpens.filter((open) => !emulatorOwn.includes(open.split(" -> ")[0]!)),
  };
  expect(compile.execs).toEqual([]);
  // The program's own C file (read before the drop in the runtime), then what TinyCC opens.
  const ownSource = join(REPO, "src/platform/linux/epoll-reactor.c");
  expect(compile.readOpens).toHaveLength(2);
  expect(compile.readOpens[0]).toBe(`${ownSource} -> ${ownSource}`);
  const opened = compile.readOpens[1];
  const fd = Number(/^\/proc\/self\/fd\/(\d+) -> \/memfd:softnet-/.exec(opened!)?.[1]);
  expect(opened).toMatch(/^\/proc\/self\/fd\/\d+ -> \/memfd:softnet-\S+$/);
  expect(compile.sealedMemfds).toContain(fd);
  // What Bun writes: its headers, only under /tmp/bun-cc-<uid>/ (none of them is ever read).
  for (const path of compile.writeOpens) expect(path).not.toContain("/");
});

test("no run-time C file uses inline: the arm64 x18 scan reads only the code between each file's markers", () => {
  const sources = readdirSync(join(REPO, "src"), { recursive: true, encoding: "utf8" })
    .filter((path) => path.endsWith(".c"))
    .map((path) => join(REPO, "src", path));
  expect(sources.length).toBeGreaterThanOrEqual(3);
  const offenders = sources.filter((path) => /\binline\b/.test(stripComments(readFileSync(path, "utf8"))));
  expect(offenders.map((path) => relative(REPO, path))).toEqual([]);
});

/** C source without its comments (an explanation may say "inline"; code may not). */
function stripComments(source: string): string {
  return source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/[^\n]*/g, "");
}
