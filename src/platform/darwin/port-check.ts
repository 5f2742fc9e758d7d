/**
 * --expose on macOS: before vmnet starts, each external port is bound once on 0.0.0.0 (no
 * SO_REUSEADDR/SO_REUSEPORT), as on Linux (../port-hold.ts); a port that is in use on the Mac is
 * refused at start in one line, `softnet: cannot expose port 5432: it is in use on this host`,
 * and vmnet is never asked to forward it. No holder is named: the Linux side reads
 * /proc/net/tcp, which macOS does not have.
 *
 * Why it matters: vmnet's forward is a pf `rdr` rule on the Mac's egress interface (what the
 * author of upstream softnet's --expose saw in the pf ruleset, cirruslabs/tart pull request 990,
 * "port forwarding in vmnet works by just installing PF rules", e.g. `rdr on en0 inet proto tcp
 * from any to (en0:0) port ...`; Apple's vmnet reference gives declarations only). A redirect
 * rewrites the destination before any socket sees the connection, so a Mac service listening on
 * that port would silently stop receiving connections from the network.
 *
 * Why the socket is released right after the check instead of held, as Linux holds it: the only
 * source for the mechanism is that observation, not Apple's word, and it does not say whether
 * vmnet (or the system daemon that installs the rules for it) also binds the port itself. If it
 * did, a held socket would make every --expose fail on a real Mac, and no Mac is available here to
 * measure it. So on macOS two things stay unchecked: a Mac service that starts listening on the
 * port after softnet started, and another softnet's forward of the same port (which holds no
 * socket on macOS). Once a Mac run shows that vmnet's forward works with the port bound, holding is
 * a small change: keep the HeldPorts until exit, as runOnLinux does.
 *
 * Runs as root, before the privilege drop and before vmnet starts: nothing is sent, no file is
 * read or written, no program run. xnu has no SOCK_CLOEXEC; the socket is closed before softnet
 * could start anything.
 */
import type { ExposedPort } from "../../cli.ts";
import { type HeldPorts, holdExposedPorts, type PortBindCalls } from "../port-hold.ts";
import { DarwinSysError, type DarwinSystem } from "./system.ts";

/**
 * The shared bind check on the darwin module's C library. The errno numbers are those of the kernel
 * underneath (system.kernel); the struct sockaddr_in is always xnu's, because only libSystem's
 * bind() reads it: when the tests run this code on Linux, the vmnet double's bind()
 * (test/vmnet-double/xnu-socket.c) stands in for libSystem's and reads it as xnu does.
 */
export function darwinPortBindCalls(system: DarwinSystem): PortBindCalls {
  const { libc, kernel } = system;
  return {
    socket: (domain, type, protocol) => libc.socket(domain, type, protocol),
    bind: (fd, address, length) => libc.bind(fd, address, length),
    close: (fd) => libc.close(fd),
    lastError: (call) => new DarwinSysError(system, call, system.errno()),
    AF_INET: kernel.AF_INET,
    SOCK_STREAM: kernel.SOCK_STREAM,
    socketTypeFlags: kernel.SOCK_CLOEXEC,
    EADDRINUSE: kernel.errno.EADDRINUSE,
    sockaddrIn: "xnu",
  };
}

/** Throws, naming the first exposed port that is in use on this host; binds nothing that outlives the call. */
export function checkExposedPortsFree(system: DarwinSystem, ports: readonly ExposedPort[]): void {
  const bound: HeldPorts = holdExposedPorts(ports, darwinPortBindCalls(system));
  bound.release();
}
