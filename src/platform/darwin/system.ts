/**
 * The darwin module's bindings: vmnet.framework, libdispatch/libxpc/the blocks runtime, and the C
 * library, through bun:ffi.
 *
 * The same code runs on macOS and, in CI, on Linux against a C double of vmnet (test/vmnet-double).
 * Two things vary, and each from exactly one place:
 * - which libraries are opened: the DarwinLibraries passed in. On macOS that is MACOS_LIBRARIES,
 *   absolute constant paths; tests pass the double and glibc. Nothing from the environment can
 *   choose a library: this binary runs as root, often setuid.
 * - the kernel's numbers (errno values, MSG_* and SO_* constants, struct msghdr and sockaddr
 *   layouts, the errno accessor's name): KERNEL, chosen by the platform we run on, because they
 *   belong to the kernel and C library actually underneath, whichever libraries were injected.
 *   One exception: the struct sockaddr_in given to bind() (port-check.ts) is always xnu's, since
 *   only the C library's bind reads it; in tests the double's bind (test/vmnet-double/
 *   xnu-socket.c) stands in for libSystem's, and glibc's would refuse it (EAFNOSUPPORT).
 *
 * Where each darwin number comes from (apple-oss-distributions, checked against these versions):
 * errno values: xnu bsd/sys/errno.h (xnu-11417); socket, MSG_* and SO_* constants, struct msghdr
 * and struct sockaddr: xnu bsd/sys/socket.h; RTLD_*: dyld include/dlfcn.h (dyld-1378). The Linux
 * numbers are the kernel's asm-generic UAPI headers (x86_64 and arm64 share them) and glibc's
 * bits/dlfcn.h. Function prototypes: the macOS SDK headers named beside each group.
 *
 * This module must not import ../linux/libc.ts: that binds glibc by soname when imported and would fail
 * on macOS.
 *
 * Conventions as in linux/libc.ts: every symbol is declared once with its C prototype beside it; ssize_t
 * and `long` results are declared i32 (the values we look at fit, and -1 stays -1); no variadic
 * function is bound, because on macOS arm64 variadic arguments travel on the stack and a fixed
 * declaration would pass them in registers (that rules out fcntl, ioctl and open: the wake-up
 * socket uses MSG_DONTWAIT instead of O_NONBLOCK, and the compiler's source file comes from mkstemp).
 */
import { CString, dlopen, FFIType, type Pointer, read } from "bun:ffi";
import { cString } from "../ffi-helpers.ts";
import { F_ADD_SEALS, type SourceFileCalls } from "../runtime-c.ts";

/** vmnet.framework. On macOS 11+ the file lives in the dyld shared cache; dlopen finds it by this path. */
export const VMNET_FRAMEWORK = "/System/Library/Frameworks/vmnet.framework/vmnet";
/** libSystem: the C library, libdispatch, libxpc and the blocks runtime, all re-exported. */
export const LIBSYSTEM = "/usr/lib/libSystem.B.dylib";
export const COREFOUNDATION_FRAMEWORK = "/System/Library/Frameworks/CoreFoundation.framework/CoreFoundation";
export const SYSTEMCONFIGURATION_FRAMEWORK =
  "/System/Library/Frameworks/SystemConfiguration.framework/SystemConfiguration";

/** Which library provides each group of symbols. */
export interface DarwinLibraries {
  /** vmnet_* functions and the vmnet_*_key data symbols. */
  readonly vmnet: string;
  /** dispatch_*, xpc_* and _NSConcreteGlobalBlock. */
  readonly dispatch: string;
  /** The C library: sockets, dlopen/dlsym, errno, memory, temporary files. */
  readonly libc: string;
}

/** Where the macOS runtime gets its libraries. Only tests pass anything but the default. */
export interface DarwinPlatform {
  libraries: DarwinLibraries;
  /** Set bootpd's lease time (macOS only; the vmnet double has no bootpd). */
  configureBootpd: boolean;
}

/** The real thing; the only set a release build ever opens. */
export const MACOS_LIBRARIES: DarwinLibraries = Object.freeze({
  vmnet: VMNET_FRAMEWORK,
  dispatch: LIBSYSTEM,
  libc: LIBSYSTEM,
});

/** Numbers that belong to the kernel and C library underneath. */
export interface KernelConstants {
  readonly name: "darwin" | "linux";
  /** The function that returns the calling thread's errno slot. */
  readonly errnoFunction: "__error" | "__errno_location";
  readonly errno: {
    readonly EINTR: number;
    readonly EBADF: number;
    readonly EAGAIN: number;
    readonly EPIPE: number;
    readonly ENOTSOCK: number;
    readonly EMSGSIZE: number;
    readonly ECONNRESET: number;
    readonly ENOBUFS: number;
    readonly ENOTCONN: number;
    readonly ECONNREFUSED: number;
    /** What xnu's send returns on a datagram socket whose peer has closed (see datagram-link.ts). */
    readonly EDESTADDRREQ: number;
    /** bind() of a port something on the host uses (port-check.ts). */
    readonly EADDRINUSE: number;
  };
  readonly AF_UNIX: number;
  readonly AF_INET: number;
  readonly SOCK_STREAM: number;
  readonly SOCK_DGRAM: number;
  /** OR-ed into socketpair's type where the kernel supports it (Linux); 0 on macOS. */
  readonly SOCK_CLOEXEC: number;
  readonly SOL_SOCKET: number;
  readonly SO_TYPE: number;
  readonly SO_SNDBUF: number;
  /**
   * No SIGPIPE from any send on this socket (xnu sendit checks SOF_NOSIGPIPE or MSG_NOSIGNAL before
   * psignal(SIGPIPE), bsd/kern/uipc_syscalls.c). Used on macOS because it covers every send on the
   * socket, including the native event block's, on every macOS version. 0 on Linux, which has no
   * such option and gets MSG_NOSIGNAL instead.
   */
  readonly SO_NOSIGPIPE: number;
  readonly MSG_DONTWAIT: number;
  readonly MSG_TRUNC: number;
  /**
   * 0 on macOS: SO_NOSIGPIPE is set on the socket instead. (macOS 11+ does define MSG_NOSIGNAL
   * 0x80000, xnu bsd/sys/socket.h since xnu-7195; macOS 10.15's xnu-6153 has none.)
   */
  readonly MSG_NOSIGNAL: number;
  readonly RTLD_NOW: number;
  readonly RTLD_NOLOAD: number;
  /** struct msghdr: total size and the offsets softnet writes or reads. */
  readonly msghdr: {
    readonly bytes: number;
    readonly iov: number;
    readonly iovlen: number;
    readonly flags: number;
  };
  /** Offset of the address family byte in a struct sockaddr (after sa_len on macOS). */
  readonly sockaddrFamilyOffset: number;
}

/**
 * macOS (identical on arm64 and x86_64): xnu bsd/sys/errno.h, bsd/sys/socket.h; dyld
 * include/dlfcn.h. The errno accessor is `int *__error(void)` (bsd/sys/errno.h: `#define errno
 * (*__error())`).
 */
export const DARWIN_KERNEL: KernelConstants = Object.freeze({
  name: "darwin",
  errnoFunction: "__error",
  errno: Object.freeze({
    EINTR: 4,
    EBADF: 9,
    EAGAIN: 35,
    EPIPE: 32,
    ENOTSOCK: 38,
    EMSGSIZE: 40,
    ECONNRESET: 54,
    ENOBUFS: 55,
    ENOTCONN: 57,
    ECONNREFUSED: 61,
    EDESTADDRREQ: 39,
    EADDRINUSE: 48,
  }),
  AF_UNIX: 1,
  AF_INET: 2,
  SOCK_STREAM: 1,
  SOCK_DGRAM: 2,
  SOCK_CLOEXEC: 0, // xnu has no SOCK_CLOEXEC flag
  SOL_SOCKET: 0xffff,
  SO_TYPE: 0x1008,
  SO_SNDBUF: 0x1001,
  SO_NOSIGPIPE: 0x1022,
  MSG_DONTWAIT: 0x80,
  MSG_TRUNC: 0x10,
  MSG_NOSIGNAL: 0,
  RTLD_NOW: 0x2, // dyld include/dlfcn.h
  RTLD_NOLOAD: 0x10,
  // bsd/sys/socket.h, LP64: { void *msg_name @0; socklen_t msg_namelen @8; struct iovec *msg_iov @16; int msg_iovlen @24;
  //   void *msg_control @32; socklen_t msg_controllen @40; int msg_flags @44 }
  msghdr: Object.freeze({ bytes: 48, iov: 16, iovlen: 24, flags: 44 }),
  sockaddrFamilyOffset: 1, // { __uint8_t sa_len; sa_family_t (__uint8_t, sys/_types/_sa_family_t.h) sa_family; ... }
});

/**
 * Linux (identical on x86_64 and arm64): asm-generic/errno.h, errno-base.h, asm-generic/socket.h,
 * linux/socket.h and bits/socket.h of glibc, glibc bits/dlfcn.h.
 */
export const LINUX_KERNEL: KernelConstants = Object.freeze({
  name: "linux",
  errnoFunction: "__errno_location",
  errno: Object.freeze({
    EINTR: 4,
    EBADF: 9,
    EAGAIN: 11,
    EPIPE: 32,
    ENOTSOCK: 88,
    EMSGSIZE: 90,
    ECONNRESET: 104,
    ENOBUFS: 105,
    ENOTCONN: 107,
    ECONNREFUSED: 111,
    EDESTADDRREQ: 89,
    EADDRINUSE: 98,
  }),
  AF_UNIX: 1,
  AF_INET: 2,
  SOCK_STREAM: 1,
  SOCK_DGRAM: 2,
  SOCK_CLOEXEC: 0o2000000,
  SOL_SOCKET: 1,
  SO_TYPE: 3,
  SO_SNDBUF: 7,
  SO_NOSIGPIPE: 0,
  MSG_DONTWAIT: 0x40,
  MSG_TRUNC: 0x20,
  MSG_NOSIGNAL: 0x4000,
  RTLD_NOW: 0x2,
  RTLD_NOLOAD: 0x4,
  // { void *msg_name @0; socklen_t msg_namelen @8; struct iovec *msg_iov @16; size_t msg_iovlen @24;
  //   void *msg_control @32; size_t msg_controllen @40; int msg_flags @48 }
  msghdr: Object.freeze({ bytes: 56, iov: 16, iovlen: 24, flags: 48 }),
  sockaddrFamilyOffset: 0, // { sa_family_t (uint16_t, little-endian) sa_family; ... }
});

/** The kernel underneath this process. */
export const KERNEL: KernelConstants = process.platform === "darwin" ? DARWIN_KERNEL : LINUX_KERNEL;

const { i32, u8, u16, u32, u64, i64, ptr, cstring } = FFIType;

/**
 * The C library. On macOS: libSystem; on Linux (tests): glibc, where dlopen/dlsym live in libc.so.6
 * since 2.34. Prototypes from the macOS SDK's sys/socket.h, unistd.h, dlfcn.h, stdlib.h, string.h,
 * pwd.h and grp.h (socket calls: xnu bsd/sys/socket.h).
 *
 * Every function is bound by its plain name, which is the one a C program on macOS links: the SDK
 * renames some through __DARWIN_ALIAS/__DARWIN_ALIAS_C (send, recv, recvmsg, socketpair, write,
 * close, strerror, ...), but on x86_64 and arm64 macOS __DARWIN_ONLY_UNIX_CONFORMANCE is 1, so the
 * "$UNIX2003" suffix is empty, and "$NOCANCEL" only applies on request (xnu bsd/sys/cdefs.h). None of
 * these is a __DARWIN_ALIAS_I ("$INODE64" on x86_64) function.
 */
export const LIBC_SYMBOLS = {
  // int socket(int domain, int type, int protocol);   --expose's port check (port-check.ts)
  socket: { args: [i32, i32, i32], returns: i32 },
  // int bind(int socket, const struct sockaddr *address, socklen_t address_len);   socklen_t is
  // __uint32_t (sys/_types/_socklen_t.h). The address is xnu's struct sockaddr_in (port-check.ts).
  bind: { args: [i32, ptr, u32], returns: i32 },
  // int socketpair(int domain, int type, int protocol, int sv[2]);
  socketpair: { args: [i32, i32, i32, ptr], returns: i32 },
  // ssize_t recvmsg(int socket, struct msghdr *message, int flags);
  recvmsg: { args: [i32, ptr, i32], returns: i32 },
  // ssize_t recv(int socket, void *buffer, size_t length, int flags);
  recv: { args: [i32, ptr, u64, i32], returns: i32 },
  // ssize_t send(int socket, const void *buffer, size_t length, int flags);
  send: { args: [i32, ptr, u64, i32], returns: i32 },
  // ssize_t write(int fd, const void *buffer, size_t count);
  write: { args: [i32, ptr, u64], returns: i32 },
  // int close(int fd);
  close: { args: [i32], returns: i32 },
  // int getsockopt(int socket, int level, int option, void *value, socklen_t *length);
  getsockopt: { args: [i32, i32, i32, ptr, ptr], returns: i32 },
  // int setsockopt(int socket, int level, int option, const void *value, socklen_t length);
  setsockopt: { args: [i32, i32, i32, ptr, u32], returns: i32 },
  // int getsockname(int socket, struct sockaddr *address, socklen_t *length);
  getsockname: { args: [i32, ptr, ptr], returns: i32 },
  // int getpeername(int socket, struct sockaddr *address, socklen_t *length);
  getpeername: { args: [i32, ptr, ptr], returns: i32 },
  // int mkstemp(char *template);
  mkstemp: { args: [ptr], returns: i32 },
  // int unlink(const char *path);
  unlink: { args: [ptr], returns: i32 },
  // int open(const char *path, int oflag, ...);   only without O_CREAT, so the variadic mode is
  // never passed (on macOS arm64 it would travel on the stack)
  open: { args: [ptr, i32], returns: i32 },
  // int fchmod(int fd, mode_t mode);   mode_t is uint16_t on macOS, uint32_t on Linux: i32 carries both
  fchmod: { args: [i32, i32], returns: i32 },
  // void *dlopen(const char *path, int mode);
  dlopen: { args: [ptr, i32], returns: ptr },
  // void *dlsym(void *handle, const char *symbol);
  dlsym: { args: [ptr, ptr], returns: ptr },
  // void *calloc(size_t count, size_t size);
  calloc: { args: [u64, u64], returns: ptr },
  // void free(void *pointer);
  free: { args: [ptr], returns: FFIType.void },
  // char *strerror(int errnum);
  strerror: { args: [i32], returns: cstring },
  // Identity (darwin/identity.ts): uid_t and gid_t are 32-bit on both systems.
  // uid_t getuid(void);  uid_t geteuid(void);  gid_t getgid(void);  gid_t getegid(void);
  getuid: { args: [], returns: u32 },
  geteuid: { args: [], returns: u32 },
  getgid: { args: [], returns: u32 },
  getegid: { args: [], returns: u32 },
  // int setuid(uid_t uid);  int setgid(gid_t gid);
  setuid: { args: [u32], returns: i32 },
  setgid: { args: [u32], returns: i32 },
  // int seteuid(uid_t euid);  int setegid(gid_t egid);  (macOS unistd.h; uid_t/gid_t are __uint32_t)
  seteuid: { args: [u32], returns: i32 },
  setegid: { args: [u32], returns: i32 },
  // int setreuid(uid_t ruid, uid_t euid);  int setregid(gid_t rgid, gid_t egid);  (uid_t)-1 = unchanged
  setreuid: { args: [u32, u32], returns: i32 },
  setregid: { args: [u32, u32], returns: i32 },
  // int initgroups(const char *user, int basegid);   (gid_t basegid on Linux: same 32 bits)
  initgroups: { args: [ptr, u32], returns: i32 },
  // int setgroups(int ngroups, const gid_t *gidset);   (macOS unistd.h; size_t on Linux, where the
  // vmnet double runs: passed as 64 bits, of which an int parameter reads the low 32 on both ABIs)
  setgroups: { args: [u64, ptr], returns: i32 },
  // int getgroups(int gidsetsize, gid_t grouplist[]);   (macOS unistd.h and Linux alike)
  getgroups: { args: [i32, ptr], returns: i32 },
  // struct passwd *getpwnam(const char *name);  struct passwd *getpwuid(uid_t uid);
  getpwnam: { args: [ptr], returns: ptr },
  getpwuid: { args: [u32], returns: ptr },
  // struct group *getgrnam(const char *name);
  getgrnam: { args: [ptr], returns: ptr },
  // int execv(const char *path, char *const argv[]);
  execv: { args: [ptr, ptr], returns: i32 },
} as const;

/**
 * libdispatch (apple-oss-distributions/libdispatch dispatch/queue.h, semaphore.h, time.h, object.h;
 * dispatch_time_t is uint64_t), libxpc (the SDK's xpc/xpc.h and xpc/dictionary.h) and (as data) the
 * blocks runtime. A NULL dispatch_queue_attr_t is DISPATCH_QUEUE_SERIAL.
 */
export const DISPATCH_SYMBOLS = {
  // dispatch_queue_t dispatch_queue_create(const char *label, dispatch_queue_attr_t attr);
  dispatch_queue_create: { args: [ptr, ptr], returns: ptr },
  // dispatch_semaphore_t dispatch_semaphore_create(intptr_t value);   (`long` in older SDKs: same 64 bits)
  dispatch_semaphore_create: { args: [i64], returns: ptr },
  // intptr_t dispatch_semaphore_wait(dispatch_semaphore_t dsema, dispatch_time_t timeout);   0, or non-zero
  // when timed out: the low 32 bits are enough to tell
  dispatch_semaphore_wait: { args: [ptr, u64], returns: i32 },
  // intptr_t dispatch_semaphore_signal(dispatch_semaphore_t dsema);   called by blocks.c
  dispatch_semaphore_signal: { args: [ptr], returns: i32 },
  // dispatch_time_t dispatch_time(dispatch_time_t when, int64_t delta);
  dispatch_time: { args: [u64, i64], returns: u64 },
  // void dispatch_release(dispatch_object_t object);
  dispatch_release: { args: [ptr], returns: FFIType.void },
  // xpc_object_t xpc_dictionary_create(const char *const *keys, const xpc_object_t *values, size_t count);
  xpc_dictionary_create: { args: [ptr, ptr, u64], returns: ptr },
  // void xpc_dictionary_set_uint64(xpc_object_t dictionary, const char *key, uint64_t value);
  xpc_dictionary_set_uint64: { args: [ptr, ptr, u64], returns: FFIType.void },
  // void xpc_dictionary_set_bool(xpc_object_t dictionary, const char *key, bool value);
  xpc_dictionary_set_bool: { args: [ptr, ptr, FFIType.bool], returns: FFIType.void },
  // const char *xpc_dictionary_get_string(xpc_object_t dictionary, const char *key);   called by blocks.c
  xpc_dictionary_get_string: { args: [ptr, ptr], returns: ptr },
  // uint64_t xpc_dictionary_get_uint64(xpc_object_t dictionary, const char *key);   called by blocks.c
  xpc_dictionary_get_uint64: { args: [ptr, ptr], returns: u64 },
  // void xpc_release(xpc_object_t object);
  xpc_release: { args: [ptr], returns: FFIType.void },
} as const;

/**
 * vmnet.framework (vmnet.h), what every softnet needs. vmnet_return_t, operating_modes_t and
 * interface_event_t are uint32_t enums; interface_ref is a pointer; blocks are passed as pointers
 * to block literals (blocks.ts). Prototypes as in vmnet.h and Apple's vmnet reference; the same
 * shapes are bound by edigaryev/vmnet (src/ffi/vmnet.rs), which upstream softnet uses.
 */
export const VMNET_SYMBOLS = {
  // interface_ref vmnet_start_interface(xpc_object_t interface_desc, dispatch_queue_t queue,
  //     void (^handler)(vmnet_return_t status, xpc_object_t interface_param));
  vmnet_start_interface: { args: [ptr, ptr, ptr], returns: ptr },
  // vmnet_return_t vmnet_interface_set_event_callback(interface_ref interface, interface_event_t event_mask,
  //     dispatch_queue_t queue, void (^callback)(interface_event_t event_mask, xpc_object_t event));
  vmnet_interface_set_event_callback: { args: [ptr, u32, ptr, ptr], returns: u32 },
  // vmnet_return_t vmnet_read(interface_ref interface, struct vmpktdesc *packets, int *pktcnt);
  vmnet_read: { args: [ptr, ptr, ptr], returns: u32 },
  // vmnet_return_t vmnet_write(interface_ref interface, struct vmpktdesc *packets, int *pktcnt);
  vmnet_write: { args: [ptr, ptr, ptr], returns: u32 },
  // vmnet_return_t vmnet_stop_interface(interface_ref interface, dispatch_queue_t queue,
  //     void (^handler)(vmnet_return_t status));
  vmnet_stop_interface: { args: [ptr, ptr, ptr], returns: u32 },
} as const;

/**
 * vmnet's port forwarding with an address family (macOS 11+), for --expose. Bound apart from
 * VMNET_SYMBOLS: a vmnet without them must still carry frames, and only --expose may fail.
 *
 * Signatures: Apple's vmnet reference (developer.apple.com/documentation/vmnet,
 * vmnet_interface_add_ip_port_forwarding_rule(_:_:_:_:_:_:_:): interface_ref, UInt8, UInt16, UInt8,
 * UnsafeRawPointer, UInt16, handler; ..._remove_ip_port_forwarding_rule(_:_:_:_:_:): interface_ref,
 * UInt8, UInt16, UInt8, handler: no address), and edigaryev/vmnet src/ffi/vmnet.rs, whose
 * Interface::port_forwarding_rule_add passes the IPv4 address as a pointer to its 4 octets in
 * network order, as upstream softnet does (lib/host.rs, AddressFamily::Ipv4). These replace
 * vmnet_interface_add/remove_port_forwarding_rule, deprecated since macOS 12 (Apple's reference:
 * "macOS 10.15-12.0"), which took the address as a `struct in_addr` by value.
 *
 * Small integer arguments (uint8_t, uint16_t): Apple's arm64 ABI has the caller extend them to 32
 * bits ("Writing ARM64 code for Apple platforms"), which bun:ffi's u8/u16 do.
 */
export const VMNET_FORWARDING_SYMBOLS = {
  // vmnet_return_t vmnet_interface_add_ip_port_forwarding_rule(interface_ref interface, uint8_t protocol,
  //     uint16_t external_port, uint8_t address_family, const void *internal_address,
  //     uint16_t internal_port, vmnet_interface_completion_handler_t handler);
  // handler: void (^)(vmnet_return_t status). For AF_INET, internal_address points to a struct in_addr.
  vmnet_interface_add_ip_port_forwarding_rule: { args: [ptr, u8, u16, u8, ptr, u16, ptr], returns: u32 },
  // vmnet_return_t vmnet_interface_remove_ip_port_forwarding_rule(interface_ref interface, uint8_t protocol,
  //     uint16_t external_port, uint8_t address_family, vmnet_interface_completion_handler_t handler);
  vmnet_interface_remove_ip_port_forwarding_rule: { args: [ptr, u8, u16, u8, ptr], returns: u32 },
} as const;

/** The macOS release that introduced VMNET_FORWARDING_SYMBOLS (Apple's vmnet reference). */
export const VMNET_FORWARDING_SINCE = "macOS 11";

/**
 * Data symbols: `extern const char *vmnet_*_key` (vmnet.h; Swift: `let vmnet_mtu_key:
 * UnsafePointer<CChar>`). The value is the pointer stored there. Availability from Apple's vmnet
 * reference and API diffs: mode, MTU and max packet size since 10.10.
 */
export const VMNET_KEYS = [
  "vmnet_operation_mode_key",
  "vmnet_enable_isolation_key", // macOS 11+
  "vmnet_start_address_key", // macOS 10.15+
  "vmnet_subnet_mask_key", // macOS 10.15+
  "vmnet_mtu_key",
  "vmnet_max_packet_size_key",
  "vmnet_read_max_packets_key", // macOS 15+: optional
  "vmnet_write_max_packets_key", // macOS 15+: optional
] as const;
export type VmnetKey = (typeof VMNET_KEYS)[number];

/**
 * Data symbol of the blocks runtime: `void * _NSConcreteGlobalBlock[32]` (libclosure Block.h /
 * Block_private.h). A global block's isa is the symbol's *address*.
 */
export const GLOBAL_BLOCK_CLASS = "_NSConcreteGlobalBlock";

const LINUX_ONLY_SYMBOLS = {
  // int memfd_create(const char *name, unsigned int flags);   Linux only: source files for TinyCC
  memfd_create: { args: [ptr, u32], returns: i32 },
  // int fcntl(int fd, int cmd, ...);   Linux only, with one int (F_ADD_SEALS): on x86_64 and Linux
  // arm64 a variadic int travels where a named one would
  fcntl: { args: [i32, i32, i32], returns: i32 },
} as const;

function loadLibc(path: string) {
  return dlopen(path, LIBC_SYMBOLS).symbols;
}
function loadDispatch(path: string) {
  return dlopen(path, DISPATCH_SYMBOLS).symbols;
}
function loadVmnet(path: string) {
  return dlopen(path, VMNET_SYMBOLS).symbols;
}
function loadVmnetForwarding(path: string) {
  return dlopen(path, VMNET_FORWARDING_SYMBOLS).symbols;
}

export type LibcSymbols = ReturnType<typeof loadLibc>;
export type DispatchSymbols = ReturnType<typeof loadDispatch>;
export type VmnetSymbols = ReturnType<typeof loadVmnet>;
export type VmnetForwardingSymbols = ReturnType<typeof loadVmnetForwarding>;

/** Reports every bound function call (tests measure which symbols the tests reach). */
export type CallTrace = (library: string, symbol: string) => void;

/** The opened libraries. */
export interface DarwinSystem {
  readonly libraries: DarwinLibraries;
  readonly kernel: KernelConstants;
  readonly libc: LibcSymbols;
  readonly dispatch: DispatchSymbols;
  readonly vmnet: VmnetSymbols;
  /**
   * vmnet's port forwarding (VMNET_FORWARDING_SYMBOLS), or undefined when the framework lacks one
   * of them; vmnetForwardingMissing then names it.
   */
  readonly vmnetForwarding: VmnetForwardingSymbols | undefined;
  readonly vmnetForwardingMissing: string | undefined;
  /** The trace this system reports calls to (tests only). */
  readonly trace: CallTrace | undefined;
  /** memfd_create on Linux; undefined on macOS. */
  readonly memfdCreate: ((name: Buffer, flags: number) => number) | undefined;
  /** fcntl(fd, F_ADD_SEALS, seals) on Linux; undefined on macOS. */
  readonly addSeals: ((fd: number, seals: number) => number) | undefined;
  /** errno of the calling thread; read it right after the failing call. */
  errno(): number;
  /** Address of a bound function, for native code that calls it through a pointer. */
  functionAddress(library: "libc" | "dispatch" | "vmnet", symbol: string): number;
  /** Address of the errno accessor (__error or __errno_location), for native code. */
  readonly errnoFunctionAddress: number;
  /** Address of a data symbol in one of the libraries, or 0 when the library does not export it. */
  dataAddress(library: keyof DarwinLibraries, symbol: string): number;
  /** Same for a library outside the set, which bun:ffi must have loaded already (constant paths only). */
  dataAddressIn(path: string, symbol: string): number;
  /** The pointer stored in a `const char *` data symbol (a vmnet key), or 0 when it is missing. */
  vmnetKey(key: VmnetKey): number;
}

const opened = new Map<string, DarwinSystem>();

/**
 * Opens (once per set of libraries) what the darwin module needs. `trace`, for tests only, wraps
 * every function so that calls are reported; such a system is never cached.
 */
export function openDarwinSystem(
  libraries: DarwinLibraries,
  options: { trace?: CallTrace } = {},
): DarwinSystem {
  const cacheKey = `${libraries.vmnet}\0${libraries.dispatch}\0${libraries.libc}`;
  if (options.trace === undefined) {
    const cached = opened.get(cacheKey);
    if (cached !== undefined) return cached;
  }
  const system = new OpenedSystem(libraries, options.trace);
  if (options.trace === undefined) opened.set(cacheKey, system);
  return system;
}

class OpenedSystem implements DarwinSystem {
  readonly kernel = KERNEL;
  readonly libc: LibcSymbols;
  readonly dispatch: DispatchSymbols;
  readonly vmnet: VmnetSymbols;
  readonly vmnetForwarding: VmnetForwardingSymbols | undefined;
  readonly vmnetForwardingMissing: string | undefined;
  readonly memfdCreate: ((name: Buffer, flags: number) => number) | undefined;
  readonly addSeals: ((fd: number, seals: number) => number) | undefined;
  private readonly raw: Record<"libc" | "dispatch" | "vmnet", Record<string, unknown>>;
  private readonly errnoLocation: () => Pointer | null;
  readonly errnoFunctionAddress: number;
  private readonly handles = new Map<string, number>();
  private readonly keys = new Map<VmnetKey, number>();

  constructor(
    readonly libraries: DarwinLibraries,
    readonly trace: CallTrace | undefined,
  ) {
    const libc = loadLibc(libraries.libc);
    const dispatch = loadDispatch(libraries.dispatch);
    const vmnet = loadVmnet(libraries.vmnet);
    this.raw = { libc, dispatch, vmnet };
    this.libc = traced(libc, "libc", trace);
    this.dispatch = traced(dispatch, "dispatch", trace);
    this.vmnet = traced(vmnet, "vmnet", trace);
    // Optional symbols: looked up one by one first, because bun:ffi's dlopen fails as a whole when
    // one symbol is missing, and the error should name the missing one.
    this.vmnetForwardingMissing = Object.keys(VMNET_FORWARDING_SYMBOLS).find(
      (symbol) => this.dataAddressIn(libraries.vmnet, symbol) === 0,
    );
    this.vmnetForwarding =
      this.vmnetForwardingMissing === undefined
        ? traced(loadVmnetForwarding(libraries.vmnet), "vmnet", trace)
        : undefined;
    // int *__error(void) (macOS);  int *__errno_location(void) (glibc)
    const errnoSymbols = dlopen(libraries.libc, {
      [KERNEL.errnoFunction]: { args: [], returns: ptr },
    }).symbols;
    const errnoLocation = errnoSymbols[KERNEL.errnoFunction] as () => Pointer | null;
    this.errnoFunctionAddress = (errnoLocation as unknown as { ptr: number }).ptr;
    this.errnoLocation =
      trace === undefined
        ? errnoLocation
        : tracedFunction(errnoLocation, "libc", KERNEL.errnoFunction, trace);
    if (KERNEL.name === "linux") {
      const memfd = traced(dlopen(libraries.libc, LINUX_ONLY_SYMBOLS).symbols, "libc", trace);
      this.memfdCreate = (name, flags) => memfd.memfd_create(name, flags);
      this.addSeals = (fd, seals) => memfd.fcntl(fd, F_ADD_SEALS, seals);
    } else {
      this.memfdCreate = undefined;
      this.addSeals = undefined;
    }
  }

  errno(): number {
    return read.i32(this.errnoLocation() as Pointer, 0);
  }

  functionAddress(library: "libc" | "dispatch" | "vmnet", symbol: string): number {
    const address = (this.raw[library][symbol] as { ptr?: unknown } | undefined)?.ptr;
    if (typeof address !== "number" || address === 0) {
      throw new TypeError(`${symbol} is not a function bound from ${this.libraries[library]}`);
    }
    return address;
  }

  dataAddress(library: keyof DarwinLibraries, symbol: string): number {
    this.trace?.(library, symbol);
    return this.dataAddressIn(this.libraries[library], symbol);
  }

  dataAddressIn(path: string, symbol: string): number {
    const handle = this.handle(path);
    // dlsym on a handle searches that image and what it re-exports: libSystem's handle finds
    // libdispatch, libxpc and libsystem_blocks. No RTLD_DEFAULT fallback: a symbol must come from
    // the library named here, not from whatever else happens to be loaded.
    return address0(this.libc.dlsym(handle as Pointer, Buffer.from(`${symbol}\0`, "utf8")));
  }

  vmnetKey(key: VmnetKey): number {
    let value = this.keys.get(key);
    if (value === undefined) {
      const address = this.dataAddress("vmnet", key);
      value = address === 0 ? 0 : read.ptr(address as Pointer, 0);
      this.keys.set(key, value);
    }
    return value;
  }

  /**
   * A dlopen handle of a library that bun:ffi already loaded: RTLD_NOLOAD never loads anything,
   * so this can only name an image that the constant path (or the test's injected path) opened.
   * bun:ffi does not expose its own handles, and dlsym needs one for data symbols.
   */
  private handle(path: string): number {
    let handle = this.handles.get(path);
    if (handle === undefined) {
      handle = address0(
        this.libc.dlopen(Buffer.from(`${path}\0`, "utf8"), KERNEL.RTLD_NOW | KERNEL.RTLD_NOLOAD),
      );
      if (handle === 0) throw new Error(`dlopen(${path}, RTLD_NOLOAD) failed: the library is not loaded`);
      this.handles.set(path, handle);
    }
    return handle;
  }
}

function tracedFunction<F extends (...args: never[]) => unknown>(
  fn: F,
  library: string,
  symbol: string,
  trace: CallTrace,
): F {
  return ((...args: Parameters<F>) => {
    trace(library, symbol);
    return fn(...args);
  }) as unknown as F;
}

/** `symbols` with every function reporting its calls to `trace`; `symbols` itself without a trace. */
export function traced<T extends object>(symbols: T, library: string, trace: CallTrace | undefined): T {
  if (trace === undefined) return symbols;
  const wrapped: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(symbols)) {
    wrapped[name] = tracedFunction(fn as (...args: never[]) => unknown, library, name, trace);
  }
  return wrapped as T;
}

/** The calls runtime-c.ts needs, from this system's C library (a memfd where the kernel has one). */
export function sourceFileCalls(system: DarwinSystem): SourceFileCalls {
  const { libc } = system;
  const memfdCreate = system.memfdCreate;
  return {
    memfdCreate: memfdCreate === undefined ? undefined : (name, flags) => memfdCreate(cString(name), flags),
    addSeals: system.addSeals,
    tempFile: {
      mkstemp: (template) => libc.mkstemp(template),
      open: (path, flags) => libc.open(path, flags),
      unlink: (path) => libc.unlink(path),
      fchmod: (fd, mode) => libc.fchmod(fd, mode),
    },
    write: (fd, bytes, length) => libc.write(fd, bytes, length),
    close: (fd) => libc.close(fd),
    lastError: (call) => new DarwinSysError(system, call, system.errno()),
  };
}

/** A failed C library call: which call, errno and its name, on this kernel's numbering. */
export class DarwinSysError extends Error {
  readonly syscall: string;
  readonly errno: number;
  readonly code: string;

  constructor(system: DarwinSystem, syscall: string, errno: number) {
    const code = errnoName(system.kernel, errno);
    super(`${syscall}: ${system.libc.strerror(errno) ?? "unknown error"} (${code})`);
    this.name = "DarwinSysError";
    this.syscall = syscall;
    this.errno = errno;
    this.code = code;
  }
}

/** "EAGAIN" for this kernel's EAGAIN; "errno N" for values softnet does not name. */
export function errnoName(kernel: KernelConstants, errno: number): string {
  for (const [name, value] of Object.entries(kernel.errno)) if (value === errno) return name;
  return `errno ${errno}`;
}

/** A pointer result as a number: bun:ffi types them Pointer | bigint | null; null is 0. */
export function address0(value: Pointer | bigint | null): number {
  return value === null ? 0 : Number(value);
}

/** A pointer result, or null. */
export function pointerOrNull(value: Pointer | bigint | null): Pointer | null {
  return value === null || value === 0 || value === 0n ? null : (Number(value) as Pointer);
}

/** A C string read from native memory (empty for a null pointer). */
export function readCString(address: number): string {
  return address === 0 ? "" : new CString(address as Pointer).toString();
}
