/**
 * The host side of softnet on macOS: a vmnet.framework interface in shared (NAT) or host mode.
 *
 * vmnet gives the interface an address range, runs bootpd (DHCP) and NAT for it, and moves frames
 * with batched vmnet_read/vmnet_write calls. It has no file descriptor: it announces packets by
 * calling an event block on a GCD thread. So:
 * - every block vmnet calls is native (blocks.ts/blocks.c), never JavaScript;
 * - the event block sends a byte on a socketpair whose other end is this link's pollFd, which the
 *   main loop watches like any other fd; receive() drains those bytes and then reads a batch;
 * - start, stop and port-forward requests complete on vmnet's threads too: their blocks store the
 *   result and signal a dispatch semaphore that this module waits on.
 *
 * One serial dispatch queue carries the start completion, the event callbacks and the stop
 * completion. Once the stop completion has signalled, every block vmnet had queued before it has
 * returned, so the callback memory and the wake-up socket can be released safely.
 *
 * Receive and send allocate nothing: the vmpktdesc and iovec arrays are built once per FrameBatch
 * and point straight into its slots (one iovec per packet, as vmnet requires).
 *
 * Sources for the ABI facts here: vmnet.h, as documented in Apple's vmnet reference
 * (developer.apple.com/documentation/vmnet: vmnet_read, vmnet_write, vmnet_return_t, the keys) and
 * bound with the same shapes by edigaryev/vmnet (src/ffi/vmnet.rs), the crate upstream softnet uses;
 * the numeric values of the enums are the ones that crate and QEMU's net/vmnet-common.m agree on.
 */
import type { Pointer } from "bun:ffi";
import type { ExposedPort } from "../../cli.ts";
import { SoftnetError } from "../../errors.ts";
import type { PortForwardBackend } from "../../port-forwards.ts";
import { formatIpv4, parseIpv4 } from "../../wire/bytes.ts";
import { stableAddress } from "../ffi-helpers.ts";
import { type FrameBatch, type HostLink, SendOutcome } from "../link.ts";
import { BlockKind, VmnetBlocks } from "./blocks.ts";
import {
  type DarwinLibraries,
  DarwinSysError,
  type DarwinSystem,
  MACOS_LIBRARIES,
  openDarwinSystem,
  pointerOrNull,
  VMNET_FORWARDING_SINCE,
  type VmnetForwardingSymbols,
  type VmnetKey,
} from "./system.ts";

/**
 * vmnet_return_t (vmnet.h, a uint32_t enum; edigaryev/vmnet src/ffi/vmnet.rs Status lists
 * 1000-1009). VMNET_NOT_AUTHORIZED (1010) is in newer SDKs' vmnet.h and Apple's reference.
 */
export const VmnetStatus = {
  SUCCESS: 1000,
  FAILURE: 1001,
  MEM_FAILURE: 1002,
  INVALID_ARGUMENT: 1003,
  SETUP_INCOMPLETE: 1004,
  INVALID_ACCESS: 1005,
  PACKET_TOO_BIG: 1006,
  BUFFER_EXHAUSTED: 1007,
  TOO_MANY_PACKETS: 1008,
  SHARING_SERVICE_BUSY: 1009,
  NOT_AUTHORIZED: 1010,
} as const;

/** operating_modes_t (vmnet.h; edigaryev/vmnet Mode: Host 1000, Shared 1001, Bridged 1002). */
export const VMNET_HOST_MODE = 1000;
export const VMNET_SHARED_MODE = 1001;
/** interface_event_t (vmnet.h): VMNET_INTERFACE_PACKETS_AVAILABLE = 1 << 0. */
export const VMNET_INTERFACE_PACKETS_AVAILABLE = 1;
/** IPPROTO_TCP (xnu bsd/netinet/in.h; 6 everywhere). */
export const IPPROTO_TCP = 6;
/** AF_INET (xnu bsd/sys/socket.h; 2 on macOS and Linux alike): the address family of a forward. */
export const AF_INET = 2;

const ROOT_HINT = "softnet must run as root (sudo, or installed setuid root as Tart does)";

/** What each vmnet_return_t means, and what a person can do about it. */
export const VMNET_STATUS_INFO: Readonly<Record<number, { name: string; meaning: string; hint?: string }>> = {
  1000: { name: "VMNET_SUCCESS", meaning: "success" },
  1001: {
    name: "VMNET_FAILURE",
    meaning: "general failure",
    hint: "is another process using the shared network? Quit other VM networking tools, or restart the Mac if it persists",
  },
  1002: {
    name: "VMNET_MEM_FAILURE",
    meaning: "memory allocation failure",
    hint: "the system is short of memory, or vmnet refused this process",
  },
  1003: {
    name: "VMNET_INVALID_ARGUMENT",
    meaning: "invalid argument",
    hint: "softnet passed vmnet something it refuses: please report this as a bug",
  },
  1004: {
    name: "VMNET_SETUP_INCOMPLETE",
    meaning: "interface setup is not complete",
    hint: "vmnet was not ready yet: try again",
  },
  1005: {
    name: "VMNET_INVALID_ACCESS",
    meaning: "permission denied",
    hint: `not running as root? ${ROOT_HINT}`,
  },
  1006: {
    name: "VMNET_PACKET_TOO_BIG",
    meaning: "packet larger than the interface allows",
    hint: "the VM's MTU is larger than vmnet's",
  },
  1007: {
    name: "VMNET_BUFFER_EXHAUSTED",
    meaning: "buffers exhausted in the kernel",
    hint: "the host is under heavy network load",
  },
  1008: {
    name: "VMNET_TOO_MANY_PACKETS",
    meaning: "packet count exceeds the limit",
    hint: "softnet asked for a larger batch than vmnet allows: please report this as a bug",
  },
  1009: {
    name: "VMNET_SHARING_SERVICE_BUSY",
    meaning: "a conflicting sharing service is in use",
    hint: "turn off Internet Sharing (System Settings > General > Sharing) or stop the program that uses it",
  },
  1010: { name: "VMNET_NOT_AUTHORIZED", meaning: "not authorized", hint: ROOT_HINT },
};

/** A vmnet_return_t other than VMNET_SUCCESS, e.g. "VMNET_FAILURE (1001): general failure". */
export class VmnetError extends Error {
  readonly status: number;
  readonly statusName: string;

  constructor(status: number) {
    const info = VMNET_STATUS_INFO[status];
    const statusName = info?.name ?? "unknown vmnet status";
    super(`${statusName} (${status}): ${info?.meaning ?? "not a vmnet_return_t softnet knows"}`);
    this.name = "VmnetError";
    this.status = status;
    this.statusName = statusName;
  }
}

/** SoftnetError for a failed vmnet call: `what`, caused by the status, with the status's hint. */
export function vmnetError(what: string, status: number): SoftnetError {
  return new SoftnetError(what, { cause: new VmnetError(status), hint: VMNET_STATUS_INFO[status]?.hint });
}

/**
 * Batch limit when vmnet does not report vmnet_read_max_packets_key / vmnet_write_max_packets_key
 * (they appeared in macOS 15). Apple's vmnet overview: "Each read/write call allows up to 200
 * packets to be read or written for a maximum of 256KB." So at most 200, and no more than fit in
 * 256 KiB of max-size packets (173 at 1514 bytes).
 */
export function fallbackMaxPackets(maxPacketSize: number): number {
  return Math.max(1, Math.min(200, Math.floor((256 * 1024) / maxPacketSize)));
}

export interface VmnetOptions {
  /** "nat": VMNET_SHARED_MODE (NAT to the outside); "host": VMNET_HOST_MODE (host only). */
  mode: "nat" | "host";
  /** vmnet_enable_isolation_key: VMs on the same vmnet network cannot reach each other. */
  isolate: boolean;
  /** Which libraries to open; MACOS_LIBRARIES unless a test injects the vmnet double. */
  libraries?: DarwinLibraries;
  /** An already opened system (tests: one that traces calls). Takes precedence over `libraries`. */
  system?: DarwinSystem;
  /** How long to wait for vmnet's start/stop/port-forward completions; 10 s by default. */
  timeoutMs?: number;
  /**
   * The caller will install port forwards (--expose): fail before starting the interface when
   * vmnet lacks the forwarding functions, rather than at the VM's first lease.
   */
  portForwarding?: boolean;
}

/**
 * A running vmnet interface: the host link for the filter loop and a port-forward backend. Its
 * gateway is the interface's first address (vmnet's gateway and DHCP server); its maxFrameSize is
 * maxPacketSize.
 */
export interface VmnetLink extends HostLink, PortForwardBackend {
  readonly mode: "nat" | "host";
  readonly isolate: boolean;
  readonly subnetMask: number;
  /** vmnet_max_packet_size_key: every receive slot must hold this many bytes. */
  readonly maxPacketSize: number;
  /** Packets per vmnet_read / vmnet_write call (vmnet's limit, or fallbackMaxPackets). */
  readonly readMaxPackets: number;
  readonly writeMaxPackets: number;
  /** Event callbacks vmnet has made so far. */
  readonly events: number;
  /** External TCP ports with a rule installed now. */
  readonly forwardedPorts: readonly number[];
}

const DEFAULT_TIMEOUT_MS = 10_000;
const ETHERNET_HEADER_BYTES = 14;

// struct vmpktdesc (vmnet.h; Apple's API diff for 10.10.3 lists vm_pkt_size Int, vm_pkt_iov,
// vm_pkt_iovcnt UInt32, vm_flags UInt32; edigaryev/vmnet binds the same), 24 bytes on LP64:
// { size_t vm_pkt_size @0; struct iovec *vm_pkt_iov @8; uint32_t vm_pkt_iovcnt @16; uint32_t vm_flags @20 }.
// struct iovec (xnu bsd/sys/_types/_iovec_t.h, 16 bytes): { void *iov_base @0; size_t iov_len @8 }.
// In 32-bit words:
const VMPKTDESC_BYTES = 24;
const IOVEC_BYTES = 16;
const DESC_WORDS = VMPKTDESC_BYTES / 4;
const IOVEC_WORDS = IOVEC_BYTES / 4;
const PKT_SIZE_WORD = 0;
const PKT_IOV_WORD = 2;
const PKT_IOVCNT_WORD = 4;
const PKT_FLAGS_WORD = 5;
const TWO_TO_32 = 2 ** 32;

/**
 * Native packet vectors for one FrameBatch:
 * [read vmpktdesc × capacity][write vmpktdesc × capacity][read iovec × capacity][write iovec × capacity].
 * Read descriptor i always describes slot i. Write descriptor j is filled per send with the j-th
 * frame that goes out.
 */
class PacketVectors {
  readonly words: Uint32Array;
  readonly readDescriptors: number;
  readonly writeDescriptors: number;
  readonly firstWriteDescriptorWord: number;
  readonly firstWriteIovecWord: number;
  readonly slotAddressLow: Uint32Array;
  readonly slotAddressHigh: Uint32Array;

  constructor(
    readonly batch: FrameBatch,
    readonly bytesAddress: number,
  ) {
    const capacity = batch.capacity;
    // A fresh ArrayBuffer so the vectors never live inline in the view and cannot move.
    const memory = new ArrayBuffer(capacity * 2 * (VMPKTDESC_BYTES + IOVEC_BYTES));
    this.words = new Uint32Array(memory);
    void this.words.buffer;
    const base = stableAddress(this.words);
    this.readDescriptors = base;
    this.writeDescriptors = base + capacity * VMPKTDESC_BYTES;
    this.firstWriteDescriptorWord = (capacity * VMPKTDESC_BYTES) / 4;
    const readIovecs = capacity * 2 * VMPKTDESC_BYTES;
    const writeIovecs = readIovecs + capacity * IOVEC_BYTES;
    this.firstWriteIovecWord = writeIovecs / 4;
    this.slotAddressLow = new Uint32Array(capacity);
    this.slotAddressHigh = new Uint32Array(capacity);
    for (let slot = 0; slot < capacity; slot++) {
      const address = bytesAddress + batch.offsetOf(slot);
      this.slotAddressLow[slot] = address >>> 0;
      this.slotAddressHigh[slot] = Math.floor(address / TWO_TO_32);

      const readDescriptor = slot * DESC_WORDS;
      this.setAddress(readDescriptor + PKT_IOV_WORD, base + readIovecs + slot * IOVEC_BYTES);
      this.words[readDescriptor + PKT_IOVCNT_WORD] = 1;
      const readIovec = readIovecs / 4 + slot * IOVEC_WORDS;
      this.setAddress(readIovec, address);
      this.words[readIovec + 2] = batch.slotSize;

      const writeDescriptor = this.firstWriteDescriptorWord + slot * DESC_WORDS;
      this.setAddress(writeDescriptor + PKT_IOV_WORD, base + writeIovecs + slot * IOVEC_BYTES);
      this.words[writeDescriptor + PKT_IOVCNT_WORD] = 1;
    }
  }

  private setAddress(word: number, address: number): void {
    this.words[word] = address >>> 0;
    this.words[word + 1] = Math.floor(address / TWO_TO_32);
  }
}

/**
 * Starts a vmnet interface and returns it as a link. Waits (blocking, up to timeoutMs) for vmnet's
 * start completion. Throws SoftnetError saying what to fix.
 */
export function openVmnet(options: VmnetOptions): VmnetLink {
  const system = options.system ?? openSystem(options.libraries ?? MACOS_LIBRARIES);
  return Vmnet.start(system, options);
}

function openSystem(libraries: DarwinLibraries): DarwinSystem {
  try {
    return openDarwinSystem(libraries);
  } catch (error) {
    throw new SoftnetError(`cannot load vmnet.framework (${libraries.vmnet})`, {
      cause: error,
      hint: "softnet's host link needs macOS 11 or later",
    });
  }
}

/**
 * vmnet's port-forwarding functions, or a SoftnetError that names the missing one and the macOS
 * version that has it. Only --expose needs them.
 */
export function portForwardingFunctions(system: DarwinSystem): VmnetForwardingSymbols {
  if (system.vmnetForwarding !== undefined) return system.vmnetForwarding;
  throw new SoftnetError(
    `--expose needs vmnet port forwarding, but ${system.libraries.vmnet} does not export ${system.vmnetForwardingMissing}`,
    { hint: `vmnet's port forwarding with an address family needs ${VMNET_FORWARDING_SINCE} or later` },
  );
}

function requireKey(system: DarwinSystem, key: VmnetKey): number {
  const value = system.vmnetKey(key);
  if (value === 0) {
    throw new SoftnetError(`${system.libraries.vmnet} does not export ${key}`, {
      hint: "softnet needs macOS 11 or later",
    });
  }
  return value;
}

/** Resources acquired during start, released in reverse on failure or at close. */
interface Native {
  queue: Pointer | null;
  semaphores: Pointer[];
  wakeRead: number;
  wakeWrite: number;
  blocks: VmnetBlocks | undefined;
}

class Vmnet implements VmnetLink {
  readonly description: string;
  readonly pollFd: number;
  readonly maxFrameSize: number;
  private readonly installed: number[] = [];
  private closed = false;
  /** Set when vmnet stopped answering a port-forward request: later requests would be confused. */
  private forwardsBroken = false;
  /** The port-forward request in flight; `adding` is its external port when it adds a rule. */
  private pendingForward: { done: boolean; adding: number | undefined } | undefined;
  private forwardQueue: Promise<unknown> = Promise.resolve();
  private vectors: PacketVectors | undefined;
  private readonly vectorsByBatch = new WeakMap<FrameBatch, PacketVectors>();
  /** vmnet_read/vmnet_write's int *pktcnt, at a fixed address. */
  private readonly packetCount = new Int32Array(new ArrayBuffer(4));
  private readonly packetCountAddress: number;
  /** Which batch slot each packet of the vmnet_write chunk in flight came from (send's outcomes). */
  private readonly chunkSlots: Uint16Array;
  /**
   * The struct in_addr a forward request points vmnet to: 4 bytes in network order, at a fixed
   * address. Requests are serialised and each waits for its completion, and this memory lives as
   * long as the link, so vmnet may read it at any time until then.
   */
  private readonly forwardAddress = new Uint8Array(new ArrayBuffer(4));
  private readonly forwardAddressPointer: number;
  /** Where the wake-up bytes are drained to. */
  private readonly scratch = new Uint8Array(new ArrayBuffer(256));
  private readonly scratchAddress: number;
  private readonly wakeFlags: number;

  private constructor(
    private readonly system: DarwinSystem,
    private readonly native: Native,
    private readonly blocks: VmnetBlocks,
    private readonly iface: Pointer,
    private readonly timeoutMs: number,
    readonly mode: "nat" | "host",
    readonly isolate: boolean,
    readonly gateway: number,
    readonly subnetMask: number,
    readonly prefixLength: number,
    readonly mtu: number,
    readonly maxPacketSize: number,
    readonly readMaxPackets: number,
    readonly writeMaxPackets: number,
  ) {
    this.pollFd = native.wakeRead;
    this.maxFrameSize = maxPacketSize;
    this.packetCountAddress = stableAddress(this.packetCount);
    this.chunkSlots = new Uint16Array(writeMaxPackets);
    this.forwardAddressPointer = stableAddress(this.forwardAddress);
    this.scratchAddress = stableAddress(this.scratch);
    this.wakeFlags = system.kernel.MSG_DONTWAIT;
    this.description = `vmnet ${mode === "nat" ? "shared (NAT)" : "host"} interface ${formatIpv4(gateway)}/${prefixLength}`;
  }

  static start(system: DarwinSystem, options: VmnetOptions): Vmnet {
    const { libc, dispatch, vmnet, kernel } = system;
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (options.portForwarding === true) portForwardingFunctions(system);
    const modeKey = requireKey(system, "vmnet_operation_mode_key");
    const isolationKey = system.vmnetKey("vmnet_enable_isolation_key");
    if (options.isolate && isolationKey === 0) requireKey(system, "vmnet_enable_isolation_key");
    for (const key of [
      "vmnet_start_address_key",
      "vmnet_subnet_mask_key",
      "vmnet_mtu_key",
      "vmnet_max_packet_size_key",
    ] as const) {
      requireKey(system, key);
    }

    const native: Native = { queue: null, semaphores: [], wakeRead: -1, wakeWrite: -1, blocks: undefined };
    let started: Pointer | null = null;
    try {
      // The wake-up channel. A stream socketpair rather than a pipe: macOS has no pipe2, and making
      // a pipe non-blocking takes fcntl, which is variadic (unsafe to bind on arm64). send/recv
      // with MSG_DONTWAIT need no flag on the fd, and a stream coalesces wake-ups, so one recv
      // drains many.
      const fds = new Int32Array(2);
      if (libc.socketpair(kernel.AF_UNIX, kernel.SOCK_STREAM | kernel.SOCK_CLOEXEC, 0, fds) < 0) {
        throw new SoftnetError("cannot create the vmnet wake-up socket", {
          cause: new DarwinSysError(system, "socketpair", system.errno()),
        });
      }
      native.wakeRead = fds[0]!;
      native.wakeWrite = fds[1]!;
      if (kernel.SO_NOSIGPIPE !== 0) {
        // On macOS the event block's send carries no MSG_NOSIGNAL (kernel.MSG_NOSIGNAL is 0 there):
        // SO_NOSIGPIPE keeps a send to a closed peer from raising SIGPIPE on a GCD thread.
        const one = new Int32Array([1]);
        libc.setsockopt(native.wakeWrite, kernel.SOL_SOCKET, kernel.SO_NOSIGPIPE, one, 4);
      }

      native.queue = pointerOrNull(dispatch.dispatch_queue_create(QUEUE_LABEL, null));
      for (let i = 0; i < 3; i++) {
        const semaphore = pointerOrNull(dispatch.dispatch_semaphore_create(0));
        if (semaphore === null) throw new SoftnetError("cannot create a dispatch semaphore");
        native.semaphores.push(semaphore);
      }
      if (native.queue === null) throw new SoftnetError("cannot create a dispatch queue for vmnet");
      const [startSemaphore, stopSemaphore, forwardSemaphore] = native.semaphores as [
        Pointer,
        Pointer,
        Pointer,
      ];
      native.blocks = VmnetBlocks.allocate(system, {
        startSemaphore,
        stopSemaphore,
        forwardSemaphore,
        wakeFd: native.wakeWrite,
        wakeFlags: kernel.MSG_DONTWAIT | kernel.MSG_NOSIGNAL,
      });
      const blocks = native.blocks;

      const description = pointerOrNull(dispatch.xpc_dictionary_create(null, null, 0));
      if (description === null) throw new SoftnetError("cannot create the vmnet interface description");
      let iface: Pointer | null;
      try {
        dispatch.xpc_dictionary_set_uint64(
          description,
          modeKey as Pointer,
          options.mode === "nat" ? VMNET_SHARED_MODE : VMNET_HOST_MODE,
        );
        if (isolationKey !== 0)
          dispatch.xpc_dictionary_set_bool(description, isolationKey as Pointer, options.isolate);
        iface = pointerOrNull(
          vmnet.vmnet_start_interface(description, native.queue, blocks.block(BlockKind.START)),
        );
        if (iface === null) {
          // vmnet refused before scheduling the completion. Should it call the block anyway, what
          // the block touches must still be there: keep it (a one-time leak on a failing start).
          abandon(native);
          throw new SoftnetError(
            "cannot start the vmnet interface: vmnet_start_interface returned no interface",
            {
              hint: `${ROOT_HINT}; on macOS 10.15 or earlier vmnet lacks what softnet needs`,
            },
          );
        }
        if (!waitBlocking(system, startSemaphore, timeoutMs)) {
          abandon(native); // the completion may still come: nothing it touches may be freed
          throw new SoftnetError(`vmnet did not finish starting the interface within ${timeoutMs / 1000} s`, {
            hint: "vmnet (or the InternetSharing service) is stuck: try again, or restart the Mac",
          });
        }
      } finally {
        dispatch.xpc_release(description);
      }
      const result = blocks.startResult();
      if (result.status !== VmnetStatus.SUCCESS) {
        throw vmnetError("cannot start the vmnet interface", result.status);
      }
      started = iface;

      const gateway = parseIpv4(result.startAddress);
      const mask = parseIpv4(result.subnetMask);
      const prefixLength = mask === undefined ? -1 : Math.clz32(~mask);
      if (gateway === undefined || mask === undefined || (prefixLength < 32 && mask << prefixLength !== 0)) {
        throw new SoftnetError(
          `vmnet reported an unusable network: start address ${JSON.stringify(result.startAddress)}, ` +
            `subnet mask ${JSON.stringify(result.subnetMask)}`,
        );
      }
      if (result.mtu <= 0 || result.maxPacketSize < ETHERNET_HEADER_BYTES || result.maxPacketSize > 65536) {
        throw new SoftnetError(
          `vmnet reported an unusable MTU ${result.mtu} / max packet size ${result.maxPacketSize}`,
        );
      }
      const fallback = fallbackMaxPackets(result.maxPacketSize);
      const link = new Vmnet(
        system,
        native,
        blocks,
        iface,
        timeoutMs,
        options.mode,
        options.isolate,
        gateway,
        mask,
        prefixLength,
        result.mtu,
        result.maxPacketSize,
        result.readMaxPackets > 0 ? result.readMaxPackets : fallback,
        result.writeMaxPackets > 0 ? result.writeMaxPackets : fallback,
      );
      const status = vmnet.vmnet_interface_set_event_callback(
        iface,
        VMNET_INTERFACE_PACKETS_AVAILABLE,
        native.queue,
        blocks.block(BlockKind.EVENT),
      );
      if (status !== VmnetStatus.SUCCESS) {
        throw vmnetError("cannot subscribe to the vmnet interface's packet events", status);
      }
      return link;
    } catch (error) {
      if (started !== null) stopInterface(system, native, started, timeoutMs);
      else release(system, native);
      throw error;
    }
  }

  get events(): number {
    return this.closed ? 0 : this.blocks.completions().events;
  }

  get forwardedPorts(): readonly number[] {
    return this.installed.slice();
  }

  receive(batch: FrameBatch): number {
    if (this.closed) throw new SoftnetError(`${this.description} is closed`);
    // vmnet_read fills each buffer up to vm_pkt_size; a smaller slot would cut frames short.
    if (batch.slotSize < this.maxPacketSize) {
      throw new RangeError(
        `${this.description}: batch slots of ${batch.slotSize} bytes < ${this.maxPacketSize}`,
      );
    }
    // Wake-ups first, then read: a packet that arrives after the read sends a new byte, so none is lost.
    this.drainWakeups();
    const vectors = this.vectorsFor(batch);
    const words = vectors.words;
    const lengths = batch.lengths;
    const slotSize = batch.slotSize;
    const capacity = batch.capacity;
    const limit = this.readMaxPackets;
    // Fill the batch with as many reads as it takes: the filter loop takes a short batch to mean
    // "drained", so a vmnet limit below the batch size must not end the drain early.
    let count = 0;
    while (count < capacity) {
      const want = Math.min(capacity - count, limit);
      for (let i = count; i < count + want; i++) {
        // vmnet wrote the previous frame's length here: give the buffer size back, clear the flags.
        const descriptor = i * DESC_WORDS;
        words[descriptor + PKT_SIZE_WORD] = slotSize;
        words[descriptor + PKT_SIZE_WORD + 1] = 0;
        words[descriptor + PKT_FLAGS_WORD] = 0;
      }
      this.packetCount[0] = want;
      const status = this.system.vmnet.vmnet_read(
        this.iface,
        (vectors.readDescriptors + count * VMPKTDESC_BYTES) as Pointer,
        this.packetCountAddress as Pointer,
      );
      if (status !== VmnetStatus.SUCCESS) {
        batch.count = count;
        throw vmnetError(`cannot read packets from ${this.description}`, status);
      }
      // *pktcnt is in/out (vmnet_read: "populated with the number of packets read"); never trust it
      // beyond what was asked for, nor a packet size beyond the slot it was read into.
      const got = Math.max(0, Math.min(this.packetCount[0]!, want));
      for (let i = count; i < count + got; i++) {
        lengths[i] = Math.min(words[i * DESC_WORDS + PKT_SIZE_WORD]!, slotSize);
      }
      count += got;
      if (got < want) break;
    }
    batch.count = count;
    return count;
  }

  send(batch: FrameBatch, slots: Uint16Array, count: number, outcomes?: Uint8Array): number {
    if (count <= 0) return 0;
    if (this.closed) throw new SoftnetError(`${this.description} is closed`);
    const vectors = this.vectorsFor(batch);
    const words = vectors.words;
    const lengths = batch.lengths;
    const limit = this.writeMaxPackets;
    const maxPacketSize = this.maxPacketSize;
    const chunkSlots = this.chunkSlots;
    let sent = 0;
    let next = 0;
    while (next < count) {
      let packets = 0;
      while (next < count && packets < limit) {
        const slot = slots[next++]!;
        const length = lengths[slot]!;
        if (length < ETHERNET_HEADER_BYTES || length > maxPacketSize) {
          if (outcomes !== undefined) {
            outcomes[slot] =
              length < ETHERNET_HEADER_BYTES ? SendOutcome.REFUSED_TOO_SHORT : SendOutcome.REFUSED_TOO_LONG;
          }
          continue;
        }
        chunkSlots[packets] = slot;
        const descriptor = vectors.firstWriteDescriptorWord + packets * DESC_WORDS;
        words[descriptor + PKT_SIZE_WORD] = length;
        words[descriptor + PKT_SIZE_WORD + 1] = 0;
        words[descriptor + PKT_FLAGS_WORD] = 0;
        const iovec = vectors.firstWriteIovecWord + packets * IOVEC_WORDS;
        words[iovec] = vectors.slotAddressLow[slot]!;
        words[iovec + 1] = vectors.slotAddressHigh[slot]!;
        words[iovec + 2] = length;
        packets++;
      }
      if (packets === 0) continue;
      this.packetCount[0] = packets;
      const status = this.system.vmnet.vmnet_write(
        this.iface,
        vectors.writeDescriptors as Pointer,
        this.packetCountAddress as Pointer,
      );
      // vmnet.h promises *pktcnt ("populated with the number of packets the framework wrote") on
      // success only: after any other status it may hold anything, so nothing counts as written.
      const written =
        status === VmnetStatus.SUCCESS ? Math.max(0, Math.min(this.packetCount[0]!, packets)) : 0;
      sent += written;
      if (outcomes !== undefined) {
        for (let p = 0; p < written; p++) outcomes[chunkSlots[p]!] = SendOutcome.SENT;
      }
      if (status === VmnetStatus.SUCCESS && written === packets) continue;
      if (
        status === VmnetStatus.SUCCESS ||
        status === VmnetStatus.BUFFER_EXHAUSTED ||
        status === VmnetStatus.MEM_FAILURE
      ) {
        // No room: the rest of this chunk and of the batch is dropped.
        if (outcomes !== undefined) {
          for (let p = written; p < packets; p++) outcomes[chunkSlots[p]!] = SendOutcome.NO_ROOM;
          for (let j = next; j < count; j++) outcomes[slots[j]!] = SendOutcome.NO_ROOM;
        }
        break;
      }
      if (status === VmnetStatus.PACKET_TOO_BIG) {
        // vmnet does not say which packet: the whole chunk is marked, the rest of the batch is sent.
        if (outcomes !== undefined) {
          for (let p = written; p < packets; p++) outcomes[chunkSlots[p]!] = SendOutcome.REFUSED_TOO_LONG;
        }
        continue;
      }
      throw vmnetError(`cannot write packets to ${this.description}`, status);
    }
    return sent;
  }

  install(ports: readonly ExposedPort[], address: number): Promise<void> {
    return this.serialised(async () => {
      const forwarding = portForwardingFunctions(this.system);
      await this.removeInstalled();
      for (const port of ports) {
        await this.forwardRequest(
          `cannot forward TCP port ${port.externalPort} to ${formatIpv4(address)}:${port.internalPort}`,
          port.externalPort,
          () => {
            // AF_INET: internal_address points to a struct in_addr, the address in network order.
            this.forwardAddress[0] = address >>> 24;
            this.forwardAddress[1] = (address >>> 16) & 0xff;
            this.forwardAddress[2] = (address >>> 8) & 0xff;
            this.forwardAddress[3] = address & 0xff;
            return forwarding.vmnet_interface_add_ip_port_forwarding_rule(
              this.iface,
              IPPROTO_TCP,
              port.externalPort,
              AF_INET,
              this.forwardAddressPointer as Pointer,
              port.internalPort,
              this.blocks.block(BlockKind.FORWARD),
            );
          },
        );
        this.installed.push(port.externalPort);
      }
    });
  }

  removeAll(): Promise<void> {
    return this.serialised(() => this.removeInstalled());
  }

  /**
   * Removes the port-forwarding rules, stops the event callback and the interface (waiting for its
   * completion), then releases the blocks, the queue and the wake-up socket. Idempotent. Throws
   * the first failure after doing everything it can.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const errors: unknown[] = [];
    const forwardSemaphore = this.native.semaphores[2]!;
    if (this.pendingForward !== undefined && !this.forwardsBroken) {
      // An async request is in flight: its completion is ours to take now.
      const pending = this.pendingForward;
      if (waitBlocking(this.system, forwardSemaphore, this.timeoutMs)) {
        pending.done = true;
        // A rule that was being added now exists: it must be removed with the others.
        const added = this.blocks.completions().forwardStatus === VmnetStatus.SUCCESS;
        if (added && pending.adding !== undefined) this.installed.push(pending.adding);
      } else {
        this.forwardsBroken = true;
      }
    }
    // A rule can only be installed through these functions, so they exist when one is.
    const forwarding = this.system.vmnetForwarding;
    while (forwarding !== undefined && this.installed.length > 0 && !this.forwardsBroken) {
      const port = this.installed.pop()!;
      const status = forwarding.vmnet_interface_remove_ip_port_forwarding_rule(
        this.iface,
        IPPROTO_TCP,
        port,
        AF_INET,
        this.blocks.block(BlockKind.FORWARD),
      );
      if (status !== VmnetStatus.SUCCESS) {
        errors.push(vmnetError(`cannot remove the forward of TCP port ${port}`, status));
      } else if (!waitBlocking(this.system, forwardSemaphore, this.timeoutMs)) {
        this.forwardsBroken = true;
        errors.push(new SoftnetError(`vmnet did not remove the forward of TCP port ${port} in time`));
      } else if (this.blocks.completions().forwardStatus !== VmnetStatus.SUCCESS) {
        errors.push(
          vmnetError(
            `cannot remove the forward of TCP port ${port}`,
            this.blocks.completions().forwardStatus,
          ),
        );
      }
    }
    const error = stopInterface(this.system, this.native, this.iface, this.timeoutMs);
    if (error !== undefined) errors.push(error);
    if (errors.length > 0) throw errors[0];
  }

  private async removeInstalled(): Promise<void> {
    while (this.installed.length > 0) {
      const forwarding = portForwardingFunctions(this.system);
      const port = this.installed[this.installed.length - 1]!;
      // Forgotten even if removing fails: a rule that vmnet says is not there must not be retried forever.
      this.installed.pop();
      await this.forwardRequest(`cannot remove the forward of TCP port ${port}`, undefined, () =>
        forwarding.vmnet_interface_remove_ip_port_forwarding_rule(
          this.iface,
          IPPROTO_TCP,
          port,
          AF_INET,
          this.blocks.block(BlockKind.FORWARD),
        ),
      );
    }
  }

  /** One port-forward request: issue it, then wait for its completion block without blocking the loop. */
  private async forwardRequest(what: string, adding: number | undefined, issue: () => number): Promise<void> {
    if (this.closed) throw new SoftnetError(`${what}: ${this.description} is closed`);
    if (this.forwardsBroken) {
      throw new SoftnetError(`${what}: vmnet stopped answering port-forward requests`, {
        hint: "restart the VM to get a fresh vmnet interface",
      });
    }
    const status = issue();
    if (status !== VmnetStatus.SUCCESS) throw vmnetError(what, status);
    const pending = { done: false, adding };
    this.pendingForward = pending;
    try {
      // Completions take well under a millisecond; polling the semaphore with a zero timeout every
      // millisecond keeps frames flowing meanwhile (dispatch_semaphore_wait would block the loop).
      const deadline = performance.now() + this.timeoutMs;
      const semaphore = this.native.semaphores[2]!;
      while (!pending.done) {
        if (this.closed) break; // close() took the completion (or gave up on it)
        if (this.system.dispatch.dispatch_semaphore_wait(semaphore, DISPATCH_TIME_NOW) === 0) {
          pending.done = true;
          break;
        }
        if (performance.now() > deadline) {
          this.forwardsBroken = true;
          throw new SoftnetError(`${what}: vmnet did not answer within ${this.timeoutMs / 1000} s`);
        }
        await Bun.sleep(1);
      }
    } finally {
      this.pendingForward = undefined;
    }
    // close() may have taken the completion meanwhile; it also took care of the rule.
    if (!pending.done || this.closed)
      throw new SoftnetError(`${what}: ${this.description} was closed meanwhile`);
    const completed = this.blocks.completions().forwardStatus;
    if (completed !== VmnetStatus.SUCCESS) throw vmnetError(what, completed);
  }

  private serialised<T>(task: () => Promise<T>): Promise<T> {
    const run = this.forwardQueue.then(task, task);
    this.forwardQueue = run.catch(() => {});
    return run;
  }

  private drainWakeups(): void {
    const { libc, kernel } = this.system;
    for (;;) {
      const got = libc.recv(this.pollFd, this.scratchAddress as Pointer, 256, this.wakeFlags);
      if (got === 256) continue;
      if (got >= 0) return;
      const errno = this.system.errno();
      if (errno === kernel.errno.EAGAIN) return;
      if (errno === kernel.errno.EINTR) continue;
      throw new SoftnetError(`cannot read ${this.description}'s wake-up socket`, {
        cause: new DarwinSysError(this.system, "recv", errno),
      });
    }
  }

  private vectorsFor(batch: FrameBatch): PacketVectors {
    // One native call per batch operation re-checks that the batch's bytes have not moved since the
    // vectors were built; normally the cached vectors are used as they are.
    const bytesAddress = stableAddress(batch.bytes);
    let vectors = this.vectors;
    if (vectors === undefined || vectors.batch !== batch) vectors = this.vectorsByBatch.get(batch);
    if (vectors === undefined || vectors.bytesAddress !== bytesAddress) {
      vectors = new PacketVectors(batch, bytesAddress);
      this.vectorsByBatch.set(batch, vectors);
    }
    this.vectors = vectors;
    return vectors;
  }
}

const QUEUE_LABEL = Buffer.from("dev.softnet.vmnet\0", "utf8");
/** dispatch_time_t DISPATCH_TIME_NOW (libdispatch dispatch/time.h: `(0ull)`). */
const DISPATCH_TIME_NOW = 0n;

/** dispatch_semaphore_wait with a deadline `ms` from now; false when it expired. */
function waitBlocking(system: DarwinSystem, semaphore: Pointer, ms: number): boolean {
  const deadline = system.dispatch.dispatch_time(DISPATCH_TIME_NOW, BigInt(Math.round(ms * 1e6)));
  return system.dispatch.dispatch_semaphore_wait(semaphore, BigInt(deadline)) === 0;
}

/**
 * Turns events off, stops the interface and waits for the stop completion; then releases
 * everything. When vmnet does not confirm the stop, the blocks, the queue and the wake-up socket
 * are abandoned (vmnet might still use them); the process is about to exit anyway.
 */
function stopInterface(system: DarwinSystem, native: Native, iface: Pointer, timeoutMs: number): unknown {
  const { vmnet } = system;
  let error: unknown;
  // Disables events (a NULL queue and callback); the stop completion below runs after any event
  // block already queued on the same serial queue.
  const off = vmnet.vmnet_interface_set_event_callback(iface, VMNET_INTERFACE_PACKETS_AVAILABLE, null, null);
  if (off !== VmnetStatus.SUCCESS) error = vmnetError("cannot turn off the vmnet interface's events", off);
  const status = vmnet.vmnet_stop_interface(iface, native.queue, native.blocks!.block(BlockKind.STOP));
  if (status !== VmnetStatus.SUCCESS) {
    abandon(native);
    return error ?? vmnetError("cannot stop the vmnet interface", status);
  }
  if (!waitBlocking(system, native.semaphores[1]!, timeoutMs)) {
    abandon(native);
    return error ?? new SoftnetError(`vmnet did not stop the interface within ${timeoutMs / 1000} s`);
  }
  const stopStatus = native.blocks!.completions().stopStatus;
  if (stopStatus !== VmnetStatus.SUCCESS) error ??= vmnetError("cannot stop the vmnet interface", stopStatus);
  release(system, native);
  return error;
}

/** Keeps everything a late block could touch alive for the rest of the process. */
function abandon(native: Native): void {
  abandoned.push({ ...native });
  native.blocks = undefined;
  native.queue = null;
  native.semaphores = [];
  native.wakeRead = -1;
  native.wakeWrite = -1;
}
const abandoned: Native[] = [];

function release(system: DarwinSystem, native: Native): void {
  native.blocks?.free();
  native.blocks = undefined;
  for (const semaphore of native.semaphores) system.dispatch.dispatch_release(semaphore);
  native.semaphores = [];
  if (native.queue !== null) system.dispatch.dispatch_release(native.queue);
  native.queue = null;
  if (native.wakeWrite >= 0) system.libc.close(native.wakeWrite);
  if (native.wakeRead >= 0) system.libc.close(native.wakeRead);
  native.wakeRead = -1;
  native.wakeWrite = -1;
}
