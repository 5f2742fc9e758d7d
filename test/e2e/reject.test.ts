// --reject end to end: a real guest (its kernel's TCP and ICMP, iputils ping, OpenBSD nc) behind softnet. With --reject, a connection to a blocked address is refused at once and ping
// reports the prohibition; without it (the control), the same connection times out. Frames the
// guest forges (another source address, another MAC) and frames no one may answer (resets, ICMP
// errors) still get nothing back: tcpdump on the guest's own eth0 is the witness. softnet's
// --capture shows each answer as a frame to the VM, marked as softnet's own, byte for byte what
// the guest received.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chownSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { haveTool, readWithTcpdump, readWithTshark } from "../support/capture-readers.ts";
import { REQUIRED_IN_CI } from "../support/ci.ts";
import {
  ADDRESSES,
  BANNER_PORT,
  type Capture,
  type Forwarder,
  type Guest,
  type GuestLease,
  type RunResult,
  softnet,
  Topology,
} from "./lib/index.ts";

const NOBODY = 65534;
const canRun = process.getuid?.() === 0 && haveTool("tshark") && haveTool("hping3");
const e2e = describe.skipIf(!canRun && !REQUIRED_IN_CI);

/** The global test host: reachable by default, so only --block keeps the guest from it. */
const BLOCKED = ADDRESSES.globalHost;
/** nc's own limit on connecting: what a guest without --reject waits for. */
const NC_TIMEOUT_SECONDS = 2;

let topology: Topology;
let captureDir: string;

beforeAll(async () => {
  if (!canRun && !REQUIRED_IN_CI) return;
  for (const tool of ["tshark", "hping3"]) {
    if (!haveTool(tool)) throw new Error(`${tool} is missing: run scripts/e2e-deps.sh`);
  }
  topology = await Topology.create();
  captureDir = mkdtempSync(join(tmpdir(), "softnet-reject-e2e-"));
  chownSync(captureDir, NOBODY, NOBODY); // softnet drops to nobody before it creates the capture
});

afterAll(async () => {
  await topology?.teardown();
  if (captureDir) rmSync(captureDir, { recursive: true, force: true });
});

/** OpenBSD nc connecting to address:port (verbose, so it says why it failed), timed. */
async function connect(guest: Guest, address: string, port: number): Promise<RunResult & { ms: number }> {
  const started = performance.now();
  const result = await guest.exec(
    ["nc", "-v", "-N", "-w", String(NC_TIMEOUT_SECONDS), address, String(port)],
    {
      stdin: "",
      timeoutMs: (NC_TIMEOUT_SECONDS + 5) * 1000,
    },
  );
  return { ...result, ms: Math.round(performance.now() - started) };
}

const GATEWAY_MAC = ADDRESSES.gatewayMac;
/**
 * What the guest's eth0 received from the gateway's MAC that answers something: resets and ICMP
 * errors. (tcpdump cannot filter a saved Ethernet capture by direction; MACs tell it.)
 */
const ANSWERS = `ether src ${GATEWAY_MAC} and ((tcp[tcpflags] & tcp-rst != 0) or icmp[icmptype] == icmp-unreach)`;

e2e("with --reject --block", () => {
  let guest: Guest;
  let forwarder: Forwarder;
  let lease: GuestLease;
  let eth0: Capture;
  let capturePath: string;

  beforeAll(async () => {
    guest = await topology.addGuest();
    eth0 = await topology.startCapture("eth0", guest.namespace);
    capturePath = join(captureDir, "reject.pcapng");
    forwarder = await guest.attach(
      softnet(["--log-level", "debug", "--reject", "--block", BLOCKED, "--capture", capturePath]),
    );
    lease = await guest.dhcp();
    // The guest reaches what is allowed: the gateway answers pings.
    expect(await guest.ping(ADDRESSES.gateway)).toBe(true);
  });

  afterAll(async () => {
    await guest?.stopAll();
  });

  test("nc to the blocked address is refused at once, not timed out", async () => {
    const result = await connect(guest, BLOCKED, BANNER_PORT);
    console.log(
      `nc to blocked ${BLOCKED}:${BANNER_PORT} with --reject failed after ${result.ms} ms: ${result.stderr.trim()}`,
    );
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain("Connection refused");
    expect(result.stderr).not.toContain("timed out");
  });

  test("nc to an address that is not allowed (a private server) is refused too", async () => {
    const result = await connect(guest, ADDRESSES.privateServer, BANNER_PORT);
    console.log(
      `nc to not-allowed ${ADDRESSES.privateServer} failed after ${result.ms} ms: ${result.stderr.trim()}`,
    );
    expect(result.stderr).toContain("Connection refused");
  });

  test("iputils ping reports the prohibition: Packet filtered", async () => {
    const result = await guest.exec(["ping", "-n", "-c", "1", "-W", "2", BLOCKED], { timeoutMs: 10_000 });
    expect(result.code).not.toBe(0);
    expect(result.stdout).toContain(`From ${BLOCKED} icmp_seq=1 Packet filtered`);
  });

  test("forged source address or MAC, resets and ICMP errors: nothing comes back", async () => {
    const witness = await topology.startCapture("eth0", guest.namespace);
    const hping = async (args: string[]) => {
      const result = await guest.exec(["hping3", "-c", "3", "-i", "u100000", ...args, BLOCKED], {
        timeoutMs: 10_000,
      });
      expect(result.stdout + result.stderr).toContain("HPING");
    };
    // Another source address (ip-spoof): a SYN that would be refused if it were the VM's own.
    await hping(["-S", "-p", String(BANNER_PORT), "-a", "192.168.64.200"]);
    // The guest's own address, but from another MAC (mac-spoof): eth0's MAC changed for a moment.
    const forgedMac = "02:5e:10:00:00:99";
    await guest.exec(["ip", "link", "set", "dev", "eth0", "address", forgedMac]);
    // A new MAC flushes the neighbour table, and the ARP that would refill it is dropped as
    // arp-spoof: the gateway's MAC is given, so that the forged IPv4 frames do leave.
    await guest.exec(["ip", "neigh", "replace", ADDRESSES.gateway, "lladdr", GATEWAY_MAC, "dev", "eth0"]);
    try {
      await hping(["-S", "-p", String(BANNER_PORT)]);
    } finally {
      await guest.exec(["ip", "link", "set", "dev", "eth0", "address", guest.mac]);
    }
    // A reset and an ICMP error from the VM itself: never answered (RFC 9293, RFC 1122 3.2.2).
    await hping(["-R", "-p", String(BANNER_PORT)]);
    await hping(["--icmp", "--icmptype", "3", "--icmpcode", "3"]);
    await witness.stop();

    // The probes did leave the guest (so the test could see an answer if there were one)...
    const sent = `ether src ${guest.mac} and dst host ${BLOCKED}`;
    expect(await witness.count(`${sent} and src host 192.168.64.200`)).toBe(3);
    expect(
      await witness.count(`ether src ${forgedMac} and src host ${lease.address} and dst host ${BLOCKED}`),
    ).toBe(3);
    expect(await witness.count(`${sent} and tcp[tcpflags] & tcp-rst != 0`)).toBe(3);
    expect(await witness.count(`${sent} and icmp[icmptype] == icmp-unreach`)).toBe(3);
    // ...and nothing answered them.
    expect(await witness.lines(ANSWERS)).toEqual([]);
  });

  test("the capture shows each answer as a frame to the VM, marked synthesised, as the guest got it", async () => {
    expect(await forwarder.stop("SIGINT")).toBe(0);
    await eth0.stop();
    const frames = await readWithTshark(capturePath);
    const answers = frames.filter((frame) =>
      frame.comments.some((comment) => comment.startsWith("synthesised:")),
    );
    expect(answers.length).toBeGreaterThan(0);
    expect(new Set(answers.map((frame) => frame.direction))).toEqual(new Set(["inbound"]));
    expect(new Set(answers.flatMap((frame) => frame.comments))).toEqual(
      new Set(["synthesised: reject for blocked-by-rule", "synthesised: reject for not-allowed-destination"]),
    );
    // Byte for byte what the guest's eth0 received from softnet, in the same order.
    const received = await readWithTcpdump(eth0.pcapPath, ANSWERS);
    expect(answers.map((frame) => frame.hex)).toEqual(received);
    // Every answer came from the gateway's MAC, to the guest's MAC and leased address.
    for (const hex of received) {
      expect(hex.slice(0, 12)).toBe(guest.mac.replaceAll(":", ""));
      expect(hex.slice(12, 24)).toBe(ADDRESSES.gatewayMac.replaceAll(":", ""));
      expect(hex.slice(30 * 2, 34 * 2)).toBe(
        Buffer.from(lease.address.split(".").map(Number)).toString("hex"),
      );
    }
    // The counters softnet printed at exit say the same.
    expect(forwarder.log).toMatch(/answered \(--reject\): \d+ blocked-by-rule, \d+ not-allowed-destination;/);
  });
});

e2e("control: --block without --reject", () => {
  let guest: Guest;

  beforeAll(async () => {
    guest = await topology.addGuest();
    await guest.attach(softnet(["--log-level", "debug", "--block", BLOCKED]));
    await guest.dhcp();
  });

  afterAll(async () => {
    await guest?.stopAll();
  });

  test("the same nc times out: nothing answers a dropped SYN", async () => {
    const result = await connect(guest, BLOCKED, BANNER_PORT);
    console.log(
      `nc to blocked ${BLOCKED}:${BANNER_PORT} without --reject failed after ${result.ms} ms: ${result.stderr.trim()}`,
    );
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain("timed out");
    expect(result.stderr).not.toContain("refused");
  });
});
