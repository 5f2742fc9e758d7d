// softnet under faults, end to end: what the
// host or the VM does to softnet while it runs, and what softnet must do about it. Each test
// breaks one thing for real: nft refused by the kernel or unable to run while the lease changes,
// dnsmasq killed and started again, a million forged frames, the VM's end of the socket pair
// closed in the middle of a burst. (The TAP port and the bridge taken away: faults-host-link.)
// Figures (times, memory, log lines) are printed as `figure: ...`, never asserted as timings.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { requireTools } from "../support/tools.ts";
import {
  ADDRESSES,
  closeFd,
  datagramSocketPair,
  type Forwarder,
  type Guest,
  type GuestLease,
  softnet,
  Topology,
  waitFor,
} from "./lib/index.ts";
import { processStats } from "./lib/process-stats.ts";
import { SpoofFlood } from "./lib/spoof-flood.ts";

let topology: Topology;

beforeAll(async () => {
  // Beyond what the topology checks: the flooder is built with cc, nft is broken with nsenter + mount.
  requireTools(["cc", "hping3", "nft", "nsenter", "mount"]);
  topology = await Topology.create();
});

afterAll(async () => {
  await topology?.teardown();
});

function figure(text: string): void {
  console.log(`figure: ${text}`);
}

/** A fresh guest behind its own softnet, with a lease (udhcpc keeps running and renewing). */
async function guestBehindSoftnet(
  args: string[] = [],
): Promise<{ guest: Guest; forwarder: Forwarder; lease: GuestLease }> {
  const guest = await topology.addGuest();
  const forwarder = await guest.attach(softnet(args));
  const lease = await guest.dhcp();
  return { guest, forwarder, lease };
}

/** Waits for softnet to print `pattern`; on timeout the error carries what it did print. */
async function softnetSays(forwarder: Forwarder, pattern: RegExp, timeoutMs = 10_000): Promise<void> {
  await forwarder.daemon.waitForOutput(pattern, timeoutMs);
}

async function nftTable(table: string): Promise<string | undefined> {
  const result = await topology.hostExec(["nft", "list", "table", "ip", table]);
  return result.code === 0 ? result.stdout : undefined;
}

/** softnet's lines (`softnet[pid] level: ...`), and its final line on stderr (`softnet: ...`). */
function softnetLines(forwarder: Forwarder): string[] {
  return forwarder.log.split("\n").filter((line) => /^softnet(\[\d+\] \w+)?: /.test(line));
}

/**
 * Moves the guest's lease to `newAddress` for real: dnsmasq is restarted with its lease file
 * saying the guest's MAC has `newAddress`, so the guest's next renewal of its old address is
 * refused (NAK), and the guest then asks again and is given the new one. Resolves with the new
 * lease as the guest applied it.
 */
async function moveLease(guest: Guest, newAddress: string): Promise<GuestLease> {
  await topology.stopDhcpServer("SIGTERM");
  const leases = readFileSync(topology.dnsmasqLeaseFile, "utf8");
  const moved = leases
    .split("\n")
    .map((line) => {
      const fields = line.split(" ");
      if (fields[1] === guest.mac) fields[2] = newAddress;
      return fields.join(" ");
    })
    .join("\n");
  expect(moved).toContain(`${guest.mac} ${newAddress} `);
  writeFileSync(topology.dnsmasqLeaseFile, moved);
  await topology.startDhcpServer();
  // Renew now (udhcpc's SIGUSR1) rather than at T1. The NAK makes udhcpc start over (its script
  // forgets the old lease), so the sign of success is the new address, not a renewal count.
  const client = guest.daemons().find((daemon) => daemon.name.endsWith("udhcpc"));
  client?.process.kill("SIGUSR1");
  return waitFor(
    `${guest.name} to be given ${newAddress}`,
    () => {
      const lease = guest.lease();
      return lease?.address === newAddress ? lease : undefined;
    },
    { timeoutMs: 20_000 },
  );
}

describe("a flood of 1 M spoofed frames from the VM", () => {
  test("softnet drops them all with bounded logs and flat memory, and still answers SIGINT at once", async () => {
    const vmMac = "02:5e:30:00:00:01";
    const pair = datagramSocketPair();
    // --log-level debug: every dropped frame goes through the drop log's rate limit, not only spoofs.
    const forwarder = await softnet(["--log-level", "debug"]).start({
      hostNamespace: topology.hostNamespace,
      bridge: topology.bridge,
      vmMac,
      guestIndex: 100,
      hostEnd: pair.hostEnd,
    });
    closeFd(pair.hostEnd);
    try {
      const pid = forwarder.daemon.pid;
      // Warm-up: the JIT compiles the drop path, the drop log's first lines are written.
      const warmUp = await (await SpoofFlood.start(pair.vmEnd, vmMac, 100_000)).result();
      expect(warmUp.sent).toBe(100_000);
      await Bun.sleep(500); // softnet empties its receive queue
      const before = processStats(pid);
      const linesBefore = softnetLines(forwarder).length;

      const flood = await (await SpoofFlood.start(pair.vmEnd, vmMac, 1_000_000)).result();
      expect(flood).toMatchObject({ sent: 1_000_000, stoppedBy: "count" });
      await Bun.sleep(500);
      const after = processStats(pid);
      const linesDuring = softnetLines(forwarder).length - linesBefore;
      figure(
        `1 M spoofed frames in ${flood.seconds.toFixed(2)} s (${Math.round(flood.sent / flood.seconds)} frames/s ` +
          `taken by softnet); RSS ${before.rssKiB} → ${after.rssKiB} KiB; fds ${before.fds} → ${after.fds}; ` +
          `${linesDuring} log lines; softnet CPU ${(after.cpuSeconds - before.cpuSeconds).toFixed(2)} s`,
      );
      // Rate-limited: each drop reason may log 5 lines at once, then 1 a second. Four reasons are
      // forged here; the host's own chatter (IPv6, ARP) adds a few more. A log line per frame
      // would be a million.
      const reasonBudget = 8;
      expect(linesDuring).toBeLessThanOrEqual(reasonBudget * (5 + Math.ceil(flood.seconds) + 1));
      for (const reason of ["mac-spoof", "arp-spoof", "dhcp-spoof", "no-lease"]) {
        expect(forwarder.log).toContain(`dropped from VM: ${reason}`);
      }
      expect(forwarder.log).toMatch(/\(\d{4,} more like it not logged\)/);
      // Flat: not a byte per frame kept (1 M frames would show as ≥ 1 MiB per byte kept).
      expect(after.rssKiB - before.rssKiB).toBeLessThan(8 * 1024);
      expect(after.fds).toBe(before.fds);

      // SIGINT in the middle of an unbounded flood: softnet is never idle, the signal must still
      // get through between two batches.
      const endless = await SpoofFlood.start(pair.vmEnd, vmMac, 0);
      await Bun.sleep(300);
      const signalledAt = performance.now();
      let loggedAfterMs = -1;
      const logged = forwarder.daemon.waitForOutput(/SIGINT received: stopping/, 5_000).then(() => {
        loggedAfterMs = performance.now() - signalledAt;
      });
      const status = await forwarder.stop("SIGINT", 5_000); // SIGKILL after 5 s: status 137
      const exitedAfterMs = performance.now() - signalledAt;
      await logged;
      const stoppedFlood = await endless.result();
      figure(
        `SIGINT during an unbounded flood: "SIGINT received" logged after ${loggedAfterMs.toFixed(1)} ms, ` +
          `exited (status ${status}) after ${exitedAfterMs.toFixed(1)} ms; the flood had sent ${stoppedFlood.sent} frames`,
      );
      expect(status).toBe(0);
      expect(forwarder.log).toContain("stopped (SIGINT)");
    } finally {
      await forwarder.stop("SIGKILL");
      closeFd(pair.vmEnd);
    }
  });
});

describe("the VM end closed during a burst", () => {
  test("in the middle of a spoof flood: softnet drains what was queued and exits 0", async () => {
    const vmMac = "02:5e:30:00:00:02";
    const pair = datagramSocketPair();
    const forwarder = await softnet().start({
      hostNamespace: topology.hostNamespace,
      bridge: topology.bridge,
      vmMac,
      guestIndex: 101,
      hostEnd: pair.hostEnd,
    });
    closeFd(pair.hostEnd);
    const flood = await SpoofFlood.start(pair.vmEnd, vmMac, 0);
    closeFd(pair.vmEnd); // the flood holds the only VM end left: killing it closes it
    await Bun.sleep(300);
    const closedAt = performance.now();
    await flood.daemon.stop("SIGKILL");
    const status = await Promise.race([forwarder.exited, Bun.sleep(10_000).then(() => "still running")]);
    figure(
      `VM end closed during a spoof flood: softnet exited ${status} ${(performance.now() - closedAt).toFixed(0)} ms later`,
    );
    if (status === "still running") await forwarder.stop("SIGKILL");
    expect({ status, log: softnetLines(forwarder).slice(-3) }).toMatchObject({ status: 0 });
    expect(forwarder.log).toContain("stopped (the VM closed its end)");
    expect(forwarder.log).not.toMatch(/ error: |^softnet: /m);
    expect((await topology.hostExec(["ip", "link", "show", forwarder.bridgePort])).code).not.toBe(0);
  });

  test("a real guest in a flood both ways (hping3 --flood from it and to it): its NIC goes, softnet exits 0", async () => {
    const { guest, forwarder, lease } = await guestBehindSoftnet();
    const fromGuest = guest.spawn("hping3 --flood", [
      "hping3",
      "--flood",
      "--udp",
      "-p",
      "9",
      ADDRESSES.globalHost,
    ]);
    const toGuest = topology.spawn(topology.hostNamespace, "hping3 --flood to the guest", [
      "hping3",
      "--flood",
      "--udp",
      "-p",
      "9",
      lease.address,
    ]);
    await Bun.sleep(1_000);
    const closedAt = performance.now();
    await guest.closeVmEnd();
    const status = await Promise.race([forwarder.exited, Bun.sleep(10_000).then(() => "still running")]);
    const exitedAfterMs = performance.now() - closedAt;
    await fromGuest.stop("SIGKILL");
    await toGuest.stop("SIGKILL");
    if (status === "still running") await forwarder.stop("SIGKILL");
    const summary = forwarder.log.match(/forwarded (\d+) frames to the host and (\d+) to the VM/);
    figure(
      `VM end closed in a flood both ways: softnet exited ${status} ${exitedAfterMs.toFixed(0)} ms later, ` +
        `having forwarded ${summary?.[1]} frames to the host and ${summary?.[2]} to the VM`,
    );
    expect({ status, log: softnetLines(forwarder).slice(-3) }).toMatchObject({ status: 0 });
    expect(forwarder.log).toContain("stopped (the VM closed its end)");
    // The burst was real: thousands of frames each way when the NIC went.
    expect(Number(summary?.[1])).toBeGreaterThan(1_000);
    expect(Number(summary?.[2])).toBeGreaterThan(1_000);
    expect(forwarder.log).not.toMatch(/ error: |^softnet: /m);
    await guest.stopAll();
  });
});

describe("the DHCP server restarted mid-lease", () => {
  test("dnsmasq killed and started again with its lease file: the lease and the traffic continue", async () => {
    const { guest, forwarder, lease } = await guestBehindSoftnet();
    await softnetSays(forwarder, new RegExp(`lease learned: ${lease.address.replaceAll(".", "\\.")}`));
    const ping = guest.spawn("ping", ["ping", "-n", "-i", "0.2", ADDRESSES.globalHost]);
    await Bun.sleep(1_000);
    await topology.stopDhcpServer("SIGKILL");
    // While it is down the guest keeps its address and its traffic; a renewal now would go unanswered.
    await Bun.sleep(2_000);
    await topology.startDhcpServer();
    const renewed = await guest.renewLease(15_000);
    await Bun.sleep(1_000);
    await ping.stop("SIGINT");
    expect(renewed.address).toBe(lease.address);
    await softnetSays(forwarder, new RegExp(`lease renewed: ${lease.address.replaceAll(".", "\\.")}`));
    expect(forwarder.log).not.toContain("lease refused");
    expect(forwarder.log).not.toContain("expired");
    const stats = ping.log.match(/(\d+) packets transmitted, (\d+) received/);
    const [sent, received] = [Number(stats?.[1]), Number(stats?.[2])];
    figure(`ping through a dnsmasq restart: ${received}/${sent} replies`);
    expect(sent).toBeGreaterThan(10);
    expect(received).toBeGreaterThanOrEqual(sent - 1); // the last one may be in flight at SIGINT
    expect(await guest.ping(ADDRESSES.globalHost)).toBe(true);
    expect(topology.dhcpServerLeases().find((entry) => entry.mac === guest.mac)?.address).toBe(lease.address);
    await guest.stopAll();
  });
});

describe("nft failing while the lease changes", () => {
  const installedTo = (port: number, address: string) =>
    new RegExp(`port forwards installed: TCP ${port}→22 to ${address.replaceAll(".", "\\.")}\\b`);

  test("nft cannot run: a warning, retried, and the rules follow the new lease once it can", async () => {
    const { guest, forwarder, lease } = await guestBehindSoftnet(exposed(2231));
    await guest.startTcpServer(22, "hello-from-guest-ssh");
    await softnetSays(forwarder, installedTo(2231, lease.address));
    const table = `softnet_${forwarder.bridgePort}`;
    const pid = forwarder.daemon.pid;
    // softnet runs in a mount namespace of its own (`ip netns exec` makes one): put /bin/false over
    // nft there, and only there, as a broken or half-upgraded nftables package would be.
    const nft = "/usr/sbin/nft"; // the first place softnet looks (nftables.ts)
    expect(existsSync(nft)).toBe(true);
    const broken = await topology.hostExec([
      "nsenter",
      "-t",
      String(pid),
      "-m",
      "mount",
      "--bind",
      "/bin/false",
      nft,
    ]);
    expect(broken.code).toBe(0);
    // The nft session softnet keeps already runs: end it, so softnet must start nft again. The
    // forwards go with it (their table is owned by its socket), and nothing comes back while nft
    // cannot run.
    killNftOf(pid);
    try {
      const newAddress = "192.168.64.77";
      const linesBefore = softnetLines(forwarder).length;
      await moveLease(guest, newAddress);
      await softnetSays(forwarder, new RegExp(`lease learned: ${newAddress.replaceAll(".", "\\.")}`));
      await softnetSays(forwarder, /warn: could not update port forwards/);
      // Retried every second for 4 s, all failing: said once, not once a second.
      await Bun.sleep(4_000);
      const failures = softnetLines(forwarder)
        .slice(linesBefore)
        .filter((line) => line.includes("could not update port forwards"));
      figure(`nft unable to run for ~5 s: ${failures.length} warning line(s): ${failures[0]}`);
      expect(failures.length).toBeGreaterThanOrEqual(1);
      expect(failures.length).toBeLessThanOrEqual(2);
      expect(failures.every((line) => line.includes(" warn: "))).toBe(true);
      // The old rules did not stay behind pointing at the old address.
      expect(await nftTable(table)).toBeUndefined();
    } finally {
      await topology.hostExec(["nsenter", "-t", String(pid), "-m", "umount", nft]);
    }
    await softnetSays(forwarder, installedTo(2231, "192.168.64.77"), 5_000);
    const rules = await nftTable(table);
    expect(rules).toContain("dnat to 192.168.64.77:22");
    expect(rules).not.toContain(lease.address);
    const viaHost = await topology.hostExec(["nc", "-N", "-w", "2", ADDRESSES.gateway, "2231"], {
      stdin: "",
    });
    expect(viaHost.stdout).toContain("hello-from-guest-ssh");
    expect(await forwarder.stop("SIGINT")).toBe(0);
    expect(await nftTable(table)).toBeUndefined();
    await guest.stopAll();
  });

  test("the kernel refuses (another program owns a table of that name): a warning, retried, installed once it is gone", async () => {
    const { guest, forwarder, lease } = await guestBehindSoftnet(exposed(2232));
    await softnetSays(forwarder, installedTo(2232, lease.address));
    const table = `softnet_${forwarder.bridgePort}`;
    // A table with the owner flag belongs to the netlink socket that created it: nobody else may
    // change or delete it, and it disappears when that socket closes (nft -i keeps one open).
    const owner = Bun.spawn(["ip", "netns", "exec", topology.hostNamespace, "nft", "-i"], {
      stdin: "pipe",
      stdout: "pipe",
      stderr: "pipe",
    });
    // softnet's own table is owned by its nft session too: stop softnet, end that session (the
    // table goes with it) and let the other program take the name before softnet runs again.
    process.kill(forwarder.daemon.pid, "SIGSTOP");
    killNftOf(forwarder.daemon.pid);
    await waitFor(
      "softnet's table to go with its nft session",
      async () => (await nftTable(table)) === undefined,
    );
    try {
      owner.stdin.write(`add table ip ${table} { flags owner; }\n`);
      await owner.stdin.flush();
      await waitFor("the foreign table to be owned", async () =>
        (await nftTable(table))?.includes("flags owner"),
      );
      const linesBefore = softnetLines(forwarder).length;
      process.kill(forwarder.daemon.pid, "SIGCONT");
      const newAddress = "192.168.64.78";
      await moveLease(guest, newAddress);
      // The warning says what nft said and which table to look at.
      await softnetSays(
        forwarder,
        new RegExp(`warn: could not update port forwards[^\\n]*Operation not permitted[^\\n]*${table}`),
      );
      await Bun.sleep(3_000);
      const failures = softnetLines(forwarder)
        .slice(linesBefore)
        .filter((line) => line.includes("could not update port forwards"));
      figure(`nft refused by the kernel for ~4 s: ${failures.length} warning line(s): ${failures[0]}`);
      expect(failures.length).toBeLessThanOrEqual(2);
    } finally {
      owner.stdin.end(); // the owner's socket closes, and its table with it
      await owner.exited;
    }
    await softnetSays(forwarder, installedTo(2232, "192.168.64.78"), 5_000);
    const rules = await nftTable(table);
    expect(rules).toContain("dnat to 192.168.64.78:22");
    expect(await forwarder.stop("SIGINT")).toBe(0);
    expect(await nftTable(table)).toBeUndefined();
    await guest.stopAll();
  });
});

/** Kills the nft session a softnet keeps (its child named nft), as a crash or a user could. */
function killNftOf(softnetPid: number): void {
  for (const name of readdirSync("/proc").filter((entry) => /^\d+$/.test(entry))) {
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const parent = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1];
      if (parent === String(softnetPid) && readFileSync(`/proc/${name}/comm`, "utf8").trim() === "nft") {
        process.kill(Number(name), "SIGKILL");
      }
    } catch {
      // exited meanwhile
    }
  }
}

function exposed(port: number): string[] {
  return ["--expose", `${port}:22`];
}
