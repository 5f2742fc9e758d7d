// The shared bridge, attacked by an unprivileged user with the release binary installed setuid root
// (which bridges, whose MAC), on a real topology (dnsmasq, guests) in network namespaces:
// - a user may attach VMs only to bridges root allows in /etc/softnet/bridge.conf; no
//   file, or a file the user could have written, means no bridge;
// - a user who starts softnet with another VM's MAC is refused, and the victim keeps its
//   traffic (before the fix, 20 of 20 pings for the victim reached the attacker).
// softnet reads the constant /etc/softnet/bridge.conf: each run gets a private /etc overlay
// (test/support/etc-overlay.ts), so the machine's /etc is never touched. Needs root on x86-64.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { SetuidLab } from "../../scripts/release/setuid-attacks.ts";
import {
  closeFd,
  commandForwarder,
  datagramSocketPair,
  type ForwarderSpec,
  type Guest,
  softnet,
  Topology,
} from "../e2e/lib/index.ts";
import { REQUIRED_IN_CI } from "../support/ci.ts";
import { EtcOverlay } from "../support/etc-overlay.ts";
import { canRunLinuxX64, isRoot, releaseDist } from "./release-build.ts";

const runnable = canRunLinuxX64 && isRoot;
let lab: SetuidLab;
let topology: Topology;
const ACL = "softnet/bridge.conf";
const overlays: EtcOverlay[] = [];

beforeAll(async () => {
  if (!runnable) return;
  lab = SetuidLab.create(join(await releaseDist(), "softnet-linux-x64"));
  topology = await Topology.create();
}, 300_000);

afterAll(async () => {
  await topology?.teardown();
  lab?.cleanup();
  for (const overlay of overlays) overlay.cleanup();
});

/** A private /etc for the attacker's runs, with /etc/softnet/bridge.conf as given (or none). */
function etcWith(acl: { text: string; uid?: number; mode?: number } | undefined): EtcOverlay {
  const overlay = EtcOverlay.create();
  overlays.push(overlay);
  if (acl !== undefined) overlay.writeFile(ACL, acl.text, { uid: acl.uid, mode: acl.mode });
  return overlay;
}

/** argv (for the bridge's namespace) of the setuid softnet, started by the attacker, with `etc`. */
function attackerSoftnet(etc: EtcOverlay, mac: string, bridge: string): string[] {
  return etc.wrap(
    lab.asAttacker(lab.binary, ["--vm-fd", "0", "--vm-mac-address", mac, "--bridge", bridge], {
      PATH: "/usr/bin:/bin",
    }),
  );
}

/** The attacker's setuid softnet as a forwarder for a guest (refusals noticed after 8 s). */
function attackerForwarder(etc: EtcOverlay, mac: string): ForwarderSpec {
  return commandForwarder(
    `setuid softnet --vm-mac-address ${mac}, run by ${lab.uid}`,
    (context) => attackerSoftnet(etc, mac, context.bridge),
    { readyTimeoutMs: 8_000 },
  );
}

/**
 * Runs the attacker's setuid softnet on a fresh VM socket until it exits (10 s at most): its exit
 * code and stderr, or code null when it was still running (it started: then it is killed).
 */
async function runToExit(etc: EtcOverlay, bridge: string): Promise<{ code: number | null; stderr: string }> {
  const pair = datagramSocketPair();
  const child = Bun.spawn(
    ["ip", "netns", "exec", topology.hostNamespace, ...attackerSoftnet(etc, "02:5e:20:00:00:01", bridge)],
    { stdin: pair.hostEnd, stdout: "pipe", stderr: "pipe" },
  );
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  const [exitCode, stderr] = await Promise.all([child.exited, new Response(child.stderr).text()]);
  clearTimeout(timer);
  closeFd(pair.vmEnd);
  closeFd(pair.hostEnd);
  return { code: child.signalCode === "SIGKILL" ? null : exitCode, stderr };
}

describe.skipIf(!runnable && !REQUIRED_IN_CI)("which bridges a user's setuid softnet may use", () => {
  test("without /etc/softnet/bridge.conf: refused, with one line naming the file", async () => {
    const result = await runToExit(etcWith(undefined), topology.bridge);
    expect(result.code, result.stderr).toBe(1);
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
    expect(result.stderr).toStartWith("softnet: /etc/softnet/bridge.conf does not exist (");
  }, 30_000);

  test("a bridge.conf the user owns (or could write) is not trusted", async () => {
    const owned = await runToExit(etcWith({ text: "allow all\n", uid: lab.uid }), topology.bridge);
    expect(owned.code, owned.stderr).toBe(1);
    expect(owned.stderr).toStartWith(
      `softnet: /etc/softnet/bridge.conf is owned by uid ${lab.uid}, not by root: softnet does not trust it`,
    );
    const writable = await runToExit(etcWith({ text: "allow all\n", mode: 0o666 }), topology.bridge);
    expect(writable.code, writable.stderr).toBe(1);
    expect(writable.stderr).toContain("is writable by its group or by others (mode 0666)");
  }, 30_000);

  test('a bridge the file does not allow ("allow br1", "deny br0") is refused with the reason', async () => {
    const other = await runToExit(etcWith({ text: "allow br1\n" }), topology.bridge);
    expect(other.code, other.stderr).toBe(1);
    expect(other.stderr).toStartWith(
      `softnet: uid ${lab.uid} may not use bridge br0: no line of /etc/softnet/bridge.conf says "allow br0" or "allow all"`,
    );
    const denied = await runToExit(etcWith({ text: "allow all\ndeny br0\n" }), topology.bridge);
    expect(denied.stderr).toStartWith(
      `softnet: uid ${lab.uid} may not use bridge br0: line 2 of /etc/softnet/bridge.conf says "deny br0"`,
    );
  }, 30_000);

  test('with "allow br0": the guest gets its lease through the user\'s setuid softnet', async () => {
    const guest = await topology.addGuest();
    const forwarder = await guest.attach(attackerForwarder(etcWith({ text: "allow br0\n" }), guest.mac));
    const lease = await guest.dhcp();
    expect(lease.router).toBe("192.168.64.1");
    expect(forwarder.log).toContain(`running as softnet-attacker (uid ${lab.uid}`);
    expect(await forwarder.stop("SIGINT")).toBe(0);
    await guest.stopAll();
  }, 60_000);
});

describe.skipIf(!runnable && !REQUIRED_IN_CI)("the MAC hijack by a user of the setuid softnet", () => {
  /** Pings `address` 20 times from the host, as in the issue; how many replied. */
  async function hostPingReplies(address: string): Promise<number> {
    const result = await topology.hostExec(["ping", "-n", "-c", "20", "-i", "0.2", "-W", "1", address], {
      timeoutMs: 30_000,
    });
    return Number(result.stdout.match(/(\d+) received/)?.[1] ?? -1);
  }

  async function guestWithMac(mac: string): Promise<Guest> {
    const guest = await topology.addGuest();
    await guest.exec(["ip", "link", "set", "eth0", "address", mac]);
    return guest;
  }

  test("the attacker's softnet with the victim's MAC is refused; 20 of 20 pings reach the victim, none the attacker", async () => {
    // The victim: another user's VM, its softnet started through sudo (root), with a lease.
    const victim = await topology.addGuest();
    const victimPort = (await victim.attach(softnet())).bridgePort;
    const lease = await victim.dhcp();

    // The attacker may use br0 (the administrator allowed it), and claims the victim's MAC.
    const attacker = await guestWithMac(victim.mac);
    const capture = await topology.startCapture("eth0", attacker.namespace);
    let refusal: string | undefined;
    try {
      await attacker.attach(attackerForwarder(etcWith({ text: "allow br0\n" }), victim.mac));
      attacker.startDhcp(); // the attack as reported: one DISCOVER moves the victim's MAC
      await Bun.sleep(2_000);
    } catch (error) {
      refusal = (error as Error).message;
    }
    const replies = await hostPingReplies(lease.address);
    await capture.stop();
    const stolen = await capture.count(`icmp[icmptype] == icmp-echo and dst host ${lease.address}`);

    expect({ replies, stolen }).toEqual({ replies: 20, stolen: 0 });
    expect(refusal ?? "the attacker's softnet started").toContain(
      `softnet: MAC ${victim.mac} is already in use on bridge br0: port ${victimPort} has it, pinned (a static entry)`,
    );
    await attacker.stopAll();
    await victim.stopAll();
  }, 90_000);

  test("attacker first: the victim's softnet is refused, naming the attacker's port", async () => {
    const mac = "02:5e:20:00:00:aa";
    const attacker = await guestWithMac(mac);
    const squatterPort = (await attacker.attach(attackerForwarder(etcWith({ text: "allow br0\n" }), mac)))
      .bridgePort;
    const victim = await guestWithMac(mac);
    let refusal: string | undefined;
    try {
      await victim.attach(
        commandForwarder(
          "the victim's softnet (root)",
          (context) => [
            process.execPath,
            "src/main.ts",
            "--vm-fd",
            "0",
            "--vm-mac-address",
            mac,
            "--bridge",
            context.bridge,
          ],
          { readyTimeoutMs: 8_000 },
        ),
      );
    } catch (error) {
      refusal = (error as Error).message;
    }
    expect(refusal ?? "the victim's softnet started").toContain(
      `softnet: MAC ${mac} is already in use on bridge br0: port ${squatterPort} has it, pinned (a static entry)`,
    );
    await attacker.stopAll();
    await victim.stopAll();
  }, 90_000);
});
