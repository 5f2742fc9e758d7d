// asTargetUser (identity.ts): for the compile before vmnet starts, the process becomes the target
// user, real and effective ids and groups, with the saved uid still 0, and then takes root back.
// Checked through the kernel's own account (/proc/self/status), in a child process, with glibc.
import { describe, expect, test } from "bun:test";
import { REQUIRED_IN_CI } from "../support/ci.ts";
import { bunCommand } from "../support/emulation.ts";

const isRoot = process.getuid?.() === 0;

const CHILD = `
import { readFileSync } from "node:fs";
import { asTargetUser, callerOf, resolveDropTarget } from "./src/platform/identity.ts";
import { linuxIdentityCalls } from "./src/platform/linux/privileges.ts";
const status = () => Object.fromEntries(readFileSync("/proc/self/status", "utf8").split("\\n")
  .filter((line) => /^(Uid|Gid|Groups):/.test(line)).map((line) => line.split(":\\t")).map(([k, v]) => [k, v.trim().split(/\\s+/).join(" ")]));
const target = resolveDropTarget(linuxIdentityCalls, callerOf(linuxIdentityCalls, {}), { user: "nobody", group: undefined });
const during = asTargetUser(linuxIdentityCalls, target, () => status());
let failed = "none";
try { asTargetUser(linuxIdentityCalls, target, () => { throw new Error("work failed"); }); } catch (error) { failed = error.message; }
console.log(JSON.stringify({ target, during, after: status(), failed }));
`;

describe.skipIf(!isRoot && !REQUIRED_IN_CI)("acting as the target user for a moment", () => {
  test("real and effective ids and groups are the target's, saved uid 0; root comes back, also after a throw", () => {
    const run = Bun.spawnSync([...bunCommand(), "-e", CHILD], {
      cwd: `${import.meta.dir}/../..`,
      stderr: "pipe",
    });
    expect(run.exitCode, run.stderr.toString()).toBe(0);
    const { target, during, after, failed } = JSON.parse(run.stdout.toString());
    const uid = target.uid;
    const gid = target.gid;
    // /proc: real effective saved filesystem.
    expect(during.Uid).toBe(`${uid} ${uid} 0 ${uid}`);
    expect(during.Gid).toBe(`${gid} ${gid} 0 ${gid}`);
    expect(
      during.Groups.split(" ")
        .filter(Boolean)
        .every((group: string) => Number(group) !== 0),
    ).toBe(true);
    expect(after.Uid).toBe("0 0 0 0");
    expect(after.Gid).toBe("0 0 0 0");
    expect(failed).toBe("work failed");
  });
});
