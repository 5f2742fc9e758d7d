// Counters on demand and JSON logs, end to end with a real guest: SIGUSR2 makes a running softnet
// print what it has done (and it keeps running), the same comes at exit, the numbers match what a
// tcpdump witness on the bridge saw, and --log-format json turns every line into one JSON object.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readWithTcpdump } from "../support/capture-readers.ts";
import { REQUIRED_IN_CI } from "../support/ci.ts";
import { ADDRESSES, closeFd, datagramSocketPair, softnet, Topology, waitFor } from "./lib/index.ts";

const e2e = describe.skipIf(process.getuid?.() !== 0 && !REQUIRED_IN_CI);

let topology: Topology;

beforeAll(async () => {
  if (process.getuid?.() !== 0 && !REQUIRED_IN_CI) return;
  topology = await Topology.create();
});

afterAll(async () => {
  await topology?.teardown();
});

interface Side {
  frames: number;
  bytes: number;
  deliveredFrames: number;
  deliveredBytes: number;
  dropped: number;
  unsent: number;
}

/** The "from the VM" / "from the host" lines of the last counters report with this trigger. */
function counters(log: string, trigger: string): { fromVm: Side; fromHost: Side; block: string } {
  const start = log.lastIndexOf(`counters (${trigger}) after`);
  if (start < 0) throw new Error(`no counters (${trigger}) in:\n${log}`);
  const block = log.slice(start).split("\n").slice(0, 10).join("\n");
  const side = (from: string, to: string): Side => {
    const match = new RegExp(
      `from ${from}: (\\d+) frames, (\\d+) bytes; to ${to}: (\\d+) frames, (\\d+) bytes; dropped (\\d+); unsent for lack of buffer space (\\d+)`,
    ).exec(block);
    if (match === null) throw new Error(`no "from ${from}" line in:\n${block}`);
    const [frames, bytes, deliveredFrames, deliveredBytes, dropped, unsent] = match.slice(1).map(Number);
    return { frames, bytes, deliveredFrames, deliveredBytes, dropped, unsent } as Side;
  };
  return { fromVm: side("the VM", "the host"), fromHost: side("the host", "the VM"), block };
}

e2e("counters on SIGUSR2 and at exit", () => {
  test("a running softnet prints them on SIGUSR2, keeps running, and the numbers are what crossed", async () => {
    const guest = await topology.addGuest();
    const witness = await topology.startCapture();
    const forwarder = await guest.attach(softnet(["--expose", "2299:22"]));
    const lease = await guest.dhcp();
    expect(await guest.ping(ADDRESSES.globalHost, { count: 2 })).toBe(true);
    // A forged source: counted as dropped, per reason.
    await guest.exec(
      ["hping3", "-c", "2", "-i", "u100000", "--icmp", "-a", "192.168.64.201", ADDRESSES.globalHost],
      {
        timeoutMs: 10_000,
      },
    );
    await waitFor("the port forward", () => forwarder.log.includes("port forwards installed"));

    forwarder.daemon.process.kill("SIGUSR2");
    await forwarder.daemon.waitForOutput(/counters \(SIGUSR2\) after/);
    await waitFor("the whole report", () => forwarder.log.includes("  port forwards:"));
    const first = counters(forwarder.log, "SIGUSR2");
    expect(first.block).toMatch(/dropped: [^\n]*2 ip-spoof/);
    expect(first.block).toContain(`lease: ${lease.address}, expires in `);
    expect(first.block).toContain(`DNS ${ADDRESSES.gateway}, ${ADDRESSES.secondDnsServer}`);
    expect(first.block).toContain(`port forwards: TCP 2299→22 to ${lease.address}`);
    expect(first.fromVm.dropped).toBeGreaterThanOrEqual(2);
    expect(first.fromVm.deliveredFrames).toBeGreaterThanOrEqual(4); // DHCP + 2 echo requests at least

    // Still running, still forwarding, and the counters move.
    expect(forwarder.running).toBe(true);
    expect(await guest.ping(ADDRESSES.globalHost, { count: 2 })).toBe(true);
    expect(await forwarder.stop("SIGINT")).toBe(0);
    await witness.stop();

    const atExit = counters(forwarder.log, "exit");
    expect(forwarder.log.indexOf("counters (exit)")).toBeGreaterThan(
      forwarder.log.indexOf("stopped (SIGINT)"),
    );
    expect(atExit.fromVm.deliveredFrames).toBeGreaterThanOrEqual(first.fromVm.deliveredFrames + 2);
    expect(atExit.fromVm.frames).toBe(
      atExit.fromVm.deliveredFrames + atExit.fromVm.dropped + atExit.fromVm.unsent,
    );
    // What softnet says it handed to the host is what the bridge saw from the guest: frames and
    // bytes. Less the DHCPRELEASE softnet itself sends for the VM at the stop (from the leased
    // address to the server; the guest's own renewals would not come within this test's seconds):
    // softnet's frame, logged, not one the VM sent.
    const release = `src host ${lease.address} and udp dst port 67`;
    expect(forwarder.log).toContain(`released the lease for ${lease.address}`);
    expect(await readWithTcpdump(witness.pcapPath, `ether src ${guest.mac} and ${release}`)).toHaveLength(1);
    const fromGuest = await readWithTcpdump(witness.pcapPath, `ether src ${guest.mac} and not (${release})`);
    expect(atExit.fromVm.deliveredFrames).toBe(fromGuest.length);
    expect(atExit.fromVm.deliveredBytes).toBe(fromGuest.reduce((sum, hex) => sum + hex.length / 2, 0));
    expect(atExit.fromHost.deliveredFrames).toBeGreaterThanOrEqual(4); // OFFER/ACK + echo replies
    await guest.stopAll();
  });

  test("--log-level error: SIGUSR2 still prints (a person asked), the exit report does not", async () => {
    const guest = await topology.addGuest();
    const forwarder = await guest.attach(softnet(["--log-level", "error"]));
    await guest.dhcp();
    forwarder.daemon.process.kill("SIGUSR2");
    await forwarder.daemon.waitForOutput(/counters \(SIGUSR2\)/);
    expect(await forwarder.stop("SIGINT")).toBe(0);
    expect(forwarder.log).not.toContain("counters (exit)");
    expect(forwarder.log).not.toContain("lease learned");
    await guest.stopAll();
  });
});

e2e("--log-format json", () => {
  test("every line is one JSON object with time, level, pid, event and message; the events carry fields", async () => {
    const guest = await topology.addGuest();
    const forwarder = await guest.attach(softnet(["--log-format", "json", "--log-level", "debug"]));
    const lease = await guest.dhcp();
    await guest.exec(["hping3", "-c", "1", "--icmp", "-a", "192.168.64.202", ADDRESSES.globalHost], {
      timeoutMs: 10_000,
    });
    await waitFor("the drop to be logged", () => forwarder.log.includes('"reason":"ip-spoof"'));
    forwarder.daemon.process.kill("SIGUSR2");
    await waitFor("the counters", () => forwarder.log.includes('"event":"counters"'));
    expect(await forwarder.stop("SIGINT")).toBe(0);

    const lines = forwarder.log.split("\n").filter((line) => line !== "");
    const records = lines.map((line) => {
      try {
        return JSON.parse(line) as Record<string, unknown>;
      } catch {
        throw new Error(`not a JSON line: ${line}`);
      }
    });
    for (const record of records) {
      expect(typeof record.time).toBe("string");
      expect(Number.isNaN(Date.parse(record.time as string))).toBe(false);
      expect(["error", "warn", "info", "debug"]).toContain(record.level as string);
      expect(record.pid).toBe(forwarder.daemon.pid);
      expect(typeof record.event).toBe("string");
      expect(typeof record.message).toBe("string");
    }
    const byEvent = (event: string) => records.filter((record) => record.event === event);
    expect(byEvent("startup")[0]).toMatchObject({
      vm_mac: guest.mac,
      host_link: expect.stringContaining("tap "),
    });
    expect(byEvent("lease-learned")[0]).toMatchObject({
      lease: { address: lease.address, dns: [ADDRESSES.gateway, ADDRESSES.secondDnsServer] },
    });
    expect(byEvent("drop").find((record) => record.reason === "ip-spoof")).toMatchObject({
      level: "warn",
      direction: "from-vm",
      frame: expect.stringContaining("192.168.64.202"),
    });
    const [onDemand, atExit] = byEvent("counters");
    expect(onDemand).toMatchObject({ trigger: "SIGUSR2", lease: { address: lease.address } });
    expect((onDemand!.from_vm as { dropped: Record<string, number> }).dropped["ip-spoof"]).toBe(1);
    expect(byEvent("signal")[0]).toMatchObject({ signal: "SIGINT" });
    expect(byEvent("stop")[0]).toMatchObject({ cause: "SIGINT" });
    expect(atExit).toMatchObject({ trigger: "exit" });
    await guest.stopAll();
  });

  test("a failure after start-up is a JSON line too (event fatal), exit code 1", async () => {
    const { vmEnd, hostEnd } = datagramSocketPair();
    try {
      const child = Bun.spawn(
        [
          "ip",
          "netns",
          "exec",
          topology.hostNamespace,
          process.execPath,
          "src/main.ts",
          "--vm-fd",
          "0",
          "--vm-mac-address",
          "02:5e:10:00:00:78",
          "--bridge",
          "nosuchbr0",
          "--log-format",
          "json",
        ],
        { stdin: hostEnd, stdout: "ignore", stderr: "pipe" },
      );
      const [stderr, code] = await Promise.all([new Response(child.stderr).text(), child.exited]);
      expect(code).toBe(1);
      const lines = stderr.split("\n").filter((line) => line !== "");
      expect(lines.length).toBe(1);
      expect(JSON.parse(lines[0]!)).toMatchObject({
        level: "error",
        event: "fatal",
        message: expect.stringContaining("nosuchbr0"),
      });
    } finally {
      closeFd(vmEnd);
      closeFd(hostEnd);
    }
  });
});
