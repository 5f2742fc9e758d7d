/**
 * A path to this checkout that an unprivileged user can read, for the tests that run softnet's
 * development path (`bun src/main.ts`) as such a user. The checkout itself when every directory
 * down to it lets others in; otherwise (a clone in root's 0700 home, or in a 0700 `mktemp -d`, as
 * CI's may be) a copy made once per test process: files hard-linked where the file system allows,
 * so it costs a directory walk, not the bytes. softnet itself never needs this: it reads its own
 * code while root (src/platform/runtime-c.ts, src/sentry.ts loadErrorReporter); the unprivileged
 * user here is the one who starts it.
 */
import { accessSync, constants, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";

const CHECKOUT = resolve(import.meta.dir, "../..");
/** What the development path reads: code, its dependencies and the files Bun reads beside them. */
const ENTRIES = ["src", "test", "scripts", "node_modules", "package.json", "tsconfig.json", "bunfig.toml"];

let copy: string | undefined;

/** True when others may enter every directory from / down to `path` (mode o+x). */
export function othersCanReach(path: string): boolean {
  for (let directory = resolve(path); ; directory = dirname(directory)) {
    if ((statSync(directory).mode & 0o001) === 0) return false;
    if (directory === dirname(directory)) return true;
  }
}

/** The checkout, or a world-readable copy of it when others cannot reach it (see above). */
export function checkoutReadableByOthers(): string {
  if (othersCanReach(CHECKOUT)) return CHECKOUT;
  if (copy !== undefined) return copy;
  const directory = mkdtempSync(join(tmpdir(), "softnet-readable-checkout-"));
  const made = Bun.spawnSync(["chmod", "0755", directory]);
  if (made.exitCode !== 0) throw new Error(`chmod ${directory} failed`);
  for (const entry of ENTRIES) {
    const from = join(CHECKOUT, entry);
    try {
      accessSync(from, constants.F_OK);
    } catch {
      continue;
    }
    // -a keeps modes and links; -l hard-links files (same file system), else a plain copy.
    let result = Bun.spawnSync(["cp", "-al", from, directory], { stderr: "pipe" });
    if (result.exitCode !== 0) result = Bun.spawnSync(["cp", "-a", from, directory], { stderr: "pipe" });
    if (result.exitCode !== 0) {
      throw new Error(`copying ${entry} for an unprivileged user failed: ${result.stderr.toString()}`);
    }
  }
  copy = directory;
  process.once("exit", () => rmSync(directory, { recursive: true, force: true }));
  return directory;
}

/**
 * The Bun that runs these tests, by its path in the readable checkout when it lives in this
 * checkout's node_modules (the same file, hard-linked), else by its own path.
 */
export function readableBun(): string {
  const checkout = checkoutReadableByOthers();
  if (checkout === CHECKOUT || !process.execPath.startsWith(`${CHECKOUT}/`)) return process.execPath;
  return join(checkout, process.execPath.slice(CHECKOUT.length + 1));
}
