// A deliberately broken start completion for the use-after-callback test: instead of copying the
// start address out of interface_param, it keeps the pointer xpc_dictionary_get_string returned
// (and the dictionary itself) for later. The vmnet double releases and poisons the dictionary as
// soon as the block returns, so reading through either pointer afterwards must show the bug.
// Compiled by the test with bun:ffi `cc`, like src/platform/darwin/blocks.c.
typedef unsigned int uint32_t;

struct descriptor {
  unsigned long reserved;
  unsigned long size;
};

struct context {
  const char *(*get_string)(void *dictionary, const char *key);
  long (*signal)(void *semaphore);
  const char *key;
  void *semaphore;
  const char *kept_string;
  void *kept_param;
  uint32_t status;
};

struct block {
  void *isa;
  int flags;
  int reserved;
  void *invoke;
  struct descriptor *descriptor;
  struct context *context;
};

static struct descriptor descriptor = {0, sizeof(struct block)};
static struct context context;
static struct block start_block, stop_block;

static void keeps_pointers(struct block *block, uint32_t status, void *param) {
  block->context->status = status;
  block->context->kept_param = param;
  block->context->kept_string = param ? block->context->get_string(param, block->context->key) : 0;
  block->context->signal(block->context->semaphore);
}

static void stopped(struct block *block, uint32_t status) {
  block->context->status = status;
  block->context->signal(block->context->semaphore);
}

static void fill(struct block *block, void *isa, void *invoke) {
  block->isa = isa;
  block->flags = 1 << 28;
  block->reserved = 0;
  block->invoke = invoke;
  block->descriptor = &descriptor;
  block->context = &context;
}

void *broken_setup(void *isa, void *get_string, void *signal, const char *key, void *semaphore) {
  context.get_string = get_string;
  context.signal = signal;
  context.key = key;
  context.semaphore = semaphore;
  fill(&start_block, isa, (void *)keeps_pointers);
  fill(&stop_block, isa, (void *)stopped);
  return &start_block;
}

void *broken_stop_block(void) { return &stop_block; }
const char *broken_kept_string(void) { return context.kept_string; }
void *broken_kept_param(void) { return context.kept_param; }
uint32_t broken_status(void) { return context.status; }
