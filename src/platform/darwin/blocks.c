// The native halves of softnet's vmnet callbacks, compiled at run time by bun:ffi `cc` (TinyCC).
//
// vmnet.framework reports everything through Objective-C blocks that it calls on its own GCD
// threads: the start completion (with an xpc dictionary that is freed as soon as the block
// returns), "packets available" events, and the completions of stop and port-forward requests.
// JavaScript must never run on those threads (Bun's threadsafe JSCallback is not safe there), so
// every block here is a hand-built *global* block whose invoke function is this C code:
// - the start completion copies the parameters softnet needs out of the xpc dictionary into plain
//   memory and signals a dispatch semaphore that JavaScript waits on;
// - the event callback only sends one byte on a socket that the main loop watches;
// - the stop and port-forward completions store their status and signal a semaphore.
//
// Block ABI (clang docs/Block-ABI-Apple.rst), 64-bit: { void *isa; int flags; int reserved;
// void (*invoke)(struct block *, ...); struct descriptor *descriptor; captured variables... }.
// isa is the address of _NSConcreteGlobalBlock and flags has BLOCK_IS_GLOBAL, so Block_copy returns
// the block itself and Block_release ignores it: vmnet never copies or frees this memory, which is
// why it lives in one native allocation that blocks.ts keeps until the interface has stopped.
// Each block captures one variable, a pointer to that allocation (struct vmnet_state).
//
// No #include and no libraries (-nostdlib): everything from libSystem (or, in tests, the vmnet
// double and glibc) arrives as function pointers in the configuration that blocks.ts passes to
// vmnet_state_init. No struct assignment either: TinyCC's arm64 backend turns one into a call to
// memmove (oven-sh/tinycc tccgen.c vstore()), which -nostdlib and Bun's cc() leave unresolved (see
// copy_libc_functions in poll-reactor.c).

typedef unsigned long size_t;
typedef long ssize_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;

#define BLOCK_IS_GLOBAL (1 << 28)
#define VMNET_SUCCESS 1000
// Longest dotted-quad IPv4 address plus its NUL.
#define ADDRESS_BYTES 16

struct block_descriptor {
  unsigned long reserved;
  unsigned long size;
};

struct vmnet_state;

struct block_literal {
  void *isa;
  int flags;
  int reserved;
  void *invoke;
  const struct block_descriptor *descriptor;
  struct vmnet_state *state;  // the captured variable
};

// vmnet_state_init's configuration, an array of 64-bit words in this order (blocks.ts: CONFIG_*).
enum {
  CONFIG_ISA,                        // &_NSConcreteGlobalBlock
  CONFIG_XPC_DICTIONARY_GET_STRING,  // const char *(xpc_object_t, const char *key)
  CONFIG_XPC_DICTIONARY_GET_UINT64,  // uint64_t (xpc_object_t, const char *key)
  CONFIG_DISPATCH_SEMAPHORE_SIGNAL,  // long (dispatch_semaphore_t)
  CONFIG_SEND,                       // ssize_t (int fd, const void *, size_t, int flags)
  CONFIG_KEY_START_ADDRESS,          // the vmnet_*_key strings (the pointers stored in the data symbols)
  CONFIG_KEY_SUBNET_MASK,
  CONFIG_KEY_MTU,
  CONFIG_KEY_MAX_PACKET_SIZE,
  CONFIG_KEY_READ_MAX_PACKETS,   // 0 where vmnet does not export it (before macOS 15)
  CONFIG_KEY_WRITE_MAX_PACKETS,  // same
  CONFIG_START_SEMAPHORE,
  CONFIG_STOP_SEMAPHORE,
  CONFIG_FORWARD_SEMAPHORE,
  CONFIG_WAKE_FD,     // the write end of the wake-up socket
  CONFIG_WAKE_FLAGS,  // MSG_DONTWAIT (and MSG_NOSIGNAL where it exists) for this kernel
  CONFIG_WORDS
};

// Which block vmnet_state_block returns.
enum { BLOCK_START, BLOCK_EVENT, BLOCK_STOP, BLOCK_FORWARD };

// What vmnet_state_numbers copies out, in this order (blocks.ts: NUMBER_*).
enum {
  NUMBER_START_STATUS,
  NUMBER_START_CALLS,
  NUMBER_MTU,
  NUMBER_MAX_PACKET_SIZE,
  NUMBER_READ_MAX_PACKETS,
  NUMBER_WRITE_MAX_PACKETS,
  NUMBER_STOP_STATUS,
  NUMBER_STOP_CALLS,
  NUMBER_FORWARD_STATUS,
  NUMBER_FORWARD_CALLS,
  NUMBER_EVENTS,
  NUMBER_WAKE_FAILURES,
  NUMBER_COUNT
};

struct vmnet_state {
  struct block_literal blocks[4];
  struct block_descriptor descriptor;

  const char *(*xpc_dictionary_get_string)(void *dictionary, const char *key);
  uint64_t (*xpc_dictionary_get_uint64)(void *dictionary, const char *key);
  long (*dispatch_semaphore_signal)(void *semaphore);
  ssize_t (*send)(int fd, const void *buffer, size_t length, int flags);
  const char *key_start_address;
  const char *key_subnet_mask;
  const char *key_mtu;
  const char *key_max_packet_size;
  const char *key_read_max_packets;
  const char *key_write_max_packets;
  void *start_semaphore;
  void *stop_semaphore;
  void *forward_semaphore;
  int wake_fd;
  int wake_flags;

  // Written by the invoke functions on vmnet's threads, read by JavaScript after the semaphore
  // wait returns (the semaphore orders the writes before the reads).
  uint64_t numbers[NUMBER_COUNT];
  char start_address[ADDRESS_BYTES];
  char subnet_mask[ADDRESS_BYTES];
};

// Copies a C string of at most ADDRESS_BYTES - 1 characters; anything longer (not an IPv4
// address) or missing becomes "", which blocks.ts reports as a bad parameter.
static void copy_address(char *target, const char *source) {
  int i = 0;
  if (source) {
    while (i < ADDRESS_BYTES - 1 && source[i]) {
      target[i] = source[i];
      i++;
    }
    if (source[i]) i = 0;
  }
  target[i] = 0;
}

// void (^)(vmnet_return_t status, xpc_object_t interface_param): everything softnet needs from
// interface_param is copied here, because the dictionary is released as soon as this returns.
static void start_invoke(struct block_literal *block, uint32_t status, void *param) {
  struct vmnet_state *state = block->state;
  if (status == VMNET_SUCCESS && param) {
    copy_address(state->start_address, state->xpc_dictionary_get_string(param, state->key_start_address));
    copy_address(state->subnet_mask, state->xpc_dictionary_get_string(param, state->key_subnet_mask));
    state->numbers[NUMBER_MTU] = state->xpc_dictionary_get_uint64(param, state->key_mtu);
    state->numbers[NUMBER_MAX_PACKET_SIZE] = state->xpc_dictionary_get_uint64(param, state->key_max_packet_size);
    // xpc_dictionary_get_uint64 returns 0 for a missing key; blocks.ts turns 0 into its fallback.
    if (state->key_read_max_packets)
      state->numbers[NUMBER_READ_MAX_PACKETS] =
          state->xpc_dictionary_get_uint64(param, state->key_read_max_packets);
    if (state->key_write_max_packets)
      state->numbers[NUMBER_WRITE_MAX_PACKETS] =
          state->xpc_dictionary_get_uint64(param, state->key_write_max_packets);
  }
  state->numbers[NUMBER_START_STATUS] = status;
  state->numbers[NUMBER_START_CALLS]++;
  state->dispatch_semaphore_signal(state->start_semaphore);
}

// void (^)(interface_event_t event_mask, xpc_object_t event): one byte on the wake-up socket.
// MSG_DONTWAIT: when the socket is full a wake-up is already pending, so EAGAIN loses nothing.
static void event_invoke(struct block_literal *block, uint32_t event_mask, void *event) {
  struct vmnet_state *state = block->state;
  char byte = 1;
  (void)event_mask;
  (void)event;
  state->numbers[NUMBER_EVENTS]++;
  if (state->send(state->wake_fd, &byte, 1, state->wake_flags) < 0) state->numbers[NUMBER_WAKE_FAILURES]++;
}

// void (^)(vmnet_return_t status) for vmnet_stop_interface.
static void stop_invoke(struct block_literal *block, uint32_t status) {
  struct vmnet_state *state = block->state;
  state->numbers[NUMBER_STOP_STATUS] = status;
  state->numbers[NUMBER_STOP_CALLS]++;
  state->dispatch_semaphore_signal(state->stop_semaphore);
}

// void (^)(vmnet_return_t status) for the port-forwarding rule requests (one at a time).
static void forward_invoke(struct block_literal *block, uint32_t status) {
  struct vmnet_state *state = block->state;
  state->numbers[NUMBER_FORWARD_STATUS] = status;
  state->numbers[NUMBER_FORWARD_CALLS]++;
  state->dispatch_semaphore_signal(state->forward_semaphore);
}

unsigned long vmnet_state_size(void) { return sizeof(struct vmnet_state); }

// `state` is zeroed memory of vmnet_state_size() bytes (calloc).
void vmnet_state_init(struct vmnet_state *state, const uint64_t *config) {
  void *invokes[4];
  invokes[BLOCK_START] = (void *)start_invoke;
  invokes[BLOCK_EVENT] = (void *)event_invoke;
  invokes[BLOCK_STOP] = (void *)stop_invoke;
  invokes[BLOCK_FORWARD] = (void *)forward_invoke;

  state->descriptor.reserved = 0;
  state->descriptor.size = sizeof(struct block_literal);
  for (int i = 0; i < 4; i++) {
    state->blocks[i].isa = (void *)config[CONFIG_ISA];
    state->blocks[i].flags = BLOCK_IS_GLOBAL;
    state->blocks[i].reserved = 0;
    state->blocks[i].invoke = invokes[i];
    state->blocks[i].descriptor = &state->descriptor;
    state->blocks[i].state = state;
  }
  state->xpc_dictionary_get_string = (void *)config[CONFIG_XPC_DICTIONARY_GET_STRING];
  state->xpc_dictionary_get_uint64 = (void *)config[CONFIG_XPC_DICTIONARY_GET_UINT64];
  state->dispatch_semaphore_signal = (void *)config[CONFIG_DISPATCH_SEMAPHORE_SIGNAL];
  state->send = (void *)config[CONFIG_SEND];
  state->key_start_address = (const char *)config[CONFIG_KEY_START_ADDRESS];
  state->key_subnet_mask = (const char *)config[CONFIG_KEY_SUBNET_MASK];
  state->key_mtu = (const char *)config[CONFIG_KEY_MTU];
  state->key_max_packet_size = (const char *)config[CONFIG_KEY_MAX_PACKET_SIZE];
  state->key_read_max_packets = (const char *)config[CONFIG_KEY_READ_MAX_PACKETS];
  state->key_write_max_packets = (const char *)config[CONFIG_KEY_WRITE_MAX_PACKETS];
  state->start_semaphore = (void *)config[CONFIG_START_SEMAPHORE];
  state->stop_semaphore = (void *)config[CONFIG_STOP_SEMAPHORE];
  state->forward_semaphore = (void *)config[CONFIG_FORWARD_SEMAPHORE];
  state->wake_fd = (int)config[CONFIG_WAKE_FD];
  state->wake_flags = (int)config[CONFIG_WAKE_FLAGS];
}

void *vmnet_state_block(struct vmnet_state *state, int which) { return &state->blocks[which]; }

void vmnet_state_numbers(struct vmnet_state *state, uint64_t *out) {
  for (int i = 0; i < NUMBER_COUNT; i++) out[i] = state->numbers[i];
}

const char *vmnet_state_start_address(struct vmnet_state *state) { return state->start_address; }

const char *vmnet_state_subnet_mask(struct vmnet_state *state) { return state->subnet_mask; }
