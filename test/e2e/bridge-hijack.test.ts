// The MAC hijack on a shared bridge, end to end: a second softnet started with
// another VM's MAC. Before the fix it started, its guest sent one DHCP DISCOVER, the bridge moved
// the victim's MAC to the attacker's port, and 20 of 20 pings meant for the victim reached the
// attacker. Now softnet pins each VM's MAC to its own port and refuses to start when the bridge
// already has the MAC, whichever softnet comes first.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { commandForwarder, type ForwarderSpec, type Guest, softnet, Topology } from "./lib/index.ts";

let topology: Topology;

beforeAll(async () => {
  topology = await Topology.create();
});

afterAll(async () => {
  await topology?.teardown();
});

/**
 * softnet as Tart would run it, but told the VM's MAC is `mac` (what an attacker controls). A
 * refusal is noticed when the harness gives up waiting for the port (8 s, not the default 15).
 */
function softnetClaiming(mac: string): ForwarderSpec {
  return commandForwarder(
    `softnet --vm-mac-address ${mac}`,
    (context) => [
      process.execPath,
      "src/main.ts",
      "--vm-fd",
      "0",
      "--vm-mac-address",
      mac,
      "--bridge",
      context.bridge,
      "--log-level",
      "debug",
    ],
    { readyTimeoutMs: 8_000 },
  );
}

/** A guest whose NIC carries `mac` instead of its own (the attacker's VM, configured to match). */
async function guestWithMac(mac: string): Promise<Guest> {
  const guest = await topology.addGuest();
  await guest.exec(["ip", "link", "set", "eth0", "address", mac]);
  return guest;
}

/** Attaches, and returns softnet's error output when it refused to start (undefined when it started). */
async function attachOrRefusal(guest: Guest, spec: ForwarderSpec): Promise<string | undefined> {
  try {
    await guest.attach(spec);
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}

/** Pings `address` 20 times from the host (the gateway, as in the issue); returns how many replied. */
async function hostPingReplies(address: string): Promise<number> {
  const result = await topology.hostExec(["ping", "-n", "-c", "20", "-i", "0.2", "-W", "1", address], {
    timeoutMs: 30_000,
  });
  const match = result.stdout.match(/(\d+) received/);
  if (match === null) throw new Error(`ping printed no summary: ${result.stdout}${result.stderr}`);
  return Number(match[1]);
}

describe("a second softnet with a VM's MAC cannot take that VM's traffic", () => {
  test("victim first: the attacker's softnet is refused, and 20 of 20 pings still reach the victim", async () => {
    const victim = await topology.addGuest();
    const victimPort = (await victim.attach(softnet(["--log-level", "debug"]))).bridgePort;
    const lease = await victim.dhcp();

    const attacker = await guestWithMac(victim.mac);
    const capture = await topology.startCapture("eth0", attacker.namespace);
    const refusal = await attachOrRefusal(attacker, softnetClaiming(victim.mac));
    if (refusal === undefined) {
      // The attack as reported: one DHCP DISCOVER from the victim's MAC moves it to this port.
      attacker.startDhcp();
      await Bun.sleep(2_000);
    }
    const replies = await hostPingReplies(lease.address);
    await capture.stop();
    const stolen = await capture.count(`icmp[icmptype] == icmp-echo and dst host ${lease.address}`);

    // Counted first, so that a failure shows where the victim's traffic went.
    expect({ replies, stolen }).toEqual({ replies: 20, stolen: 0 });
    expect(refusal ?? "the attacker's softnet started").toContain(
      `softnet: MAC ${victim.mac} is already in use on bridge br0: port ${victimPort} has it, pinned (a static entry)`,
    );
    await attacker.stopAll();
    await victim.stopAll();
  }, 90_000);

  test("attacker first: the real VM's softnet is refused, naming the squatter's port", async () => {
    // Someone attached first with a MAC that another VM uses. Refusing the second is the right
    // outcome: the bridge cannot tell the owner from the squatter, and two ports with one MAC is
    // the hijack itself. The refusal names the port that has the MAC, for the administrator.
    const mac = "02:5e:10:00:00:aa";
    const attacker = await guestWithMac(mac);
    const squatterPort = (await attacker.attach(softnetClaiming(mac))).bridgePort;
    attacker.startDhcp();
    const victim = await guestWithMac(mac);
    const refusal = await attachOrRefusal(victim, softnetClaiming(mac));
    expect(refusal ?? "the second softnet with the same MAC started").toContain(
      `softnet: MAC ${mac} is already in use on bridge br0: port ${squatterPort} has it, pinned (a static entry)`,
    );
    await attacker.stopAll();
    await victim.stopAll();
  }, 90_000);

  test("once the first softnet stops, its MAC is free again: a VM restarted elsewhere is not locked out", async () => {
    const mac = "02:5e:10:00:00:bb";
    const first = await guestWithMac(mac);
    await first.attach(softnetClaiming(mac));
    await first.stopAll();
    const again = await guestWithMac(mac);
    expect(await attachOrRefusal(again, softnetClaiming(mac))).toBeUndefined();
    const lease = await again.dhcp();
    expect(await hostPingReplies(lease.address)).toBe(20);
    await again.stopAll();
  }, 90_000);
});
