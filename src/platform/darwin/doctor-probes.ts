/**
 * macOS facts only `softnet doctor` asks for: the macOS version, and bootpd's lease time read back
 * from the preferences softnet writes (bootpd.ts), saved before the doctor writes it and restored
 * afterwards so the doctor leaves the setting as it found it.
 *
 * Like bootpd.ts, the CoreFoundation/SystemConfiguration calls go through a symbol table:
 * openBootpdReadSymbols() binds the frameworks at their constant paths (macOS only), and the unit
 * test (test/unit/doctor-bootpd.test.ts) passes a fake that keeps the preferences in memory.
 *
 * Ownership follows CoreFoundation's rules: objects from *Create* and CFRetain are ours to
 * CFRelease; SCPreferencesGetValue and CFDictionaryGetValue return objects owned by the container,
 * valid while it lives, so the saved dictionary is CFRetain'ed before its SCPreferences goes.
 */
import { dlopen, FFIType, type Pointer } from "bun:ffi";
import {
  BOOTPD_KEY,
  BOOTPD_LEASE_TIME_KEY,
  BOOTPD_PREFERENCES_FILE,
  BOOTPD_PREFERENCES_NAME,
  kCFNumberSInt32Type,
  kCFStringEncodingUTF8,
} from "./bootpd.ts";
import {
  address0,
  COREFOUNDATION_FRAMEWORK,
  type DarwinSystem,
  readCString,
  SYSTEMCONFIGURATION_FRAMEWORK,
} from "./system.ts";

const { i32, u32, i64, u64, ptr } = FFIType;

/**
 * The macOS product version ("15.1"): sysctlbyname("kern.osproductversion"), a string that xnu's
 * bsd/kern/kern_sysctl.c serves (macOS 10.13.4+; Bun reads it the same way for its own checks).
 * sysctlbyname is declared in <sys/sysctl.h> and takes no variadic arguments, so a fixed binding is
 * safe on arm64. undefined when the system underneath is not macOS (the vmnet double on Linux) or
 * the call fails.
 */
export function macosProductVersion(system: DarwinSystem): string | undefined {
  if (system.kernel.name !== "darwin") return undefined;
  // int sysctlbyname(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen);
  const { sysctlbyname } = dlopen(system.libraries.libc, {
    sysctlbyname: { args: [ptr, ptr, ptr, ptr, u64], returns: i32 },
  }).symbols;
  const value = new Uint8Array(256);
  const length = new BigUint64Array([BigInt(value.length)]);
  if (sysctlbyname(Buffer.from("kern.osproductversion\0"), value, length, null, 0) !== 0) return undefined;
  const end = value.indexOf(0);
  return Buffer.from(value.subarray(0, end < 0 ? Number(length[0]) : end)).toString("utf8");
}

type Native = Pointer | bigint | null;

/**
 * The calls that read and restore bootpd's settings, with their C prototypes: CoreFoundation's
 * CFBase.h (CFTypeID is unsigned long; CFIndex is signed long), CFString.h, CFDictionary.h,
 * CFNumber.h (CFNumberType is a CFIndex), and SystemConfiguration's SCPreferences.h and
 * SystemConfiguration.h (SCError, SCErrorString). Boolean is an unsigned char.
 */
export interface BootpdReadSymbols {
  // CFStringRef CFStringCreateWithCString(CFAllocatorRef alloc, const char *cStr, CFStringEncoding encoding);
  CFStringCreateWithCString(allocator: null, text: Buffer, encoding: number): Native;
  // void CFRelease(CFTypeRef cf);
  CFRelease(object: Pointer): void;
  // CFTypeRef CFRetain(CFTypeRef cf);
  CFRetain(object: Pointer): Native;
  // CFTypeID CFGetTypeID(CFTypeRef cf);   CFTypeID is unsigned long
  CFGetTypeID(object: Pointer): number | bigint;
  // CFTypeID CFDictionaryGetTypeID(void);
  CFDictionaryGetTypeID(): number | bigint;
  // CFTypeID CFNumberGetTypeID(void);
  CFNumberGetTypeID(): number | bigint;
  // const void *CFDictionaryGetValue(CFDictionaryRef theDict, const void *key);
  CFDictionaryGetValue(dictionary: Pointer, key: Pointer): Native;
  // Boolean CFNumberGetValue(CFNumberRef number, CFNumberType theType, void *valuePtr);
  CFNumberGetValue(number: Pointer, type: number, value: Int32Array): boolean;
  // SCPreferencesRef SCPreferencesCreate(CFAllocatorRef allocator, CFStringRef name, CFStringRef prefsID);
  SCPreferencesCreate(allocator: null, name: Pointer, prefsID: Pointer): Native;
  // CFPropertyListRef SCPreferencesGetValue(SCPreferencesRef prefs, CFStringRef key);
  SCPreferencesGetValue(preferences: Pointer, key: Pointer): Native;
  // Boolean SCPreferencesSetValue(SCPreferencesRef prefs, CFStringRef key, CFPropertyListRef value);
  SCPreferencesSetValue(preferences: Pointer, key: Pointer, value: Pointer): boolean;
  // Boolean SCPreferencesRemoveValue(SCPreferencesRef prefs, CFStringRef key);
  SCPreferencesRemoveValue(preferences: Pointer, key: Pointer): boolean;
  // Boolean SCPreferencesCommitChanges(SCPreferencesRef prefs);
  SCPreferencesCommitChanges(preferences: Pointer): boolean;
  // int SCError(void);
  SCError(): number;
  // const char *SCErrorString(int status);
  SCErrorString(status: number): Native;
}

const COREFOUNDATION_READ_SYMBOLS = {
  CFStringCreateWithCString: { args: [ptr, ptr, u32], returns: ptr },
  CFRelease: { args: [ptr], returns: FFIType.void },
  CFRetain: { args: [ptr], returns: ptr },
  CFGetTypeID: { args: [ptr], returns: u64 },
  CFDictionaryGetTypeID: { args: [], returns: u64 },
  CFNumberGetTypeID: { args: [], returns: u64 },
  CFDictionaryGetValue: { args: [ptr, ptr], returns: ptr },
  // CFNumberType is CFIndex (long)
  CFNumberGetValue: { args: [ptr, i64, ptr], returns: FFIType.bool },
} as const;

const SYSTEMCONFIGURATION_READ_SYMBOLS = {
  SCPreferencesCreate: { args: [ptr, ptr, ptr], returns: ptr },
  SCPreferencesGetValue: { args: [ptr, ptr], returns: ptr },
  SCPreferencesSetValue: { args: [ptr, ptr, ptr], returns: FFIType.bool },
  SCPreferencesRemoveValue: { args: [ptr, ptr], returns: FFIType.bool },
  SCPreferencesCommitChanges: { args: [ptr], returns: FFIType.bool },
  SCError: { args: [], returns: i32 },
  SCErrorString: { args: [i32], returns: ptr },
} as const;

/** Binds CoreFoundation and SystemConfiguration at their constant paths (macOS only). */
export function openBootpdReadSymbols(): BootpdReadSymbols {
  const cf = dlopen(COREFOUNDATION_FRAMEWORK, COREFOUNDATION_READ_SYMBOLS).symbols;
  const sc = dlopen(SYSTEMCONFIGURATION_FRAMEWORK, SYSTEMCONFIGURATION_READ_SYMBOLS).symbols;
  return {
    CFStringCreateWithCString: (allocator, text, encoding) =>
      cf.CFStringCreateWithCString(allocator, text, encoding),
    CFRelease: (object) => cf.CFRelease(object),
    CFRetain: (object) => cf.CFRetain(object),
    CFGetTypeID: (object) => cf.CFGetTypeID(object),
    CFDictionaryGetTypeID: () => cf.CFDictionaryGetTypeID(),
    CFNumberGetTypeID: () => cf.CFNumberGetTypeID(),
    CFDictionaryGetValue: (dictionary, key) => cf.CFDictionaryGetValue(dictionary, key),
    CFNumberGetValue: (number, type, value) => cf.CFNumberGetValue(number, type, value),
    SCPreferencesCreate: (allocator, name, prefsID) => sc.SCPreferencesCreate(allocator, name, prefsID),
    SCPreferencesGetValue: (preferences, key) => sc.SCPreferencesGetValue(preferences, key),
    SCPreferencesSetValue: (preferences, key, value) => sc.SCPreferencesSetValue(preferences, key, value),
    SCPreferencesRemoveValue: (preferences, key) => sc.SCPreferencesRemoveValue(preferences, key),
    SCPreferencesCommitChanges: (preferences) => sc.SCPreferencesCommitChanges(preferences),
    SCError: () => sc.SCError(),
    SCErrorString: (status) => sc.SCErrorString(status),
  };
}

/** What the preferences say about bootpd's lease time. */
export type BootpdLeaseSetting =
  | { readonly kind: "absent" }
  | { readonly kind: "seconds"; readonly seconds: number }
  | { readonly kind: "unreadable"; readonly why: string };

/** The "bootpd" value as it was, CFRetain'ed (null: there was none), for restoreBootpdSettings. */
export interface SavedBootpdSettings {
  readonly value: Pointer | null;
}

/** Runs `work` with a fresh SCPreferences on softnet's file (it reads the file as it is now). */
function withPreferences<T>(
  symbols: BootpdReadSymbols,
  work: (preferences: Pointer, string: (text: string) => Pointer | null) => T,
  failed: (why: string) => T,
): T {
  const created: Pointer[] = [];
  const keep = (object: Native): Pointer | null => {
    const address = address0(object);
    if (address === 0) return null;
    created.push(address as Pointer);
    return address as Pointer;
  };
  const string = (text: string) =>
    keep(symbols.CFStringCreateWithCString(null, Buffer.from(`${text}\0`, "utf8"), kCFStringEncodingUTF8));
  try {
    const name = string(BOOTPD_PREFERENCES_NAME);
    const file = string(BOOTPD_PREFERENCES_FILE);
    if (name === null || file === null) return failed("CFStringCreateWithCString failed");
    const preferences = keep(symbols.SCPreferencesCreate(null, name, file));
    if (preferences === null) return failed(`SCPreferencesCreate: ${scError(symbols)}`);
    return work(preferences, string);
  } finally {
    for (const object of created.reverse()) symbols.CFRelease(object);
  }
}

function scError(symbols: BootpdReadSymbols): string {
  const code = symbols.SCError();
  return `${readCString(address0(symbols.SCErrorString(code))) || "unknown error"} (SCError ${code})`;
}

function sameType(a: number | bigint, b: number | bigint): boolean {
  return BigInt(a) === BigInt(b);
}

/** Reads bootpd → DHCPLeaseTimeSecs from the preferences file, as bootpd would find it. */
export function readBootpdLeaseTime(symbols: BootpdReadSymbols): BootpdLeaseSetting {
  return withPreferences<BootpdLeaseSetting>(
    symbols,
    (preferences, string) => {
      const bootpdKey = string(BOOTPD_KEY);
      const leaseKey = string(BOOTPD_LEASE_TIME_KEY);
      if (bootpdKey === null || leaseKey === null)
        return { kind: "unreadable", why: "CFStringCreateWithCString failed" };
      const bootpd = address0(symbols.SCPreferencesGetValue(preferences, bootpdKey));
      if (bootpd === 0) return { kind: "absent" };
      if (!sameType(symbols.CFGetTypeID(bootpd as Pointer), symbols.CFDictionaryGetTypeID())) {
        return { kind: "unreadable", why: `"${BOOTPD_KEY}" is not a dictionary` };
      }
      const lease = address0(symbols.CFDictionaryGetValue(bootpd as Pointer, leaseKey));
      if (lease === 0) return { kind: "absent" };
      if (!sameType(symbols.CFGetTypeID(lease as Pointer), symbols.CFNumberGetTypeID())) {
        return { kind: "unreadable", why: `"${BOOTPD_LEASE_TIME_KEY}" is not a number` };
      }
      const value = new Int32Array(1);
      if (!symbols.CFNumberGetValue(lease as Pointer, kCFNumberSInt32Type, value)) {
        return { kind: "unreadable", why: `"${BOOTPD_LEASE_TIME_KEY}" does not fit in 32 bits` };
      }
      return { kind: "seconds", seconds: value[0]! };
    },
    (why) => ({ kind: "unreadable", why }),
  );
}

/** Keeps the current "bootpd" value (retained) so that it can be put back. A string on failure. */
export function saveBootpdSettings(symbols: BootpdReadSymbols): SavedBootpdSettings | string {
  return withPreferences<SavedBootpdSettings | string>(
    symbols,
    (preferences, string) => {
      const bootpdKey = string(BOOTPD_KEY);
      if (bootpdKey === null) return "CFStringCreateWithCString failed";
      const bootpd = address0(symbols.SCPreferencesGetValue(preferences, bootpdKey));
      if (bootpd === 0) return { value: null };
      const retained = address0(symbols.CFRetain(bootpd as Pointer));
      return retained === 0 ? "CFRetain failed" : { value: retained as Pointer };
    },
    (why) => why,
  );
}

/**
 * Puts the saved "bootpd" value back (or removes the key when there was none) and commits.
 * Releases the saved value. Returns undefined on success, or what failed.
 */
export function restoreBootpdSettings(
  symbols: BootpdReadSymbols,
  saved: SavedBootpdSettings,
): string | undefined {
  try {
    return withPreferences<string | undefined>(
      symbols,
      (preferences, string) => {
        const bootpdKey = string(BOOTPD_KEY);
        if (bootpdKey === null) return "CFStringCreateWithCString failed";
        const changed =
          saved.value === null
            ? symbols.SCPreferencesRemoveValue(preferences, bootpdKey) ||
              // Removing a key that is not there fails; then there is nothing to restore.
              address0(symbols.SCPreferencesGetValue(preferences, bootpdKey)) === 0
            : symbols.SCPreferencesSetValue(preferences, bootpdKey, saved.value);
        if (!changed)
          return `${saved.value === null ? "SCPreferencesRemoveValue" : "SCPreferencesSetValue"}: ${scError(symbols)}`;
        if (!symbols.SCPreferencesCommitChanges(preferences))
          return `SCPreferencesCommitChanges: ${scError(symbols)}`;
        return undefined;
      },
      (why) => why,
    );
  } finally {
    if (saved.value !== null) symbols.CFRelease(saved.value);
  }
}
