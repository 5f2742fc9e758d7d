// Readiness reactor over poll(2), compiled at run time by bun:ffi `cc` (TinyCC). It implements the
// same C interface as linux/epoll-reactor.c for the macOS runtime. poll() has the same struct and
// the same POLL* values on macOS and Linux, so this exact code also runs (and is tested) on Linux,
// against the vmnet double.
//
// One native thread owns the registration table. JavaScript never touches it: reactor_add, _rearm
// and _remove write a 16-byte command into a pipe (writes under PIPE_BUF are atomic), and the
// thread applies the commands between polls. A registration is one-shot: once its fd is reported
// ready it is left out of the poll set until JavaScript re-arms it, so the thread sleeps while a
// busy link is being drained, and wakes once per burst.
//
// No #include and no libraries (-nostdlib): the C library is reached only through the function
// pointers JavaScript passes in, as in epoll-reactor.c.

typedef unsigned long size_t;
typedef long ssize_t;
typedef unsigned long pthread_t_storage;
typedef unsigned int uint32_t;

struct pollfd { int fd; short events; short revents; };

// Filled by poll-reactor.ts in this order.
struct libc_functions {
  // nfds_t is unsigned int on macOS and unsigned long on Linux; a small count in a 64-bit integer
  // register reads the same either way.
  int (*poll)(struct pollfd *fds, unsigned long nfds, int timeout);
  int (*pipe)(int fds[2]);
  ssize_t (*read)(int fd, void *buf, size_t count);
  ssize_t (*write)(int fd, const void *buf, size_t count);
  int (*close)(int fd);
  // pthread_t is a pointer on macOS and an unsigned long on Linux: 8 bytes of storage either way.
  int (*pthread_create)(pthread_t_storage *thread, const void *attr, void *(*start)(void *), void *arg);
  int (*pthread_join)(pthread_t_storage thread, void **result);
  void *(*calloc)(size_t count, size_t size);
  void (*free)(void *p);
  int *(*errno_location)(void);
};

#define POLLIN 0x001
#define EINTR 4
#define ENOMEM 12
#define ENOSPC 28
#define MAX_REGISTRATIONS 16

enum { COMMAND_ADD = 1, COMMAND_REARM = 2, COMMAND_REMOVE = 3, COMMAND_STOP = 4 };
struct command { int op; int fd; int index; uint32_t events; };

typedef void (*ready_callback)(int index, uint32_t events);

struct registration { int fd; int index; short events; int armed; int used; };

struct reactor {
  struct libc_functions libc;
  ready_callback on_ready;
  int command_read;
  int command_write;
  int started;
  pthread_t_storage thread;
  struct registration registrations[MAX_REGISTRATIONS];
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

static struct registration *find(struct reactor *reactor, int fd) {
  for (int i = 0; i < MAX_REGISTRATIONS; i++) {
    if (reactor->registrations[i].used && reactor->registrations[i].fd == fd) return &reactor->registrations[i];
  }
  return 0;
}

// Applies one command; returns 1 when the thread must stop.
static int apply(struct reactor *reactor, const struct command *command) {
  struct registration *registration;
  switch (command->op) {
    case COMMAND_ADD:
      for (int i = 0; i < MAX_REGISTRATIONS; i++) {
        registration = &reactor->registrations[i];
        if (registration->used) continue;
        registration->used = 1;
        registration->fd = command->fd;
        registration->index = command->index;
        registration->events = (short)command->events;
        registration->armed = 1;
        break;
      }
      return 0;
    case COMMAND_REARM:
      registration = find(reactor, command->fd);
      if (registration) {
        registration->events = (short)command->events;
        registration->armed = 1;
      }
      return 0;
    case COMMAND_REMOVE:
      registration = find(reactor, command->fd);
      if (registration) registration->used = 0;
      return 0;
    default:
      return 1;
  }
}

static void *reactor_thread(void *arg) {
  struct reactor *reactor = arg;
  struct pollfd fds[MAX_REGISTRATIONS + 1];
  struct registration *polled[MAX_REGISTRATIONS + 1];
  struct command commands[16];
  for (;;) {
    int count = 0;
    fds[count].fd = reactor->command_read;
    fds[count].events = POLLIN;
    fds[count].revents = 0;
    polled[count++] = 0;
    for (int i = 0; i < MAX_REGISTRATIONS; i++) {
      struct registration *registration = &reactor->registrations[i];
      if (!registration->used || !registration->armed) continue;
      fds[count].fd = registration->fd;
      fds[count].events = registration->events;
      fds[count].revents = 0;
      polled[count++] = registration;
    }
    if (reactor->libc.poll(fds, (unsigned long)count, -1) < 0) {
      if (*reactor->libc.errno_location() == EINTR) continue;
      return 0;  // EFAULT/EINVAL cannot happen while the reactor is alive; stop rather than spin
    }
    for (int i = 1; i < count; i++) {
      // Registrations removed by a command below must not be reported; report first, in order.
      if (fds[i].revents == 0) continue;
      polled[i]->armed = 0;
      reactor->on_ready(polled[i]->index, (uint32_t)(unsigned short)fds[i].revents);
    }
    if (fds[0].revents) {
      ssize_t bytes = reactor->libc.read(reactor->command_read, commands, sizeof commands);
      if (bytes <= 0) {
        if (bytes < 0 && *reactor->libc.errno_location() == EINTR) continue;
        return 0;
      }
      for (ssize_t i = 0; i < bytes / (ssize_t)sizeof(struct command); i++) {
        if (apply(reactor, &commands[i])) return 0;
      }
    }
  }
}

static int send_command(struct reactor *reactor, int op, int fd, uint32_t events, int index) {
  struct command command;
  command.op = op;
  command.fd = fd;
  command.index = index;
  command.events = events;
  for (;;) {
    ssize_t written = reactor->libc.write(reactor->command_write, &command, sizeof command);
    if (written == (ssize_t)sizeof command) return 0;
    if (written < 0 && *reactor->libc.errno_location() == EINTR) continue;
    return written < 0 ? negative_errno(reactor) : -ENOSPC;
  }
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
  int fds[2];
  if (libc->pipe(fds) < 0) {
    *error = negative_errno(reactor);
    libc->free(reactor);
    return 0;
  }
  reactor->command_read = fds[0];
  reactor->command_write = fds[1];
  *error = 0;
  return reactor;
}

// At most MAX_REGISTRATIONS watches per reactor over its life (softnet needs two). The table belongs
// to the thread, so the limit is checked on the index JavaScript hands out, not on the table.
int reactor_add(struct reactor *reactor, int fd, uint32_t events, int index) {
  if (index < 0 || index >= MAX_REGISTRATIONS) return -ENOSPC;
  return send_command(reactor, COMMAND_ADD, fd, events, index);
}

int reactor_rearm(struct reactor *reactor, int fd, uint32_t events, int index) {
  return send_command(reactor, COMMAND_REARM, fd, events, index);
}

int reactor_remove(struct reactor *reactor, int fd) { return send_command(reactor, COMMAND_REMOVE, fd, 0, 0); }

int reactor_start(struct reactor *reactor) {
  int result = reactor->libc.pthread_create(&reactor->thread, 0, reactor_thread, reactor);  // an errno
  if (result == 0) reactor->started = 1;
  return -result;
}

// Stops the thread through the command pipe, waits for it, and frees everything. Once this returns
// on_ready is never called again.
void reactor_destroy(struct reactor *reactor) {
  if (reactor->started) {
    send_command(reactor, COMMAND_STOP, -1, 0, 0);
    reactor->libc.pthread_join(reactor->thread, 0);
  }
  reactor->libc.close(reactor->command_read);
  reactor->libc.close(reactor->command_write);
  reactor->libc.free(reactor);
}
