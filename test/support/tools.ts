/**
 * The programs and files the tests take from the system, each with the Debian package that ships
 * it (found with `dpkg -S` on Debian 12). scripts/e2e-deps.sh installs every one of these packages
 * before `npm test` runs the suites; test/support/tools.test.ts checks that this table, dpkg and
 * that script agree. A test that finds one missing fails with a message naming the package, so a
 * machine set up by hand can be fixed without reading the test.
 */
import { existsSync } from "node:fs";

/** Program name -> Debian package. */
export const TOOL_PACKAGES = {
  ip: "iproute2",
  bridge: "iproute2",
  ss: "iproute2",
  tcpdump: "tcpdump",
  strace: "strace",
  socat: "socat",
  dnsmasq: "dnsmasq-base",
  busybox: "busybox",
  ping: "iputils-ping",
  nc: "netcat-openbsd",
  dig: "bind9-dnsutils",
  arpspoof: "dsniff",
  macof: "dsniff",
  hping3: "hping3",
  iperf3: "iperf3",
  nft: "nftables",
  sudo: "sudo",
  setpriv: "util-linux",
  findmnt: "util-linux",
  unshare: "util-linux",
  nsenter: "util-linux",
  mount: "mount",
  dhcpcd: "dhcpcd-base",
  tshark: "tshark",
  useradd: "passwd",
  pgrep: "procps",
  kill: "procps",
  id: "coreutils",
  stat: "coreutils",
  chown: "coreutils",
  cat: "coreutils",
  sleep: "coreutils",
  sh: "dash",
  dpkg: "dpkg",
  tar: "tar",
  git: "git",
  gcc: "gcc",
  cc: "gcc",
  "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu",
  "qemu-aarch64": "qemu-user",
  "llvm-mc": "llvm-14",
  "llvm-lipo": "llvm-14",
  "llvm-objcopy": "llvm-14",
  "llvm-nm": "llvm-14",
  "llvm-readelf": "llvm-14",
} as const;

export type Tool = keyof typeof TOOL_PACKAGES;

/** Files (not programs) the tests need -> Debian package. */
export const FILE_PACKAGES = {
  // The C library headers the double and the benchmark's C programs are compiled against.
  "/usr/include/stdio.h": "libc6-dev",
  // <linux/if_tun.h>, which the vmnet double includes.
  "/usr/include/linux/if_tun.h": "linux-libc-dev",
  // <linux/io_uring.h>, which the io_uring layout check compiles against, natively and for AArch64.
  "/usr/include/linux/io_uring.h": "linux-libc-dev",
  "/usr/aarch64-linux-gnu/include/linux/io_uring.h": "linux-libc-dev-arm64-cross",
  // The AArch64 C library qemu-user loads AArch64 programs with (qemu-aarch64 -L /usr/aarch64-linux-gnu).
  "/usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1": "libc6-arm64-cross",
  // The AArch64 C headers: aarch64-linux-gnu-gcc from --no-install-recommends comes without them
  // (bits/libc-header-start.h: No such file or directory).
  "/usr/aarch64-linux-gnu/include/bits/libc-header-start.h": "libc6-dev-arm64-cross",
  // systemd-networkd's DHCP client, run as a guest's (not a program on PATH).
  "/usr/lib/systemd/systemd-networkd": "systemd",
} as const;

export type NeededFile = keyof typeof FILE_PACKAGES;

/** Where the tests look for programs: PATH, then the sbin directories a non-root PATH may lack. */
export function searchPath(): string {
  return `${process.env.PATH ?? "/usr/bin:/bin"}:/usr/sbin:/sbin`;
}

/** llvm-14 installs its programs here; /usr/bin/llvm-* exist only with the unversioned "llvm" package. */
export const LLVM_DIRECTORY = "/usr/lib/llvm-14/bin";

/** The path of a program, or null when it is not installed. */
export function toolPath(tool: Tool, path: string = searchPath()): string | null {
  const llvm = `${LLVM_DIRECTORY}/${tool}`;
  if (tool.startsWith("llvm-") && existsSync(llvm)) return llvm;
  return Bun.which(tool, { PATH: path });
}

export function missingMessage(what: string, debianPackage: string): string {
  return `${what} is missing: install the Debian package ${debianPackage} (scripts/e2e-deps.sh installs every package the tests use)`;
}

/** The path of a program; throws naming its Debian package when it is not installed. */
export function requireTool(tool: Tool, path: string = searchPath()): string {
  const found = toolPath(tool, path);
  if (found === null) throw new Error(missingMessage(tool, TOOL_PACKAGES[tool]));
  return found;
}

/** Throws naming the Debian package of every program in `tools` that is not installed. */
export function requireTools(tools: readonly Tool[]): void {
  const missing = tools.filter((tool) => toolPath(tool) === null);
  if (missing.length > 0) {
    throw new Error(missing.map((tool) => missingMessage(tool, TOOL_PACKAGES[tool])).join("; "));
  }
}

/** Throws naming the Debian package when a file the tests need does not exist. */
export function requireFile(file: NeededFile): string {
  if (!existsSync(file)) throw new Error(missingMessage(file, FILE_PACKAGES[file]));
  return file;
}

/** True when `name` is a program this table knows (for helpers that take any argv). */
export function isKnownTool(name: string): name is Tool {
  return Object.hasOwn(TOOL_PACKAGES, name);
}
