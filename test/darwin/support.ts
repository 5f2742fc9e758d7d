// What the darwin tests share: building the vmnet double, binding its test controls, and running a
// test file inside a private network namespace.
import { dlopen, FFIType } from "bun:ffi";
import { test } from "bun:test";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { DarwinLibraries } from "../../src/platform/darwin/system.ts";
import { REQUIRED_IN_CI } from "../support/ci.ts";
import { bunCommand, compilerForThisProcess } from "../support/emulation.ts";
import { requireTool, type Tool, toolPath } from "../support/tools.ts";

export const REPO = resolve(import.meta.dir, "../..");
const DOUBLE_SOURCES = join(REPO, "test/vmnet-double");

/** "old-macos": macOS 11 to 14 (no read/write max packets keys); "before-macos-11": no _ip_ port forwarding either. */
export type DoubleVariant = "current" | "old-macos" | "before-macos-11";

/**
 * How to build C this process can load. Natively: the system compiler. When this Bun is the
 * linux-aarch64 one running under qemu-user on an x86-64 host (test/arm64), `cc` still builds for
 * the host, so the double is cross-compiled with Debian's aarch64-linux-gnu-gcc, and linked with
 * test/arm64/qemu-bridge-port.c, which adds the TAP to the bridge through rtnetlink because
 * qemu-user 7.2 does not implement the SIOCBRADDIF ioctl (see that file).
 */
function doubleToolchain(): { compiler: Tool; machine: string; extra: string[] } {
  const { compiler, machine, crossCompiling } = compilerForThisProcess();
  if (!crossCompiling) return { compiler, machine, extra: [] };
  return {
    compiler,
    machine: `${machine}-on-qemu`,
    extra: ["-Wl,--wrap=ioctl", join(REPO, "test/arm64/qemu-bridge-port.c")],
  };
}

/**
 * Builds the double for this process's architecture (once per source version, variant and target;
 * concurrent builders each write their own file and rename it into place). "old-macos" is vmnet
 * before macOS 15: no read/write max packets keys.
 */
export function buildDouble(variant: DoubleVariant = "current"): string {
  const files = readdirSync(DOUBLE_SOURCES)
    .filter((name) => name.endsWith(".c") || name.endsWith(".h"))
    .sort()
    .map((name) => join(DOUBLE_SOURCES, name));
  const { compiler, machine, extra } = doubleToolchain();
  const hash = createHash("sha256");
  for (const file of [...files, ...extra])
    hash.update(file).update(existsSync(file) ? readFileSync(file) : "");
  const directory = join(tmpdir(), `softnet-vmnet-double-${hash.digest("hex").slice(0, 16)}`);
  const output = join(directory, `libvmnet-double-${variant}-${machine}.so`);
  if (existsSync(output)) return output;
  mkdirSync(directory, { recursive: true });
  const partial = `${output}.${process.pid}`;
  const command = [
    requireTool(compiler),
    "-shared",
    "-fPIC",
    "-pthread",
    "-fvisibility=hidden",
    "-O1",
    "-g",
    "-Wall",
    "-Wextra",
    "-Werror",
    ...(variant === "old-macos" ? ["-DDOUBLE_OLD_MACOS"] : []),
    ...(variant === "before-macos-11" ? ["-DDOUBLE_OLD_MACOS", "-DDOUBLE_NO_IP_FORWARDING"] : []),
    "-o",
    partial,
    ...files.filter((name) => name.endsWith(".c")),
    ...extra,
  ];
  const result = Bun.spawnSync(command, { stdout: "pipe", stderr: "pipe" });
  if (result.exitCode !== 0) {
    throw new Error(`building the vmnet double failed:\n${command.join(" ")}\n${result.stderr.toString()}`);
  }
  renameSync(partial, output);
  return output;
}

/** The double in place of vmnet.framework and libSystem's dispatch/xpc/blocks; glibc as the C library. */
export function doubleLibraries(path: string): DarwinLibraries {
  return { vmnet: path, dispatch: path, libc: "libc.so.6" };
}

/**
 * The double as the C library as well: every AF_UNIX datagram socketpair made through it behaves as
 * on macOS when one end closes (ECONNRESET once, then EDESTADDRREQ on send, ENOTCONN from
 * getpeername, no more readability: test/vmnet-double/xnu-socket.c). All other C library calls
 * reach glibc through the double's dependency on it.
 */
export function xnuLibraries(path: string): DarwinLibraries {
  return { vmnet: path, dispatch: path, libc: path };
}

/** vmnet_double_inject operations (test/vmnet-double/vmnet.c). */
export const Inject = {
  START_COMPLETION: 1,
  START_NULL: 2,
  START_SILENT: 3,
  ADD_FORWARD: 4,
  REMOVE_FORWARD: 5,
  STOP: 6,
  READ: 7,
  WRITE: 8,
  ADD_FORWARD_SYNC: 9,
  EVENTS: 10,
  FORWARD_DELAY: 11,
} as const;

const { ptr, u64, i32, u32 } = FFIType;

/** The double's test controls, bound from the same library the module opens. */
export function doubleControl(path: string) {
  const symbols = dlopen(path, {
    vmnet_double_configure: { args: [ptr], returns: FFIType.void },
    vmnet_double_set_limits: { args: [u64, u64], returns: FFIType.void },
    vmnet_double_inject: { args: [i32, u32], returns: FFIType.void },
    vmnet_double_last_tap: { args: [ptr, u64], returns: FFIType.void },
    vmnet_double_largest_batch: { args: [i32], returns: u64 },
    vmnet_double_set_log: { args: [ptr], returns: i32 },
    vmnet_double_call_count: { args: [ptr], returns: u64 },
    vmnet_double_violations: { args: [ptr, u64], returns: u64 },
  }).symbols;
  const text = (value: string) => Buffer.from(`${value}\0`, "utf8");
  return {
    configure: (bridge: string) => symbols.vmnet_double_configure(text(bridge)),
    setLimits: (readMax: number, writeMax: number) => symbols.vmnet_double_set_limits(readMax, writeMax),
    inject: (operation: number, status: number) => symbols.vmnet_double_inject(operation, status),
    lastTap: (): string => {
      const buffer = Buffer.alloc(32);
      symbols.vmnet_double_last_tap(buffer, buffer.length);
      return buffer.subarray(0, buffer.indexOf(0)).toString("ascii");
    },
    largestRead: () => Number(symbols.vmnet_double_largest_batch(0)),
    largestWrite: () => Number(symbols.vmnet_double_largest_batch(1)),
    setLog: (path: string) => {
      if (symbols.vmnet_double_set_log(text(path)) !== 0) throw new Error(`cannot open ${path}`);
    },
    callCount: (symbol: string) => Number(symbols.vmnet_double_call_count(text(symbol))),
    violations: (): { count: number; last: string } => {
      const buffer = Buffer.alloc(512);
      const count = Number(symbols.vmnet_double_violations(buffer, buffer.length));
      return { count, last: buffer.subarray(0, buffer.indexOf(0)).toString("utf8") };
    },
  };
}

export type DoubleControl = ReturnType<typeof doubleControl>;

export function run(command: string[]): string {
  const result = Bun.spawnSync(command, { stdout: "pipe", stderr: "pipe" });
  if (result.exitCode !== 0) {
    throw new Error(`${command.join(" ")} failed (${result.exitCode}): ${result.stderr.toString().trim()}`);
  }
  return result.stdout.toString();
}

const NETNS_VARIABLE = "SOFTNET_TEST_NETNS";

/** True in the outer run of a file that also re-runs itself in a namespace (run plain tests here only). */
export function outsideNamespace(): boolean {
  return process.env[NETNS_VARIABLE] === undefined;
}

/**
 * Runs `tests` inside a private network namespace: run normally, the file creates a namespace and
 * runs itself again inside it with `ip netns exec` (which also mounts a /sys showing the namespace's
 * interfaces); deleting the namespace afterwards removes every bridge and TAP the tests made.
 * Skipped without root, `ip` or /dev/net/tun.
 */
export function inPrivateNetworkNamespace(
  file: string,
  name: string,
  tests: (namespace: string) => void,
): void {
  const inside = process.env[NETNS_VARIABLE];
  if (inside !== undefined) {
    tests(inside);
    return;
  }
  const canRun = process.getuid?.() === 0 && toolPath("ip") !== null && existsSync("/dev/net/tun");
  test.skipIf(!canRun && !REQUIRED_IN_CI)(
    `${name}, run inside a private network namespace`,
    () => {
      requireTool("ip");
      const namespace = `softnet-darwin-${process.pid}-${Math.floor(Math.random() * 1e6)}`;
      run(["ip", "netns", "add", namespace]);
      try {
        const inner = Bun.spawnSync(["ip", "netns", "exec", namespace, ...bunCommand(), "test", file], {
          cwd: REPO,
          env: { ...process.env, [NETNS_VARIABLE]: namespace },
          stdout: "inherit",
          stderr: "inherit",
        });
        if (inner.exitCode !== 0)
          throw new Error(`the tests inside ${namespace} failed (exit ${inner.exitCode})`);
      } finally {
        run(["ip", "netns", "del", namespace]);
      }
    },
    180_000,
  );
}

/** Creates a bridge with an IPv4 address inside the current (private) namespace. */
export function makeBridge(name: string, cidr: string, mtu = 1500): void {
  run(["ip", "link", "set", "lo", "up"]);
  run(["ip", "link", "add", name, "type", "bridge"]);
  run(["ip", "link", "set", name, "mtu", String(mtu)]);
  run(["ip", "addr", "add", cidr, "dev", name]);
  run(["ip", "link", "set", name, "up"]);
}

export async function waitFor(condition: () => boolean, ms = 3000, what = "condition"): Promise<void> {
  const deadline = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`${what} not met within ${ms} ms`);
    await Bun.sleep(5);
  }
}

export function tempPath(name: string): string {
  return join(tmpdir(), `softnet-darwin-${process.pid}-${name}`);
}
