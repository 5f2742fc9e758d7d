/**
 * Hand-built Objective-C blocks for vmnet's callbacks, with native invoke functions (blocks.c).
 *
 * vmnet.framework calls its completion and event blocks on GCD threads, and the xpc dictionaries it
 * passes die when the block returns. Bun cannot safely run JavaScript on such threads (threadsafe
 * JSCallback has crashed there, and TinyCC cannot compile `^{}` literals anyway), so each block is
 * a struct laid out per the Block ABI whose invoke is C compiled at run time by bun:ffi `cc`:
 * it copies what softnet needs into native memory, then signals a dispatch semaphore (start, stop,
 * port forwards) or sends a byte on a socket the main loop watches (packets available).
 *
 * All four blocks, their descriptor and the captured state live in ONE native allocation
 * (calloc), made before vmnet_start_interface and freed only after vmnet_stop_interface has
 * completed. They are global blocks (isa = &_NSConcreteGlobalBlock, BLOCK_IS_GLOBAL), so vmnet's
 * Block_copy returns them unchanged and never copies or frees them: the memory is ours to keep
 * alive, and garbage collection cannot touch it because it is not JavaScript memory.
 *
 * Sources (apple-oss-distributions/libclosure, libclosure-96; llvm clang/docs/Block-ABI-Apple.rst):
 * - layout: Block_private.h `struct Block_layout { void *isa; volatile int32_t flags; int32_t
 *   reserved; BlockInvokeFunction invoke; struct Block_descriptor_1 *descriptor; ... }`
 *   and `struct Block_descriptor_1 { uintptr_t reserved; uintptr_t size; }`: 32 bytes of header on
 *   LP64, then the captured variables;
 * - BLOCK_IS_GLOBAL = (1 << 28) (Block_private.h); runtime.cpp `_Block_copy` returns a block with
 *   that flag as it is, and `_Block_release` returns at once for it, before any other field is
 *   read. No other flag is set (no BLOCK_HAS_SIGNATURE, no BLOCK_HAS_COPY_DISPOSE), so the
 *   descriptor needs nothing beyond Block_descriptor_1;
 * - `void * _NSConcreteGlobalBlock[32]` (Block.h): the isa is this array's address;
 * - invoke's first argument is the block itself (Block-ABI-Apple.rst).
 * Block_private.h qualifies isa and invoke for pointer authentication only where ptrauth_calls is
 * on (arm64e); softnet (Bun) is an arm64 process, where both are plain pointers.
 */
import { FFIType, type Pointer } from "bun:ffi";
import { SoftnetError } from "../../errors.ts";
import { compileSealedSource, prepareSealedSource, type SealedSource } from "../runtime-c.ts";
// `type: "file"` makes `bun build --compile` embed the C source; the import is its path.
import blocksSourcePath from "./blocks.c" with { type: "file" };
import {
  address0,
  type DarwinSystem,
  GLOBAL_BLOCK_CLASS,
  pointerOrNull,
  readCString,
  sourceFileCalls,
  traced,
  type VmnetKey,
} from "./system.ts";

/** Block ABI: flags bit of a global block (libclosure Block_private.h: BLOCK_IS_GLOBAL = (1 << 28)). */
export const BLOCK_IS_GLOBAL = 1 << 28;
/** sizeof(struct block_literal) in blocks.c: the 32-byte block header plus one captured pointer. */
export const BLOCK_LITERAL_BYTES = 40;

/** Which block: the argument of VmnetBlocks.block(). Matches the enum in blocks.c. */
export const BlockKind = { START: 0, EVENT: 1, STOP: 2, FORWARD: 3 } as const;
export type BlockKind = (typeof BlockKind)[keyof typeof BlockKind];

// vmnet_state_init's configuration words, in blocks.c's CONFIG_* order.
const CONFIG_WORDS = 16;
// vmnet_state_numbers' output, in blocks.c's NUMBER_* order.
const NUMBER = {
  START_STATUS: 0,
  START_CALLS: 1,
  MTU: 2,
  MAX_PACKET_SIZE: 3,
  READ_MAX_PACKETS: 4,
  WRITE_MAX_PACKETS: 5,
  STOP_STATUS: 6,
  STOP_CALLS: 7,
  FORWARD_STATUS: 8,
  FORWARD_CALLS: 9,
  EVENTS: 10,
  WAKE_FAILURES: 11,
} as const;
const NUMBER_COUNT = 12;

const { i32, u64, ptr } = FFIType;

/** The functions blocks.c exports to JavaScript. */
export const nativeSymbols = {
  // unsigned long vmnet_state_size(void);
  vmnet_state_size: { args: [], returns: u64 },
  // void vmnet_state_init(struct vmnet_state *state, const uint64_t *config);
  vmnet_state_init: { args: [ptr, ptr], returns: FFIType.void },
  // void *vmnet_state_block(struct vmnet_state *state, int which);
  vmnet_state_block: { args: [ptr, i32], returns: ptr },
  // void vmnet_state_numbers(struct vmnet_state *state, uint64_t *out);
  vmnet_state_numbers: { args: [ptr, ptr], returns: FFIType.void },
  // const char *vmnet_state_start_address(struct vmnet_state *state);
  vmnet_state_start_address: { args: [ptr], returns: ptr },
  // const char *vmnet_state_subnet_mask(struct vmnet_state *state);
  vmnet_state_subnet_mask: { args: [ptr], returns: ptr },
} as const;

type NativeBlocks = ReturnType<typeof compileSealedSource<typeof nativeSymbols>>;
let compiled: NativeBlocks | undefined;

/**
 * Reads blocks.c into a sealed or read-only descriptor (runtime-c.ts). The runtime calls it while
 * root, before anything runs as the caller.
 */
export function prepareBlocksSource(system: DarwinSystem): SealedSource {
  return prepareSealedSource(sourceFileCalls(system), "the native vmnet callbacks", blocksSourcePath);
}

/**
 * Compiles blocks.c once per process, from `source` (prepared as root) or, when none is given
 * (tests), from a source prepared now. The runtime calls it as the user softnet will drop to
 * (identity.ts asTargetUser): the blocks must exist before vmnet starts, which needs root, but the
 * compiler must not run as root (Bun's cc stages headers in /tmp and runs xcrun on macOS).
 */
export function nativeBlocks(system: DarwinSystem, source?: SealedSource): NativeBlocks {
  if (compiled !== undefined) {
    source?.close();
    return compiled;
  }
  compiled = compileSealedSource(source ?? prepareBlocksSource(system), nativeSymbols);
  return compiled;
}

/** What the start completion copied out of vmnet's interface_param dictionary. */
export interface StartResult {
  /** vmnet_return_t. */
  readonly status: number;
  /** "192.168.64.1", or "" when missing. */
  readonly startAddress: string;
  /** "255.255.255.0", or "" when missing. */
  readonly subnetMask: string;
  readonly mtu: number;
  readonly maxPacketSize: number;
  /** 0 when vmnet did not say (the key is missing before macOS 15). */
  readonly readMaxPackets: number;
  readonly writeMaxPackets: number;
}

export interface VmnetBlocksConfig {
  /** Semaphores the start, stop and port-forward completions signal. */
  readonly startSemaphore: Pointer;
  readonly stopSemaphore: Pointer;
  readonly forwardSemaphore: Pointer;
  /** Write end of the wake-up socket, and the send() flags for it (MSG_DONTWAIT and friends). */
  readonly wakeFd: number;
  readonly wakeFlags: number;
}

const KEYS_FOR_BLOCKS: readonly VmnetKey[] = [
  "vmnet_start_address_key",
  "vmnet_subnet_mask_key",
  "vmnet_mtu_key",
  "vmnet_max_packet_size_key",
  "vmnet_read_max_packets_key",
  "vmnet_write_max_packets_key",
];

/** The four blocks of one vmnet interface and the state they share, in native memory. */
export class VmnetBlocks {
  private state: Pointer | null;
  private readonly numbers = new BigUint64Array(new ArrayBuffer(NUMBER_COUNT * 8));

  private constructor(
    private readonly system: DarwinSystem,
    private readonly native: NativeBlocks,
    state: Pointer,
  ) {
    this.state = state;
  }

  /** Compiles blocks.c if needed and allocates and fills the state. Throws SoftnetError. */
  static allocate(system: DarwinSystem, config: VmnetBlocksConfig): VmnetBlocks {
    const native = traced(nativeBlocks(system), "blocks.c", system.trace);
    const isa = system.dataAddress("dispatch", GLOBAL_BLOCK_CLASS);
    if (isa === 0) {
      throw new SoftnetError(`${system.libraries.dispatch} does not export ${GLOBAL_BLOCK_CLASS}`, {
        hint: "vmnet's callbacks need the blocks runtime (libSystem on macOS)",
      });
    }
    const words = new BigUint64Array(new ArrayBuffer(CONFIG_WORDS * 8));
    const values = [
      isa,
      system.functionAddress("dispatch", "xpc_dictionary_get_string"),
      system.functionAddress("dispatch", "xpc_dictionary_get_uint64"),
      system.functionAddress("dispatch", "dispatch_semaphore_signal"),
      system.functionAddress("libc", "send"),
      ...KEYS_FOR_BLOCKS.map((key) => system.vmnetKey(key)),
      config.startSemaphore,
      config.stopSemaphore,
      config.forwardSemaphore,
      config.wakeFd,
      config.wakeFlags,
    ];
    values.forEach((value, i) => {
      words[i] = BigInt(value);
    });
    const size = Number(native.vmnet_state_size());
    const state = pointerOrNull(system.libc.calloc(1, size));
    if (state === null) throw new SoftnetError(`cannot allocate ${size} bytes for the vmnet callbacks`);
    native.vmnet_state_init(state, words);
    return new VmnetBlocks(system, native, state);
  }

  /** Address of a block to hand to vmnet. */
  block(kind: BlockKind): Pointer {
    return address0(this.native.vmnet_state_block(this.requireState(), kind)) as Pointer;
  }

  startResult(): StartResult {
    const state = this.requireState();
    const n = this.refresh();
    return {
      status: Number(n[NUMBER.START_STATUS]),
      startAddress: readCString(address0(this.native.vmnet_state_start_address(state))),
      subnetMask: readCString(address0(this.native.vmnet_state_subnet_mask(state))),
      mtu: Number(n[NUMBER.MTU]),
      maxPacketSize: Number(n[NUMBER.MAX_PACKET_SIZE]),
      readMaxPackets: Number(n[NUMBER.READ_MAX_PACKETS]),
      writeMaxPackets: Number(n[NUMBER.WRITE_MAX_PACKETS]),
    };
  }

  /** How many times each completion ran, and the last status it reported. */
  completions(): {
    start: number;
    stop: number;
    stopStatus: number;
    forward: number;
    forwardStatus: number;
    events: number;
    wakeFailures: number;
  } {
    const n = this.refresh();
    return {
      start: Number(n[NUMBER.START_CALLS]),
      stop: Number(n[NUMBER.STOP_CALLS]),
      stopStatus: Number(n[NUMBER.STOP_STATUS]),
      forward: Number(n[NUMBER.FORWARD_CALLS]),
      forwardStatus: Number(n[NUMBER.FORWARD_STATUS]),
      events: Number(n[NUMBER.EVENTS]),
      wakeFailures: Number(n[NUMBER.WAKE_FAILURES]),
    };
  }

  /** Address of the native state (tests inspect the block layout through it). */
  get address(): Pointer {
    return this.requireState();
  }

  /**
   * Frees the blocks. Only once vmnet can no longer call them: after the stop completion ran, or
   * when the interface never started. Idempotent.
   */
  free(): void {
    if (this.state === null) return;
    this.system.libc.free(this.state);
    this.state = null;
  }

  private refresh(): BigUint64Array {
    this.native.vmnet_state_numbers(this.requireState(), this.numbers);
    return this.numbers;
  }

  private requireState(): Pointer {
    if (this.state === null) throw new Error("the vmnet callbacks were freed");
    return this.state;
  }
}
