/**
 * --reject against generated frames (fast-check): the builder never throws, never writes past its
 * bound, answers exactly the frames the rules in RFC 1122 3.2.2 and RFC 9293 3.10.7.1 allow (a
 * model written here, apart from the code), and every answer it makes is addressed to the VM, from
 * the dropped packet's destination and the gateway's MAC, with IPv4, TCP and ICMP checksums that
 * verify.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { Reason } from "../../src/policy/reasons.ts";
import { buildRejectReply, REJECT_REPLY_MAX_BYTES } from "../../src/policy/reject.ts";
import { parseIpv4, parseMac, readU16, readU32 } from "../../src/wire/bytes.ts";
import { finishChecksum, internetChecksum, pseudoHeaderSum, sumWords } from "../../src/wire/checksum.ts";
import { IpProtocol } from "../../src/wire/ipv4.ts";
import { TcpFlag } from "../../src/wire/tcp.ts";
import {
  BROADCAST,
  HOST_MAC,
  icmpEchoFrame,
  OTHER_MAC,
  tcpFrame,
  udpFrame,
  VM_IP,
  VM_MAC,
} from "../support/frames.ts";
import { leasedPolicy, T0 } from "./reject-fixtures.ts";

const VM_MAC_NUMBER = parseMac(VM_MAC)!;
const GATEWAY_MAC_NUMBER = parseMac(HOST_MAC)!;
const VM_ADDRESS = parseIpv4(VM_IP)!;
const TCP_RESET_LENGTH = 14 + 20 + 20;
/** Smallest ICMP answer: header, quoted IPv4 header, no data quoted. */
const ICMP_MINIMUM_LENGTH = 14 + 20 + 8 + 20;
const RUNS = 3000;

const POLICY = leasedPolicy(["10.99.0.0/16", "224.0.0.0/4", "203.0.113.0/24"]);

/** ICMP types a reply may answer: the queries (echo, router discovery, timestamp, info, mask). */
const ICMP_QUERY_TYPES = new Set([0, 8, 9, 10, 13, 14, 15, 16, 17, 18]);

interface Shape {
  protocol: "tcp" | "udp" | "icmp" | "other";
  sourceMac: string;
  destinationMac: string;
  source: string;
  destination: string;
  tcpFlags: number;
  icmpType: number;
  payloadLength: number;
  fragmentOffset: number;
  moreFragments: boolean;
}

const shapes = fc.record<Shape>({
  protocol: fc.constantFrom("tcp", "tcp", "udp", "icmp", "other"),
  sourceMac: fc.constantFrom(VM_MAC, VM_MAC, VM_MAC, OTHER_MAC),
  destinationMac: fc.constantFrom(HOST_MAC, HOST_MAC, BROADCAST, "01:00:5e:00:00:01", "02:11:22:33:44:55"),
  source: fc.constantFrom(VM_IP, VM_IP, VM_IP, VM_IP, "192.168.64.6", "0.0.0.0"),
  destination: fc.oneof(
    { arbitrary: fc.constantFrom("10.99.0.1", "10.99.0.53", "192.168.64.20"), weight: 3 },
    fc.constantFrom(
      "10.99.0.1",
      "10.99.0.255",
      "203.0.113.9",
      "192.168.64.20",
      "192.168.64.255",
      "192.168.64.0",
      "255.255.255.255",
      "224.0.0.251",
      "239.1.2.3",
      "240.0.0.1",
      "127.0.0.1",
      "0.0.0.5",
      "169.254.1.1",
      "8.8.8.8",
      "192.168.64.1",
    ),
    fc.ipV4(),
  ),
  tcpFlags: fc.oneof(
    fc.constantFrom(TcpFlag.SYN, TcpFlag.ACK, TcpFlag.ACK | TcpFlag.PSH, TcpFlag.FIN | TcpFlag.ACK),
    fc.integer({ min: 0, max: 0xff }),
  ),
  icmpType: fc.oneof(fc.constantFrom(0, 3, 4, 5, 8, 11, 12, 13, 17), fc.integer({ min: 0, max: 255 })),
  payloadLength: fc.integer({ min: 0, max: 64 }),
  fragmentOffset: fc.constantFrom(0, 0, 0, 8, 1480),
  moreFragments: fc.constantFrom(false, false, false, true),
});

function frameOf(shape: Shape): Uint8Array {
  const ip = {
    fragmentOffset: shape.fragmentOffset,
    moreFragments: shape.moreFragments,
    dontFragment: !shape.moreFragments && shape.fragmentOffset === 0,
  };
  const base = {
    srcMac: shape.sourceMac,
    dstMac: shape.destinationMac,
    src: shape.source,
    dst: shape.destination,
    ip,
  };
  const payload = new Uint8Array(shape.payloadLength);
  if (shape.protocol === "tcp") return tcpFrame({ ...base, dport: 80, flags: shape.tcpFlags, payload });
  if (shape.protocol === "udp") return udpFrame({ ...base, dport: 9, payload });
  if (shape.protocol === "icmp") {
    const frame = icmpEchoFrame({ ...base, payloadLength: shape.payloadLength });
    frame[14 + 20] = shape.icmpType;
    return frame;
  }
  const frame = udpFrame({ ...base, dport: 9, payload });
  frame[14 + 9] = 47; // GRE: any protocol softnet has no special case for
  return frame;
}

/** The model: which dropped frames deserve an answer, from the RFCs' rules, not from the code. */
function deservesAnswer(shape: Shape, reason: number): boolean {
  if (reason !== Reason.BLOCKED_BY_RULE && reason !== Reason.NOT_ALLOWED_DESTINATION) return false;
  if (shape.sourceMac !== VM_MAC || shape.source !== VM_IP) return false; // spoofed
  if (shape.destinationMac === BROADCAST || shape.destinationMac.startsWith("01:")) return false;
  const destination = parseIpv4(shape.destination)!;
  const firstOctet = destination >>> 24;
  if (firstOctet === 0 || firstOctet === 127 || firstOctet >= 224) return false;
  if (shape.destination === "192.168.64.255" || shape.destination === "192.168.64.0") return false;
  if (shape.fragmentOffset !== 0) return false; // a later fragment
  if (shape.protocol === "tcp") return (shape.tcpFlags & TcpFlag.RST) === 0;
  if (shape.protocol === "icmp") return ICMP_QUERY_TYPES.has(shape.icmpType);
  return true;
}

/** Everything an answer must be, whatever it answers. */
function checkAnswer(frame: Uint8Array, reply: Uint8Array): void {
  expect(reply.length).toBeLessThanOrEqual(REJECT_REPLY_MAX_BYTES);
  expect(readU16(reply, 0) * 2 ** 32 + readU32(reply, 2)).toBe(VM_MAC_NUMBER); // to the VM
  expect(readU16(reply, 6) * 2 ** 32 + readU32(reply, 8)).toBe(GATEWAY_MAC_NUMBER); // from the gateway
  expect(readU16(reply, 12)).toBe(0x0800);
  const ip = 14;
  expect(reply[ip]).toBe(0x45);
  expect(readU16(reply, ip + 2)).toBe(reply.length - 14);
  expect(internetChecksum(reply, ip, 20)).toBe(0);
  const source = readU32(reply, ip + 12);
  expect(source).toBe(readU32(frame, 14 + 16)); // from the dropped packet's destination
  expect(readU32(reply, ip + 16)).toBe(VM_ADDRESS); // to the VM's lease
  const l4 = ip + 20;
  const l4Length = reply.length - l4;
  if (reply[ip + 9] === IpProtocol.TCP) {
    expect(reply.length).toBe(TCP_RESET_LENGTH);
    const sum = sumWords(reply, l4, l4Length, pseudoHeaderSum(source, VM_ADDRESS, IpProtocol.TCP, l4Length));
    expect(finishChecksum(sum)).toBe(0);
    expect(reply[l4 + 13] & TcpFlag.RST).toBe(TcpFlag.RST);
    expect(readU16(reply, l4)).toBe(readU16(frame, 14 + 20 + 2)); // ports swapped
    expect(readU16(reply, l4 + 2)).toBe(readU16(frame, 14 + 20));
  } else {
    expect(reply[ip + 9]).toBe(IpProtocol.ICMP);
    expect(reply.length).toBeGreaterThanOrEqual(ICMP_MINIMUM_LENGTH);
    expect(internetChecksum(reply, l4, l4Length)).toBe(0);
    expect([reply[l4], reply[l4 + 1]]).toEqual([3, 13]);
    // The quote is the dropped packet's header and up to 8 bytes of its data, as they were.
    expect([...reply.subarray(l4 + 8)]).toEqual([...frame.subarray(14, 14 + l4Length - 8)]);
  }
}

describe("generated frames from the VM", () => {
  test("answers exactly the frames that deserve one, and every answer is right", () => {
    const out = new Uint8Array(REJECT_REPLY_MAX_BYTES + 16);
    const seen = { resets: 0, icmp: 0, none: 0 };
    fc.assert(
      fc.property(shapes, (shape) => {
        const frame = frameOf(shape);
        const reason = POLICY.decideFromVm(frame, 0, frame.length, T0);
        out.fill(0xee);
        const length = buildRejectReply(POLICY, reason, frame, 0, frame.length, T0, out, 0);
        expect(length > 0).toBe(deservesAnswer(shape, reason));
        expect(out.subarray(Math.max(length, 0)).every((byte) => byte === 0xee)).toBe(true);
        if (length > 0) checkAnswer(frame, out.slice(0, length));
        if (length === 0) seen.none++;
        else if (out[14 + 9] === IpProtocol.TCP) seen.resets++;
        else seen.icmp++;
      }),
      { numRuns: RUNS },
    );
    // The generator reaches both answers and plenty of refusals, or the property proves little.
    expect(seen.resets).toBeGreaterThan(RUNS / 200);
    expect(seen.icmp).toBeGreaterThan(RUNS / 200);
    expect(seen.none).toBeGreaterThan(RUNS / 2);
  });
});

describe("mangled and arbitrary bytes", () => {
  const seeds = [
    tcpFrame({ dst: "10.99.0.1", dport: 80 }),
    udpFrame({ dst: "10.99.0.1", dport: 9 }),
    icmpEchoFrame({ dst: "10.99.0.1" }),
  ];

  test("a valid frame with bytes changed and cut never makes the builder throw or overrun", () => {
    const out = new Uint8Array(REJECT_REPLY_MAX_BYTES + 16);
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: seeds.length - 1 }),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
        fc.nat(),
        fc.constantFrom(Reason.BLOCKED_BY_RULE, Reason.NOT_ALLOWED_DESTINATION),
        (seed, changes, cut, reason) => {
          const frame = seeds[seed].slice();
          for (const [at, value] of changes) frame[at % frame.length] = value;
          const length = frame.length - (cut % 8 === 0 ? cut % frame.length : 0);
          out.fill(0xee);
          const replyLength = buildRejectReply(POLICY, reason, frame, 0, length, T0, out, 0);
          expect(
            replyLength === 0 || (replyLength >= TCP_RESET_LENGTH && replyLength <= REJECT_REPLY_MAX_BYTES),
          ).toBe(true);
          expect(out.subarray(replyLength).every((byte) => byte === 0xee)).toBe(true);
          if (replyLength > 0) checkAnswer(frame, out.slice(0, replyLength));
        },
      ),
      { numRuns: RUNS },
    );
  });

  test("arbitrary bytes, any reason, any offset: never throws, 0 or a bounded length", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 200 }),
        fc.integer({ min: 0, max: 255 }),
        fc.integer({ min: 0, max: 40 }),
        (bytes, reason, outOffset) => {
          const out = new Uint8Array(outOffset + REJECT_REPLY_MAX_BYTES);
          const length = buildRejectReply(POLICY, reason, bytes, 0, bytes.length, T0, out, outOffset);
          expect(length === 0 || (length >= TCP_RESET_LENGTH && length <= REJECT_REPLY_MAX_BYTES)).toBe(true);
          if (reason !== Reason.BLOCKED_BY_RULE && reason !== Reason.NOT_ALLOWED_DESTINATION) {
            expect(length).toBe(0);
          }
        },
      ),
      { numRuns: RUNS },
    );
  });
});
