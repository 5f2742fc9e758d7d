// A stand-in for CoreFoundation and SystemConfiguration that keeps softnet's preferences file in
// memory, implementing both tables the bootpd code takes: BootpdSymbols (bootpd.ts writes) and
// BootpdReadSymbols (doctor-probes.ts reads, saves and restores). Objects are numbered handles with
// reference counts, so a test can see that every object is released exactly as often as it was
// created or retained. Test code only.
import type { Pointer } from "bun:ffi";
import type { BootpdSymbols } from "../../src/platform/darwin/bootpd.ts";
import { kCFNumberSInt32Type } from "../../src/platform/darwin/bootpd.ts";
import type { BootpdReadSymbols } from "../../src/platform/darwin/doctor-probes.ts";

type Value = string | number | { [key: string]: Value } | "preferences";
const DICTIONARY_TYPE = 18n;
const NUMBER_TYPE = 22n;
const STRING_TYPE = 7n;

export interface FakePreferences {
  readonly symbols: BootpdSymbols & BootpdReadSymbols;
  /** The "file": what a commit wrote last (a deep copy), keyed like the plist. */
  file: Record<string, Value>;
  /** Objects still alive (created or retained more often than released), by handle. */
  live(): Map<number, { value: Value; references: number }>;
  commits: number;
  /** Makes the next SCPreferencesCommitChanges fail (and count as not written). */
  failNextCommit: boolean;
}

export function fakePreferences(initial: Record<string, Value> = {}): FakePreferences {
  const objects = new Map<number, { value: Value; references: number; kind: bigint | "preferences" }>();
  // Each SCPreferences object sees a snapshot of the file at creation, as the real one does.
  const sessions = new Map<number, Record<string, Value>>();
  let next = 0x1000;
  const copy = <T>(value: T): T => structuredClone(value);
  /** A new object: owned by the caller (one reference), or borrowed from a container (none). */
  const make = (value: Value, kind: bigint | "preferences", owned = true): Pointer => {
    const handle = next;
    next += 0x10;
    objects.set(handle, { value, references: owned ? 1 : 0, kind });
    return handle as Pointer;
  };
  const contentOf = (handle: Pointer | number): Value => {
    const object = objects.get(Number(handle));
    if (object === undefined)
      throw new Error(`fake CoreFoundation: use of a released object 0x${Number(handle).toString(16)}`);
    return object.value;
  };
  const kindOf = (value: Value): bigint =>
    typeof value === "number" ? NUMBER_TYPE : typeof value === "string" ? STRING_TYPE : DICTIONARY_TYPE;
  const cString = (buffer: Buffer) => buffer.subarray(0, buffer.indexOf(0)).toString("utf8");
  let scError = 0;
  const fake: FakePreferences = {
    file: copy(initial),
    commits: 0,
    failNextCommit: false,
    live: () =>
      new Map(
        [...objects.entries()]
          .filter(([, object]) => object.references > 0)
          .map(([handle, object]) => [handle, { value: object.value, references: object.references }]),
      ),
    symbols: {
      CFStringCreateWithCString: (_allocator, text) => make(cString(text), STRING_TYPE),
      CFNumberCreate: (_allocator, type, value) => {
        if (type !== kCFNumberSInt32Type) throw new Error(`fake CFNumberCreate: type ${type}`);
        return make(value[0]!, NUMBER_TYPE);
      },
      CFDictionaryCreate: (_allocator, keys, values, count) => {
        const dictionary: Record<string, Value> = {};
        for (let i = 0; i < count; i++)
          dictionary[contentOf(Number(keys[i])) as string] = copy(contentOf(Number(values[i])));
        return make(dictionary, DICTIONARY_TYPE);
      },
      CFRelease: (object) => {
        const entry = objects.get(Number(object));
        if (entry === undefined || entry.references === 0) {
          throw new Error(`fake CFRelease: 0x${Number(object).toString(16)} is not the caller's to release`);
        }
        // Borrowed objects stay readable once the borrower's reference is gone (their container has them).
        if (--entry.references === 0 && entry.kind === "preferences") sessions.delete(Number(object));
      },
      CFRetain: (object) => {
        const entry = objects.get(Number(object));
        if (entry === undefined) throw new Error("fake CFRetain of a released object");
        entry.references++;
        return object;
      },
      CFGetTypeID: (object) => {
        const entry = objects.get(Number(object))!;
        return entry.kind === "preferences" ? 99n : entry.kind;
      },
      CFDictionaryGetTypeID: () => DICTIONARY_TYPE,
      CFNumberGetTypeID: () => NUMBER_TYPE,
      CFDictionaryGetValue: (dictionary, key) => {
        const value = (contentOf(dictionary) as Record<string, Value>)[contentOf(key) as string];
        // "Get" rule: owned by the dictionary, not the caller.
        return value === undefined ? null : make(value, kindOf(value), false);
      },
      CFNumberGetValue: (number, _type, value) => {
        value[0] = contentOf(number) as number;
        return true;
      },
      SCPreferencesCreate: (_allocator, name, prefsID) => {
        if (
          contentOf(name) !== "softnet" ||
          contentOf(prefsID) !== "com.apple.InternetSharing.default.plist"
        ) {
          throw new Error("fake SCPreferencesCreate: unexpected name or file");
        }
        const handle = make("preferences", "preferences");
        sessions.set(Number(handle), copy(fake.file));
        return handle;
      },
      SCPreferencesGetValue: (preferences, key) => {
        const value = sessions.get(Number(preferences))![contentOf(key) as string];
        return value === undefined ? null : make(value, kindOf(value), false);
      },
      SCPreferencesSetValue: (preferences, key, value) => {
        sessions.get(Number(preferences))![contentOf(key) as string] = copy(contentOf(value));
        return true;
      },
      SCPreferencesRemoveValue: (preferences, key) => {
        const session = sessions.get(Number(preferences))!;
        const name = contentOf(key) as string;
        if (!(name in session)) {
          scError = 1004; // kSCStatusNoKey
          return false;
        }
        delete session[name];
        return true;
      },
      SCPreferencesCommitChanges: (preferences) => {
        if (fake.failNextCommit) {
          fake.failNextCommit = false;
          scError = 1003; // kSCStatusAccessError
          return false;
        }
        fake.file = copy(sessions.get(Number(preferences))!);
        fake.commits++;
        return true;
      },
      SCError: () => scError,
      SCErrorString: () => null,
      kCFTypeDictionaryKeyCallBacks: 0x10 as Pointer,
      kCFTypeDictionaryValueCallBacks: 0x20 as Pointer,
    },
  };
  return fake;
}
