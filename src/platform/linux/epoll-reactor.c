// Readiness reactor, compiled at run time by bun:ffi `cc` (TinyCC). Linux only.
//
// One native thread sleeps in epoll_wait. Every registration is EPOLLONESHOT: when its fd becomes
// ready the kernel disarms it, the thread takes the fd out of the epoll set (EPOLL_CTL_DEL) and
// hands (index, events) to a threadsafe JSCallback, which queues the call onto the JavaScript thread
// and returns at once. JavaScript drains the fd and re-arms the registration with reactor_rearm
// (EPOLL_CTL_ADD). So the thread wakes once per burst, never spins, and never touches a frame; all
// the filtering stays on the JavaScript thread.
//
// Why DEL and ADD rather than leaving the disarmed registration in place and re-arming with MOD: a
// registration, armed or not, keeps epoll's entry on the fd's wait queue (Linux fs/eventpoll.c:
// ep_unregister_pollwait() unhooks it, called when the item is removed, ep_remove(), and on
// ep_insert()'s error paths; EPOLLONESHOT only clears the item's event mask), so while JavaScript
// drains a busy link every frame the sender queues runs the wake-up path into epoll
// (sock_def_readable -> ep_poll_callback, under the wait queue's lock) for nothing. That is paid by
// whoever sends, the VM or the host's bridge, on their CPU time; the C relay of the benchmark waits
// in poll(2) and is on the queue only while it sleeps. Taken off the set, a draining link costs its
// senders nothing; the two extra epoll_ctl calls are paid once per burst, not per frame. epoll
// removes by fd number: a report in flight for an fd JavaScript has just unwatched would remove a
// newer registration of the same number, so reactor.ts refuses to watch an unwatched fd number
// again on the same reactor.
//
// No #include and no libraries: the code is compiled with -nostdlib and calls libc only through
// the function pointers JavaScript passes in (struct libc_functions). Left to itself TinyCC would
// resolve libc by reading the development linker script /usr/lib/<triple>/libc.so, which exists only
// where libc6-dev (or the distribution's equivalent) is installed, and it would read system headers
// for any #include. A setuid binary should read neither. Functions return 0 or a negative errno, so
// JavaScript never has to read errno across threads.

typedef unsigned long size_t;
typedef long ssize_t;
typedef unsigned long pthread_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;

// The kernel's struct epoll_event is packed on x86_64 only (12 bytes); elsewhere it is 16 bytes.
#if defined(__x86_64__)
struct epoll_event { uint32_t events; uint64_t data; } __attribute__((packed));
#else
struct epoll_event { uint32_t events; uint64_t data; };
#endif

// Filled by reactor.ts in this order from the addresses of its libc bindings.
struct libc_functions {
  int (*epoll_create1)(int flags);
  int (*epoll_ctl)(int epfd, int op, int fd, struct epoll_event *event);
  int (*epoll_wait)(int epfd, struct epoll_event *events, int maxevents, int timeout);
  int (*eventfd)(unsigned int initval, int flags);
  ssize_t (*write)(int fd, const void *buf, size_t count);
  int (*close)(int fd);
  int (*pthread_create)(pthread_t *thread, const void *attr, void *(*start)(void *), void *arg);
  int (*pthread_join)(pthread_t thread, void **result);
  void *(*calloc)(size_t count, size_t size);
  void (*free)(void *p);
  int *(*errno_location)(void);
};

#define EPOLL_CTL_ADD 1
#define EPOLL_CTL_DEL 2
#define EPOLL_CTL_MOD 3
#define EPOLLIN 0x001u
#define EPOLLONESHOT (1u << 30)
#define O_CLOEXEC 02000000
#define EINTR 4
#define ENOENT 2
#define ENOMEM 12
#define EINVAL 22
#define MAX_EVENTS 16
// epoll data of the stop eventfd. A registration's data is its index in the low 32 bits and its fd
// in the high 32 bits (both non-negative ints), so the thread can take it off the set by fd.
#define STOP_TOKEN 0xffffffffffffffffULL

typedef void (*ready_callback)(int index, uint32_t events);

struct reactor {
  struct libc_functions libc;
  ready_callback on_ready;
  int epoll_fd;
  int stop_fd;
  int started;
  pthread_t thread;
};

static int negative_errno(struct reactor *reactor) { return -*reactor->libc.errno_location(); }

// `*to = *from` would not do: TinyCC's arm64 backend compiles a struct assignment into a call to
// memmove (oven-sh/tinycc tccgen.c vstore(); only x86_64-gen.c defines TCC_TARGET_NATIVE_STRUCT_COPY
// and copies inline), with -nostdlib TinyCC resolves no symbol through dlsym (tccrun.c:
// relocate_syms(s1, s1->symtab, !s1->nostdlib)), and Bun's cc() injects only memset and memcpy
// (oven-sh/bun src/bun.js/api/ffi/compiler_rt.zig, CompilerRT.inject). The compile then fails on
// arm64 with "unresolved reference to 'memmove'". The table is nothing but function pointers, so it
// is copied one pointer-sized word at a time. test/arm64 compiles and runs this file on arm64.
static void copy_libc_functions(struct libc_functions *to, const struct libc_functions *from) {
  void **target = (void **)to;
  void *const *source = (void *const *)from;
  for (size_t i = 0; i < sizeof *from / sizeof(void *); i++) target[i] = source[i];
}

static void *reactor_thread(void *arg) {
  struct reactor *reactor = arg;
  struct epoll_event ready[MAX_EVENTS];
  for (;;) {
    int count = reactor->libc.epoll_wait(reactor->epoll_fd, ready, MAX_EVENTS, -1);
    if (count < 0) {
      if (*reactor->libc.errno_location() == EINTR) continue;
      return 0;  // EBADF/EINVAL cannot happen while the reactor is alive; stop rather than spin
    }
    for (int i = 0; i < count; i++) {
      if (ready[i].data == STOP_TOKEN) return 0;
    }
    for (int i = 0; i < count; i++) {
      uint64_t data = ready[i].data;
      // Off the fd's wait queue until JavaScript re-arms (see the comment at the top). It cannot
      // fail for a registered fd; if JavaScript unwatched it meanwhile, ENOENT changes nothing.
      reactor->libc.epoll_ctl(reactor->epoll_fd, EPOLL_CTL_DEL, (int)(data >> 32), 0);
      reactor->on_ready((int)(data & 0xffffffffu), ready[i].events);
    }
  }
}

static int control(struct reactor *reactor, int op, int fd, uint32_t events, uint64_t data) {
  struct epoll_event event;
  event.events = events;
  event.data = data;
  return reactor->libc.epoll_ctl(reactor->epoll_fd, op, fd, &event) < 0 ? negative_errno(reactor) : 0;
}

// Returns a reactor, or 0 with *error set to a negative errno.
void *reactor_create(const struct libc_functions *libc, ready_callback on_ready, int *error) {
  struct reactor *reactor = libc->calloc(1, sizeof *reactor);
  if (!reactor) {
    *error = -ENOMEM;
    return 0;
  }
  copy_libc_functions(&reactor->libc, libc);
  reactor->on_ready = on_ready;
  reactor->stop_fd = -1;
  reactor->epoll_fd = libc->epoll_create1(O_CLOEXEC);
  if (reactor->epoll_fd >= 0) reactor->stop_fd = libc->eventfd(0, O_CLOEXEC);
  // The stop eventfd is level-triggered and never read: once written, every epoll_wait sees it.
  int result = reactor->stop_fd < 0 ? negative_errno(reactor)
                                    : control(reactor, EPOLL_CTL_ADD, reactor->stop_fd, EPOLLIN, STOP_TOKEN);
  if (result < 0) {
    if (reactor->stop_fd >= 0) libc->close(reactor->stop_fd);
    if (reactor->epoll_fd >= 0) libc->close(reactor->epoll_fd);
    libc->free(reactor);
    *error = result;
    return 0;
  }
  *error = 0;
  return reactor;
}

static uint64_t registration_data(int fd, int index) {
  return ((uint64_t)(uint32_t)fd << 32) | (uint32_t)index;
}

int reactor_add(struct reactor *reactor, int fd, uint32_t events, int index) {
  if (fd < 0 || index < 0) return -EINVAL;
  return control(reactor, EPOLL_CTL_ADD, fd, events | EPOLLONESHOT, registration_data(fd, index));
}

// The thread took the fd off the set when it reported it ready: arming it again is an ADD.
int reactor_rearm(struct reactor *reactor, int fd, uint32_t events, int index) {
  return reactor_add(reactor, fd, events, index);
}

// The fd may be off the set already (reported ready, not re-armed yet): ENOENT is not an error here.
int reactor_remove(struct reactor *reactor, int fd) {
  int result = control(reactor, EPOLL_CTL_DEL, fd, 0, 0);
  return result == -ENOENT ? 0 : result;
}

int reactor_start(struct reactor *reactor) {
  int result = reactor->libc.pthread_create(&reactor->thread, 0, reactor_thread, reactor);  // an errno
  if (result == 0) reactor->started = 1;
  return -result;
}

// Wakes the thread through the eventfd, waits for it to return, and frees everything. Once this
// returns the thread will never call on_ready again, so the JSCallback may be closed.
void reactor_destroy(struct reactor *reactor) {
  if (reactor->started) {
    uint64_t one = 1;
    while (reactor->libc.write(reactor->stop_fd, &one, sizeof one) < 0 &&
           *reactor->libc.errno_location() == EINTR) {
    }
    reactor->libc.pthread_join(reactor->thread, 0);
  }
  reactor->libc.close(reactor->stop_fd);
  reactor->libc.close(reactor->epoll_fd);
  reactor->libc.free(reactor);
}
