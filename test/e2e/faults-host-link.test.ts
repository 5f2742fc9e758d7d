// softnet when the host takes its link away: the TAP port deleted or taken off
// the bridge, the bridge deleted, all with `ip link` while a guest with a lease and --expose rules
// runs behind softnet. softnet must not run on cut off from the network: it exits 1 with one line
// saying what happened, and removes its nft rules on the way out. A file of its own because the
// last test deletes the topology's bridge.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { type Forwarder, type Guest, softnet, Topology } from "./lib/index.ts";

let topology: Topology;

beforeAll(async () => {
  topology = await Topology.create();
});

afterAll(async () => {
  await topology?.teardown();
});

async function guestBehindSoftnet(args: string[]): Promise<{ guest: Guest; forwarder: Forwarder }> {
  const guest = await topology.addGuest();
  const forwarder = await guest.attach(softnet(args));
  await guest.dhcp();
  await forwarder.daemon.waitForOutput(/port forwards installed/);
  return { guest, forwarder };
}

function figure(text: string): void {
  console.log(`figure: ${text}`);
}

async function nftTable(table: string): Promise<string | undefined> {
  const result = await topology.hostExec(["nft", "list", "table", "ip", table]);
  return result.code === 0 ? result.stdout : undefined;
}

describe("the TAP port or the bridge taken away while softnet runs", () => {
  /** Runs `fault`, then expects softnet to exit 1 with one `softnet: ...` line matching `why`. */
  async function expectFailure(
    forwarder: Forwarder,
    fault: () => Promise<unknown>,
    why: RegExp,
  ): Promise<void> {
    const table = `softnet_${forwarder.bridgePort}`;
    expect(await nftTable(table)).toBeDefined();
    const faultAt = performance.now();
    await fault();
    const status = await Promise.race([forwarder.exited, Bun.sleep(10_000).then(() => "still running")]);
    figure(
      `${why.source}: softnet exited ${status} ${(performance.now() - faultAt).toFixed(0)} ms after the fault`,
    );
    if (status === "still running") await forwarder.stop("SIGKILL");
    const finalLines = forwarder.log.split("\n").filter((line) => line.startsWith("softnet: "));
    expect({ status, finalLines }).toEqual({ status: 1, finalLines: [expect.stringMatching(why)] });
    expect(finalLines[0]).toMatch(/^softnet: [^:]+: .+/);
    expect(forwarder.log).toContain("port forwards to"); // ... removed, on the way out
    expect(await nftTable(table)).toBeUndefined();
    // Its TAP went with it (closing the TAP's fd deletes it, wherever the port was).
    expect((await topology.hostExec(["ip", "link", "show", forwarder.bridgePort])).code).not.toBe(0);
  }

  test("the TAP port deleted (ip link del): exit 1, one line naming it, --expose rules removed", async () => {
    const { guest, forwarder } = await guestBehindSoftnet(["--expose", "2233:22"]);
    const port = forwarder.bridgePort;
    await expectFailure(
      forwarder,
      () => topology.hostExec(["ip", "link", "del", port]),
      new RegExp(`TAP port ${port} was deleted`),
    );
    await guest.stopAll();
  });

  test("the TAP port taken off the bridge (ip link set nomaster): exit 1, one line, rules removed", async () => {
    const { guest, forwarder } = await guestBehindSoftnet(["--expose", "2234:22"]);
    const port = forwarder.bridgePort;
    await expectFailure(
      forwarder,
      () => topology.hostExec(["ip", "link", "set", port, "nomaster"]),
      new RegExp(`TAP port ${port} was taken off bridge ${topology.bridge}`),
    );
    await guest.stopAll();
  });

  // Last: the topology has no bridge afterwards.
  test("the bridge deleted (ip link del br0): exit 1, one line naming it, --expose rules removed", async () => {
    const { guest, forwarder } = await guestBehindSoftnet(["--expose", "2235:22"]);
    await expectFailure(
      forwarder,
      () => topology.hostExec(["ip", "link", "del", topology.bridge]),
      new RegExp(`bridge ${topology.bridge} was deleted`),
    );
    await guest.stopAll();
  });
});
