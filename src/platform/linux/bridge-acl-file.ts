/**
 * Reading the administrator's bridge access list, /etc/softnet/bridge.conf (format and rules:
 * src/bridge-acl.ts), and refusing a bridge it does not allow.
 *
 * This runs as root, on behalf of a caller who may be anyone, so the file is trusted only when
 * nobody but root could have written it: /etc/softnet and the file must be owned by root and not
 * writable by group or others, the file must be a regular file, and neither may be a symbolic
 * link (both are opened with O_NOFOLLOW, and the checks are made on the opened descriptors, so
 * nothing can be swapped in between). The path is a constant: nothing the caller controls (the
 * environment, the arguments) can point softnet at another file. Tests pass another path as an
 * argument.
 */
import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";
import { dirname } from "node:path";
import { type BridgeAcl, decideBridge, parseBridgeAcl, type VmCap, vmCapFor } from "../../bridge-acl.ts";
import type { Caller } from "../../caller.ts";
import { SoftnetError } from "../../errors.ts";
import { O_CLOEXEC } from "./libc.ts";

/** Where the administrator lists the bridges non-root callers may use. */
export const BRIDGE_ACL_PATH = "/etc/softnet/bridge.conf";

/** Larger than any sensible list: a bigger file is refused rather than read into memory. */
const MAX_BYTES = 64 * 1024;

const SETUP_HINT =
  "when someone other than root starts softnet (setuid, or through sudo), it attaches VMs only to " +
  `bridges root allows in ${BRIDGE_ACL_PATH}: a root-owned file, not writable by group or others, ` +
  'with lines such as "allow br0"';

/**
 * Throws a SoftnetError unless `caller` may use `bridge`: root (caller.ts) always may, anyone else
 * only when the access list at `path` allows it. Returns the cap on the caller's VMs on that
 * bridge (max-vms-per-user), or undefined when there is none (and always for root).
 */
export function enforceBridgeAcl(
  bridge: string,
  caller: Caller,
  path: string = BRIDGE_ACL_PATH,
): VmCap | undefined {
  if (caller.kind === "root") return undefined;
  const acl = readBridgeAcl(path);
  const decision = decideBridge(acl, bridge);
  if (!decision.allowed) {
    throw new SoftnetError(`uid ${caller.uid} may not use bridge ${bridge}: ${decision.reason}`, {
      hint: `root can allow it with a line "allow ${bridge}" in ${path}`,
    });
  }
  return vmCapFor(acl, bridge);
}

/** Reads and parses the access list at `path`, after checking that only root could have written it. */
export function readBridgeAcl(path: string = BRIDGE_ACL_PATH): BridgeAcl {
  checkTrusted(dirname(path), constants.O_RDONLY | constants.O_DIRECTORY, "directory", path);
  const fd = checkTrusted(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY, "file", path);
  try {
    const bytes = new Uint8Array(MAX_BYTES + 1);
    let length = 0;
    for (;;) {
      const read = readSync(fd, bytes, length, bytes.length - length, null);
      if (read === 0) break;
      length += read;
      if (length > MAX_BYTES) throw new SoftnetError(`${path} is larger than ${MAX_BYTES} bytes`);
    }
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(0, length));
    } catch {
      throw new SoftnetError(`${path} is not UTF-8 text`);
    }
    return parseBridgeAcl(text, path);
  } finally {
    closeSync(fd);
  }
}

/**
 * Opens `target` without following a symbolic link and checks, on the open descriptor, that it is
 * a regular file (or directory), owned by root, not writable by group or others. Returns the fd
 * for a file; closes a directory's at once.
 */
function checkTrusted(target: string, flags: number, kind: "file" | "directory", aclPath: string): number {
  let fd: number;
  try {
    fd = openSync(target, flags | constants.O_NOFOLLOW | O_CLOEXEC);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new SoftnetError(`${aclPath} does not exist`, { hint: SETUP_HINT });
    if (code === "ELOOP" || (kind === "directory" && code === "ENOTDIR")) {
      throw new SoftnetError(`${target} is not a ${kind} but a symbolic link or something else`, {
        hint: `softnet trusts only a real ${kind} owned by root: ${SETUP_HINT}`,
      });
    }
    throw new SoftnetError(`cannot open ${target}`, { cause: error, hint: SETUP_HINT });
  }
  try {
    const status = fstatSync(fd);
    const problem =
      kind === "file" && !status.isFile()
        ? "is not a regular file"
        : kind === "directory" && !status.isDirectory()
          ? "is not a directory"
          : status.uid !== 0
            ? `is owned by uid ${status.uid}, not by root`
            : (status.mode & 0o022) !== 0
              ? `is writable by its group or by others (mode ${(status.mode & 0o7777).toString(8).padStart(4, "0")})`
              : undefined;
    if (problem !== undefined) {
      throw new SoftnetError(`${target} ${problem}: softnet does not trust it`, {
        hint: `the bridge access list counts only when nobody but root can change it (chown root; chmod go-w): ${SETUP_HINT}`,
      });
    }
  } catch (error) {
    closeSync(fd);
    throw error;
  }
  if (kind === "directory") {
    closeSync(fd);
    return -1;
  }
  return fd;
}
