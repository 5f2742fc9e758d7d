/**
 * What the filter loop needs from either side of softnet: a place frames come from and go to.
 *
 * Frames live in a FrameBatch, a preallocated arena of fixed-size slots, so reading, filtering and
 * forwarding a frame never allocates: a link receives into the slots, the policy reads them in
 * place, and the other link sends the accepted slots straight from the same memory.
 */

/** The most slots a FrameBatch has: a link may size per-send scratch arrays by it. */
export const MAX_BATCH_CAPACITY = 1024;

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
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > MAX_BATCH_CAPACITY) {
      throw new RangeError(`FrameBatch capacity must be 1..${MAX_BATCH_CAPACITY}, got ${capacity}`);
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
   * Sends the frames in the slots listed in slots[0..count) of `batch`, in that order, and writes
   * what became of each into outcomes[slot] (a SendOutcome) when `outcomes` is given. A frame the
   * kernel refuses on its own (too short, too long, link down) does not stop the rest of the batch.
   * A frame the receiver has no room for is NO_ROOM; a link that writes frame by frame stops there
   * (all after it are NO_ROOM too), one that hands the kernel the whole batch at once (the TAP's
   * io_uring) reports what became of each frame after it as well. Returns how many were
   * sent, or -1 when the peer is gone (outcomes are then meaningless). Allocates nothing.
   */
  send(batch: FrameBatch, slots: Uint16Array, count: number, outcomes?: Uint8Array): number;
  /**
   * Datagrams longer than a batch slot, cut short by the kernel and handed on with length 0 (the
   * policy then drops them as malformed): links that can see it count them, the report shows them.
   */
  readonly truncatedFrames?: number;
  close(): void;
}

/**
 * The host side of softnet (a TAP port on a bridge, vmnet): a FrameLink into the host's network,
 * plus what the VM's network there is.
 */
export interface HostLink extends FrameLink {
  /** The VM's gateway (the host's address on the VM's network) as a uint32 in host order. */
  readonly gateway: number;
  /** Prefix length of the VM's network, e.g. 24. */
  readonly prefixLength: number;
  readonly mtu: number;
  /** The largest frame the link delivers (no FCS): every receive slot must hold this many bytes. */
  readonly maxFrameSize: number;
}

/**
 * What became of one frame handed to FrameLink.send: one byte per slot, written by the link into
 * the caller's array, so the loop, the counters and the capture know which frame went where.
 */
export const SendOutcome = {
  /** Handed to the kernel (or vmnet). */
  SENT: 0,
  /** The receiver had no buffer space (EAGAIN/ENOBUFS, vmnet BUFFER_EXHAUSTED/MEM_FAILURE). */
  NO_ROOM: 1,
  /** Refused: shorter than an Ethernet header (TAP write: EINVAL; vmnet: checked before writing). */
  REFUSED_TOO_SHORT: 2,
  /** Refused: larger than the link carries (EMSGSIZE; vmnet: VMNET_PACKET_TOO_BIG). */
  REFUSED_TOO_LONG: 3,
  /** Refused: the link is down (TAP write: EIO while the interface is not up). */
  REFUSED_LINK_DOWN: 4,
} as const;
export type SendOutcomeCode = (typeof SendOutcome)[keyof typeof SendOutcome];
export const SEND_OUTCOME_COUNT = 5;
/** Short names for reports and logs, indexed by SendOutcome. */
export const SEND_OUTCOME_NAMES: readonly string[] = [
  "sent",
  "no-buffer-space",
  "too-short",
  "too-long",
  "link-down",
];
/** What each outcome means, for capture comments, indexed by SendOutcome. */
export const SEND_OUTCOME_EXPLANATIONS: readonly string[] = [
  "sent",
  "no buffer space",
  "shorter than an Ethernet header",
  "too long for the link (EMSGSIZE)",
  "the link is down (EIO)",
];

/** Marks slots[from..count) with `outcome` in `outcomes`, if given: the frames a send did not reach. */
export function markUnsent(
  outcomes: Uint8Array | undefined,
  slots: Uint16Array,
  from: number,
  count: number,
  outcome: SendOutcomeCode,
): void {
  if (outcomes === undefined) return;
  for (let j = from; j < count; j++) outcomes[slots[j]!] = outcome;
}
