// Self-test of the e2e harness, with no softnet in the path: transparent relays carry the guests'
// frames to the bridge. It proves the topology works on its own (so a failing softnet e2e test
// points at softnet) and that what softnet must block is reachable without it (so those tests can
// fail). Needs root and scripts/e2e-deps.sh.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import {
  ADDRESSES,
  BANNER_PORT,
  BANNERS,
  commandForwarder,
  DHCP_LEASE_SECONDS,
  DNS_NAMES,
  type Guest,
  type GuestLease,
  inNamespace,
  listNamespaces,
  run,
  Topology,
  transparentRelay,
  waitFor,
} from "./lib/index.ts";
import { removeLeftovers } from "./lib/netns.ts";

let topology: Topology;
let guest: Guest;
let lease: GuestLease;

function ipv4ToNumber(address: string): number {
  return address.split(".").reduce((value, octet) => value * 256 + Number(octet), 0);
}

beforeAll(async () => {
  topology = await Topology.create();
  guest = await topology.addGuest();
});

afterAll(async () => {
  await topology?.teardown();
});

describe("the topology", () => {
  test("has no default route outside the guests: only its own addresses are routable", async () => {
    for (const namespace of [topology.hostNamespace, topology.internetNamespace, topology.privateNamespace]) {
      const routes = await run(inNamespace(namespace, ["ip", "-4", "route", "show", "default"]));
      expect({ namespace, routes: routes.stdout.trim() }).toEqual({ namespace, routes: "" });
    }
  });
});

describe("a guest behind a transparent relay", () => {
  let capture: Awaited<ReturnType<Topology["startCapture"]>>;

  beforeAll(async () => {
    capture = await topology.startCapture();
    await guest.attach(transparentRelay());
    lease = await guest.dhcp();
    await capture.stop();
  });

  test("obtains a DHCP lease from dnsmasq with the gateway as router and both DNS servers", async () => {
    const address = ipv4ToNumber(lease.address);
    expect(address).toBeGreaterThanOrEqual(ipv4ToNumber(ADDRESSES.dhcpRange.first));
    expect(address).toBeLessThanOrEqual(ipv4ToNumber(ADDRESSES.dhcpRange.last));
    expect(lease.prefixLength).toBe(ADDRESSES.gatewayPrefixLength);
    expect(lease.router).toBe(ADDRESSES.gateway);
    expect(lease.serverId).toBe(ADDRESSES.gateway);
    expect(lease.dnsServers).toEqual([ADDRESSES.gateway, ADDRESSES.secondDnsServer]);
    expect(lease.leaseSeconds).toBe(DHCP_LEASE_SECONDS);
    // The udhcpc script applied it, and dnsmasq recorded it for the guest's MAC.
    expect(await guest.addresses()).toEqual([lease.address]);
    const serverSide = topology.dhcpServerLeases().find((entry) => entry.mac === guest.mac);
    expect(serverSide?.address).toBe(lease.address);
  });

  test("renews its lease on demand (unicast DHCP through the relay)", async () => {
    const renewed = await guest.renewLease();
    expect(renewed.address).toBe(lease.address);
    expect(renewed.boundOrRenewedCount).toBe(lease.boundOrRenewedCount + 1);
  });

  test("tcpdump on the bridge witnesses the guest's DHCP exchange", async () => {
    const fromGuest = await capture.lines(`ether src ${guest.mac} and udp src port 68 and udp dst port 67`);
    const toGuest = await capture.lines(`ether dst ${guest.mac} and udp src port 67 and udp dst port 68`);
    expect(fromGuest.length).toBeGreaterThanOrEqual(2); // discover, request
    expect(toGuest.length).toBeGreaterThanOrEqual(2); // offer, ack (unicast to the guest's MAC)
    expect(fromGuest[0]).toContain(`Request from ${guest.mac}`);
    for (const reply of toGuest) expect(reply).toStartWith(`${ADDRESSES.gatewayMac} > ${guest.mac}`);
  });

  test("reaches the gateway and the global test host (ping and TCP)", async () => {
    expect(await guest.ping(ADDRESSES.gateway)).toBe(true);
    expect(await guest.ping(ADDRESSES.globalHost)).toBe(true);
    const connection = await guest.tcpConnect(ADDRESSES.globalHost, BANNER_PORT);
    expect(connection.code).toBe(0);
    expect(connection.stdout.trim()).toBe(BANNERS.globalHost);
    // The host learnt the guest's MAC for its leased address.
    const neighbour = await topology.hostNeighbour(lease.address);
    expect(neighbour?.mac).toBe(guest.mac);
  });

  test("resolves names through the DHCP-provided DNS servers", async () => {
    expect(await guest.dnsQuery(ADDRESSES.gateway, DNS_NAMES.example)).toEqual({
      code: 0,
      answers: [ADDRESSES.globalHost],
    });
    expect((await guest.dnsQuery(ADDRESSES.secondDnsServer, DNS_NAMES.whoami)).answers).toEqual([
      ADDRESSES.secondDnsServer,
    ]);
    expect((await guest.dnsQuery(ADDRESSES.gateway, DNS_NAMES.whoami, { tcp: true })).answers).toEqual([
      ADDRESSES.gateway,
    ]);
  });

  test("reaches the private server when nothing filters (so softnet's blocking tests can fail)", async () => {
    expect(await guest.ping(ADDRESSES.privateServer)).toBe(true);
    const connection = await guest.tcpConnect(ADDRESSES.privateServer, BANNER_PORT);
    expect(connection.stdout.trim()).toBe(BANNERS.privateServer);
    expect((await guest.dnsQuery(ADDRESSES.privateServer, DNS_NAMES.whoami)).answers).toEqual([
      ADDRESSES.privateServer,
    ]);
  });

  test("is cut off when its relay is detached, and reconnects with its lease when re-attached", async () => {
    await guest.detach();
    expect(await guest.ping(ADDRESSES.gateway, { waitSeconds: 1 })).toBe(false);
    const relay = await guest.attach(transparentRelay());
    expect(await topology.bridgePorts()).toContain(relay.bridgePort);
    expect(await guest.ping(ADDRESSES.gateway)).toBe(true);
    expect(await guest.addresses()).toEqual([lease.address]);
  });
});

describe("a second guest behind a forwarder that creates its own bridge port, as softnet does", () => {
  let second: Guest;
  let secondLease: GuestLease;

  // socat creates a non-persistent TAP; a background loop enslaves it once it exists. Ready means
  // a new bridge port with carrier, the same signal the harness waits for with softnet.
  const selfCreatingRelay = commandForwarder("self-creating socat relay", ({ bridge, guestIndex }) => [
    "sh",
    "-c",
    `port=own${guestIndex}
       (for attempt in $(seq 200); do ip link set "$port" master ${bridge} 2>/dev/null && exit 0; sleep 0.02; done) &
       exec socat TUN,tun-type=tap,tun-name=$port,iff-no-pi,iff-up FD:0`,
  ]);

  beforeAll(async () => {
    second = await topology.addGuest();
    await second.attach(selfCreatingRelay);
    secondLease = await second.dhcp();
  });

  test("gets its own lease, and the guests reach each other when nothing filters", async () => {
    expect(second.mac).not.toBe(guest.mac);
    expect(secondLease.address).not.toBe(lease.address);
    expect(await guest.ping(secondLease.address)).toBe(true);
    expect(await second.ping(lease.address)).toBe(true);
  });

  test("its bridge port disappears once the forwarder is stopped", async () => {
    const port = second.forwarder!.bridgePort;
    expect(await topology.bridgePorts()).toContain(port);
    await second.detach();
    await waitFor(`${port} to leave the bridge`, async () => !(await topology.bridgePorts()).includes(port), {
      timeoutMs: 3_000,
    });
  });
});

describe("cleanup", () => {
  test("leftovers of a crashed run (dead runner pid) are removed; a live run's are not", async () => {
    // pid_max is at most 2^22, so this runner pid cannot be alive.
    const crashed = "softnet-e2e-99999999-1-host";
    const live = `softnet-e2e-${process.pid}-999-host`;
    for (const name of [crashed, live]) await run(["ip", "netns", "add", name]);
    const orphan = Bun.spawn(inNamespace(crashed, ["sleep", "60"]));
    try {
      await waitFor("the orphan to enter the namespace", async () => {
        const pids = await run(["ip", "netns", "pids", crashed]);
        return pids.stdout.includes(String(orphan.pid));
      });
      removeLeftovers(`softnet-e2e-${process.pid}-998`);
      expect(listNamespaces()).not.toContain(crashed);
      expect(listNamespaces()).toContain(live);
      expect(await orphan.exited).toBe(128 + 9); // killed, not left running in a nameless namespace
    } finally {
      orphan.kill("SIGKILL");
      for (const name of [crashed, live]) await run(["ip", "netns", "del", name]);
    }
  });

  test("a runner that exits without teardown still removes its topology ('exit' safety net)", async () => {
    const script = `
      import { Topology } from ${JSON.stringify(`${import.meta.dir}/lib/index.ts`)};
      const topology = await Topology.create();
      console.log(topology.name);
      process.exit(3);
    `;
    const child = await run([process.execPath, "-e", script], { timeoutMs: 20_000 });
    expect(child.code).toBe(3);
    const name = child.stdout.trim();
    expect(name).toMatch(/^softnet-e2e-\d+-1$/);
    expect(listNamespaces().filter((namespace) => namespace.startsWith(`${name}-`))).toEqual([]);
  });

  test("teardown stops every process and removes every namespace and file", async () => {
    const pids = topology.startedPids();
    expect(pids.length).toBeGreaterThan(5);
    const workDir = topology.workDir;
    await topology.teardown();
    expect(topology.leftovers()).toEqual({ namespaces: [], workDir: false });
    expect(existsSync(workDir)).toBe(false);
    expect(pids.filter((pid) => existsSync(`/proc/${pid}`))).toEqual([]);
  });
});
