// A VM holds at most one lease and never one the DHCP server associates with another client,
// whatever it puts in option 61, against real dnsmasq, which keys leases by
// client identifier when a request carries one. softnet clears the identifier (README "How it
// works"), so dnsmasq knows each VM by the MAC softnet pins. A guest that sends a DUID-based
// identifier (dhcpcd, like systemd-networkd and netplan) still gets its lease.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { requireFile } from "../support/tools.ts";
import {
  ADDRESSES,
  DHCPCD,
  drainWithClientIds,
  duidClient,
  forgedClientPort,
  type GuestDhcpClient,
  leaseAfterStop,
  restartUnderClient,
  restartUnderLiveClient,
  type SoftnetFactory,
  SYSTEMD_NETWORKD,
  softnet,
  stealLeaseWithClientId,
  Topology,
  takeHostName,
} from "./lib/index.ts";

/** dnsmasq's pool for the exhaustion test: five addresses. */
const SMALL_POOL = { first: "192.168.64.10", last: "192.168.64.14" };
const fromSource: SoftnetFactory = (args) => softnet(args);

/** A pool of one address: whether a stopped VM's address is free again shows at once. */
const ONE_ADDRESS = { first: "192.168.64.20", last: "192.168.64.20" };

let small: Topology;
let topology: Topology;
let single: Topology;

beforeAll(async () => {
  if (Bun.which("dhcpcd", { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" }) === null) {
    throw new Error("missing dhcpcd: run scripts/e2e-deps.sh (package dhcpcd-base)");
  }
  requireFile("/usr/lib/systemd/systemd-networkd");
  small = await Topology.create({ dhcpRange: SMALL_POOL });
  topology = await Topology.create();
  single = await Topology.create({ dhcpRange: ONE_ADDRESS });
});

afterAll(async () => {
  await small?.teardown();
  await topology?.teardown();
  await single?.teardown();
});

describe("one VM cannot drain the pool with invented client identifiers", () => {
  test("eight identifiers from one VM make one lease; the next VM still gets an address from a pool of five", async () => {
    const outcome = await drainWithClientIds(small, fromSource, 8);
    const detail = JSON.stringify({
      addresses: outcome.addresses,
      leases: outcome.attackerLeases,
      next: outcome.next.error,
    });
    expect(outcome.next.error, `${detail}\n${small.logs()}`).toBeUndefined();
    // Every run was answered, always with the same address: dnsmasq saw one client.
    expect(
      outcome.addresses.every((address) => address !== "" && address === outcome.addresses[0]),
      detail,
    ).toBe(true);
    expect(outcome.attackerLeases.length, detail).toBe(1);
    expect(outcome.attackerLeases[0]!.clientId, detail).toBe("*");
    expect(outcome.next.lease?.address).not.toBe(outcome.addresses[0]);
  }, 120_000);
});

describe("one VM cannot take another VM's lease with that VM's client identifier", () => {
  test("udhcpc -r <victim address> -x 0x3d:01<victim MAC> from the thief's own MAC gets the thief its own address", async () => {
    const outcome = await stealLeaseWithClientId(topology, fromSource);
    const victim = outcome.victimLease.address;
    const detail = `thief's udhcpc:\n${outcome.thiefOutput}\nthief's softnet:\n${outcome.thief.forwarder?.log}`;
    expect(outcome.thiefLease?.address, detail).not.toBe(victim);
    // The server still has the victim's address on the victim's MAC, and so does the host.
    expect(outcome.serverLease?.mac, detail).toBe(outcome.victim.mac);
    expect(outcome.neighbourBefore?.mac).toBe(outcome.victim.mac);
    expect(outcome.neighbourAfter?.mac, detail).toBe(outcome.victim.mac);
    expect(outcome.thief.forwarder?.log).not.toContain(`lease learned: ${victim} `);
    expect(outcome.victimReachable).toBe(true);
  }, 120_000);
});

describe("a guest with a DUID client identifier still gets its lease", () => {
  test("dhcpcd sends an RFC 4361 identifier; the bridge sees none, and dnsmasq leases by MAC", async () => {
    const outcome = await duidClient(topology, fromSource);
    const detail = `dhcpcd:\n${outcome.dhcpcdLog}\nsoftnet:\n${outcome.guest.forwarder?.log}`;
    // As the guest sent it: type 255 (RFC 4361: IAID and DUID follow).
    expect(outcome.clientIdsSent.length, detail).toBeGreaterThan(0);
    expect(
      outcome.clientIdsSent.every((line) => /Client-ID \(61\).*type 255/.test(line)),
      detail,
    ).toBe(true);
    expect(outcome.clientIdsOnBridge, detail).toEqual([]);
    expect(outcome.serverLease?.address, detail).toBe(outcome.address);
    expect(outcome.serverLease?.clientId).toBe("*");
    expect(outcome.guest.forwarder?.log).toContain(`lease learned: ${outcome.address} `);
    expect(outcome.reachesGateway).toBe(true);
  }, 120_000);
});

describe("the DHCP client port is no way around the rules", () => {
  test("from port 68, forged and another VM's source, no lease, --block 0.0.0.0/0: nothing reaches the gateway's other ports", async () => {
    const outcome = await forgedClientPort(topology, fromSource);
    const detail = `attacker's softnet:\n${outcome.attacker.forwarder?.log}`;
    expect(outcome.forgedOnBridge, detail).toBe(0);
    expect(outcome.answersOnBridge, detail).toBe(0);
    expect(outcome.queriesLogged, detail).toEqual([]);
    expect(outcome.attacker.forwarder?.log).toContain("dropped from VM: no-lease");
    // Its real DHCP still works: 0.0.0.0:68 to the server's port 67.
    expect(outcome.attackerLease?.address, detail).toMatch(/^192\.168\.64\./);
  }, 120_000);
});

describe("a VM cannot take the DNS name another VM registered", () => {
  test("a second VM asking as the first's host name (option 12 and FQDN 81) does not make dnsmasq resolve it to the second", async () => {
    const outcome = await takeHostName(topology, fromSource, "buildvm");
    const detail = JSON.stringify({ answers: outcome.answers, second: outcome.secondLease });
    expect(outcome.secondLease?.address, detail).toBeDefined();
    expect(outcome.answers, detail).not.toContain(outcome.secondLease!.address);
    // No name is registered from the VM's side at all: dnsmasq's lease has none.
    const leases = topology.dhcpServerLeases().filter((lease) => lease.mac === outcome.second.mac);
    expect(
      leases.map((lease) => lease.hostname),
      detail,
    ).toEqual(["*"]);
  }, 120_000);
});

describe("a stopped VM's address goes back to the pool at once", () => {
  test("after SIGINT the lease leaves dnsmasq's lease file and a VM with another MAC takes the address from a pool of one", async () => {
    const outcome = await leaseAfterStop(single, fromSource, "signal");
    const detail = `first softnet:\n${outcome.firstLog}\n${single.logs()}`;
    expect(outcome.leaseWhileRunning?.address, detail).toBe(ONE_ADDRESS.first);
    expect(outcome.leaseAfterStop, detail).toBeUndefined();
    expect(outcome.firstLog).toContain(`released the lease for ${ONE_ADDRESS.first}`);
    expect(outcome.secondError, detail).toBeUndefined();
    expect(outcome.secondLease?.address, detail).toBe(ONE_ADDRESS.first);
    expect(outcome.second.mac).not.toBe(outcome.first.mac);
  }, 120_000);
});

describe("a guest whose softnet restarted renews the address it kept", () => {
  test("busybox udhcpc renews by unicast; it leaves softnet from 0.0.0.0 to the broadcast as INIT-REBOOT, and softnet learns the lease", async () => {
    const outcome = await restartUnderLiveClient(topology, fromSource);
    const detail = `restarted softnet:\n${outcome.guest.forwarder?.log}\nbridge:\n${outcome.dhcpOnBridge.join("\n")}`;
    expect(outcome.renewed?.address, detail).toBe(outcome.lease.address);
    expect(outcome.guest.forwarder?.log, detail).toContain(`lease learned: ${outcome.lease.address} `);
    // On the bridge, until the server answered: the renewal came from 0.0.0.0, never from the
    // address it named.
    expect(outcome.requestsOnBridgeFromAddress, detail).toBe(0);
    expect(outcome.requestsOnBridgeFromUnspecified, detail).toBeGreaterThan(0);
    // With no ciaddr and the address in option 50 (INIT-REBOOT, RFC 2131 4.3.2).
    expect(outcome.requestsWithClientAddress, detail).toBe(0);
    expect(outcome.requestsNamingAddress, detail).toBe(outcome.requestsOnBridgeFromUnspecified);
    expect(await outcome.guest.ping(ADDRESSES.globalHost)).toBe(true);
  }, 120_000);
});

/**
 * A real client's renewal at T1 after softnet restarted: it leaves as INIT-REBOOT from 0.0.0.0,
 * is ACKed, and softnet learns the lease before it ends; the client keeps its address throughout.
 */
async function expectRenewalAcrossRestart(client: GuestDhcpClient): Promise<void> {
  const outcome = await restartUnderClient(topology, fromSource, client);
  const detail = `learned after ${outcome.secondsToLearn} s\n${client.name}:\n${outcome.clientLog}\nrestarted softnet:\n${outcome.guest.forwarder?.log}\nbridge:\n${outcome.dhcpOnBridge.join("\n")}`;
  // Learned before the lease's end, from a renewal: the client never started over.
  expect(outcome.learned, detail).toBe(true);
  expect(outcome.discoversOnBridge, detail).toBe(0);
  expect(outcome.addressLost, detail).toBe(false);
  // On the bridge, until the server answered: from 0.0.0.0 only, with no ciaddr and the address
  // in option 50.
  expect(outcome.requestsOnBridgeFromAddress, detail).toBe(0);
  expect(outcome.requestsOnBridgeFromUnspecified, detail).toBeGreaterThan(0);
  expect(outcome.requestsWithClientAddress, detail).toBe(0);
  expect(outcome.requestsNamingAddress, detail).toBe(outcome.requestsOnBridgeFromUnspecified);
  expect(await outcome.guest.addresses(), detail).toEqual([outcome.address]);
  expect(await outcome.guest.ping(ADDRESSES.gateway), detail).toBe(true);
}

describe("dhcpcd and systemd-networkd renew across a softnet restart too", () => {
  test("Debian's dhcpcd renews at T1 as INIT-REBOOT and keeps its address; softnet learns the lease before it ends", async () => {
    await expectRenewalAcrossRestart(DHCPCD);
  }, 200_000);

  test("systemd-networkd renews at T1 as INIT-REBOOT and keeps its address; softnet learns the lease before it ends", async () => {
    await expectRenewalAcrossRestart(SYSTEMD_NETWORKD);
  }, 200_000);
});

describe("a stopped VM's address goes back to the pool when the VM closes its end too", () => {
  test("after the VM end closes, dnsmasq forgets the lease", async () => {
    const own = await Topology.create({ dhcpRange: ONE_ADDRESS });
    const outcome = await leaseAfterStop(own, fromSource, "vm-closed").finally(() => own.teardown());
    const detail = `first softnet:\n${outcome.firstLog}`;
    expect(outcome.leaseWhileRunning, detail).toBeDefined();
    expect(outcome.leaseAfterStop, detail).toBeUndefined();
    expect(outcome.secondLease?.address, detail).toBe(outcome.firstLease.address);
  }, 120_000);
});
