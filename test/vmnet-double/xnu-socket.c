// libSystem's AF_UNIX datagram sockets as xnu has them, over Linux sockets: the part of the vmnet
// double that stands in for the C library, so that the darwin module's VM socket code meets macOS's
// behaviour when the VM's end closes, not Linux's, and its bind() passes xnu's struct sockaddr_in.
//
// A test opts in by naming the double as the darwin module's C library as well (test/darwin/
// support.ts xnuLibraries: { vmnet, dispatch, libc: double }). Then socketpair, close, recv,
// recvmsg, send, getpeername, poll and bind below are what softnet and the test call; every other C
// library function resolves to glibc, through the double's own dependency on it. The double calls
// glibc's versions of these eight through a handle on libc.so.6. With the ordinary
// doubleLibraries ({ libc: "libc.so.6" }) nothing here is used.
//
// Every AF_UNIX SOCK_DGRAM socketpair made through socketpair() below is tracked: its two ends are
// connected to each other, as xnu's socketpair() connects them (bsd/kern/uipc_syscalls.c: "Datagram
// socket connection is asymmetric", soconnect2 both ways). Closing one end through close() below
// does what xnu's unp_detach does (bsd/kern/uipc_usrreq.c): for each socket connected to it,
// unp_drop(ECONNRESET), which sets so_error = ECONNRESET and, through unp_disconnect, clears
// SS_ISCONNECTED, without waking anybody. From then on, on the surviving end:
// - recv/recvmsg (bsd/kern/uipc_socket.c soreceive): queued datagrams first; when none is left,
//   so_error once (cleared unless MSG_PEEK); then EWOULDBLOCK (EAGAIN) for ever;
// - send (uipc_socket.c sosendcheck): so_error if set (cleared), else EDESTADDRREQ: not connected,
//   no address given, and AF_UNIX datagrams are not PR_CONNREQUIRED;
// - poll (bsd/kern/sys_generic.c poll_nocancel registers EVFILT_READ; uipc_socket.c filt_soread):
//   readable while a datagram or so_error is pending, never after. A poll() already waiting when
//   the peer closes is not woken (unp_drop calls no sorwakeup); Linux does not wake it either.
// - getpeername (uipc_syscalls.c): ENOTCONN, as SS_ISCONNECTED is clear.
// And while connected: a send to a peer whose receive buffer is full fails with ENOBUFS at once
// (uipc_send: sbappendaddr fails with ENOBUFS; an AF_UNIX datagram never waits for room), where
// Linux says EAGAIN or blocks.
//
// bind() (at the end of this file) reads the address as xnu's struct sockaddr_in, not Linux's.
//
// Not emulated: getsockopt(SO_ERROR) (xnu would return and clear so_error), sendto/sendmsg/read/
// write on a tracked socket, and closes that do not go through close() here (another process's,
// or close_range): those keep Linux's behaviour. Error numbers are the host's (Linux) values, as
// softnet reads them through the kernel constants of the platform it runs on.
//
// Kept small and portable: no architecture-specific code (built for x86_64 and aarch64).
#undef _FORTIFY_SOURCE  // its inline wrappers of recv/poll would clash with the definitions below
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "double.h"

// ---- glibc's own versions ----

static struct {
  int (*socketpair)(int, int, int, int[2]);
  int (*close)(int);
  ssize_t (*recv)(int, void *, size_t, int);
  ssize_t (*recvmsg)(int, struct msghdr *, int);
  ssize_t (*send)(int, const void *, size_t, int);
  int (*getpeername)(int, struct sockaddr *, socklen_t *);
  int (*poll)(struct pollfd *, nfds_t, int);
  int (*bind)(int, const struct sockaddr *, socklen_t);
} real;

static pthread_once_t real_once = PTHREAD_ONCE_INIT;

static void *libc_symbol(void *libc, const char *name) {
  void *symbol = libc ? dlsym(libc, name) : NULL;
  if (!symbol) {
    fprintf(stderr, "vmnet double: libc.so.6 has no %s\n", name);
    abort();
  }
  return symbol;
}

static void bind_real(void) {
  // libc.so.6 is loaded already (the double depends on it): RTLD_NOLOAD only takes a handle.
  void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
  real.socketpair = (int (*)(int, int, int, int[2]))libc_symbol(libc, "socketpair");
  real.close = (int (*)(int))libc_symbol(libc, "close");
  real.recv = (ssize_t(*)(int, void *, size_t, int))libc_symbol(libc, "recv");
  real.recvmsg = (ssize_t(*)(int, struct msghdr *, int))libc_symbol(libc, "recvmsg");
  real.send = (ssize_t(*)(int, const void *, size_t, int))libc_symbol(libc, "send");
  real.getpeername = (int (*)(int, struct sockaddr *, socklen_t *))libc_symbol(libc, "getpeername");
  real.poll = (int (*)(struct pollfd *, nfds_t, int))libc_symbol(libc, "poll");
  real.bind = (int (*)(int, const struct sockaddr *, socklen_t))libc_symbol(libc, "bind");
}

#define REAL() pthread_once(&real_once, bind_real)

// ---- the tracked sockets ----

#define MAX_SOCKETS 64
// SOCK_TYPE_MASK in Linux's net.h: the socket type without SOCK_NONBLOCK/SOCK_CLOEXEC.
#define SOCKET_TYPE_MASK 0xf

struct xnu_socket {
  bool used;
  int fd;
  dev_t device;  // which socket `fd` named when the pair was made: a reused number is not ours
  ino_t inode;
  int peer;      // index of the socket this one is connected to (unp_conn); -1 once disconnected
  int so_error;  // struct socket's so_error
};

static struct xnu_socket sockets[MAX_SOCKETS];
static pthread_mutex_t sockets_lock = PTHREAD_MUTEX_INITIALIZER;

// unp_detach of socket i (with sockets_lock held): every socket connected to it gets
// unp_drop(ECONNRESET).
static void detach_locked(int i) {
  for (int j = 0; j < MAX_SOCKETS; j++) {
    if (sockets[j].used && sockets[j].peer == i) {
      sockets[j].so_error = ECONNRESET;
      sockets[j].peer = -1;  // unp_disconnect: SS_ISCONNECTED cleared
    }
  }
  sockets[i].used = false;
  sockets[i].peer = -1;
}

// The tracked socket behind `fd` (with sockets_lock held), or NULL. An entry whose fd number now
// names something else was closed behind the double's back: it is detached as a close would.
static struct xnu_socket *find_locked(int fd) {
  for (int i = 0; i < MAX_SOCKETS; i++) {
    if (!sockets[i].used || sockets[i].fd != fd) continue;
    struct stat now;
    if (fstat(fd, &now) == 0 && now.st_dev == sockets[i].device && now.st_ino == sockets[i].inode) return &sockets[i];
    detach_locked(i);
    return NULL;
  }
  return NULL;
}

static int track_locked(int fd) {
  struct stat identity;
  if (fstat(fd, &identity) != 0) return -1;
  struct xnu_socket *stale = find_locked(fd);
  if (stale) detach_locked((int)(stale - sockets));
  for (int i = 0; i < MAX_SOCKETS; i++) {
    if (sockets[i].used) continue;
    sockets[i] = (struct xnu_socket){true, fd, identity.st_dev, identity.st_ino, -1, 0};
    return i;
  }
  double_violation("xnu socket double: more than %d datagram socketpair ends open", MAX_SOCKETS);
  return -1;
}

// int socketpair(int domain, int type, int protocol, int sv[2]);
EXPORT int socketpair(int domain, int type, int protocol, int sv[2]) {
  REAL();
  int result = real.socketpair(domain, type, protocol, sv);
  if (result != 0 || domain != AF_UNIX || (type & SOCKET_TYPE_MASK) != SOCK_DGRAM) return result;
  pthread_mutex_lock(&sockets_lock);
  int first = track_locked(sv[0]);
  int second = first < 0 ? -1 : track_locked(sv[1]);
  if (second >= 0) {
    // soconnect2(so1, so2) and, for SOCK_DGRAM, soconnect2(so2, so1).
    sockets[first].peer = second;
    sockets[second].peer = first;
  } else if (first >= 0) {
    sockets[first].used = false;
  }
  pthread_mutex_unlock(&sockets_lock);
  return result;
}

// int close(int fd);
EXPORT int close(int fd) {
  REAL();
  pthread_mutex_lock(&sockets_lock);
  struct xnu_socket *entry = find_locked(fd);
  if (entry) detach_locked((int)(entry - sockets));
  pthread_mutex_unlock(&sockets_lock);
  return real.close(fd);
}

// soreceive's order once nothing is queued: so_error (taken unless MSG_PEEK), then EWOULDBLOCK for
// a non-blocking call. Returns the error to report, or 0 to wait.
static int receive_error(int fd, int flags) {
  pthread_mutex_lock(&sockets_lock);
  struct xnu_socket *entry = find_locked(fd);
  int error = entry ? entry->so_error : 0;
  if (entry && error && !(flags & MSG_PEEK)) entry->so_error = 0;
  pthread_mutex_unlock(&sockets_lock);
  if (error) return error;
  return (flags & MSG_DONTWAIT) ? EAGAIN : 0;
}

static bool tracked(int fd) {
  pthread_mutex_lock(&sockets_lock);
  bool found = find_locked(fd) != NULL;
  pthread_mutex_unlock(&sockets_lock);
  return found;
}

// A blocking receive waits for a datagram or an error; 10 ms at a time, as a close elsewhere wakes
// nothing.
static void wait_readable(int fd) {
  struct pollfd ready = {.fd = fd, .events = POLLIN};
  real.poll(&ready, 1, 10);
}

// ssize_t recv(int socket, void *buffer, size_t length, int flags);
EXPORT ssize_t recv(int fd, void *buffer, size_t length, int flags) {
  REAL();
  if (!tracked(fd)) return real.recv(fd, buffer, length, flags);
  for (;;) {
    // Queued datagrams come first, even with so_error set (soreceive: `if (m != NULL) goto dontblock`).
    ssize_t got = real.recv(fd, buffer, length, flags | MSG_DONTWAIT);
    if (got >= 0 || errno != EAGAIN) return got;
    int error = receive_error(fd, flags);
    if (error) {
      errno = error;
      return -1;
    }
    wait_readable(fd);
  }
}

// ssize_t recvmsg(int socket, struct msghdr *message, int flags);
EXPORT ssize_t recvmsg(int fd, struct msghdr *message, int flags) {
  REAL();
  if (!tracked(fd)) return real.recvmsg(fd, message, flags);
  for (;;) {
    ssize_t got = real.recvmsg(fd, message, flags | MSG_DONTWAIT);
    if (got >= 0 || errno != EAGAIN) return got;
    int error = receive_error(fd, flags);
    if (error) {
      errno = error;
      return -1;
    }
    wait_readable(fd);
  }
}

// ssize_t send(int socket, const void *buffer, size_t length, int flags);
EXPORT ssize_t send(int fd, const void *buffer, size_t length, int flags) {
  REAL();
  pthread_mutex_lock(&sockets_lock);
  struct xnu_socket *entry = find_locked(fd);
  int error = 0;
  if (entry && entry->so_error) {
    error = entry->so_error;  // sosendcheck: so_error first, and cleared
    entry->so_error = 0;
  } else if (entry && entry->peer < 0) {
    error = EDESTADDRREQ;  // sosendcheck: not connected, no address, not PR_CONNREQUIRED
  }
  pthread_mutex_unlock(&sockets_lock);
  if (error) {
    errno = error;
    return -1;
  }
  if (!entry) return real.send(fd, buffer, length, flags);
  ssize_t sent = real.send(fd, buffer, length, flags | MSG_DONTWAIT);
  if (sent < 0 && errno == EAGAIN) errno = ENOBUFS;  // uipc_send: the peer's receive buffer is full
  return sent;
}

// int getpeername(int socket, struct sockaddr *address, socklen_t *length);
EXPORT int getpeername(int fd, struct sockaddr *address, socklen_t *length) {
  REAL();
  pthread_mutex_lock(&sockets_lock);
  struct xnu_socket *entry = find_locked(fd);
  bool disconnected = entry && entry->peer < 0;
  pthread_mutex_unlock(&sockets_lock);
  if (disconnected) {
    errno = ENOTCONN;
    return -1;
  }
  return real.getpeername(fd, address, length);
}

// int poll(struct pollfd fds[], nfds_t nfds, int timeout);
EXPORT int poll(struct pollfd *fds, nfds_t count, int timeout) {
  REAL();
  // filt_soread: a pending so_error makes a socket readable. Such a socket answers at once.
  bool error_pending = false;
  pthread_mutex_lock(&sockets_lock);
  for (nfds_t i = 0; i < count && !error_pending; i++) {
    struct xnu_socket *entry = (fds[i].events & POLLIN) ? find_locked(fds[i].fd) : NULL;
    error_pending = entry && entry->so_error;
  }
  pthread_mutex_unlock(&sockets_lock);
  if (!error_pending) return real.poll(fds, count, timeout);
  int ready = real.poll(fds, count, 0);
  if (ready < 0) return ready;
  pthread_mutex_lock(&sockets_lock);
  for (nfds_t i = 0; i < count; i++) {
    struct xnu_socket *entry = (fds[i].events & POLLIN) ? find_locked(fds[i].fd) : NULL;
    if (!entry || !entry->so_error || (fds[i].revents & POLLIN)) continue;
    if (fds[i].revents == 0) ready++;
    fds[i].revents |= POLLIN;
  }
  pthread_mutex_unlock(&sockets_lock);
  return ready;
}

// ---- bind: xnu's struct sockaddr_in ----
//
// libSystem's bind() hands the caller's bytes to xnu, whose struct sockaddr_in is the 4.4BSD one
// (bsd/netinet/in.h):
//   struct sockaddr_in { __uint8_t sin_len; sa_family_t sin_family; in_port_t sin_port;
//                        struct in_addr sin_addr; char sin_zero[8]; };
// with sa_family_t a __uint8_t (bsd/sys/_types/_sa_family_t.h): length at byte 0, family at byte
// 1, port (network order) at 2..3, address (network order) at 4..7, 16 bytes in all. Linux's
// begins with a 16-bit sin_family instead, so glibc's bind would take xnu's first two bytes for
// family 0x0210 and fail. Here the bytes are read as xnu reads them, and the same port and address
// are bound through glibc:
// - bind → getsockaddr_s (bsd/kern/uipc_syscalls.c) copies address_len bytes, turns AF_UNSPEC (0)
//   into AF_INET on an AF_INET socket when address_len is sizeof(struct sockaddr_in), and then
//   overwrites sa_len with address_len;
// - in_pcbbind (bsd/netinet/in_pcb.c) refuses sa_len != sizeof(struct sockaddr_in) with EINVAL;
//   its family check is compiled out (#if 0, "old programs incorrectly fail to initialize it").
// Stricter than xnu, on purpose: because xnu ignores both first bytes, even Linux's layout would
// bind there (family byte 0 → AF_UNSPEC → AF_INET), so the double reports a sin_len other than 16
// or a family other than AF_INET as a violation: softnet must write the header's struct. Only
// AF_INET sockets are handled (softnet binds nothing else through here). Error numbers are Linux's,
// as everywhere in the double.
#define XNU_SOCKADDR_IN_SIZE 16
#define XNU_AF_INET 2  // bsd/sys/socket.h
#define XNU_SOCK_MAXADDRLEN 255  // bsd/sys/socket.h

// int bind(int socket, const struct sockaddr *address, socklen_t address_len);
EXPORT int bind(int fd, const struct sockaddr *address, socklen_t length) {
  REAL();
  double_count_call("bind");
  int domain = 0;
  socklen_t domain_size = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &domain_size) != 0) return -1;  // EBADF, ENOTSOCK
  if (domain != AF_INET) {
    double_violation("xnu bind double: only AF_INET sockets are handled, got domain %d", domain);
    errno = EAFNOSUPPORT;
    return -1;
  }
  if (length > XNU_SOCK_MAXADDRLEN) {
    errno = ENAMETOOLONG;
    return -1;
  }
  if (length != XNU_SOCKADDR_IN_SIZE) {
    errno = EINVAL;  // getsockaddr_s sets sa_len = address_len; in_pcbbind wants 16
    return -1;
  }
  const unsigned char *bytes = (const unsigned char *)address;
  if (bytes[0] != XNU_SOCKADDR_IN_SIZE) double_violation("xnu bind double: sin_len %u, not 16", bytes[0]);
  if (bytes[1] != XNU_AF_INET) double_violation("xnu bind double: sin_family %u, not AF_INET (2)", bytes[1]);
  struct sockaddr_in linux_address;
  memset(&linux_address, 0, sizeof linux_address);
  linux_address.sin_family = AF_INET;
  memcpy(&linux_address.sin_port, bytes + 2, 2);  // both in network order: copied as they are
  memcpy(&linux_address.sin_addr, bytes + 4, 4);
  int result = real.bind(fd, (const struct sockaddr *)&linux_address, sizeof linux_address);
  int error = errno;
  char text[INET_ADDRSTRLEN] = "?";
  inet_ntop(AF_INET, &linux_address.sin_addr, text, sizeof text);
  double_log("bind sin_len=%u sin_family=%u port=%u address=%s result=%s", bytes[0], bytes[1],
             ntohs(linux_address.sin_port), text, result == 0 ? "0" : error == EADDRINUSE ? "EADDRINUSE" : "error");
  errno = error;
  return result;
}
