// Every C file softnet compiles at run time, compiled by softnet's own code (the same source, flags
// and symbols as in production) and executed, on the linux-aarch64 Bun. Run by test/arm64/arm64.test.ts
// under qemu-user (or natively on an arm64 host); not a *.test.ts file, so the x86-64 run skips it.
//
// bun:ffi's cc() is wrapped (mock.module) before softnet's modules are loaded, so every compile the
// production code makes is recorded with its source text, flags and symbols. Then:
// - each src/**/*.c must have been compiled by the exercises below: a new run-time C file fails
//   here until it has an exercise (and a C file under src/ that nothing compiles fails too);
// - each exercise calls the compiled functions for real: a reactor thread sees an fd become ready
//   and stops, a block's invoke runs on a thread of its own;
// - each compiled source is compiled once more with the same flags, between two marker functions,
//   and the machine code between them is disassembled: no instruction may touch x18 (x18.ts).
// - bun:ffi's dlopen is wrapped too: every symbols table softnet binds (and every dlopen/cc line in
//   src/ must have been seen) gives the signatures whose per-symbol trampolines, the C Bun compiles
//   with TinyCC to call each bound function, are checked the same way.

import * as ffi from "bun:ffi";
import { dlopen, FFIType, type Pointer, toArrayBuffer } from "bun:ffi";
import { afterAll, describe, expect, mock, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { bunCommand } from "../support/emulation.ts";
import { branchesOutside, disassembleAarch64, X18, x18Uses } from "./x18.ts";

const REPO = join(import.meta.dir, "../..");

interface Compile {
  source: string;
  flags: string[];
  symbols: Record<string, ffi.FFIFunction>;
}
const compiles: Compile[] = [];

/** A symbols table softnet gave bun:ffi (dlopen or cc), and the src/ line that gave it. */
interface Binding {
  site: string;
  symbols: Record<string, ffi.FFIFunction>;
}
const bindings: Binding[] = [];

/** "src/…/file.ts:line" of the innermost stack frame in src/, where a dlopen or cc call is. */
function callSite(): string {
  const frame = new Error().stack?.split("\n").find((line) => line.includes(`${REPO}/src/`));
  const match = frame === undefined ? null : /\((.*):(\d+):\d+\)$|at (.*):(\d+):\d+$/.exec(frame.trim());
  if (match === null) return `unknown (${frame})`;
  return `${relative(REPO, match[1] ?? match[3]!)}:${match[2] ?? match[4]}`;
}

/** macOS frameworks (CoreFoundation, SystemConfiguration): absent here; only their tables are wanted. */
const MACOS_FRAMEWORKS = "/System/Library/";

const realCc = ffi.cc;
const realDlopen = ffi.dlopen;
mock.module("bun:ffi", () => ({
  ...ffi,
  dlopen: (path: Parameters<typeof ffi.dlopen>[0], symbols: Record<string, ffi.FFIFunction>) => {
    bindings.push({ site: callSite(), symbols });
    if (String(path).startsWith(MACOS_FRAMEWORKS)) return { symbols: {}, close() {} };
    return realDlopen(path, symbols);
  },
  cc: (options: Parameters<typeof ffi.cc>[0]) => {
    bindings.push({ site: callSite(), symbols: options.symbols as Record<string, ffi.FFIFunction> });
    const paths = Array.isArray(options.source) ? options.source : [options.source];
    compiles.push({
      // Read now: production passes a memfd or an unlinked file that is closed right after.
      source: paths.map((path) => readFileSync(String(path), "utf8")).join("\n"),
      flags: [options.flags ?? []].flat().map(String),
      symbols: options.symbols as Record<string, ffi.FFIFunction>,
    });
    return realCc(options);
  },
}));

// Loaded only now, so that they bind the wrapped cc.
const { EPOLLIN, Reactor } = await import("../../src/platform/reactor.ts");
const { epollReactorBackend } = await import("../../src/platform/linux/epoll-reactor.ts");
const { pollReactorBackend } = await import("../../src/platform/darwin/poll-reactor.ts");
const { BlockKind, VmnetBlocks } = await import("../../src/platform/darwin/blocks.ts");
const { address0, openDarwinSystem } = await import("../../src/platform/darwin/system.ts");
const { EFD_CLOEXEC, EFD_NONBLOCK, libc } = await import("../../src/platform/linux/libc.ts");
const { openBootpdSymbols } = await import("../../src/platform/darwin/bootpd.ts");
const { macosProductVersion, openBootpdReadSymbols } = await import(
  "../../src/platform/darwin/doctor-probes.ts"
);
const { buildDouble, doubleLibraries } = await import("../darwin/support.ts");
type ReactorBackend = import("../../src/platform/reactor.ts").ReactorBackend;

const work = mkdtempSync(join(tmpdir(), "softnet-arm64-native-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function runTimeCFiles(directory = join(REPO, "src")): string[] {
  return readdirSync(directory, { withFileTypes: true }).flatMap((entry) => {
    const path = join(directory, entry.name);
    if (entry.isDirectory()) return runTimeCFiles(path);
    return entry.name.endsWith(".c") ? [path] : [];
  });
}

async function waitFor(condition: () => boolean, what: string): Promise<void> {
  const deadline = performance.now() + 10_000;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`${what}: not within 10 s`);
    await Bun.sleep(5);
  }
}

/** A reactor thread sleeps until an eventfd becomes readable, calls back, re-arms, and stops. */
async function exerciseReactor(backend: ReactorBackend): Promise<void> {
  const eventFd = libc.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  expect(eventFd).toBeGreaterThanOrEqual(0);
  const reactor = new Reactor(backend);
  const counter = new BigUint64Array(1);
  const seen: Array<{ events: number; value: bigint }> = [];
  try {
    reactor.watch(eventFd, (events) => {
      expect(libc.read(eventFd, counter, 8)).toBe(8);
      seen.push({ events, value: counter[0]! });
      return false;
    });
    await Bun.sleep(50);
    expect(seen).toEqual([]); // asleep while nothing is ready
    for (const value of [3n, 5n]) {
      counter[0] = value;
      expect(libc.write(eventFd, counter, 8)).toBe(8);
      await waitFor(() => seen.length > 0 && seen.at(-1)!.value === value, `readiness for ${value}`);
    }
    expect(seen).toEqual([
      { events: EPOLLIN, value: 3n },
      { events: EPOLLIN, value: 5n },
    ]);
  } finally {
    reactor.close();
    libc.close(eventFd);
  }
  expect(reactor.closed).toBe(true);
}

// pthread_create through glibc, to run a block's invoke on a thread that is neither JavaScript's nor
// one Bun knows about, as vmnet's GCD threads are.
const threads = dlopen("libc.so.6", {
  pthread_create: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  pthread_join: { args: [FFIType.u64, FFIType.ptr], returns: FFIType.i32 },
}).symbols;

/**
 * Calls invoke(block) on a new thread and waits for it. A thread start routine receives one
 * argument, the block, in x0; the invoke functions used here (event, stop) take further arguments
 * they store or ignore, so whatever x1/x2 hold is harmless.
 */
function invokeOnForeignThread(block: Pointer): void {
  const invoke = ffi.read.ptr(block, 16); // Block ABI: isa, flags, reserved, invoke
  const thread = new BigUint64Array(1);
  expect(threads.pthread_create(thread, null, invoke as Pointer, block)).toBe(0);
  expect(threads.pthread_join(thread[0]!, null)).toBe(0);
}

function exerciseBlocks(): void {
  const system = openDarwinSystem(doubleLibraries(buildDouble()));
  const { dispatch, kernel } = system;
  const fds = new Int32Array(2);
  expect(system.libc.socketpair(kernel.AF_UNIX, kernel.SOCK_STREAM | kernel.SOCK_CLOEXEC, 0, fds)).toBe(0);
  const semaphores = [0, 1, 2].map(() => address0(dispatch.dispatch_semaphore_create(0)) as Pointer);
  const blocks = VmnetBlocks.allocate(system, {
    startSemaphore: semaphores[0]!,
    stopSemaphore: semaphores[1]!,
    forwardSemaphore: semaphores[2]!,
    wakeFd: fds[1]!,
    wakeFlags: kernel.MSG_DONTWAIT | kernel.MSG_NOSIGNAL,
  });
  try {
    invokeOnForeignThread(blocks.block(BlockKind.EVENT));
    const byte = new Uint8Array(8);
    expect(system.libc.recv(fds[0]!, byte, byte.length, kernel.MSG_DONTWAIT)).toBe(1);
    invokeOnForeignThread(blocks.block(BlockKind.STOP));
    // The JavaScript side waits on the semaphore the foreign thread signalled, as vmnet.ts does.
    expect(dispatch.dispatch_semaphore_wait(semaphores[1]!, 0n)).toBe(0);
    expect(blocks.completions()).toMatchObject({ events: 1, wakeFailures: 0, stop: 1, start: 0, forward: 0 });
  } finally {
    blocks.free();
    for (const semaphore of semaphores) dispatch.dispatch_release(semaphore);
    system.libc.close(fds[0]!);
    system.libc.close(fds[1]!);
  }
}

/**
 * The bindings that only macOS makes (CoreFoundation and SystemConfiguration at their framework
 * paths, sysctlbyname in libSystem): called here only so that their symbols tables are recorded.
 */
function recordMacosOnlyBindings(): void {
  const system = openDarwinSystem(doubleLibraries(buildDouble()));
  for (const bind of [
    () => openBootpdSymbols(system),
    () => openBootpdReadSymbols(),
    () => macosProductVersion({ ...system, kernel: { ...system.kernel, name: "darwin" } } as typeof system),
  ]) {
    try {
      bind();
    } catch {
      // The table is recorded before anything is looked up; what follows needs a Mac.
    }
  }
}

/** Each line of src/ (not a comment) that calls bun:ffi's dlopen or cc: "src/…/file.ts:line". */
function bindingSites(directory = join(REPO, "src")): string[] {
  return readdirSync(directory, { withFileTypes: true }).flatMap((entry) => {
    const path = join(directory, entry.name);
    if (entry.isDirectory()) return bindingSites(path);
    if (!entry.name.endsWith(".ts")) return [];
    return readFileSync(path, "utf8")
      .split("\n")
      .flatMap((line, index) =>
        /^\s*(\/\/|\*|\/\*)/.test(line) || !/(?<![.\w`"'])(dlopen|cc)\(/.test(line)
          ? []
          : [`${relative(REPO, path)}:${index + 1}`],
      );
  });
}

let markedFiles = 0;
const BEGIN = "softnet_arm64_code_begin";
const END = "softnet_arm64_code_end";

/**
 * The machine code TinyCC generates for `source` with `flags`: compiled between two marker
 * functions (TinyCC emits functions in source order, in one pass), and read from memory between
 * their addresses. Every exported symbol must lie in that range.
 */
function generatedCode(
  compile: Compile,
  after = "",
): {
  code: Uint8Array;
  exported: Record<string, number>;
  begin: number;
} {
  const path = join(work, `marked-${markedFiles++}.c`);
  writeFileSync(
    path,
    `void *${BEGIN}(void) { return (void *)${BEGIN}; }\n${compile.source}\nvoid *${END}(void) { return (void *)${END}; }\n${after}`,
  );
  const marker = { args: [], returns: FFIType.ptr } as const;
  const compiled = realCc({
    source: path,
    flags: compile.flags,
    symbols: { ...compile.symbols, [BEGIN]: marker, [END]: marker },
  }).symbols as unknown as Record<string, ((...args: unknown[]) => unknown) & { ptr: number }>;
  const begin = Number(compiled[BEGIN]!());
  const end = Number(compiled[END]!());
  expect(end).toBeGreaterThan(begin);
  const exported = Object.fromEntries(
    Object.keys(compile.symbols).map((name) => [name, compiled[name]!.ptr]),
  );
  return { code: new Uint8Array(toArrayBuffer(begin as Pointer, 0, end - begin)).slice(), exported, begin };
}

test("this file runs on arm64, and so does a Bun the tests start (bunCommand)", () => {
  expect(process.arch).toBe("arm64");
  const child = Bun.spawnSync([...bunCommand(), "-e", "console.log(process.arch)"], { stdout: "pipe" });
  expect(child.stdout.toString().trim()).toBe("arm64");
});

describe("every run-time C file, compiled by softnet's own code and executed on arm64", () => {
  test("epoll-reactor.c: the epoll reactor wakes on an eventfd and stops", async () => {
    await exerciseReactor(epollReactorBackend());
  });

  test("poll-reactor.c: the poll reactor (macOS runtime, through the darwin module's C library) wakes and stops", async () => {
    await exerciseReactor(pollReactorBackend(openDarwinSystem(doubleLibraries(buildDouble()))));
  });

  test("blocks.c: the event and stop blocks run on a foreign thread, wake the socket and signal", () => {
    exerciseBlocks();
  });

  test("no C file under src/ is left out: each was compiled by the exercises above", () => {
    const compiledSources = new Set(compiles.map((compile) => compile.source));
    const files = runTimeCFiles();
    expect(files.length).toBeGreaterThan(0);
    const notCompiled = files
      .filter((file) => !compiledSources.has(readFileSync(file, "utf8")))
      .map((file) => relative(REPO, file));
    expect(notCompiled).toEqual([]);
    // And nothing else was compiled: every compile is one of those files, with explicit flags.
    const known = new Set(files.map((file) => readFileSync(file, "utf8")));
    expect(compiles.filter((compile) => !known.has(compile.source)).length).toBe(0);
    for (const compile of compiles) expect(compile.flags).toEqual(["-std=c11", "-nostdlib"]);
  });
});

describe("no code TinyCC generates for them on arm64 uses x18 (Apple's reserved platform register)", () => {
  for (const file of runTimeCFiles()) {
    test(relative(REPO, file), () => {
      const source = readFileSync(file, "utf8");
      const compile = compiles.find((candidate) => candidate.source === source);
      if (compile === undefined) throw new Error(`${relative(REPO, file)} was not compiled by any exercise`);
      const { code, exported, begin } = generatedCode(compile);
      for (const [name, address] of Object.entries(exported)) {
        expect({ name, inside: address > begin && address < begin + code.length }).toEqual({
          name,
          inside: true,
        });
      }
      expect(branchesOutside(code)).toEqual([]);
      expect(x18Uses(code)).toEqual([]);
    });
  }

  test("nor does the trampoline Bun compiles for the reactor's threadsafe JSCallback, which the reactor thread calls", () => {
    // Bun compiles it with TinyCC from C it generates (oven-sh/bun src/bun.js/api/ffi,
    // Function.compileCallback); it is the code the reactor thread runs on macOS. The same callback
    // type as src/platform/reactor.ts. The trampoline ends at its one `ret`.
    const callback = new ffi.JSCallback(() => {}, {
      args: [FFIType.i32, FFIType.u32],
      returns: FFIType.void,
      threadsafe: true,
    });
    try {
      const words = new Uint32Array(toArrayBuffer(callback.ptr as Pointer, 0, 4096).slice(0));
      const ret = words.indexOf(0xd65f03c0);
      expect(ret).toBeGreaterThan(0);
      const code = new Uint8Array(words.buffer.slice(0, (ret + 1) * 4));
      expect(x18Uses(code)).toEqual([]);
    } finally {
      callback.close();
    }
  });

  test("the check sees x18 where TinyCC does allocate it (an expression keeping 22 values alive)", () => {
    let expression = "p[21]";
    for (let i = 20; i >= 0; i--) expression = `p[${i}] * (${expression})`;
    const compile: Compile = {
      source: `long pressure(const long *p) { return ${expression}; }\n`,
      flags: ["-std=c11", "-nostdlib"],
      symbols: { pressure: { args: [FFIType.ptr], returns: FFIType.i64 } },
    };
    compiles.push(compile);
    const uses = x18Uses(generatedCode(compile).code);
    expect(uses.length).toBeGreaterThan(0);
    expect(uses.every((line) => X18.test(line))).toBe(true);
  });
});

/**
 * Bun calls every function bound through dlopen or cc (FFI) through a trampoline it generates in C
 * per symbol and compiles with TinyCC: FFI.h followed by a `JSFunctionCall` that converts the
 * arguments and calls the symbol (oven-sh/bun src/bun.js/api/ffi/function.zig, Function.compile
 * and printSourceCode; options "-std=c11 -nostdlib -Wl,--export-all-symbols"; FFI.h's macros
 * Bun_FFI_PointerOffsetToArgumentsList, JSCell__offsetOfType, … come from CompilerRT.define, which
 * cc() applies too, with the running Bun's values). bun:ffi's viewSource returns that C for a
 * symbols table. The trampoline's code depends on the signature only, so each distinct signature
 * softnet binds is compiled once, through cc() between the markers, and checked like run-time C.
 * The symbol it calls is defined after the end marker; the slow conversions Bun provides
 * (JSVALUE_TO_SLOT_SLOW, …: Bun's own code, built by clang for Apple's ABI) are reached through
 * the PLT entries TinyCC makes for symbols given by address; both are the only branches allowed out.
 */
const TRAMPOLINE_TARGET = "softnet_trampoline_target";
const TRAMPOLINE_FLAGS = ["-std=c11", "-nostdlib", "-Wl,--export-all-symbols"];

function signatureOf(fn: ffi.FFIFunction): string {
  return JSON.stringify({ args: (fn.args ?? []).map(String), returns: String(fn.returns ?? "void") });
}

/** The address a `b`/`bl` line from branchesOutside goes to. */
function branchTarget(line: string, begin: number): number {
  const [, offset, immediate] = /^\+([0-9a-f]+): bl?\s+#(-?(?:0x[0-9a-f]+|\d+))$/.exec(line)!;
  return begin + Number.parseInt(offset!, 16) + Number(immediate);
}

/** A PLT entry: loads an address into x16/x17 and jumps there (no x18). */
function isPltEntry(address: number): boolean {
  const instructions = disassembleAarch64(new Uint8Array(toArrayBuffer(address as Pointer, 0, 16)).slice());
  return instructions.at(-1) === "br\tx17" && !instructions.some((line) => X18.test(line));
}

/** `extraC` is added to Bun's source, inside the checked range: only the self-test uses it. */
function checkTrampoline(
  symbol: ffi.FFIFunction,
  extraC = "",
): { x18: string[]; unexplainedBranches: string[] } {
  const source = ffi.viewSource({ [TRAMPOLINE_TARGET]: symbol }, false)[0]! + extraC;
  // "/* --- The Function To Call */" is followed by the symbol's prototype: made a definition.
  const prototype = source
    .split("\n")
    .find((line) => line.includes(` ${TRAMPOLINE_TARGET}(`) && line.endsWith(");"));
  if (prototype === undefined) throw new Error(`no prototype of ${TRAMPOLINE_TARGET} in:\n${source}`);
  const { code, exported, begin } = generatedCode(
    {
      source,
      flags: TRAMPOLINE_FLAGS,
      symbols: {
        JSFunctionCall: { args: [FFIType.ptr, FFIType.ptr], returns: FFIType.i64 },
        [TRAMPOLINE_TARGET]: symbol,
      },
    },
    `${prototype.slice(0, -1)} { ${/^void\s/.test(prototype) ? "" : "return 0;"} }\n`,
  );
  const inside = exported.JSFunctionCall! > begin && exported.JSFunctionCall! < begin + code.length;
  if (!inside) throw new Error("JSFunctionCall is not between the markers");
  const unexplainedBranches = branchesOutside(code).filter((line) => {
    const target = branchTarget(line, begin);
    return target !== exported[TRAMPOLINE_TARGET] && !isPltEntry(target);
  });
  return { x18: x18Uses(code), unexplainedBranches };
}

describe("nor does the trampoline Bun compiles for each function softnet binds (dlopen, cc)", () => {
  test("every dlopen and cc call in src/ was recorded, macOS-only ones included", () => {
    recordMacosOnlyBindings();
    const sites = bindingSites();
    expect(sites.length).toBeGreaterThan(0);
    const recorded = new Set(bindings.map((binding) => binding.site));
    expect(sites.filter((site) => !recorded.has(site))).toEqual([]);
  });

  test("no signature's trampoline uses x18 or branches anywhere but to the symbol and Bun's helpers", () => {
    const signatures = new Map<string, ffi.FFIFunction>();
    for (const { symbols } of bindings) {
      for (const fn of Object.values(symbols)) signatures.set(signatureOf(fn), fn);
    }
    expect(signatures.size).toBeGreaterThan(10);
    const findings = [...signatures].flatMap(([signature, fn]) => {
      const { x18, unexplainedBranches } = checkTrampoline(fn);
      return x18.length === 0 && unexplainedBranches.length === 0
        ? []
        : [{ signature, x18, unexplainedBranches }];
    });
    expect(findings).toEqual([]);
  });

  test("the check sees x18 in a trampoline's code (Bun's source plus a function keeping 22 values alive)", () => {
    // Bun's trampolines for softnet's signatures do not reach x18 (30 pointer arguments do not
    // either: TinyCC passes what does not fit in x0-x7 on the stack), so the pressure comes from
    // C added to the trampoline's source, compiled and read back by the same steps.
    let expression = "p[21]";
    for (let i = 20; i >= 0; i--) expression = `p[${i}] * (${expression})`;
    const pressure = `\nlong softnet_pressure(const long *p) { return ${expression}; }\n`;
    const symbol = { args: [FFIType.ptr], returns: FFIType.i32 };
    expect(checkTrampoline(symbol).x18).toEqual([]);
    expect(checkTrampoline(symbol, pressure).x18.length).toBeGreaterThan(0);
  });
});
