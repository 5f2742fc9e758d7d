// The doctor's bootpd check on macOS writes --bootpd-lease-time the way softnet does (bootpd.ts),
// reads it back, and puts the previous setting back (doctor-probes.ts). Against an in-memory
// stand-in for CoreFoundation/SystemConfiguration (test/darwin/fake-bootpd.ts): the setting must
// read back as written, come back exactly as it was (or be gone again when there was none), leave
// other keys alone, and every object the code creates or retains must be released once.
import { describe, expect, test } from "bun:test";
import { setBootpdLeaseTime } from "../../src/platform/darwin/bootpd.ts";
import {
  readBootpdLeaseTime,
  restoreBootpdSettings,
  saveBootpdSettings,
} from "../../src/platform/darwin/doctor-probes.ts";
import { fakePreferences } from "../darwin/fake-bootpd.ts";

/** The doctor's sequence: save, write, read back, restore. */
function cycle(initial: Record<string, never> | Record<string, unknown>, seconds: number) {
  const fake = fakePreferences(initial as never);
  const saved = saveBootpdSettings(fake.symbols);
  if (typeof saved === "string") throw new Error(saved);
  const before = readBootpdLeaseTime(fake.symbols);
  const warning = setBootpdLeaseTime(seconds, fake.symbols);
  const written = structuredClone(fake.file);
  const after = readBootpdLeaseTime(fake.symbols);
  const restored = restoreBootpdSettings(fake.symbols, saved);
  return { fake, before, warning, written, after, restored };
}

describe("bootpd's lease time: written, read back, put back", () => {
  test("no setting before: it reads back as written, and is gone again afterwards", () => {
    const run = cycle({ unrelated: "kept" }, 600);
    expect(run.before).toEqual({ kind: "absent" });
    expect(run.warning).toBeUndefined();
    expect(run.written).toEqual({ unrelated: "kept", bootpd: { DHCPLeaseTimeSecs: 600 } });
    expect(run.after).toEqual({ kind: "seconds", seconds: 600 });
    expect(run.restored).toBeUndefined();
    expect(run.fake.file).toEqual({ unrelated: "kept" });
    expect(run.fake.live().size).toBe(0);
  });

  test("an earlier setting, with keys softnet does not write, comes back whole", () => {
    const original = { bootpd: { DHCPLeaseTimeSecs: 86400, reuse_addresses: 1 }, unrelated: "kept" };
    const run = cycle(original, 120);
    expect(run.before).toEqual({ kind: "seconds", seconds: 86400 });
    // softnet replaces the whole "bootpd" dictionary, as Cirrus Labs' softnet does.
    expect(run.written.bootpd).toEqual({ DHCPLeaseTimeSecs: 120 });
    expect(run.after).toEqual({ kind: "seconds", seconds: 120 });
    expect(run.restored).toBeUndefined();
    expect(run.fake.file).toEqual(original);
    expect(run.fake.live().size).toBe(0);
  });

  test("what is not a lease time is reported, not misread", () => {
    expect(readBootpdLeaseTime(fakePreferences({ bootpd: "text" }).symbols)).toEqual({
      kind: "unreadable",
      why: '"bootpd" is not a dictionary',
    });
    expect(readBootpdLeaseTime(fakePreferences({ bootpd: { DHCPLeaseTimeSecs: "600" } }).symbols)).toEqual({
      kind: "unreadable",
      why: '"DHCPLeaseTimeSecs" is not a number',
    });
    expect(readBootpdLeaseTime(fakePreferences({ bootpd: {} }).symbols)).toEqual({ kind: "absent" });
  });

  test("a failed commit while putting it back is reported, and the saved value is still released", () => {
    const fake = fakePreferences({ bootpd: { DHCPLeaseTimeSecs: 86400 } });
    const saved = saveBootpdSettings(fake.symbols);
    if (typeof saved === "string") throw new Error(saved);
    expect(fake.live().size).toBe(1); // the retained dictionary
    expect(setBootpdLeaseTime(600, fake.symbols)).toBeUndefined();
    fake.failNextCommit = true;
    expect(restoreBootpdSettings(fake.symbols, saved)).toMatch(/^SCPreferencesCommitChanges: .*SCError 1003/);
    expect(fake.file).toEqual({ bootpd: { DHCPLeaseTimeSecs: 600 } });
    expect(fake.live().size).toBe(0);
  });
});
