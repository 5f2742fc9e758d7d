// Every FFI symbol the darwin module declares is called by a test, and this file prints which.
//
// One scenario drives the module through a tracing DarwinSystem (every bound function reports its
// calls) against the vmnet double, which also counts calls to its own exports, including those
// made from native code (the blocks' invoke functions call xpc_dictionary_get_* and
// dispatch_semaphore_signal, the event invoke calls send). bootpd's CoreFoundation/SystemConfiguration
// symbols exist only on macOS, so they are counted against a recording fake table, as in
// test/unit/bootpd.test.ts.

import type { Pointer } from "bun:ffi";
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { nativeSymbols } from "../../src/platform/darwin/blocks.ts";
import {
  BOOTPD_DECLARED_SYMBOLS,
  type BootpdSymbols,
  setBootpdLeaseTime,
} from "../../src/platform/darwin/bootpd.ts";
import { DarwinDatagramLink } from "../../src/platform/darwin/datagram-link.ts";
import { darwinIdentityCalls } from "../../src/platform/darwin/identity.ts";
import { checkExposedPortsFree } from "../../src/platform/darwin/port-check.ts";
import {
  DarwinSysError,
  DISPATCH_SYMBOLS,
  GLOBAL_BLOCK_CLASS,
  KERNEL,
  LIBC_SYMBOLS,
  openDarwinSystem,
  sourceFileCalls,
  VMNET_FORWARDING_SYMBOLS,
  VMNET_KEYS,
  VMNET_SYMBOLS,
} from "../../src/platform/darwin/system.ts";
import { openVmnet } from "../../src/platform/darwin/vmnet.ts";
import { asTargetUser, becomeUser, callerOf, resolveDropTarget } from "../../src/platform/identity.ts";
import { FrameBatch } from "../../src/platform/link.ts";
import { epollReactorBackend } from "../../src/platform/linux/epoll-reactor.ts";
import { Reactor } from "../../src/platform/reactor.ts";
import { sealText } from "../../src/platform/runtime-c.ts";
import { arpFrame } from "../support/frames.ts";
import {
  buildDouble,
  doubleControl,
  doubleLibraries,
  inPrivateNetworkNamespace,
  makeBridge,
  waitFor,
} from "./support.ts";

inPrivateNetworkNamespace(import.meta.path, "darwin FFI symbol coverage", () => {
  test("every declared darwin FFI symbol is called by a test", async () => {
    makeBridge("sdbr2", "198.18.2.1/24");
    const path = buildDouble();
    const double = doubleControl(path);
    double.configure("sdbr2");
    const calls = new Map<string, number>();
    const system = openDarwinSystem(doubleLibraries(path), {
      trace: (library, symbol) =>
        calls.set(`${library}:${symbol}`, (calls.get(`${library}:${symbol}`) ?? 0) + 1),
    });

    // Source files for TinyCC, both ways.
    for (const strategy of ["memfd", "unlinked-temp-file"] as const) {
      sealText(sourceFileCalls(system), "a test file", "int x;\n", strategy).close();
    }

    // The host link: start, a frame out and its reply back through a wake-up, forwards, stop.
    const link = openVmnet({ mode: "nat", isolate: true, system });
    const reactor = new Reactor(epollReactorBackend());
    let replies = 0;
    const batch = new FrameBatch(8, 2048);
    reactor.watch(link.pollFd, () => {
      for (let n = link.receive(batch); n > 0; n = link.receive(batch)) replies += n;
      return false;
    });
    const tap = double.lastTap();
    await waitFor(() => readFileSync(`/sys/class/net/${tap}/brport/state`, "ascii").trim() === "3"); // forwarding
    const out = new FrameBatch(1, 2048);
    const arp = arpFrame({ senderIp: "198.18.2.10", targetIp: "198.18.2.1" });
    out.bytes.set(arp);
    out.lengths[0] = arp.length;
    await waitFor(
      () => {
        if (link.send(out, Uint16Array.of(0), 1) !== 1) return false;
        return replies > 0;
      },
      5000,
      "a reply through vmnet",
    );
    reactor.close();
    await link.install([{ externalPort: 2222, internalPort: 22 }], 0xc6120202);
    await link.removeAll();
    link.close();

    // The VM socket link.
    const sv = new Int32Array(2);
    system.libc.socketpair(KERNEL.AF_UNIX, KERNEL.SOCK_DGRAM, 0, sv);
    const vm = new DarwinDatagramLink(system, sv[0]!);
    system.libc.send(sv[1]!, arp, arp.length, KERNEL.MSG_DONTWAIT);
    expect(vm.receive(batch)).toBe(1);
    expect(vm.send(batch, Uint16Array.of(0), 1)).toBe(1);
    vm.close();
    system.libc.close(sv[1]!);
    expect(new DarwinSysError(system, "probe", KERNEL.errno.EAGAIN).code).toBe("EAGAIN"); // strerror

    // --expose's port check (socket, bind, close). glibc, this system's C library, reads xnu's
    // struct sockaddr_in as family 0x0210 and refuses it (EAFNOSUPPORT); the double's bind, which
    // reads it as xnu does, is the one test/darwin/e2e.test.ts runs the check against.
    expect(() => checkExposedPortsFree(system, [{ externalPort: 2222, internalPort: 22 }])).toThrow(
      /^cannot expose port 2222$/,
    );

    // Identity (the macOS runtime's privilege drop and sudo escalation), without changing who this
    // test runs as: root becoming root again, a lookup of each kind, an execv that cannot succeed.
    const identity = darwinIdentityCalls(system);
    const caller = callerOf(identity, { SUDO_UID: "0" }); // getuid, getgid, getgroups
    expect(caller.kind).toBe("root");
    const target = resolveDropTarget(identity, caller, { user: "root", group: "root" });
    expect(target).toMatchObject({ uid: 0, gid: 0, userName: "root" });
    expect(resolveDropTarget(identity, caller, { user: undefined, group: undefined }).userName).toBe(
      "nobody",
    );
    becomeUser(identity, target); // initgroups, setgid, setuid, then getuid/geteuid/getgid/getegid
    // setregid, setegid, setreuid, seteuid and back (root acting as root for a moment).
    expect(asTargetUser(identity, target, () => identity.geteuid())).toBe(0);
    expect(identity.setgroups(0, null)).toBe(0);
    // An exact list, as a setuid caller's groups are restored (root keeps its own group 0).
    expect(identity.setgroups(1, Uint32Array.of(0))).toBe(0);
    const one = new Uint32Array(1);
    expect(identity.getgroups(1, one)).toBe(1);
    expect(one[0]).toBe(0);
    expect(identity.getpwuid(0)).not.toBeNull();
    expect(identity.execv(Buffer.from("/nonexistent/softnet\0"), new BigUint64Array(1))).toBe(-1);

    // bootpd, against a fake that counts.
    const bootpdCalls = new Map<string, number>();
    const count = (name: string) => bootpdCalls.set(name, (bootpdCalls.get(name) ?? 0) + 1);
    const counted = <T>(name: string, value: T): T => {
      count(name);
      return value;
    };
    let handle = 0x100;
    const fake: BootpdSymbols = {
      CFStringCreateWithCString: () => counted("CFStringCreateWithCString", handle++ as Pointer),
      CFNumberCreate: () => counted("CFNumberCreate", handle++ as Pointer),
      CFDictionaryCreate: (_a, _k, _v, _n, keyCallBacks, valueCallBacks) => {
        count("CFDictionaryCreate");
        if (keyCallBacks === fake.kCFTypeDictionaryKeyCallBacks) count("kCFTypeDictionaryKeyCallBacks");
        if (valueCallBacks === fake.kCFTypeDictionaryValueCallBacks) count("kCFTypeDictionaryValueCallBacks");
        return handle++ as Pointer;
      },
      CFRelease: () => void count("CFRelease"),
      SCPreferencesCreate: () => counted("SCPreferencesCreate", handle++ as Pointer),
      SCPreferencesSetValue: () => counted("SCPreferencesSetValue", true),
      SCPreferencesCommitChanges: () => counted("SCPreferencesCommitChanges", false),
      SCError: () => counted("SCError", 1003),
      SCErrorString: () => counted("SCErrorString", null),
      kCFTypeDictionaryKeyCallBacks: 0x10 as Pointer,
      kCFTypeDictionaryValueCallBacks: 0x20 as Pointer,
    };
    expect(setBootpdLeaseTime(600, fake)).toContain("SCPreferencesCommitChanges");

    // The list: every declared symbol, how it was reached, and how often.
    const rows: Array<{ group: string; symbol: string; js: number; native: number; how: string }> = [];
    const add = (group: string, symbol: string, js: number, native: number, how: string) =>
      rows.push({ group, symbol, js, native, how });
    const fromDouble = (symbol: string) => double.callCount(symbol);
    for (const symbol of Object.keys(LIBC_SYMBOLS))
      add("libc", symbol, calls.get(`libc:${symbol}`) ?? 0, 0, "traced");
    add("libc", KERNEL.errnoFunction, calls.get(`libc:${KERNEL.errnoFunction}`) ?? 0, 0, "traced");
    if (KERNEL.name === "linux")
      add("libc", "memfd_create", calls.get("libc:memfd_create") ?? 0, 0, "traced (Linux only)");
    for (const symbol of Object.keys(DISPATCH_SYMBOLS)) {
      add("dispatch", symbol, calls.get(`dispatch:${symbol}`) ?? 0, fromDouble(symbol), "traced + double");
    }
    add(
      "dispatch",
      GLOBAL_BLOCK_CLASS,
      calls.get(`dispatch:${GLOBAL_BLOCK_CLASS}`) ?? 0,
      0,
      "data: resolved",
    );
    for (const symbol of Object.keys(VMNET_SYMBOLS)) {
      add("vmnet", symbol, calls.get(`vmnet:${symbol}`) ?? 0, fromDouble(symbol), "traced + double");
    }
    for (const symbol of Object.keys(VMNET_FORWARDING_SYMBOLS)) {
      add(
        "vmnet",
        symbol,
        calls.get(`vmnet:${symbol}`) ?? 0,
        fromDouble(symbol),
        "traced + double (optional)",
      );
    }
    for (const key of VMNET_KEYS) add("vmnet", key, calls.get(`vmnet:${key}`) ?? 0, 0, "data: resolved");
    for (const symbol of Object.keys(nativeSymbols)) {
      add("blocks.c", symbol, calls.get(`blocks.c:${symbol}`) ?? 0, 0, "traced (TinyCC)");
    }
    for (const symbol of BOOTPD_DECLARED_SYMBOLS) {
      add("bootpd", symbol, bootpdCalls.get(symbol) ?? 0, 0, "fake table (macOS only)");
    }
    // `send` is also called natively by the event block; the double cannot count glibc, but the
    // reply that arrived through the reactor above could only have been announced by that send.
    const lines = rows.map(
      (row) =>
        `  ${row.group.padEnd(9)} ${row.symbol.padEnd(48)} js ${String(row.js).padStart(5)}  native/double ${String(row.native).padStart(5)}  ${row.how}`,
    );
    const covered = rows.filter((row) => row.js + row.native > 0).length;
    console.log(`darwin FFI symbols: ${covered}/${rows.length} called by tests\n${lines.join("\n")}`);
    expect(
      rows.filter((row) => row.js + row.native === 0).map((row) => `${row.group}:${row.symbol}`),
    ).toEqual([]);
    expect(double.violations().count).toBe(0);
  }, 60_000);
});
