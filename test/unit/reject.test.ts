/**
 * --reject, the pure part (src/policy/reject.ts): which dropped frames get an answer, and the
 * answer byte for byte. The two reference replies (a reset for a TCP SYN, an ICMP "administratively
 * prohibited" for a UDP datagram) are written out field by field in reject-fixtures.ts; their
 * checksums were worked out apart from softnet's code, and a real reader (tshark, from a pcap this
 * file writes) checks what they mean and that every checksum in them is right, so neither
 * direction rests on softnet's own parser.
 */

import { heapStats } from "bun:jsc";
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseCommandLine } from "../../src/cli.ts";
import { LearnedNames } from "../../src/policy/learned-names.ts";
import { type NamePattern, NamePatterns, parseNamePattern } from "../../src/policy/name-patterns.ts";
import { Policy } from "../../src/policy/policy.ts";
import { Reason, reasonName } from "../../src/policy/reasons.ts";
import {
  buildRejectReply,
  isHostAddress,
  RATE_LIMITED,
  REJECT_REPLY_BURST,
  REJECT_REPLY_MAX_BYTES,
  Rejecter,
} from "../../src/policy/reject.ts";
import { parseRuleTarget, RuleTable, type RuleTarget } from "../../src/policy/rules.ts";
import { parseIpv4, parseMac } from "../../src/wire/bytes.ts";
import { DhcpMessageType } from "../../src/wire/dhcp.ts";
import { emitDnsMessage } from "../../src/wire/dns.ts";
import { IcmpType } from "../../src/wire/icmp.ts";
import { IpProtocol } from "../../src/wire/ipv4.ts";
import { TcpFlag } from "../../src/wire/tcp.ts";
import { haveTool } from "../support/capture-readers.ts";
import { REQUIRED_IN_CI } from "../support/ci.ts";
import {
  BROADCAST,
  dhcpServerFrame,
  GATEWAY,
  HOST_MAC,
  icmpEchoFrame,
  OTHER_MAC,
  tcpFrame,
  udpFrame,
  VM_IP,
  VM_MAC,
} from "../support/frames.ts";
import { DATAGRAM, leasedPolicy, PROHIBITED, RESET, SYN, T0 } from "./reject-fixtures.ts";

const toHex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

/** Decides `frame` as softnet would and builds the answer: [reason, reply or undefined]. */
function decideAndAnswer(policy: Policy, frame: Uint8Array, now = T0): [string, Uint8Array | undefined] {
  const reason = policy.decideFromVm(frame, 0, frame.length, now);
  const out = new Uint8Array(REJECT_REPLY_MAX_BYTES);
  const length = buildRejectReply(policy, reason, frame, 0, frame.length, now, out, 0);
  return [reasonName(reason), length === 0 ? undefined : out.slice(0, length)];
}

describe("answers, byte for byte", () => {
  test("a TCP SYN to a destination that is not allowed gets a reset (RST+ACK, ACK = SEQ + 1)", () => {
    expect(decideAndAnswer(leasedPolicy(), SYN)).toEqual(["not-allowed-destination", RESET]);
  });

  test("a UDP datagram to a destination that is not allowed gets ICMP 3/13 quoting header + 8 bytes", () => {
    expect(decideAndAnswer(leasedPolicy(), DATAGRAM)).toEqual(["not-allowed-destination", PROHIBITED]);
  });

  test("--block gives the same answers, for blocked-by-rule", () => {
    const policy = leasedPolicy(["10.99.0.0/24"]);
    expect(decideAndAnswer(policy, SYN)).toEqual(["blocked-by-rule", RESET]);
    expect(decideAndAnswer(policy, DATAGRAM)).toEqual(["blocked-by-rule", PROHIBITED]);
  });

  test("the reply is written at the offset asked for, and nothing outside it", () => {
    const policy = leasedPolicy();
    const out = new Uint8Array(300).fill(0xaa);
    const length = buildRejectReply(policy, Reason.NOT_ALLOWED_DESTINATION, SYN, 0, SYN.length, T0, out, 128);
    expect(length).toBe(RESET.length);
    expect(toHex(out.subarray(128, 128 + length))).toBe(toHex(RESET));
    expect(out.subarray(0, 128).every((byte) => byte === 0xaa)).toBe(true);
    expect(out.subarray(128 + length).every((byte) => byte === 0xaa)).toBe(true);
  });

  test("the dropped frame may sit at any offset of a batch", () => {
    const policy = leasedPolicy();
    const batch = new Uint8Array(4096);
    batch.set(DATAGRAM, 1518 * 2);
    const out = new Uint8Array(REJECT_REPLY_MAX_BYTES);
    const length = buildRejectReply(
      policy,
      Reason.NOT_ALLOWED_DESTINATION,
      batch,
      1518 * 2,
      DATAGRAM.length,
      T0,
      out,
      0,
    );
    expect(toHex(out.subarray(0, length))).toBe(toHex(PROHIBITED));
  });
});

/** A classic pcap file (LINKTYPE_ETHERNET) holding `frames`, one a second. */
function pcap(frames: Uint8Array[]): Uint8Array {
  const header = Buffer.alloc(24);
  header.writeUInt32LE(0xa1b2c3d4, 0);
  header.writeUInt16LE(2, 4);
  header.writeUInt16LE(4, 6);
  header.writeUInt32LE(65535, 16);
  header.writeUInt32LE(1, 20);
  const records = frames.map((frame, index) => {
    const record = Buffer.alloc(16);
    record.writeUInt32LE(1_767_323_045 + index, 0);
    record.writeUInt32LE(frame.length, 8);
    record.writeUInt32LE(frame.length, 12);
    return Buffer.concat([record, frame]);
  });
  return new Uint8Array(Buffer.concat([header, ...records]));
}

/** tshark's fields for each frame of a pcap, with every checksum check turned on. */
async function tsharkFields(frames: Uint8Array[], fields: string[]): Promise<Array<Record<string, string>>> {
  const dir = mkdtempSync(join(tmpdir(), "softnet-reject-test-"));
  try {
    const path = join(dir, "replies.pcap");
    writeFileSync(path, pcap(frames));
    const argv = ["tshark", "-r", path, "-n"];
    for (const protocol of ["ip", "tcp", "udp"]) argv.push("-o", `${protocol}.check_checksum:TRUE`); // ICMP's is always checked
    argv.push("-T", "fields", "-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=,");
    for (const field of fields) argv.push("-e", field);
    const child = Bun.spawn(argv, { stdout: "pipe", stderr: "pipe" });
    const [stdout, stderr, code] = await Promise.all([
      new Response(child.stdout).text(),
      new Response(child.stderr).text(),
      child.exited,
    ]);
    if (code !== 0) throw new Error(`tshark exited ${code}: ${stderr}`);
    return stdout
      .trimEnd()
      .split("\n")
      .map((line) => Object.fromEntries(line.split("|").map((value, i) => [fields[i], value])));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** tshark's checksum status: 1 = good (it checked and the sum is right). */
const GOOD = "1";

describe.skipIf(!haveTool("tshark") && !REQUIRED_IN_CI)("the reference replies, read by tshark", () => {
  test("the reset: addresses and ports swapped, RST+ACK acknowledging the SYN, checksums good", async () => {
    const fields = [
      "eth.src",
      "eth.dst",
      "ip.src",
      "ip.dst",
      "ip.ttl",
      "ip.checksum.status",
      "tcp.srcport",
      "tcp.dstport",
      "tcp.seq_raw",
      "tcp.ack_raw",
      "tcp.flags.str",
      "tcp.window_size_value",
      "tcp.checksum.status",
    ];
    const [syn, reset] = await tsharkFields([SYN, RESET], fields);
    expect(syn).toMatchObject({ "ip.checksum.status": GOOD, "tcp.checksum.status": GOOD });
    expect(reset).toEqual({
      "eth.src": HOST_MAC,
      "eth.dst": VM_MAC,
      "ip.src": "10.99.0.1",
      "ip.dst": VM_IP,
      "ip.ttl": "64",
      "ip.checksum.status": GOOD,
      "tcp.srcport": "80",
      "tcp.dstport": "40000",
      "tcp.seq_raw": "0",
      "tcp.ack_raw": String(0x12345679),
      "tcp.flags.str": "·······A·R··",
      "tcp.window_size_value": "0",
      "tcp.checksum.status": GOOD,
    });
  });

  test("the ICMP error: type 3 code 13, quoting the datagram's header and UDP ports, checksums good", async () => {
    const fields = [
      "eth.src",
      "eth.dst",
      "ip.src",
      "ip.dst",
      "ip.checksum.status",
      "icmp.type",
      "icmp.code",
      "icmp.checksum.status",
      "ip.id",
      "udp.srcport",
      "udp.dstport",
      "udp.length",
    ];
    const [datagram, prohibited] = await tsharkFields([DATAGRAM, PROHIBITED], fields);
    expect(datagram).toMatchObject({ "ip.checksum.status": GOOD, "icmp.type": "" });
    // The quoted header is dissected too: each IP field has the reply's value, then the quote's.
    expect(prohibited).toEqual({
      "eth.src": HOST_MAC,
      "eth.dst": VM_MAC,
      "ip.src": `10.99.0.53,${VM_IP}`,
      "ip.dst": `${VM_IP},10.99.0.53`,
      "ip.checksum.status": `${GOOD},${GOOD}`,
      "icmp.type": "3",
      "icmp.code": "13",
      "icmp.checksum.status": GOOD,
      "ip.id": "0x0000,0xbeef",
      "udp.srcport": "53000",
      "udp.dstport": "9",
      "udp.length": "22",
    });
  });
});

describe("the reset follows RFC 9293 3.10.7.1 for every kind of segment", () => {
  const policy = leasedPolicy();
  const reset = (frame: Uint8Array) => {
    const [reason, reply] = decideAndAnswer(policy, frame);
    expect(reason).toBe("not-allowed-destination");
    if (reply === undefined) throw new Error("no reply");
    return {
      flags: reply[14 + 20 + 13],
      sequence: Buffer.from(reply).readUInt32BE(14 + 20 + 4),
      acknowledgment: Buffer.from(reply).readUInt32BE(14 + 20 + 8),
    };
  };
  const segment = (flags: number, payloadLength = 0, sequence = 1, acknowledgment = 0) => {
    const frame = tcpFrame({ dst: "10.99.0.1", dport: 80, flags, payload: new Uint8Array(payloadLength) });
    const view = Buffer.from(frame.buffer, frame.byteOffset, frame.length);
    view.writeUInt32BE(sequence, 14 + 20 + 4);
    view.writeUInt32BE(acknowledgment, 14 + 20 + 8);
    return frame; // the TCP checksum is now wrong: softnet neither checks nor needs it
  };

  test.each([
    ["SYN", TcpFlag.SYN, 0, 1000, 0, { flags: TcpFlag.RST | TcpFlag.ACK, sequence: 0, acknowledgment: 1001 }],
    [
      "SYN with 10 bytes of data",
      TcpFlag.SYN,
      10,
      1000,
      0,
      { flags: 0x14, sequence: 0, acknowledgment: 1011 },
    ],
    ["FIN with 5 bytes", TcpFlag.FIN, 5, 7, 0, { flags: 0x14, sequence: 0, acknowledgment: 13 }],
    ["SYN+FIN", TcpFlag.SYN | TcpFlag.FIN, 0, 7, 0, { flags: 0x14, sequence: 0, acknowledgment: 9 }],
    ["bare segment, no flags", 0, 3, 7, 0, { flags: 0x14, sequence: 0, acknowledgment: 10 }],
    [
      "SYN at the end of sequence space",
      TcpFlag.SYN,
      0,
      0xffffffff,
      0,
      { flags: 0x14, sequence: 0, acknowledgment: 0 },
    ],
    [
      "ACK with data",
      TcpFlag.ACK | TcpFlag.PSH,
      100,
      5,
      77,
      { flags: TcpFlag.RST, sequence: 77, acknowledgment: 0 },
    ],
    [
      "SYN+ACK",
      TcpFlag.SYN | TcpFlag.ACK,
      0,
      5,
      0xfffffff0,
      { flags: TcpFlag.RST, sequence: 0xfffffff0, acknowledgment: 0 },
    ],
    ["FIN+ACK", TcpFlag.FIN | TcpFlag.ACK, 0, 5, 9, { flags: TcpFlag.RST, sequence: 9, acknowledgment: 0 }],
  ])("%s", (_name, flags, payloadLength, sequence, acknowledgment, expected) => {
    expect(reset(segment(flags, payloadLength, sequence, acknowledgment))).toEqual(expected);
  });
});

describe("other protocols get ICMP 3/13, quoting what there is", () => {
  const policy = leasedPolicy();

  test("an echo request (ping) quotes the echo header", () => {
    const ping = icmpEchoFrame({ dst: "10.99.0.1" });
    const [reason, reply] = decideAndAnswer(policy, ping);
    expect(reason).toBe("not-allowed-destination");
    expect(reply?.length).toBe(14 + 20 + 8 + 20 + 8);
    expect(toHex(reply!.subarray(14 + 20, 14 + 20 + 2))).toBe("030d");
    expect(toHex(reply!.subarray(14 + 20 + 8))).toBe(toHex(ping.subarray(14, 14 + 28)));
  });

  test("a protocol with fewer than 8 bytes of data quotes them all (GRE, 4 bytes)", () => {
    const frame = udpFrame({ dst: "10.99.0.1", dport: 9, payload: new Uint8Array(0) });
    frame[14 + 9] = 47; // GRE: the 8 bytes that were UDP are now GRE's; cut them to 4
    const cut = frame.slice(0, 14 + 24);
    cut[14 + 3] = 24; // total length 24
    const [reason, reply] = decideAndAnswer(policy, cut);
    expect(reason).toBe("not-allowed-destination");
    expect(reply?.length).toBe(14 + 20 + 8 + 24);
  });

  test("the first fragment of a TCP segment gets ICMP, not a reset (its SEG.LEN is unknown)", () => {
    const frame = tcpFrame({ dst: "10.99.0.1", dport: 80, ip: { moreFragments: true, dontFragment: false } });
    const [, reply] = decideAndAnswer(policy, frame);
    expect(reply?.[14 + 9]).toBe(IpProtocol.ICMP);
    expect(reply?.[14 + 20]).toBe(IcmpType.DESTINATION_UNREACHABLE);
  });

  test("the first fragment of a UDP datagram gets ICMP", () => {
    const frame = udpFrame({ dst: "10.99.0.1", dport: 9, ip: { moreFragments: true, dontFragment: false } });
    const [, reply] = decideAndAnswer(policy, frame);
    expect(reply?.[14 + 20]).toBe(IcmpType.DESTINATION_UNREACHABLE);
  });
});

/** Sets the IPv4 header checksum of a frame after a test changed the header. */
function fixIpChecksum(frame: Uint8Array): Uint8Array {
  frame[24] = 0;
  frame[25] = 0;
  let sum = 0;
  for (let i = 14; i < 34; i += 2) sum += (frame[i] << 8) | frame[i + 1];
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  frame[24] = (~sum >>> 8) & 0xff;
  frame[25] = ~sum & 0xff;
  return frame;
}

describe("what is never answered", () => {
  const icmp = (type: number, code = 0) => {
    const frame = icmpEchoFrame({ dst: "10.99.0.1" });
    frame[14 + 20] = type;
    frame[14 + 20 + 1] = code;
    return frame;
  };
  // [what, frame, --block rules, the reason the policy gives]
  const rows: Array<[string, Uint8Array, string[], string]> = [
    ["a spoofed source MAC", tcpFrame({ srcMac: OTHER_MAC, dst: "10.99.0.1", dport: 80 }), [], "mac-spoof"],
    [
      "a spoofed source address",
      tcpFrame({ src: "192.168.64.77", dst: "10.99.0.1", dport: 80 }),
      [],
      "ip-spoof",
    ],
    [
      "a spoofed source address, blocked",
      tcpFrame({ src: "192.168.64.77", dst: "10.99.0.1", dport: 80 }),
      ["10.0.0.0/8"],
      "ip-spoof",
    ],
    ["a reset", tcpFrame({ dst: "10.99.0.1", dport: 80, flags: TcpFlag.RST }), [], "not-allowed-destination"],
    [
      "a reset with ACK",
      tcpFrame({ dst: "10.99.0.1", dport: 80, flags: TcpFlag.RST | TcpFlag.ACK }),
      [],
      "not-allowed-destination",
    ],
    [
      "ICMP destination unreachable",
      icmp(IcmpType.DESTINATION_UNREACHABLE, 3),
      [],
      "not-allowed-destination",
    ],
    ["ICMP source quench", icmp(IcmpType.SOURCE_QUENCH), [], "not-allowed-destination"],
    ["ICMP redirect", icmp(IcmpType.REDIRECT), [], "not-allowed-destination"],
    ["ICMP time exceeded", icmp(IcmpType.TIME_EXCEEDED), [], "not-allowed-destination"],
    ["ICMP parameter problem", icmp(IcmpType.PARAMETER_PROBLEM), [], "not-allowed-destination"],
    ["an ICMP type nobody knows (treated as an error)", icmp(42), [], "not-allowed-destination"],
    [
      "a later fragment",
      udpFrame({ dst: "10.99.0.1", dport: 9, ip: { fragmentOffset: 8, dontFragment: false } }),
      [],
      "not-allowed-destination",
    ],
    [
      "a broadcast frame",
      udpFrame({ dstMac: BROADCAST, dst: "10.99.0.1", dport: 9 }),
      [],
      "not-allowed-destination",
    ],
    [
      "a multicast frame",
      udpFrame({ dstMac: "01:00:5e:00:00:fb", dst: "10.99.0.1", dport: 9 }),
      [],
      "not-allowed-destination",
    ],
    ["to 255.255.255.255", udpFrame({ dst: "255.255.255.255", dport: 9 }), [], "not-allowed-destination"],
    [
      "to the VM network's broadcast",
      udpFrame({ dst: "192.168.64.255", dport: 9 }),
      [],
      "not-allowed-destination",
    ],
    [
      "to the VM network's own address",
      udpFrame({ dst: "192.168.64.0", dport: 9 }),
      [],
      "not-allowed-destination",
    ],
    [
      "to a blocked multicast group",
      udpFrame({ dst: "224.0.0.251", dport: 5353 }),
      ["224.0.0.0/4"],
      "blocked-by-rule",
    ],
    ["to 240/4", udpFrame({ dst: "240.0.0.1", dport: 9 }), [], "not-allowed-destination"],
    ["to loopback", udpFrame({ dst: "127.0.0.1", dport: 9 }), [], "not-allowed-destination"],
    ["to 0/8", udpFrame({ dst: "0.1.2.3", dport: 9 }), [], "not-allowed-destination"],
    [
      "a UDP length beyond the packet",
      (() => {
        const frame = udpFrame({ dst: "10.99.0.1", dport: 9 });
        frame[14 + 20 + 4] = 0xff;
        return frame;
      })(),
      ["10.0.0.0/8"],
      "blocked-by-rule",
    ],
    [
      "a TCP header cut short",
      (() => {
        const frame = tcpFrame({ dst: "10.99.0.1", dport: 80 }).slice(0, 14 + 20 + 12);
        frame[14 + 3] = 32; // total length 32: 12 bytes of TCP
        return fixIpChecksum(frame);
      })(),
      [],
      "not-allowed-destination",
    ],
    [
      "ICMP shorter than its header",
      (() => {
        const frame = icmpEchoFrame({ dst: "10.99.0.1" }).slice(0, 14 + 20 + 4);
        frame[14 + 3] = 24;
        return fixIpChecksum(frame);
      })(),
      [],
      "not-allowed-destination",
    ],
    ["an allowed destination (it passes)", tcpFrame({ dst: "8.8.8.8", dport: 80 }), [], "global-destination"],
    [
      "IPv4 options",
      (() => {
        const frame = tcpFrame({
          dst: "10.99.0.1",
          dport: 80,
          ip: { options: new Uint8Array([1, 1, 1, 0]) },
        });
        return frame;
      })(),
      [],
      "ipv4-options",
    ],
  ];

  test.each(rows)("%s", (_what, frame, block, expectedReason) => {
    const [reason, reply] = decideAndAnswer(leasedPolicy(block), frame);
    expect(reason).toBe(expectedReason);
    expect(reply).toBeUndefined();
  });

  test("before the lease (no-lease), and after it expired", () => {
    const policy = leasedPolicy();
    const later = T0 + 601_000;
    expect(decideAndAnswer(policy, SYN, later)).toEqual(["no-lease", undefined]);
  });

  test("even told the reason is blocked-by-rule, a frame not from the VM's MAC and lease gets nothing", () => {
    // Defence in depth: the policy gives these other reasons; the builder checks again.
    const policy = leasedPolicy();
    const out = new Uint8Array(REJECT_REPLY_MAX_BYTES);
    for (const frame of [
      tcpFrame({ srcMac: OTHER_MAC, dst: "10.99.0.1", dport: 80 }),
      tcpFrame({ src: "192.168.64.77", dst: "10.99.0.1", dport: 80 }),
      tcpFrame({ src: "0.0.0.0", dst: "10.99.0.1", dport: 80 }),
    ]) {
      expect(buildRejectReply(policy, Reason.BLOCKED_BY_RULE, frame, 0, frame.length, T0, out, 0)).toBe(0);
    }
    // And no reason but those three is ever answered, whatever the frame.
    for (let reason = 0; reason < 64; reason++) {
      if (
        reason === Reason.BLOCKED_BY_RULE ||
        reason === Reason.NOT_ALLOWED_DESTINATION ||
        reason === Reason.DNS_NAME_NOT_ALLOWED
      ) {
        continue;
      }
      expect(buildRejectReply(policy, reason, SYN, 0, SYN.length, T0, out, 0)).toBe(0);
    }
  });

  test("before softnet knows the gateway's MAC: nothing (the frame is dropped silently)", () => {
    const policy = leasedPolicy();
    policy.gatewayMac = -1;
    expect(decideAndAnswer(policy, SYN)).toEqual(["not-allowed-destination", undefined]);
  });

  test("the gateway's MAC as the policy knows it now is the reply's source", () => {
    const policy = leasedPolicy();
    policy.gatewayMac = parseMac("02:5e:00:00:00:42")!;
    const [, reply] = decideAndAnswer(policy, SYN);
    expect(toHex(reply!.subarray(6, 12))).toBe("025e00000042");
  });
});

describe("host addresses", () => {
  const network = parseIpv4("192.168.64.1")!;
  test.each([
    ["192.168.64.5", 24, true],
    ["192.168.64.255", 24, false],
    ["192.168.64.0", 24, false],
    ["192.168.65.255", 24, true], // another network's broadcast is not known to be one
    ["192.168.64.255", 31, true], // a /31 has no broadcast address (RFC 3021)
    ["192.168.64.127", 25, false],
    ["10.0.0.1", 1, true],
    ["127.0.0.1", 24, false],
    ["0.0.0.0", 24, false],
    ["224.0.0.1", 24, false],
    ["255.255.255.255", 24, false],
    ["223.255.255.254", 24, true],
  ])("%s in 192.168.64.1/%i: %p", (address, prefixLength, expected) => {
    expect(isHostAddress(parseIpv4(address)!, network, prefixLength)).toBe(expected);
  });
});

describe("rate limit: a token bucket per reason", () => {
  test(`a burst of ${REJECT_REPLY_BURST}, then 100 a second; the other reason has its own bucket`, () => {
    const policy = leasedPolicy(["10.99.0.53/32"]);
    const rejecter = new Rejecter(policy);
    const out = new Uint8Array(REJECT_REPLY_MAX_BYTES);
    const answer = (frame: Uint8Array, now: number) =>
      rejecter.answer(policy.decideFromVm(frame, 0, frame.length, now), frame, 0, frame.length, now, out, 0);
    const results: number[] = [];
    for (let i = 0; i < REJECT_REPLY_BURST + 5; i++) results.push(answer(SYN, T0));
    expect(results.filter((r) => r > 0).length).toBe(REJECT_REPLY_BURST);
    expect(results.slice(REJECT_REPLY_BURST)).toEqual(Array(5).fill(RATE_LIMITED));
    // blocked-by-rule (the datagram) still has its whole burst.
    expect(answer(DATAGRAM, T0)).toBe(PROHIBITED.length);
    // 100 a second: one more every 10 ms.
    expect(answer(SYN, T0 + 5)).toBe(RATE_LIMITED);
    expect(answer(SYN, T0 + 10)).toBe(RESET.length);
    expect(answer(SYN, T0 + 10)).toBe(RATE_LIMITED);
    // A frame that gets no answer does not take a token.
    const reset = tcpFrame({ dst: "10.99.0.1", dport: 80, flags: TcpFlag.RST });
    expect(answer(reset, T0 + 10_000)).toBe(0);
    let answered = 0;
    for (let i = 0; i < REJECT_REPLY_BURST; i++) if (answer(SYN, T0 + 10_000) > 0) answered++;
    expect(answered).toBe(REJECT_REPLY_BURST);
  });

  test("answering allocates nothing per frame", () => {
    const policy = leasedPolicy();
    const rejecter = new Rejecter(policy, 1e9, 1e9);
    const out = new Uint8Array(REJECT_REPLY_MAX_BYTES);
    const frames = [SYN, DATAGRAM, icmpEchoFrame({ dst: "10.99.0.1" })];
    let replies = 0;
    const rounds = (count: number) => {
      for (let i = 0; i < count; i++) {
        const frame = frames[i % 3];
        if (rejecter.answer(Reason.NOT_ALLOWED_DESTINATION, frame, 0, frame.length, T0, out, 0) > 0)
          replies++;
      }
    };
    rounds(10_000);
    Bun.gc(true);
    const before = heapStats().objectCount;
    rounds(100_000);
    expect(heapStats().objectCount - before).toBeLessThan(10);
    expect(replies).toBe(110_000);
  });
});

describe("--reject on the command line", () => {
  const base = ["--vm-fd", "0", "--vm-mac-address", "12:34:56:78:9a:bc"];
  test("off by default, on with --reject", () => {
    const parse = (args: string[]) => {
      const parsed = parseCommandLine(args);
      if (parsed.kind !== "run") throw new Error("expected options");
      return parsed.options.reject;
    };
    expect(parse(base)).toBe(false);
    expect(parse([...base, "--reject"])).toBe(true);
  });

  test("--help lists it", () => {
    const parsed = parseCommandLine(["--help"]);
    expect(parsed.kind).toBe("print");
    if (parsed.kind === "print") expect(parsed.text).toMatch(/--reject\s+answer what the rules drop/);
  });
});

describe("--reject and names in --allow", () => {
  test("a DNS query for a name the list does not have, under --block 0.0.0.0/0, gets ICMP 3/13", () => {
    const gateway = parseIpv4(GATEWAY)!;
    const names = new LearnedNames(new NamePatterns([parseNamePattern("github.com") as NamePattern]));
    const block = parseRuleTarget("0.0.0.0/0") as RuleTarget;
    const policy = new Policy({
      vmMac: parseMac(VM_MAC)!,
      gateway,
      prefixLength: 24,
      isolated: true,
      rules: RuleTable.compile([{ action: "block", target: block }], gateway, names),
      names,
    });
    const ack = dhcpServerFrame({
      messageType: DhcpMessageType.ACK,
      leaseTimeSeconds: 600,
      dnsServers: [GATEWAY],
    });
    policy.observeFromHost(ack, 0, ack.length, T0);
    const query = udpFrame({
      dst: GATEWAY,
      dport: 53,
      payload: emitDnsMessage({
        id: 3,
        response: false,
        question: { name: "c2VjcmV0.evil.example", type: 1 },
      }),
    });
    const [reason, reply] = decideAndAnswer(policy, query);
    expect(reason).toBe("dns-name-not-allowed");
    // Ethernet (14) + IPv4 (20) + ICMP: type 3 "destination unreachable", code 13 "administratively prohibited".
    expect(reply === undefined ? undefined : [reply[34], reply[35]]).toEqual([3, 13]);
  });
});
