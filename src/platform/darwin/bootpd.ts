/**
 * bootpd's lease time, set before the vmnet interface starts.
 *
 * vmnet's shared and host modes hand out addresses with bootpd, which macOS starts through
 * InternetSharing. bootpd reads its lease time from the SystemConfiguration preferences file
 * /Library/Preferences/SystemConfiguration/com.apple.InternetSharing.default.plist, key "bootpd",
 * value { DHCPLeaseTimeSecs: N }. The default there is a day, which leaves addresses of short-lived
 * CI VMs taken long after the VMs are gone; softnet writes --bootpd-lease-time (default 600 s).
 *
 * Exactly what Cirrus Labs' softnet does (src/main.rs set_bootpd_lease_time):
 *   prefs = SCPreferencesCreate(NULL, "softnet", "com.apple.InternetSharing.default.plist")
 *   SCPreferencesSetValue(prefs, "bootpd", { "DHCPLeaseTimeSecs": CFNumber(SInt32 N) })
 *   SCPreferencesCommitChanges(prefs)
 * with no SCPreferencesApplyChanges: bootpd reads the file when InternetSharing starts it, which
 * happens when the first vmnet interface starts. One difference: the original ignores every result;
 * here a failure is reported as a warning (softnet still runs, with bootpd's current lease time).
 *
 * The calls go through a BootpdSymbols table: openBootpdSymbols() binds the real frameworks at
 * constant paths, and the unit test passes a fake that records the call sequence.
 */
import { dlopen, FFIType, type Pointer } from "bun:ffi";
import {
  address0,
  COREFOUNDATION_FRAMEWORK,
  type DarwinSystem,
  readCString,
  SYSTEMCONFIGURATION_FRAMEWORK,
} from "./system.ts";

export const BOOTPD_PREFERENCES_NAME = "softnet";
export const BOOTPD_PREFERENCES_FILE = "com.apple.InternetSharing.default.plist";
export const BOOTPD_KEY = "bootpd";
export const BOOTPD_LEASE_TIME_KEY = "DHCPLeaseTimeSecs";

// CoreFoundation facts: apple-oss-distributions/CF (CF-1153.18) CFString.h, CFNumber.h, CFBase.h.
/** CFStringBuiltInEncodings.kCFStringEncodingUTF8 (CFString.h; CFStringEncoding is UInt32). */
export const kCFStringEncodingUTF8 = 0x08000100;
/** CFNumberType.kCFNumberSInt32Type (CFNumber.h: `typedef CF_ENUM(CFIndex, CFNumberType)`, so 64 bits wide). */
export const kCFNumberSInt32Type = 3;

type Native = Pointer | bigint | null;

/** The CoreFoundation and SystemConfiguration calls this module makes, with their C prototypes. */
export interface BootpdSymbols {
  // CFStringRef CFStringCreateWithCString(CFAllocatorRef alloc, const char *cStr, CFStringEncoding encoding);
  CFStringCreateWithCString(allocator: null, text: Buffer, encoding: number): Native;
  // CFNumberRef CFNumberCreate(CFAllocatorRef allocator, CFNumberType theType, const void *valuePtr);
  CFNumberCreate(allocator: null, type: number, value: Int32Array): Native;
  // CFDictionaryRef CFDictionaryCreate(CFAllocatorRef allocator, const void **keys, const void **values,
  //     CFIndex numValues, const CFDictionaryKeyCallBacks *keyCallBacks,
  //     const CFDictionaryValueCallBacks *valueCallBacks);
  CFDictionaryCreate(
    allocator: null,
    keys: BigUint64Array,
    values: BigUint64Array,
    count: number,
    keyCallBacks: Pointer,
    valueCallBacks: Pointer,
  ): Native;
  // void CFRelease(CFTypeRef cf);
  CFRelease(object: Pointer): void;
  // SCPreferencesRef SCPreferencesCreate(CFAllocatorRef allocator, CFStringRef name, CFStringRef prefsID);
  SCPreferencesCreate(allocator: null, name: Pointer, prefsID: Pointer): Native;
  // Boolean SCPreferencesSetValue(SCPreferencesRef prefs, CFStringRef key, CFPropertyListRef value);
  SCPreferencesSetValue(preferences: Pointer, key: Pointer, value: Pointer): boolean;
  // Boolean SCPreferencesCommitChanges(SCPreferencesRef prefs);
  SCPreferencesCommitChanges(preferences: Pointer): boolean;
  // int SCError(void);
  SCError(): number;
  // const char *SCErrorString(int status);
  SCErrorString(status: number): Native;
  /** Addresses of the data symbols kCFTypeDictionaryKeyCallBacks and kCFTypeDictionaryValueCallBacks. */
  readonly kCFTypeDictionaryKeyCallBacks: Pointer;
  readonly kCFTypeDictionaryValueCallBacks: Pointer;
}

const { i32, u32, i64, ptr } = FFIType;

// CFIndex is `signed long` (CFBase.h): i64. Boolean is `unsigned char` (CFBase.h): FFIType.bool.
// SCPreferences*: configd SystemConfiguration.fproj/SCPreferences.h; SCError, SCErrorString:
// SystemConfiguration.h (apple-oss-distributions/configd, configd-1405).
const COREFOUNDATION_SYMBOLS = {
  // CFStringRef CFStringCreateWithCString(CFAllocatorRef alloc, const char *cStr, CFStringEncoding encoding);
  CFStringCreateWithCString: { args: [ptr, ptr, u32], returns: ptr },
  // CFNumberRef CFNumberCreate(CFAllocatorRef allocator, CFNumberType theType, const void *valuePtr);
  CFNumberCreate: { args: [ptr, i64, ptr], returns: ptr },
  // CFDictionaryRef CFDictionaryCreate(CFAllocatorRef, const void **keys, const void **values, CFIndex numValues,
  //     const CFDictionaryKeyCallBacks *, const CFDictionaryValueCallBacks *);
  CFDictionaryCreate: { args: [ptr, ptr, ptr, i64, ptr, ptr], returns: ptr },
  // void CFRelease(CFTypeRef cf);
  CFRelease: { args: [ptr], returns: FFIType.void },
} as const;

const SYSTEMCONFIGURATION_SYMBOLS = {
  // SCPreferencesRef SCPreferencesCreate(CFAllocatorRef allocator, CFStringRef name, CFStringRef prefsID);
  SCPreferencesCreate: { args: [ptr, ptr, ptr], returns: ptr },
  // Boolean SCPreferencesSetValue(SCPreferencesRef prefs, CFStringRef key, CFPropertyListRef value);
  SCPreferencesSetValue: { args: [ptr, ptr, ptr], returns: FFIType.bool },
  // Boolean SCPreferencesCommitChanges(SCPreferencesRef prefs);
  SCPreferencesCommitChanges: { args: [ptr], returns: FFIType.bool },
  // int SCError(void);
  SCError: { args: [], returns: i32 },
  // const char *SCErrorString(int status);
  SCErrorString: { args: [i32], returns: ptr },
} as const;

/** Every FFI symbol this module declares, for the coverage report. */
export const BOOTPD_DECLARED_SYMBOLS = [
  ...Object.keys(COREFOUNDATION_SYMBOLS),
  ...Object.keys(SYSTEMCONFIGURATION_SYMBOLS),
  "kCFTypeDictionaryKeyCallBacks",
  "kCFTypeDictionaryValueCallBacks",
] as const;

/**
 * Binds CoreFoundation and SystemConfiguration at their constant paths (macOS only). The two
 * callback structs are data symbols, which bun:ffi cannot bind: their addresses come from dlsym
 * through `system` (the struct itself is what CFDictionaryCreate wants a pointer to).
 */
export function openBootpdSymbols(system: DarwinSystem): BootpdSymbols {
  const cf = dlopen(COREFOUNDATION_FRAMEWORK, COREFOUNDATION_SYMBOLS).symbols;
  const sc = dlopen(SYSTEMCONFIGURATION_FRAMEWORK, SYSTEMCONFIGURATION_SYMBOLS).symbols;
  const dataAddress = (name: string): Pointer => {
    const address = system.dataAddressIn(COREFOUNDATION_FRAMEWORK, name);
    if (address === 0) throw new Error(`CoreFoundation does not export ${name}`);
    return address as Pointer;
  };
  return {
    CFStringCreateWithCString: (allocator, text, encoding) =>
      cf.CFStringCreateWithCString(allocator, text, encoding),
    CFNumberCreate: (allocator, type, value) => cf.CFNumberCreate(allocator, type, value),
    CFDictionaryCreate: (allocator, keys, values, count, keyCallBacks, valueCallBacks) =>
      cf.CFDictionaryCreate(allocator, keys, values, count, keyCallBacks, valueCallBacks),
    CFRelease: (object) => cf.CFRelease(object),
    SCPreferencesCreate: (allocator, name, prefsID) => sc.SCPreferencesCreate(allocator, name, prefsID),
    SCPreferencesSetValue: (preferences, key, value) => sc.SCPreferencesSetValue(preferences, key, value),
    SCPreferencesCommitChanges: (preferences) => sc.SCPreferencesCommitChanges(preferences),
    SCError: () => sc.SCError(),
    SCErrorString: (status) => sc.SCErrorString(status),
    kCFTypeDictionaryKeyCallBacks: dataAddress("kCFTypeDictionaryKeyCallBacks"),
    kCFTypeDictionaryValueCallBacks: dataAddress("kCFTypeDictionaryValueCallBacks"),
  };
}

/**
 * Writes bootpd's lease time. Returns undefined on success, or a warning that says what failed
 * (softnet logs it and carries on). Never throws for a failed call.
 */
export function setBootpdLeaseTime(seconds: number, symbols: BootpdSymbols): string | undefined {
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > 0x7fffffff) {
    return `bootpd lease time ${seconds} is not a whole number of seconds between 1 and 2^31-1`;
  }
  const created: Pointer[] = [];
  const keep = (object: Native): Pointer | null => {
    const address = address0(object);
    if (address === 0) return null;
    created.push(address as Pointer);
    return address as Pointer;
  };
  const string = (text: string) =>
    keep(symbols.CFStringCreateWithCString(null, Buffer.from(`${text}\0`, "utf8"), kCFStringEncodingUTF8));
  const scError = (): string => {
    const code = symbols.SCError();
    return `${readCString(address0(symbols.SCErrorString(code))) || "unknown error"} (SCError ${code})`;
  };
  const failed = `cannot set bootpd's lease time to ${seconds} s`;
  try {
    const name = string(BOOTPD_PREFERENCES_NAME);
    const file = string(BOOTPD_PREFERENCES_FILE);
    if (name === null || file === null) return `${failed}: CFStringCreateWithCString failed`;
    const preferences = keep(symbols.SCPreferencesCreate(null, name, file));
    if (preferences === null) return `${failed}: SCPreferencesCreate: ${scError()}`;

    const leaseKey = string(BOOTPD_LEASE_TIME_KEY);
    const leaseTime = keep(symbols.CFNumberCreate(null, kCFNumberSInt32Type, new Int32Array([seconds])));
    if (leaseKey === null || leaseTime === null) return `${failed}: cannot create the lease time value`;
    const dictionary = keep(
      symbols.CFDictionaryCreate(
        null,
        BigUint64Array.of(BigInt(leaseKey)),
        BigUint64Array.of(BigInt(leaseTime)),
        1,
        symbols.kCFTypeDictionaryKeyCallBacks,
        symbols.kCFTypeDictionaryValueCallBacks,
      ),
    );
    const bootpdKey = string(BOOTPD_KEY);
    if (dictionary === null || bootpdKey === null) return `${failed}: cannot create the bootpd dictionary`;

    if (!symbols.SCPreferencesSetValue(preferences, bootpdKey, dictionary)) {
      return `${failed}: SCPreferencesSetValue: ${scError()}`;
    }
    if (!symbols.SCPreferencesCommitChanges(preferences)) {
      return `${failed}: SCPreferencesCommitChanges: ${scError()} (is softnet running as root?)`;
    }
    return undefined;
  } finally {
    for (const object of created.reverse()) symbols.CFRelease(object);
  }
}
