// Whom softnet drops to, decided from the real ids, --user/--group and SUDO_UID, with the C calls
// faked: the rules that keep a setuid softnet from being a way to become someone else.

import { ptr } from "bun:ffi";
import { describe, expect, test } from "bun:test";
import { type IdentityCalls, resolveDropTarget } from "../../src/platform/identity.ts";

/** struct passwd / struct group laid out as the code reads them (uid at 16, gid at 20). */
function passwd(name: string, uid: number, gid: number) {
  const nameBytes = Buffer.from(`${name}\0`);
  const record = new BigUint64Array(4);
  record[0] = BigInt(ptr(nameBytes));
  const view = new DataView(record.buffer);
  view.setUint32(16, uid, true);
  view.setUint32(20, gid, true);
  return { record, nameBytes };
}

const users = [passwd("root", 0, 0), passwd("alice", 1000, 1000), passwd("nobody", 65534, 65534)];
const groups = new Map([
  ["staff", 50],
  ["alice", 1000],
]);
const groupRecords = new Map([...groups].map(([name, gid]) => [name, passwd(name, gid, 0)]));
const byName = (name: Buffer) => users.find((u) => u.nameBytes.equals(name));

function fakeCalls(realUid: number, realGid: number): IdentityCalls {
  return {
    getuid: () => realUid,
    geteuid: () => 0,
    getgid: () => realGid,
    getegid: () => 0,
    setuid: () => 0,
    setgid: () => 0,
    seteuid: () => 0,
    setegid: () => 0,
    setreuid: () => 0,
    setregid: () => 0,
    initgroups: () => 0,
    setgroups: () => 0,
    getpwnam: (name) => {
      const user = byName(name);
      return user === undefined ? null : ptr(user.record);
    },
    getpwuid: (uid) => {
      const user = users.find((u) => new DataView(u.record.buffer).getUint32(16, true) === uid);
      return user === undefined ? null : ptr(user.record);
    },
    getgrnam: (name) => {
      const record = groupRecords.get(name.subarray(0, name.length - 1).toString());
      if (record === undefined) return null;
      // struct group: gr_gid at 16.
      const group = new BigUint64Array(3);
      new DataView(group.buffer).setUint32(16, new DataView(record.record.buffer).getUint32(16, true), true);
      return ptr(group);
    },
    execv: () => -1,
    lastError: (call) => new Error(call),
  };
}

const none = { user: undefined, group: undefined };

describe("whom softnet drops to", () => {
  test("setuid, started by alice: alice", () => {
    expect(resolveDropTarget(fakeCalls(1000, 1000), none, {})).toMatchObject({
      uid: 1000,
      gid: 1000,
      userName: "alice",
    });
  });

  test("setuid: SUDO_UID from alice's environment is not believed", () => {
    expect(resolveDropTarget(fakeCalls(1000, 1000), none, { SUDO_UID: "0" })).toMatchObject({ uid: 1000 });
  });

  test("root through sudo: the sudo user", () => {
    expect(resolveDropTarget(fakeCalls(0, 0), none, { SUDO_UID: "1000", SUDO_GID: "1000" })).toMatchObject({
      uid: 1000,
      gid: 1000,
      chosenBy: "the user who ran sudo",
    });
  });

  test("root, no sudo: nobody", () => {
    expect(resolveDropTarget(fakeCalls(0, 0), none, {})).toMatchObject({ uid: 65534, userName: "nobody" });
  });

  test("root may choose --user and --group, by name or number", () => {
    expect(resolveDropTarget(fakeCalls(0, 0), { user: "alice", group: "staff" }, {})).toMatchObject({
      uid: 1000,
      gid: 50,
    });
    expect(resolveDropTarget(fakeCalls(0, 0), { user: "65534", group: "7" }, {})).toMatchObject({
      uid: 65534,
      gid: 7,
    });
  });

  test("setuid: alice may name herself, but not root or another group", () => {
    expect(resolveDropTarget(fakeCalls(1000, 1000), { user: "alice", group: "alice" }, {})).toMatchObject({
      uid: 1000,
    });
    expect(() => resolveDropTarget(fakeCalls(1000, 1000), { user: "root", group: undefined }, {})).toThrow(
      /--user root: only root may make softnet run as another user/,
    );
    expect(() => resolveDropTarget(fakeCalls(1000, 1000), { user: undefined, group: "staff" }, {})).toThrow(
      /--group staff: only root may make softnet run as another group/,
    );
  });

  test("unknown users and groups are errors that name the flag", () => {
    expect(() => resolveDropTarget(fakeCalls(0, 0), { user: "mallory", group: undefined }, {})).toThrow(
      /unknown user "mallory" \(from --user\)/,
    );
    expect(() => resolveDropTarget(fakeCalls(0, 0), { user: undefined, group: "wheel" }, {})).toThrow(
      /unknown group "wheel" \(from --group\)/,
    );
  });
});
