// The vmnet double: an ABI-faithful stand-in, on Linux, for the parts of vmnet.framework,
// libdispatch, libxpc and the blocks runtime that softnet's darwin module calls. Tests build it with
// the system compiler (cc -shared -fPIC -pthread) and inject it in place of the real libraries.
//
// What it is faithful to: the C signatures, struct layouts (vmpktdesc, iovec, the Block ABI), the
// return codes, and the threading contract: blocks run on the double's own threads, never the
// caller's, and the xpc dictionaries passed to them are released (poisoned) the moment they return.
// What it is strict about beyond the real thing: every misuse it can detect is recorded as a
// "violation" that the tests assert to be zero (see vmnet_double_violations).
#ifndef VMNET_DOUBLE_H
#define VMNET_DOUBLE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EXPORT __attribute__((visibility("default")))

// Block ABI (clang docs/Block-ABI-Apple.rst).
#define BLOCK_IS_GLOBAL (1 << 28)
struct block_descriptor {
  unsigned long reserved;
  unsigned long size;
};
struct block_literal {
  void *isa;
  int flags;
  int reserved;
  void *invoke;
  struct block_descriptor *descriptor;
};

// Every object the double hands out starts with this header; a released object keeps a poisoned one.
#define OBJECT_MAGIC 0x5e4d0b1eU
#define POISON_BYTE 0xdb
enum object_kind { KIND_QUEUE = 1, KIND_SEMAPHORE, KIND_XPC_DICTIONARY, KIND_INTERFACE };
struct object_header {
  uint32_t magic;
  uint32_t kind;
};

// A serial queue: one worker thread runs tasks in order.
typedef void (*task_function)(void *context);
struct dispatch_queue;
struct dispatch_queue *double_queue_create(const char *label);
void double_queue_async(struct dispatch_queue *queue, task_function function, void *context);
bool double_is_queue(void *object);

// Bookkeeping shared by the files.
void double_count_call(const char *symbol);
void double_violation(const char *format, ...) __attribute__((format(printf, 1, 2)));
void double_log(const char *format, ...) __attribute__((format(printf, 1, 2)));
// Checks a block handed to an API: a global block with a descriptor and an invoke function.
bool double_check_block(const void *block, const char *api);

// xpc, for vmnet.c.
void *double_xpc_dictionary_create(void);
void double_xpc_set_string(void *dictionary, const char *key, const char *value);
void double_xpc_set_uint64(void *dictionary, const char *key, uint64_t value);
bool double_xpc_is_dictionary(const void *object);
bool double_xpc_has(const void *dictionary, const char *key);
uint64_t double_xpc_uint64(const void *dictionary, const char *key);
bool double_xpc_bool(const void *dictionary, const char *key, bool *present);
void double_xpc_release(void *object);

#endif
