// setBootpdLeaseTime (src/platform/darwin/bootpd.ts) against a fake CoreFoundation/SystemConfiguration
// symbol table that records every call: the sequence must be the one Cirrus Labs' softnet makes
// (SCPreferencesCreate(NULL, "softnet", "com.apple.InternetSharing.default.plist"),
// SCPreferencesSetValue(prefs, "bootpd", { DHCPLeaseTimeSecs: SInt32 N }), SCPreferencesCommitChanges),
// every object created must be released once, and a failure must come back as a warning.

import type { Pointer } from "bun:ffi";
import { describe, expect, test } from "bun:test";
import {
  BOOTPD_DECLARED_SYMBOLS,
  type BootpdSymbols,
  kCFNumberSInt32Type,
  kCFStringEncodingUTF8,
  setBootpdLeaseTime,
} from "../../src/platform/darwin/bootpd.ts";

const KEY_CALLBACKS = 0x1000 as Pointer;
const VALUE_CALLBACKS = 0x2000 as Pointer;

type Call = [string, ...unknown[]];

/** A fake table: objects are numbered handles; what they stand for is kept for the assertions. */
function fakeSymbols(failures: { setValue?: boolean; commit?: boolean; create?: boolean } = {}) {
  const calls: Call[] = [];
  const objects = new Map<number, unknown>();
  let next = 0x100;
  const make = (value: unknown): Pointer => {
    const handle = next;
    next += 0x10;
    objects.set(handle, value);
    return handle as Pointer;
  };
  const cString = (buffer: Buffer) => buffer.subarray(0, buffer.indexOf(0)).toString("utf8");
  const symbols: BootpdSymbols = {
    CFStringCreateWithCString(allocator, text, encoding) {
      calls.push(["CFStringCreateWithCString", allocator, cString(text), encoding]);
      return make(cString(text));
    },
    CFNumberCreate(allocator, type, value) {
      calls.push(["CFNumberCreate", allocator, type, value[0]]);
      return make(value[0]);
    },
    CFDictionaryCreate(allocator, keys, values, count, keyCallBacks, valueCallBacks) {
      const entries = Array.from({ length: count }, (_, i) => [
        objects.get(Number(keys[i])),
        objects.get(Number(values[i])),
      ]);
      calls.push(["CFDictionaryCreate", allocator, entries, count, keyCallBacks, valueCallBacks]);
      return make(Object.fromEntries(entries));
    },
    CFRelease(object) {
      calls.push(["CFRelease", objects.get(object)]);
      objects.delete(object);
    },
    SCPreferencesCreate(allocator, name, prefsID) {
      calls.push(["SCPreferencesCreate", allocator, objects.get(name), objects.get(prefsID)]);
      return failures.create ? null : make("preferences");
    },
    SCPreferencesSetValue(preferences, key, value) {
      calls.push(["SCPreferencesSetValue", objects.get(preferences), objects.get(key), objects.get(value)]);
      return !failures.setValue;
    },
    SCPreferencesCommitChanges(preferences) {
      calls.push(["SCPreferencesCommitChanges", objects.get(preferences)]);
      return !failures.commit;
    },
    SCError() {
      calls.push(["SCError"]);
      return 1003;
    },
    SCErrorString(status) {
      calls.push(["SCErrorString", status]);
      return null; // "unknown error"
    },
    kCFTypeDictionaryKeyCallBacks: KEY_CALLBACKS,
    kCFTypeDictionaryValueCallBacks: VALUE_CALLBACKS,
  };
  return { symbols, calls, objects };
}

describe("setBootpdLeaseTime", () => {
  test("writes { DHCPLeaseTimeSecs: N } under bootpd in the softnet InternetSharing preferences, then commits", () => {
    const { symbols, calls, objects } = fakeSymbols();
    expect(setBootpdLeaseTime(600, symbols)).toBeUndefined();
    expect(calls).toEqual([
      ["CFStringCreateWithCString", null, "softnet", kCFStringEncodingUTF8],
      ["CFStringCreateWithCString", null, "com.apple.InternetSharing.default.plist", kCFStringEncodingUTF8],
      ["SCPreferencesCreate", null, "softnet", "com.apple.InternetSharing.default.plist"],
      ["CFStringCreateWithCString", null, "DHCPLeaseTimeSecs", kCFStringEncodingUTF8],
      ["CFNumberCreate", null, kCFNumberSInt32Type, 600],
      ["CFDictionaryCreate", null, [["DHCPLeaseTimeSecs", 600]], 1, KEY_CALLBACKS, VALUE_CALLBACKS],
      ["CFStringCreateWithCString", null, "bootpd", kCFStringEncodingUTF8],
      ["SCPreferencesSetValue", "preferences", "bootpd", { DHCPLeaseTimeSecs: 600 }],
      ["SCPreferencesCommitChanges", "preferences"],
      ["CFRelease", "bootpd"],
      ["CFRelease", { DHCPLeaseTimeSecs: 600 }],
      ["CFRelease", 600],
      ["CFRelease", "DHCPLeaseTimeSecs"],
      ["CFRelease", "preferences"],
      ["CFRelease", "com.apple.InternetSharing.default.plist"],
      ["CFRelease", "softnet"],
    ]);
    expect(objects.size).toBe(0); // everything created was released exactly once
  });

  test("a refused commit is a warning with SystemConfiguration's reason; everything is still released", () => {
    const { symbols, calls, objects } = fakeSymbols({ commit: true });
    expect(setBootpdLeaseTime(120, symbols)).toBe(
      "cannot set bootpd's lease time to 120 s: SCPreferencesCommitChanges: unknown error (SCError 1003) (is softnet running as root?)",
    );
    expect(calls.map((call) => call[0])).toContain("SCErrorString");
    expect(objects.size).toBe(0);
  });

  test("a refused SetValue is a warning and nothing is committed", () => {
    const { symbols, calls, objects } = fakeSymbols({ setValue: true });
    expect(setBootpdLeaseTime(600, symbols)).toStartWith(
      "cannot set bootpd's lease time to 600 s: SCPreferencesSetValue:",
    );
    expect(calls.map((call) => call[0])).not.toContain("SCPreferencesCommitChanges");
    expect(objects.size).toBe(0);
  });

  test("no preferences session is a warning; the strings made so far are released", () => {
    const { symbols, calls, objects } = fakeSymbols({ create: true });
    expect(setBootpdLeaseTime(600, symbols)).toContain("SCPreferencesCreate");
    expect(calls.filter((call) => call[0] === "CFRelease")).toHaveLength(2);
    expect(objects.size).toBe(0);
  });

  test("a lease time that is no SInt32 of seconds is refused before any call", () => {
    for (const seconds of [0, -1, 1.5, 2 ** 31]) {
      const { symbols, calls } = fakeSymbols();
      expect(setBootpdLeaseTime(seconds, symbols)).toContain("is not a whole number of seconds");
      expect(calls).toEqual([]);
    }
  });

  test("the fake covers every symbol the module declares", () => {
    const { symbols } = fakeSymbols();
    for (const name of BOOTPD_DECLARED_SYMBOLS) expect(symbols).toHaveProperty(name);
  });
});
