// What one VM can try against another on a shared bridge (DHCP identities, isolation), as scenarios
// that run against any softnet: the source tree as root (test/e2e) or the setuid release binary
// started by an unprivileged user (test/release/setuid-vm-attacks.test.ts). Each scenario builds
// its guests, runs real clients (busybox udhcpc, dhcpcd, hping3, ping), and returns what the
// witnesses saw (dnsmasq's lease file, the host's neighbour table, tcpdump in the guests'
// namespaces); the tests decide what must hold.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Capture } from "./capture.ts";
import type { ForwarderSpec } from "./forwarder.ts";
import { transparentRelay } from "./forwarder.ts";
import type { Guest, GuestLease } from "./guest.ts";
import { waitFor } from "./proc.ts";
import {
  ADDRESSES,
  type BridgeHost,
  DHCP_LEASE_SECONDS,
  type DnsmasqLease,
  type Neighbour,
  type Topology,
} from "./topology.ts";

/** softnet with these extra arguments (--allow, --log-level, ...), however it is started. */
export type SoftnetFactory = (args: string[]) => ForwarderSpec;

const DEBUG = ["--log-level", "debug"];

/** A guest behind its own softnet, with a lease from its udhcpc (which keeps running). */
export async function guestBehind(
  topology: Topology,
  softnet: SoftnetFactory,
  args: string[] = [],
): Promise<{ guest: Guest; lease: GuestLease }> {
  const guest = await topology.addGuest();
  await guest.attach(softnet([...DEBUG, ...args]));
  const lease = await guest.dhcp(20_000);
  return { guest, lease };
}

/** The guest's MAC as the hex digits busybox's -x 0x3d: wants after the type byte. */
function macHex(mac: string): string {
  return mac.replaceAll(":", "");
}

export interface DrainOutcome {
  attacker: Guest;
  /** The address each udhcpc run with a fresh client identifier got ("" for none). */
  addresses: string[];
  /** dnsmasq's leases on the attacker's MAC after the runs. */
  attackerLeases: DnsmasqLease[];
  /** The next VM's lease, or why it got none. */
  next: { guest: Guest; lease?: GuestLease; error?: string };
}

/**
 * One VM asks again and again, each time under a new client identifier (RFC 4361 style, type
 * 255), as if it were many clients; then another VM asks for an address. With dnsmasq keying
 * leases by client identifier, a pool smaller than `attempts` runs dry.
 */
export async function drainWithClientIds(
  topology: Topology,
  softnet: SoftnetFactory,
  attempts: number,
): Promise<DrainOutcome> {
  const attacker = await topology.addGuest();
  await attacker.attach(softnet(DEBUG));
  const addresses: string[] = [];
  for (let i = 0; i < attempts; i++) {
    // type 255, IAID, and a DUID-EN (type 2, enterprise 0xab11, identifier i): unique per run.
    const clientId = `ff000000${(i + 1).toString(16).padStart(2, "0")}00020000ab110000${i.toString(16).padStart(4, "0")}`;
    const run = await attacker.udhcpcOnce(["-x", `0x3d:${clientId}`]);
    addresses.push(run.lease?.address ?? "");
  }
  const attackerLeases = topology.dhcpServerLeases().filter((lease) => lease.mac === attacker.mac);
  const nextGuest = await topology.addGuest();
  await nextGuest.attach(softnet(DEBUG));
  const next: DrainOutcome["next"] = { guest: nextGuest };
  try {
    next.lease = await nextGuest.dhcp(20_000);
  } catch (error) {
    next.error = error instanceof Error ? error.message : String(error);
  }
  return { attacker, addresses, attackerLeases, next };
}

export interface TheftOutcome {
  victim: Guest;
  victimLease: GuestLease;
  thief: Guest;
  /** What the thief's udhcpc got, if anything. */
  thiefLease?: GuestLease;
  thiefOutput: string;
  /** dnsmasq's lease on the victim's address, after the attempt. */
  serverLease?: DnsmasqLease;
  neighbourBefore?: Neighbour;
  neighbourAfter?: Neighbour;
  /** The host can still ping the victim, and the victim the gateway. */
  victimReachable: boolean;
}

/**
 * A VM asks for another VM's address under that VM's client identifier (busybox's default: type
 * 1 and the MAC), from its own MAC: `udhcpc -r <victim address> -x 0x3d:01<victim MAC>`. With
 * dnsmasq keying leases by client identifier, it is handed the victim's lease, and dnsmasq points
 * the host's neighbour entry for that address at the thief.
 */
export async function stealLeaseWithClientId(
  topology: Topology,
  softnet: SoftnetFactory,
): Promise<TheftOutcome> {
  const { guest: victim, lease: victimLease } = await guestBehind(topology, softnet);
  // The host learns the victim's MAC for its address.
  await victim.ping(ADDRESSES.gateway);
  const neighbourBefore = await topology.hostNeighbour(victimLease.address);
  const thief = await topology.addGuest();
  await thief.attach(softnet(DEBUG));
  const run = await thief.udhcpcOnce(["-r", victimLease.address, "-x", `0x3d:01${macHex(victim.mac)}`]);
  const serverLease = topology.dhcpServerLeases().find((lease) => lease.address === victimLease.address);
  const neighbourAfter = await topology.hostNeighbour(victimLease.address);
  const fromHost = await topology.hostExec(["ping", "-n", "-c", "2", "-W", "1", victimLease.address], {
    timeoutMs: 8_000,
  });
  const victimReachable = fromHost.code === 0 && (await victim.ping(ADDRESSES.gateway));
  return {
    victim,
    victimLease,
    thief,
    thiefLease: run.lease,
    thiefOutput: run.stdout + run.stderr,
    serverLease,
    neighbourBefore,
    neighbourAfter,
    victimReachable,
  };
}

export interface DuidOutcome {
  guest: Guest;
  /** The address dhcpcd configured on eth0. */
  address: string;
  serverLease?: DnsmasqLease;
  /** tcpdump -v's Client-ID lines of the guest's DHCP requests: as sent (eth0), as the bridge saw them. */
  clientIdsSent: string[];
  clientIdsOnBridge: string[];
  reachesGateway: boolean;
  dhcpcdLog: string;
}

/**
 * Debian's dhcpcd, which sends an RFC 4361 client identifier (type 255, IAID, DUID) by default,
 * as systemd-networkd and netplan do. Its state lives on tmpfs mounts private to its process
 * (ip netns exec gives every command its own mount namespace), so guests never share a DUID file.
 */
export async function duidClient(topology: Topology, softnet: SoftnetFactory): Promise<DuidOutcome> {
  const guest = await topology.addGuest();
  await guest.attach(softnet(DEBUG));
  const onEth0 = await topology.startCapture("eth0", guest.namespace);
  const onBridge = await topology.startCapture();
  const dhcpcd = guest.spawn("dhcpcd", [
    "sh",
    "-c",
    "mount -t tmpfs tmpfs /run && mkdir /run/dhcpcd && mount -t tmpfs tmpfs /var/lib/dhcpcd && " +
      "exec dhcpcd --nobackground --ipv4only --noipv4ll --debug eth0",
  ]);
  let address = "";
  try {
    address = await waitFor(
      "dhcpcd to configure an address on eth0",
      async () => {
        if (!dhcpcd.running) throw new Error(`dhcpcd exited ${dhcpcd.exitCode}: ${dhcpcd.log}`);
        return (await guest.addresses())[0];
      },
      { timeoutMs: 30_000 },
    );
  } catch (error) {
    throw new Error(`${(error as Error).message}\ndhcpcd said:\n${dhcpcd.log}`);
  }
  await onEth0.stop();
  await onBridge.stop();
  const clientIds = async (capture: Capture) =>
    (await capture.lines(`ether src ${guest.mac} and udp dst port 67`, { verbose: true })).filter((line) =>
      /Client-ID/.test(line),
    );
  return {
    guest,
    address,
    serverLease: topology.dhcpServerLeases().find((lease) => lease.mac === guest.mac),
    clientIdsSent: await clientIds(onEth0),
    clientIdsOnBridge: await clientIds(onBridge),
    reachesGateway: await guest.ping(ADDRESSES.gateway),
    dhcpcdLog: dhcpcd.log,
  };
}

export interface NeighbourOutcome {
  victim: Guest;
  victimLease: GuestLease;
  /** A second victim whose softnet runs with --allow 0.0.0.0/0: not isolated, the control. */
  open: Guest;
  openLease: GuestLease;
  attacker: Guest;
  attackerLease: GuestLease;
  /** Frames from the attacker's address seen on the victim's eth0 (tcpdump in its namespace). */
  fromAttackerAtVictim: number;
  /** UDP to port 9 sent by the attacker that reached the open VM's eth0. */
  udpAtOpen: number;
  /** UDP to port 9 and echo requests the host sent, seen on the victim's eth0. */
  fromHostAtVictim: number;
  hostPingsVictim: boolean;
  sent: { udp: number; pings: number };
}

/**
 * A VM whose softnet runs with --allow 0.0.0.0/0 (isolation off for its port) sends UDP and pings
 * to an isolated VM: straight over the bridge (a permanent neighbour entry skips ARP, which the
 * victim does not answer) and routed through the host. The same UDP goes to a VM with isolation
 * off too (it must arrive: upstream semantics), and the host sends to the victim (it must arrive).
 */
export async function neighbourWithIsolationOff(
  topology: Topology,
  softnet: SoftnetFactory,
  count = 20,
): Promise<NeighbourOutcome> {
  const { guest: victim, lease: victimLease } = await guestBehind(topology, softnet);
  const { guest: open, lease: openLease } = await guestBehind(topology, softnet, ["--allow", "0.0.0.0/0"]);
  const { guest: attacker, lease: attackerLease } = await guestBehind(topology, softnet, [
    "--allow",
    "0.0.0.0/0",
  ]);
  // Everyone has talked to the host, so the host knows their MACs (for routing back).
  for (const guest of [victim, open, attacker]) await guest.ping(ADDRESSES.gateway);
  const atVictim = await topology.startCapture("eth0", victim.namespace);
  const atOpen = await topology.startCapture("eth0", open.namespace);

  const udp = (address: string) =>
    attacker.exec(["hping3", "--udp", "-p", "9", "-c", String(count), "-i", "u20000", address], {
      timeoutMs: 15_000,
    });
  // Straight over the bridge.
  for (const [guest, lease] of [
    [victim, victimLease],
    [open, openLease],
  ] as const) {
    await attacker.exec(
      ["ip", "neigh", "replace", lease.address, "lladdr", guest.mac, "nud", "permanent", "dev", "eth0"],
      {},
    );
  }
  await udp(victimLease.address);
  await udp(openLease.address);
  await attacker.ping(victimLease.address, { count: 3, waitSeconds: 1 });
  // Routed by the host: to the gateway's MAC, back out of the bridge to the victim.
  await attacker.exec(["ip", "neigh", "del", victimLease.address, "dev", "eth0"]);
  await attacker.exec(["ip", "route", "replace", `${victimLease.address}/32`, "via", ADDRESSES.gateway]);
  await udp(victimLease.address);
  await attacker.ping(victimLease.address, { count: 3, waitSeconds: 1 });
  // The host itself: a witness that the capture sees what does arrive.
  await topology.hostExec(["hping3", "--udp", "-p", "9", "-c", "3", "-i", "u20000", victimLease.address], {
    timeoutMs: 10_000,
  });
  const hostPing = await topology.hostExec(["ping", "-n", "-c", "3", "-W", "1", victimLease.address], {
    timeoutMs: 10_000,
  });
  await atVictim.stop();
  await atOpen.stop();
  return {
    victim,
    victimLease,
    open,
    openLease,
    attacker,
    attackerLease,
    fromAttackerAtVictim: await atVictim.count(`host ${attackerLease.address}`),
    udpAtOpen: await atOpen.count(`src host ${attackerLease.address} and udp dst port 9`),
    fromHostAtVictim: await atVictim.count(
      `src host ${ADDRESSES.gateway} and (udp dst port 9 or icmp[icmptype] == icmp-echo)`,
    ),
    hostPingsVictim: hostPing.code === 0,
    sent: { udp: 2 * count, pings: 6 },
  };
}

export interface FloodOutcome {
  /** Frames to the unknown MACs on each eth0 (tcpdump in the guest's namespace, promiscuous). */
  atIsolated: number;
  atOpen: number;
  /** A guest behind a transparent relay, no softnet: shows that the bridge did flood. */
  atControl: number;
  isolated: Guest;
  open: Guest;
}

/**
 * Unicast frames to MACs the bridge has never seen: a bridge floods them to every port, as it does
 * when an FDB entry has aged out. Sent from a plain machine on the bridge and from a VM whose
 * softnet has isolation off. No VM behind softnet may receive them, isolated or not.
 */
export async function floodToUnknownMacs(topology: Topology, softnet: SoftnetFactory): Promise<FloodOutcome> {
  const { guest: isolated } = await guestBehind(topology, softnet);
  const { guest: open } = await guestBehind(topology, softnet, ["--allow", "0.0.0.0/0"]);
  const { guest: attacker } = await guestBehind(topology, softnet, ["--allow", "0.0.0.0/0"]);
  const control = await topology.addGuest();
  await control.attach(transparentRelay());
  const machine = await topology.addBridgeHost("192.168.64.250");
  const captures = await Promise.all(
    [isolated, open, control].map((guest) => topology.startCapture("eth0", guest.namespace)),
  );
  const unknownMacs = ["02:5e:99:00:00:01", "02:5e:99:00:00:02"];
  const senders: Array<[string, (argv: string[]) => Promise<unknown>]> = [
    [unknownMacs[0]!, (argv) => topology.exec(machine.namespace, argv, { timeoutMs: 15_000 })],
    [unknownMacs[1]!, (argv) => attacker.exec(argv, { timeoutMs: 15_000 })],
  ];
  for (const [index, [mac, exec]] of senders.entries()) {
    const nobody = `192.168.64.${200 + index}`;
    await exec(["ip", "neigh", "replace", nobody, "lladdr", mac, "nud", "permanent", "dev", "eth0"]);
    await exec(["hping3", "--udp", "-p", "9", "-c", "10", "-i", "u20000", nobody]);
    await exec(["ping", "-n", "-c", "3", "-W", "1", nobody]);
  }
  for (const capture of captures) await capture.stop();
  const filter = unknownMacs.map((mac) => `ether dst ${mac}`).join(" or ");
  const [atIsolated, atOpen, atControl] = await Promise.all(captures.map((capture) => capture.count(filter)));
  return { atIsolated: atIsolated!, atOpen: atOpen!, atControl: atControl!, isolated, open };
}

/** An address no host of the topology has: the "any address" an attacker forges. */
const FORGED_SOURCE = "10.66.66.66";

/**
 * A DHCPREQUEST from `mac` that a DNS server reads as a query too (RFC 1035 4.1.1, 4.1.2; RFC
 * 2131 2): the BOOTP xid makes QDCOUNT 1; ciaddr to giaddr are one 15-byte label ("dhcpshapedq"
 * and giaddr's four zeros, which must stay zero for a DHCP check to pass); chaddr continues the
 * name with a 2-byte label and the root (a guest MAC 02:5e:10:00:00:NN), and its last two MAC
 * bytes and its padding are QTYPE and QCLASS. Before the fix, any datagram from port 68 that
 * parsed as the VM's DHCP request passed to the gateway, whatever its destination port.
 */
export function dhcpShapedDnsQuery(mac: string): Uint8Array {
  const message = new Uint8Array(300);
  message.set([1, 1, 6, 0], 0); // op request, htype Ethernet, hlen 6, hops 0
  message.set([0, 1, 0, 0], 4); // xid: QDCOUNT 1, ANCOUNT 0
  message[12] = 15;
  message.set(new TextEncoder().encode("dhcpshapedq"), 13);
  message.set(
    mac.split(":").map((byte) => Number.parseInt(byte, 16)),
    28,
  );
  message.set([0, 1], 34); // chaddr padding: QCLASS IN
  message.set([0x63, 0x82, 0x53, 0x63], 236); // DHCP magic cookie
  message.set([53, 1, 3, 255], 240); // DHCPREQUEST, END
  return message;
}

export interface ForgedClientPortOutcome {
  attacker: Guest;
  victim: Guest;
  victimLease: GuestLease;
  /** UDP from the forged sources seen on the bridge (tcpdump on br0). */
  forgedOnBridge: number;
  /** Anything from the host to the forged sources, on the bridge. */
  answersOnBridge: number;
  /** dnsmasq's log lines about the forged query. */
  queriesLogged: string[];
  /** The attacker's own DHCP still works afterwards: it gets a lease. */
  attackerLease?: GuestLease;
}

/**
 * A VM with no lease and --block 0.0.0.0/0 sends from the DHCP client port (68) to other ports of
 * the gateway (9999, and DNS, 53) from a forged address and from another VM's, with netcat bound
 * to those addresses (a static neighbour entry for the gateway: its ARP would not pass).
 */
export async function forgedClientPort(
  topology: Topology,
  softnet: SoftnetFactory,
): Promise<ForgedClientPortOutcome> {
  const { guest: victim, lease: victimLease } = await guestBehind(topology, softnet);
  const attacker = await topology.addGuest();
  await attacker.attach(softnet([...DEBUG, "--block", "0.0.0.0/0"]));
  const payload = join(topology.workDir, `${attacker.name}-query.bin`);
  writeFileSync(payload, dhcpShapedDnsQuery(attacker.mac));
  const onBridge = await topology.startCapture();
  await attacker.exec([
    "ip",
    "neigh",
    "replace",
    ADDRESSES.gateway,
    "lladdr",
    ADDRESSES.gatewayMac,
    "nud",
    "permanent",
    "dev",
    "eth0",
  ]);
  const sources = [FORGED_SOURCE, victimLease.address];
  for (const source of sources) {
    await attacker.exec(["ip", "addr", "add", `${source}/32`, "dev", "eth0"]);
    await attacker.exec(["ip", "route", "replace", `${ADDRESSES.gateway}/32`, "dev", "eth0", "src", source]);
    for (const port of ["9999", "53"]) {
      await attacker.exec(
        ["sh", "-c", `nc -u -w 1 -p 68 -s ${source} ${ADDRESSES.gateway} ${port} < ${payload}`],
        { timeoutMs: 10_000 },
      );
    }
    await attacker.exec(["ip", "addr", "del", `${source}/32`, "dev", "eth0"]);
  }
  await attacker.exec(["ip", "route", "del", `${ADDRESSES.gateway}/32`, "dev", "eth0"]).catch(() => {});
  await onBridge.stop();
  const from = sources.map((source) => `src host ${source}`).join(" or ");
  const to = sources.map((source) => `dst host ${source}`).join(" or ");
  const run = await attacker.udhcpcOnce([]);
  return {
    attacker,
    victim,
    victimLease,
    forgedOnBridge: await onBridge.count(`udp and (${from})`),
    answersOnBridge: await onBridge.count(`src host ${ADDRESSES.gateway} and (${to})`),
    queriesLogged: topology
      .dhcpServerLog()
      .split("\n")
      .filter((line) => line.includes("dhcpshapedq")),
    attackerLease: run.lease,
  };
}

export interface HostNameOutcome {
  first: Guest;
  firstLease: GuestLease;
  second: Guest;
  secondLease?: GuestLease;
  /** The A records dnsmasq answers for the name after both asked for it. */
  answers: string[];
}

/** Two VMs ask dnsmasq for the same host name (option 12), the second after the first. */
export async function takeHostName(
  topology: Topology,
  softnet: SoftnetFactory,
  name: string,
): Promise<HostNameOutcome> {
  const first = await topology.addGuest();
  await first.attach(softnet(DEBUG));
  const firstRun = await first.udhcpcOnce(["-x", `hostname:${name}`]);
  if (firstRun.lease === undefined)
    throw new Error(`the first VM got no lease: ${firstRun.stdout}${firstRun.stderr}`);
  const second = await topology.addGuest();
  await second.attach(softnet(DEBUG));
  const secondRun = await second.udhcpcOnce(["-F", name, "-x", `hostname:${name}`]);
  const dig = await topology.hostExec(
    ["dig", "+short", "+time=2", "+tries=1", `@${ADDRESSES.gateway}`, name, "A"],
    {
      timeoutMs: 10_000,
    },
  );
  return {
    first,
    firstLease: firstRun.lease,
    second,
    secondLease: secondRun.lease,
    answers: dig.stdout
      .split("\n")
      .map((line) => line.trim())
      .filter((line) => line !== ""),
  };
}

export interface NextHopOutcome {
  guest: Guest;
  lease: GuestLease;
  router: BridgeHost;
  /** Packets to the global host seen on the other router's eth0 (tcpdump in its namespace). */
  atRouter: number;
  /** Sent by the guest through the other router. */
  sent: number;
  /** The guest reaches the global host through the gateway, before and after. */
  reachedBefore: boolean;
  reachedAfter: boolean;
}

/**
 * A VM points its default route at another machine on the bridge (a static neighbour entry, as
 * that machine's ARP replies come from another address of the VM's network and do not reach an
 * isolated VM) and sends to the global host: that machine, a router, would forward it past the
 * host's routing, NAT and firewall.
 */
export async function nextHopElsewhere(topology: Topology, softnet: SoftnetFactory): Promise<NextHopOutcome> {
  const { guest, lease } = await guestBehind(topology, softnet);
  const router = await topology.addBridgeHost("192.168.64.251");
  await topology.exec(router.namespace, ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]);
  const reachedBefore = await guest.ping(ADDRESSES.globalHost);
  const atRouter = await topology.startCapture(router.interfaceName, router.namespace);
  await guest.exec([
    "ip",
    "neigh",
    "replace",
    router.address,
    "lladdr",
    router.mac,
    "nud",
    "permanent",
    "dev",
    "eth0",
  ]);
  await guest.exec(["ip", "route", "replace", "default", "via", router.address, "dev", "eth0"]);
  const count = 10;
  await guest.exec(
    ["hping3", "--udp", "-p", "9", "-c", String(count), "-i", "u20000", ADDRESSES.globalHost],
    {
      timeoutMs: 15_000,
    },
  );
  await guest.ping(ADDRESSES.globalHost, { count: 3, waitSeconds: 1 });
  await atRouter.stop();
  await guest.exec(["ip", "route", "replace", "default", "via", ADDRESSES.gateway, "dev", "eth0"]);
  return {
    guest,
    lease,
    router,
    atRouter: await atRouter.count(`dst host ${ADDRESSES.globalHost}`),
    sent: count + 3,
    reachedBefore,
    reachedAfter: await guest.ping(ADDRESSES.globalHost),
  };
}

export interface ReleaseOutcome {
  first: Guest;
  firstLease: GuestLease;
  /** dnsmasq's lease for the first VM's MAC while its softnet ran, and after it stopped. */
  leaseWhileRunning?: DnsmasqLease;
  leaseAfterStop?: DnsmasqLease;
  firstLog: string;
  second: Guest;
  secondLease?: GuestLease;
  secondError?: string;
}

/**
 * A VM gets the only address of a one-address pool; its DHCP client stops without releasing it
 * (as a VM that is switched off), then its softnet stops (`stop`: SIGINT as Tart does, or the VM
 * end closing). Then a VM with another MAC asks for an address.
 */
export async function leaseAfterStop(
  topology: Topology,
  softnet: SoftnetFactory,
  stop: "signal" | "vm-closed",
): Promise<ReleaseOutcome> {
  const { guest: first, lease: firstLease } = await guestBehind(topology, softnet);
  const leaseWhileRunning = topology.dhcpServerLeases().find((lease) => lease.mac === first.mac);
  // busybox udhcpc releases nothing on SIGTERM unless run with -R.
  await first.stopDhcp();
  const forwarder = first.forwarder;
  if (stop === "signal") await first.detach();
  else {
    await first.closeVmEnd();
    await forwarder?.exited;
    await first.detach();
  }
  // dnsmasq rewrites its lease file as soon as it handled the release: give it a moment only.
  let leaseAfterStop: DnsmasqLease | undefined;
  await waitFor(
    "dnsmasq to forget the stopped VM's lease",
    () => {
      leaseAfterStop = topology.dhcpServerLeases().find((lease) => lease.mac === first.mac);
      return leaseAfterStop === undefined;
    },
    { timeoutMs: 5_000 },
  ).catch(() => {});
  const second = await topology.addGuest();
  await second.attach(softnet(DEBUG));
  let secondLease: GuestLease | undefined;
  let secondError: string | undefined;
  try {
    secondLease = await second.dhcp(15_000);
  } catch (error) {
    secondError = error instanceof Error ? error.message : String(error);
  }
  return {
    first,
    firstLease,
    leaseWhileRunning,
    leaseAfterStop,
    firstLog: forwarder?.log ?? "",
    second,
    secondLease,
    secondError,
  };
}

export interface RestartOutcome {
  guest: Guest;
  lease: GuestLease;
  renewed?: GuestLease;
  /**
   * The guest's DHCP requests on the bridge after the restart and before the server's first
   * answer (while the restarted softnet knew no lease), by IP source.
   */
  requestsOnBridgeFromAddress: number;
  requestsOnBridgeFromUnspecified: number;
  /** Of those, how many carried option 50 with its address, and how many a ciaddr. */
  requestsNamingAddress: number;
  requestsWithClientAddress: number;
  /** tcpdump's lines for DHCP on the bridge, for failure messages. */
  dhcpOnBridge: string[];
}

/**
 * softnet dies (SIGKILL: no release) under a guest that keeps its address and its DHCP client;
 * a new softnet starts knowing no lease, and the client renews (busybox udhcpc: SIGUSR1, a unicast
 * DHCPREQUEST from its address to the server, RFC 2131 4.4.5).
 */
export async function restartUnderLiveClient(
  topology: Topology,
  softnet: SoftnetFactory,
): Promise<RestartOutcome> {
  const { guest, lease } = await guestBehind(topology, softnet);
  await guest.ping(ADDRESSES.gateway);
  await guest.forwarder?.stop("SIGKILL");
  guest.forwarder = undefined;
  await guest.closeVmEnd();
  await guest.attach(softnet(DEBUG));
  const onBridge = await topology.startCapture();
  let renewed: GuestLease | undefined;
  try {
    renewed = await guest.renewLease(15_000);
  } catch {
    renewed = undefined;
  }
  await onBridge.stop();
  return {
    guest,
    lease,
    renewed,
    ...requestsBeforeAnswer(await onBridge.lines(dhcpOf(guest), { verbose: true }), lease.address),
    dhcpOnBridge: await onBridge.lines(`udp port 67 or udp port 68`, { verbose: true }),
  };
}

/** A tcpdump filter for a guest's DHCP, both ways. */
function dhcpOf(guest: Guest): string {
  return `ether host ${guest.mac} and (udp port 67 or udp port 68)`;
}

/**
 * The client's DHCP requests until the server's first answer (until then the restarted softnet
 * knows no lease; after it, a request from the address is the leased address's own), from
 * `tcpdump -v` lines: a frame starts on an unindented line, its IP line says "BOOTP/DHCP,
 * Request" or "Reply", and each option follows on a line of its own (print-bootp.c; ciaddr as
 * "Client-IP").
 */
function requestsBeforeAnswer(
  lines: string[],
  address: string,
): {
  requestsOnBridgeFromAddress: number;
  requestsOnBridgeFromUnspecified: number;
  requestsNamingAddress: number;
  requestsWithClientAddress: number;
} {
  const frames: string[] = [];
  for (const line of lines) {
    if (/^\s/.test(line) && frames.length > 0) frames[frames.length - 1] += `\n${line}`;
    else frames.push(line);
  }
  const firstAnswer = frames.findIndex((frame) => frame.includes("BOOTP/DHCP, Reply"));
  const requests = frames
    .slice(0, firstAnswer === -1 ? frames.length : firstAnswer)
    .filter((frame) => frame.includes("BOOTP/DHCP, Request"));
  return {
    requestsOnBridgeFromAddress: requests.filter((frame) => frame.includes(` ${address}.68 > `)).length,
    requestsOnBridgeFromUnspecified: requests.filter((frame) => frame.includes(" 0.0.0.0.68 > ")).length,
    requestsNamingAddress: requests.filter((frame) =>
      frame.includes(`Requested-IP (50), length 4: ${address}`),
    ).length,
    requestsWithClientAddress: requests.filter((frame) => frame.includes("Client-IP ")).length,
  };
}

export interface ClientRestartOutcome {
  guest: Guest;
  address: string;
  /** The restarted softnet learned the lease again from the server's ACK. */
  learned: boolean;
  /** As in RestartOutcome: requests before the server's first answer, by IP source. */
  requestsOnBridgeFromAddress: number;
  requestsOnBridgeFromUnspecified: number;
  /** The guest's DISCOVERs on the bridge after the restart: it started over instead of renewing. */
  discoversOnBridge: number;
  /** Of those requests, how many carried option 50 with its address, and how many a ciaddr. */
  requestsNamingAddress: number;
  requestsWithClientAddress: number;
  /** Whether eth0 was ever seen without the address while softnet waited to learn the lease. */
  addressLost: boolean;
  /** Seconds from the client's lease to the restarted softnet learning it, for failure messages. */
  secondsToLearn: number;
  clientLog: string;
  /** tcpdump's lines for the guest's DHCP on the bridge, for failure messages. */
  dhcpOnBridge: string[];
}

/** A DHCP client run in a guest, configuring eth0, with its own state in a private /run. */
export interface GuestDhcpClient {
  name: string;
  argv: string[];
}

/** Debian's dhcpcd, IPv4 only. */
export const DHCPCD: GuestDhcpClient = {
  name: "dhcpcd",
  argv: [
    "sh",
    "-c",
    "mount -t tmpfs tmpfs /run && mkdir /run/dhcpcd && mount -t tmpfs tmpfs /var/lib/dhcpcd && " +
      "exec dhcpcd --nobackground --ipv4only --noipv4ll --debug eth0",
  ],
};

/**
 * systemd-networkd (Debian's systemd 252) without systemd as PID 1 or D-Bus: its configuration
 * and state in a private /run (it watches for /run/dbus/system_bus_socket and goes on without it).
 * /sys is made read-only: networkd then takes udev for absent (systemd's udev_available(),
 * src/shared/udev-util.c: systemd-udevd runs only where /sys is writable) and configures the link
 * at once instead of waiting for udev to initialise it, which no udevd in the namespace would.
 */
export const SYSTEMD_NETWORKD: GuestDhcpClient = {
  name: "systemd-networkd",
  argv: [
    "sh",
    "-c",
    "mount -t tmpfs tmpfs /run && mount -o remount,ro /sys && mkdir -p /run/systemd/network && " +
      "printf '[Match]\\nName=eth0\\n[Network]\\nDHCP=ipv4\\nLinkLocalAddressing=no\\nIPv6AcceptRA=no\\n' " +
      "> /run/systemd/network/50-eth0.network && chown -R systemd-network:systemd-network /run/systemd && " +
      "SYSTEMD_LOG_LEVEL=debug exec /usr/lib/systemd/systemd-networkd",
  ],
};

/**
 * As restartUnderLiveClient, with a real client left to its own timers (Debian's dhcpcd,
 * systemd-networkd): at T1 (half the lease, RFC 2131 4.4.5) it renews by unicast from its
 * address, a DHCPREQUEST with ciaddr set. softnet, knowing no lease, sends it on from 0.0.0.0 to
 * the broadcast as an INIT-REBOOT request (ciaddr 0, option 50), so dnsmasq answers the guest's
 * MAC rather than ciaddr, which the host could not resolve (the guest's ARP from that address
 * does not pass while softnet knows no lease). Waits until softnet learns the lease, but never
 * past the lease's end (DHCP_LEASE_SECONDS after the client got it), when the client would start
 * over from 0.0.0.0 with a DISCOVER.
 */
export async function restartUnderClient(
  topology: Topology,
  softnet: SoftnetFactory,
  dhcpClient: GuestDhcpClient,
): Promise<ClientRestartOutcome> {
  const guest = await topology.addGuest();
  await guest.attach(softnet(DEBUG));
  const client = guest.spawn(dhcpClient.name, dhcpClient.argv);
  const address = await waitFor(
    `${dhcpClient.name} to configure an address on eth0`,
    async () => {
      if (!client.running) throw new Error(`${dhcpClient.name} exited ${client.exitCode}: ${client.log}`);
      return (await guest.addresses())[0];
    },
    { timeoutMs: 30_000 },
  );
  const leasedAt = Date.now();
  await guest.ping(ADDRESSES.gateway);
  await guest.forwarder?.stop("SIGKILL");
  guest.forwarder = undefined;
  await guest.closeVmEnd();
  await guest.attach(softnet(DEBUG));
  const onBridge = await topology.startCapture();
  const restarted = guest.forwarder as { log: string } | undefined;
  let addressLost = false;
  const learned = await waitFor(
    `the restarted softnet to learn ${dhcpClient.name}'s lease`,
    async () => {
      if (!(await guest.addresses()).includes(address)) addressLost = true;
      return restarted?.log.includes(`lease learned: ${address} `) ? true : undefined;
    },
    { timeoutMs: Math.max(0, leasedAt + DHCP_LEASE_SECONDS * 1000 - Date.now()), intervalMs: 500 },
  ).catch(() => false);
  const secondsToLearn = Math.round((Date.now() - leasedAt) / 1000);
  if (!(await guest.addresses()).includes(address)) addressLost = true;
  await onBridge.stop();
  const sent = await onBridge.lines(dhcpOf(guest), { verbose: true });
  return {
    guest,
    address,
    learned,
    discoversOnBridge: sent.filter((line) => /DHCP-Message \(53\), length 1: Discover/.test(line)).length,
    ...requestsBeforeAnswer(sent, address),
    addressLost,
    secondsToLearn,
    clientLog: client.log,
    dhcpOnBridge: await onBridge.lines(`udp port 67 or udp port 68`, { verbose: true }),
  };
}
