// The macOS VM socket link (src/platform/darwin/datagram-link.ts): one recvmsg/send per frame with
// the kernel's own constants, run here on Linux datagram socketpairs, as in CI, and against the
// double's xnu sockets (test/vmnet-double/xnu-socket.c) for what happens when the VM's end closes,
// where macOS and Linux differ.

import { dlopen, FFIType } from "bun:ffi";
import { heapStats } from "bun:jsc";
import { afterEach, describe, expect, test } from "bun:test";
import { closeSync, openSync } from "node:fs";
import { SoftnetError } from "../../src/errors.ts";
import { DarwinDatagramLink } from "../../src/platform/darwin/datagram-link.ts";
import { type DarwinSystem, openDarwinSystem } from "../../src/platform/darwin/system.ts";
import { FrameBatch } from "../../src/platform/link.ts";
import { buildDouble, doubleLibraries, xnuLibraries } from "./support.ts";

const doublePath = buildDouble();
const system = openDarwinSystem(doubleLibraries(doublePath));
const { libc, kernel } = system;
const fds: number[] = [];

afterEach(() => {
  for (const fd of fds.splice(0)) libc.close(fd);
});

function pair(type = kernel.SOCK_DGRAM, on: DarwinSystem = system): [number, number] {
  const sv = new Int32Array(2);
  expect(on.libc.socketpair(kernel.AF_UNIX, type | kernel.SOCK_CLOEXEC, 0, sv)).toBe(0);
  return [sv[0]!, sv[1]!];
}

/** A link on one end (closed by the link) and the raw other end (the "VM"). */
function linkAndPeer(): { link: DarwinDatagramLink; vm: number } {
  const [ours, vm] = pair();
  fds.push(vm);
  return { link: new DarwinDatagramLink(system, ours), vm };
}

function datagram(bytes: number[] | Uint8Array): Uint8Array {
  return Uint8Array.from(bytes);
}

function vmSends(vm: number, frame: Uint8Array): void {
  expect(libc.send(vm, frame, frame.length, kernel.MSG_DONTWAIT)).toBe(frame.length);
}

function vmReceives(vm: number): Uint8Array | null {
  const buffer = new Uint8Array(4096);
  const length = libc.recv(vm, buffer, buffer.length, kernel.MSG_DONTWAIT);
  return length < 0 ? null : buffer.slice(0, length);
}

describe("DarwinDatagramLink", () => {
  test("receives a batch of frames, one datagram each, with their exact lengths", () => {
    const { link, vm } = linkAndPeer();
    const frames = [datagram(new Array(60).fill(1)), datagram(new Array(1514).fill(2)), datagram([3, 3, 3])];
    for (const frame of frames) vmSends(vm, frame);
    const batch = new FrameBatch(8, 2048);
    expect(link.receive(batch)).toBe(3);
    frames.forEach((frame, slot) => {
      expect(batch.lengths[slot]).toBe(frame.length);
      expect(batch.bytes.subarray(batch.offsetOf(slot), batch.offsetOf(slot) + frame.length)).toEqual(frame);
    });
    expect(link.receive(batch)).toBe(0);
    link.close();
  });

  test("stops at the batch capacity and continues on the next call", () => {
    const { link, vm } = linkAndPeer();
    for (let i = 0; i < 5; i++) vmSends(vm, datagram([i, i, i, i]));
    const batch = new FrameBatch(2, 64);
    expect(link.receive(batch)).toBe(2);
    expect(link.receive(batch)).toBe(2);
    expect(batch.bytes[batch.offsetOf(1)]).toBe(3);
    expect(link.receive(batch)).toBe(1);
    link.close();
  });

  test("a datagram larger than a slot is reported with length 0 and counted, not passed on cut short", () => {
    const { link, vm } = linkAndPeer();
    vmSends(vm, datagram(new Array(100).fill(7)));
    vmSends(vm, datagram([8, 8]));
    vmSends(vm, datagram([]));
    const batch = new FrameBatch(4, 64);
    expect(link.receive(batch)).toBe(3);
    expect(Array.from(batch.lengths.subarray(0, 3))).toEqual([0, 2, 0]);
    expect(link.truncatedFrames).toBe(1); // the empty datagram is an empty frame, not a truncated one
    link.close();
  });

  test("sends the listed slots in order, one datagram each", () => {
    const { link, vm } = linkAndPeer();
    const batch = new FrameBatch(3, 64);
    for (let slot = 0; slot < 3; slot++) {
      batch.bytes.fill(slot + 1, batch.offsetOf(slot), batch.offsetOf(slot) + 10 + slot);
      batch.lengths[slot] = 10 + slot;
    }
    expect(link.send(batch, Uint16Array.of(2, 0), 2)).toBe(2);
    expect(vmReceives(vm)).toEqual(new Uint8Array(12).fill(3));
    expect(vmReceives(vm)).toEqual(new Uint8Array(10).fill(1));
    expect(vmReceives(vm)).toBeNull();
    link.close();
  });

  test("when the VM does not read, frames are dropped (EAGAIN/ENOBUFS), never blocking", () => {
    const { link } = linkAndPeer();
    const batch = new FrameBatch(64, 1514);
    batch.lengths.fill(1514);
    const slots = Uint16Array.from({ length: 64 }, (_, i) => i);
    let sent = 0;
    for (let round = 0; round < 100; round++) {
      const result = link.send(batch, slots, 64);
      sent += result;
      if (result < 64) break;
    }
    expect(sent).toBeGreaterThan(0);
    expect(sent).toBeLessThan(6400); // the buffer filled up and the rest was dropped
    link.close();
  });

  test("a VM that closed its end makes send return -1", () => {
    const [ours, vm] = pair();
    const link = new DarwinDatagramLink(system, ours);
    libc.close(vm);
    const batch = new FrameBatch(1, 64);
    batch.lengths[0] = 20;
    expect(link.send(batch, Uint16Array.of(0), 1)).toBe(-1);
    link.close();
    link.close();
  });

  test("receive and send allocate nothing per frame", () => {
    const [a, b] = pair();
    const left = new DarwinDatagramLink(system, a);
    const right = new DarwinDatagramLink(system, b);
    const out = new FrameBatch(8, 2048);
    const into = new FrameBatch(64, 2048);
    out.lengths.fill(1000);
    const slots = Uint16Array.of(0, 1, 2, 3, 4, 5, 6, 7);
    let received = 0;
    const rounds = (n: number) => {
      for (let i = 0; i < n; i++) {
        left.send(out, slots, 8);
        received += right.receive(into);
      }
    };
    rounds(500);
    Bun.gc(true);
    const before = heapStats().objectCount;
    rounds(5000);
    expect(heapStats().objectCount - before).toBeLessThan(10);
    expect(received).toBe(5500 * 8);
    left.close();
    right.close();
  });

  test("refuses what is not a connected AF_UNIX datagram socket, naming the option", () => {
    expect(() => new DarwinDatagramLink(system, -1)).toThrow("--vm-fd -1 is not a file descriptor number");
    expect(() => new DarwinDatagramLink(system, 999)).toThrow("--vm-fd 999 is not an open file descriptor");
    const file = openSync("/dev/null", "r");
    try {
      expect(() => new DarwinDatagramLink(system, file, { optionName: "--x" })).toThrow(
        `--x ${file} is not a socket`,
      );
    } finally {
      closeSync(file);
    }
    const [a, b] = pair(kernel.SOCK_STREAM);
    fds.push(a, b);
    expect(() => new DarwinDatagramLink(system, a)).toThrow(SoftnetError);
    expect(() => new DarwinDatagramLink(system, a)).toThrow("is not a datagram socket");
  });
});

describe("when the VM closes its end, as on macOS (the double's xnu sockets)", () => {
  // libc is the double: socketpair/close/recv/recvmsg/send/getpeername/poll behave as xnu's
  // (unp_detach -> unp_drop(ECONNRESET), soreceive, sosendcheck; see xnu-socket.c).
  const xnu = openDarwinSystem(xnuLibraries(doublePath));
  const errno = kernel.errno;
  const open: number[] = [];
  afterEach(() => {
    for (const fd of open.splice(0)) xnu.libc.close(fd);
  });

  function xnuPair(): [number, number] {
    const [ours, vm] = pair(kernel.SOCK_DGRAM, xnu);
    open.push(vm);
    return [ours, vm];
  }
  function vmSendsOn(vm: number, frame: Uint8Array): void {
    expect(xnu.libc.send(vm, frame, frame.length, kernel.MSG_DONTWAIT)).toBe(frame.length);
  }
  /** The VM's end goes away, as when Tart dies: closed through the double, which tells ours. */
  function vmCloses(vm: number): void {
    open.splice(open.indexOf(vm), 1);
    expect(xnu.libc.close(vm)).toBe(0);
  }
  function linkOn(fd: number): DarwinDatagramLink {
    return new DarwinDatagramLink(xnu, fd);
  }
  const frame = (byte: number) => datagram(new Array(60).fill(byte));

  test("the double itself: data first, ECONNRESET once, then EAGAIN; send ECONNRESET then EDESTADDRREQ; no readability", () => {
    const poll = dlopen(doublePath, {
      poll: { args: [FFIType.ptr, FFIType.u64, FFIType.i32], returns: FFIType.i32 },
    }).symbols.poll;
    const pollIn = (fd: number): number => {
      const entry = new Int32Array([fd, 1 /* POLLIN, revents 0 */]);
      return poll(entry, 1, 0) === 1 ? new Int16Array(entry.buffer)[3]! : 0;
    };
    const [ours, vm] = xnuPair();
    open.push(ours);
    const buffer = new Uint8Array(128);
    const receive = () => xnu.libc.recv(ours, buffer, buffer.length, kernel.MSG_DONTWAIT);
    expect(pollIn(ours)).toBe(0);
    vmSendsOn(vm, frame(1));
    vmSendsOn(vm, frame(2));
    vmCloses(vm);
    expect(pollIn(ours)).toBe(1);
    expect(receive()).toBe(60);
    expect(receive()).toBe(60);
    expect(buffer[0]).toBe(2);
    expect(pollIn(ours)).toBe(1); // so_error pending
    expect(receive()).toBe(-1);
    expect(xnu.errno()).toBe(errno.ECONNRESET);
    expect(pollIn(ours)).toBe(0);
    expect(receive()).toBe(-1);
    expect(xnu.errno()).toBe(errno.EAGAIN);
    expect(xnu.libc.send(ours, buffer, 60, kernel.MSG_DONTWAIT)).toBe(-1);
    expect(xnu.errno()).toBe(errno.EDESTADDRREQ);

    // The other order: send meets so_error first and takes it; recv then only says EAGAIN.
    const [second, vm2] = xnuPair();
    open.push(second);
    vmCloses(vm2);
    expect(xnu.libc.send(second, buffer, 60, kernel.MSG_DONTWAIT)).toBe(-1);
    expect(xnu.errno()).toBe(errno.ECONNRESET);
    expect(xnu.libc.send(second, buffer, 60, kernel.MSG_DONTWAIT)).toBe(-1);
    expect(xnu.errno()).toBe(errno.EDESTADDRREQ);
    expect(xnu.libc.recv(second, buffer, buffer.length, kernel.MSG_DONTWAIT)).toBe(-1);
    expect(xnu.errno()).toBe(errno.EAGAIN);
    const address = new Uint8Array(128);
    expect(xnu.libc.getpeername(second, address, new Uint32Array([128]))).toBe(-1);
    expect(xnu.errno()).toBe(errno.ENOTCONN);
  });

  test("receive hands over the frames queued before the close, then returns -1 on every later call", () => {
    const [ours, vm] = xnuPair();
    const link = linkOn(ours);
    vmSendsOn(vm, frame(1));
    vmSendsOn(vm, frame(2));
    vmCloses(vm);
    const batch = new FrameBatch(8, 2048);
    // One call reads both frames and then meets the one ECONNRESET: the frames are handed over...
    expect(link.receive(batch)).toBe(2);
    expect(batch.bytes[batch.offsetOf(1)]).toBe(2);
    // ...and the loss is not forgotten, though the socket itself now only says EAGAIN.
    expect(link.receive(batch)).toBe(-1);
    expect(link.receive(batch)).toBe(-1);
    expect(link.peerClosed()).toBe(true);
    link.close();
  });

  test("send after the close returns -1 (EDESTADDRREQ once receive has taken the ECONNRESET)", () => {
    const [ours, vm] = xnuPair();
    const link = linkOn(ours);
    vmSendsOn(vm, frame(1));
    vmCloses(vm);
    const batch = new FrameBatch(4, 2048);
    expect(link.receive(batch)).toBe(1);
    batch.lengths[0] = 60;
    expect(link.send(batch, Uint16Array.of(0), 1)).toBe(-1);
    link.close();

    // Here the ECONNRESET is taken before the link sees it, so its send meets EDESTADDRREQ itself.
    const [second, vm2] = xnuPair();
    const late = linkOn(second);
    vmCloses(vm2);
    const buffer = new Uint8Array(64);
    expect(xnu.libc.recv(second, buffer, 64, kernel.MSG_DONTWAIT)).toBe(-1);
    expect(xnu.errno()).toBe(errno.ECONNRESET);
    expect(late.send(batch, Uint16Array.of(0), 1)).toBe(-1);
    expect(late.receive(batch)).toBe(-1); // remembered: recv alone would say EAGAIN for ever
    late.close();
  });

  test("when send sees the close first, receive reports it too", () => {
    const [ours, vm] = xnuPair();
    const link = linkOn(ours);
    vmCloses(vm);
    const batch = new FrameBatch(4, 2048);
    batch.lengths[0] = 60;
    expect(link.send(batch, Uint16Array.of(0), 1)).toBe(-1); // ECONNRESET, taken by send
    expect(link.receive(batch)).toBe(-1);
    link.close();
  });

  test("peerClosed() notices a closed VM that sent nothing, where poll stays silent (getpeername: ENOTCONN)", () => {
    const [ours, vm] = xnuPair();
    const link = linkOn(ours);
    expect(link.peerClosed()).toBe(false);
    vmCloses(vm);
    expect(link.peerClosed()).toBe(true);
    const batch = new FrameBatch(4, 2048);
    expect(link.receive(batch)).toBe(-1);
    link.close();
    expect(link.peerClosed()).toBe(true);
  });

  test("a VM end that closed before softnet started is refused at once (getpeername: ENOTCONN)", () => {
    const [ours, vm] = xnuPair();
    open.push(ours);
    vmCloses(vm);
    expect(() => new DarwinDatagramLink(xnu, ours)).toThrow(
      `--vm-fd ${ours} is a datagram socket but is not connected to a peer`,
    );
  });

  test("a VM that does not read: frames are dropped on ENOBUFS, as xnu says when its buffer is full", () => {
    const [ours] = xnuPair();
    const link = linkOn(ours);
    const batch = new FrameBatch(64, 1514);
    batch.lengths.fill(1514);
    const slots = Uint16Array.from({ length: 64 }, (_, i) => i);
    let sent = 0;
    for (let round = 0; round < 100; round++) {
      const result = link.send(batch, slots, 64);
      expect(result).toBeGreaterThanOrEqual(0);
      sent += result;
      if (result < 64) break;
    }
    expect(sent).toBeGreaterThan(0);
    expect(sent).toBeLessThan(6400);
    expect(link.peerClosed()).toBe(false);
    link.close();
  });
});

describe("when the VM closes its end, on Linux", () => {
  test("peerClosed() stays false until a send fails (ECONNREFUSED), then the link remembers it", () => {
    const [ours, vm] = pair();
    const link = new DarwinDatagramLink(system, ours);
    libc.close(vm);
    expect(link.peerClosed()).toBe(false); // Linux keeps answering getpeername until a send
    const batch = new FrameBatch(1, 64);
    expect(link.receive(batch)).toBe(0); // and recv only says EAGAIN
    batch.lengths[0] = 20;
    expect(link.send(batch, Uint16Array.of(0), 1)).toBe(-1);
    expect(link.peerClosed()).toBe(true);
    expect(link.receive(batch)).toBe(-1);
    link.close();
  });
});
