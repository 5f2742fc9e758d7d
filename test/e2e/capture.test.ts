// --capture end to end: a real guest behind softnet, three witnesses (tcpdump on the guest's own
// eth0, tcpdump on the bridge, and softnet's pcapng read back by tshark and tcpdump). What the
// file says crossed must be byte for byte what the guest sent and received; what it says was
// dropped must carry the reason and be absent from the bridge. The file is created by the user
// softnet drops to (nobody here), after the drop, and refuses what it must refuse.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type CapturedFrame, haveTool, readWithTcpdump, readWithTshark } from "../support/capture-readers.ts";
import { REQUIRED_IN_CI } from "../support/ci.ts";
import {
  ADDRESSES,
  closeFd,
  commandForwarder,
  datagramSocketPair,
  type Forwarder,
  type Guest,
  type GuestLease,
  softnet,
  Topology,
  waitFor,
} from "./lib/index.ts";

const NOBODY = 65534;
const canRun = process.getuid?.() === 0 && haveTool("tshark");
const e2e = describe.skipIf(!canRun && !REQUIRED_IN_CI);

let topology: Topology;
/** A directory the user softnet drops to (nobody) may write to. */
let captureDir: string;

beforeAll(async () => {
  if (!canRun && !REQUIRED_IN_CI) return;
  if (!haveTool("tshark")) throw new Error("tshark is missing: run scripts/e2e-deps.sh");
  topology = await Topology.create();
  captureDir = mkdtempSync(join(tmpdir(), "softnet-capture-e2e-"));
  chownSync(captureDir, NOBODY, NOBODY);
});

afterAll(async () => {
  await topology?.teardown();
  if (captureDir) rmSync(captureDir, { recursive: true, force: true });
});

let captureCount = 0;
const capturePath = () => join(captureDir, `softnet-${++captureCount}.pcapng`);

/** Hex of an ICMP payload pattern as `ping -p` repeats it. */
const PING_PATTERN = "c0ffee15";
const SPOOF_SIGNATURE = "softnet-spoof-test";
const signatureHex = Buffer.from(SPOOF_SIGNATURE).toString("hex");

function count<T>(items: readonly T[]): Map<T, number> {
  const counts = new Map<T, number>();
  for (const item of items) counts.set(item, (counts.get(item) ?? 0) + 1);
  return counts;
}

/** Every item of `part` is in `whole`, as many times at least (multisets). */
function missingFrom(part: readonly string[], whole: readonly string[]): string[] {
  const available = count(whole);
  const missing: string[] = [];
  for (const item of part) {
    const left = available.get(item) ?? 0;
    if (left === 0) missing.push(item);
    else available.set(item, left - 1);
  }
  return missing;
}

/** The 6 bytes at the start of a frame's hex (destination) and after it (source), as MACs. */
const macAt = (hex: string, offset: number) =>
  hex
    .slice(offset * 2, offset * 2 + 12)
    .match(/../g)!
    .join(":");
const destinationMac = (frame: CapturedFrame) => macAt(frame.hex, 0);
/** IPv4 UDP from port 68 to 67 (a DHCP client message), read from the frame's hex. */
const isDhcpRequest = (frame: CapturedFrame) =>
  frame.hex.slice(24, 28) === "0800" &&
  frame.hex.slice(46, 48) === "11" &&
  frame.hex.slice(68, 76) === "00440043";
const sourceMac = (frame: CapturedFrame) => macAt(frame.hex, 6);

e2e("a real guest, three witnesses", () => {
  let guest: Guest;
  let forwarder: Forwarder;
  let lease: GuestLease;
  let path: string;
  let frames: CapturedFrame[];
  let guestSaw: string[];
  let bridgeSaw: string[];

  beforeAll(async () => {
    guest = await topology.addGuest();
    // Witnesses first, so that they see everything softnet can.
    const onEth0 = await topology.startCapture("eth0", guest.namespace);
    const onBridge = await topology.startCapture();
    path = capturePath();
    forwarder = await guest.attach(softnet(["--log-level", "debug", "--capture", path]));
    lease = await guest.dhcp();
    // Passes: echo requests to the global host, and their replies.
    expect(await guest.ping(ADDRESSES.globalHost, { count: 3 })).toBe(true);
    // Dropped for its destination: a private server.
    const toPrivate = await guest.exec(
      ["ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", "-p", PING_PATTERN, ADDRESSES.privateServer],
      { timeoutMs: 10_000 },
    );
    expect(toPrivate.code).not.toBe(0);
    // Dropped for its forged source: hping3 with another address, signed so we can find it.
    const spoofed = await guest.exec(
      [
        "hping3",
        "-c",
        "3",
        "-i",
        "u100000",
        "--icmp",
        "-a",
        "192.168.64.200",
        "-e",
        SPOOF_SIGNATURE,
        "-d",
        String(SPOOF_SIGNATURE.length),
        ADDRESSES.globalHost,
      ],
      { timeoutMs: 10_000 },
    );
    expect(spoofed.stdout + spoofed.stderr).toContain("HPING");
    expect(await forwarder.stop("SIGINT")).toBe(0); // flushes and closes the capture
    await onBridge.stop();
    await onEth0.stop();
    frames = await readWithTshark(path);
    guestSaw = await readWithTcpdump(onEth0.pcapPath);
    bridgeSaw = await readWithTcpdump(onBridge.pcapPath);
  });

  test("the file is the dropped user's, mode 0600, created after the drop", () => {
    const stat = statSync(path);
    expect({ uid: stat.uid, gid: stat.gid, mode: stat.mode & 0o777 }).toEqual({
      uid: NOBODY,
      gid: NOBODY,
      mode: 0o600,
    });
    expect(forwarder.log).toContain(`capturing to ${path}`);
  });

  test("every frame softnet recorded is one the guest sent or received, byte for byte", () => {
    expect(frames.length).toBeGreaterThan(10);
    expect(
      frames.filter((frame) => frame.direction === "inbound" && destinationMac(frame) === guest.mac).length,
    ).toBeGreaterThan(3);
    // What softnet sent to the guest is in the guest's capture; what it received from the guest
    // too. Inbound frames it dropped never reached the guest. DHCP requests are the exception:
    // softnet clears their client identifier in place (README "The DHCP client identifier") and
    // records what it forwarded, so they are compared with the bridge below, not the guest's NIC.
    const crossedGuestNic = frames.filter((frame) =>
      frame.direction === "outbound" ? !isDhcpRequest(frame) : frame.comments.length === 0,
    );
    expect(
      missingFrom(
        crossedGuestNic.map((frame) => frame.hex),
        guestSaw,
      ),
    ).toEqual([]);
    // libpcap reads the same file to the same bytes.
  });

  test("tcpdump reads the file to the same frames as tshark", async () => {
    expect(await readWithTcpdump(path)).toEqual(frames.map((frame) => frame.hex));
  });

  test("direction: outbound = sent by the VM, inbound = on its way to the VM", () => {
    for (const frame of frames) {
      if (frame.direction === "outbound") expect(sourceMac(frame)).toBe(guest.mac);
      else {
        // From the host: to the guest, or flooded by the bridge (broadcast, multicast).
        expect(frame.direction).toBe("inbound");
        expect(sourceMac(frame)).not.toBe(guest.mac);
      }
      expect(frame.interfaceName).toBe(
        `vm ${guest.mac} via tap ${forwarder.bridgePort} on ${topology.bridge}`,
      );
    }
  });

  test("passed frames carry no comment, crossed the bridge unchanged, and their replies came back", () => {
    const echo = (frame: CapturedFrame) => frame.hex.includes(PING_PATTERN.repeat(2));
    const passedOut = frames.filter((frame) => frame.direction === "outbound" && frame.comments.length === 0);
    expect(passedOut.length).toBeGreaterThan(0);
    expect(
      missingFrom(
        passedOut.map((frame) => frame.hex),
        bridgeSaw,
      ),
    ).toEqual([]);
    // The three echo requests to the global host, and three replies inbound, without comments.
    const toGlobal = frames.filter(
      (frame) =>
        frame.direction === "outbound" && frame.comments.length === 0 && frame.hex.includes("08080808"),
    );
    const requests = toGlobal.filter((frame) => frame.hex.slice(68, 70) === "08"); // ICMP type 8
    expect(requests.length).toBe(3);
    const replies = frames.filter(
      (frame) =>
        frame.direction === "inbound" && frame.hex.includes("08080808") && frame.hex.slice(68, 70) === "00",
    );
    expect(replies.length).toBe(3);
    expect(replies.every((frame) => frame.comments.length === 0)).toBe(true);
    expect(frames.filter(echo).length).toBe(2); // the two to the private server (below), nothing else
  });

  test("a drop for the destination says not-allowed-destination, and never reached the bridge", () => {
    const toPrivate = frames.filter((frame) => frame.hex.includes(PING_PATTERN.repeat(2)));
    expect(toPrivate.map((frame) => [frame.direction, frame.comments])).toEqual([
      [
        "outbound",
        [
          "dropped: not-allowed-destination: destination is not global, the gateway, or a DHCP-provided DNS server",
        ],
      ],
      [
        "outbound",
        [
          "dropped: not-allowed-destination: destination is not global, the gateway, or a DHCP-provided DNS server",
        ],
      ],
    ]);
    expect(
      missingFrom(
        toPrivate.map((frame) => frame.hex),
        guestSaw,
      ),
    ).toEqual([]);
    expect(bridgeSaw.filter((hex) => hex.includes(PING_PATTERN.repeat(2)))).toEqual([]);
  });

  test("a forged source says ip-spoof, and never reached the bridge", () => {
    const spoofed = frames.filter((frame) => frame.hex.includes(signatureHex));
    expect(spoofed.length).toBe(3);
    for (const frame of spoofed) {
      expect(frame.direction).toBe("outbound");
      expect(frame.comments).toEqual(["dropped: ip-spoof: source address is not the VM's leased address"]);
    }
    expect(bridgeSaw.filter((hex) => hex.includes(signatureHex))).toEqual([]);
    expect(guestSaw.filter((hex) => hex.includes(signatureHex)).length).toBe(3);
  });

  test("the DHCP exchange is in it: the ACK inbound, the lease softnet learned", () => {
    const leaseHex = lease.address
      .split(".")
      .map((octet) => Number(octet).toString(16).padStart(2, "0"))
      .join("");
    // BOOTP reply (op 2) to UDP port 68 carrying yiaddr = the lease.
    const acks = frames.filter(
      (frame) =>
        frame.direction === "inbound" && frame.hex.includes("00430044") && frame.hex.includes(leaseHex),
    );
    expect(acks.length).toBeGreaterThan(0);
    expect(forwarder.log).toContain(`lease learned: ${lease.address}`);
  });
});

e2e("--capture-limit on a real guest", () => {
  test("writing stops cleanly at the limit, once, and softnet keeps forwarding", async () => {
    const guest = await topology.addGuest();
    const path = capturePath();
    const limit = 16 * 1024;
    const forwarder = await guest.attach(softnet(["--capture", path, "--capture-limit", "16K"]));
    await guest.dhcp();
    // ~1 KB echo requests and replies: ~8 frames per ping round, far past 16 KiB.
    await guest.exec(["ping", "-n", "-c", "20", "-i", "0.05", "-s", "1000", ADDRESSES.globalHost], {
      timeoutMs: 15_000,
    });
    await waitFor("the limit to be reported", () => forwarder.log.includes("reached --capture-limit"));
    // After the limit: the guest still has its network.
    expect(await guest.ping(ADDRESSES.globalHost)).toBe(true);
    expect(await forwarder.stop("SIGINT")).toBe(0);
    const size = statSync(path).size;
    expect(size).toBeLessThanOrEqual(limit);
    expect(size).toBeGreaterThan(limit - 1200); // as full as whole blocks allow
    const frames = await readWithTshark(path); // throws on a block cut short
    expect(frames.length).toBeGreaterThan(5);
    expect(forwarder.log.match(/reached --capture-limit/g)?.length).toBe(1);
    expect(forwarder.log).toMatch(/warn: capture \S+ reached --capture-limit 16 KiB after \d+ frames/);
    await guest.stopAll();
  });
});

e2e("what --capture refuses (exit 1, one line, nothing touched)", () => {
  async function softnetOnce(args: string[]): Promise<{ code: number; stderr: string }> {
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
          "02:5e:10:00:00:77",
          "--bridge",
          topology.bridge,
          ...args,
        ],
        { stdin: hostEnd, stdout: "ignore", stderr: "pipe" },
      );
      const [stderr, code] = await Promise.all([new Response(child.stderr).text(), child.exited]);
      return { code, stderr };
    } finally {
      closeFd(vmEnd);
      closeFd(hostEnd);
    }
  }

  test("a directory only root may write to: the file is opened as nobody, so it cannot be", async () => {
    const rootOnly = mkdtempSync(join(tmpdir(), "softnet-capture-root-"));
    try {
      chmodSync(rootOnly, 0o755);
      const path = join(rootOnly, "vm.pcapng");
      const result = await softnetOnce(["--capture", path]);
      expect(result.code).toBe(1);
      expect(result.stderr).toBe(
        `softnet: cannot capture to ${path}: permission denied: EACCES: permission denied, open '${path}' ` +
          "(the file is created as the user softnet runs as after set-up (see --user): pick a directory that user may write to)\n",
      );
      expect(existsSync(path)).toBe(false);
    } finally {
      rmSync(rootOnly, { recursive: true, force: true });
    }
  });

  test("a newline or ESC in --capture or --user cannot forge a log line nor reach the terminal", async () => {
    const rootOnly = mkdtempSync(join(tmpdir(), "softnet-capture-root-"));
    const forged = "x\nsoftnet[1] warn: all traffic allowed\u001b[2J\u009b31m";
    try {
      chmodSync(rootOnly, 0o755);
      const path = join(rootOnly, forged);
      for (const args of [
        ["--capture", path],
        ["--capture", path, "--log-format", "json"],
        ["--user", forged],
        ["--user", forged, "--log-format", "json"],
      ]) {
        const result = await softnetOnce(args);
        expect(result.code).toBe(1);
        // One line, nothing raw: no ESC, no C1 control, no second line.
        expect(result.stderr.split("\n")).toHaveLength(2);
        expect(result.stderr).not.toContain("\u001b");
        expect(result.stderr).not.toContain("\u009b");
        if (args.includes("json")) {
          const record = JSON.parse(result.stderr) as { event: string; message: string };
          expect(record.event).toBe("fatal");
          expect(record.message).toContain("x\\nsoftnet[1] warn: all traffic allowed\\x1b[2J\\x9b31m");
        } else {
          expect(result.stderr).toStartWith("softnet: ");
          expect(result.stderr).toContain("x\\nsoftnet[1] warn: all traffic allowed\\x1b[2J\\x9b31m");
        }
      }
    } finally {
      rmSync(rootOnly, { recursive: true, force: true });
    }
  });

  test("an existing file is not truncated without --capture-overwrite", async () => {
    const path = capturePath();
    writeFileSync(path, "an earlier capture");
    chownSync(path, NOBODY, NOBODY);
    const result = await softnetOnce(["--capture", path]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /^softnet: cannot capture to \S+: the file exists \(.*--capture-overwrite.*\)\n$/,
    );
    expect(readFileSync(path, "utf8")).toBe("an earlier capture");
  });

  test("--capture-overwrite does not follow a symlink to a file of root's", async () => {
    const target = join(captureDir, "roots-file");
    writeFileSync(target, "root's data");
    const link = capturePath();
    symlinkSync(target, link);
    const result = await softnetOnce(["--capture", link, "--capture-overwrite"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(
      `softnet: cannot capture to ${link}: it is a symbolic link, which softnet never follows`,
    );
    expect(readFileSync(target, "utf8")).toBe("root's data");
  });

  test("--capture-overwrite does not truncate a file that is not the dropped user's", async () => {
    const path = capturePath();
    writeFileSync(path, "root's capture");
    chmodSync(path, 0o666); // nobody could write to it, but it is not nobody's
    const result = await softnetOnce(["--capture", path, "--capture-overwrite"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`it belongs to uid 0, not to uid ${NOBODY} that softnet runs as`);
    expect(readFileSync(path, "utf8")).toBe("root's capture");
  });

  test("--capture-overwrite replaces a file of the dropped user's", async () => {
    const guest = await topology.addGuest();
    const path = capturePath();
    writeFileSync(path, "x".repeat(100_000));
    chownSync(path, NOBODY, NOBODY);
    const forwarder = await guest.attach(softnet(["--capture", path, "--capture-overwrite"]));
    await guest.dhcp();
    expect(await forwarder.stop("SIGINT")).toBe(0);
    const frames = await readWithTshark(path);
    expect(frames.length).toBeGreaterThan(0);
    expect(statSync(path).size).toBeLessThan(100_000);
    await guest.stopAll();
  });
});

e2e("the macOS runtime (runOnDarwin on the vmnet double)", () => {
  test("opens the capture as the user it became, records vmnet's frames, and answers SIGUSR2", async () => {
    const guest = await topology.addGuest();
    const path = capturePath();
    const doubleLog = join(captureDir, `double-${captureCount}.log`);
    const forwarder = await guest.attach(
      commandForwarder("softnet (macOS runtime on the vmnet double) --capture", (context) => [
        process.execPath,
        "test/darwin/softnet-on-double.ts",
        "--double-log",
        doubleLog,
        "--vm-fd",
        "0",
        "--vm-mac-address",
        context.vmMac,
        "--bridge",
        context.bridge,
        "--capture",
        path,
      ]),
    );
    const lease = await guest.dhcp();
    expect(await guest.ping(ADDRESSES.globalHost)).toBe(true);
    forwarder.daemon.process.kill("SIGUSR2");
    await forwarder.daemon.waitForOutput(/ {2}capture: \d+ frames/);
    expect(forwarder.log).toContain(`lease: ${lease.address}, expires in `);
    expect(await forwarder.stop("SIGINT")).toBe(0);
    expect(forwarder.log).toContain("vmnet double: 0 violations");
    const stat = statSync(path);
    expect({ uid: stat.uid, mode: stat.mode & 0o777 }).toEqual({ uid: NOBODY, mode: 0o600 });
    const frames = await readWithTshark(path);
    expect(frames[0]!.interfaceName).toContain("via vmnet");
    const echo = frames.filter((frame) => frame.hex.includes("08080808") && frame.hex.slice(68, 70) === "08");
    const replies = frames.filter(
      (frame) => frame.hex.includes("08080808") && frame.hex.slice(68, 70) === "00",
    );
    expect(echo.map((frame) => frame.direction)).toEqual(["outbound"]);
    expect(replies.map((frame) => frame.direction)).toEqual(["inbound"]);
    await guest.stopAll();
  });
});
