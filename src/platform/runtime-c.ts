/**
 * The one way softnet compiles C at run time (bun:ffi `cc`, TinyCC), on every platform.
 *
 * The process that compiles holds a privileged link (the TAP, vmnet) even after it drops root, and
 * on macOS the vmnet blocks run as root; so no byte TinyCC reads may be writable, or replaceable,
 * by whoever started softnet, at any time. Hence, for each C file:
 *
 * 1. prepareSealedSource(), while still root: the program's own C file is read (the path comes from
 *    an `import ... with { type: "file" }`, fixed relative to the program: inside the release binary
 *    it is the embedded copy under /$bunfs/, from a checkout the file beside the module; never
 *    from the environment or the working directory). Reading it as root is part of loading the
 *    program, so a checkout only root can read (root's 0700 home) works too. The text goes into a
 *    file that has no name anybody can open and that nobody can change afterwards:
 *    - Linux: a memfd (memfd_create(2) with MFD_ALLOW_SEALING), sealed with F_SEAL_WRITE |
 *      F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL (fcntl(2) "File seals"; values from
 *      include/uapi/linux/fcntl.h and memfd.h). TinyCC gets /proc/self/fd/N, a "symbolic link to
 *      the actual file" (proc(5), /proc/pid/fd/): opening it opens the memfd's inode anew, a new
 *      open file description with its own offset 0 and the inode's own permission check (proc(5):
 *      "those inodes still have permission bits and ownership information distinct from those of
 *      the /proc/pid/fd entry"), which passes after the drop: memfd_create makes the inode
 *      S_IRWXUGO (mm/shmem.c __shmem_file_setup) and the seals, not the mode, stop writes.
 *      Nobody else can name it: another process reaches it only through /proc/<pid>/fd, which needs ptrace access, and a
 *      process that changed its uids from root is not dumpable (proc(5), PR_SET_DUMPABLE).
 *    - macOS (no memfd): mkstemp in /tmp, a constant (TMPDIR comes from the environment), creates
 *      the file with O_EXCL, mode 0600, owned by root; it is opened once more read-only by that
 *      name, which nobody else can replace (the file is root's and /tmp is sticky: sticky(7)/
 *      chmod(2) "S_ISVTX"), unlinked, written through the first descriptor, made 0444 and that
 *      descriptor closed. TinyCC gets /dev/fd/N of the read-only descriptor. What xnu does with
 *      open("/dev/fd/N", O_RDONLY) (read in apple-oss-distributions/xnu, tag xnu-11417.101.15):
 *      open1() in bsd/vfs/vfs_syscalls.c calls vn_open_auth() (bsd/vfs/vfs_vnops.c) on the devfs
 *      node /dev/fd/N, which first authorizes the open like any existing file
 *      (vn_authorize_open_existing() -> vnode_authorize(KAUTH_VNODE_READ_DATA), bsd/vfs/
 *      vfs_subr.c vnode_authorize_callback_int(): for a non-root euid it checks the mode, owner
 *      and group that VNOP_GETATTR reports, and the node's getattr, fdesc_getattr() -> fdesc_attr()
 *      in bsd/miscfs/devfs/devfs_fdesc_support.c, reports those of the file behind descriptor N).
 *      Only then fdesc_open() sets uu_dupfd = N and fails with ENODEV, upon which open1() calls
 *      dupfdopen() (bsd/kern/kern_descrip.c): it refuses (EACCES) a mode N was not opened with
 *      ("a subset of the mode of the existing descriptor") and otherwise makes the new descriptor
 *      share N's open file (fg_ref of the same fileglob: same offset), it does not reopen it.
 *      Hence: the file is 0444, not 0400, since the compile runs after the drop (as the target
 *      user) and an owner-only root file would be refused (the Linux reopen through
 *      /proc/self/fd refuses it the same way, test/darwin/compile-after-drop.test.ts); readable
 *      by everyone is harmless, as the file has no name by then, its text is the program's own,
 *      and only root, its owner, may chmod it. What TinyCC holds is read-only, like N. And the
 *      offset TinyCC starts from is N's: 0, because N is never read or written (the bytes go
 *      through the other descriptor) and a source compiles once (compileSealedSource refuses a
 *      closed one, whose number may name another file by then).
 * 2. compileSealedSource(), after the drop (on macOS the blocks: as the target user): bun:ffi `cc`
 *    hands the path unchanged to TinyCC (oven-sh/bun src/bun.js/api/ffi/compile.zig, CompileC
 *    Source.add -> TCC.State.addFile), whose tcc_add_file treats a name without extension as C and
 *    opens it with open(filename, O_RDONLY) (oven-sh/tinycc libtcc.c tcc_add_file, _tcc_open).
 *    Our sources have no #include and are built with -nostdlib, so that descriptor is the only
 *    file TinyCC reads; test/release/setuid-root-work.test.ts (strace of the setuid binary) and
 *    test/platform/runtime-c.test.ts check that.
 *
 * `flags` is always given: when it is absent Bun takes TinyCC's options from the BUN_TCC_OPTIONS
 * environment variable (compile.zig `compile`, verified on 1.4.5), which would let whoever starts
 * softnet change the code. Bun still stages its own headers in /tmp/bun-cc-<uid> as the user it
 * runs as (compile.zig CompilerRT.dir()); TinyCC reads none of them, for the reasons above.
 *
 * Run-time C must not use `inline` (test/unit/runtime-c-source.test.ts): the arm64 x18 scan reads
 * only the code between each file's markers, and TinyCC may emit an inline function elsewhere.
 */
import { cc, type FFIFunction } from "bun:ffi";
import { readFileSync } from "node:fs";
import { SoftnetError } from "../errors.ts";

/** TinyCC's options for every run-time C file; see the module comment. */
export const RUNTIME_C_FLAGS: readonly string[] = Object.freeze(["-std=c11", "-nostdlib"]);

/** include/uapi/linux/memfd.h */
const MFD_CLOEXEC = 0x1;
const MFD_ALLOW_SEALING = 0x2;
/** include/uapi/linux/fcntl.h: F_LINUX_SPECIFIC_BASE (1024) + 9 and + 10, and the seal bits. */
export const F_ADD_SEALS = 1033;
export const F_GET_SEALS = 1034;
export const F_SEAL_SEAL = 0x1;
export const F_SEAL_SHRINK = 0x2;
export const F_SEAL_GROW = 0x4;
export const F_SEAL_WRITE = 0x8;
export const ALL_SEALS = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
/** O_RDONLY is 0 on Linux and macOS (asm-generic/fcntl.h; xnu bsd/sys/fcntl.h). */
const O_RDONLY = 0;
/** The constant place of the macOS strategy's file; see the module comment. */
export const TEMP_SOURCE_TEMPLATE = "/tmp/softnet-source.XXXXXX";
/**
 * The macOS strategy's file once written: read-only for everyone, so the compile after the drop
 * may open it through /dev/fd (see the module comment).
 */
export const READABLE_BY_ALL = 0o444;

/**
 * How the source reaches TinyCC: "memfd" on Linux, "unlinked-temp-file" on macOS (also run on
 * Linux by the tests, where /dev/fd/N reopens the file instead of duplicating it).
 */
export type SourceStrategy = "memfd" | "unlinked-temp-file";

/**
 * The C library calls this needs, from whichever library the platform module opened (glibc
 * through linux/libc.ts, or the darwin module's libc: libSystem on macOS, glibc in the tests).
 */
export interface SourceFileCalls {
  /** memfd_create(2); undefined on macOS. */
  readonly memfdCreate: ((name: string, flags: number) => number) | undefined;
  /** fcntl(fd, F_ADD_SEALS, seals); Linux only, with the memfd. */
  readonly addSeals: ((fd: number, seals: number) => number) | undefined;
  /** The temporary-file strategy's calls; undefined where it is never used (the Linux runtime). */
  readonly tempFile:
    | {
        mkstemp(template: Buffer): number;
        /** open(path, flags) without O_CREAT, so without a mode argument. */
        open(path: Buffer, flags: number): number;
        unlink(path: Buffer): number;
        fchmod(fd: number, mode: number): number;
      }
    | undefined;
  write(fd: number, bytes: Uint8Array, length: number): number;
  close(fd: number): number;
  /** The error for a call that just failed, read from errno right away. */
  lastError(call: string): Error;
}

/** One C file, ready for TinyCC: a descriptor nobody can write and the path that opens it. */
export interface SealedSource {
  /** What the file is, for error messages ("the readiness reactor"). */
  readonly what: string;
  readonly fd: number;
  /** /proc/self/fd/N or /dev/fd/N. */
  readonly path: string;
  readonly strategy: SourceStrategy;
  /** Closes the descriptor (compileSealedSource does it); idempotent. */
  close(): void;
  /** False once closed: a source compiles once. */
  isOpen(): boolean;
}

export const defaultStrategy = (calls: SourceFileCalls): SourceStrategy =>
  calls.memfdCreate === undefined ? "unlinked-temp-file" : "memfd";

/**
 * Reads `sourcePath` (the program's own C file, see the module comment) and puts it into a sealed
 * or read-only descriptor. Call it while root, before the drop. Throws SoftnetError.
 */
export function prepareSealedSource(
  calls: SourceFileCalls,
  what: string,
  sourcePath: string,
  strategy: SourceStrategy = defaultStrategy(calls),
): SealedSource {
  let text: string;
  try {
    text = readFileSync(sourcePath, "utf8");
  } catch (error) {
    throw new SoftnetError(`cannot read the C source of ${what}`, { cause: error });
  }
  try {
    return sealText(calls, what, text, strategy);
  } catch (error) {
    throw new SoftnetError(`cannot prepare the C source of ${what}`, { cause: error });
  }
}

/** Puts `text` into a sealed memfd or a read-only unlinked file (see the module comment). */
export function sealText(
  calls: SourceFileCalls,
  what: string,
  text: string,
  strategy: SourceStrategy = defaultStrategy(calls),
): SealedSource {
  const bytes = Buffer.from(text, "utf8");
  return strategy === "memfd" ? sealedMemfd(calls, what, bytes) : readOnlyUnlinkedFile(calls, what, bytes);
}

function sealedMemfd(calls: SourceFileCalls, what: string, bytes: Buffer): SealedSource {
  if (calls.memfdCreate === undefined || calls.addSeals === undefined) {
    throw new Error("memfd_create and file seals are Linux only");
  }
  const fd = calls.memfdCreate("softnet-runtime.c", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) throw calls.lastError("memfd_create");
  try {
    writeAll(calls, fd, bytes);
    if (calls.addSeals(fd, ALL_SEALS) < 0) throw calls.lastError("fcntl(F_ADD_SEALS)");
  } catch (error) {
    calls.close(fd);
    throw error;
  }
  return source(calls, what, fd, `/proc/self/fd/${fd}`, "memfd");
}

function readOnlyUnlinkedFile(calls: SourceFileCalls, what: string, bytes: Buffer): SealedSource {
  const file = calls.tempFile;
  if (file === undefined) throw new Error("this C library binding has no temporary-file calls");
  const template = Buffer.from(`${TEMP_SOURCE_TEMPLATE}\0`, "utf8");
  const writable = file.mkstemp(template);
  if (writable < 0) throw calls.lastError(`mkstemp(${TEMP_SOURCE_TEMPLATE})`);
  let readOnly = -1;
  try {
    readOnly = file.open(template, O_RDONLY);
    if (readOnly < 0) throw calls.lastError("open(O_RDONLY)");
    if (file.unlink(template) < 0) throw calls.lastError("unlink");
    writeAll(calls, writable, bytes);
    if (file.fchmod(writable, READABLE_BY_ALL) < 0) throw calls.lastError("fchmod");
  } catch (error) {
    if (readOnly >= 0) calls.close(readOnly);
    file.unlink(template); // already gone unless unlink itself failed
    calls.close(writable);
    throw error;
  }
  calls.close(writable);
  return source(calls, what, readOnly, `/dev/fd/${readOnly}`, "unlinked-temp-file");
}

function writeAll(calls: SourceFileCalls, fd: number, bytes: Buffer): void {
  let written = 0;
  while (written < bytes.length) {
    const result = calls.write(fd, bytes.subarray(written), bytes.length - written);
    if (result < 0) throw calls.lastError("write");
    written += result;
  }
}

function source(
  calls: SourceFileCalls,
  what: string,
  fd: number,
  path: string,
  strategy: SourceStrategy,
): SealedSource {
  let open = true;
  return {
    what,
    fd,
    path,
    strategy,
    close() {
      if (open) calls.close(fd);
      open = false;
    },
    isOpen: () => open,
  };
}

/**
 * Compiles a prepared source with the fixed flags and closes its descriptor. Call it after the
 * drop. Throws SoftnetError.
 */
export function compileSealedSource<Symbols extends Record<string, FFIFunction>>(
  source: SealedSource,
  symbols: Symbols,
) {
  if (!source.isOpen()) {
    // Its number may name another file by now (see the module comment).
    throw new SoftnetError(`cannot compile ${source.what}`, { cause: new Error("its descriptor is closed") });
  }
  try {
    return cc({ source: source.path, flags: [...RUNTIME_C_FLAGS], symbols }).symbols;
  } catch (error) {
    throw new SoftnetError(`cannot compile ${source.what}`, { cause: error });
  } finally {
    source.close();
  }
}
