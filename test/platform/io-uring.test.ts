// The io_uring the TAP writes frames through (src/platform/linux/io-uring.ts).
//
// - Its layouts and constants against the kernel's own header: a C program compiled for this
//   process's architecture prints them (under test/arm64: for AArch64, run under qemu-user).
// - Writes through a ring into an AF_UNIX datagram socket (one datagram per write, so what arrives
//   shows each frame's bytes and order): batches larger than the ring, a frame in the middle that
//   the kernel refuses on its own, each frame's own result.
// - Where the kernel offers no io_uring the ring is refused with the reason: qemu-user 7.2 has no
//   io_uring system calls (ENOSYS), and kernel.io_uring_disabled=2 refuses everyone (EPERM).
import { afterAll, describe, expect, test } from "bun:test";
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stableAddress } from "../../src/platform/ffi-helpers.ts";
import { FrameBatch } from "../../src/platform/link.ts";
import {
  Cqe,
  CqRingOffsets,
  IO_URING_OP_SUPPORTED,
  IORING_ENTER_GETEVENTS,
  IORING_FEAT_SINGLE_MMAP,
  IORING_OFF_SQ_RING,
  IORING_OFF_SQES,
  IORING_OP_WRITE,
  IORING_REGISTER_PROBE,
  IoUringParams,
  IoUringProbe,
  MAP_POPULATE,
  MAP_SHARED,
  PROT_READ,
  PROT_WRITE,
  Sqe,
  SqRingOffsets,
  SYS_IO_URING_ENTER,
  SYS_IO_URING_REGISTER,
  SYS_IO_URING_SETUP,
  TapWriteRing,
} from "../../src/platform/linux/io-uring.ts";
import {
  AF_UNIX,
  Errno,
  libc,
  MSG_DONTWAIT,
  O_CLOEXEC,
  SO_SNDBUF,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOL_SOCKET,
} from "../../src/platform/linux/libc.ts";
import { REQUIRED_IN_CI } from "../support/ci.ts";
import { compilerForThisProcess, emulator, runnable } from "../support/emulation.ts";
import { requireFile, requireTool } from "../support/tools.ts";

const underQemu = emulator().length > 0;
const scratch = mkdtempSync(join(tmpdir(), "softnet-io-uring-test-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** Every value the module states, by the name the C program prints it under. */
const STATED: Record<string, number> = {
  SYS_IO_URING_SETUP,
  SYS_IO_URING_ENTER,
  SYS_IO_URING_REGISTER,
  "params.size": IoUringParams.SIZE,
  "params.sq_entries": IoUringParams.SQ_ENTRIES,
  "params.cq_entries": IoUringParams.CQ_ENTRIES,
  "params.flags": IoUringParams.FLAGS,
  "params.features": IoUringParams.FEATURES,
  "params.sq_off": IoUringParams.SQ_OFF,
  "params.cq_off": IoUringParams.CQ_OFF,
  "sq_off.head": SqRingOffsets.HEAD,
  "sq_off.tail": SqRingOffsets.TAIL,
  "sq_off.ring_mask": SqRingOffsets.RING_MASK,
  "sq_off.ring_entries": SqRingOffsets.RING_ENTRIES,
  "sq_off.array": SqRingOffsets.ARRAY,
  "cq_off.head": CqRingOffsets.HEAD,
  "cq_off.tail": CqRingOffsets.TAIL,
  "cq_off.ring_mask": CqRingOffsets.RING_MASK,
  "cq_off.ring_entries": CqRingOffsets.RING_ENTRIES,
  "cq_off.cqes": CqRingOffsets.CQES,
  "sqe.size": Sqe.SIZE,
  "sqe.opcode": Sqe.OPCODE,
  "sqe.flags": Sqe.FLAGS,
  "sqe.fd": Sqe.FD,
  "sqe.off": Sqe.OFF,
  "sqe.addr": Sqe.ADDR,
  "sqe.len": Sqe.LEN,
  "sqe.rw_flags": Sqe.RW_FLAGS,
  "sqe.user_data": Sqe.USER_DATA,
  "cqe.size": Cqe.SIZE,
  "cqe.user_data": Cqe.USER_DATA,
  "cqe.res": Cqe.RES,
  "cqe.flags": Cqe.FLAGS,
  "probe.ops": IoUringProbe.HEADER,
  "probe.last_op": IoUringProbe.LAST_OP,
  "probe.ops_len": IoUringProbe.OPS_LEN,
  "probe_op.size": IoUringProbe.OP_SIZE,
  "probe_op.flags": IoUringProbe.OP_FLAGS,
  IORING_OP_WRITE,
  IORING_OFF_SQ_RING,
  IORING_OFF_SQES,
  IORING_ENTER_GETEVENTS,
  IORING_FEAT_SINGLE_MMAP,
  IORING_REGISTER_PROBE,
  IO_URING_OP_SUPPORTED,
  PROT_READ,
  PROT_WRITE,
  MAP_SHARED,
  MAP_POPULATE,
  ENOSYS: Errno.ENOSYS,
  ENOMEM: Errno.ENOMEM,
  EBUSY: Errno.EBUSY,
};

const LAYOUT_PROGRAM = `
#include <errno.h>
#include <linux/io_uring.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#define V(name, value) printf("%s\\"%s\\": %lld", first ? "" : ", ", name, (long long)(value)), first = 0
#define O(name, type, member) V(name, offsetof(type, member))
int main(void) {
  int first = 1;
  printf("{");
  V("SYS_IO_URING_SETUP", __NR_io_uring_setup);
  V("SYS_IO_URING_ENTER", __NR_io_uring_enter);
  V("SYS_IO_URING_REGISTER", __NR_io_uring_register);
  V("params.size", sizeof(struct io_uring_params));
  O("params.sq_entries", struct io_uring_params, sq_entries);
  O("params.cq_entries", struct io_uring_params, cq_entries);
  O("params.flags", struct io_uring_params, flags);
  O("params.features", struct io_uring_params, features);
  O("params.sq_off", struct io_uring_params, sq_off);
  O("params.cq_off", struct io_uring_params, cq_off);
  O("sq_off.head", struct io_sqring_offsets, head);
  O("sq_off.tail", struct io_sqring_offsets, tail);
  O("sq_off.ring_mask", struct io_sqring_offsets, ring_mask);
  O("sq_off.ring_entries", struct io_sqring_offsets, ring_entries);
  O("sq_off.array", struct io_sqring_offsets, array);
  O("cq_off.head", struct io_cqring_offsets, head);
  O("cq_off.tail", struct io_cqring_offsets, tail);
  O("cq_off.ring_mask", struct io_cqring_offsets, ring_mask);
  O("cq_off.ring_entries", struct io_cqring_offsets, ring_entries);
  O("cq_off.cqes", struct io_cqring_offsets, cqes);
  V("sqe.size", sizeof(struct io_uring_sqe));
  O("sqe.opcode", struct io_uring_sqe, opcode);
  O("sqe.flags", struct io_uring_sqe, flags);
  O("sqe.fd", struct io_uring_sqe, fd);
  O("sqe.off", struct io_uring_sqe, off);
  O("sqe.addr", struct io_uring_sqe, addr);
  O("sqe.len", struct io_uring_sqe, len);
  O("sqe.rw_flags", struct io_uring_sqe, rw_flags);
  O("sqe.user_data", struct io_uring_sqe, user_data);
  V("cqe.size", sizeof(struct io_uring_cqe));
  O("cqe.user_data", struct io_uring_cqe, user_data);
  O("cqe.res", struct io_uring_cqe, res);
  O("cqe.flags", struct io_uring_cqe, flags);
  O("probe.ops", struct io_uring_probe, ops);
  O("probe.last_op", struct io_uring_probe, last_op);
  O("probe.ops_len", struct io_uring_probe, ops_len);
  V("probe_op.size", sizeof(struct io_uring_probe_op));
  O("probe_op.flags", struct io_uring_probe_op, flags);
  V("IORING_OP_WRITE", IORING_OP_WRITE);
  V("IORING_OFF_SQ_RING", IORING_OFF_SQ_RING);
  V("IORING_OFF_SQES", IORING_OFF_SQES);
  V("IORING_ENTER_GETEVENTS", IORING_ENTER_GETEVENTS);
  V("IORING_FEAT_SINGLE_MMAP", IORING_FEAT_SINGLE_MMAP);
  V("IORING_REGISTER_PROBE", IORING_REGISTER_PROBE);
  V("IO_URING_OP_SUPPORTED", IO_URING_OP_SUPPORTED);
  V("PROT_READ", PROT_READ);
  V("PROT_WRITE", PROT_WRITE);
  V("MAP_SHARED", MAP_SHARED);
  V("MAP_POPULATE", MAP_POPULATE);
  V("ENOSYS", ENOSYS);
  V("ENOMEM", ENOMEM);
  V("EBUSY", EBUSY);
  printf("}\\n");
  return 0;
}
`;

describe("the layouts and constants, against <linux/io_uring.h>", () => {
  test(`as ${process.arch} C sees them`, () => {
    const { compiler, crossCompiling } = compilerForThisProcess();
    requireFile(
      crossCompiling ? "/usr/aarch64-linux-gnu/include/linux/io_uring.h" : "/usr/include/linux/io_uring.h",
    );
    const source = join(scratch, "layout.c");
    const program = join(scratch, "layout");
    writeFileSync(source, LAYOUT_PROGRAM);
    const build = Bun.spawnSync([requireTool(compiler), "-Wall", "-Werror", "-o", program, source], {
      stderr: "pipe",
    });
    expect(build.stderr.toString()).toBe("");
    expect(build.exitCode).toBe(0);
    const run = Bun.spawnSync(runnable(program), { stdout: "pipe", stderr: "pipe" });
    expect(run.exitCode).toBe(0);
    const fromHeader = JSON.parse(run.stdout.toString()) as Record<string, number>;
    expect(STATED).toEqual(fromHeader);
  });
});

/** An AF_UNIX datagram pair: the ring writes into `writer`, frames come out of `reader` one each. */
function datagramPair(sendBuffer?: number): { writer: number; reader: number; close(): void } {
  const fds = new Int32Array(2);
  expect(libc.socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, fds)).toBe(0);
  if (sendBuffer !== undefined) {
    expect(libc.setsockopt(fds[0]!, SOL_SOCKET, SO_SNDBUF, Int32Array.of(sendBuffer), 4)).toBe(0);
  }
  return {
    writer: fds[0]!,
    reader: fds[1]!,
    close() {
      libc.close(fds[0]!);
      libc.close(fds[1]!);
    },
  };
}

/** A ring writing to `fd`; this kernel must offer one (the tests outside qemu-user need it). */
function openRing(fd: number): TapWriteRing {
  const ring = TapWriteRing.open(fd);
  if (typeof ring === "string") throw new Error(`this kernel refuses io_uring: ${ring}`);
  return ring;
}

/** Every datagram waiting at `fd`, in order. */
function drain(fd: number): Uint8Array[] {
  const buffer = new Uint8Array(65536);
  const datagrams: Uint8Array[] = [];
  for (;;) {
    const length = libc.recv(fd, buffer, buffer.length, MSG_DONTWAIT);
    if (length < 0) return datagrams;
    datagrams.push(buffer.slice(0, length));
  }
}

/** A frame whose bytes say which one it is: its index in every byte, `length` bytes long. */
function frameBytes(index: number, length: number): Uint8Array {
  return new Uint8Array(length).fill(index & 0xff);
}

if (underQemu) {
  test("under qemu-user the kernel's io_uring is out of reach: the ring is refused, saying why", () => {
    // qemu-user 7.2 implements no io_uring system call (linux-user/syscall.c: "Unsupported syscall").
    const pair = datagramPair();
    try {
      expect(TapWriteRing.open(pair.writer)).toBe("io_uring_setup: Function not implemented (ENOSYS)");
    } finally {
      pair.close();
    }
  });
} else {
  describe("writing through the ring", () => {
    test("a batch larger than the ring arrives whole and in order, each frame with its own result", () => {
      const pair = datagramPair();
      const ring = openRing(pair.writer);
      try {
        // The ring's descriptor is close-on-exec: nft, which softnet starts later, must not get it.
        const ringFds = readdirSync("/proc/self/fd").filter((fd) => {
          try {
            return readlinkSync(`/proc/self/fd/${fd}`) === "anon_inode:[io_uring]";
          } catch {
            return false; // the directory's own descriptor, gone by now
          }
        });
        expect(ringFds.length).toBe(1);
        const flags = /^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${ringFds[0]}`, "ascii"));
        expect(Number.parseInt(flags![1]!, 8) & O_CLOEXEC).toBe(O_CLOEXEC);
        const count = 2 * ring.entries + 5; // three submissions
        const batch = new FrameBatch(count, 256);
        // Slots listed out of order, as the filter loop lists the accepted ones.
        const slots = Uint16Array.from({ length: count }, (_, j) => (j * 7) % count);
        for (let slot = 0; slot < count; slot++) {
          batch.lengths[slot] = 60 + (slot % 50);
          batch.bytes.set(frameBytes(slot, batch.lengths[slot]!), batch.offsetOf(slot));
        }
        const results = new Int32Array(count).fill(-99999);
        ring.write(stableAddress(batch.bytes), batch.slotSize, slots, batch.lengths, count, results);
        expect([...results]).toEqual([...slots].map((slot) => batch.lengths[slot]!));
        const arrived = drain(pair.reader);
        expect(arrived.map((datagram) => [datagram[0], datagram.length])).toEqual(
          [...slots].map((slot) => [slot & 0xff, batch.lengths[slot]!]),
        );
        expect(arrived.every((datagram) => datagram.every((byte) => byte === datagram[0]))).toBe(true);
        // And again: the ring's positions wrap and its completions are all taken.
        results.fill(-99999);
        ring.write(stableAddress(batch.bytes), batch.slotSize, slots, batch.lengths, 3, results);
        expect([...results.subarray(0, 3)]).toEqual(
          [...slots.subarray(0, 3)].map((slot) => batch.lengths[slot]!),
        );
        expect(drain(pair.reader).length).toBe(3);
      } finally {
        ring.close();
        ring.close();
        pair.close();
      }
    });

    test("a frame the kernel refuses in the middle of a batch gets its errno; the frames around it go out", () => {
      // A datagram larger than the send buffer is refused with EMSGSIZE (net/unix/af_unix.c).
      const pair = datagramPair(4096);
      const ring = openRing(pair.writer);
      try {
        const batch = new FrameBatch(3, 32768);
        const lengths = [100, 30000, 120];
        lengths.forEach((length, slot) => {
          batch.lengths[slot] = length;
          batch.bytes.set(frameBytes(slot + 1, length), batch.offsetOf(slot));
        });
        const results = new Int32Array(3);
        ring.write(
          stableAddress(batch.bytes),
          batch.slotSize,
          Uint16Array.of(0, 1, 2),
          batch.lengths,
          3,
          results,
        );
        expect([...results]).toEqual([100, -Errno.EMSGSIZE, 120]);
        expect(drain(pair.reader).map((datagram) => [datagram[0], datagram.length])).toEqual([
          [1, 100],
          [3, 120],
        ]);
      } finally {
        ring.close();
        pair.close();
      }
    });

    test("a closed ring refuses to write rather than touch unmapped memory", () => {
      const pair = datagramPair();
      const ring = openRing(pair.writer);
      ring.close();
      const batch = new FrameBatch(1, 128);
      batch.lengths[0] = 64;
      expect(() =>
        ring.write(
          stableAddress(batch.bytes),
          batch.slotSize,
          Uint16Array.of(0),
          batch.lengths,
          1,
          new Int32Array(1),
        ),
      ).toThrow("the TAP's io_uring is closed");
      pair.close();
    });
  });

  const DISABLED = "/proc/sys/kernel/io_uring_disabled";
  test.skipIf((process.getuid?.() !== 0 || !existsSync(DISABLED)) && !REQUIRED_IN_CI)(
    "kernel.io_uring_disabled=2 refuses the ring, saying why (EPERM)",
    () => {
      const before = readFileSync(DISABLED, "ascii").trim();
      const pair = datagramPair();
      try {
        writeFileSync(DISABLED, "2");
        expect(TapWriteRing.open(pair.writer)).toBe("io_uring_setup: Operation not permitted (EPERM)");
      } finally {
        writeFileSync(DISABLED, before);
        pair.close();
      }
      // And with it allowed again, a ring is made.
      const again = datagramPair();
      const ring = TapWriteRing.open(again.writer);
      expect(typeof ring).not.toBe("string");
      if (typeof ring !== "string") ring.close();
      again.close();
    },
  );
}
