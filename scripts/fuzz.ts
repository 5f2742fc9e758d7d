/**
 * The frame fuzzer: millions of random and mutated frames through everything in softnet that reads
 * a frame (the VM→host decision, the host→VM decision with its DHCP snooping, the answer --reject
 * builds for a dropped frame, the capture's packet block, the one-line frame description used in
 * logs), counting exceptions and the reasons hit.
 *
 *   bun scripts/fuzz.ts [--frames 10000000] [--seed N]
 *
 * Seeds are real frames (DHCP DISCOVER/REQUEST/ACK/NAK, ARP, IPv4 over UDP/TCP/ICMP, fragments,
 * options), mutated the ways a parser gets hurt: length fields (IPv4 IHL and total length, UDP
 * length, DHCP option lengths) set to extremes, bytes flipped or overwritten, frames cut short or
 * padded with garbage, two frames spliced, or pure noise. Each frame sits at a random offset inside
 * a larger buffer whose bytes outside the frame are checked afterwards: a decision may rewrite
 * inside the frame (DHCP options are cleared in place) but never outside it, and one in four VM→host
 * frames is decided a second time at another offset among other bytes: the verdict must not change
 * (a parser that trusted a length field would read past the frame and decide differently).
 *
 * Prints frames/s and the reasons hit; exits 1 on any exception or write outside a frame. The PRNG
 * is seeded and printed, so any failure can be replayed. The test suite runs a short run of it
 * (test/unit/fuzz.test.ts); the figures of the 10-million run are in the closing notes.
 */
import { writeEnhancedPacket } from "../src/capture/pcapng.ts";
import { LearnedNames } from "../src/policy/learned-names.ts";
import { type NamePattern, NamePatterns, parseNamePattern } from "../src/policy/name-patterns.ts";
import { Policy } from "../src/policy/policy.ts";
import { REASON_COUNT, Reason, type ReasonCode, reasonName } from "../src/policy/reasons.ts";
import { buildRejectReply, REJECT_REPLY_MAX_BYTES } from "../src/policy/reject.ts";
import { parseRuleTarget, type Rule, RuleTable, type RuleTarget } from "../src/policy/rules.ts";
import { parseIpv4, parseMac } from "../src/wire/bytes.ts";
import { describeFrame } from "../src/wire/describe.ts";
import { DhcpMessageType } from "../src/wire/dhcp.ts";
import { emitDnsMessage } from "../src/wire/dns.ts";
import { TcpFlag } from "../src/wire/tcp.ts";
import {
  arpFrame,
  dhcpClientFrame,
  dhcpServerFrame,
  GATEWAY,
  HOST_MAC,
  icmpEchoFrame,
  OTHER_MAC,
  tcpFrame,
  udpFrame,
  VM_IP,
  VM_MAC,
} from "../test/support/frames.ts";

export interface FuzzOptions {
  frames: number;
  seed: number;
  /** Called every `every` frames with progress; the CLI prints, the test stays quiet. */
  progress?: (done: number) => void;
}

export interface FuzzResult {
  frames: number;
  seconds: number;
  exceptions: number;
  outOfBoundsWrites: number;
  /** VM→host decisions that changed when only the bytes around the frame changed. */
  outOfBoundsReads: number;
  /** The first few failures, replayable: seed, frame index, direction, the frame in hex. */
  failures: string[];
  /** Per direction, frames per reason. */
  fromVm: Float64Array;
  fromHost: Float64Array;
  describeCalls: number;
  /** --reject answers built, and capture blocks written. */
  rejectReplies: number;
  captureBlocks: number;
}

/** xorshift32: small, fast, deterministic. */
class Random {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0 || 0x9e3779b9;
  }
  next(): number {
    let x = this.state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.state = x >>> 0;
    return this.state;
  }
  below(n: number): number {
    return this.next() % n;
  }
  byte(): number {
    return this.next() & 0xff;
  }
}

function seedFrames(): Uint8Array[] {
  const ack = (leaseTimeSeconds: number) =>
    dhcpServerFrame({ messageType: DhcpMessageType.ACK, leaseTimeSeconds, dnsServers: [GATEWAY, "9.9.9.9"] });
  const duid = Uint8Array.of(0xff, 0, 0, 0, 1, 0, 2, 0, 0, 0xab, 0x11, 1, 2, 3, 4, 5, 6, 7, 8);
  return [
    dhcpClientFrame(),
    dhcpClientFrame({ messageType: DhcpMessageType.REQUEST }),
    // Options softnet clears in place (61 client identifier, 82, 118, 52), one of them split.
    dhcpClientFrame({ messageType: DhcpMessageType.REQUEST, dhcp: { clientIdentifier: duid } }),
    dhcpClientFrame({
      dst: GATEWAY,
      src: VM_IP,
      messageType: DhcpMessageType.REQUEST,
      dhcp: {
        rawOptions: Uint8Array.of(
          82,
          4,
          1,
          2,
          0xaa,
          0xbb,
          118,
          4,
          10,
          0,
          0,
          0,
          52,
          1,
          3,
          61,
          3,
          1,
          2,
          3,
          61,
          2,
          4,
          5,
        ),
      },
    }),
    ack(600),
    ack(60),
    dhcpServerFrame({ messageType: DhcpMessageType.OFFER, leaseTimeSeconds: 600, dnsServers: [GATEWAY] }),
    dhcpServerFrame({ messageType: DhcpMessageType.NAK }),
    arpFrame({ senderIp: VM_IP, targetIp: GATEWAY }),
    arpFrame({ senderIp: "0.0.0.0", targetIp: VM_IP }),
    udpFrame({ dst: GATEWAY, dport: 53 }),
    udpFrame({ dst: "8.8.8.8", dport: 443, payload: new Uint8Array(1200) }),
    udpFrame({ src: GATEWAY, dst: VM_IP, dport: 5353, srcMac: OTHER_MAC, dstMac: VM_MAC }),
    tcpFrame({ dst: "1.1.1.1", dport: 443 }),
    tcpFrame({ dst: "192.168.64.7", dport: 22 }),
    tcpFrame({ dst: "10.0.0.1", dport: 80, ip: { fragmentOffset: 8 } }),
    icmpEchoFrame({ dst: "8.8.8.8" }),
    icmpEchoFrame({ src: "8.8.8.8", dst: VM_IP, srcMac: OTHER_MAC, dstMac: VM_MAC }),
    // DNS: queries the VM asks (UDP, and TCP with its length prefix), answers it receives from the
    // lease's server through the gateway (a CNAME chain, compressed as dnsmasq writes it).
    udpFrame({ dst: GATEWAY, dport: 53, payload: dnsQuery("api.github.test") }),
    udpFrame({ dst: GATEWAY, dport: 53, payload: dnsQuery("c2VjcmV0.exfil.test") }),
    tcpFrame({
      dst: GATEWAY,
      dport: 53,
      flags: TcpFlag.ACK | TcpFlag.PSH,
      payload: withLengthPrefix(dnsQuery("example.test")),
    }),
    dnsAnswer(DNSMASQ_CNAME_ANSWER),
    // To the address those answers name: allowed by name once learned, where names are allowed.
    tcpFrame({ dst: "93.184.216.34", dport: 443 }),
    dnsAnswer(
      emitDnsMessage({
        id: 9,
        response: true,
        question: { name: "example.test", type: 1 },
        answers: [{ owner: "example.test", type: "A", ttl: 30, address: parseIpv4("93.184.216.34")! }],
      }),
    ),
    tcpFrame({
      src: GATEWAY,
      dst: VM_IP,
      srcMac: HOST_MAC,
      dstMac: VM_MAC,
      sport: 53,
      dport: 40000,
      flags: TcpFlag.ACK | TcpFlag.PSH,
      payload: withLengthPrefix(DNSMASQ_CNAME_ANSWER),
    }),
  ];
}

/** dnsmasq 2.90's answer for www.example.test: a CNAME to example.test (pointers), and its A. */
const DNSMASQ_CNAME_ANSWER = Uint8Array.from(
  Buffer.from(
    "12348580000100020000000003777777076578616d706c6504746573740000010001c00c000500010000001e000e07657861" +
      "6d706c65047465737400c02e000100010000001e00045db8d822",
    "hex",
  ),
);

function dnsQuery(name: string): Uint8Array {
  return emitDnsMessage({ id: 7, response: false, question: { name, type: 1 } });
}

function withLengthPrefix(message: Uint8Array): Uint8Array {
  const framed = new Uint8Array(message.length + 2);
  framed[0] = message.length >>> 8;
  framed[1] = message.length & 0xff;
  framed.set(message, 2);
  return framed;
}

function dnsAnswer(message: Uint8Array): Uint8Array {
  return udpFrame({
    src: GATEWAY,
    dst: VM_IP,
    srcMac: HOST_MAC,
    dstMac: VM_MAC,
    sport: 53,
    dport: 40000,
    payload: message,
  });
}

/** Offsets within a frame where a length or type field lives (Ethernet + IPv4 + UDP + BOOTP). */
const LENGTH_FIELDS = [12, 13, 14, 16, 17, 20, 21, 23, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47];
const EXTREMES = [0x00, 0x01, 0x05, 0x0f, 0x3f, 0x40, 0x7f, 0x80, 0xfe, 0xff];

/**
 * Writes a fuzzed frame into `buffer` at `offset` and returns its length. No allocation: the
 * seeds are copied, never cloned.
 */
function makeFrame(
  random: Random,
  seeds: Uint8Array[],
  buffer: Uint8Array,
  offset: number,
  room: number,
): number {
  const strategy = random.below(8);
  if (strategy === 0) {
    // Noise of any length, including shorter than an Ethernet header.
    const length = random.below(Math.min(room, 1600));
    for (let i = 0; i < length; i++) buffer[offset + i] = random.byte();
    return length;
  }
  const seed = seeds[random.below(seeds.length)]!;
  let length = Math.min(seed.length, room);
  buffer.set(seed.subarray(0, length), offset);
  if (strategy === 1) {
    // Splice: the head of this seed, the tail of another.
    const other = seeds[random.below(seeds.length)]!;
    const cut = random.below(length + 1);
    const tail = Math.min(other.length - Math.min(cut, other.length), room - cut);
    buffer.set(other.subarray(other.length - tail), offset + cut);
    length = cut + tail;
  }
  const edits = 1 + random.below(6);
  for (let e = 0; e < edits; e++) {
    const kind = random.below(4);
    if (kind === 0 && length > 0) {
      buffer[offset + random.below(length)] ^= 1 << random.below(8);
    } else if (kind === 1 && length > 0) {
      buffer[offset + random.below(length)] = random.byte();
    } else if (kind === 2) {
      const field = LENGTH_FIELDS[random.below(LENGTH_FIELDS.length)]!;
      if (field < length) buffer[offset + field] = EXTREMES[random.below(EXTREMES.length)]!;
    } else if (length > 282) {
      // Inside the DHCP options (after the 240-byte BOOTP header + magic cookie at 42 + 236).
      const at = 282 + random.below(length - 282);
      buffer[offset + at] = EXTREMES[random.below(EXTREMES.length)]!;
    }
  }
  const ending = random.below(6);
  if (ending === 0) length = random.below(length + 1); // truncated
  if (ending === 1) {
    // Padded with garbage, up to the room there is.
    const extra = Math.min(random.below(64), room - length);
    for (let i = 0; i < extra; i++) buffer[offset + length + i] = random.byte();
    length += extra;
  }
  return length;
}

const rule = (action: Rule["action"], target: string): Rule => ({
  action,
  target: parseRuleTarget(target) as RuleTarget,
});

/** The rule sets a fuzzed policy runs with: none, a LAN allowed, everything blocked but the host. */
const RULE_SETS: Rule[][] = [
  [],
  [rule("allow", "192.168.64.0/24"), rule("block", "192.168.64.1")],
  [rule("block", "0.0.0.0/0"), rule("allow", "@host")],
  [rule("allow", "0.0.0.0/0")],
];

/** Names in --allow for the rounds that have them (every other four rounds). */
const ALLOWED_NAMES = ["example.test", "*.github.test"].map((text) => parseNamePattern(text) as NamePattern);

/** A fresh policy with the next rule set in turn (so even a short run sees every one), names or not. */
function newPolicy(round: number): Policy {
  const gateway = parseIpv4(GATEWAY)!;
  const rules = RULE_SETS[round % RULE_SETS.length]!;
  const names = new LearnedNames(new NamePatterns((round >> 2) & 1 ? ALLOWED_NAMES : []));
  return new Policy({
    vmMac: parseMac(VM_MAC)!,
    gateway,
    prefixLength: 24,
    rules: RuleTable.compile(rules, gateway, names),
    isolated: rules.length !== 1 || rules[0]!.action !== "allow",
    names,
  });
}

function guardIntact(buffer: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (buffer[i] !== GUARD_BYTE) return false;
  return true;
}

const FRAME_ROOM = 2048;
/** Frames per policy: each round starts without state, with the next rule set and maybe a lease. */
const POLICY_ROUND = 25_000;
const GUARD = 32;
const GUARD_BYTE = 0xa5;

export function runFuzz(options: FuzzOptions): FuzzResult {
  const random = new Random(options.seed);
  const seeds = seedFrames();
  const buffer = new Uint8Array(GUARD + FRAME_ROOM + GUARD);
  const fromVm = new Float64Array(REASON_COUNT);
  const fromHost = new Float64Array(REASON_COUNT);
  const failures: string[] = [];
  let exceptions = 0;
  let outOfBoundsWrites = 0;
  let outOfBoundsReads = 0;
  let describeCalls = 0;
  // A second placement of the same frame, in other surroundings: a decision that reads past the
  // frame's end or before its start would come out differently.
  const twin = new Uint8Array(GUARD + FRAME_ROOM + GUARD);
  const reply = new Uint8Array(REJECT_REPLY_MAX_BYTES);
  const block = new Uint8Array(FRAME_ROOM + 1024);
  const blockView = new DataView(block.buffer);
  const comment = new TextEncoder().encode("dropped: fuzz");
  let rejectReplies = 0;
  let captureBlocks = 0;
  let policy = newPolicy(0);
  // A lease, so the paths behind "has a lease" are reached too; renewed now and then.
  const ack = dhcpServerFrame({
    messageType: DhcpMessageType.ACK,
    leaseTimeSeconds: 600,
    dnsServers: [GATEWAY],
  });
  let now = 0;
  const started = performance.now();
  const record = (index: number, direction: string, offset: number, length: number, what: string) => {
    if (failures.length >= 10) return;
    const hex = Buffer.from(buffer.subarray(offset, offset + length)).toString("hex");
    failures.push(`seed ${options.seed} frame ${index} ${direction}: ${what}: ${hex}`);
  };
  for (let index = 0; index < options.frames; index++) {
    if (index % POLICY_ROUND === 0) {
      policy = newPolicy(index / POLICY_ROUND);
      if (random.below(4) !== 0) policy.observeFromHost(ack, 0, ack.length, now);
      if (index % 100_000 === 0) options.progress?.(index);
    }
    now += random.below(50);
    const offset = GUARD + random.below(16);
    const length = makeFrame(random, seeds, buffer, offset, FRAME_ROOM - (offset - GUARD));
    // Guard bytes on both sides of this frame (only there: a whole-buffer fill per frame would
    // cost more than the decisions being measured).
    buffer.fill(GUARD_BYTE, 0, offset);
    buffer.fill(GUARD_BYTE, offset + length, offset + length + GUARD);
    const toHost = (index & 1) === 0;
    const twinOffset = GUARD - 8 + random.below(16);
    const checkReads = toHost && (index & 3) === 0;
    if (checkReads) {
      for (let i = 0; i < twinOffset; i++) twin[i] = random.byte();
      twin.set(buffer.subarray(offset, offset + length), twinOffset);
      for (let i = twinOffset + length; i < twinOffset + length + GUARD; i++) twin[i] = random.byte();
    }
    let reason: ReasonCode = Reason.MALFORMED_ETHERNET;
    try {
      reason = toHost
        ? policy.decideFromVm(buffer, offset, length, now)
        : policy.observeFromHost(buffer, offset, length, now);
      if (reason < 0 || reason >= REASON_COUNT) throw new Error(`unknown reason ${reason}`);
    } catch (error) {
      exceptions++;
      record(index, toHost ? "vm→host" : "host→vm", offset, length, String(error));
    }
    (toHost ? fromVm : fromHost)[reason]++;
    if (checkReads) {
      const again = policy.decideFromVm(twin, twinOffset, length, now);
      if (again !== reason) {
        outOfBoundsReads++;
        record(
          index,
          "vm→host",
          offset,
          length,
          `decided ${reasonName(reason)}, elsewhere ${reasonName(again)}`,
        );
      }
    }
    if (toHost) {
      try {
        const answer = buildRejectReply(policy, reason, buffer, offset, length, now, reply, 0);
        if (answer < 0 || answer > REJECT_REPLY_MAX_BYTES) throw new Error(`reject reply of ${answer} bytes`);
        if (answer > 0) rejectReplies++;
      } catch (error) {
        exceptions++;
        record(index, "reject", offset, length, String(error));
      }
    }
    if ((index & 15) === 8) {
      captureBlocks++;
      try {
        writeEnhancedPacket(
          block,
          blockView,
          0,
          0,
          index,
          buffer.subarray(offset, offset + length),
          length,
          1,
          comment,
        );
      } catch (error) {
        exceptions++;
        record(index, "capture", offset, length, String(error));
      }
    }
    if ((index & 15) === 0) {
      describeCalls++;
      try {
        describeFrame(buffer, offset, length);
      } catch (error) {
        exceptions++;
        record(index, "describe", offset, length, String(error));
      }
    }
    if (!guardIntact(buffer, 0, offset) || !guardIntact(buffer, offset + length, offset + length + GUARD)) {
      outOfBoundsWrites++;
      record(index, "guard", offset, length, "a byte outside the frame changed");
    }
  }
  return {
    frames: options.frames,
    seconds: (performance.now() - started) / 1000,
    exceptions,
    outOfBoundsWrites,
    outOfBoundsReads,
    failures,
    fromVm,
    fromHost,
    describeCalls,
    rejectReplies,
    captureBlocks,
  };
}

function table(counts: Float64Array): string {
  const rows: string[] = [];
  for (let reason = 0; reason < counts.length; reason++) {
    if (counts[reason]! > 0)
      rows.push(`    ${reasonName(reason as ReasonCode).padEnd(26)} ${counts[reason]}`);
  }
  return rows.join("\n");
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const value = (flag: string, fallback: number) => {
    const at = args.indexOf(flag);
    return at === -1 ? fallback : Number(args[at + 1]);
  };
  const frames = value("--frames", 10_000_000);
  const seed = value("--seed", Date.now() >>> 0);
  console.log(`fuzzing ${frames} frames, seed ${seed}`);
  const result = runFuzz({
    frames,
    seed,
    progress: (done) => {
      if (done > 0 && done % 1_000_000 === 0) console.log(`  ${done} frames`);
    },
  });
  console.log(
    `${result.frames} frames in ${result.seconds.toFixed(1)} s: ${Math.round(result.frames / result.seconds)} frames/s; ` +
      `${result.describeCalls} descriptions, ${result.captureBlocks} capture blocks, ${result.rejectReplies} --reject answers; exceptions ${result.exceptions}; writes outside a frame ${result.outOfBoundsWrites}; ` +
      `decisions that depended on bytes outside the frame ${result.outOfBoundsReads}`,
  );
  console.log(`  VM→host reasons:\n${table(result.fromVm)}`);
  console.log(`  host→VM reasons:\n${table(result.fromHost)}`);
  for (const failure of result.failures) console.log(`  FAILURE ${failure}`);
  process.exitCode =
    result.exceptions === 0 && result.outOfBoundsWrites === 0 && result.outOfBoundsReads === 0 ? 0 : 1;
}
