/**
 * Readiness notifications for file descriptors, delivered on the JavaScript thread without polling.
 *
 * Bun's event loop cannot watch an arbitrary fd (a TAP device, a socket written by native code), so
 * a small native thread (compiled by TinyCC) waits for readiness on one-shot registrations and
 * posts each ready registration to the JavaScript thread through a threadsafe JSCallback. The
 * handler drains its fd, and the reactor re-arms the registration only when the handler says it is
 * done, so:
 * - an idle softnet sleeps in the kernel (no timers, no busy polling: ~0 % CPU);
 * - a busy link is drained in bounded slices (the handler's budget) with setImmediate between
 *   slices, so timers, signals and the other link get their turn;
 * - the native thread never touches frames or JavaScript values.
 *
 * Two native backends implement the same C interface: linux/epoll-reactor (epoll, EPOLLONESHOT)
 * and darwin/poll-reactor (poll(2), which macOS and Linux share, so the macOS path is tested here).
 * The events masks agree: EPOLLIN = POLLIN = 1, and ERR/HUP have the same values on both.
 */
import { FFIType, JSCallback, type Pointer } from "bun:ffi";
import { SoftnetError } from "../errors.ts";

export const EPOLLIN = 0x001;
export const EPOLLOUT = 0x004;
export const EPOLLERR = 0x008;
export const EPOLLHUP = 0x010;

/**
 * Runs on the JavaScript thread when the watched fd is ready; `events` is the epoll mask (EPOLLIN,
 * EPOLLERR, ...; 0 when the reactor resumes a handler that returned true).
 * Return false once the fd is drained (a read found nothing): the registration is re-armed.
 * Return true when the handler stopped early because its budget ran out: it is called again after
 * a setImmediate, and the registration stays disarmed until it returns false.
 */
export type ReadyHandler = (events: number) => boolean;

const { i32, u32, ptr } = FFIType;

/** The C interface every native reactor implements (linux/epoll-reactor.c, darwin/poll-reactor.c). */
export const NATIVE_REACTOR_SYMBOLS = {
  // void *reactor_create(const struct libc_functions *libc, ready_callback on_ready, int *error);
  reactor_create: { args: [ptr, ptr, ptr], returns: ptr },
  // int reactor_add(struct reactor *reactor, int fd, uint32_t events, int index);
  reactor_add: { args: [ptr, i32, u32, i32], returns: i32 },
  // int reactor_rearm(struct reactor *reactor, int fd, uint32_t events, int index);
  reactor_rearm: { args: [ptr, i32, u32, i32], returns: i32 },
  // int reactor_remove(struct reactor *reactor, int fd);
  reactor_remove: { args: [ptr, i32], returns: i32 },
  // int reactor_start(struct reactor *reactor);
  reactor_start: { args: [ptr], returns: i32 },
  // void reactor_destroy(struct reactor *reactor);
  reactor_destroy: { args: [ptr], returns: FFIType.void },
} as const;

export type NativeReactor = ReturnType<typeof import("bun:ffi").cc<typeof NATIVE_REACTOR_SYMBOLS>>["symbols"];

/**
 * A compiled native reactor and what it needs: its functions, the table of C library function
 * pointers reactor_create() takes, and how to explain a negative errno it returns.
 */
export interface ReactorBackend {
  readonly name: string;
  readonly native: NativeReactor;
  readonly libcFunctions: BigUint64Array;
  sysError(call: string, negativeErrno: number): Error;
  /** A hint for an errno from reactor_add, if there is a useful one. */
  watchHint?(negativeErrno: number): string | undefined;
}

interface Registration {
  readonly index: number;
  readonly fd: number;
  readonly events: number;
  readonly handler: ReadyHandler;
  /** Preallocated continuation for setImmediate, so a busy link allocates no closure per slice. */
  readonly resume: () => void;
  active: boolean;
}

/** One native thread watching any number of fds; see the module comment. */
export class Reactor {
  private native: Pointer | null;
  private readonly callback: JSCallback;
  private readonly registrations: Registration[] = [];
  /** fds unwatched on this reactor: they may not be watched on it again (see unwatch). */
  private readonly unwatchedFds = new Set<number>();
  /** A reactor with watched fds keeps the process alive, like an open socket would. */
  private keepAlive: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly backend: ReactorBackend) {
    const compiled = backend.native;
    this.callback = new JSCallback((index: number, events: number) => this.dispatch(index, events), {
      args: [i32, u32],
      returns: FFIType.void,
      threadsafe: true,
    });
    const error = new Int32Array(1);
    const handle = compiled.reactor_create(backend.libcFunctions, this.callback.ptr, error);
    if (handle === null) {
      this.callback.close();
      throw new SoftnetError(`cannot start the readiness reactor (${backend.name})`, {
        cause: backend.sysError("reactor_create", error[0]!),
        hint: "too many open files? (ulimit -n)",
      });
    }
    this.native = handle as Pointer;
    const started = compiled.reactor_start(this.native);
    if (started < 0) {
      compiled.reactor_destroy(this.native);
      this.native = null;
      this.callback.close();
      throw new SoftnetError("cannot start the readiness reactor thread", {
        cause: backend.sysError("pthread_create", started),
      });
    }
  }

  /**
   * Starts watching `fd` for `events` (EPOLLIN by default; EPOLLERR and EPOLLHUP are always
   * reported). Returns the registration index for unwatch(). The handler is first called as soon
   * as the fd is ready, which may be right away.
   */
  watch(fd: number, handler: ReadyHandler, events: number = EPOLLIN): number {
    const native = this.requireOpen();
    if (this.unwatchedFds.has(fd)) {
      throw new SoftnetError(`cannot watch fd ${fd} again on this readiness reactor`, {
        hint: "an fd number unwatched on a reactor is not watched on it again; use a new reactor",
      });
    }
    const index = this.registrations.length;
    const registration: Registration = {
      index,
      fd,
      events,
      handler,
      active: true,
      resume: () => {
        if (registration.active && this.native !== null) this.run(registration, 0);
      },
    };
    const result = this.backend.native.reactor_add(native, fd, events, index);
    if (result < 0) {
      throw new SoftnetError(`cannot watch fd ${fd} for readiness`, {
        cause: this.backend.sysError("reactor_add", result),
        hint: this.backend.watchHint?.(result),
      });
    }
    this.registrations.push(registration);
    this.keepAlive ??= setInterval(() => {}, 2 ** 30);
    return index;
  }

  /**
   * Stops watching; call it before closing the fd. Calls already queued for it are ignored.
   * The fd number may not be watched again on this reactor: the epoll thread takes a reported fd
   * out of its set by number (epoll-reactor.c), so a report in flight for the old registration
   * could take a new one for the same number out with it, and that one would never fire.
   */
  unwatch(index: number): void {
    const registration = this.registrations[index];
    if (registration === undefined || !registration.active) return;
    registration.active = false;
    this.unwatchedFds.add(registration.fd);
    if (this.native !== null) this.backend.native.reactor_remove(this.native, registration.fd);
    if (this.registrations.every((r) => !r.active)) this.releaseKeepAlive();
  }

  /**
   * Stops the native thread (it is woken through an eventfd and joined) and releases everything.
   * Handlers are never called after close() returns. Idempotent.
   */
  close(): void {
    if (this.native === null) return;
    for (const registration of this.registrations) registration.active = false;
    this.backend.native.reactor_destroy(this.native);
    this.native = null;
    this.releaseKeepAlive();
    // The thread is joined, so no new calls can be queued; calls it queued before stopping may still
    // be waiting in the event loop's task queue and hold the callback. Close it one macrotask later,
    // after the loop has drained them (each returns at once: the reactor is closed).
    const callback = this.callback;
    setTimeout(() => callback.close(), 0).unref();
  }

  get closed(): boolean {
    return this.native === null;
  }

  private dispatch(index: number, events: number): void {
    const registration = this.registrations[index];
    if (registration === undefined || !registration.active || this.native === null) return;
    this.run(registration, events);
  }

  private run(registration: Registration, events: number): void {
    // If the handler throws, the registration stays disarmed and the exception propagates to the
    // process (an uncaught exception): a broken link must not be silently retried in a loop.
    if (registration.handler(events)) {
      setImmediate(registration.resume);
      return;
    }
    // The handler may have unwatched its fd or closed the whole reactor.
    if (!registration.active || this.native === null) return;
    const result = this.backend.native.reactor_rearm(
      this.native,
      registration.fd,
      registration.events,
      registration.index,
    );
    if (result < 0) {
      registration.active = false;
      throw new SoftnetError(`cannot re-arm readiness for fd ${registration.fd}`, {
        cause: this.backend.sysError("reactor_rearm", result),
        hint: "was the fd closed without unwatch()?",
      });
    }
  }

  private requireOpen(): Pointer {
    if (this.native === null) throw new SoftnetError("the readiness reactor is closed");
    return this.native;
  }

  private releaseKeepAlive(): void {
    if (this.keepAlive !== undefined) clearInterval(this.keepAlive);
    this.keepAlive = undefined;
  }
}
