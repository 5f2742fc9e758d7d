// Who started softnet and whom it drops to, decided from the ids it had at exec, --user/--group
// and SUDO_UID/SUDO_GID, with the C calls faked: the rules that keep a setuid softnet, or softnet
// run through a sudoers rule, from being a way to become someone else.

import { ptr } from "bun:ffi";
import { describe, expect, test } from "bun:test";
import { type Caller, decideCaller } from "../../src/caller.ts";
import {
  becomeUser,
  type DropTarget,
  type IdentityCalls,
  resolveDropTarget,
} from "../../src/platform/identity.ts";
import { checkExposedPortsAllowed } from "../../src/port-forwards.ts";

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

function fakeCalls(realUid: number, realGid: number, calls: string[] = []): IdentityCalls {
  let uid = realUid;
  let gid = realGid;
  let groups: number[] = [];
  return {
    getuid: () => uid,
    geteuid: () => (calls.includes("setuid") ? uid : 0),
    getgid: () => gid,
    getegid: () => (calls.includes("setgid") ? gid : 0),
    setuid: (to) => {
      if (calls.includes("setuid")) return -1; // no way back once dropped
      calls.push("setuid");
      uid = to;
      return 0;
    },
    setgid: (to) => {
      calls.push("setgid");
      gid = to;
      return 0;
    },
    seteuid: () => 0,
    setegid: () => 0,
    setreuid: () => 0,
    setregid: () => 0,
    initgroups: (user) => {
      calls.push(`initgroups(${user.subarray(0, user.length - 1).toString()})`);
      return 0;
    },
    setgroups: (count, list) => {
      groups = [...(list ?? new Uint32Array()).subarray(0, count)];
      calls.push(`setgroups([${groups.join(",")}])`);
      return 0;
    },
    getgroups: (size, list) => {
      if (size !== 0) list?.set(groups.slice(0, size));
      return groups.length;
    },
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
const ALICE_GROUPS = [1000, 50];

/** Every way softnet can be started, and what it must end up as (or refuse, with which words). */
interface StartRow {
  how: string;
  real: { uid: number; gid: number; groups: number[] };
  env: Record<string, string>;
  flags: { user: string | undefined; group: string | undefined };
  kind: Caller["kind"];
  becomes?: { uid: number; gid: number; groups: number[] | undefined; userName: string };
  refused?: string;
}

const root = { uid: 0, gid: 0, groups: [0] };
const alice = { uid: 1000, gid: 1000, groups: ALICE_GROUPS };
const sudoByAlice = { SUDO_UID: "1000", SUDO_GID: "1000", SUDO_USER: "alice" };
const rows: StartRow[] = [
  {
    how: "root's own shell",
    real: root,
    env: {},
    flags: none,
    kind: "root",
    becomes: { uid: 65534, gid: 65534, groups: undefined, userName: "nobody" },
  },
  {
    how: "root's own shell, --user root",
    real: root,
    env: {},
    flags: { user: "root", group: undefined },
    kind: "root",
    becomes: { uid: 0, gid: 0, groups: undefined, userName: "root" },
  },
  {
    how: "root's own shell, --user alice --group staff",
    real: root,
    env: {},
    flags: { user: "alice", group: "staff" },
    kind: "root",
    becomes: { uid: 1000, gid: 50, groups: undefined, userName: "alice" },
  },
  {
    how: "root's own shell, a junk SUDO_UID",
    real: root,
    env: { SUDO_UID: "x" },
    flags: none,
    kind: "root",
    becomes: { uid: 65534, gid: 65534, groups: undefined, userName: "nobody" },
  },
  {
    how: "sudo by root",
    real: root,
    env: { SUDO_UID: "0", SUDO_GID: "0" },
    flags: { user: "0", group: "0" },
    kind: "root",
    becomes: { uid: 0, gid: 0, groups: undefined, userName: "root" },
  },
  {
    how: "sudo by a user",
    real: root,
    env: sudoByAlice,
    flags: none,
    kind: "sudo-user",
    becomes: { uid: 1000, gid: 1000, groups: undefined, userName: "alice" },
  },
  {
    how: "sudo by a user, naming themselves as the re-exec does",
    real: root,
    env: sudoByAlice,
    flags: { user: "1000", group: "1000" },
    kind: "sudo-user",
    becomes: { uid: 1000, gid: 1000, groups: undefined, userName: "alice" },
  },
  {
    how: "sudo by a user, --user root",
    real: root,
    env: sudoByAlice,
    flags: { user: "root", group: undefined },
    kind: "sudo-user",
    refused: "--user root: softnet started by uid 1000 (through sudo) runs only as uid 1000",
  },
  {
    how: "sudo by a user, --user 0",
    real: root,
    env: sudoByAlice,
    flags: { user: "0", group: undefined },
    kind: "sudo-user",
    refused: "--user 0: softnet started by uid 1000 (through sudo) runs only as uid 1000",
  },
  {
    how: "sudo by a user, --user of another user",
    real: root,
    env: sudoByAlice,
    flags: { user: "nobody", group: undefined },
    kind: "sudo-user",
    refused: "--user nobody: softnet started by uid 1000 (through sudo) runs only as uid 1000",
  },
  {
    how: "sudo by a user, --group 0",
    real: root,
    env: sudoByAlice,
    flags: { user: undefined, group: "0" },
    kind: "sudo-user",
    refused: "--group 0: softnet started by uid 1000 (through sudo) runs only as gid 1000",
  },
  {
    how: "sudo by a user, --group of a group they are in",
    real: root,
    env: sudoByAlice,
    flags: { user: undefined, group: "staff" },
    kind: "sudo-user",
    refused: "--group staff: softnet started by uid 1000 (through sudo) runs only as gid 1000",
  },
  {
    how: "setuid by a user",
    real: alice,
    env: {},
    flags: none,
    kind: "setuid-user",
    becomes: { uid: 1000, gid: 1000, groups: ALICE_GROUPS, userName: "alice" },
  },
  {
    how: "setuid by a user who cleared their groups",
    real: { ...alice, groups: [] },
    env: {},
    flags: none,
    kind: "setuid-user",
    becomes: { uid: 1000, gid: 1000, groups: [], userName: "alice" },
  },
  {
    how: "setuid by a user, naming themselves",
    real: alice,
    env: {},
    flags: { user: "alice", group: "alice" },
    kind: "setuid-user",
    becomes: { uid: 1000, gid: 1000, groups: ALICE_GROUPS, userName: "alice" },
  },
  {
    how: "setuid by a user, --user root",
    real: alice,
    env: {},
    flags: { user: "root", group: undefined },
    kind: "setuid-user",
    refused: "--user root: softnet started by uid 1000 (through the setuid bit) runs only as uid 1000",
  },
  {
    how: "setuid by a user, --group staff",
    real: alice,
    env: {},
    flags: { user: undefined, group: "staff" },
    kind: "setuid-user",
    refused: "--group staff: softnet started by uid 1000 (through the setuid bit) runs only as gid 1000",
  },
  {
    how: "setuid by a user with SUDO_UID=0 forged",
    real: alice,
    env: { SUDO_UID: "0", SUDO_GID: "0" },
    flags: none,
    kind: "setuid-user",
    becomes: { uid: 1000, gid: 1000, groups: ALICE_GROUPS, userName: "alice" },
  },
  {
    how: "setuid by a user with another user's SUDO_UID forged",
    real: alice,
    env: { SUDO_UID: "65534", SUDO_GID: "65534" },
    flags: none,
    kind: "setuid-user",
    becomes: { uid: 1000, gid: 1000, groups: ALICE_GROUPS, userName: "alice" },
  },
  {
    how: "setuid by a user with SUDO_UID forged, --user root",
    real: alice,
    env: { SUDO_UID: "0" },
    flags: { user: "root", group: undefined },
    kind: "setuid-user",
    refused: "--user root: softnet started by uid 1000 (through the setuid bit) runs only as uid 1000",
  },
  // A setuid binary run by root is root's own shell: the real uid is 0.
  {
    how: "setuid by root",
    real: root,
    env: {},
    flags: { user: "alice", group: undefined },
    kind: "root",
    becomes: { uid: 1000, gid: 1000, groups: undefined, userName: "alice" },
  },
];

describe("every way softnet can be started: who the caller is, and what it drops to", () => {
  for (const row of rows) {
    test(row.how, () => {
      const calls = fakeCalls(row.real.uid, row.real.gid);
      const caller = decideCaller(row.real, row.env);
      expect(caller.kind).toBe(row.kind);
      // Only a real root may choose a privileged port, any bridge, any user: the guards ask this.
      const rootOnly = () =>
        checkExposedPortsAllowed([{ externalPort: 22, internalPort: 22 }], caller.kind === "root");
      if (row.kind === "root") expect(rootOnly).not.toThrow();
      else expect(rootOnly).toThrow(/only root may expose a host port below 1024/);
      if (row.refused !== undefined) {
        expect(() => resolveDropTarget(calls, caller, row.flags)).toThrow(row.refused);
        return;
      }
      const target = resolveDropTarget(calls, caller, row.flags);
      expect({ uid: target.uid, gid: target.gid, groups: target.groups, userName: target.userName }).toEqual(
        row.becomes!,
      );
      expect(target.rootAllowed).toBe(row.kind === "root");
    });
  }
});

describe("the drop itself", () => {
  test("a setuid caller gets exactly the groups it had at exec, never the group database's", () => {
    const calls: string[] = [];
    const identity = fakeCalls(1000, 1000, calls);
    const cleared = decideCaller({ uid: 1000, gid: 1000, groups: [] }, {});
    becomeUser(identity, resolveDropTarget(identity, cleared, none));
    expect(calls).toEqual(["setgroups([])", "setgid", "setuid"]);
    const kept: string[] = [];
    const withGroups = fakeCalls(1000, 1000, kept);
    becomeUser(withGroups, resolveDropTarget(withGroups, decideCaller(alice, {}), none));
    expect(kept).toEqual(["setgroups([1000,50])", "setgid", "setuid"]);
  });

  test("a user through sudo gets the group database's groups for their name", () => {
    const calls: string[] = [];
    const identity = fakeCalls(0, 0, calls);
    becomeUser(identity, resolveDropTarget(identity, decideCaller(root, sudoByAlice), none));
    expect(calls).toEqual(["initgroups(alice)", "setgid", "setuid"]);
  });

  test("a target of uid 0 that a real root did not choose is refused before any call", () => {
    const calls: string[] = [];
    const forged: DropTarget = {
      uid: 0,
      gid: 0,
      userName: "root",
      groups: undefined,
      rootAllowed: false,
      chosenBy: "the user who ran sudo",
    };
    expect(() => becomeUser(fakeCalls(0, 0, calls), forged)).toThrow(
      "softnet runs as root only when a real root asks for it",
    );
    expect(calls).toEqual([]);
  });

  test("sudo without SUDO_GID: the user's passwd group", () => {
    expect(decideCaller(root, { SUDO_UID: "1000" }, () => 100)).toEqual({
      kind: "sudo-user",
      uid: 1000,
      gid: 100,
      groups: undefined,
    });
  });

  test("unknown users and groups are errors that name the flag", () => {
    const rootCaller = decideCaller(root, {});
    expect(() =>
      resolveDropTarget(fakeCalls(0, 0), rootCaller, { user: "mallory", group: undefined }),
    ).toThrow(/unknown user "mallory" \(from --user\)/);
    expect(() => resolveDropTarget(fakeCalls(0, 0), rootCaller, { user: undefined, group: "wheel" })).toThrow(
      /unknown group "wheel" \(from --group\)/,
    );
  });
});
