/**
 * A VM's identity at the host's DHCP server is its MAC, and nothing it writes can change that.
 * dnsmasq and macOS bootpd key a lease by the client identifier (option 61) when a message has
 * one, by htype + chaddr otherwise; softnet pins chaddr to the VM's MAC and clears option 61 (and
 * 82, 118, 52: another network, or options hidden in sname/file; 12 and 81: a name for the server
 * to register in DNS, which another VM may hold) from every client message it lets through, in place, with PAD bytes, keeping the UDP checksum right. These tests read the bytes
 * that leave softnet.
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { Policy } from "../../src/policy/policy.ts";
import { isPass, reasonName } from "../../src/policy/reasons.ts";
import { RuleTable } from "../../src/policy/rules.ts";
import { formatIpv4, parseIpv4, parseMac, readU16, readU32, writeU16 } from "../../src/wire/bytes.ts";
import { finishChecksum, internetChecksum, pseudoHeaderSum, sumWords } from "../../src/wire/checksum.ts";
import {
  asInitReboot,
  BootpOp,
  Dhcp,
  DhcpMessageType,
  DhcpOption,
  DhcpPort,
  emitDhcp,
  InitReboot,
  parseDhcp,
} from "../../src/wire/dhcp.ts";
import { IpProtocol } from "../../src/wire/ipv4.ts";
import {
  dhcpClientFrame,
  dhcpServerFrame,
  GATEWAY,
  OTHER_MAC,
  udpFrame,
  VM_IP,
  VM_MAC,
} from "../support/frames.ts";

const IP_AT = 14;
const UDP_AT = IP_AT + 20;
const DHCP_AT = UDP_AT + 8;
const STRIPPED = [
  DhcpOption.CLIENT_IDENTIFIER,
  DhcpOption.RELAY_AGENT_INFORMATION,
  DhcpOption.SUBNET_SELECTION,
  DhcpOption.OPTION_OVERLOAD,
  DhcpOption.HOST_NAME,
  DhcpOption.CLIENT_FQDN,
];

function newPolicy(lease = false): Policy {
  const gateway = parseIpv4(GATEWAY)!;
  const policy = new Policy({
    vmMac: parseMac(VM_MAC)!,
    gateway,
    prefixLength: 24,
    isolated: true,
    rules: RuleTable.compile([], gateway),
  });
  if (lease) {
    const ack = dhcpServerFrame({ messageType: DhcpMessageType.ACK, leaseTimeSeconds: 600 });
    policy.observeFromHost(ack, 0, ack.length, 0);
  }
  return policy;
}

function fromVm(policy: Policy, frame: Uint8Array): string {
  return reasonName(policy.decideFromVm(frame, 0, frame.length, 1000));
}

/** The options of the frame's DHCP message up to END, as [code, data] (PADs left out). */
function options(frame: Uint8Array): Array<[number, number[]]> {
  const found: Array<[number, number[]]> = [];
  const end = UDP_AT + readU16(frame, UDP_AT + 4);
  for (let cursor = DHCP_AT + Dhcp.OPTIONS; cursor < end; ) {
    const code = frame[cursor]!;
    if (code === DhcpOption.END) break;
    if (code === DhcpOption.PAD) {
      cursor++;
      continue;
    }
    const length = frame[cursor + 1]!;
    found.push([code, Array.from(frame.subarray(cursor + 2, cursor + 2 + length))]);
    cursor += 2 + length;
  }
  return found;
}

/** The receiver's check (RFC 768): a zero field means no checksum; otherwise all words sum to -0. */
function udpChecksumHolds(frame: Uint8Array): boolean {
  if (readU16(frame, UDP_AT + 6) === 0) return true;
  const length = readU16(frame, UDP_AT + 4);
  const pseudo = pseudoHeaderSum(
    readU32(frame, IP_AT + 12),
    readU32(frame, IP_AT + 16),
    IpProtocol.UDP,
    length,
  );
  return finishChecksum(sumWords(frame, UDP_AT, length, pseudo)) === 0;
}

const hostname = (name: string) => [12, name.length, ...new TextEncoder().encode(name)];
/** Option 60, vendor class identifier (RFC 2132 9.13): names no client, so it is kept. */
const vendorClass = (name: string) => [60, name.length, ...new TextEncoder().encode(name)];
/** Option 81 (RFC 4702 2): flags (S: the server updates the A record), RCODE1, RCODE2, the name. */
const clientFqdn = (name: string) => [81, 3 + name.length, 0x01, 0, 0, ...new TextEncoder().encode(name)];
const PARAMETER_REQUEST_LIST = [55, 4, 1, 3, 6, 15];
/** RFC 4361: type 255, a 4-byte IAID, then a DUID (here DUID-EN, type 2, as systemd builds it). */
const DUID_CLIENT_ID = new Uint8Array([
  255, 0, 0, 0, 1, 0, 2, 0, 0, 0xab, 0x11, 0x9f, 0x2c, 0x35, 0x1e, 0x70, 0x42,
]);

describe("the options that would give a VM another identity are cleared", () => {
  test("a client identifier naming another client: cleared, and nothing else changes", () => {
    const frame = dhcpClientFrame({
      dhcp: {
        clientIdentifier: new Uint8Array([
          1,
          ...OTHER_MAC.split(":").map((byte) => Number.parseInt(byte, 16)),
        ]),
        rawOptions: new Uint8Array([...vendorClass("vm1"), ...PARAMETER_REQUEST_LIST]),
      },
    });
    const before = frame.slice();
    expect(options(before).map(([code]) => code)).toEqual([53, 61, 60, 55]);
    expect(fromVm(newPolicy(), frame)).toBe("dhcp");
    expect(frame.length).toBe(before.length);
    expect(options(frame)).toEqual(options(before).filter(([code]) => code !== 61));
    expect(parseDhcp(frame.subarray(DHCP_AT))?.clientIdentifier).toBeUndefined();
    expect(udpChecksumHolds(before)).toBe(true);
    expect(udpChecksumHolds(frame)).toBe(true);
    // Only the option's own bytes (and the checksum) changed, and they became PAD.
    const changed = [...frame.keys()].filter((i) => frame[i] !== before[i]);
    const start = DHCP_AT + Dhcp.OPTIONS + 3;
    expect(changed.every((i) => (i >= start && i < start + 9) || i === UDP_AT + 6 || i === UDP_AT + 7)).toBe(
      true,
    );
    expect(Array.from(frame.subarray(start, start + 9))).toEqual(new Array(9).fill(0));
  });

  test("a DUID client identifier (RFC 4361, systemd-networkd, netplan, dhcpcd) is cleared and the request passes", () => {
    const frame = dhcpClientFrame({ dhcp: { clientIdentifier: DUID_CLIENT_ID } });
    expect(fromVm(newPolicy(), frame)).toBe("dhcp");
    expect(options(frame).map(([code]) => code)).toEqual([53]);
    expect(udpChecksumHolds(frame)).toBe(true);
  });

  test("relay agent information (82), subnet selection (118) and option overload (52) are cleared", () => {
    const frame = dhcpClientFrame({
      dhcp: {
        rawOptions: new Uint8Array([
          ...[82, 8, 1, 2, 0x61, 0x62, 2, 2, 0x63, 0x64],
          ...[118, 4, 10, 5, 0, 0],
          ...[52, 1, 3],
          ...vendorClass("vm1"),
        ]),
      },
    });
    expect(fromVm(newPolicy(), frame)).toBe("dhcp");
    expect(options(frame).map(([code]) => code)).toEqual([53, 60]);
    expect(udpChecksumHolds(frame)).toBe(true);
  });

  test("a client identifier split in two (RFC 3396) goes whole", () => {
    const frame = dhcpClientFrame({
      dhcp: { rawOptions: new Uint8Array([61, 3, 1, 2, 0, 60, 1, 0x61, 61, 5, 0, 0, 0, 0, 0x99]) },
    });
    expect(fromVm(newPolicy(), frame)).toBe("dhcp");
    expect(options(frame).map(([code]) => code)).toEqual([53, 60]);
    expect(udpChecksumHolds(frame)).toBe(true);
  });

  test("a unicast renewal to the gateway is cleared too", () => {
    const frame = dhcpClientFrame({
      src: VM_IP,
      dst: GATEWAY,
      messageType: DhcpMessageType.REQUEST,
      dhcp: { clientAddress: VM_IP, clientIdentifier: DUID_CLIENT_ID },
    });
    expect(fromVm(newPolicy(true), frame)).toBe("dhcp");
    expect(options(frame).map(([code]) => code)).toEqual([53]);
    expect(udpChecksumHolds(frame)).toBe(true);
  });

  test("bytes after END are no options to a server, and are left alone", () => {
    const frame = dhcpClientFrame({ dhcp: { rawOptions: new Uint8Array([255, 61, 2, 1, 2]) } });
    const before = frame.slice();
    expect(fromVm(newPolicy(), frame)).toBe("dhcp");
    expect(frame).toEqual(before);
  });

  test("a host name (12) and a client FQDN (81) are cleared: no VM registers a name another may hold", () => {
    const frame = dhcpClientFrame({
      messageType: DhcpMessageType.REQUEST,
      dhcp: {
        rawOptions: new Uint8Array([
          ...hostname("buildvm"),
          ...clientFqdn("buildvm.example."),
          ...vendorClass("vm1"),
          ...PARAMETER_REQUEST_LIST,
        ]),
      },
    });
    expect(fromVm(newPolicy(), frame)).toBe("dhcp");
    expect(options(frame).map(([code]) => code)).toEqual([53, 60, 55]);
    expect(udpChecksumHolds(frame)).toBe(true);
  });

  test("a message with nothing to clear goes out byte for byte", () => {
    const frame = dhcpClientFrame({ dhcp: { rawOptions: new Uint8Array(vendorClass("vm1")) } });
    const before = frame.slice();
    expect(fromVm(newPolicy(), frame)).toBe("dhcp");
    expect(frame).toEqual(before);
  });

  test("a datagram sent without a checksum (0) stays without one", () => {
    const frame = dhcpClientFrame({ dhcp: { clientIdentifier: DUID_CLIENT_ID } });
    writeU16(frame, UDP_AT + 6, 0);
    expect(fromVm(newPolicy(), frame)).toBe("dhcp");
    expect(readU16(frame, UDP_AT + 6)).toBe(0);
    expect(options(frame).map(([code]) => code)).toEqual([53]);
  });

  test("a wrong checksum stays wrong: the server drops what it would have dropped", () => {
    const frame = dhcpClientFrame({ dhcp: { clientIdentifier: DUID_CLIENT_ID } });
    writeU16(frame, UDP_AT + 6, readU16(frame, UDP_AT + 6) ^ 0x0101);
    expect(udpChecksumHolds(frame)).toBe(false);
    expect(fromVm(newPolicy(), frame)).toBe("dhcp");
    expect(udpChecksumHolds(frame)).toBe(false);
  });

  test("a renewal while softnet knows no lease with no room for option 50 leaves from 0.0.0.0 to the broadcast, ciaddr kept, checksums right", () => {
    // softnet restarted under a VM that kept its address: the request's source may be any
    // address, another VM's included, so it never reaches the host as a source. This message is
    // not padded (real clients pad to 300 bytes): the cleared host name leaves 5 PAD bytes and
    // END, too few for option 50, so it stays a REBINDING request.
    const frame = dhcpClientFrame({
      src: VM_IP,
      dst: GATEWAY,
      messageType: DhcpMessageType.REQUEST,
      dhcp: { clientAddress: VM_IP, rawOptions: new Uint8Array(hostname("vm1")) },
    });
    const length = frame.length;
    const policy = newPolicy();
    expect(fromVm(policy, frame)).toBe("dhcp");
    expect(frame.length).toBe(length);
    expect(formatIpv4(readU32(frame, IP_AT + 12))).toBe("0.0.0.0");
    expect(formatIpv4(readU32(frame, IP_AT + 16))).toBe("255.255.255.255");
    expect(Array.from(frame.subarray(0, 6))).toEqual([255, 255, 255, 255, 255, 255]);
    expect(internetChecksum(frame, IP_AT, 20)).toBe(0);
    expect(udpChecksumHolds(frame)).toBe(true);
    // ciaddr stays: the server answers the lease it holds for this MAC, or NAKs.
    expect(parseDhcp(frame.subarray(DHCP_AT))?.clientAddress).toBe(VM_IP);
    expect(options(frame).map(([code]) => code)).toEqual([53]);
    // The same with a renewal that came without a UDP checksum: none is made up.
    const unsummed = dhcpClientFrame({
      src: VM_IP,
      dst: GATEWAY,
      messageType: DhcpMessageType.REQUEST,
      dhcp: { clientAddress: VM_IP },
    });
    writeU16(unsummed, UDP_AT + 6, 0);
    expect(fromVm(newPolicy(), unsummed)).toBe("dhcp");
    expect(readU16(unsummed, UDP_AT + 6)).toBe(0);
    expect(internetChecksum(unsummed, IP_AT, 20)).toBe(0);
  });

  test("a dropped message is left exactly as it came", () => {
    const frame = dhcpClientFrame({ chaddr: OTHER_MAC, dhcp: { clientIdentifier: DUID_CLIENT_ID } });
    const before = frame.slice();
    expect(fromVm(newPolicy(), frame)).toBe("dhcp-spoof");
    expect(frame).toEqual(before);
  });
});

/** One option of a generated list: a PAD byte, or a code with its data. */
const optionArbitrary = fc.oneof(
  fc.constant<[number, number[]]>([DhcpOption.PAD, []]),
  fc.tuple(
    fc.oneof(
      fc.constantFrom(...STRIPPED),
      // Anything else a client may send, but not the ones readDhcp checks the length of.
      fc.integer({ min: 1, max: 254 }).filter((code) => ![1, 3, 6, 50, 51, 53, 54, 61].includes(code)),
    ),
    fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 2, maxLength: 40 }),
  ),
);

function encode(list: Array<[number, number[]]>): Uint8Array {
  return new Uint8Array(
    list.flatMap(([code, data]) => (code === DhcpOption.PAD ? [0] : [code, data.length, ...data])),
  );
}

describe("properties over generated option lists", () => {
  test("what passes carries none of the cleared options, everything else intact, checksum right", () => {
    fc.assert(
      fc.property(fc.array(optionArbitrary, { maxLength: 12 }), fc.boolean(), (list, renewing) => {
        const frame = renewing
          ? dhcpClientFrame({ src: VM_IP, dst: GATEWAY, messageType: 3, dhcp: { rawOptions: encode(list) } })
          : dhcpClientFrame({ dhcp: { rawOptions: encode(list) } });
        const length = frame.length;
        const expected = options(frame).filter(([code]) => !STRIPPED.includes(code as never));
        expect(fromVm(newPolicy(renewing), frame)).toBe("dhcp");
        expect(frame.length).toBe(length);
        expect(options(frame)).toEqual(expected);
        expect(udpChecksumHolds(frame)).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  test("a wrong checksum stays wrong whatever was cleared", () => {
    fc.assert(
      fc.property(
        fc.array(optionArbitrary, { minLength: 1, maxLength: 8 }),
        fc.integer({ min: 1, max: 0xfffe }),
        (list, delta) => {
          const frame = dhcpClientFrame({
            dhcp: { clientIdentifier: DUID_CLIENT_ID, rawOptions: encode(list) },
          });
          const good = readU16(frame, UDP_AT + 6);
          const bad = (good + delta) % 0xffff || 0xffff; // another value, and not 0 ("none")
          writeU16(frame, UDP_AT + 6, bad);
          expect(fromVm(newPolicy(), frame)).toBe("dhcp");
          expect(udpChecksumHolds(frame)).toBe(false);
        },
      ),
      { numRuns: 1000 },
    );
  });

  test("whatever bytes a VM sends, a DHCP message that passes names it by its MAC alone", () => {
    const seeds = [
      dhcpClientFrame({ dhcp: { clientIdentifier: DUID_CLIENT_ID } }),
      dhcpClientFrame({
        dhcp: { rawOptions: new Uint8Array([82, 4, 1, 2, 0, 0, 118, 4, 10, 0, 0, 1, 52, 1, 3]) },
      }),
      dhcpClientFrame({
        src: VM_IP,
        dst: GATEWAY,
        messageType: 3,
        dhcp: { clientIdentifier: DUID_CLIENT_ID },
      }),
    ];
    const mutated = fc
      .tuple(
        fc.constantFrom(...seeds),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
        fc.option(fc.nat()),
      )
      .map(([seed, edits, cut]) => {
        const frame = seed.slice();
        // Mostly inside the options, where the walk has to hold.
        for (const [position, value] of edits) {
          const at = position % 2 === 0 ? DHCP_AT + Dhcp.OPTIONS + (position % 40) : position % frame.length;
          if (at < frame.length) frame[at] = value;
        }
        return cut === null ? frame : frame.slice(0, cut % (frame.length + 1));
      });
    fc.assert(
      fc.property(mutated, (frame) => {
        const policy = newPolicy(true);
        const reason = policy.decideFromVm(frame, 0, frame.length, 1000);
        if (!isPass(reason)) return;
        if (frame.length < DHCP_AT + Dhcp.OPTIONS) return; // not DHCP at all (e.g. cut to a short UDP)
        // A later fragment has no UDP header; its datagram could only reach a server with a first
        // fragment, and a first fragment of a DHCP message is refused (policy.test.ts).
        if ((readU16(frame, IP_AT + 6) & 0x1fff) !== 0 || frame[IP_AT + 9] !== IpProtocol.UDP) return;
        // A server reads port 67 only; from port 68 to any other port is ordinary UDP.
        if (readU16(frame, UDP_AT + 2) !== 67) return;
        const codes = options(frame).map(([code]) => code);
        for (const code of STRIPPED) expect(codes).not.toContain(code);
        expect(frame.subarray(DHCP_AT + 28, DHCP_AT + 34)).toEqual(
          new Uint8Array(VM_MAC.split(":").map((byte) => Number.parseInt(byte, 16))),
        );
      }),
      { numRuns: 5000 },
    );
  });
});

/** An address as its four bytes. */
const octets = (address: string) => address.split(".").map(Number);
const PADDED_TO = 300; // RFC 1542 2.1: clients send at least the 300-byte BOOTP message
const OPTION_LIST_AT = DHCP_AT + Dhcp.OPTIONS;

/**
 * A DHCPREQUEST as a RENEWING client sends it (RFC 2131 4.4.5, table 5: ciaddr its address, no
 * option 50 or 54), unicast from its address to the gateway, with `optionBytes` exactly as given
 * (END included) and zeros after them up to `paddedTo` bytes of message.
 */
function renewal(optionBytes: number[], paddedTo = 0, flags = 0): Uint8Array {
  const header = emitDhcp({
    op: BootpOp.REQUEST,
    xid: 0x2468_ace0,
    clientMac: VM_MAC,
    clientAddress: VM_IP,
    flags,
  });
  const message = new Uint8Array(Math.max(Dhcp.OPTIONS + optionBytes.length, paddedTo));
  message.set(header.subarray(0, Dhcp.OPTIONS));
  message.set(optionBytes, Dhcp.OPTIONS);
  return udpFrame({
    src: VM_IP,
    dst: GATEWAY,
    sport: DhcpPort.CLIENT,
    dport: DhcpPort.SERVER,
    payload: message,
  });
}

const REQUEST_TYPE = [DhcpOption.MESSAGE_TYPE, 1, DhcpMessageType.REQUEST];
const DUID_OPTION = [DhcpOption.CLIENT_IDENTIFIER, DUID_CLIENT_ID.length, ...DUID_CLIENT_ID];

/** The bytes that differ between two frames of one length, as their offsets. */
function changedOffsets(before: Uint8Array, after: Uint8Array): number[] {
  return [...after.keys()].filter((i) => after[i] !== before[i]);
}

/** What every readdressed renewal must look like from the outside: softnet's own checks aside. */
function expectReaddressed(frame: Uint8Array): void {
  expect(formatIpv4(readU32(frame, IP_AT + 12))).toBe("0.0.0.0");
  expect(formatIpv4(readU32(frame, IP_AT + 16))).toBe("255.255.255.255");
  expect(Array.from(frame.subarray(0, 6))).toEqual([255, 255, 255, 255, 255, 255]);
  expect(internetChecksum(frame, IP_AT, 20)).toBe(0);
  expect(udpChecksumHolds(frame)).toBe(true);
}

describe("a renewal while softnet knows no lease leaves as an INIT-REBOOT request", () => {
  test("padded as clients send it: ciaddr 0, option 50 = the address over the padding, a new END, nothing else changed", () => {
    const frame = renewal([...REQUEST_TYPE, ...PARAMETER_REQUEST_LIST, DhcpOption.END], PADDED_TO);
    const before = frame.slice();
    expect(fromVm(newPolicy(), frame)).toBe("dhcp");
    expect(frame.length).toBe(before.length);
    expectReaddressed(frame);
    const message = parseDhcp(frame.subarray(DHCP_AT));
    expect(message?.clientAddress).toBe("0.0.0.0");
    expect(message?.requestedAddress).toBe(VM_IP);
    expect(message?.serverIdentifier).toBeUndefined();
    expect(message?.xid).toBe(0x2468_ace0);
    expect(message?.clientMac).toBe(VM_MAC);
    expect(options(frame)).toEqual([
      [53, [3]],
      [55, [1, 3, 6, 15]],
      [50, octets(VM_IP)],
    ]);
    // Option 50 and END where END was, then the padding as it came.
    const tail = OPTION_LIST_AT + REQUEST_TYPE.length + PARAMETER_REQUEST_LIST.length;
    expect(Array.from(frame.subarray(tail, tail + 8))).toEqual([50, 4, ...octets(VM_IP), 255, 0]);
    const allowed = (i: number) =>
      i < 6 || // destination MAC
      (i >= IP_AT + 10 && i < IP_AT + 20) || // IPv4 checksum, source, destination
      i === UDP_AT + 6 ||
      i === UDP_AT + 7 ||
      (i >= DHCP_AT + Dhcp.CLIENT_ADDRESS && i < DHCP_AT + Dhcp.CLIENT_ADDRESS + 4) ||
      (i >= tail && i < tail + 7);
    expect(changedOffsets(before, frame).filter((i) => !allowed(i))).toEqual([]);
  });

  test("a server identifier goes (PAD), an option 50 naming another address names the VM's", () => {
    const frame = renewal([
      ...REQUEST_TYPE,
      DhcpOption.SERVER_IDENTIFIER,
      4,
      ...octets(GATEWAY),
      DhcpOption.REQUESTED_IP_ADDRESS,
      4,
      ...octets("192.168.64.77"),
      ...PARAMETER_REQUEST_LIST,
      DhcpOption.END,
    ]);
    expect(fromVm(newPolicy(), frame)).toBe("dhcp");
    expectReaddressed(frame);
    expect(options(frame)).toEqual([
      [53, [3]],
      [50, octets(VM_IP)],
      [55, [1, 3, 6, 15]],
    ]);
    expect(Array.from(frame.subarray(OPTION_LIST_AT + 3, OPTION_LIST_AT + 9))).toEqual([0, 0, 0, 0, 0, 0]);
    expect(parseDhcp(frame.subarray(DHCP_AT))?.clientAddress).toBe("0.0.0.0");
  });

  test("unpadded, option 50 takes the place of the cleared client identifier (dhcpcd and systemd send one)", () => {
    const frame = renewal([...REQUEST_TYPE, ...DUID_OPTION, ...PARAMETER_REQUEST_LIST, DhcpOption.END]);
    expect(fromVm(newPolicy(), frame)).toBe("dhcp");
    expectReaddressed(frame);
    expect(options(frame)).toEqual([
      [53, [3]],
      [50, octets(VM_IP)],
      [55, [1, 3, 6, 15]],
    ]);
    const message = parseDhcp(frame.subarray(DHCP_AT));
    expect(message?.clientAddress).toBe("0.0.0.0");
    expect(message?.clientIdentifier).toBeUndefined();
  });

  test("the broadcast flag is the client's to set: kept as it came", () => {
    const frame = renewal([...REQUEST_TYPE, DhcpOption.END], PADDED_TO, 0x8000);
    expect(fromVm(newPolicy(), frame)).toBe("dhcp");
    expect(parseDhcp(frame.subarray(DHCP_AT))?.flags).toBe(0x8000);
    expect(parseDhcp(frame.subarray(DHCP_AT))?.requestedAddress).toBe(VM_IP);
  });

  test("7 free bytes at the end are room (option 50 and END); 6 are not, and the request leaves readdressed only", () => {
    const roomy = renewal([...REQUEST_TYPE, DhcpOption.END, 0, 0, 0, 0, 0, 0]);
    expect(fromVm(newPolicy(), roomy)).toBe("dhcp");
    expectReaddressed(roomy);
    expect(parseDhcp(roomy.subarray(DHCP_AT))?.clientAddress).toBe("0.0.0.0");
    expect(options(roomy)).toEqual([
      [53, [3]],
      [50, octets(VM_IP)],
    ]);

    const tight = renewal([...REQUEST_TYPE, DhcpOption.END, 0, 0, 0, 0, 0]);
    const before = tight.slice();
    expect(fromVm(newPolicy(), tight)).toBe("dhcp");
    expectReaddressed(tight);
    expect(parseDhcp(tight.subarray(DHCP_AT))?.clientAddress).toBe(VM_IP);
    expect(parseDhcp(tight.subarray(DHCP_AT))?.requestedAddress).toBeUndefined();
    // The message itself is as it came; only the addresses and checksums changed.
    expect(tight.subarray(DHCP_AT)).toEqual(before.subarray(DHCP_AT));
  });

  test("unpadded with a server identifier: its 6 bytes are room, option 50 takes its place", () => {
    const frame = renewal([
      ...REQUEST_TYPE,
      DhcpOption.SERVER_IDENTIFIER,
      4,
      ...octets(GATEWAY),
      DhcpOption.END,
    ]);
    expect(fromVm(newPolicy(), frame)).toBe("dhcp");
    expectReaddressed(frame);
    expect(Array.from(frame.subarray(OPTION_LIST_AT, OPTION_LIST_AT + 10))).toEqual([
      ...REQUEST_TYPE,
      50,
      4,
      ...octets(VM_IP),
      255,
    ]);
    expect(parseDhcp(frame.subarray(DHCP_AT))?.clientAddress).toBe("0.0.0.0");
  });

  test("an option list that runs past the message is refused, the frame left as it came", () => {
    const frame = renewal([...REQUEST_TYPE, ...DUID_OPTION, 55, 40, 1, 3]);
    const before = frame.slice();
    expect(fromVm(newPolicy(), frame)).toBe("malformed-dhcp");
    expect(frame).toEqual(before);
  });

  test("a wrong UDP checksum stays wrong through the rewrite", () => {
    const frame = renewal([...REQUEST_TYPE, ...DUID_OPTION, DhcpOption.END], PADDED_TO);
    writeU16(frame, UDP_AT + 6, readU16(frame, UDP_AT + 6) ^ 0x0101);
    expect(fromVm(newPolicy(), frame)).toBe("dhcp");
    expect(parseDhcp(frame.subarray(DHCP_AT))?.requestedAddress).toBe(VM_IP);
    expect(udpChecksumHolds(frame)).toBe(false);
  });

  test("only while softnet knows no lease: with the lease known, a renewal leaves as the client sent it", () => {
    const frame = renewal([...REQUEST_TYPE, DhcpOption.END], PADDED_TO);
    const before = frame.slice();
    expect(fromVm(newPolicy(true), frame)).toBe("dhcp");
    expect(frame).toEqual(before);
  });

  test("tshark reads the result: from 0.0.0.0 to the broadcast, ciaddr 0, requested address, no server identifier, checksums good", async () => {
    const frame = renewal(
      [...REQUEST_TYPE, ...DUID_OPTION, ...PARAMETER_REQUEST_LIST, DhcpOption.END],
      PADDED_TO,
    );
    expect(fromVm(newPolicy(), frame)).toBe("dhcp");
    const fields = [
      "ip.src",
      "ip.dst",
      "ip.checksum.status",
      "udp.checksum.status",
      "dhcp.ip.client",
      "dhcp.option.requested_ip_address",
      "dhcp.option.dhcp_server_id",
      "dhcp.option.dhcp",
      "dhcp.hw.mac_addr",
    ];
    const [read] = await tsharkFields(frame, fields);
    expect(read).toEqual({
      "ip.src": "0.0.0.0",
      "ip.dst": "255.255.255.255",
      "ip.checksum.status": "1",
      "udp.checksum.status": "1",
      "dhcp.ip.client": "0.0.0.0",
      "dhcp.option.requested_ip_address": VM_IP,
      "dhcp.option.dhcp_server_id": "",
      "dhcp.option.dhcp": String(DhcpMessageType.REQUEST),
      "dhcp.hw.mac_addr": VM_MAC,
    });
  });
});

/** tshark's fields for one Ethernet frame (in a classic pcap file), with IP and UDP checksums checked. */
async function tsharkFields(frame: Uint8Array, fields: string[]): Promise<Array<Record<string, string>>> {
  const dir = mkdtempSync(join(tmpdir(), "softnet-dhcp-test-"));
  try {
    const path = join(dir, "renewal.pcap");
    // pcap (LINKTYPE_ETHERNET = 1): magic, version 2.4, snaplen, link type; one record header.
    const file = Buffer.alloc(24 + 16 + frame.length);
    file.writeUInt32LE(0xa1b2c3d4, 0);
    file.writeUInt16LE(2, 4);
    file.writeUInt16LE(4, 6);
    file.writeUInt32LE(65535, 16);
    file.writeUInt32LE(1, 20);
    file.writeUInt32LE(1_767_323_045, 24);
    file.writeUInt32LE(frame.length, 32);
    file.writeUInt32LE(frame.length, 36);
    file.set(frame, 40);
    writeFileSync(path, file);
    const argv = [
      "tshark",
      "-r",
      path,
      "-n",
      "-o",
      "ip.check_checksum:TRUE",
      "-o",
      "udp.check_checksum:TRUE",
    ];
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

describe("properties of the INIT-REBOOT rewrite", () => {
  /** Generated lists may carry a server identifier or a requested address too. */
  const anyOption = fc.oneof(
    optionArbitrary,
    fc.tuple(
      fc.constantFrom(DhcpOption.SERVER_IDENTIFIER, DhcpOption.REQUESTED_IP_ADDRESS),
      fc.array(fc.nat(255), { minLength: 4, maxLength: 4 }),
    ),
  );

  test("every renewal passes readdressed, checksums right; with room it is INIT-REBOOT, without it the message is unchanged", () => {
    fc.assert(
      fc.property(fc.array(anyOption, { maxLength: 10 }), fc.nat(80), (list, padding) => {
        const frame = renewal([
          ...REQUEST_TYPE,
          ...encode(list),
          DhcpOption.END,
          ...new Array(padding).fill(0),
        ]);
        const before = frame.slice();
        const kept = options(before).filter(
          ([code]) => !STRIPPED.includes(code as never) && code !== 54 && code !== 50,
        );
        expect(fromVm(newPolicy(), frame)).toBe("dhcp");
        expect(frame.length).toBe(before.length);
        expectReaddressed(frame);
        const message = parseDhcp(frame.subarray(DHCP_AT));
        expect(message).toBeDefined();
        if (message?.clientAddress === "0.0.0.0") {
          expect(message.requestedAddress).toBe(VM_IP);
          expect(message.serverIdentifier).toBeUndefined();
          expect(options(frame).every(([code, data]) => code !== 50 || data.join(".") === VM_IP)).toBe(true);
          expect(options(frame).filter(([code]) => code !== 50)).toEqual(kept);
        } else {
          // Without room: the message only lost what stripClientOptions clears, as with a lease.
          expect(padding).toBeLessThan(6);
          expect(message?.clientAddress).toBe(VM_IP);
          expect(options(frame)).toEqual(
            options(before).filter(([code]) => !STRIPPED.includes(code as never)),
          );
        }
      }),
      { numRuns: 2000 },
    );
  });

  test("any bytes: asInitReboot never throws, never writes outside the message, and changes nothing unless it rewrote", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 0, maxLength: 320 }),
        fc.nat(8),
        fc.nat(8),
        (body, before, after) => {
          const buffer = new Uint8Array(before + Dhcp.OPTIONS + body.length + after).fill(0xa5);
          buffer.set(body, before + Dhcp.OPTIONS);
          const length = Dhcp.OPTIONS + body.length;
          const original = buffer.slice();
          const result = asInitReboot(buffer, before, length, 0xc0a84005);
          expect(buffer.subarray(0, before)).toEqual(original.subarray(0, before));
          expect(buffer.subarray(before + length)).toEqual(original.subarray(before + length));
          if (result !== InitReboot.REWRITTEN) {
            expect(buffer).toEqual(original);
          } else {
            expect(readU32(buffer, before + Dhcp.CLIENT_ADDRESS)).toBe(0);
          }
        },
      ),
      { numRuns: 3000 },
    );
  });
});
