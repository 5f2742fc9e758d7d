/**
 * Frames to a TAP through io_uring: one io_uring_enter(2) writes a whole batch, where write(2)
 * costs one system call per frame. A TAP has no batch call of its own (read() and write() move one
 * frame each, tap.ts), and on the machines we measured the system call itself, not the frame's
 * way through the bridge, was the larger part of a small frame's cost (README, "Where the time
 * goes"). When the kernel refuses io_uring (older than 5.6, kernel.io_uring_disabled, a seccomp
 * filter, qemu-user) the TAP writes one frame per write() as before: TapWriteRing.open says why.
 *
 * Only what the TAP needs: one ring per TAP, IORING_OP_WRITE only, no SQPOLL thread, no
 * registered buffers or files. Every write() call submits the batch and waits in the same system
 * call until every write has completed (min_complete = the number submitted), so the frames'
 * memory is free again when it returns, exactly as after a loop of write() calls, and nothing is
 * in flight between batches.
 *
 * Memory order. The rings are memory shared with the kernel. The kernel publishes a completion by
 * writing the CQE and then the CQ tail with smp_store_release, and the reader must load the tail
 * with acquire semantics before it reads the CQEs (io_uring/io_uring.c, the comment at its top:
 * returning from io_uring_enter is not promised to order them). JavaScript gives acquire and
 * release only through Atomics, which also work on memory that is not a SharedArrayBuffer, so the
 * CQ tail is read with Atomics.load, and the SQ tail and CQ head are published with Atomics.store
 * (sequentially consistent: at least the release the header asks for). SQEs and CQEs themselves
 * are plain stores and loads ordered by those. Without SQPOLL the kernel reads the SQ tail only
 * inside io_uring_enter, which this thread calls after its stores.
 *
 * A TAP (opened O_NONBLOCK, and tun sets FMODE_NOWAIT itself in tun_chr_open) is written inline, in
 * this thread, during io_uring_enter (io_uring/rw.c io_write); only if the TAP's socket ran out of
 * send buffer (its sk_sndbuf is INT_MAX unless TUNSETSNDBUF lowers it, which softnet never does)
 * would io_uring wait for it to become writable, and the call with it.
 *
 * ABI facts, include/uapi/linux/io_uring.h (Linux 6.x, the same layout on every architecture:
 * fixed-width fields only). test/platform/io-uring.test.ts compiles a C program against the
 * header and compares every offset and constant below, on x86-64 and on arm64.
 */
import { toArrayBuffer } from "bun:ffi";
import { stableAddress } from "../ffi-helpers.ts";
import { Errno, lastErrno, libc, SysError } from "./libc.ts";

/**
 * System call numbers: arch/x86/entry/syscalls/syscall_64.tbl and, for arm64,
 * include/uapi/asm-generic/unistd.h (both 425-427; io_uring came after the numbers were unified).
 */
export const SYS_IO_URING_SETUP = 425;
export const SYS_IO_URING_ENTER = 426;
export const SYS_IO_URING_REGISTER = 427;

/** struct io_uring_params: 120 bytes. */
export const IoUringParams = {
  SIZE: 120,
  SQ_ENTRIES: 0,
  CQ_ENTRIES: 4,
  FLAGS: 8,
  FEATURES: 20,
  /** struct io_sqring_offsets sq_off */
  SQ_OFF: 40,
  /** struct io_cqring_offsets cq_off */
  CQ_OFF: 80,
} as const;

/** struct io_sqring_offsets, relative to sq_off. */
export const SqRingOffsets = { HEAD: 0, TAIL: 4, RING_MASK: 8, RING_ENTRIES: 12, ARRAY: 24 } as const;
/** struct io_cqring_offsets, relative to cq_off. */
export const CqRingOffsets = { HEAD: 0, TAIL: 4, RING_MASK: 8, RING_ENTRIES: 12, CQES: 20 } as const;

/** struct io_uring_sqe: 64 bytes. */
export const Sqe = {
  SIZE: 64,
  OPCODE: 0,
  FLAGS: 1,
  FD: 4,
  OFF: 8,
  ADDR: 16,
  LEN: 24,
  RW_FLAGS: 28,
  USER_DATA: 32,
} as const;

/** struct io_uring_cqe: 16 bytes (no IORING_SETUP_CQE32). */
export const Cqe = { SIZE: 16, USER_DATA: 0, RES: 8, FLAGS: 12 } as const;

/** enum io_uring_op: IORING_OP_WRITE (Linux 5.6). */
export const IORING_OP_WRITE = 23;
/** mmap offsets of the rings (IORING_OFF_SQ_RING) and of the SQE array (IORING_OFF_SQES). */
export const IORING_OFF_SQ_RING = 0;
export const IORING_OFF_SQES = 0x10000000;
export const IORING_ENTER_GETEVENTS = 1;
/** One mmap for both rings (Linux 5.4). */
export const IORING_FEAT_SINGLE_MMAP = 1;
/** io_uring_register opcode (Linux 5.6), its struct io_uring_probe and the supported flag. */
export const IORING_REGISTER_PROBE = 8;
export const IoUringProbe = { HEADER: 16, LAST_OP: 0, OPS_LEN: 1, OP_SIZE: 8, OP_FLAGS: 2 } as const;
export const IO_URING_OP_SUPPORTED = 1;
/** The probe's room: one entry per possible opcode (ops_len is a __u8). */
const PROBE_OPS = 256;

/** include/uapi/asm-generic/mman-common.h and mman.h (x86-64 and arm64 alike). */
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 1;
export const MAP_POPULATE = 0x8000;

/** Entries of the submission ring: a batch of up to this many frames goes in one call. */
export const WRITE_RING_ENTRIES = 64;

const TWO_TO_32 = 0x1_0000_0000;

/** A mapping made by mmap, unmapped by close(). */
interface Mapping {
  address: number;
  length: number;
}

function map(ringFd: number, length: number, offset: number, what: string): Mapping {
  const address = Number(
    libc.mmap(0, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ringFd, offset),
  );
  if (address === -1 || address === 0) throw new SysError(`mmap(${what})`, lastErrno());
  return { address, length };
}

function enter(ringFd: number, toSubmit: number, minComplete: number): number {
  return Number(
    libc.syscall(SYS_IO_URING_ENTER, ringFd, toSubmit, minComplete, IORING_ENTER_GETEVENTS, 0, 0),
  );
}

/**
 * A ring that writes frames to one file descriptor (a TAP). Not thread-safe: only the filter
 * loop's thread uses it.
 */
export class TapWriteRing {
  /** The number of SQEs: frames per io_uring_enter. */
  readonly entries: number;
  private readonly ring32: Uint32Array;
  private readonly sqes32: Uint32Array;
  private readonly cqes32: Uint32Array;
  private readonly cqesI32: Int32Array;
  private readonly sqMask: number;
  private readonly cqMask: number;
  /** Indexes (in 32-bit words of the ring mapping) of the counters the kernel and we share. */
  private readonly sqHeadWord: number;
  private readonly sqTailWord: number;
  private readonly cqHeadWord: number;
  private readonly cqTailWord: number;
  private closed = false;

  private constructor(
    private readonly ringFd: number,
    params: DataView,
    private readonly rings: Mapping,
    private readonly sqesMapping: Mapping,
    fd: number,
  ) {
    const sqOff = IoUringParams.SQ_OFF;
    const cqOff = IoUringParams.CQ_OFF;
    const u32 = (offset: number) => params.getUint32(offset, true);
    this.entries = u32(IoUringParams.SQ_ENTRIES);
    this.ring32 = new Uint32Array(toArrayBuffer(rings.address, 0, rings.length));
    this.sqes32 = new Uint32Array(toArrayBuffer(sqesMapping.address, 0, sqesMapping.length));
    const cqes = rings.address + u32(cqOff + CqRingOffsets.CQES);
    const cqEntries = u32(IoUringParams.CQ_ENTRIES);
    this.cqes32 = new Uint32Array(toArrayBuffer(cqes, 0, cqEntries * Cqe.SIZE));
    this.cqesI32 = new Int32Array(this.cqes32.buffer, this.cqes32.byteOffset, this.cqes32.length);
    this.sqMask = this.ring32[u32(sqOff + SqRingOffsets.RING_MASK) / 4];
    this.cqMask = this.ring32[u32(cqOff + CqRingOffsets.RING_MASK) / 4];
    this.sqHeadWord = u32(sqOff + SqRingOffsets.HEAD) / 4;
    this.sqTailWord = u32(sqOff + SqRingOffsets.TAIL) / 4;
    this.cqHeadWord = u32(cqOff + CqRingOffsets.HEAD) / 4;
    this.cqTailWord = u32(cqOff + CqRingOffsets.TAIL) / 4;
    // The SQ array maps ring positions to SQEs: position i always uses SQE i, and every SQE is a
    // write to `fd` at the current position (off = -1: a TAP has no offsets), so a batch only
    // sets each SQE's buffer, length and user data.
    const array = u32(sqOff + SqRingOffsets.ARRAY) / 4;
    for (let i = 0; i < this.entries; i++) {
      this.ring32[array + i] = i;
      const sqe = i * (Sqe.SIZE / 4);
      this.sqes32.fill(0, sqe, sqe + Sqe.SIZE / 4);
      this.sqes32[sqe + Sqe.OPCODE / 4] = IORING_OP_WRITE; // opcode, flags 0, ioprio 0
      this.sqes32[sqe + Sqe.FD / 4] = fd;
      this.sqes32[sqe + Sqe.OFF / 4] = 0xffffffff;
      this.sqes32[sqe + Sqe.OFF / 4 + 1] = 0xffffffff;
    }
  }

  /**
   * A ring for writes to `fd`, or the reason the kernel offers none (then write() it is). Call it
   * after the privilege drop: the ring is the caller's, like everything set up after it. Its
   * descriptor is close-on-exec (io_uring/io_uring.c io_uring_install_fd: O_RDWR | O_CLOEXEC), so
   * nft, which softnet starts afterwards, does not inherit it.
   */
  static open(fd: number, entries = WRITE_RING_ENTRIES): TapWriteRing | string {
    const paramsBytes = new Uint8Array(IoUringParams.SIZE);
    const ringFd = Number(libc.syscall(SYS_IO_URING_SETUP, entries, stableAddress(paramsBytes), 0, 0, 0, 0));
    if (ringFd < 0) return new SysError("io_uring_setup", lastErrno()).message;
    const params = new DataView(paramsBytes.buffer);
    const mappings: Mapping[] = [];
    let ring: TapWriteRing | undefined;
    try {
      const features = params.getUint32(IoUringParams.FEATURES, true);
      if ((features & IORING_FEAT_SINGLE_MMAP) === 0) return "the kernel's io_uring is older than Linux 5.4";
      const unsupported = writeUnsupported(ringFd);
      if (unsupported !== undefined) return unsupported;
      const sqEntries = params.getUint32(IoUringParams.SQ_ENTRIES, true);
      const cqEntries = params.getUint32(IoUringParams.CQ_ENTRIES, true);
      const sqEnd = params.getUint32(IoUringParams.SQ_OFF + SqRingOffsets.ARRAY, true) + sqEntries * 4;
      const cqEnd = params.getUint32(IoUringParams.CQ_OFF + CqRingOffsets.CQES, true) + cqEntries * Cqe.SIZE;
      mappings.push(map(ringFd, Math.max(sqEnd, cqEnd), IORING_OFF_SQ_RING, "IORING_OFF_SQ_RING"));
      mappings.push(map(ringFd, sqEntries * Sqe.SIZE, IORING_OFF_SQES, "IORING_OFF_SQES"));
      ring = new TapWriteRing(ringFd, params, mappings[0], mappings[1], fd);
      return ring;
    } catch (error) {
      return error instanceof Error ? error.message : String(error);
    } finally {
      if (ring === undefined) {
        // Refused part of the way: nothing of the ring stays.
        for (const mapping of mappings) libc.munmap(mapping.address, mapping.length);
        libc.close(ringFd);
      }
    }
  }

  /**
   * Writes the frames of `slots[0..count)` (each at base + slot * slotSize, lengths[slot] bytes),
   * in that order, and stores each one's result in results[j] for slots[j]: the bytes written, or
   * -errno, as write() would have returned them (-EAGAIN as well for a frame the ring could not
   * take: no memory for the request). Throws SysError when io_uring_enter fails for a reason that
   * is not this batch's (a closed ring).
   */
  write(
    base: number,
    slotSize: number,
    slots: Uint16Array,
    lengths: Int32Array,
    count: number,
    results: Int32Array,
  ): void {
    if (this.closed) throw new Error("the TAP's io_uring is closed");
    const ring = this.ring32;
    const sqes = this.sqes32;
    for (let first = 0; first < count; first += this.entries) {
      const n = Math.min(count - first, this.entries);
      const tail = ring[this.sqTailWord]; // only this thread writes it
      for (let k = 0; k < n; k++) {
        const j = first + k;
        const slot = slots[j];
        const address = base + slot * slotSize;
        const low = address >>> 0;
        const sqe = ((tail + k) & this.sqMask) * (Sqe.SIZE / 4);
        sqes[sqe + Sqe.ADDR / 4] = low;
        sqes[sqe + Sqe.ADDR / 4 + 1] = (address - low) / TWO_TO_32;
        sqes[sqe + Sqe.LEN / 4] = lengths[slot];
        sqes[sqe + Sqe.USER_DATA / 4] = j;
      }
      Atomics.store(ring, this.sqTailWord, (tail + n) >>> 0);
      let submitted = enter(this.ringFd, n, n);
      while (submitted < 0) {
        const errno = lastErrno();
        if (errno !== Errno.EINTR) {
          // Nothing was taken (a negative return means none was submitted): withdraw the SQEs.
          Atomics.store(ring, this.sqTailWord, tail);
          if (errno === Errno.EAGAIN || errno === Errno.ENOMEM || errno === Errno.EBUSY) {
            results.fill(-Errno.EAGAIN, first, count);
            return;
          }
          throw new SysError("io_uring_enter", errno);
        }
        submitted = enter(this.ringFd, n, n);
      }
      if (submitted < n) {
        // The kernel took the first `submitted` (its SQ head says so); the rest are withdrawn, or
        // the next call would send them with whatever their slots hold by then.
        Atomics.store(ring, this.sqTailWord, Atomics.load(ring, this.sqHeadWord));
        results.fill(-Errno.EAGAIN, first + submitted, first + n);
      }
      this.reap(submitted, results);
    }
  }

  /** Waits until `expected` completions are posted, and moves their results into `results`. */
  private reap(expected: number, results: Int32Array): void {
    const ring = this.ring32;
    const head = ring[this.cqHeadWord];
    let posted = (Atomics.load(ring, this.cqTailWord) - head) >>> 0;
    while (posted < expected) {
      // Submitted, but the wait was cut short (a signal): wait for the rest.
      if (enter(this.ringFd, 0, expected - posted) < 0) {
        const errno = lastErrno();
        if (errno !== Errno.EINTR) throw new SysError("io_uring_enter", errno);
      }
      posted = (Atomics.load(ring, this.cqTailWord) - head) >>> 0;
    }
    for (let i = 0; i < expected; i++) {
      const cqe = ((head + i) & this.cqMask) * (Cqe.SIZE / 4);
      results[this.cqes32[cqe + Cqe.USER_DATA / 4]] = this.cqesI32[cqe + Cqe.RES / 4];
    }
    Atomics.store(ring, this.cqHeadWord, (head + expected) >>> 0);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    libc.munmap(this.sqesMapping.address, this.sqesMapping.length);
    libc.munmap(this.rings.address, this.rings.length);
    libc.close(this.ringFd);
  }
}

/** undefined when the kernel's io_uring has IORING_OP_WRITE, else why not. */
function writeUnsupported(ringFd: number): string | undefined {
  const probe = new Uint8Array(IoUringProbe.HEADER + PROBE_OPS * IoUringProbe.OP_SIZE);
  const result = Number(
    libc.syscall(SYS_IO_URING_REGISTER, ringFd, IORING_REGISTER_PROBE, stableAddress(probe), PROBE_OPS, 0, 0),
  );
  if (result < 0) return new SysError("io_uring_register(IORING_REGISTER_PROBE)", lastErrno()).message;
  const opsLength = probe[IoUringProbe.OPS_LEN];
  const flags = new DataView(probe.buffer).getUint16(
    IoUringProbe.HEADER + IORING_OP_WRITE * IoUringProbe.OP_SIZE + IoUringProbe.OP_FLAGS,
    true,
  );
  if (opsLength <= IORING_OP_WRITE || (flags & IO_URING_OP_SUPPORTED) === 0) {
    return "the kernel's io_uring has no IORING_OP_WRITE (Linux 5.6)";
  }
  return undefined;
}
