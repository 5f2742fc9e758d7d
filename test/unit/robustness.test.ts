/**
 * Property tests: whatever bytes arrive, decoding and deciding never throw, always return a known
 * reason, and read nothing outside [offset, offset+length). And every repr survives emit → parse.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { Policy } from "../../src/policy/policy.ts";
import { REASON_COUNT, Reason } from "../../src/policy/reasons.ts";
import { RuleTable } from "../../src/policy/rules.ts";
import { emitArp, parseArp } from "../../src/wire/arp.ts";
import { formatIpv4, formatMac, parseIpv4, parseMac } from "../../src/wire/bytes.ts";
import { DhcpMessage, DhcpMessageType, emitDhcp, parseDhcp, readDhcp } from "../../src/wire/dhcp.ts";
import { emitIpv4, parseIpv4Packet } from "../../src/wire/ipv4.ts";
import { emitTcp, parseTcp } from "../../src/wire/tcp.ts";
import { emitUdp, parseUdp } from "../../src/wire/udp.ts";
import {
  arpFrame,
  dhcpClientFrame,
  dhcpServerFrame,
  GATEWAY,
  icmpEchoFrame,
  tcpFrame,
  udpFrame,
  VM_IP,
  VM_MAC,
} from "../support/frames.ts";

const RUNS = 3000;

function newPolicy(): Policy {
  const gateway = parseIpv4(GATEWAY)!;
  const policy = new Policy({
    vmMac: parseMac(VM_MAC)!,
    gateway,
    prefixLength: 24,
    isolated: true,
    rules: RuleTable.compile([], gateway),
  });
  const ack = dhcpServerFrame({
    messageType: DhcpMessageType.ACK,
    leaseTimeSeconds: 600,
    dnsServers: [GATEWAY],
  });
  policy.observeFromHost(ack, 0, ack.length, 0);
  return policy;
}

const seeds = [
  tcpFrame({ dst: "1.1.1.1", dport: 443 }),
  udpFrame({ dst: GATEWAY, dport: 53 }),
  icmpEchoFrame({ dst: "8.8.8.8" }),
  arpFrame({ senderIp: VM_IP, targetIp: GATEWAY }),
  dhcpClientFrame(),
  dhcpServerFrame({ messageType: DhcpMessageType.ACK, leaseTimeSeconds: 60, dnsServers: ["10.0.0.53"] }),
  dhcpServerFrame({ messageType: DhcpMessageType.NAK }),
];

/** A valid frame with a few bytes overwritten and possibly cut short. */
const mutatedFrame = fc
  .tuple(
    fc.constantFrom(...seeds),
    fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }),
    fc.option(fc.nat()),
  )
  .map(([seed, edits, cut]) => {
    const frame = seed.slice();
    for (const [position, value] of edits) frame[position % frame.length] = value;
    return cut === null ? frame : frame.subarray(0, cut % (frame.length + 1));
  });

/** Runs a decision on a frame placed inside a canary-filled arena and checks the canaries held. */
function decideInArena(
  frame: Uint8Array,
  decide: (bytes: Uint8Array, offset: number, length: number) => number,
) {
  const arena = new Uint8Array(frame.length + 64).fill(0xa5);
  arena.set(frame, 32);
  // Make whatever lies after the frame look like more valid data: a reader that overruns would
  // then likely decide differently than on the bare frame.
  const reason = decide(arena, 32, frame.length);
  const bare = decide(frame.slice(), 0, frame.length);
  return { reason, bare };
}

describe("no input makes softnet throw", () => {
  test("random bytes from the VM", () => {
    const policy = newPolicy();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1600 }), (bytes) => {
        const reason = policy.decideFromVm(bytes, 0, bytes.length, 1);
        expect(reason).toBeGreaterThanOrEqual(0);
        expect(reason).toBeLessThan(REASON_COUNT);
      }),
      { numRuns: RUNS },
    );
  });

  test("random bytes from the host", () => {
    const policy = newPolicy();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1600 }), (bytes) => {
        const reason = policy.observeFromHost(bytes, 0, bytes.length, 1);
        expect(reason).toBeLessThan(REASON_COUNT);
      }),
      { numRuns: RUNS },
    );
  });

  test("mutated and truncated valid frames, both directions, decided the same inside a larger buffer", () => {
    fc.assert(
      fc.property(mutatedFrame, (frame) => {
        const vm = decideInArena(frame, (b, o, l) => newPolicy().decideFromVm(b, o, l, 1));
        expect(vm.reason).toBe(vm.bare);
        const host = decideInArena(frame, (b, o, l) => newPolicy().observeFromHost(b, o, l, 1));
        expect(host.reason).toBe(host.bare);
      }),
      { numRuns: RUNS },
    );
  });

  test("random and mutated DHCP messages", () => {
    const message = new DhcpMessage();
    const valid = emitDhcp({
      op: 2,
      xid: 1,
      clientMac: VM_MAC,
      messageType: 5,
      leaseTimeSeconds: 60,
      dnsServers: [GATEWAY],
    });
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
        fc.nat(),
        (edits, cut) => {
          const bytes = valid.slice(0, 236 + (cut % (valid.length - 235)));
          for (const [position, value] of edits) bytes[position % bytes.length] = value;
          expect(typeof readDhcp(bytes, 0, bytes.length, message)).toBe("boolean");
        },
      ),
      { numRuns: RUNS },
    );
  });

  test("a truncated frame never passes as more than what arrived", () => {
    const full = tcpFrame({ dst: "1.1.1.1", dport: 443 });
    for (let length = 0; length < full.length; length++) {
      const reason = newPolicy().decideFromVm(full, 0, length, 1);
      expect(reason).not.toBe(Reason.PASS_GLOBAL);
    }
  });
});

const ipv4Text = fc.integer({ min: 0, max: 0xffffffff }).map(formatIpv4);
const macText = fc.integer({ min: 0, max: 0xffff_ffff_ffff }).map(formatMac);
const port = fc.integer({ min: 0, max: 65535 });

describe("emit → parse gives back what was emitted", () => {
  test("IPv4", () => {
    fc.assert(
      fc.property(
        ipv4Text,
        ipv4Text,
        fc.integer({ min: 0, max: 255 }),
        fc.integer({ min: 0, max: 8191 }),
        fc.boolean(),
        fc.uint8Array({ maxLength: 64 }),
        (source, destination, protocol, fragmentUnits, moreFragments, payload) => {
          const repr = {
            source,
            destination,
            protocol,
            fragmentOffset: fragmentUnits * 8,
            moreFragments,
            dontFragment: false,
          };
          const parsed = parseIpv4Packet(emitIpv4(repr, payload))!;
          expect(parsed.repr).toMatchObject({ ...repr, checksumValid: true });
          expect(parsed.payload).toEqual(payload);
        },
      ),
    );
  });

  test("UDP and TCP", () => {
    fc.assert(
      fc.property(
        port,
        port,
        fc.uint8Array({ maxLength: 64 }),
        fc.integer({ min: 0, max: 0x3f }),
        (a, b, payload, flags) => {
          expect(
            parseUdp(emitUdp({ sourcePort: a, destinationPort: b }, payload, "10.0.0.1", "10.0.0.2")),
          ).toEqual({
            repr: { sourcePort: a, destinationPort: b },
            payload,
          });
          const tcp = {
            sourcePort: a,
            destinationPort: b,
            sequence: a * 65536 + b,
            acknowledgment: b,
            flags,
            window: a,
          };
          expect(parseTcp(emitTcp(tcp, payload, "10.0.0.1", "10.0.0.2"))).toEqual({ repr: tcp, payload });
        },
      ),
    );
  });

  test("ARP", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 65535 }),
        macText,
        ipv4Text,
        macText,
        ipv4Text,
        (operation, sm, si, tm, ti) => {
          const repr = { operation, senderMac: sm, senderIp: si, targetMac: tm, targetIp: ti };
          expect(parseArp(emitArp(repr))).toEqual(repr);
        },
      ),
    );
  });

  test("DHCP", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0xffffffff }),
        macText,
        ipv4Text,
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.array(ipv4Text, { minLength: 1, maxLength: 8 }),
        (xid, clientMac, yourAddress, messageType, leaseTimeSeconds, dnsServers) => {
          const repr = { op: 2, xid, clientMac, yourAddress, messageType, leaseTimeSeconds, dnsServers };
          expect(parseDhcp(emitDhcp(repr))).toMatchObject(repr);
        },
      ),
    );
  });
});
