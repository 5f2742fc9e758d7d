// Naming who holds a port that --expose cannot have: read from the kernel's /proc/net/tcp tables,
// whose columns are fixed (net/ipv4/tcp_ipv4.c get_tcp4_sock); a line that does not parse is skipped.
// And the address the port check binds, in each C library's struct sockaddr_in.
import { describe, expect, test } from "bun:test";
import { DARWIN_KERNEL, LINUX_KERNEL } from "../../src/platform/darwin/system.ts";
import { describeHolderFrom, portUsersIn } from "../../src/platform/linux/port-hold.ts";
import { ipv4AnyAddress } from "../../src/platform/port-hold.ts";

const TCP_TABLE = [
  "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
  "   0: 00000000:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0",
  "   1: 0100007F:8AE2 0100007F:1538 01 00000000:00000000 00:00000000 00000000  1001        0 4243 1 0000000000000000 20 4 30 10 -1",
  "   2: 0100007F:1538 0100007F:8AE2 01 00000000:00000000 00:00000000 00000000     0        0 4244 1 0000000000000000 20 4 30 10 -1",
  "   3: garbage",
  "",
].join("\n");

describe("who holds a host port", () => {
  test("the sockets using a local port are found by port, with their state and owner", () => {
    expect(portUsersIn(TCP_TABLE, 5432)).toEqual([
      { state: 10, uid: 0 },
      { state: 1, uid: 0 },
    ]);
    expect(portUsersIn(TCP_TABLE, 35554)).toEqual([{ state: 1, uid: 1001 }]);
    expect(portUsersIn(TCP_TABLE, 2222)).toEqual([]);
  });

  test("a listener is named first, by user name and uid", () => {
    const names = (uid: number) => (uid === 0 ? "root" : undefined);
    expect(describeHolderFrom(portUsersIn(TCP_TABLE, 5432), names)).toBe(
      "held by a listening socket of root (uid 0)",
    );
    expect(describeHolderFrom(portUsersIn(TCP_TABLE, 35554), names)).toBe("held by a socket of uid 1001");
  });

  test("a port the kernel lists no socket for is held by a bound socket, as softnet holds its own", () => {
    expect(describeHolderFrom([], () => undefined)).toBe(
      "held by a socket that is bound but not listening, as another softnet's --expose holds its port",
    );
  });
});

describe("the address the port check binds: 0.0.0.0:5432 (0x1538)", () => {
  test("macOS: xnu's struct sockaddr_in, sin_len 16 then an 8-bit sin_family (bsd/netinet/in.h)", () => {
    expect([...ipv4AnyAddress(5432, "xnu", DARWIN_KERNEL.AF_INET)]).toEqual([
      16, 2, 0x15, 0x38, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
  });

  test("Linux: a 16-bit sin_family in host order, little-endian (include/uapi/linux/in.h)", () => {
    expect([...ipv4AnyAddress(5432, "linux", LINUX_KERNEL.AF_INET)]).toEqual([
      2, 0, 0x15, 0x38, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
  });
});
