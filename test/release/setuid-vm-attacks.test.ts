// The VM-against-VM attacks (DHCP identities, isolation) with softnet as it is deployed on a shared
// host: the Linux release binary installed setuid root, started by an unprivileged user
// (softnet-attacker) for every guest, victims and attackers alike. The scenarios are the e2e
// suite's own (test/e2e/lib/vm-attacks.ts), against real dnsmasq, dhcpcd, hping3 and tcpdump.
// Needs root on Linux x86-64 and scripts/e2e-deps.sh.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { ATTACKER, SetuidLab } from "../../scripts/release/setuid-attacks.ts";
import {
  commandForwarder,
  drainWithClientIds,
  duidClient,
  floodToUnknownMacs,
  forgedClientPort,
  leaseAfterStop,
  neighbourWithIsolationOff,
  nextHopElsewhere,
  type SoftnetFactory,
  stealLeaseWithClientId,
  Topology,
  takeHostName,
} from "../e2e/lib/index.ts";
import { REQUIRED_IN_CI } from "../support/ci.ts";
import { EtcOverlay } from "../support/etc-overlay.ts";
import { canRunLinuxX64, isRoot, releaseDist } from "./release-build.ts";

const runnable = canRunLinuxX64 && isRoot;
let lab: SetuidLab;
/** /etc/softnet/bridge.conf for the setuid runs: a user may join only the bridges root allows. */
let etc: EtcOverlay;
let small: Topology;
let topology: Topology;

beforeAll(async () => {
  if (!runnable) return;
  if (Bun.which("dhcpcd", { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" }) === null) {
    throw new Error("missing dhcpcd: run scripts/e2e-deps.sh (package dhcpcd-base)");
  }
  lab = SetuidLab.create(join(await releaseDist(), "softnet-linux-x64"));
  etc = EtcOverlay.create();
  etc.writeFile("softnet/bridge.conf", "allow br0\n");
  small = await Topology.create({ dhcpRange: { first: "192.168.64.10", last: "192.168.64.14" } });
  topology = await Topology.create();
}, 300_000);

afterAll(async () => {
  await small?.teardown();
  await topology?.teardown();
  lab?.cleanup();
  etc?.cleanup();
});

/** The setuid binary run by the unprivileged user, as Tart would start it for that user's VM. */
const setuidSoftnet: SoftnetFactory = (args) =>
  commandForwarder(`setuid softnet (run by ${ATTACKER}) ${args.join(" ")}`.trim(), (context) =>
    etc.wrap(
      lab.asAttacker(
        lab.binary,
        ["--vm-fd", "0", "--vm-mac-address", context.vmMac, "--bridge", context.bridge, ...args],
        { PATH: "/usr/bin:/bin" },
      ),
    ),
  );

function runsAsAttacker(log: string | undefined): void {
  expect(log).toContain(`running as ${ATTACKER} (uid ${lab.uid}`);
}

describe.skipIf(!runnable && !REQUIRED_IN_CI)(
  "DHCP identity, setuid release binary run by an unprivileged user",
  () => {
    test("eight client identifiers make one lease; the next VM still gets an address from a pool of five", async () => {
      const outcome = await drainWithClientIds(small, setuidSoftnet, 8);
      runsAsAttacker(outcome.attacker.forwarder?.log);
      expect(outcome.next.error).toBeUndefined();
      expect(outcome.attackerLeases.length).toBe(1);
      expect(new Set(outcome.addresses).size).toBe(1);
    }, 180_000);

    test("udhcpc -r <victim address> -x 0x3d:01<victim MAC> does not get the victim's lease", async () => {
      const outcome = await stealLeaseWithClientId(topology, setuidSoftnet);
      runsAsAttacker(outcome.thief.forwarder?.log);
      expect(outcome.thiefLease?.address).not.toBe(outcome.victimLease.address);
      expect(outcome.serverLease?.mac).toBe(outcome.victim.mac);
      expect(outcome.neighbourAfter?.mac).toBe(outcome.victim.mac);
      expect(outcome.victimReachable).toBe(true);
    }, 180_000);

    test("from port 68 with forged sources and no lease, nothing reaches the gateway's DNS or other ports", async () => {
      const outcome = await forgedClientPort(topology, setuidSoftnet);
      runsAsAttacker(outcome.attacker.forwarder?.log);
      expect(outcome.forgedOnBridge).toBe(0);
      expect(outcome.answersOnBridge).toBe(0);
      expect(outcome.queriesLogged).toEqual([]);
    }, 180_000);

    test("a second VM asking as the first's host name does not take the name at dnsmasq", async () => {
      const outcome = await takeHostName(topology, setuidSoftnet, "setuidvm");
      expect(outcome.secondLease).toBeDefined();
      expect(outcome.answers).not.toContain(outcome.secondLease!.address);
    }, 180_000);

    test("SIGINT to the setuid softnet releases the lease: a VM with another MAC takes the only address", async () => {
      const single = await Topology.create({ dhcpRange: { first: "192.168.64.30", last: "192.168.64.30" } });
      try {
        const outcome = await leaseAfterStop(single, setuidSoftnet, "signal");
        expect(outcome.leaseAfterStop).toBeUndefined();
        expect(outcome.secondLease?.address).toBe("192.168.64.30");
      } finally {
        await single.teardown();
      }
    }, 180_000);

    test("a DUID client (dhcpcd) gets its lease, and its identifier never reaches the bridge", async () => {
      const outcome = await duidClient(topology, setuidSoftnet);
      expect(outcome.clientIdsSent.length).toBeGreaterThan(0);
      expect(outcome.clientIdsOnBridge).toEqual([]);
      expect(outcome.serverLease?.address).toBe(outcome.address);
      expect(outcome.reachesGateway).toBe(true);
    }, 180_000);
  },
);

describe.skipIf(!runnable && !REQUIRED_IN_CI)(
  "isolation, setuid release binary run by an unprivileged user",
  () => {
    test("a neighbour with --allow 0.0.0.0/0 gets 0 of its UDP packets and pings into an isolated VM", async () => {
      const outcome = await neighbourWithIsolationOff(topology, setuidSoftnet, 20);
      runsAsAttacker(outcome.attacker.forwarder?.log);
      expect(outcome.fromAttackerAtVictim).toBe(0);
      expect(outcome.udpAtOpen).toBe(20);
      expect(outcome.hostPingsVictim).toBe(true);
    }, 180_000);

    test("another router on the bridge as next hop sees nothing of the VM's traffic for the internet", async () => {
      const outcome = await nextHopElsewhere(topology, setuidSoftnet);
      runsAsAttacker(outcome.guest.forwarder?.log);
      expect(outcome.atRouter).toBe(0);
      expect(outcome.reachedAfter).toBe(true);
    }, 180_000);

    test("unicast flooded to unknown MACs reaches no VM behind softnet", async () => {
      const outcome = await floodToUnknownMacs(topology, setuidSoftnet);
      expect(outcome.atControl).toBe(26);
      expect(outcome.atIsolated).toBe(0);
      expect(outcome.atOpen).toBe(0);
    }, 180_000);
  },
);
