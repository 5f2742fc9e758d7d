// The readiness reactor with real fds (eventfds and a datagram socketpair): it wakes when an fd is
// ready, stays asleep otherwise, re-arms only when the handler is done, and stops cleanly. Both
// native backends run the same suite: epoll (Linux runtime) and poll (macOS runtime; poll(2) is the
// same on Linux, reached here through the darwin module's own C library bindings).
import { afterEach, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { SoftnetError } from "../../src/errors.ts";
import { pollReactorBackend } from "../../src/platform/darwin/poll-reactor.ts";
import { openDarwinSystem } from "../../src/platform/darwin/system.ts";
import { FrameBatch } from "../../src/platform/link.ts";
import { DatagramLink } from "../../src/platform/linux/datagram-link.ts";
import { epollReactorBackend } from "../../src/platform/linux/epoll-reactor.ts";
import {
  AF_UNIX,
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  libc,
  SO_SNDBUF,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOL_SOCKET,
} from "../../src/platform/linux/libc.ts";
import type { ReactorBackend } from "../../src/platform/reactor.ts";
import { EPOLLIN, Reactor } from "../../src/platform/reactor.ts";
import { buildDouble, doubleLibraries } from "../darwin/support.ts";

const reactors: Reactor[] = [];
const fds: number[] = [];

afterEach(() => {
  for (const reactor of reactors.splice(0)) reactor.close();
  for (const fd of fds.splice(0)) libc.close(fd);
});

const BACKENDS: Array<[string, () => ReactorBackend]> = [
  ["epoll", () => epollReactorBackend()],
  ["poll", () => pollReactorBackend(openDarwinSystem(doubleLibraries(buildDouble())))],
];
let makeBackend: () => ReactorBackend = BACKENDS[0]![1];

function newReactor(): Reactor {
  const reactor = new Reactor(makeBackend());
  reactors.push(reactor);
  return reactor;
}

function newEventFd(): number {
  const fd = libc.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  expect(fd).toBeGreaterThanOrEqual(0);
  fds.push(fd);
  return fd;
}

const counter = new BigUint64Array(1);

function signal(eventFd: number): void {
  counter[0] = 1n;
  expect(libc.write(eventFd, counter, 8)).toBe(8);
}

/** Reads (and so resets) an eventfd; false when it was not signalled. */
function drainEventFd(eventFd: number): boolean {
  return libc.read(eventFd, counter, 8) === 8;
}

/** Resolves when `condition` holds, checking every few milliseconds; rejects after `ms`. */
async function waitFor(condition: () => boolean, ms = 2000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error("condition not met in time");
    await Bun.sleep(2);
  }
}

function cpuMilliseconds(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1000;
}

for (const [backendName, backend] of BACKENDS) {
  describe(`Reactor (${backendName})`, () => {
    beforeAll(() => {
      makeBackend = backend;
    });

    test("calls the handler on the JavaScript thread when the fd becomes readable", async () => {
      const reactor = newReactor();
      const eventFd = newEventFd();
      const calls: number[] = [];
      reactor.watch(eventFd, (events) => {
        calls.push(events);
        expect(drainEventFd(eventFd)).toBe(true);
        return false;
      });
      await Bun.sleep(30);
      expect(calls).toEqual([]); // not ready: no call
      signal(eventFd);
      await waitFor(() => calls.length === 1);
      expect(calls[0]! & EPOLLIN).toBe(EPOLLIN);
      // Re-armed after the handler returned false: the next signal is delivered too, once each.
      signal(eventFd);
      await waitFor(() => calls.length === 2);
      signal(eventFd);
      await waitFor(() => calls.length === 3);
      await Bun.sleep(30);
      expect(calls.length).toBe(3);
    });

    test("stays asleep while idle: no calls and almost no CPU over 300 ms", async () => {
      const reactor = newReactor();
      let calls = 0;
      for (let i = 0; i < 4; i++) {
        const eventFd = newEventFd();
        reactor.watch(eventFd, () => {
          calls++;
          return false;
        });
      }
      await Bun.sleep(20);
      const before = cpuMilliseconds();
      await Bun.sleep(300);
      const used = cpuMilliseconds() - before;
      expect(calls).toBe(0);
      // A busy-polling loop would burn ~300 ms here; an idle process well under 50.
      expect(used).toBeLessThan(50);
    });

    test("dispatches each fd to its own handler", async () => {
      const reactor = newReactor();
      const first = newEventFd();
      const second = newEventFd();
      const seen: string[] = [];
      reactor.watch(first, () => {
        seen.push("first");
        drainEventFd(first);
        return false;
      });
      const secondIndex = reactor.watch(second, () => {
        seen.push("second");
        drainEventFd(second);
        return false;
      });
      expect(secondIndex).toBe(1);
      signal(second);
      await waitFor(() => seen.length === 1);
      signal(first);
      await waitFor(() => seen.length === 2);
      expect(seen).toEqual(["second", "first"]);
    });

    test("a handler that returns true is resumed without new readiness and re-armed only after false", async () => {
      const reactor = newReactor();
      const eventFd = newEventFd();
      const events: number[] = [];
      let slicesLeft = 3;
      reactor.watch(eventFd, (mask) => {
        events.push(mask);
        if (slicesLeft > 0) {
          slicesLeft--;
          return true; // budget spent, more to do
        }
        drainEventFd(eventFd);
        return false;
      });
      signal(eventFd);
      await waitFor(() => events.length === 4);
      // First call from readiness (EPOLLIN), then three resumptions (0) through setImmediate.
      expect(events[0]! & EPOLLIN).toBe(EPOLLIN);
      expect(events.slice(1)).toEqual([0, 0, 0]);
      await Bun.sleep(30);
      expect(events.length).toBe(4);
      signal(eventFd);
      await waitFor(() => events.length === 5);
    });

    test("while a handler is working through its budget the registration stays disarmed", async () => {
      const reactor = newReactor();
      const eventFd = newEventFd();
      let calls = 0;
      let resumptions = 0;
      reactor.watch(eventFd, (mask) => {
        calls++;
        if (mask === 0) resumptions++;
        // Do not drain until the 20th resumption: the fd stays readable all along. Without
        // EPOLLONESHOT, readiness calls would pile up next to the resumptions; with it, none come.
        if (resumptions < 20) return true;
        drainEventFd(eventFd);
        return false;
      });
      signal(eventFd);
      await waitFor(() => resumptions === 20);
      await Bun.sleep(30);
      expect(calls).toBe(21);
    });

    test("unwatch stops calls for that fd only", async () => {
      const reactor = newReactor();
      const watched = newEventFd();
      const unwatched = newEventFd();
      const seen: string[] = [];
      reactor.watch(watched, () => {
        seen.push("watched");
        drainEventFd(watched);
        return false;
      });
      const index = reactor.watch(unwatched, () => {
        seen.push("unwatched");
        return false;
      });
      reactor.unwatch(index);
      reactor.unwatch(index); // idempotent
      signal(unwatched);
      signal(watched);
      await waitFor(() => seen.length === 1);
      await Bun.sleep(30);
      expect(seen).toEqual(["watched"]);
    });

    test("an fd unwatched on a reactor cannot be watched on it again", () => {
      const reactor = newReactor();
      const eventFd = newEventFd();
      reactor.unwatch(reactor.watch(eventFd, () => false));
      expect(() => reactor.watch(eventFd, () => false)).toThrow(/cannot watch fd \d+ again/);
      // Another reactor may.
      const other = newReactor();
      other.watch(eventFd, () => false);
    });

    test("close stops the thread; calls already queued are dropped; watch afterwards throws", async () => {
      const reactor = newReactor();
      const eventFds = [newEventFd(), newEventFd(), newEventFd()];
      let calls = 0;
      for (const eventFd of eventFds) {
        reactor.watch(eventFd, () => {
          calls++;
          return false;
        });
      }
      for (const eventFd of eventFds) signal(eventFd);
      // Block the JavaScript thread so the native thread queues its calls before close() runs.
      Bun.sleepSync(30);
      reactor.close();
      reactor.close();
      expect(reactor.closed).toBe(true);
      await Bun.sleep(50);
      expect(calls).toBe(0);
      expect(() => reactor.watch(eventFds[0]!, () => false)).toThrow(SoftnetError);
    });

    if (backendName === "epoll") {
      test("watching an fd that epoll cannot watch throws a SoftnetError", () => {
        const reactor = newReactor();
        const fd = libc.open("/dev/null", 0);
        fds.push(fd);
        expect(() => reactor.watch(fd, () => false)).toThrow(/cannot watch fd/);
        expect(() => reactor.watch(987654, () => false)).toThrow(/cannot watch fd 987654/);
      });
    } else {
      test("more watches than the poll table holds throw a SoftnetError", () => {
        const reactor = newReactor();
        const fd = newEventFd();
        for (let i = 0; i < 16; i++) reactor.watch(fd, () => false);
        expect(() => reactor.watch(fd, () => false)).toThrow(/cannot watch fd/);
      });
    }

    test("drives a DatagramLink: every frame of a burst arrives, in budgeted slices", async () => {
      const reactor = newReactor();
      const pair = new Int32Array(2);
      expect(libc.socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, pair)).toBe(0);
      const link = new DatagramLink(pair[0]!);
      const peer = pair[1]!;
      fds.push(peer);
      const batch = new FrameBatch(64, 2048);
      const budget = 256;
      let received = 0;
      let slices = 0;
      let nextSequence = 0;
      let outOfOrder = 0;
      const index = reactor.watch(link.pollFd, () => {
        slices++;
        let moved = 0;
        while (moved < budget) {
          const count = link.receive(batch);
          if (count <= 0) return false;
          for (let slot = 0; slot < count; slot++) {
            const sequence = new DataView(batch.bytes.buffer).getUint32(batch.offsetOf(slot), true);
            if (sequence !== nextSequence) outOfOrder++;
            nextSequence = sequence + 1;
          }
          moved += count;
          received += count;
        }
        return true;
      });
      // Room for the whole burst in the peer's send buffer, so the writes below never block.
      expect(libc.setsockopt(peer, SOL_SOCKET, SO_SNDBUF, new Int32Array([4 << 20]), 4)).toBe(0);
      const total = 3000;
      const datagram = new Uint8Array(100);
      const view = new DataView(datagram.buffer);
      for (let sequence = 0; sequence < total; sequence++) {
        view.setUint32(0, sequence, true);
        expect(libc.write(peer, datagram, datagram.length)).toBe(100);
      }
      await waitFor(() => received === total);
      expect(outOfOrder).toBe(0);
      expect(slices).toBeGreaterThanOrEqual(Math.ceil(total / budget));
      reactor.unwatch(index);
      link.close();
    });
  });
}

/** Whether an epoll instance of this process has `fd` in its set (/proc/self/fdinfo lists "tfd:"). */
function inAnEpollSet(fd: number): boolean {
  for (const entry of readdirSync("/proc/self/fd")) {
    let target: string;
    try {
      target = readlinkSync(`/proc/self/fd/${entry}`);
    } catch {
      continue; // closed meanwhile (the directory's own fd)
    }
    if (target !== "anon_inode:[eventpoll]") continue;
    const info = readFileSync(`/proc/self/fdinfo/${entry}`, "utf8");
    if (new RegExp(`^tfd:\\s+${fd}\\s`, "m").test(info)) return true;
  }
  return false;
}

describe("Reactor (epoll): a ready fd costs its writers nothing while it is drained", () => {
  beforeAll(() => {
    makeBackend = BACKENDS[0]![1];
  });

  // A registration left in the epoll set, even disarmed, keeps epoll's entry on the fd's wait
  // queue, and every write to the fd then runs epoll's wake-up callback. The thread takes a
  // reported fd off the set; re-arming puts it back.
  test("a reported fd is out of the epoll set until the handler is done, and back in afterwards", async () => {
    const reactor = newReactor();
    const eventFd = newEventFd();
    const seenDuringHandler: boolean[] = [];
    let calls = 0;
    reactor.watch(eventFd, () => {
      calls++;
      seenDuringHandler.push(inAnEpollSet(eventFd));
      drainEventFd(eventFd);
      return calls === 1; // the first call asks to be resumed: still out of the set meanwhile
    });
    expect(inAnEpollSet(eventFd)).toBe(true);
    signal(eventFd);
    await waitFor(() => calls === 2);
    expect(seenDuringHandler).toEqual([false, false]);
    expect(inAnEpollSet(eventFd)).toBe(true);
    // Armed again: the next write is reported.
    signal(eventFd);
    await waitFor(() => calls === 3);
  });

  test("unwatch of a reported fd that is out of the set is not an error, and nothing is called again", async () => {
    const reactor = newReactor();
    const eventFd = newEventFd();
    let calls = 0;
    let index = -1;
    index = reactor.watch(eventFd, () => {
      calls++;
      reactor.unwatch(index); // while out of the set: the DEL finds nothing, and that is fine
      return false;
    });
    signal(eventFd);
    await waitFor(() => calls === 1);
    expect(inAnEpollSet(eventFd)).toBe(false);
    signal(eventFd);
    await Bun.sleep(30);
    expect(calls).toBe(1);
  });
});
