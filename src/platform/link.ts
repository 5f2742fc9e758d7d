/**
 * What the filter loop needs from either side of softnet: a place frames come from and go to.
 *
 * Frames live in a FrameBatch, a preallocated arena of fixed-size slots, so reading, filtering and
 * forwarding a frame never allocates: a link receives into the slots, the policy reads them in
 * place, and the other link sends the accepted slots straight from the same memory.
 */

/** A preallocated arena of `capacity` frame slots of `slotSize` bytes each. */
export class FrameBatch {
  readonly bytes: Uint8Array;
  /** Length of the frame in slot i, valid for i < count after a receive. */
  readonly lengths: Int32Array;
  /** How many slots the last receive filled. */
  count = 0;

  constructor(
    readonly capacity: number,
    readonly slotSize: number,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 1024) {
      throw new RangeError(`FrameBatch capacity must be 1..1024, got ${capacity}`);
    }
    if (!Number.isInteger(slotSize) || slotSize < 64 || slotSize > 65536) {
      throw new RangeError(`FrameBatch slotSize must be 64..65536, got ${slotSize}`);
    }
    // Backed by explicit ArrayBuffers: JavaScriptCore keeps small typed arrays inline and moves
    // them on first `.buffer` access, which would leave a pointer handed to the kernel dangling.
    this.bytes = new Uint8Array(new ArrayBuffer(capacity * slotSize));
    this.lengths = new Int32Array(new ArrayBuffer(capacity * 4));
  }

  /** Byte offset of slot i inside `bytes`. */
  offsetOf(slot: number): number {
    return slot * this.slotSize;
  }
}

/**
 * A link moves frames between softnet and one side (the VM socket, a TAP port, vmnet).
 * All methods are non-blocking.
 */
export interface FrameLink {
  /** Human-readable name for logs and errors, e.g. "vm socket fd 0" or "tap sn0a1b2c on br0". */
  readonly description: string;
  /**
   * A file descriptor that becomes readable (EPOLLIN) when receive() may return frames. For sockets
   * and TAP devices it is the device itself; for vmnet it is a pipe that a native callback writes to.
   */
  readonly pollFd: number;
  /**
   * Fills batch slots from 0 with received frames; sets batch.count and returns it.
   * Returns 0 when nothing is waiting. Returns -1 when the peer is gone (EOF, ECONNREFUSED):
   * softnet shuts down cleanly. Throws SoftnetError only for unexpected, fatal errors.
   */
  receive(batch: FrameBatch): number;
  /**
   * Sends the frames in the slots listed in slots[0..count) of `batch`, in that order.
   * Returns how many were sent; the rest were dropped because the receiver had no room
   * (ENOBUFS/EAGAIN) and the caller counts them. Returns -1 when the peer is gone.
   */
  send(batch: FrameBatch, slots: Uint16Array, count: number): number;
  close(): void;
}
