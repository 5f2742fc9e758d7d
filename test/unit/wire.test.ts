/**
 * Wire formats, checked both ways against byte vectors written out here: decoding the bytes gives
 * the repr, encoding the repr gives the bytes. Checksums in the vectors were computed by hand
 * (UDP) or come from a published example (the IPv4 header), not from our own code.
 */
import { describe, expect, test } from "bun:test";
import { emitArp, parseArp } from "../../src/wire/arp.ts";
import { formatIpv4, formatMac, isMulticastMac, parseIpv4, parseMac } from "../../src/wire/bytes.ts";
import { internetChecksum } from "../../src/wire/checksum.ts";
import { describeFrame } from "../../src/wire/describe.ts";
import { DhcpMessage, emitDhcp, parseDhcp, readDhcp } from "../../src/wire/dhcp.ts";
import { emitEthernet, isValidEthernet, parseEthernet } from "../../src/wire/ethernet.ts";
import { emitIcmp, parseIcmp } from "../../src/wire/icmp.ts";
import { checkIpv4, emitIpv4, parseIpv4Packet } from "../../src/wire/ipv4.ts";
import { checkTcp, emitTcp, parseTcp } from "../../src/wire/tcp.ts";
import { emitUdp, isValidUdp, parseUdp } from "../../src/wire/udp.ts";
import { arpFrame, etherFrame, tcpFrame } from "../support/frames.ts";

const hex = (text: string) =>
  Uint8Array.from(
    text
      .replace(/\s+/g, "")
      .match(/../g)!
      .map((b) => Number.parseInt(b, 16)),
  );

describe("addresses as text", () => {
  test.each([
    ["0.0.0.0", 0],
    ["192.168.64.1", 0xc0a84001],
    ["255.255.255.255", 0xffffffff],
  ])("IPv4 %s", (text, value) => {
    expect(parseIpv4(text)).toBe(value);
    expect(formatIpv4(value)).toBe(text);
  });

  test.each([
    "",
    "1.2.3",
    "1.2.3.4.5",
    "256.1.1.1",
    "300.1.1.1",
    "01.2.3.4",
    "1.2.3.-4",
    "1.2.3.4 ",
    "a.b.c.d",
    "1..2.3",
  ])("IPv4 %p is refused", (text) => {
    expect(parseIpv4(text)).toBeUndefined();
  });

  test.each([
    ["02:00:00:00:00:01", 0x020000000001],
    ["AA-BB-CC-DD-EE-FF", 0xaabbccddeeff],
  ])("MAC %s", (text, value) => {
    expect(parseMac(text)).toBe(value);
    expect(formatMac(value)).toBe(text.toLowerCase().replaceAll("-", ":"));
  });

  test.each([
    "",
    "02:00:00:00:00",
    "02:00:00:00:00:01:02",
    "02:00:00-00:00:01",
    "0g:00:00:00:00:01",
    "2:0:0:0:0:1",
  ])("MAC %p is refused", (text) => {
    expect(parseMac(text)).toBeUndefined();
  });

  test("the I/G bit marks multicast MACs", () => {
    expect(isMulticastMac(parseMac("01:00:5e:00:00:01")!)).toBe(true);
    expect(isMulticastMac(parseMac("02:00:00:00:00:01")!)).toBe(false);
  });
});

describe("Ethernet II with ARP", () => {
  // Who has 192.168.64.1? Tell 192.168.64.5 (02:00:00:00:00:01).
  const bytes = hex(`
    ffffffffffff 020000000001 0806
    0001 0800 06 04 0001 020000000001 c0a84005 000000000000 c0a84001`);

  test("decodes", () => {
    expect(parseEthernet(bytes)).toEqual({
      destination: "ff:ff:ff:ff:ff:ff",
      source: "02:00:00:00:00:01",
      etherType: 0x0806,
    });
    expect(parseArp(bytes.subarray(14))).toEqual({
      operation: 1,
      senderMac: "02:00:00:00:00:01",
      senderIp: "192.168.64.5",
      targetMac: "00:00:00:00:00:00",
      targetIp: "192.168.64.1",
    });
  });

  test("encodes to the same bytes", () => {
    const arp = emitArp(parseArp(bytes.subarray(14))!);
    expect(emitEthernet(parseEthernet(bytes)!, arp)).toEqual(bytes);
  });

  test("refuses 802.3 length frames and runts", () => {
    expect(isValidEthernet(hex("ffffffffffff 020000000001 05dc 00"), 0, 15)).toBe(false);
    expect(isValidEthernet(bytes, 0, 13)).toBe(false);
    expect(parseArp(bytes.subarray(14, 14 + 27))).toBeUndefined();
  });
});

describe("IPv4 and UDP", () => {
  // A published IPv4 header example (checksum 0xb861) followed by 95 bytes of payload.
  const header = hex("4500 0073 0000 4000 4011 b861 c0a80001 c0a800c7");
  const packet = new Uint8Array(0x73);
  packet.set(header);

  test("decodes the header and validates its checksum", () => {
    const parsed = parseIpv4Packet(packet)!;
    expect(parsed.repr).toMatchObject({
      source: "192.168.0.1",
      destination: "192.168.0.199",
      protocol: 17,
      ttl: 64,
      dontFragment: true,
      moreFragments: false,
      fragmentOffset: 0,
      checksumValid: true,
    });
    expect(parsed.payload.length).toBe(0x73 - 20);
  });

  test("encodes the same header", () => {
    const parsed = parseIpv4Packet(packet)!;
    expect(emitIpv4(parsed.repr, parsed.payload).subarray(0, 20)).toEqual(header);
  });

  // 192.168.0.1:4660 -> 192.168.0.199:53, payload "abcd"; checksum 0xa68d computed by hand.
  const udp = hex("1234 0035 000c a68d 61626364");

  test("UDP decodes and encodes with the pseudo-header checksum", () => {
    expect(parseUdp(udp)).toEqual({
      repr: { sourcePort: 0x1234, destinationPort: 53 },
      payload: hex("61626364"),
    });
    expect(
      emitUdp({ sourcePort: 0x1234, destinationPort: 53 }, hex("61626364"), "192.168.0.1", "192.168.0.199"),
    ).toEqual(udp);
  });

  test.each([
    ["shorter than a header", hex("4500 0013 0000 4000 4011 0000 c0a80001 c0a800"), 19],
    ["version 6", hex("6500 0014 0000 4000 4011 0000 c0a80001 c0a800c7"), 20],
    ["IHL 4", hex("4400 0014 0000 4000 4011 0000 c0a80001 c0a800c7"), 20],
    ["IHL beyond the total length", hex("4600 0014 0000 4000 4011 0000 c0a80001 c0a800c7 00000000"), 24],
    ["total length beyond the frame", hex("4500 0015 0000 4000 4011 0000 c0a80001 c0a800c7"), 20],
  ])("IPv4 %s is malformed", (_name, bytes, available) => {
    expect(checkIpv4(bytes, 0, available)).toBe(0);
  });

  test("Ethernet padding after the IPv4 total length is fine", () => {
    const padded = new Uint8Array(46);
    padded.set(hex("4500 0014 0000 4000 4011 0000 c0a80001 c0a800c7"));
    expect(checkIpv4(padded, 0, 46)).toBe(20);
  });

  test.each([
    ["7 bytes", hex("1234 0035 0008 00"), 7],
    ["length field 7", hex("1234 0035 0007 0000"), 8],
    ["length field beyond the packet", hex("1234 0035 0010 0000"), 8],
  ])("UDP %s is malformed", (_name, bytes, available) => {
    expect(isValidUdp(bytes, 0, available)).toBe(false);
  });
});

describe("TCP and ICMP", () => {
  test("TCP SYN round trip, with a data offset check", () => {
    const repr = {
      sourcePort: 40000,
      destinationPort: 443,
      sequence: 7,
      acknowledgment: 0,
      flags: 0x02,
      window: 65535,
    };
    const segment = emitTcp(repr, new Uint8Array(0), "192.168.64.5", "1.1.1.1");
    expect(parseTcp(segment)?.repr).toEqual(repr);
    // Header plus pseudo-header sums to 0xffff when the checksum is right.
    expect(checkTcp(segment, 0, segment.length)).toBe(20);
    segment[12] = 0x40; // data offset 4 words
    expect(checkTcp(segment, 0, segment.length)).toBe(0);
    segment[12] = 0x60; // 24 bytes, but only 20 arrived
    expect(checkTcp(segment, 0, segment.length)).toBe(0);
  });

  test("ICMP echo request vector", () => {
    // type 8, code 0, checksum 0xf7fd, id 1, seq 1 (checksum over 8 header bytes, computed by hand).
    const echo = hex("0800 f7fd 0001 0001");
    expect(parseIcmp(echo)?.repr).toEqual({
      type: 8,
      code: 0,
      identifier: 1,
      sequence: 1,
      checksumValid: true,
    });
    expect(emitIcmp({ type: 8, code: 0, identifier: 1, sequence: 1 }, new Uint8Array(0))).toEqual(echo);
    expect(internetChecksum(echo, 0, echo.length)).toBe(0);
  });
});

describe("DHCP", () => {
  const fixed = hex(`
    02 01 06 00 3903f326 0000 8000 00000000 c0a84005 00000000 00000000
    020000000001 00000000000000000000`);
  const options = hex(`
    3501 05
    3604 c0a84001
    3304 00000258
    0104 ffffff00
    0304 c0a84001
    0608 c0a84001 0a000035
    3d07 01020000000001
    ff`);
  const ack = new Uint8Array(fixed.length + 192 + 4 + options.length);
  ack.set(fixed);
  ack.set(hex("63825363"), 236);
  ack.set(options, 240);

  const repr = {
    op: 2,
    xid: 0x3903f326,
    flags: 0x8000,
    clientAddress: "0.0.0.0",
    yourAddress: "192.168.64.5",
    serverAddress: "0.0.0.0",
    gatewayAddress: "0.0.0.0",
    clientMac: "02:00:00:00:00:01",
    messageType: 5,
    serverIdentifier: "192.168.64.1",
    leaseTimeSeconds: 600,
    subnetMask: "255.255.255.0",
    router: "192.168.64.1",
    dnsServers: ["192.168.64.1", "10.0.0.53"],
    clientIdentifier: hex("01020000000001"),
  };

  test("an ACK decodes", () => {
    expect(parseDhcp(ack)).toEqual(repr);
  });

  test("and encodes to the same bytes", () => {
    expect(emitDhcp(repr)).toEqual(ack);
  });

  test("pad options are skipped and a missing END is tolerated at the very end", () => {
    const noEnd = new Uint8Array(244);
    noEnd.set(ack.subarray(0, 240));
    noEnd.set(hex("00 3501 05"), 240); // pad, then 53/1 = ACK running to the last byte, no END
    expect(parseDhcp(noEnd)?.messageType).toBe(5);
  });

  const broken: Array<[string, (bytes: Uint8Array) => Uint8Array]> = [
    ["shorter than the fixed part", (b) => b.subarray(0, 239)],
    [
      "a wrong magic cookie",
      (b) => {
        const c = b.slice();
        c[236] = 0;
        return c;
      },
    ],
    ["an option running past the end", (b) => b.subarray(0, 240 + 10)],
    ["an option code without a length byte", (b) => b.subarray(0, 241)],
    [
      "a lease time 3 bytes long",
      (b) => {
        const c = b.slice();
        c[240 + 3 + 6 + 1] = 3;
        return c;
      },
    ],
    [
      "a DNS list of 7 bytes",
      (b) => {
        const c = b.slice();
        c[240 + 3 + 6 + 6 + 6 + 6 + 1] = 7;
        return c;
      },
    ],
    [
      "hlen 17",
      (b) => {
        const c = b.slice();
        c[2] = 17;
        return c;
      },
    ],
  ];
  for (const [name, mangle] of broken) {
    test(`refuses ${name}`, () => {
      const bytes = mangle(ack);
      expect(readDhcp(bytes, 0, bytes.length, new DhcpMessage())).toBe(false);
    });
  }

  test("more than 8 DNS servers: the first 8 are kept", () => {
    const servers = Array.from({ length: 10 }, (_, i) => `10.0.0.${i + 1}`);
    const message = emitDhcp({ op: 2, xid: 1, clientMac: "02:00:00:00:00:01", dnsServers: servers });
    expect(parseDhcp(message)?.dnsServers).toEqual(servers.slice(0, 8));
  });
});

describe("frame descriptions for logs", () => {
  test.each([
    [
      "TCP",
      tcpFrame({ dst: "10.0.0.1", dport: 22, sport: 40000 }),
      "02:00:00:00:00:01 > 5e:00:00:00:00:01 IPv4 192.168.64.5 > 10.0.0.1 TCP 40000 > 22",
    ],
    [
      "an ARP reply",
      arpFrame({
        operation: 2,
        senderIp: "192.168.64.1",
        targetIp: "192.168.64.9",
        dstMac: "5e:00:00:00:00:01",
      }),
      "02:00:00:00:00:01 > 5e:00:00:00:00:01 ARP reply 192.168.64.1 is-at 02:00:00:00:00:01",
    ],
    ["IPv6", etherFrame(0x86dd), "02:00:00:00:00:01 > 5e:00:00:00:00:01 ethertype 0x86dd"],
    ["a runt", new Uint8Array(5), "5-byte frame without a valid Ethernet II header"],
  ])("%s", (_name, frame, text) => {
    expect(describeFrame(frame, 0, frame.length)).toBe(text);
  });
});
