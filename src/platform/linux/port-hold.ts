/**
 * --expose on Linux, part one: the host ports a softnet forwards are held by it for as long as it
 * runs, the way Docker's docker-proxy holds a published port. The DNAT rules (nftables.ts) take a
 * port on every local IPv4 address; without a hold, a forward would silently divert a service
 * that already listens there (root's PostgreSQL on 5432, another user's forward on 2222), and a
 * service started later would bind the port and never see a connection.
 *
 * Each exposed port gets one TCP socket bound to 0.0.0.0:port, without SO_REUSEADDR or
 * SO_REUSEPORT, and never listening (the bind itself is shared with macOS, ../port-hold.ts; this
 * module supplies glibc, names a refused port's holder, and keeps the sockets). Linux treats every socket in a port's bind bucket as taking
 * the port, whatever its state: a bind of the same port conflicts unless both sockets set
 * SO_REUSEADDR and the bound one is not listening, or both set SO_REUSEPORT under the same uid
 * (net/ipv4/inet_connection_sock.c, inet_csk_bind_conflict and inet_bind_conflict); a wildcard
 * address overlaps every specific one, and an IPv6 socket on :: that is not IPV6_V6ONLY overlaps
 * IPv4 too (inet_rcv_saddr_equal, ipv6_rcv_saddr_equal). So:
 * - softnet's bind fails with EADDRINUSE if anything holds the port on any IPv4 address, or on ::
 *   dual-stack: the forward is refused before anything is set up;
 * - while softnet runs, any later bind of the port for IPv4 (a listener on 0.0.0.0, 127.0.0.1 or
 *   the bridge address, a dual-stack ::, another softnet) fails with EADDRINUSE instead of being
 *   silently bypassed.
 * An IPv6-only socket on the same port is neither refused nor blocked: the forward is `table ip`,
 * IPv4 only, so IPv6 connections never reach the VM and nothing is diverted.
 * Measured on Linux 6.18 (bound-but-not-listening hold against SO_REUSEADDR+SO_REUSEPORT
 * listeners on 0.0.0.0, 127.0.0.1 and dual-stack ::: EADDRINUSE both ways; IPv6-only: no conflict).
 *
 * Not listening is deliberate: connections the DNAT does not take (to 127.0.0.0/8, see
 * nftables.ts) are refused at once instead of completing a handshake into a backlog no one reads.
 *
 * The sockets are bound as root, before the privilege drop and before the TAP exists: a port
 * below 1024 needs CAP_NET_BIND_SERVICE (only root callers may expose those, and they drop to
 * nobody), and a refused port must leave nothing behind. It is part of opening the host link for
 * --expose: no packet is sent, no file written, no program run. SOCK_CLOEXEC keeps them from nft.
 */
import { CString, type Pointer, read } from "bun:ffi";
import { readFileSync } from "node:fs";
import type { ExposedPort } from "../../cli.ts";
import { holdExposedPorts as bindExposedPorts, type HeldPorts, type PortBindCalls } from "../port-hold.ts";
import { AF_INET, Errno, lastSysError, libc, SOCK_CLOEXEC, SOCK_STREAM } from "./libc.ts";

/** The bind check of ../port-hold.ts on glibc, naming a refused port's holder from /proc/net/tcp. */
export const linuxPortBindCalls: PortBindCalls = {
  socket: (domain, type, protocol) => libc.socket(domain, type, protocol),
  bind: (fd, address, length) => libc.bind(fd, address, length),
  close: (fd) => libc.close(fd),
  lastError: lastSysError,
  AF_INET,
  SOCK_STREAM,
  socketTypeFlags: SOCK_CLOEXEC,
  EADDRINUSE: Errno.EADDRINUSE,
  sockaddrIn: "linux",
  describeHolder,
};

/** Holds every exposed host port until release(), or throws naming the first one that is taken (and its holder). */
export function holdExposedPorts(ports: readonly ExposedPort[]): HeldPorts {
  return bindExposedPorts(ports, linuxPortBindCalls);
}

/** One TCP socket from /proc/net/tcp or tcp6 that uses a local port. */
export interface PortUser {
  /** TCP state as the kernel numbers it (include/net/tcp_states.h): 10 = TCP_LISTEN. */
  state: number;
  uid: number;
}

const TCP_LISTEN = 10;

/**
 * The sockets using `port` locally in a /proc/net/tcp or /proc/net/tcp6 table. Columns (see
 * net/ipv4/tcp_ipv4.c get_tcp4_sock, net/ipv6/tcp_ipv6.c get_tcp6_sock): sl, local_address as
 * HEXADDR:HEXPORT, rem_address, st (hex), tx_queue:rx_queue, tr:tm->when, retrnsmt, uid, ...
 * A line that does not look like that is skipped.
 */
export function portUsersIn(table: string, port: number): PortUser[] {
  const users: PortUser[] = [];
  for (const line of table.split("\n")) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 8) continue;
    const local = /^[0-9A-Fa-f]+:([0-9A-Fa-f]{4})$/.exec(fields[1] ?? "");
    if (local === null || Number.parseInt(local[1] ?? "", 16) !== port) continue;
    const state = Number.parseInt(fields[3] ?? "", 16);
    const uid = Number(fields[7]);
    if (!Number.isInteger(state) || !Number.isInteger(uid) || uid < 0) continue;
    users.push({ state, uid });
  }
  return users;
}

/** "held by a listening socket of root (uid 0)", or what can be said when the kernel lists none. */
export function describeHolderFrom(users: readonly PortUser[], nameOf: (uid: number) => string | undefined) {
  const holder = users.find((user) => user.state === TCP_LISTEN) ?? users[0];
  if (holder === undefined) {
    // /proc/net/tcp lists listening and connected sockets, not ones that are only bound (which is
    // how another softnet holds the ports it forwards).
    return "held by a socket that is bound but not listening, as another softnet's --expose holds its port";
  }
  const name = nameOf(holder.uid);
  const owner = name === undefined ? `uid ${holder.uid}` : `${name} (uid ${holder.uid})`;
  return `held by a ${holder.state === TCP_LISTEN ? "listening " : ""}socket of ${owner}`;
}

function describeHolder(port: number): string {
  const users: PortUser[] = [];
  for (const path of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    try {
      // Kernel-generated, of this network namespace, readable by everyone; only completes the message.
      users.push(...portUsersIn(readFileSync(path, "latin1"), port));
    } catch {
      // Without procfs the refusal still names the port.
    }
  }
  return describeHolderFrom(users, userName);
}

// struct passwd { char *pw_name; ... } (<pwd.h>): the name is the first member.
function userName(uid: number): string | undefined {
  const entry = libc.getpwuid(uid) as Pointer | null;
  if (entry === null) return undefined;
  const name = read.ptr(entry, 0) as Pointer | 0;
  return name === 0 ? undefined : new CString(name).toString();
}
