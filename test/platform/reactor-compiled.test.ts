// The reactor inside a `bun build --compile` binary, where epoll-reactor.c is embedded under /$bunfs/ and
// TinyCC cannot open it by that path. Builds a tiny program into a temporary directory and runs it.
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { bunCommand, runnable } from "../support/emulation.ts";

const workDir = mkdtempSync(join(tmpdir(), "softnet-reactor-compiled-"));
afterAll(() => rmSync(workDir, { recursive: true, force: true }));

const platformDir = resolve(import.meta.dir, "../../src/platform");

const entry = `
import { EFD_NONBLOCK, libc } from ${JSON.stringify(join(platformDir, "linux/libc.ts"))};
import { Reactor } from ${JSON.stringify(join(platformDir, "reactor.ts"))};
import { epollReactorBackend } from ${JSON.stringify(join(platformDir, "linux/epoll-reactor.ts"))};
import embeddedSource from ${JSON.stringify(join(platformDir, "linux/epoll-reactor.c"))} with { type: "file" };

const eventFd = libc.eventfd(0, EFD_NONBLOCK);
const reactor = new Reactor(epollReactorBackend());
const counter = new BigUint64Array([7n]);
reactor.watch(eventFd, () => {
  libc.read(eventFd, counter, 8);
  console.log("source " + embeddedSource);
  console.log("ready " + counter[0]);
  reactor.close();
  return false;
});
libc.write(eventFd, counter, 8);
`;

test("the reactor compiles and runs inside a compiled binary", () => {
  const entryPath = join(workDir, "entry.ts");
  const binaryPath = join(workDir, "reactor-probe");
  writeFileSync(entryPath, entry);
  const build = Bun.spawnSync(
    [
      ...bunCommand(),
      "build",
      "--compile",
      "--no-compile-autoload-dotenv",
      "--no-compile-autoload-bunfig",
      entryPath,
      "--outfile",
      binaryPath,
    ],
    { stderr: "pipe", stdout: "pipe" },
  );
  expect(build.stderr.toString()).not.toContain("error");
  expect(build.exitCode).toBe(0);

  // Run from another directory, with BUN_TCC_OPTIONS set to something that would break the build
  // of reactor.c if Bun honoured it (it does when cc() is called without explicit flags).
  const run = Bun.spawnSync(runnable(binaryPath), {
    cwd: tmpdir(),
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", BUN_TCC_OPTIONS: "-Dreactor_create=renamed" },
    stderr: "pipe",
    stdout: "pipe",
  });
  const output = run.stdout.toString();
  expect(run.stderr.toString()).toBe("");
  expect(output).toMatch(/^source \/\$bunfs\//m);
  expect(output).toContain("ready 7");
  expect(run.exitCode).toBe(0);
}, 60_000);
