// softnet's native code on arm64, in every CI run. Tart runs only on Apple Silicon, so the darwin
// runtime matters most on arm64, and CI has no Mac and no arm64 machine: this file runs suites with
// the linux-aarch64 Bun of the pinned version (the @oven/bun-linux-aarch64 package package-lock.json
// pins, checked against its sha512 by scripts/release/runtimes.ts) under qemu-user, Debian's
// qemu-aarch64 with the AArch64 C library of libc6-arm64-cross. On an arm64 host it runs them
// natively with that same Bun.
//
// What runs there, each file in its own `bun test`:
// - test/arm64/native-code.arm64.ts: every C file under src/ compiled by softnet's own code (same
//   source, flags, symbols) and executed, and its TinyCC machine code checked for x18, as is the
//   trampoline Bun compiles with TinyCC for each signature softnet binds through dlopen or cc;
// - every test/darwin/*.test.ts: the blocks called from the double's threads, the poll reactor, the
//   vmnet link against the double cross-compiled for AArch64, and runOnDarwin end to end (e2e.test.ts:
//   a real guest, dnsmasq, tcpdump; softnet itself runs on the AArch64 Bun);
// - every test/platform/*.test.ts except the ones in NOT_UNDER_QEMU, which qemu-user cannot carry.
// The tests run inside network namespaces as on x86-64: qemu-user emulates the CPU and hands system
// calls to the host kernel, so netlink and TAP file descriptors are the host's.
import { describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { officialRuntime, TARGETS } from "../../scripts/release/runtimes.ts";
import { EMULATOR_VARIABLE } from "../support/emulation.ts";
import { requireFile, requireTool } from "../support/tools.ts";
import { branchesOutside, instructionBytes, x18Uses } from "./x18.ts";

const REPO = join(import.meta.dir, "../..");

/**
 * Test files that cannot run under qemu-user 7.2 (Debian 12), measured with `qemu-aarch64 -d unimp`:
 * an ioctl qemu-user has no translation for fails with ENOSYS before the kernel sees it.
 */
export const NOT_UNDER_QEMU: Record<string, string> = {
  "test/platform/tap.test.ts":
    "the Linux runtime adds its TAP to the bridge with ioctl(SIOCBRADDIF), which qemu-user does not implement (Unsupported ioctl: cmd=0x89a2)",
  "test/platform/peer-watch.test.ts":
    "the Linux runtime names the VM socket's network namespace with ioctl(SIOCGSKNS), which qemu-user does not implement (Unsupported ioctl: cmd=0x894c)",
};

/** Single tests left out of a file that otherwise runs under qemu-user. */
export const LEFT_OUT: Record<string, { title: string; why: string }> = {
  "test/platform/reactor.test.ts": {
    title: "stays asleep while idle",
    why: "it bounds the whole process's CPU time over 300 ms; under qemu-user that time includes translating whatever JavaScriptCore compiles in the background, not the reactor (measured: 1 run in 4 over the bound). The arm64 reactors are shown asleep by native-code.arm64.ts",
  },
};

function testFiles(directory: string): string[] {
  return readdirSync(join(REPO, directory))
    .filter((name) => name.endsWith(".test.ts"))
    .sort()
    .map((name) => `${directory}/${name}`);
}

const SUITES = [
  "test/arm64/native-code.arm64.ts",
  ...testFiles("test/darwin"),
  ...testFiles("test/platform").filter((file) => NOT_UNDER_QEMU[file] === undefined),
];

const SYSROOT = "/usr/aarch64-linux-gnu";

/** The command line that runs the linux-aarch64 Bun here, and the emulator part of it. */
function arm64Bun(): { emulator: string[]; bun: string } {
  const target = TARGETS.find((candidate) => candidate.name === "linux-arm64")!;
  const bun = officialRuntime(target).path;
  if (process.arch === "arm64") return { emulator: [], bun };
  requireFile(`${SYSROOT}/lib/ld-linux-aarch64.so.1`);
  return { emulator: [requireTool("qemu-aarch64"), "-L", SYSROOT], bun };
}

describe("the x18 check itself", () => {
  test("finds x18 and w18, and nothing in code without them", () => {
    // mov x18, x0; ldr w18, [x1]; mov x17, x0; ret
    expect(x18Uses(instructionBytes(0xaa0003f2, 0xb9400032, 0xaa0003f1, 0xd65f03c0))).toEqual([
      "+0000: mov\tx18, x0",
      "+0004: ldr\tw18, [x1]",
    ]);
    expect(x18Uses(instructionBytes(0xaa0003f1, 0xd65f03c0))).toEqual([]);
  });

  test("refuses bytes that are not all instructions, and calls out of the checked range", () => {
    expect(() => x18Uses(new Uint8Array([0xc0, 0x03, 0x5f]))).toThrow("4-byte instructions");
    // bl #-52 leaves the range; bl #4 lands on the ret after it.
    expect(branchesOutside(instructionBytes(0x97fffff3, 0x94000001, 0xd65f03c0))).toEqual([
      "+0000: bl\t#-52",
    ]);
  });
});

describe("on the linux-aarch64 Bun (qemu-user on x86-64)", () => {
  test("what is left out names files and tests that exist", () => {
    for (const file of Object.keys(NOT_UNDER_QEMU))
      expect({ file, exists: existsSync(join(REPO, file)) }).toEqual({ file, exists: true });
    for (const [file, { title }] of Object.entries(LEFT_OUT)) {
      expect(SUITES).toContain(file);
      expect(readFileSync(join(REPO, file), "utf8")).toContain(`"${title}`);
    }
  });

  for (const file of SUITES) {
    test(file, () => {
      const { emulator, bun } = arm64Bun();
      const leftOut = LEFT_OUT[file];
      // A test name pattern that matches every test but the one left out.
      const filter = leftOut === undefined ? [] : ["-t", `^(?!.*${leftOut.title})`];
      const run = Bun.spawnSync([...emulator, bun, "test", "--timeout", "60000", ...filter, `./${file}`], {
        cwd: REPO,
        env: { ...process.env, [EMULATOR_VARIABLE]: emulator.length > 0 ? JSON.stringify(emulator) : "" },
        stdout: "inherit",
        stderr: "inherit",
      });
      expect(run.exitCode).toBe(0);
    }, 300_000);
  }
});
