// The VM socket's peer watch: Linux gives no readiness event when the other end of a datagram
// socket pair closes, so softnet asks unix_diag. Same namespace here; the e2e tests cover a VM
// socket created in another network namespace than softnet's.
import { expect, test } from "bun:test";
import { AF_UNIX, libc, SOCK_CLOEXEC, SOCK_DGRAM } from "../../src/platform/linux/libc.ts";
import { UnixPeerWatch } from "../../src/platform/linux/peer-watch.ts";

function socketPair(): [number, number] {
  const fds = new Int32Array(2);
  expect(libc.socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, fds)).toBe(0);
  return [fds[0], fds[1]];
}

test("reports the peer alive, then gone once the other end is closed", () => {
  const [ours, theirs] = socketPair();
  const watch = UnixPeerWatch.open(ours);
  if (typeof watch === "string") throw new Error(watch);
  try {
    expect(watch.peerState()).toBe("alive");
    expect(watch.peerState()).toBe("alive");
    libc.close(theirs);
    expect(watch.peerState()).toBe("gone");
  } finally {
    watch.close();
    libc.close(ours);
  }
});

test("a closed peer is seen although nothing was ever sent (the case Linux does not signal)", () => {
  const [ours, theirs] = socketPair();
  const other = socketPair();
  const watch = UnixPeerWatch.open(ours);
  const unrelated = UnixPeerWatch.open(other[0]);
  if (typeof watch === "string" || typeof unrelated === "string") throw new Error("no watch");
  libc.close(theirs);
  // Only the pair whose end closed is reported gone.
  expect(watch.peerState()).toBe("gone");
  expect(unrelated.peerState()).toBe("alive");
  for (const fd of [ours, ...other]) libc.close(fd);
  watch.close();
  unrelated.close();
});

test("a file descriptor that is not a socket gets a reason, not a watch", () => {
  const result = UnixPeerWatch.open(1 + 1000); // not open
  expect(typeof result).toBe("string");
});
