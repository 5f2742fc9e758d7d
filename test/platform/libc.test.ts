// The libc bindings' error plumbing: errno is read right after a failing call and named.

import { ptr } from "bun:ffi";
import { expect, test } from "bun:test";
import { stableAddress } from "../../src/platform/ffi-helpers.ts";
import { Errno, errnoName, lastErrno, lastSysError, libc, SysError } from "../../src/platform/linux/libc.ts";

test("errno of a failed call is read and named", () => {
  expect(libc.close(-1)).toBe(-1);
  const error = lastSysError("close");
  expect(error).toBeInstanceOf(SysError);
  expect(error.errno).toBe(Errno.EBADF);
  expect(error.code).toBe("EBADF");
  expect(error.syscall).toBe("close");
  expect(error.message).toBe("close: Bad file descriptor (EBADF)");
});

test("errno names: known values by name, others by number", () => {
  expect(errnoName(Errno.ENOBUFS)).toBe("ENOBUFS");
  expect(errnoName(Errno.ECONNREFUSED)).toBe("ECONNREFUSED");
  expect(errnoName(4095)).toBe("errno 4095");
  expect(new SysError("open", Errno.ENOENT).message).toBe("open: No such file or directory (ENOENT)");
});

test("open takes a JavaScript string path", () => {
  expect(libc.open("/nonexistent/softnet", 0)).toBe(-1);
  expect(lastErrno()).toBe(Errno.ENOENT);
});

test("stableAddress: a small typed array does not move after its address was taken", () => {
  const small = new Uint8Array(64);
  const address = stableAddress(small);
  void new DataView(small.buffer);
  expect(ptr(small) as number).toBe(address);
});

test("the real uid and gid are readable", () => {
  expect(libc.getuid()).toBe(process.getuid!());
  expect(libc.getegid()).toBe(process.getegid!());
});
