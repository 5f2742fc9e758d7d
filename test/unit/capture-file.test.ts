/**
 * Opening the --capture file: a new file only (unless --capture-overwrite, and then only a regular
 * file of the user softnet runs as), never through a symlink, never a FIFO or device, mode 0600
 * whatever the umask. softnet opens it after the privilege drop, so these checks are the caller's
 * protection against their own mistakes; the kernel's permission checks do the rest.
 */
import { afterAll, describe, expect, test } from "bun:test";
import {
  chmodSync,
  chownSync,
  constants,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CaptureFile } from "../../src/capture/file.ts";
import { SoftnetError } from "../../src/errors.ts";
import { REQUIRED_IN_CI } from "../support/ci.ts";

const work = mkdtempSync(join(tmpdir(), "softnet-capture-file-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
let count = 0;
const fresh = (name = "capture") => join(work, `${name}-${++count}.pcapng`);

function openError(path: string, overwrite: boolean): string {
  try {
    CaptureFile.open(path, overwrite).close();
  } catch (error) {
    expect(error).toBeInstanceOf(SoftnetError);
    return (
      (error as SoftnetError).what +
      ((error as SoftnetError).hint ? ` (${(error as SoftnetError).hint})` : "")
    );
  }
  throw new Error(`opened ${path}`);
}

describe("a new file", () => {
  test("is created with mode 0600, whatever the umask, and takes what is written", () => {
    const path = fresh();
    const previous = process.umask(0o000);
    try {
      const file = CaptureFile.open(path, false);
      file.write(new TextEncoder().encode("hello, capture"), 5);
      file.close();
      file.close(); // idempotent
    } finally {
      process.umask(previous);
    }
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readFileSync(path, "utf8")).toBe("hello");
  });

  test("is created in the current directory when the name is relative", () => {
    const directory = join(work, "cwd");
    mkdirSync(directory);
    const previous = process.cwd();
    process.chdir(directory);
    try {
      CaptureFile.open("relative.pcapng", false).close();
    } finally {
      process.chdir(previous);
    }
    expect(existsSync(join(directory, "relative.pcapng"))).toBe(true);
  });
});

describe("an existing name", () => {
  test("an existing file is left alone without --capture-overwrite", () => {
    const path = fresh();
    writeFileSync(path, "precious");
    expect(openError(path, false)).toBe(
      `cannot capture to ${path}: the file exists (name a new file, or add --capture-overwrite to replace a file of your own)`,
    );
    expect(readFileSync(path, "utf8")).toBe("precious");
  });

  test("--capture-overwrite truncates a regular file of ours and makes it 0600", () => {
    const path = fresh();
    writeFileSync(path, "old capture", { mode: 0o644 });
    const file = CaptureFile.open(path, true);
    file.write(new TextEncoder().encode("new"), 3);
    file.close();
    expect(readFileSync(path, "utf8")).toBe("new");
    expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  test("--capture-overwrite creates the file when it does not exist", () => {
    const path = fresh();
    CaptureFile.open(path, true).close();
    expect(statSync(path).size).toBe(0);
  });

  for (const overwrite of [false, true]) {
    test(`a symlink is never followed${overwrite ? ", not even with --capture-overwrite" : ""}`, () => {
      const target = fresh("target");
      writeFileSync(target, "the link's target");
      const link = fresh("link");
      symlinkSync(target, link);
      expect(openError(link, overwrite)).toContain(`cannot capture to ${link}: it is a symbolic link`);
      expect(readFileSync(target, "utf8")).toBe("the link's target");
      expect(lstatSync(link).isSymbolicLink()).toBe(true);
    });

    test(`a dangling symlink does not create its target${overwrite ? " (--capture-overwrite)" : ""}`, () => {
      const target = fresh("nowhere");
      const link = fresh("dangling");
      symlinkSync(target, link);
      expect(openError(link, overwrite)).toContain("it is a symbolic link");
      expect(existsSync(target)).toBe(false);
    });
  }

  test("a FIFO is refused at once (no waiting for a reader), even with --capture-overwrite", () => {
    const path = fresh("fifo");
    const made = Bun.spawnSync(["mkfifo", path]);
    expect(made.exitCode).toBe(0);
    expect(openError(path, true)).toContain(`cannot capture to ${path}: it is not a regular file`);
    expect(openError(path, false)).toContain("the file exists");
  });

  test("a device is refused, even with --capture-overwrite", () => {
    expect(openError("/dev/null", true)).toContain("cannot capture to /dev/null: it is not a regular file");
  });

  test("a directory is refused", () => {
    expect(openError(work, true)).toContain(`cannot capture to ${work}: it is a directory`);
  });

  test.skipIf(process.getuid?.() !== 0 && !REQUIRED_IN_CI)(
    "--capture-overwrite refuses a file that belongs to someone else, and leaves it alone",
    () => {
      const path = fresh();
      writeFileSync(path, "someone else's");
      chmodSync(path, 0o666);
      chownSync(path, 4242, 4242); // writable by us (0666), but not ours
      expect(openError(path, true)).toBe(
        `cannot capture to ${path}: it belongs to uid 4242, not to uid ${process.geteuid?.()} that softnet runs as (name a new file of your own)`,
      );
      expect(readFileSync(path, "utf8")).toBe("someone else's");
      expect(statSync(path).mode & 0o777).toBe(0o666);
    },
  );
});

describe("the file descriptor", () => {
  test("is close-on-exec (the nft processes softnet starts must not inherit it) and was opened O_NOFOLLOW", () => {
    const path = fresh();
    const file = CaptureFile.open(path, false);
    try {
      const fd = (file as unknown as { fd: number }).fd;
      // /proc/self/fdinfo/N "flags:" is octal; O_CLOEXEC is 02000000 on Linux.
      const flags = readFileSync(`/proc/self/fdinfo/${fd}`, "utf8").match(/^flags:\s*([0-7]+)/m)?.[1];
      expect(flags).toBeDefined();
      expect(Number.parseInt(flags!, 8) & 0o2000000).toBe(0o2000000);
      // O_NOFOLLOW's value differs between x86-64 and arm64; Bun's constants have this machine's.
      expect(Number.parseInt(flags!, 8) & constants.O_NOFOLLOW).toBe(constants.O_NOFOLLOW);
    } finally {
      file.close();
    }
  });
});
