/**
 * What the --reject tests share: a policy whose VM holds a lease and knows the gateway's MAC, and
 * two dropped frames with the replies softnet must make for them, written out field by field. The
 * checksums in them were worked out apart from softnet's code (a few lines of Python's struct, as
 * RFC 1071 describes the sum), and test/unit/reject.test.ts has tshark confirm every one of them.
 */
import { Policy } from "../../src/policy/policy.ts";
import { parseRuleTarget, type Rule, RuleTable } from "../../src/policy/rules.ts";
import { parseIpv4, parseMac } from "../../src/wire/bytes.ts";
import { DhcpMessageType } from "../../src/wire/dhcp.ts";
import { dhcpServerFrame, GATEWAY, VM_MAC } from "../support/frames.ts";

/** When the lease was granted (monotonic ms); it runs for 600 s. */
export const T0 = 1_000_000;

/**
 * A policy whose VM holds 192.168.64.5 in 192.168.64.0/24, learned from an ACK of the gateway
 * 192.168.64.1 sent from 5e:00:00:00:00:01 (so that is the gateway's MAC), with `block` as --block.
 */
export function leasedPolicy(block: string[] = []): Policy {
  const gateway = parseIpv4(GATEWAY)!;
  const rules: Rule[] = block.map((text) => {
    const target = parseRuleTarget(text);
    if (typeof target === "string") throw new Error(target);
    return { action: "block", target };
  });
  const policy = new Policy({
    vmMac: parseMac(VM_MAC)!,
    gateway,
    prefixLength: 24,
    isolated: true,
    rules: RuleTable.compile(rules, gateway),
  });
  const ack = dhcpServerFrame({ messageType: DhcpMessageType.ACK, leaseTimeSeconds: 600 });
  policy.observeFromHost(ack, 0, ack.length, T0);
  if (!policy.lease.isValidAt(T0)) throw new Error("the test lease was not granted");
  return policy;
}

/** Bytes from hex written with spaces, newlines and `#` comments. */
export function hex(text: string): Uint8Array {
  return Uint8Array.from(
    text
      .replace(/#.*$/gm, "")
      .replace(/\s+/g, "")
      .match(/../g)!
      .map((byte) => Number.parseInt(byte, 16)),
  );
}

// A TCP SYN from the VM to 10.99.0.1:80 (a private server: not-allowed-destination), with an MSS
// option, and the reset softnet must answer it with.
export const SYN = hex(`
  5e0000000001 020000000001 0800                 # to the gateway's MAC, from the VM's, IPv4
  45 00 002c 1c46 4000 40 06 1375                # IPv4: 44 bytes, id 0x1c46, DF, TTL 64, TCP, checksum
  c0a84005 0a630001                              # 192.168.64.5 > 10.99.0.1
  9c40 0050                                      # port 40000 > 80
  12345678 00000000                              # SEQ 0x12345678, no ACK
  60 02 faf0 8ce7 0000                           # 24-byte header, SYN, window 64240, checksum, urgent 0
  020405b4                                       # MSS 1460
`);
export const RESET = hex(`
  020000000001 5e0000000001 0800                 # to the VM, from the gateway's MAC, IPv4
  45 00 0028 0000 4000 40 06 2fbf                # IPv4: 40 bytes, id 0, DF, TTL 64, TCP, checksum
  0a630001 c0a84005                              # 10.99.0.1 > 192.168.64.5: from the address the SYN went to
  0050 9c40                                      # port 80 > 40000
  00000000 12345679                              # SEQ 0, ACK = SEG.SEQ + 1 (the SYN counts one)
  50 14 0000 9f81 0000                           # 20-byte header, RST+ACK, window 0, checksum, urgent 0
`);

// A UDP datagram from the VM to 10.99.0.53:9, and the ICMP error softnet must answer it with.
export const DATAGRAM = hex(`
  5e0000000001 020000000001 0800
  45 00 002a beef 4000 40 11 708e                # IPv4: 42 bytes, id 0xbeef, DF, TTL 64, UDP, checksum
  c0a84005 0a630035                              # 192.168.64.5 > 10.99.0.53
  cf08 0009 0016 28b5                            # port 53000 > 9, length 22, checksum
  736f66746e65742d72656a656374                   # "softnet-reject"
`);
export const PROHIBITED = hex(`
  020000000001 5e0000000001 0800
  45 00 0038 0000 4000 40 01 2f80                # IPv4: 56 bytes, id 0, DF, TTL 64, ICMP, checksum
  0a630035 c0a84005                              # 10.99.0.53 > 192.168.64.5
  03 0d 0516 00000000                            # destination unreachable, code 13, checksum, unused
  45 00 002a beef 4000 40 11 708e                # the datagram's IPv4 header, as it was sent
  c0a84005 0a630035
  cf08 0009 0016 28b5                            # and the first 8 bytes of its data: the UDP header
`);
