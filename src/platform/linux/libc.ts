/**
 * The C library, through bun:ffi. This is the only module that binds libc; everything else imports
 * `libc` from here. Linux only (glibc on x86_64 and arm64): macOS has no recvmmsg, memfd_create or
 * eventfd, reads errno through __error() and numbers errno values differently.
 *
 * Every symbol is declared once, with its C prototype beside it. Conventions:
 * - `ssize_t` results are declared i32: every length we pass is at most a frame slot (≤ 64 KiB), so
 *   the result fits, -1 stays -1, and the call returns a plain number instead of a BigInt.
 * - `size_t` arguments are u64 (a JS number is accepted).
 * - Variadic functions (open, ioctl, prctl) are declared with the fixed arguments we actually pass. On
 *   x86_64 (System V) and on Linux arm64 (AAPCS64), variadic integer and pointer arguments travel
 *   in the same registers as named ones, so a fixed declaration is ABI-compatible there. It is NOT
 *   on macOS arm64, where variadic arguments go on the stack.
 */
import { dlopen, FFIType, type Pointer, read } from "bun:ffi";

/**
 * glibc's soname. Bun itself is dynamically linked against it, so the loader already has this
 * object mapped: dlopen() of a bare soname that matches a loaded object returns that object and
 * never walks a search path. Nothing from the environment (LD_LIBRARY_PATH is also ignored for
 * setuid binaries) can substitute another library here.
 */
const LIBC_SONAME = "libc.so.6";

const { i32, u32, i64, u64, cstring } = FFIType;
const pointer = FFIType.ptr;

export const libc = dlopen(LIBC_SONAME, {
  // int socket(int domain, int type, int protocol);
  socket: { args: [i32, i32, i32], returns: i32 },
  // int socketpair(int domain, int type, int protocol, int sv[2]);
  socketpair: { args: [i32, i32, i32, pointer], returns: i32 },
  // int bind(int sockfd, const struct sockaddr *addr, socklen_t addrlen);
  bind: { args: [i32, pointer, u32], returns: i32 },
  // int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen);
  getsockopt: { args: [i32, i32, i32, pointer, pointer], returns: i32 },
  // int setsockopt(int sockfd, int level, int optname, const void *optval, socklen_t optlen);
  setsockopt: { args: [i32, i32, i32, pointer, u32], returns: i32 },
  // int getpeername(int sockfd, struct sockaddr *addr, socklen_t *addrlen);
  getpeername: { args: [i32, pointer, pointer], returns: i32 },
  // ssize_t send(int sockfd, const void *buf, size_t len, int flags);
  send: { args: [i32, pointer, u64, i32], returns: i32 },
  // int setns(int fd, int nstype);
  setns: { args: [i32, i32], returns: i32 },
  // int shutdown(int sockfd, int how);
  shutdown: { args: [i32, i32], returns: i32 },
  // int recvmmsg(int sockfd, struct mmsghdr *msgvec, unsigned int vlen, int flags, struct timespec *timeout);
  recvmmsg: { args: [i32, pointer, u32, i32, pointer], returns: i32 },
  // int sendmmsg(int sockfd, struct mmsghdr *msgvec, unsigned int vlen, int flags);
  sendmmsg: { args: [i32, pointer, u32, i32], returns: i32 },
  // ssize_t recv(int sockfd, void *buf, size_t len, int flags);
  recv: { args: [i32, pointer, u64, i32], returns: i32 },
  // ssize_t read(int fd, void *buf, size_t count);
  read: { args: [i32, pointer, u64], returns: i32 },
  // ssize_t write(int fd, const void *buf, size_t count);
  write: { args: [i32, pointer, u64], returns: i32 },
  // int open(const char *pathname, int flags, ...);   called without O_CREAT, so no mode argument
  open: { args: [cstring, i32], returns: i32 },
  // int close(int fd);
  close: { args: [i32], returns: i32 },
  // long syscall(long number, ...);   variadic, for the calls glibc has no wrapper for (io_uring);
  // always called with six long arguments. glibc's syscall() is written in assembly on both
  // (sysdeps/unix/sysv/linux/x86_64/syscall.S, .../aarch64/syscall.S): it moves the arguments
  // into the kernel's registers and reads no va_list, so the fixed declaration is exact.
  syscall: { args: [i64, i64, i64, i64, i64, i64, i64], returns: FFIType.i64_fast },
  // void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset);
  // Returned as a number: MAP_FAILED is (void *)-1 and arrives as -1.
  mmap: { args: [u64, u64, i32, i32, i32, i64], returns: FFIType.i64_fast },
  // int munmap(void *addr, size_t length);
  munmap: { args: [u64, u64], returns: i32 },
  // int ioctl(int fd, unsigned long request, ...);   always called with one pointer argument
  ioctl: { args: [i32, u64, pointer], returns: i32 },
  // int epoll_create1(int flags);
  epoll_create1: { args: [i32], returns: i32 },
  // int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event);
  epoll_ctl: { args: [i32, i32, i32, pointer], returns: i32 },
  // int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout);
  epoll_wait: { args: [i32, pointer, i32, i32], returns: i32 },
  // int eventfd(unsigned int initval, int flags);
  eventfd: { args: [u32, i32], returns: i32 },
  // int memfd_create(const char *name, unsigned int flags);
  memfd_create: { args: [cstring, u32], returns: i32 },
  // int fcntl(int fd, int cmd, ...);   only with one int argument (F_ADD_SEALS, F_GET_SEALS)
  fcntl: { args: [i32, i32, i32], returns: i32 },
  // uid_t getuid(void);   uid_t geteuid(void);   gid_t getgid(void);   gid_t getegid(void);
  getuid: { args: [], returns: u32 },
  geteuid: { args: [], returns: u32 },
  getgid: { args: [], returns: u32 },
  getegid: { args: [], returns: u32 },
  // void *calloc(size_t nmemb, size_t size);
  calloc: { args: [u64, u64], returns: pointer },
  // void free(void *pointer);
  free: { args: [pointer], returns: FFIType.void },
  // Identity and privileges (privileges.ts drops root with these after set-up).
  // struct passwd *getpwnam(const char *name);
  getpwnam: { args: [cstring], returns: pointer },
  // struct passwd *getpwuid(uid_t uid);
  getpwuid: { args: [u32], returns: pointer },
  // struct group *getgrnam(const char *name);
  getgrnam: { args: [cstring], returns: pointer },
  // int initgroups(const char *user, gid_t group);
  initgroups: { args: [cstring, u32], returns: i32 },
  // int setgroups(size_t size, const gid_t *list);
  setgroups: { args: [u64, pointer], returns: i32 },
  // int getgroups(int size, gid_t list[]);
  getgroups: { args: [i32, pointer], returns: i32 },
  // int setresuid(uid_t ruid, uid_t euid, uid_t suid);
  setresuid: { args: [u32, u32, u32], returns: i32 },
  // int setresgid(gid_t rgid, gid_t egid, gid_t sgid);
  setresgid: { args: [u32, u32, u32], returns: i32 },
  // int getresuid(uid_t *ruid, uid_t *euid, uid_t *suid);
  getresuid: { args: [pointer, pointer, pointer], returns: i32 },
  // int getresgid(gid_t *rgid, gid_t *egid, gid_t *sgid);
  getresgid: { args: [pointer, pointer, pointer], returns: i32 },
  // int setuid(uid_t uid);
  setuid: { args: [u32], returns: i32 },
  // int setgid(gid_t gid);
  setgid: { args: [u32], returns: i32 },
  // int seteuid(uid_t euid);   int setegid(gid_t egid);
  seteuid: { args: [u32], returns: i32 },
  setegid: { args: [u32], returns: i32 },
  // int setreuid(uid_t ruid, uid_t euid);   int setregid(gid_t rgid, gid_t egid);   (uid_t)-1 = unchanged
  setreuid: { args: [u32, u32], returns: i32 },
  setregid: { args: [u32, u32], returns: i32 },
  // int execv(const char *path, char *const argv[]);   replaces the process (sudo escalation)
  execv: { args: [pointer, pointer], returns: i32 },
  // int capset(cap_user_header_t hdrp, const cap_user_data_t datap);
  capset: { args: [pointer, pointer], returns: i32 },
  // int prctl(int option, ...);   always called with the four unsigned long arguments
  prctl: { args: [i32, u64, u64, u64, u64], returns: i32 },
  // int *__errno_location(void);   glibc's per-thread errno slot
  __errno_location: { args: [], returns: pointer },
  // char *strerror(int errnum);
  strerror: { args: [i32], returns: cstring },
}).symbols;

/**
 * POSIX threads. Bun links libpthread.so.0 too, so this is again an already-loaded object. Before
 * glibc 2.34 pthread_create lived only here; since 2.34 libpthread.so.0 is an empty shim whose
 * lookups fall through to its dependency libc.so.6, so binding through it works on both.
 */
const LIBPTHREAD_SONAME = "libpthread.so.0";

export const pthread = dlopen(LIBPTHREAD_SONAME, {
  // int pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*start)(void *), void *arg);
  pthread_create: { args: [pointer, pointer, pointer, pointer], returns: i32 },
  // int pthread_join(pthread_t thread, void **retval);
  pthread_join: { args: [u64, pointer], returns: i32 },
}).symbols;

/**
 * The address of a bound C function, for native code (linux/epoll-reactor.c) that calls libc through
 * function pointers. bun:ffi exposes it as `.ptr` on every bound symbol but does not type it.
 */
export function functionAddress(fn: unknown): number {
  const address = (fn as { ptr?: unknown }).ptr;
  if (typeof address !== "number" || address === 0) throw new TypeError("not a bun:ffi function");
  return address;
}

/** Linux errno values (identical on x86_64 and arm64) for the errors softnet tells apart. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  EMFILE: 24,
  EPIPE: 32,
  ENOSYS: 38,
  EBADFD: 77,
  ENOTSOCK: 88,
  EMSGSIZE: 90,
  EOPNOTSUPP: 95,
  EADDRINUSE: 98,
  EADDRNOTAVAIL: 99,
  ECONNRESET: 104,
  ENOBUFS: 105,
  ENOTCONN: 107,
  ECONNREFUSED: 111,
} as const;

const errnoNames = new Map<number, string>(Object.entries(Errno).map(([name, value]) => [value, name]));

/** "EAGAIN" for 11; "errno 42" for values softnet does not name. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `errno ${errno}`;
}

/**
 * errno of the calling thread. Read it immediately after the failing call, before anything else
 * that could make a system call on this thread (allocation, I/O, logging).
 */
export function lastErrno(): number {
  return read.i32(libc.__errno_location() as Pointer, 0);
}

/** A failed system call: which call, errno, and errno's symbolic name. */
export class SysError extends Error {
  readonly syscall: string;
  readonly errno: number;
  /** Symbolic errno name, e.g. "ENOBUFS" ("errno 42" for unnamed values). */
  readonly code: string;

  constructor(syscall: string, errno: number) {
    super(`${syscall}: ${libc.strerror(errno) ?? "unknown error"} (${errnoName(errno)})`);
    this.name = "SysError";
    this.syscall = syscall;
    this.errno = errno;
    this.code = errnoName(errno);
  }
}

/** SysError for the call that just failed; reads errno, so call it first thing after the failure. */
export function lastSysError(syscall: string): SysError {
  return new SysError(syscall, lastErrno());
}

// Constants from the Linux UAPI headers (same values on x86_64 and arm64).
export const AF_UNIX = 1;
export const AF_INET = 2;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_SEQPACKET = 5;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SHUT_RDWR = 2;
export const SO_TYPE = 3;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_DOMAIN = 39;
export const MSG_DONTWAIT = 0x40;
export const MSG_TRUNC = 0x20;
export const MSG_NOSIGNAL = 0x4000;
export const O_RDWR = 0o2;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
export const MFD_CLOEXEC = 1;
export const AF_NETLINK = 16;
export const CLONE_NEWNET = 0x40000000;
