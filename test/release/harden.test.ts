// The hardened Bun runtime (scripts/release/harden-runtime.ts): the environment scrubber's exact
// semantics, measured by running it (linux x86-64) with hostile environments that only execve()
// can make, and the patch itself, checked on the bytes of all four official runtimes.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findLlvmTool, staleBlobs } from "../../scripts/release/assemble-env-scrub.ts";
import { Elf64, PF_X, PT_LOAD } from "../../scripts/release/elf.ts";
import { ENV_SCRUB_BLOBS } from "../../scripts/release/env-scrub/blobs.ts";
import { hardenRuntime, inspectHardening } from "../../scripts/release/harden-runtime.ts";
import { MachO, S_INIT_FUNC_OFFSETS, SECTION_TYPE } from "../../scripts/release/macho.ts";
import { hardenedRuntime, officialRuntime, TARGETS } from "../../scripts/release/runtimes.ts";
import { REQUIRED_IN_CI } from "../support/ci.ts";
import { requireFile, requireTool, requireTools } from "../support/tools.ts";
import { canRunLinuxX64, releaseDist } from "./release-build.ts";

const work = mkdtempSync(join(tmpdir(), "softnet-harden-test-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const target = (name: string) => TARGETS.find((candidate) => candidate.name === name)!;

test.skipIf(!findLlvmTool("llvm-mc") && !REQUIRED_IN_CI)(
  "env-scrub/blobs.ts is what the assembly sources assemble to",
  async () => {
    requireTools(["llvm-mc", "llvm-objcopy", "llvm-nm", "llvm-readelf"]);
    expect(await staleBlobs()).toEqual([]);
  },
);

// execve() with exactly these argv and envp strings, any bytes but NUL (Bun.spawn cannot make
// entries like "" or "=x").
const EXEC_WITH = `
import { dlopen, FFIType, ptr } from "bun:ffi";
const { symbols } = dlopen("libc.so.6", { execve: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 } });
const [argv, envp] = JSON.parse(require("fs").readFileSync(process.argv[2], "latin1"));
const keep = [];
const cstr = (text) => { const b = Buffer.from(text + "\\0", "latin1"); keep.push(b); return b; };
const array = (list) => { const a = new BigUint64Array(list.length + 1); list.forEach((s, i) => { a[i] = BigInt(ptr(cstr(s))); }); keep.push(a); return a; };
symbols.execve(cstr(argv[0]), array(argv), array(envp));
console.error("execve failed");
process.exit(127);
`;

/** What a program run by the hardened runtime sees of `envp`: /proc/self/environ and process.env. */
function seenBy(runtime: string, envp: string[]): { environ: string[]; env: Record<string, string> } {
  const helper = join(work, "exec-with.mjs");
  writeFileSync(helper, EXEC_WITH);
  const probe =
    'const raw = require("fs").readFileSync("/proc/self/environ", "latin1");' +
    'console.log(JSON.stringify({ environ: raw.split("\\0").filter((e) => e !== ""), env: { ...process.env } }));';
  const request = join(work, "exec-request.json");
  writeFileSync(request, JSON.stringify([[runtime, "-e", probe], envp]), "latin1");
  const run = Bun.spawnSync([process.execPath, helper, request], {
    stdout: "pipe",
    stderr: "pipe",
  });
  if (run.exitCode !== 0) throw new Error(`probe failed: ${run.stderr.toString()}`);
  const seen = JSON.parse(run.stdout.toString());
  // Bun lists a few names it defines itself with undefined values; only real ones count.
  for (const [key, value] of Object.entries(seen.env))
    if (value === undefined || value === null) delete seen.env[key];
  return seen;
}

describe.skipIf(!canRunLinuxX64 && !REQUIRED_IN_CI)("the scrubber, run (hardened linux-x64 runtime)", () => {
  test("keeps exactly SENTRY_DSN, CIRRUS_SENTRY_TAGS, SUDO_UID, SUDO_GID, byte for byte, in order", () => {
    const { path } = hardenedRuntime(target("linux-x64"));
    const hostile = [
      "BUN_BE_BUN=1",
      "SENTRY_DSN=https://key@sentry.invalid/1",
      "SENTRY_DSNX=not-me",
      "SENTRY_DSN", // no "=": not the variable
      "=SENTRY_DSN=x", // empty name
      "",
      "sentry_dsn=lower-case",
      " SENTRY_DSN=leading-space",
      "\x01BUN_OPTIONS=--preload /x.js",
      "BUN_OPTIONS=--preload /x.js",
      "JSC_useJIT=0",
      "BUN_JSC_useJIT=0",
      "SUDO_UID=1000",
      "SUDO_GID=1000",
      "SUDO_USER=someone",
      "CIRRUS_SENTRY_TAGS=",
      "TMPDIR=/evil",
      "PATH=/evil/bin",
      "=",
      "SUDO_UID=2000",
    ];
    const seen = seenBy(path, hostile);
    expect(seen.environ).toEqual([
      "SENTRY_DSN=https://key@sentry.invalid/1",
      "SUDO_UID=1000",
      "SUDO_GID=1000",
      "CIRRUS_SENTRY_TAGS=",
      "SUDO_UID=2000",
    ]);
    expect(Object.keys(seen.env).sort()).toEqual([
      "CIRRUS_SENTRY_TAGS",
      "SENTRY_DSN",
      "SUDO_GID",
      "SUDO_UID",
    ]);
  });

  test("runs with an empty environment and with thousands of entries", () => {
    const { path } = hardenedRuntime(target("linux-x64"));
    expect(seenBy(path, []).environ).toEqual([]);
    const many = Array.from({ length: 5000 }, (_, i) =>
      i % 1000 === 0 ? `SUDO_GID=${i}` : `X${i}=${"y".repeat(i % 50)}`,
    );
    expect(seenBy(path, many).environ).toEqual([
      "SUDO_GID=0",
      "SUDO_GID=1000",
      "SUDO_GID=2000",
      "SUDO_GID=3000",
      "SUDO_GID=4000",
    ]);
  });

  test("the unhardened runtime, for contrast, passes everything through", () => {
    const seen = seenBy(officialRuntime(target("linux-x64")).path, ["BUN_JSC_useJIT=1", "FOO=bar"]);
    expect(seen.environ).toEqual(["BUN_JSC_useJIT=1", "FOO=bar"]);
  });
});

const QEMU = "/usr/bin/qemu-aarch64";
const ARM64_SYSROOT = "/usr/aarch64-linux-gnu";
const canEmulateArm64 = existsSync(QEMU) && existsSync(join(ARM64_SYSROOT, "lib/ld-linux-aarch64.so.1"));

// The AArch64 scrubber (the same `scrub` code the darwin-arm64 binary runs) executed for real,
// under qemu-user (Debian: qemu-user, libc6-arm64-cross).
describe.skipIf(!canEmulateArm64 && !REQUIRED_IN_CI)(
  "the scrubber, run (hardened linux-arm64 runtime under qemu-aarch64)",
  () => {
    const underQemu = (runtime: string, env: Record<string, string>, args: string[]) =>
      Bun.spawnSync([QEMU, "-L", ARM64_SYSROOT, runtime, ...args], { env, stdout: "pipe", stderr: "pipe" });

    test("keeps only the allowlist", () => {
      requireTool("qemu-aarch64");
      requireFile("/usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1");
      const { path } = hardenedRuntime(target("linux-arm64"));
      const hostile = {
        BUN_BE_BUN: "1",
        BUN_OPTIONS: "--preload /nonexistent.js",
        SENTRY_DSN: "a",
        SENTRY_DSNX: "b",
        SUDO_UID: "1",
        JSC_useJIT: "0",
        BUN_JSC_useJIT: "0",
        FOO: "bar",
      };
      const run = underQemu(path, hostile, [
        "-e",
        "console.log(JSON.stringify(Object.keys({ ...process.env }).filter((k) => process.env[k] !== undefined).sort()))",
      ]);
      expect(run.stdout.toString().trim(), run.stderr.toString()).toBe('["SENTRY_DSN","SUDO_UID"]');
    });

    test("the release's linux-arm64 binary ignores BUN_BE_BUN; the official runtime does not", async () => {
      const dist = await releaseDist();
      const release = underQemu(join(dist, "softnet-linux-arm64"), { BUN_BE_BUN: "1" }, ["--version"]);
      expect(release.stdout.toString()).toMatch(/^softnet \S+ \(\S+\)\n$/);
      const official = underQemu(officialRuntime(target("linux-arm64")).path, { BUN_BE_BUN: "1" }, [
        "--version",
      ]);
      expect(official.stdout.toString().trim()).toMatch(/^\d+\.\d+\.\d+$/);
    }, 300_000);
  },
);

// The Mach-O initializer entry (macho_init) executed for real: a C harness calls it as dyld calls
// an initializer and checks that it scrubs envp and hands all five arguments on unchanged.
describe("the Mach-O initializer wrapper, run", () => {
  const harness = join(import.meta.dir, "../../scripts/release/env-scrub/macho-init-harness.c");
  const cases = [
    { arch: "x86_64" as const, cc: "/usr/bin/gcc", run: [] as string[] },
    { arch: "aarch64" as const, cc: "/usr/bin/aarch64-linux-gnu-gcc", run: [QEMU, "-L", ARM64_SYSROOT] },
  ];
  for (const { arch, cc, run } of cases) {
    const native = arch === "x86_64" ? canRunLinuxX64 : process.arch === "arm64";
    const runnable = existsSync(cc) && (native || (run.length > 0 && canEmulateArm64));
    test.skipIf(!runnable && !REQUIRED_IN_CI)(
      `${arch}: scrubs envp and passes argc, argv, envp, apple, vars through`,
      () => {
        if (arch === "aarch64") {
          requireTool("aarch64-linux-gnu-gcc");
          requireFile("/usr/aarch64-linux-gnu/include/bits/libc-header-start.h");
          if (!native) requireTool("qemu-aarch64");
          if (!native) requireFile("/usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1");
        } else {
          requireTool("gcc");
          requireFile("/usr/include/stdio.h");
        }
        const blob = ENV_SCRUB_BLOBS[arch];
        const blobPath = join(work, `${arch}.bin`);
        writeFileSync(blobPath, Buffer.from(blob.hex, "hex"));
        const binary = join(work, `harness-${arch}`);
        const compile = Bun.spawnSync([cc, "-O1", "-o", binary, harness], { stderr: "pipe" });
        expect(compile.exitCode, compile.stderr.toString()).toBe(0);
        const result = Bun.spawnSync(
          [...(native ? [] : run), binary, blobPath, String(blob.machoInit), String(blob.machoJump)],
          {
            stdout: "pipe",
            stderr: "pipe",
          },
        );
        expect(result.stdout.toString()).toBe(
          "OK argc=1 envp=[SENTRY_DSN=keep,SUDO_GID=7,(nil)] vars=0x1234\n",
        );
        expect(result.exitCode).toBe(0);
      },
    );
  }
});

describe("the patch, on the bytes of the official runtimes", () => {
  for (const name of ["linux-x64", "linux-arm64"]) {
    test(`${name}: e_entry runs the scrubber from an extended executable segment, then _start`, () => {
      const bytes = new Uint8Array(readFileSync(officialRuntime(target(name)).path));
      expect(inspectHardening(bytes)[0]!.hooked).toBe(false);
      const before = new Elf64(bytes.slice());
      const start = before.entry;
      const report = hardenRuntime(bytes);
      const elf = new Elf64(bytes);
      expect(report.originalTarget).toBe(start);
      expect(elf.sections().find((section) => section.name === ".text")!.addr).toBe(start);
      const text = elf.programHeaders().find((h) => h.type === PT_LOAD && h.flags & PF_X)!;
      expect(text.vaddr).toBe(report.stubAddress);
      expect(elf.entry).toBeGreaterThanOrEqual(text.vaddr);
      expect(text.vaddr % text.align).toBe(text.offset % text.align);
      const proof = inspectHardening(bytes)[0]!;
      expect(proof).toMatchObject({
        hooked: true,
        allowlist: ["SENTRY_DSN", "CIRRUS_SENTRY_TAGS", "SUDO_UID", "SUDO_GID"],
      });
      expect(() => hardenRuntime(bytes)).toThrow(); // never twice
    });
  }

  for (const name of ["darwin-arm64", "darwin-x64"]) {
    test(`${name}: __init_offsets[0] runs the scrubber at the end of __TEXT, then the original initializer`, () => {
      const bytes = new Uint8Array(readFileSync(officialRuntime(target(name)).path));
      expect(inspectHardening(bytes)[0]!.hooked).toBe(false);
      const init = new MachO(bytes)
        .segments()
        .flatMap((segment) => segment.sections)
        .find((section) => (section.flags & SECTION_TYPE) === S_INIT_FUNC_OFFSETS)!;
      const original = new DataView(bytes.buffer).getUint32(init.offset, true);
      const report = hardenRuntime(bytes);
      expect(report.originalTarget).toBe(original);
      const proof = inspectHardening(bytes)[0]!;
      expect(proof.hooked).toBe(true);
      expect(proof.continuesTo).toBe(`the original initializer at image offset 0x${original.toString(16)}`);
      const text = new MachO(bytes).segment("__TEXT")!;
      expect(report.stubFileOffset).toBeGreaterThan(Math.max(...text.sections.map((s) => s.offset + s.size)));
      expect(report.stubFileOffset + 300).toBeLessThan(text.filesize);
    });
  }

  test("the proof fails on a tampered scrubber or a redirected entry point", () => {
    const bytes = new Uint8Array(readFileSync(officialRuntime(target("linux-x64")).path));
    const report = hardenRuntime(bytes);
    const allowlistByte = bytes.slice();
    allowlistByte[report.stubFileOffset + 0x96] ^= 0x20; // "SENTRY_DSN" -> "SeNTRY_DSN"
    expect(inspectHardening(allowlistByte)[0]).toMatchObject({ hooked: false });
    const redirected = bytes.slice();
    new Elf64(redirected).entry = report.originalTarget;
    expect(inspectHardening(redirected)[0]!.problems.join()).toContain("does not run the scrubber");
  });
});
