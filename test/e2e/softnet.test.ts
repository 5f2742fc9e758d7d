// softnet on Linux, end to end: real guests (kernel network stacks in namespaces, relayed to a
// socketpair exactly as Tart hands a VM over), real dnsmasq, real attack tools, and tcpdump on the
// bridge as the witness. The harness self-test (harness.test.ts) shows that without softnet in the
// path everything blocked here would get through, so each of these tests can fail.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import {
  ADDRESSES,
  BANNER_PORT,
  BANNERS,
  closeFd,
  DNS_NAMES,
  datagramSocketPair,
  type Forwarder,
  type Guest,
  type GuestLease,
  softnet,
  Topology,
  waitFor,
} from "./lib/index.ts";

let topology: Topology;

beforeAll(async () => {
  topology = await Topology.create();
});

afterAll(async () => {
  await topology?.teardown();
});

/** A fresh guest behind its own softnet, with a lease. */
async function guestBehindSoftnet(
  args: string[] = [],
): Promise<{ guest: Guest; forwarder: Forwarder; lease: GuestLease }> {
  const guest = await topology.addGuest();
  const forwarder = await guest.attach(softnet(["--log-level", "debug", ...args]));
  const lease = await guest.dhcp();
  return { guest, forwarder, lease };
}

function softnetLog(forwarder: Forwarder): string {
  return forwarder.log;
}

/** softnet from the source tree in the host namespace, run to its end: exit code and stderr. */
async function softnetOnce(
  args: string[],
  stdin: number | "ignore",
): Promise<{ code: number; stderr: string }> {
  const child = Bun.spawn(
    ["ip", "netns", "exec", topology.hostNamespace, process.execPath, "src/main.ts", ...args],
    { stdin, stdout: "ignore", stderr: "pipe" },
  );
  const [stderr, code] = await Promise.all([new Response(child.stderr).text(), child.exited]);
  return { code, stderr };
}

/** softnet with a VM socket it never reads, for runs that must end before they forward anything. */
async function softnetRefused(args: string[]): Promise<{ code: number; stderr: string }> {
  const { vmEnd, hostEnd } = datagramSocketPair();
  try {
    return await softnetOnce(
      ["--vm-fd", "0", "--vm-mac-address", "02:00:00:00:00:5a", "--bridge", topology.bridge, ...args],
      hostEnd,
    );
  } finally {
    closeFd(vmEnd);
    closeFd(hostEnd);
  }
}

/** Waits until softnet says its forwards to the guest's address are in place. */
async function forwardsInstalled(forwarder: Forwarder, list: string, address: string): Promise<void> {
  await waitFor("the port forward to be installed", () =>
    forwarder.log.includes(`port forwards installed: TCP ${list} to ${address}`),
  ).catch((error: Error) => {
    throw new Error(`${error.message}\nsoftnet said:\n${forwarder.log}`);
  });
}

/** What a connection from the host itself to its bridge address on `port` reads. */
async function readFromHost(port: number): Promise<string> {
  return (await topology.hostExec(["nc", "-N", "-w", "2", ADDRESSES.gateway, String(port)], { stdin: "" }))
    .stdout;
}

/** The pids whose parent is `pid` (from /proc/<pid>/stat: pid (comm) state ppid ...). */
function childrenOf(pid: number): number[] {
  return readdirSync("/proc")
    .filter((name) => /^\d+$/.test(name))
    .filter((name) => {
      try {
        const stat = readFileSync(`/proc/${name}/stat`, "utf8");
        return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1] === String(pid);
      } catch {
        return false; // exited meanwhile
      }
    })
    .map(Number);
}

function commandOf(pid: number): string {
  return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
}

async function nftTables(): Promise<string> {
  return (await topology.hostExec(["nft", "list", "tables"])).stdout;
}

describe("1. a guest gets its lease through softnet and reaches only what it may", () => {
  let guest: Guest;
  let forwarder: Forwarder;
  let lease: GuestLease;
  let other: { guest: Guest; lease: GuestLease };

  beforeAll(async () => {
    ({ guest, forwarder, lease } = await guestBehindSoftnet());
    const second = await guestBehindSoftnet();
    other = { guest: second.guest, lease: second.lease };
  });

  test("the guest obtains a lease from dnsmasq, and softnet learns the same address", async () => {
    expect(lease.router).toBe(ADDRESSES.gateway);
    const server = topology.dhcpServerLeases().find((entry) => entry.mac === guest.mac);
    expect(server?.address).toBe(lease.address);
    await waitFor("softnet to log the lease", () =>
      softnetLog(forwarder).includes(`lease learned: ${lease.address}`),
    );
  });

  test("it reaches the gateway and the global test host (ping and TCP)", async () => {
    expect(await guest.ping(ADDRESSES.gateway)).toBe(true);
    expect(await guest.ping(ADDRESSES.globalHost)).toBe(true);
    const banner = await guest.tcpConnect(ADDRESSES.globalHost, BANNER_PORT);
    expect(banner.stdout).toContain(BANNERS.globalHost);
  });

  test("it cannot reach a private server", async () => {
    expect(await guest.ping(ADDRESSES.privateServer, { waitSeconds: 1 })).toBe(false);
    const banner = await guest.tcpConnect(ADDRESSES.privateServer, BANNER_PORT, { timeoutSeconds: 1 });
    expect(banner.stdout).not.toContain(BANNERS.privateServer);
  });

  test("it cannot reach the other guest, nor the other guest it", async () => {
    expect(await guest.ping(other.lease.address, { waitSeconds: 1 })).toBe(false);
    expect(await other.guest.ping(lease.address, { waitSeconds: 1 })).toBe(false);
  });

  test("softnet runs as nobody with no capabilities left, in every thread", async () => {
    const pid = forwarder.daemon.pid;
    const tasks = (await topology.hostExec(["ls", `/proc/${pid}/task`])).stdout.split("\n").filter(Boolean);
    expect(tasks.length).toBeGreaterThan(1);
    for (const task of tasks) {
      const status = readFileSync(`/proc/${pid}/task/${task}/status`, "utf8");
      const field = (name: string) => status.match(new RegExp(`^${name}:\\s*(.*)$`, "m"))?.[1]?.trim();
      expect({ task, uid: field("Uid") }).toEqual({ task, uid: "65534\t65534\t65534\t65534" });
      expect({ task, gid: field("Gid") }).toEqual({ task, gid: "65534\t65534\t65534\t65534" });
      // initgroups() gives nobody its own group (nogroup) and nothing else.
      expect({ task, groups: field("Groups") }).toEqual({ task, groups: "65534" });
      for (const set of ["CapEff", "CapPrm", "CapInh", "CapAmb"]) {
        expect({ task, set, value: field(set) }).toEqual({ task, set, value: "0000000000000000" });
      }
      // no_new_privs is per thread: set on the main thread, which is the one that spawns children.
      if (task === String(pid)) expect(field("NoNewPrivs")).toBe("1");
    }
  });

  test("2. DNS to the DHCP-provided servers passes, to another private server is dropped", async () => {
    const viaGateway = await guest.dnsQuery(ADDRESSES.gateway, DNS_NAMES.whoami);
    expect(viaGateway.answers).toEqual([ADDRESSES.gateway]);
    const viaSecond = await guest.dnsQuery(ADDRESSES.secondDnsServer, DNS_NAMES.whoami);
    expect(viaSecond.answers).toEqual([ADDRESSES.secondDnsServer]);
    const viaPrivate = await guest.dnsQuery(ADDRESSES.privateServer, DNS_NAMES.whoami);
    expect(viaPrivate.answers).toEqual([]);
  });

  test("it renews its lease through softnet (unicast to the gateway)", async () => {
    const renewed = await guest.renewLease();
    expect(renewed.address).toBe(lease.address);
  });
});

describe("3. --allow, --block and @host with real traffic", () => {
  test("--block takes a global host away", async () => {
    const { guest } = await guestBehindSoftnet(["--block", `${ADDRESSES.globalHost}/32`]);
    expect(await guest.ping(ADDRESSES.globalHost, { waitSeconds: 1 })).toBe(false);
    expect(await guest.ping(ADDRESSES.gateway)).toBe(true);
    await guest.stopAll();
  });

  test("--allow opens a private network", async () => {
    const { guest } = await guestBehindSoftnet(["--allow", ADDRESSES.privateSubnet]);
    expect((await guest.tcpConnect(ADDRESSES.privateServer, BANNER_PORT)).stdout).toContain(
      BANNERS.privateServer,
    );
    await guest.stopAll();
  });

  test("--block 0.0.0.0/0 --allow @host: only the host is reachable, and the lease still renews", async () => {
    const { guest, lease } = await guestBehindSoftnet(["--block", "0.0.0.0/0", "--allow", "@host"]);
    expect(await guest.ping(ADDRESSES.gateway)).toBe(true);
    expect(await guest.ping(ADDRESSES.globalHost, { waitSeconds: 1 })).toBe(false);
    expect((await guest.renewLease()).address).toBe(lease.address);
    await guest.stopAll();
  });

  test("--block @host cuts off the host but not the lease", async () => {
    const { guest, lease } = await guestBehindSoftnet(["--block", "@host"]);
    expect(await guest.ping(ADDRESSES.gateway, { waitSeconds: 1 })).toBe(false);
    expect(await guest.ping(ADDRESSES.globalHost)).toBe(true);
    expect((await guest.renewLease()).address).toBe(lease.address);
    await guest.stopAll();
  });

  test("--allow 0.0.0.0/0 on both sides lets two guests talk (isolation lifted)", async () => {
    const a = await guestBehindSoftnet(["--allow", "0.0.0.0/0"]);
    const b = await guestBehindSoftnet(["--allow", "0.0.0.0/0"]);
    expect(await a.guest.ping(b.lease.address)).toBe(true);
    const isolated = await topology.hostExec([
      "cat",
      `/sys/class/net/${a.forwarder.bridgePort}/brport/isolated`,
    ]);
    expect(isolated.stdout).toBe("0\n");
    await a.guest.stopAll();
    await b.guest.stopAll();
  });
});

describe("4. a hostile guest: not one forged frame reaches the bridge", () => {
  let attacker: Guest;
  let attackerLease: GuestLease;
  let victim: { guest: Guest; lease: GuestLease };

  beforeAll(async () => {
    const first = await guestBehindSoftnet(["--allow", "0.0.0.0/0"]);
    victim = { guest: first.guest, lease: first.lease };
    ({ guest: attacker, lease: attackerLease } = await guestBehindSoftnet());
    // The host learns both guests' MACs.
    expect(await victim.guest.ping(ADDRESSES.gateway)).toBe(true);
    expect(await attacker.ping(ADDRESSES.gateway)).toBe(true);
  });

  test("arpspoof for the gateway and for the other guest", async () => {
    const victimBefore = await topology.hostNeighbour(victim.lease.address);
    expect(victimBefore?.mac).toBe(victim.guest.mac);
    const capture = await topology.startCapture();
    // Tell the host that the victim's address is at the attacker's MAC, and the victim that the
    // gateway is.
    const toHost = attacker.spawn("arpspoof host", [
      "arpspoof",
      "-i",
      "eth0",
      "-t",
      ADDRESSES.gateway,
      victim.lease.address,
    ]);
    const toVictim = attacker.spawn("arpspoof victim", [
      "arpspoof",
      "-i",
      "eth0",
      "-t",
      victim.lease.address,
      ADDRESSES.gateway,
    ]);
    await Bun.sleep(3000); // arpspoof sends one reply every 2 seconds
    await toHost.stop("SIGKILL");
    await toVictim.stop("SIGKILL");
    await capture.stop();
    expect(toHost.log).toMatch(/is-at/); // the tool did send
    const forged = await capture.count(
      `ether src ${attacker.mac} and arp and not arp src host ${attackerLease.address}`,
    );
    expect(forged).toBe(0);
    expect((await topology.hostNeighbour(victim.lease.address))?.mac).toBe(victim.guest.mac);
  });

  test("MAC flooding (macof): no foreign source MAC crosses, the bridge learns nothing new", async () => {
    const fdbBefore = (
      await topology.hostExec(["bridge", "fdb", "show", "br", topology.bridge])
    ).stdout.split("\n").length;
    const capture = await topology.startCapture();
    const flood = attacker.spawn("macof", ["macof", "-i", "eth0", "-n", "2000"]);
    await flood.exited;
    await capture.stop();
    expect(
      await capture.count(
        `not ether src ${attacker.mac} and not ether src ${victim.guest.mac} and not ether src ${ADDRESSES.gatewayMac}`,
      ),
    ).toBe(0);
    const fdbAfter = (await topology.hostExec(["bridge", "fdb", "show", "br", topology.bridge])).stdout.split(
      "\n",
    ).length;
    expect(fdbAfter).toBeLessThan(fdbBefore + 5);
  });

  test("IP source spoofing (hping3): nothing with a forged source crosses", async () => {
    const capture = await topology.startCapture();
    const spoofed = await attacker.exec(
      ["hping3", "-c", "20", "-i", "u10000", "-S", "-p", "80", "-a", "192.168.64.200", ADDRESSES.globalHost],
      { timeoutMs: 10_000 },
    );
    const random = await attacker.exec(
      ["hping3", "-c", "20", "-i", "u10000", "--rand-source", "-S", "-p", "80", ADDRESSES.globalHost],
      {
        timeoutMs: 10_000,
      },
    );
    // A control: the attacker's own address does get through, so the capture works.
    const honest = await attacker.exec(
      ["hping3", "-c", "3", "-i", "u10000", "-S", "-p", "80", ADDRESSES.globalHost],
      {
        timeoutMs: 10_000,
      },
    );
    await capture.stop();
    for (const run of [spoofed, random, honest]) expect(run.stdout + run.stderr).toContain("HPING");
    expect(
      await capture.count(`ether src ${attacker.mac} and ip and not src host ${attackerLease.address}`),
    ).toBe(0);
    expect(
      await capture.count(
        `ether src ${attacker.mac} and tcp dst port 80 and src host ${attackerLease.address}`,
      ),
    ).toBeGreaterThan(0);
  });
});

describe("5. --expose forwards host TCP ports to the guest", () => {
  test("a connection to the host reaches the guest's server; after exit the rule is gone", async () => {
    const { guest, forwarder, lease } = await guestBehindSoftnet(["--expose", "2222:22"]);
    await guest.startTcpServer(22, "hello-from-guest-ssh");
    await waitFor("the port forward to be installed", () =>
      forwarder.log.includes(`port forwards installed: TCP 2222→22 to ${lease.address}`),
    ).catch((error: Error) => {
      throw new Error(`${error.message}\nsoftnet said:\n${forwarder.log}`);
    });
    // From the host itself, to its bridge address (the output hook).
    const fromHost = await topology.hostExec(["nc", "-N", "-w", "2", ADDRESSES.gateway, "2222"], {
      stdin: "",
    });
    expect(fromHost.stdout).toContain("hello-from-guest-ssh");
    // From another machine (the "internet" namespace) to the host's transit address (prerouting).
    const fromOutside = await topology.exec(
      topology.internetNamespace,
      ["nc", "-N", "-w", "2", ADDRESSES.transitHost, "2222"],
      {
        stdin: "",
      },
    );
    expect(fromOutside.stdout).toContain("hello-from-guest-ssh");
    // softnet kept exactly CAP_NET_ADMIN for nft, nothing else.
    const status = readFileSync(`/proc/${forwarder.daemon.pid}/status`, "utf8");
    expect(status.match(/^CapEff:\s*(\S+)/m)?.[1]).toBe("0000000000001000");
    expect(await nftTables()).toContain(`softnet_${forwarder.bridgePort}`);
    expect(await forwarder.stop("SIGINT")).toBe(0);
    expect(await nftTables()).not.toContain("softnet_");
    const after = await topology.hostExec(["nc", "-N", "-w", "1", ADDRESSES.gateway, "2222"], { stdin: "" });
    expect(after.stdout).not.toContain("hello-from-guest-ssh");
    await guest.stopAll();
  });

  test("a port a host service listens on is refused with one line naming the port and its holder", async () => {
    // root's service on every address (PostgreSQL's port): a forward would divert it to a VM.
    const service = await topology.startTcpServer(topology.hostNamespace, "0.0.0.0", 5432, "host-postgres");
    try {
      const result = await softnetRefused(["--expose", "5432:22"]);
      expect(result.code).toBe(1);
      expect(result.stderr).toBe(
        "softnet: cannot expose port 5432: it is in use on this host (held by a listening socket of root (uid 0))\n",
      );
      expect(await nftTables()).not.toContain("softnet_");
      // The service still gets its connections.
      expect(await readFromHost(5432)).toContain("host-postgres");
    } finally {
      await service.stop("SIGTERM");
    }
  });

  test("while a softnet forwards a port it holds it: a second softnet is refused, a later listener gets EADDRINUSE", async () => {
    const { guest, forwarder, lease } = await guestBehindSoftnet(["--expose", "2224:22"]);
    await guest.startTcpServer(22, "hello-from-the-first-vm");
    await forwardsInstalled(forwarder, "2224→22", lease.address);
    const second = await softnetRefused(["--expose", "2224:22"]);
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(
      /^softnet: cannot expose port 2224: it is in use on this host \(held by [^\n]*\)\n$/,
    );
    // A service started later, on any IPv4 address, cannot take the port from the forward.
    for (const listen of [
      ["-4", "-l", "2224"],
      ["-l", "127.0.0.1", "2224"],
      ["-l", ADDRESSES.gateway, "2224"],
    ]) {
      const later = await topology.hostExec(["nc", ...listen], { timeoutMs: 3_000 });
      expect({ listen, code: later.code, stderr: later.stderr }).toMatchObject({
        code: 1,
        stderr: expect.stringContaining("Address already in use"),
      });
    }
    expect(await readFromHost(2224)).toContain("hello-from-the-first-vm");
    expect(await forwarder.stop("SIGINT")).toBe(0);
    await guest.stopAll();
  });

  test("SIGKILL leaves no forward behind: the table goes with softnet and the port is the host's again", async () => {
    const { guest, forwarder, lease } = await guestBehindSoftnet(["--expose", "2225:22"]);
    await guest.startTcpServer(22, "hello-from-the-killed-vm");
    await forwardsInstalled(forwarder, "2225→22", lease.address);
    expect(await readFromHost(2225)).toContain("hello-from-the-killed-vm");
    const table = `softnet_${forwarder.bridgePort}`;
    expect(await nftTables()).toContain(table);
    await forwarder.stop("SIGKILL");
    // The kernel deletes the owned table when its nft session ends, which softnet's death ends:
    // no later softnet has to start for it.
    await waitFor(`${table} to be deleted`, async () => !(await nftTables()).includes(table));
    const service = await topology.startTcpServer(topology.hostNamespace, "0.0.0.0", 2225, "host-after-kill");
    try {
      expect(await readFromHost(2225)).toContain("host-after-kill");
      const fromOutside = await topology.exec(
        topology.internetNamespace,
        ["nc", "-N", "-w", "2", ADDRESSES.transitHost, "2225"],
        { stdin: "" },
      );
      expect(fromOutside.stdout).toContain("host-after-kill");
    } finally {
      await service.stop("SIGTERM");
      await guest.stopAll();
    }
  });

  test("the forwards come back when their nft session is killed behind softnet's back", async () => {
    const { guest, forwarder, lease } = await guestBehindSoftnet(["--expose", "2226:22"]);
    await guest.startTcpServer(22, "hello-again");
    await forwardsInstalled(forwarder, "2226→22", lease.address);
    const nft = childrenOf(forwarder.daemon.pid).filter((pid) => commandOf(pid) === "nft");
    expect(nft).toHaveLength(1);
    process.kill(nft[0] as number, "SIGKILL");
    await waitFor("the forwards to be installed again", () =>
      forwarder.log.includes("vanished (their owner ended); installing them again"),
    );
    await waitFor("the forward to reach the guest again", async () =>
      (await readFromHost(2226)).includes("hello-again"),
    );
    expect(await forwarder.stop("SIGINT")).toBe(0);
    expect(await nftTables()).not.toContain(`softnet_${forwarder.bridgePort}`);
    await guest.stopAll();
  });
});

describe("6. lifecycle", () => {
  test("SIGINT exits 0 and removes the TAP port", async () => {
    const { guest, forwarder } = await guestBehindSoftnet(["--expose", "2223:22"]);
    const port = forwarder.bridgePort;
    expect(await forwarder.stop("SIGINT")).toBe(0);
    expect(existsSync(`/sys/class/net/${port}`)).toBe(false);
    expect((await topology.hostExec(["ip", "link", "show", port])).code).not.toBe(0);
    expect(await nftTables()).not.toContain(`softnet_${port}`);
    expect(forwarder.log).toContain("stopped (SIGINT)");
    await guest.stopAll();
  });

  for (const signal of ["SIGHUP", "SIGUSR1", "SIGQUIT"] as const) {
    test(`${signal} stops softnet cleanly too: exit 0, its forwards and TAP port removed`, async () => {
      const { guest, forwarder, lease } = await guestBehindSoftnet(["--expose", "2227:22"]);
      await forwardsInstalled(forwarder, "2227→22", lease.address);
      const port = forwarder.bridgePort;
      expect(await forwarder.stop(signal)).toBe(0);
      expect(forwarder.log).toContain(`stopped (${signal})`);
      expect(forwarder.log).toContain(`port forwards to ${lease.address} removed`);
      expect(await nftTables()).not.toContain(`softnet_${port}`);
      expect((await topology.hostExec(["ip", "link", "show", port])).code).not.toBe(0);
      await guest.stopAll();
    });
  }

  test("SIGTERM exits 0 too", async () => {
    const { guest, forwarder } = await guestBehindSoftnet();
    expect(await forwarder.stop("SIGTERM")).toBe(0);
    await guest.stopAll();
  });

  test("closing the VM end exits 0 and removes the TAP port", async () => {
    const { guest, forwarder } = await guestBehindSoftnet();
    const port = forwarder.bridgePort;
    await guest.closeVmEnd();
    expect(await forwarder.exited).toBe(0);
    expect(forwarder.log).toContain("the VM closed its end");
    expect((await topology.hostExec(["ip", "link", "show", port])).code).not.toBe(0);
    await guest.stopAll();
  });

  test("a bridge that does not exist is one clear line and exit code 1", async () => {
    const { vmEnd, hostEnd } = datagramSocketPair();
    try {
      const result = await softnetOnce(
        ["--vm-fd", "0", "--vm-mac-address", "02:00:00:00:00:01", "--bridge", "nosuchbr0"],
        hostEnd,
      );
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/^softnet: [^\n]*nosuchbr0[^\n]*\n$/);
    } finally {
      closeFd(vmEnd);
      closeFd(hostEnd);
    }
  });

  test("a --vm-fd that is not a datagram socket is one clear line and exit code 1", async () => {
    const result = await softnetOnce(
      ["--vm-fd", "0", "--vm-mac-address", "02:00:00:00:00:01", "--bridge", topology.bridge],
      "ignore",
    );
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^softnet: [^\n]*--vm-fd 0[^\n]*\n$/);
  });

  test("a missing --bridge on Linux is a usage error (exit code 2)", async () => {
    const result = await softnetOnce(["--vm-fd", "0", "--vm-mac-address", "02:00:00:00:00:01"], "ignore");
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("--bridge is required on Linux");
  });
});
