/**
 * The --capture file: opened after the privilege drop, as the user softnet then runs as, so that
 * the caller can only write where they could write anyway; never through a symlink; never
 * truncating an existing file unless --capture-overwrite says so, and then only a regular file the
 * caller owns; mode 0600 (the file holds the VM's traffic).
 *
 * Plain node:fs calls (Bun implements them as the open/fstat/ftruncate/fchmod/write system calls);
 * no FFI is needed.
 */
import {
  closeSync,
  constants,
  fchmodSync,
  fstatSync,
  ftruncateSync,
  lstatSync,
  openSync,
  writeSync,
} from "node:fs";
import { SoftnetError } from "../errors.ts";

/**
 * O_CLOEXEC, which node:fs's constants do not export: the capture fd must not leak into the nft
 * processes softnet starts. Linux: 02000000 (include/uapi/asm-generic/fcntl.h, which x86-64 and
 * arm64 both use). macOS: 0x01000000 (apple-oss-distributions/xnu bsd/sys/fcntl.h).
 */
const O_CLOEXEC = process.platform === "darwin" ? 0x0100_0000 : 0o200_0000;
const CAPTURE_FILE_MODE = 0o600;

/** Where capture blocks go; CaptureFile writes to a file, tests write to memory. */
export interface CaptureSink {
  /** Writes bytes[0, length) whole, or throws. */
  write(bytes: Uint8Array, length: number): void;
  /** Cuts the file back to `length` bytes (after a failed write, to keep whole blocks only). */
  truncate(length: number): void;
  close(): void;
}

export class CaptureFile implements CaptureSink {
  private constructor(
    readonly path: string,
    private fd: number,
  ) {}

  /**
   * Opens (creates) the capture file for the user this process runs as now. Throws SoftnetError
   * saying what is wrong and what to do.
   */
  static open(path: string, overwrite: boolean): CaptureFile {
    // O_NOFOLLOW: a symlink as the last component fails (ELOOP) instead of being followed.
    // O_NONBLOCK: opening a FIFO never waits for a reader (it is refused below anyway); it has no
    // effect on regular files. No O_TRUNC: truncation waits until the file is known to be ours.
    const base = constants.O_WRONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | O_CLOEXEC;
    const flags = overwrite ? base | constants.O_CREAT : base | constants.O_CREAT | constants.O_EXCL;
    let fd: number;
    try {
      fd = openSync(path, flags, CAPTURE_FILE_MODE);
    } catch (error) {
      throw openError(path, error);
    }
    try {
      const stat = fstatSync(fd);
      if (!stat.isFile()) {
        throw new SoftnetError(`cannot capture to ${path}: it is not a regular file`, {
          hint: "name a new file, e.g. --capture vm.pcapng",
        });
      }
      const uid = process.geteuid?.() ?? -1;
      if (stat.uid !== uid) {
        throw new SoftnetError(
          `cannot capture to ${path}: it belongs to uid ${stat.uid}, not to uid ${uid} that softnet runs as`,
          { hint: "name a new file of your own" },
        );
      }
      if (stat.size > 0) ftruncateSync(fd, 0);
      // The creation mode went through the umask; the file holds the VM's traffic: 0600, always.
      fchmodSync(fd, CAPTURE_FILE_MODE);
    } catch (error) {
      closeSync(fd);
      if (error instanceof SoftnetError) throw error;
      throw new SoftnetError(`cannot prepare the capture file ${path}`, { cause: error });
    }
    return new CaptureFile(path, fd);
  }

  write(bytes: Uint8Array, length: number): void {
    let done = 0;
    while (done < length) {
      // A regular file takes everything unless the disk is full; writeSync throws then.
      const written = writeSync(this.fd, bytes, done, length - done);
      if (written <= 0) throw new Error(`write returned ${written}`);
      done += written;
    }
  }

  truncate(length: number): void {
    ftruncateSync(this.fd, length);
  }

  close(): void {
    if (this.fd < 0) return;
    const fd = this.fd;
    this.fd = -1;
    closeSync(fd);
  }
}

function openError(path: string, error: unknown): SoftnetError {
  const code = (error as { code?: string }).code;
  if (code === "EEXIST" && isSymlink(path)) return symlinkError(path);
  if (code === "EEXIST") {
    return new SoftnetError(`cannot capture to ${path}: the file exists`, {
      hint: "name a new file, or add --capture-overwrite to replace a file of your own",
    });
  }
  if (code === "ELOOP") return symlinkError(path);
  if (code === "EACCES" || code === "EPERM") {
    return new SoftnetError(`cannot capture to ${path}: permission denied`, {
      cause: error,
      hint: "the file is created as the user softnet runs as after set-up (see --user): pick a directory that user may write to",
    });
  }
  if (code === "EISDIR") {
    return new SoftnetError(`cannot capture to ${path}: it is a directory`, {
      hint: "name a file, e.g. --capture vm.pcapng",
    });
  }
  if (code === "ENXIO") {
    return new SoftnetError(`cannot capture to ${path}: it is not a regular file`, {
      hint: "name a new file, e.g. --capture vm.pcapng",
    });
  }
  return new SoftnetError(`cannot open the capture file ${path}`, { cause: error });
}

function symlinkError(path: string): SoftnetError {
  return new SoftnetError(`cannot capture to ${path}: it is a symbolic link, which softnet never follows`, {
    hint: "name the file itself",
  });
}

/** Only to word the error (O_EXCL already refused the name, whatever it is). */
function isSymlink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}
