// The hand-built blocks (src/platform/darwin/blocks.ts + blocks.c): their memory layout per the
// Block ABI, what each native invoke does, how the C source reaches TinyCC (also inside a compiled
// binary), and, against the vmnet double, that a block which keeps pointers into vmnet's
// interface_param instead of copying is caught.

import { CFunction, cc, dlopen, FFIType, type Pointer, read } from "bun:ffi";
import { afterAll, describe, expect, test } from "bun:test";
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  BLOCK_IS_GLOBAL,
  BLOCK_LITERAL_BYTES,
  BlockKind,
  VmnetBlocks,
} from "../../src/platform/darwin/blocks.ts";
import {
  address0,
  type DarwinSystem,
  GLOBAL_BLOCK_CLASS,
  openDarwinSystem,
  sourceFileCalls,
} from "../../src/platform/darwin/system.ts";
import { lastErrno, libc, O_RDWR } from "../../src/platform/linux/libc.ts";
import {
  ALL_SEALS,
  F_ADD_SEALS,
  F_GET_SEALS,
  RUNTIME_C_FLAGS,
  sealText,
} from "../../src/platform/runtime-c.ts";
import { bunCommand, runnable } from "../support/emulation.ts";
import {
  buildDouble,
  doubleControl,
  doubleLibraries,
  inPrivateNetworkNamespace,
  makeBridge,
  outsideNamespace,
  REPO,
} from "./support.ts";

const { ptr, u32, i32 } = FFIType;

function semaphore(system: DarwinSystem): Pointer {
  return address0(system.dispatch.dispatch_semaphore_create(0)) as Pointer;
}

/** A stream socketpair through the module's own libc binding: [read end, write end]. */
function socketPair(system: DarwinSystem): [number, number] {
  const fds = new Int32Array(2);
  const { kernel } = system;
  expect(system.libc.socketpair(kernel.AF_UNIX, kernel.SOCK_STREAM | kernel.SOCK_CLOEXEC, 0, fds)).toBe(0);
  return [fds[0]!, fds[1]!];
}

if (outsideNamespace()) {
  const path = buildDouble();
  const system = openDarwinSystem(doubleLibraries(path));
  const xpc = dlopen(path, {
    // void xpc_dictionary_set_string(xpc_object_t dictionary, const char *key, const char *string);
    xpc_dictionary_set_string: { args: [ptr, ptr, ptr], returns: FFIType.void },
  }).symbols;
  const key = (name: Parameters<DarwinSystem["vmnetKey"]>[0]) => system.vmnetKey(name) as Pointer;

  function allocate(wakeFd = -1) {
    const semaphores = { start: semaphore(system), stop: semaphore(system), forward: semaphore(system) };
    const blocks = VmnetBlocks.allocate(system, {
      startSemaphore: semaphores.start,
      stopSemaphore: semaphores.stop,
      forwardSemaphore: semaphores.forward,
      wakeFd,
      wakeFlags: system.kernel.MSG_DONTWAIT | system.kernel.MSG_NOSIGNAL,
    });
    const release = () => {
      blocks.free();
      for (const s of Object.values(semaphores)) system.dispatch.dispatch_release(s);
    };
    return { blocks, semaphores, release };
  }

  const invokeOf = (block: Pointer) => read.ptr(block, 16);
  const signalled = (s: Pointer) => system.dispatch.dispatch_semaphore_wait(s, 0n) === 0;

  describe("the darwin module's ground rules", () => {
    test("no JavaScript callback exists for vmnet's threads, and nothing binds glibc by soname", () => {
      const directory = join(REPO, "src/platform/darwin");
      for (const name of readdirSync(directory).filter((file) => file.endsWith(".ts"))) {
        const source = readFileSync(join(directory, name), "utf8");
        expect({ name, jsCallback: /new JSCallback|import \{[^}]*\bJSCallback\b/.test(source) }).toEqual({
          name,
          jsCallback: false,
        });
        // ../linux/libc.ts dlopens libc.so.6 on import, which does not exist on macOS.
        expect({ name, importsLinuxLibc: /from "\.\.\/linux\/libc\.ts"/.test(source) }).toEqual({
          name,
          importsLinuxLibc: false,
        });
      }
    });
  });

  describe("hand-built global blocks", () => {
    test("every block is a 40-byte global block: isa = &_NSConcreteGlobalBlock, BLOCK_IS_GLOBAL, descriptor {0, 40}", () => {
      const { blocks, release } = allocate();
      try {
        const isa = system.dataAddress("dispatch", GLOBAL_BLOCK_CLASS);
        expect(isa).not.toBe(0);
        const invokes = new Set<number>();
        let descriptor = 0;
        for (const kind of Object.values(BlockKind)) {
          const block = blocks.block(kind);
          expect(read.ptr(block, 0)).toBe(isa); // isa
          expect(read.i32(block, 8)).toBe(BLOCK_IS_GLOBAL); // flags
          expect(read.i32(block, 12)).toBe(0); // reserved
          invokes.add(invokeOf(block));
          descriptor = read.ptr(block, 24);
          expect(read.u64(descriptor as Pointer, 0)).toBe(0n); // reserved
          expect(read.u64(descriptor as Pointer, 8)).toBe(BigInt(BLOCK_LITERAL_BYTES)); // size
          expect(read.ptr(block, 32)).toBe(blocks.address); // the captured state pointer
        }
        expect(invokes.size).toBe(4);
        expect([...invokes].every((address) => address !== 0)).toBe(true);
        // The blocks lie inside the state allocation, which only free() releases.
        expect(blocks.block(BlockKind.START)).toBe(blocks.address);
      } finally {
        release();
      }
    });

    test("the start invoke copies the parameters and signals; missing keys read as 0, junk addresses as ''", () => {
      const { blocks, semaphores, release } = allocate();
      try {
        const start = blocks.block(BlockKind.START);
        const invoke = CFunction({
          ptr: invokeOf(start) as Pointer,
          args: [ptr, u32, ptr],
          returns: FFIType.void,
        });
        const param = address0(system.dispatch.xpc_dictionary_create(null, null, 0)) as Pointer;
        const text = (value: string) => Buffer.from(`${value}\0`);
        xpc.xpc_dictionary_set_string(param, key("vmnet_start_address_key"), text("192.168.64.1"));
        xpc.xpc_dictionary_set_string(param, key("vmnet_subnet_mask_key"), text("255.255.255.0.0.0.0.0"));
        system.dispatch.xpc_dictionary_set_uint64(param, key("vmnet_mtu_key"), 1500);
        system.dispatch.xpc_dictionary_set_uint64(param, key("vmnet_max_packet_size_key"), 1514);
        system.dispatch.xpc_dictionary_set_uint64(param, key("vmnet_read_max_packets_key"), 200);
        invoke(start, 1000, param);
        system.dispatch.xpc_release(param);
        expect(signalled(semaphores.start)).toBe(true);
        expect(blocks.startResult()).toEqual({
          status: 1000,
          startAddress: "192.168.64.1",
          subnetMask: "", // longer than any IPv4 address: refused, not truncated
          mtu: 1500,
          maxPacketSize: 1514,
          readMaxPackets: 200,
          writeMaxPackets: 0, // missing key: xpc returns 0, vmnet.ts falls back
        });
        invoke(start, 1005, null); // a failed start has no parameters
        expect(signalled(semaphores.start)).toBe(true);
        expect(blocks.startResult().status).toBe(1005);
        expect(blocks.completions().start).toBe(2);
      } finally {
        release();
      }
    });

    test("the stop and port-forward invokes store their status and signal their own semaphore", () => {
      const { blocks, semaphores, release } = allocate();
      try {
        const call = (kind: BlockKind, status: number) =>
          CFunction({
            ptr: invokeOf(blocks.block(kind)) as Pointer,
            args: [ptr, u32],
            returns: FFIType.void,
          })(blocks.block(kind), status);
        call(BlockKind.STOP, 1000);
        call(BlockKind.FORWARD, 1001);
        expect(signalled(semaphores.stop)).toBe(true);
        expect(signalled(semaphores.forward)).toBe(true);
        expect(signalled(semaphores.start)).toBe(false);
        expect(blocks.completions()).toMatchObject({
          stop: 1,
          stopStatus: 1000,
          forward: 1,
          forwardStatus: 1001,
        });
      } finally {
        release();
      }
    });

    test("the event invoke sends one byte without ever blocking, even when the socket is full", () => {
      const [readEnd, writeEnd] = socketPair(system);
      const { blocks, release } = allocate(writeEnd);
      try {
        const event = blocks.block(BlockKind.EVENT);
        const invoke = CFunction({
          ptr: invokeOf(event) as Pointer,
          args: [ptr, u32, ptr],
          returns: FFIType.void,
        });
        invoke(event, 1, null);
        const buffer = new Uint8Array(4096);
        expect(system.libc.recv(readEnd, buffer, buffer.length, system.kernel.MSG_DONTWAIT)).toBe(1);
        for (let i = 0; i < 5000; i++) invoke(event, 1, null); // far more than the socket holds
        const { events, wakeFailures } = blocks.completions();
        expect(events).toBe(5001);
        expect(wakeFailures).toBeGreaterThan(0); // EAGAIN, ignored: a wake-up is pending anyway
      } finally {
        release();
        system.libc.close(readEnd);
        system.libc.close(writeEnd);
      }
    });
  });

  describe("the C source reaches TinyCC through a descriptor nobody can write", () => {
    const source = "int answer(void) { return 42; }\n";
    const tempNames = () => readdirSync("/tmp").filter((name) => name.startsWith("softnet-source."));
    for (const strategy of ["memfd", "unlinked-temp-file"] as const) {
      test(`${strategy}: nameless, unwritable, readable through its descriptor, compiles`, () => {
        const before = tempNames();
        const file = sealText(sourceFileCalls(system), "a test file", source, strategy);
        try {
          expect(file.path).toBe(strategy === "memfd" ? `/proc/self/fd/${file.fd}` : `/dev/fd/${file.fd}`);
          expect(readFileSync(file.path, "utf8")).toBe(source);
          const target = readlinkSync(`/proc/self/fd/${file.fd}`);
          // The descriptor TinyCC gets is read-only: fdinfo's flags (octal) have no O_WRONLY/O_RDWR bit.
          const flags = Number.parseInt(
            /^flags:\s+(\d+)$/m.exec(readFileSync(`/proc/self/fdinfo/${file.fd}`, "utf8"))![1]!,
            8,
          );
          if (strategy === "memfd") {
            expect(target).toStartWith("/memfd:softnet-runtime.c");
            expect(libc.fcntl(file.fd, F_GET_SEALS, 0)).toBe(ALL_SEALS);
            // Even a descriptor opened for writing cannot change a byte, nor can the seals be lifted.
            const writable = libc.open(file.path, O_RDWR);
            expect(writable).toBeGreaterThanOrEqual(0);
            expect(libc.write(writable, Buffer.from("int evil;"), 9)).toBe(-1);
            expect(lastErrno()).toBe(1); // EPERM (fcntl(2): F_SEAL_WRITE)
            libc.close(writable);
            expect(libc.fcntl(file.fd, F_ADD_SEALS, 0)).toBe(-1);
          } else {
            expect(target).toMatch(/^\/tmp\/softnet-source\.\w{6} \(deleted\)$/);
            expect(statSync(file.path).mode & 0o777).toBe(0o444); // readable after the drop (runtime-c.ts)
            expect(statSync(file.path).nlink).toBe(0);
            expect(flags & 0o3).toBe(0); // O_RDONLY
          }
          expect(tempNames()).toEqual(before);
          const compiled = cc({
            source: file.path,
            flags: [...RUNTIME_C_FLAGS],
            symbols: { answer: { args: [], returns: i32 } },
          });
          expect(compiled.symbols.answer()).toBe(42);
        } finally {
          file.close();
        }
      });
    }

    const workDir = mkdtempSync(join(tmpdir(), "softnet-blocks-compiled-"));
    afterAll(() => rmSync(workDir, { recursive: true, force: true }));

    test("inside a compiled binary the embedded blocks.c compiles, and BUN_TCC_OPTIONS is ignored", () => {
      const entry = join(workDir, "entry.ts");
      const binary = join(workDir, "blocks-probe");
      writeFileSync(
        entry,
        `
import { VmnetBlocks } from ${JSON.stringify(join(REPO, "src/platform/darwin/blocks.ts"))};
import { openDarwinSystem } from ${JSON.stringify(join(REPO, "src/platform/darwin/system.ts"))};
const system = openDarwinSystem({ vmnet: process.argv[2], dispatch: process.argv[2], libc: "libc.so.6" });
const s = () => system.dispatch.dispatch_semaphore_create(0);
const blocks = VmnetBlocks.allocate(system, { startSemaphore: s(), stopSemaphore: s(), forwardSemaphore: s(), wakeFd: -1, wakeFlags: 0 });
console.log("completions " + JSON.stringify(blocks.completions()));
blocks.free();
`,
      );
      const build = Bun.spawnSync(
        [
          ...bunCommand(),
          "build",
          "--compile",
          "--no-compile-autoload-dotenv",
          "--no-compile-autoload-bunfig",
          entry,
          "--outfile",
          binary,
        ],
        { stdout: "pipe", stderr: "pipe" },
      );
      expect(build.exitCode).toBe(0);
      const run = Bun.spawnSync([...runnable(binary), path], {
        cwd: tmpdir(),
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin", BUN_TCC_OPTIONS: "-Dvmnet_state_init=renamed" },
        stdout: "pipe",
        stderr: "pipe",
      });
      expect(run.stderr.toString()).toBe("");
      expect(run.stdout.toString()).toContain('completions {"start":0,');
      expect(run.exitCode).toBe(0);
    }, 60_000);
  });
}

inPrivateNetworkNamespace(import.meta.path, "a block that keeps vmnet's pointers is caught", () => {
  test("the double poisons interface_param after the block returns: a kept pointer reads garbage, a kept dictionary is a violation", () => {
    makeBridge("sdbr1", "198.18.1.1/24");
    const path = buildDouble();
    const double = doubleControl(path);
    double.configure("sdbr1");
    const system = openDarwinSystem(doubleLibraries(path));
    const { dispatch, vmnet } = system;
    const broken = cc({
      source: join(REPO, "test/darwin/broken-invoke.c"),
      flags: ["-std=c11", "-nostdlib"],
      symbols: {
        broken_setup: { args: [ptr, ptr, ptr, ptr, ptr], returns: ptr },
        broken_stop_block: { args: [], returns: ptr },
        broken_kept_string: { args: [], returns: ptr },
        broken_kept_param: { args: [], returns: ptr },
        broken_status: { args: [], returns: u32 },
      },
    }).symbols;
    const done = semaphore(system);
    const queue = address0(dispatch.dispatch_queue_create(Buffer.from("broken\0"), null)) as Pointer;
    const startKey = system.vmnetKey("vmnet_start_address_key") as Pointer;
    const startBlock = broken.broken_setup(
      system.dataAddress("dispatch", GLOBAL_BLOCK_CLASS) as Pointer,
      system.functionAddress("dispatch", "xpc_dictionary_get_string") as Pointer,
      system.functionAddress("dispatch", "dispatch_semaphore_signal") as Pointer,
      startKey,
      done,
    );
    const description = address0(dispatch.xpc_dictionary_create(null, null, 0)) as Pointer;
    dispatch.xpc_dictionary_set_uint64(
      description,
      system.vmnetKey("vmnet_operation_mode_key") as Pointer,
      1001,
    );
    const iface = address0(vmnet.vmnet_start_interface(description, queue, startBlock)) as Pointer;
    expect(iface).not.toBe(0);
    expect(dispatch.dispatch_semaphore_wait(done, dispatch.dispatch_time(0n, 5_000_000_000n))).toBe(0);
    dispatch.xpc_release(description);
    expect(broken.broken_status()).toBe(1000);

    // The block signalled before returning, so the double may not have released interface_param
    // yet. Stopping the interface goes through the same serial queue: once the stop completion has
    // run, the start block has returned and its dictionary has been poisoned.
    expect(vmnet.vmnet_stop_interface(iface, queue, broken.broken_stop_block())).toBe(1000);
    expect(dispatch.dispatch_semaphore_wait(done, dispatch.dispatch_time(0n, 5_000_000_000n))).toBe(0);
    // What the broken block kept: the address string was "198.18.1.1" while the block ran.
    const kept = address0(broken.broken_kept_string());
    expect(kept).not.toBe(0);
    const afterwards = Array.from({ length: "198.18.1.1".length }, (_, i) => read.u8(kept as Pointer, i));
    expect(afterwards).toEqual(new Array(10).fill(0xdb)); // poison, not the address
    const violationsBefore = double.violations().count;
    expect(dispatch.xpc_dictionary_get_string(broken.broken_kept_param(), startKey)).toBeNull();
    const violations = double.violations();
    expect(violations.count).toBe(violationsBefore + 1);
    expect(violations.last).toContain("is not a live xpc dictionary (used after release?)");

    dispatch.dispatch_release(queue);
    dispatch.dispatch_release(done);
    expect(existsSync(`/sys/class/net/${double.lastTap()}`)).toBe(false);
  });
});
