// libdispatch and blocks-runtime part of the vmnet double: serial queues with their own worker
// threads, counting semaphores with deadlines, dispatch_time, dispatch_release, and the
// _NSConcreteGlobalBlock class symbol. Plus the double's bookkeeping: call counts, violations and
// the call log that tests read.
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "double.h"

// The class of global blocks. Real libsystem_blocks exports `void *_NSConcreteGlobalBlock[32]`; a
// global block's isa is this array's address.
EXPORT void *_NSConcreteGlobalBlock[32];

// ---- bookkeeping ----

static pthread_mutex_t book_lock = PTHREAD_MUTEX_INITIALIZER;
#define MAX_SYMBOLS 64
static struct {
  char name[64];
  uint64_t count;
} calls[MAX_SYMBOLS];
static int call_symbols;
static uint64_t violations;
static char last_violation[512];
static FILE *log_file;

void double_count_call(const char *symbol) {
  pthread_mutex_lock(&book_lock);
  int i = 0;
  while (i < call_symbols && strcmp(calls[i].name, symbol) != 0) i++;
  if (i == call_symbols && call_symbols < MAX_SYMBOLS) {
    snprintf(calls[i].name, sizeof calls[i].name, "%s", symbol);
    call_symbols++;
  }
  if (i < MAX_SYMBOLS) calls[i].count++;
  pthread_mutex_unlock(&book_lock);
}

void double_violation(const char *format, ...) {
  va_list args;
  pthread_mutex_lock(&book_lock);
  va_start(args, format);
  vsnprintf(last_violation, sizeof last_violation, format, args);
  va_end(args);
  violations++;
  fprintf(stderr, "vmnet double: VIOLATION: %s\n", last_violation);
  if (log_file) {
    fprintf(log_file, "violation %s\n", last_violation);
    fflush(log_file);
  }
  pthread_mutex_unlock(&book_lock);
}

void double_log(const char *format, ...) {
  va_list args;
  pthread_mutex_lock(&book_lock);
  if (log_file) {
    va_start(args, format);
    vfprintf(log_file, format, args);
    va_end(args);
    fputc('\n', log_file);
    fflush(log_file);
  }
  pthread_mutex_unlock(&book_lock);
}

// Test control: where the call log goes (appended, one line per call).
EXPORT int vmnet_double_set_log(const char *path) {
  pthread_mutex_lock(&book_lock);
  if (log_file) fclose(log_file);
  log_file = path ? fopen(path, "a") : NULL;
  pthread_mutex_unlock(&book_lock);
  return path && !log_file ? -1 : 0;
}

// Test control: how often `symbol` was called (from JavaScript or from native code).
EXPORT uint64_t vmnet_double_call_count(const char *symbol) {
  uint64_t count = 0;
  pthread_mutex_lock(&book_lock);
  for (int i = 0; i < call_symbols; i++)
    if (strcmp(calls[i].name, symbol) == 0) count = calls[i].count;
  pthread_mutex_unlock(&book_lock);
  return count;
}

// Test control: violations so far; copies the last one's text into `buffer`.
EXPORT uint64_t vmnet_double_violations(char *buffer, size_t length) {
  pthread_mutex_lock(&book_lock);
  uint64_t count = violations;
  if (buffer && length > 0) snprintf(buffer, length, "%s", last_violation);
  pthread_mutex_unlock(&book_lock);
  return count;
}

bool double_check_block(const void *pointer, const char *api) {
  const struct block_literal *block = pointer;
  if (!block) {
    double_violation("%s: NULL block", api);
    return false;
  }
  if (block->isa != (void *)_NSConcreteGlobalBlock) {
    double_violation("%s: block isa %p is not &_NSConcreteGlobalBlock (%p)", api, block->isa,
                     (void *)_NSConcreteGlobalBlock);
    return false;
  }
  if (!(block->flags & BLOCK_IS_GLOBAL)) {
    double_violation("%s: block flags 0x%x lack BLOCK_IS_GLOBAL; vmnet would Block_copy it", api, block->flags);
    return false;
  }
  if (!block->descriptor || block->descriptor->size < 32 || block->descriptor->reserved != 0) {
    double_violation("%s: bad block descriptor", api);
    return false;
  }
  if (!block->invoke) {
    double_violation("%s: block without invoke", api);
    return false;
  }
  return true;
}

// ---- queues ----

struct task {
  task_function function;
  void *context;
  struct task *next;
};

struct dispatch_queue {
  struct object_header header;
  pthread_mutex_t lock;
  pthread_cond_t wake;
  struct task *head, *tail;
  bool stopping;
  bool internal;
  pthread_t thread;
  char label[64];
};

static void *queue_worker(void *argument) {
  struct dispatch_queue *queue = argument;
  pthread_mutex_lock(&queue->lock);
  for (;;) {
    while (!queue->head && !queue->stopping) pthread_cond_wait(&queue->wake, &queue->lock);
    struct task *task = queue->head;
    if (!task) break;  // stopping and drained
    queue->head = task->next;
    if (!queue->head) queue->tail = NULL;
    pthread_mutex_unlock(&queue->lock);
    task->function(task->context);
    free(task);
    pthread_mutex_lock(&queue->lock);
  }
  pthread_mutex_unlock(&queue->lock);
  return NULL;
}

struct dispatch_queue *double_queue_create(const char *label) {
  struct dispatch_queue *queue = calloc(1, sizeof *queue);
  queue->header.magic = OBJECT_MAGIC;
  queue->header.kind = KIND_QUEUE;
  pthread_mutex_init(&queue->lock, NULL);
  pthread_cond_init(&queue->wake, NULL);
  snprintf(queue->label, sizeof queue->label, "%s", label ? label : "");
  pthread_create(&queue->thread, NULL, queue_worker, queue);
  return queue;
}

void double_queue_async(struct dispatch_queue *queue, task_function function, void *context) {
  struct task *task = calloc(1, sizeof *task);
  task->function = function;
  task->context = context;
  pthread_mutex_lock(&queue->lock);
  if (queue->tail) queue->tail->next = task;
  else queue->head = task;
  queue->tail = task;
  pthread_cond_signal(&queue->wake);
  pthread_mutex_unlock(&queue->lock);
}

bool double_is_queue(void *object) {
  const struct object_header *header = object;
  return header && header->magic == OBJECT_MAGIC && header->kind == KIND_QUEUE;
}

// dispatch_queue_t dispatch_queue_create(const char *label, dispatch_queue_attr_t attr);
EXPORT void *dispatch_queue_create(const char *label, void *attr) {
  double_count_call("dispatch_queue_create");
  if (attr) double_violation("dispatch_queue_create: only serial queues (attr NULL) are expected");
  return double_queue_create(label);
}

// ---- semaphores and time ----

struct dispatch_semaphore {
  struct object_header header;
  pthread_mutex_t lock;
  pthread_cond_t changed;
  long value;
  long initial;
};

// dispatch_semaphore_t dispatch_semaphore_create(long value);
EXPORT void *dispatch_semaphore_create(long value) {
  double_count_call("dispatch_semaphore_create");
  if (value < 0) return NULL;
  struct dispatch_semaphore *semaphore = calloc(1, sizeof *semaphore);
  semaphore->header.magic = OBJECT_MAGIC;
  semaphore->header.kind = KIND_SEMAPHORE;
  pthread_mutex_init(&semaphore->lock, NULL);
  pthread_condattr_t attributes;
  pthread_condattr_init(&attributes);
  pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
  pthread_cond_init(&semaphore->changed, &attributes);
  semaphore->value = value;
  semaphore->initial = value;
  return semaphore;
}

static struct dispatch_semaphore *as_semaphore(void *object, const char *api) {
  struct dispatch_semaphore *semaphore = object;
  if (!semaphore || semaphore->header.magic != OBJECT_MAGIC || semaphore->header.kind != KIND_SEMAPHORE) {
    double_violation("%s: %p is not a live semaphore", api, object);
    return NULL;
  }
  return semaphore;
}

#define DISPATCH_TIME_NOW 0ULL
#define DISPATCH_TIME_FOREVER (~0ULL)

static uint64_t monotonic_ns(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (uint64_t)now.tv_sec * 1000000000ULL + (uint64_t)now.tv_nsec;
}

// dispatch_time_t dispatch_time(dispatch_time_t when, int64_t delta);   (here: CLOCK_MONOTONIC ns)
EXPORT uint64_t dispatch_time(uint64_t when, int64_t delta) {
  double_count_call("dispatch_time");
  if (when == DISPATCH_TIME_FOREVER) return DISPATCH_TIME_FOREVER;
  uint64_t base = when == DISPATCH_TIME_NOW ? monotonic_ns() : when;
  if (delta < 0 && (uint64_t)-delta > base) return 1;
  return base + (uint64_t)delta;
}

// long dispatch_semaphore_wait(dispatch_semaphore_t semaphore, dispatch_time_t timeout);
// 0 on success, non-zero (49, KERN_OPERATION_TIMED_OUT, as on macOS) when the deadline passed.
EXPORT long dispatch_semaphore_wait(void *object, uint64_t timeout) {
  double_count_call("dispatch_semaphore_wait");
  struct dispatch_semaphore *semaphore = as_semaphore(object, "dispatch_semaphore_wait");
  if (!semaphore) return 49;
  pthread_mutex_lock(&semaphore->lock);
  while (semaphore->value <= 0) {
    if (timeout == DISPATCH_TIME_NOW) break;
    if (timeout == DISPATCH_TIME_FOREVER) {
      pthread_cond_wait(&semaphore->changed, &semaphore->lock);
      continue;
    }
    struct timespec deadline = {.tv_sec = (time_t)(timeout / 1000000000ULL),
                                .tv_nsec = (long)(timeout % 1000000000ULL)};
    if (pthread_cond_timedwait(&semaphore->changed, &semaphore->lock, &deadline) == ETIMEDOUT) break;
  }
  long result = 49;
  if (semaphore->value > 0) {
    semaphore->value--;
    result = 0;
  }
  pthread_mutex_unlock(&semaphore->lock);
  return result;
}

// long dispatch_semaphore_signal(dispatch_semaphore_t semaphore);
EXPORT long dispatch_semaphore_signal(void *object) {
  double_count_call("dispatch_semaphore_signal");
  struct dispatch_semaphore *semaphore = as_semaphore(object, "dispatch_semaphore_signal");
  if (!semaphore) return 0;
  pthread_mutex_lock(&semaphore->lock);
  semaphore->value++;
  pthread_cond_signal(&semaphore->changed);
  pthread_mutex_unlock(&semaphore->lock);
  return 0;
}

// void dispatch_release(dispatch_object_t object);
EXPORT void dispatch_release(void *object) {
  double_count_call("dispatch_release");
  struct object_header *header = object;
  if (!header || header->magic != OBJECT_MAGIC) {
    double_violation("dispatch_release: %p is not a live dispatch object", object);
    return;
  }
  if (header->kind == KIND_SEMAPHORE) {
    struct dispatch_semaphore *semaphore = object;
    // libdispatch crashes here ("Semaphore object deallocated while in use"): mirror it as a violation.
    if (semaphore->value < semaphore->initial) double_violation("dispatch_release: semaphore still in use");
    memset(semaphore, POISON_BYTE, sizeof *semaphore);
    free(semaphore);
  } else if (header->kind == KIND_QUEUE) {
    struct dispatch_queue *queue = object;
    if (pthread_equal(pthread_self(), queue->thread)) {
      double_violation("dispatch_release: queue released from its own thread");
      return;
    }
    pthread_mutex_lock(&queue->lock);
    queue->stopping = true;
    pthread_cond_signal(&queue->wake);
    pthread_mutex_unlock(&queue->lock);
    pthread_join(queue->thread, NULL);  // runs what was queued, then stops
    memset(queue, POISON_BYTE, sizeof *queue);
    free(queue);
  } else {
    double_violation("dispatch_release: %p is not a dispatch object", object);
  }
}
