// DatagramLink against real AF_UNIX datagram socketpairs. The far end is driven with plain
// read()/write() so the link is checked against the kernel, not against itself.
import { afterEach, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { FrameBatch, SendOutcome } from "../../src/platform/link.ts";
import { DatagramLink } from "../../src/platform/linux/datagram-link.ts";
import {
  AF_INET,
  AF_UNIX,
  Errno,
  lastErrno,
  libc,
  MSG_DONTWAIT,
  O_NONBLOCK,
  O_RDWR,
  SHUT_RDWR,
  SO_SNDBUF,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOCK_STREAM,
  SOL_SOCKET,
} from "../../src/platform/linux/libc.ts";
import { expectSoftnetError } from "../support/errors.ts";

const openFds = new Set<number>();
const links: DatagramLink[] = [];

afterEach(() => {
  for (const link of links.splice(0)) link.close();
  for (const fd of openFds) libc.close(fd);
  openFds.clear();
});

function socketPair(type = SOCK_DGRAM): [number, number] {
  const fds = new Int32Array(2);
  expect(libc.socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fds)).toBe(0);
  openFds.add(fds[1]!);
  return [fds[0]!, fds[1]!];
}

/** A link on one end of a fresh socketpair; returns the link and the peer fd. */
function linkedPair(): { link: DatagramLink; peer: number } {
  const [mine, peer] = socketPair();
  const link = new DatagramLink(mine);
  links.push(link);
  return { link, peer };
}

/** A frame whose bytes encode its index, so reordering or mixing frames is visible. */
function frame(index: number, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (index * 31 + i) & 0xff;
  return bytes;
}

function peerSend(peer: number, bytes: Uint8Array): void {
  expect(libc.write(peer, bytes, bytes.length)).toBe(bytes.length);
}

/** Reads one datagram from the peer without blocking; null when none is waiting. */
function peerReceive(peer: number): Uint8Array | null {
  const buffer = new Uint8Array(65536);
  const length = libc.recv(peer, buffer, buffer.length, MSG_DONTWAIT);
  if (length < 0) {
    expect(lastErrno()).toBe(Errno.EAGAIN);
    return null;
  }
  return buffer.slice(0, length);
}

function slotBytes(batch: FrameBatch, slot: number): Uint8Array {
  const offset = batch.offsetOf(slot);
  return batch.bytes.slice(offset, offset + batch.lengths[slot]!);
}

describe("DatagramLink construction", () => {
  test("rejects a file that is not a socket, naming what it is", () => {
    const fd = libc.open("/dev/null", O_RDWR);
    openFds.add(fd);
    expectSoftnetError(
      () => new DatagramLink(fd),
      `--vm-fd ${fd} is not a datagram socket (it is /dev/null)`,
    );
  });

  test("rejects a stream socketpair", () => {
    const [mine] = socketPair(SOCK_STREAM);
    openFds.add(mine);
    expectSoftnetError(() => new DatagramLink(mine), "(it is an AF_UNIX stream socket)");
  });

  test("rejects an AF_INET datagram socket", () => {
    const fd = libc.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    openFds.add(fd);
    expectSoftnetError(() => new DatagramLink(fd), "(it is an AF_INET datagram socket)");
  });

  test("rejects an unconnected AF_UNIX datagram socket", () => {
    const fd = libc.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    openFds.add(fd);
    expectSoftnetError(() => new DatagramLink(fd), "is a datagram socket but is not connected to a peer");
  });

  test("rejects an fd that is not open, and uses the option name it is given", () => {
    const [mine, peer] = socketPair();
    libc.close(mine);
    libc.close(peer);
    openFds.delete(peer);
    expectSoftnetError(
      () => new DatagramLink(mine, { optionName: "--fd" }),
      `--fd ${mine} is not an open file descriptor`,
    );
    expectSoftnetError(() => new DatagramLink(-1), "--vm-fd -1 is not a file descriptor number");
  });

  test("accepts a socketpair end and leaves the shared file description blocking", () => {
    const { link } = linkedPair();
    expect(link.description).toBe(`vm socket fd ${link.pollFd}`);
    const batch = new FrameBatch(4, 2048);
    expect(link.receive(batch)).toBe(0); // nothing queued: returns at once (MSG_DONTWAIT)
    expect(batch.count).toBe(0);
    // O_NONBLOCK would show in the octal "flags:" line of fdinfo.
    const flags = /^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${link.pollFd}`, "utf8"))?.[1];
    expect(flags).toBeDefined();
    expect(Number.parseInt(flags!, 8) & O_NONBLOCK).toBe(0);
  });
});

describe("DatagramLink receive", () => {
  test("fills slots from 0 with lengths and contents of each datagram, in order", () => {
    const { link, peer } = linkedPair();
    const sizes = [60, 1514, 14, 100, 64];
    for (const [i, size] of sizes.entries()) peerSend(peer, frame(i, size));
    const batch = new FrameBatch(8, 2048);
    expect(link.receive(batch)).toBe(sizes.length);
    expect(batch.count).toBe(sizes.length);
    sizes.forEach((size, i) => {
      expect(batch.lengths[i]).toBe(size);
      expect(slotBytes(batch, i)).toEqual(frame(i, size));
    });
    expect(link.receive(batch)).toBe(0);
    expect(batch.count).toBe(0);
  });

  test("takes at most capacity frames per call and keeps the rest queued", () => {
    const { link, peer } = linkedPair();
    for (let i = 0; i < 10; i++) peerSend(peer, frame(i, 60 + i));
    const batch = new FrameBatch(4, 256);
    const seen: number[] = [];
    for (const expected of [4, 4, 2, 0]) {
      expect(link.receive(batch)).toBe(expected);
      for (let slot = 0; slot < batch.count; slot++) seen.push(batch.lengths[slot]!);
    }
    expect(seen).toEqual([60, 61, 62, 63, 64, 65, 66, 67, 68, 69]);
  });

  test("a zero-length datagram is an empty frame, not end of file", () => {
    const { link, peer } = linkedPair();
    peerSend(peer, new Uint8Array(0));
    peerSend(peer, frame(1, 60));
    const batch = new FrameBatch(4, 2048);
    expect(link.receive(batch)).toBe(2);
    expect(batch.lengths[0]).toBe(0);
    expect(batch.lengths[1]).toBe(60);
  });

  test("a datagram larger than a slot is reported with length 0 and counted", () => {
    const { link, peer } = linkedPair();
    peerSend(peer, frame(0, 100));
    peerSend(peer, frame(1, 64));
    const batch = new FrameBatch(4, 64);
    expect(link.receive(batch)).toBe(2);
    expect(batch.lengths[0]).toBe(0);
    expect(batch.lengths[1]).toBe(64);
    expect(slotBytes(batch, 1)).toEqual(frame(1, 64));
    expect(link.truncatedFrames).toBe(1);
  });

  test("keeps working when a small batch's bytes move (reading .buffer relocates small typed arrays)", () => {
    const { link, peer } = linkedPair();
    const batch = new FrameBatch(1, 64); // 64 bytes: JavaScriptCore stores it inline
    peerSend(peer, frame(1, 50));
    expect(link.receive(batch)).toBe(1);
    void new DataView(batch.bytes.buffer); // what wire/ code may do; must not strand the link's pointers
    peerSend(peer, frame(2, 40));
    expect(link.receive(batch)).toBe(1);
    expect(slotBytes(batch, 0)).toEqual(frame(2, 40));
    batch.lengths[0] = 40;
    expect(link.send(batch, Uint16Array.of(0), 1)).toBe(1);
    expect(peerReceive(peer)).toEqual(frame(2, 40));
  });

  test("works with several batches in turn", () => {
    const { link, peer } = linkedPair();
    const first = new FrameBatch(2, 128);
    const second = new FrameBatch(3, 256);
    peerSend(peer, frame(1, 70));
    expect(link.receive(first)).toBe(1);
    peerSend(peer, frame(2, 200));
    expect(link.receive(second)).toBe(1);
    peerSend(peer, frame(3, 90));
    expect(link.receive(first)).toBe(1);
    expect(slotBytes(first, 0)).toEqual(frame(3, 90));
    expect(slotBytes(second, 0)).toEqual(frame(2, 200));
  });
});

describe("DatagramLink send", () => {
  test("sends the listed slots in the listed order, one datagram each", () => {
    const { link, peer } = linkedPair();
    const batch = new FrameBatch(4, 2048);
    const sizes = [60, 1514, 98, 42];
    sizes.forEach((size, slot) => {
      batch.bytes.set(frame(slot, size), batch.offsetOf(slot));
      batch.lengths[slot] = size;
    });
    expect(link.send(batch, Uint16Array.of(3, 0, 2), 3)).toBe(3);
    expect(peerReceive(peer)).toEqual(frame(3, 42));
    expect(peerReceive(peer)).toEqual(frame(0, 60));
    expect(peerReceive(peer)).toEqual(frame(2, 98));
    expect(peerReceive(peer)).toBeNull();
    expect(link.send(batch, Uint16Array.of(1), 0)).toBe(0);
    expect(peerReceive(peer)).toBeNull();
  });

  test("a round trip through two links preserves every frame", () => {
    const [a, b] = socketPair();
    openFds.delete(b);
    const left = new DatagramLink(a);
    const right = new DatagramLink(b);
    links.push(left, right);
    const out = new FrameBatch(64, 2048);
    const slots = new Uint16Array(64);
    for (let slot = 0; slot < 64; slot++) {
      const size = 14 + ((slot * 97) % 1500);
      out.bytes.set(frame(slot, size), out.offsetOf(slot));
      out.lengths[slot] = size;
      slots[slot] = 63 - slot;
    }
    expect(left.send(out, slots, 64)).toBe(64);
    const into = new FrameBatch(64, 2048);
    expect(right.receive(into)).toBe(64);
    for (let i = 0; i < 64; i++) {
      const slot = 63 - i;
      expect(into.lengths[i]).toBe(out.lengths[slot]!);
      expect(slotBytes(into, i)).toEqual(slotBytes(out, slot));
    }
  });

  test("when the receiver is full, sends what fits, reports the rest as dropped, and recovers", () => {
    const { link, peer } = linkedPair();
    const batch = new FrameBatch(256, 2048);
    const slots = new Uint16Array(256);
    for (let slot = 0; slot < 256; slot++) {
      batch.bytes.set(frame(slot, 1514), batch.offsetOf(slot));
      batch.lengths[slot] = 1514;
      slots[slot] = slot;
    }
    let total = 0;
    let partial = -1;
    for (let round = 0; round < 100; round++) {
      const sent = link.send(batch, slots, 256);
      expect(sent).toBeGreaterThanOrEqual(0);
      total += sent;
      if (sent < 256) {
        partial = sent;
        break;
      }
    }
    expect(partial).toBeGreaterThanOrEqual(0); // the buffer filled up within 25,600 frames
    // The 1 MiB send buffer (2 MiB as the kernel counts it) holds several hundred full frames;
    // the default 208 KiB would hold about 90.
    expect(total).toBeGreaterThan(500);
    const outcomes = new Uint8Array(256).fill(0xff);
    expect(link.send(batch, slots, 4, outcomes)).toBe(0); // still full: everything dropped, nothing thrown
    expect([...outcomes.subarray(0, 5)]).toEqual([...Array(4).fill(SendOutcome.NO_ROOM), 0xff]);
    // The peer reads a few; there is room again, and frames arrive intact and in order.
    for (let i = 0; i < 8; i++) expect(peerReceive(peer)?.length).toBe(1514);
    expect(link.send(batch, slots, 1)).toBe(1);
  });

  test("skips a frame the socket cannot carry (EMSGSIZE) and sends the others", () => {
    const { link, peer } = linkedPair();
    const batch = new FrameBatch(3, 65536);
    batch.lengths[0] = 60;
    batch.lengths[1] = 65536;
    batch.lengths[2] = 61;
    // Shrink the send buffer (to 8 KiB as the kernel counts it) so slot 1 cannot fit in it at all.
    expect(libc.setsockopt(link.pollFd, SOL_SOCKET, SO_SNDBUF, new Int32Array([4096]), 4)).toBe(0);
    const outcomes = new Uint8Array(3).fill(0xff);
    expect(link.send(batch, Uint16Array.of(0, 1, 2), 3, outcomes)).toBe(2);
    expect([...outcomes]).toEqual([SendOutcome.SENT, SendOutcome.REFUSED_TOO_LONG, SendOutcome.SENT]);
    expect(peerReceive(peer)?.length).toBe(60);
    expect(peerReceive(peer)?.length).toBe(61);
  });
});

describe("DatagramLink when the peer goes away", () => {
  test("peer closed: receive sees nothing (the kernel gives no EOF), send returns -1 every time", () => {
    const { link, peer } = linkedPair();
    libc.close(peer);
    openFds.delete(peer);
    const batch = new FrameBatch(4, 2048);
    batch.lengths[0] = 60;
    expect(link.receive(batch)).toBe(0);
    expect(link.send(batch, Uint16Array.of(0), 1)).toBe(-1); // ECONNREFUSED
    expect(link.send(batch, Uint16Array.of(0), 1)).toBe(-1); // ENOTCONN from then on
    expect(link.receive(batch)).toBe(0);
  });

  test("peer closed with frames still queued: they are delivered, then send returns -1", () => {
    const { link, peer } = linkedPair();
    peerSend(peer, frame(1, 60));
    peerSend(peer, frame(2, 61));
    libc.close(peer);
    openFds.delete(peer);
    const batch = new FrameBatch(4, 2048);
    expect(link.receive(batch)).toBe(2);
    expect(slotBytes(batch, 1)).toEqual(frame(2, 61));
    expect(link.send(batch, Uint16Array.of(0), 1)).toBe(-1);
  });

  test("peer closed in the middle of a batch: the frames before are sent, the call returns -1 next time", () => {
    const { link, peer } = linkedPair();
    const batch = new FrameBatch(2, 2048);
    batch.lengths[0] = 60;
    batch.lengths[1] = 60;
    expect(link.send(batch, Uint16Array.of(0, 1), 2)).toBe(2);
    libc.close(peer);
    openFds.delete(peer);
    expect(link.send(batch, Uint16Array.of(0, 1), 2)).toBe(-1);
  });

  test("peer shut down (EPIPE): send returns -1", () => {
    const { link, peer } = linkedPair();
    expect(libc.shutdown(peer, SHUT_RDWR)).toBe(0);
    const batch = new FrameBatch(1, 2048);
    batch.lengths[0] = 60;
    expect(link.send(batch, Uint16Array.of(0), 1)).toBe(-1);
  });

  test("close() closes the fd once", () => {
    const { link, peer } = linkedPair();
    link.close();
    link.close();
    // Our end is gone, so the peer's next write is refused.
    expect(libc.write(peer, new Uint8Array(10), 10)).toBe(-1);
    expect(lastErrno()).toBe(Errno.ECONNREFUSED);
    links.length = 0;
  });
});
