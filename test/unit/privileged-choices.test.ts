// What only root may choose: a host port below 1024 for --expose. Who counts as root: caller.ts
// (the table of every way to start softnet is in identity.test.ts). And how softnet asks sudo.
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decideCaller } from "../../src/caller.ts";
import type { ExposedPort } from "../../src/cli.ts";
import {
  escalationCommand,
  isRootOwnedAndLocked,
  withoutIdentityFlags,
} from "../../src/platform/identity.ts";
import { checkExposedPortsAllowed } from "../../src/port-forwards.ts";
import { REQUIRED_IN_CI } from "../support/ci.ts";
import { expectSoftnetError } from "../support/errors.ts";

const ports = (...pairs: Array<[number, number]>): ExposedPort[] =>
  pairs.map(([externalPort, internalPort]) => ({ externalPort, internalPort }));

describe("who started softnet", () => {
  const rows: Array<{ name: string; uid: number; env: Record<string, string>; root: boolean }> = [
    { name: "root itself", uid: 0, env: {}, root: true },
    { name: "root through sudo by root", uid: 0, env: { SUDO_UID: "0" }, root: true },
    { name: "a user through sudo", uid: 0, env: { SUDO_UID: "1000" }, root: false },
    { name: "a setuid caller", uid: 1000, env: {}, root: false },
    { name: "a setuid caller claiming SUDO_UID=0", uid: 1000, env: { SUDO_UID: "0" }, root: false },
    { name: "root with a junk SUDO_UID", uid: 0, env: { SUDO_UID: "x" }, root: true },
  ];
  for (const row of rows) {
    test(row.name, () => {
      expect(decideCaller({ uid: row.uid, gid: row.uid, groups: [] }, row.env).kind === "root").toBe(
        row.root,
      );
    });
  }
});

describe("the sudo re-exec names the caller, whatever the command line said", () => {
  test("--user/--group in either form are left out (the re-exec appends the caller's own ids)", () => {
    expect(
      withoutIdentityFlags([
        "--vm-fd",
        "0",
        "--user",
        "root",
        "--bridge",
        "br0",
        "--group=0",
        "--user=0",
        "--group",
        "wheel",
        "--capture",
        "/tmp/x",
      ]),
    ).toEqual(["--vm-fd", "0", "--bridge", "br0", "--capture", "/tmp/x"]);
  });
});

describe("--expose below 1024 is root's", () => {
  test("a user may expose 1024 and up", () => {
    expect(() => checkExposedPortsAllowed(ports([1024, 22], [2222, 22], [65535, 80]), false)).not.toThrow();
  });
  test("a user may not expose the host's ssh port", () => {
    expectSoftnetError(
      () => checkExposedPortsAllowed(ports([2222, 22], [22, 22]), false),
      "--expose 22:22: only root may expose a host port below 1024",
    );
  });
  test("a user may not expose port 1023", () => {
    expectSoftnetError(
      () => checkExposedPortsAllowed(ports([1023, 8080]), false),
      "--expose 1023:8080: only root may expose a host port below 1024",
    );
  });
  test("root may expose any port", () => {
    expect(() => checkExposedPortsAllowed(ports([22, 22], [80, 8080]), true)).not.toThrow();
  });
});

describe("sudo escalation asks for the root-owned copy only when nobody else can change it", () => {
  // Real files in a real tree: the test runs as root, so what it creates is root-owned.
  const root = mkdtempSync(join(tmpdir(), "softnet-copy-"));
  chmodSync(root, 0o755);
  const libexec = join(root, "libexec");
  mkdirSync(libexec, { mode: 0o755 });
  const copy = join(libexec, "softnet");
  writeFileSync(copy, "#!/bin/true\n", { mode: 0o755 });
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  // argv of a compiled softnet: the executable, then its embedded entry point.
  const self = [process.execPath, "/$bunfs/root/softnet"];
  // Only meaningful where the tree's ancestors (/tmp is 1777: world-writable) are root's.
  const lockedAncestors = isRootOwnedAndLocked(tmpdir());

  test("a missing copy: softnet asks for itself", () => {
    expect(escalationCommand(join(root, "nothing-here"), self)).toEqual({
      executable: process.execPath,
      prefix: [],
    });
  });
  test("a copy under a world-writable directory (/tmp) is not trusted", () => {
    expect(lockedAncestors).toBe(false);
    expect(escalationCommand(copy, self).executable).toBe(process.execPath);
  });
  test.skipIf(process.getuid?.() !== 0 && !REQUIRED_IN_CI)(
    "root-owned, 0755 all the way up: the copy is used",
    () => {
      expect(isRootOwnedAndLocked("/usr/bin/env")).toBe(true);
      expect(escalationCommand("/usr/bin/env", self)).toEqual({ executable: "/usr/bin/env", prefix: [] });
    },
  );
  test("group- or other-writable, a symlink, or another owner: not trusted", () => {
    const writable = join(libexec, "writable");
    writeFileSync(writable, "", { mode: 0o775 });
    chmodSync(writable, 0o775);
    expect(isRootOwnedAndLocked(writable)).toBe(false);
    const link = join(libexec, "link");
    symlinkSync("/usr/bin/env", link);
    expect(isRootOwnedAndLocked(link)).toBe(false);
    const owned = join(libexec, "owned");
    writeFileSync(owned, "", { mode: 0o755 });
    chownSync(owned, 65534, 65534);
    expect(isRootOwnedAndLocked(owned)).toBe(false);
    expect(isRootOwnedAndLocked("relative/softnet")).toBe(false);
  });
});
