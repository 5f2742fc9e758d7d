// Reading /etc/softnet/bridge.conf (src/platform/linux/bridge-acl-file.ts): trusted only when only
// root could have written it, and the refusal a caller who is not root gets. The tests point the
// reader at files in a temporary directory through its path argument (the program itself always
// reads the constant path). Needs root, to give files to root and to others.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decideCaller } from "../../src/caller.ts";
import {
  BRIDGE_ACL_PATH,
  enforceBridgeAcl,
  readBridgeAcl,
} from "../../src/platform/linux/bridge-acl-file.ts";
import { REQUIRED_IN_CI } from "../support/ci.ts";
import { expectSoftnetError } from "../support/errors.ts";

const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;

describe.skipIf(!isRoot && !REQUIRED_IN_CI)("the bridge access list file", () => {
  let base: string;
  let count = 0;

  beforeAll(() => {
    base = mkdtempSync(join(tmpdir(), "softnet-acl-"));
    chmodSync(base, 0o755);
  });
  afterAll(() => rmSync(base, { recursive: true, force: true }));

  /** A fresh directory (like /etc/softnet) holding bridge.conf with `text`; returns the file's path. */
  function aclFile(
    text: string,
    options: { mode?: number; uid?: number; directoryMode?: number; directoryUid?: number } = {},
  ): string {
    const directory = join(base, `etc-softnet-${++count}`);
    mkdirSync(directory);
    const file = join(directory, "bridge.conf");
    writeFileSync(file, text);
    chmodSync(file, options.mode ?? 0o644);
    chownSync(file, options.uid ?? 0, 0);
    chmodSync(directory, options.directoryMode ?? 0o755);
    chownSync(directory, options.directoryUid ?? 0, 0);
    return file;
  }

  test("the program's path is the constant /etc/softnet/bridge.conf", () => {
    expect(BRIDGE_ACL_PATH).toBe("/etc/softnet/bridge.conf");
  });

  test("a root-owned file, not writable by others, is read and parsed", () => {
    const file = aclFile("# lab\nallow br0\ndeny br1\n", { mode: 0o600 });
    expect(readBridgeAcl(file)).toEqual({
      source: file,
      rules: [
        { action: "allow", bridge: "br0", line: 2 },
        { action: "deny", bridge: "br1", line: 3 },
      ],
      caps: [],
    });
  });

  test("a missing file is a refusal that names it", () => {
    const file = join(aclFile(""), "..", "missing.conf");
    const error = expectSoftnetError(() => readBridgeAcl(file), `${file} does not exist`);
    expect(error.hint).toContain("allow br0");
  });

  test("a missing directory too", () => {
    const file = join(base, "no-such-dir", "bridge.conf");
    expectSoftnetError(() => readBridgeAcl(file), `${file} does not exist`);
  });

  const untrusted: Array<[string, Parameters<typeof aclFile>[1], RegExp]> = [
    [
      "a file owned by another user",
      { uid: NOBODY },
      /bridge\.conf is owned by uid 65534, not by root: softnet does not trust it$/,
    ],
    [
      "a group-writable file",
      { mode: 0o664 },
      /bridge\.conf is writable by its group or by others \(mode 0664\)/,
    ],
    [
      "a world-writable file",
      { mode: 0o646 },
      /bridge\.conf is writable by its group or by others \(mode 0646\)/,
    ],
    [
      "a directory owned by another user",
      { directoryUid: NOBODY },
      /etc-softnet-\d+ is owned by uid 65534, not by root/,
    ],
    [
      "a world-writable directory",
      { directoryMode: 0o777 },
      /etc-softnet-\d+ is writable by its group or by others \(mode 0777\)/,
    ],
  ];
  for (const [what, options, message] of untrusted) {
    test(`${what} is not trusted`, () => {
      const file = aclFile("allow all\n", options);
      const error = expectSoftnetError(() => readBridgeAcl(file), message);
      expect(error.hint).toContain("chown root; chmod go-w");
    });
  }

  test("a symbolic link is not followed, even to a good file", () => {
    const good = aclFile("allow all\n");
    const directory = join(base, `etc-softnet-${++count}`);
    mkdirSync(directory, { mode: 0o755 });
    symlinkSync(good, join(directory, "bridge.conf"));
    expectSoftnetError(
      () => readBridgeAcl(join(directory, "bridge.conf")),
      "is not a file but a symbolic link",
    );
  });

  test("a directory that is a symbolic link is not followed either", () => {
    const good = aclFile("allow all\n");
    const linked = join(base, `linked-${++count}`);
    symlinkSync(join(good, ".."), linked);
    expectSoftnetError(
      () => readBridgeAcl(join(linked, "bridge.conf")),
      "is not a directory but a symbolic link",
    );
  });

  test("something that is not a regular file (a FIFO would block a plain read) is refused", () => {
    const file = aclFile("");
    rmSync(file);
    expect(Bun.spawnSync(["mkfifo", "-m", "644", file]).exitCode).toBe(0);
    expectSoftnetError(() => readBridgeAcl(file), `${file} is not a regular file`);
  });

  test("a file larger than 64 KiB is refused rather than read whole", () => {
    const file = aclFile(`# ${"x".repeat(70 * 1024)}\nallow all\n`);
    expectSoftnetError(() => readBridgeAcl(file), `${file} is larger than 65536 bytes`);
  });

  test("a parse error names the file and the line", () => {
    const file = aclFile("allow br0\nallow br0 br1\n");
    expectSoftnetError(() => readBridgeAcl(file), `${file} line 2: "allow" takes one bridge name`);
  });

  describe("enforceBridgeAcl", () => {
    /** Who started softnet, as the runtime decides it (caller.ts). */
    const started = (uid: number, env: Record<string, string> = {}) =>
      decideCaller({ uid, gid: uid, groups: [] }, env);
    test("root is not limited: the file is not even read", () => {
      const missing = join(base, "nothing-here", "bridge.conf");
      expect(() => enforceBridgeAcl("docker0", started(0), missing)).not.toThrow();
      expect(() => enforceBridgeAcl("docker0", started(0, { SUDO_UID: "0" }), missing)).not.toThrow();
    });

    test("a setuid caller without a file is refused, the file named", () => {
      const missing = join(base, "nothing-here", "bridge.conf");
      expectSoftnetError(() => enforceBridgeAcl("br0", started(1000), missing), `${missing} does not exist`);
    });

    test("a setuid caller may use what the file allows, and nothing else", () => {
      const file = aclFile("allow br0\n");
      expect(() => enforceBridgeAcl("br0", started(1000), file)).not.toThrow();
      const error = expectSoftnetError(
        () => enforceBridgeAcl("docker0", started(1000), file),
        `uid 1000 may not use bridge docker0: no line of ${file} says "allow docker0" or "allow all"`,
      );
      expect(error.hint).toBe(`root can allow it with a line "allow docker0" in ${file}`);
    });

    test("a user through sudo is limited the same way (SUDO_UID with real uid 0)", () => {
      const file = aclFile("allow all\ndeny virbr0\n");
      expect(() => enforceBridgeAcl("br0", started(0, { SUDO_UID: "1000" }), file)).not.toThrow();
      expectSoftnetError(
        () => enforceBridgeAcl("virbr0", started(0, { SUDO_UID: "1000" }), file),
        `uid 1000 may not use bridge virbr0: line 2 of ${file} says "deny virbr0"`,
      );
    });

    test("the cap for the bridge comes back with the permission; root gets none", () => {
      const file = aclFile("allow all\nmax-vms-per-user 3\n");
      expect(enforceBridgeAcl("br0", started(1000), file)).toEqual({
        max: 3,
        reason: `line 2 of ${file} says "max-vms-per-user 3"`,
      });
      expect(enforceBridgeAcl("br0", started(0), file)).toBeUndefined();
    });

    test("a setuid caller cannot escape by claiming SUDO_UID=0", () => {
      const missing = join(base, "nothing-here", "bridge.conf");
      expectSoftnetError(
        () => enforceBridgeAcl("br0", started(1000, { SUDO_UID: "0" }), missing),
        "does not exist",
      );
    });
  });
});
