import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { isGlobal, networkContains } from "../../src/policy/address.ts";
import {
  allowsEverything,
  parseRuleTarget,
  type Rule,
  RuleAction,
  RuleTable,
} from "../../src/policy/rules.ts";
import { formatIpv4, parseIpv4 } from "../../src/wire/bytes.ts";

describe("which destinations are global (Rust's Ipv4Addr::is_global)", () => {
  test.each([
    ["0.1.2.3", false, "this network"],
    ["10.20.30.40", false, "RFC 1918"],
    ["100.64.0.1", false, "shared address space"],
    ["100.128.0.1", true, "just above 100.64/10"],
    ["127.0.0.1", false, "loopback"],
    ["169.254.1.1", false, "link-local"],
    ["172.16.0.1", false, "RFC 1918"],
    ["172.32.0.1", true, "just above 172.16/12"],
    ["192.0.0.1", false, "IETF protocol assignments"],
    ["192.0.0.9", true, "PCP anycast"],
    ["192.0.0.10", true, "TURN anycast"],
    ["192.0.2.1", false, "TEST-NET-1"],
    ["192.168.64.1", false, "RFC 1918"],
    ["198.18.0.1", false, "benchmarking"],
    ["198.19.255.255", false, "benchmarking"],
    ["198.20.0.1", true, "just above 198.18/15"],
    ["198.51.100.1", false, "TEST-NET-2"],
    ["203.0.113.1", false, "TEST-NET-3"],
    ["224.0.0.251", true, "multicast counts as global"],
    ["240.0.0.1", false, "reserved"],
    ["255.255.255.255", false, "limited broadcast"],
    ["1.1.1.1", true, "public"],
    ["8.8.8.8", true, "public"],
  ])("%s → %p (%s)", (address, global) => {
    expect(isGlobal(parseIpv4(address)!)).toBe(global);
  });
});

describe("parsing rule targets", () => {
  test.each([
    ["10.1.2.3/8", "10.0.0.0", 8],
    ["192.168.1.77/24", "192.168.1.0", 24],
    ["8.8.8.8", "8.8.8.8", 32],
    ["0.0.0.0/0", "0.0.0.0", 0],
    ["1.2.3.4/32", "1.2.3.4", 32],
  ])("%s → %s/%d (host bits cleared)", (text, network, prefixLength) => {
    expect(parseRuleTarget(text)).toEqual({ kind: "network", network: parseIpv4(network)!, prefixLength });
  });

  test.each([
    ["1.2.3.4/33", "not a prefix length"],
    ["1.2.3.4/", "not a prefix length"],
    ["1.2.3.4/08", "not a prefix length"],
    ["1.2.3.4/-1", "not a prefix length"],
    ["300.1.1.1/8", "not an IPv4 address"],
    ["@hosts", "unknown alias"],
    ["host", "not an IPv4 address"],
    ["::1/128", "not an IPv4 address"],
  ])("%s is refused (%s)", (text, why) => {
    const result = parseRuleTarget(text);
    expect(typeof result).toBe("string");
    expect(result as string).toContain(why);
  });

  test("@host is an alias for the gateway", () => {
    expect(parseRuleTarget("@host")).toEqual({ kind: "host" });
  });

  test("--allow 0.0.0.0/0 is recognised (it lifts VM-to-VM isolation)", () => {
    const rule = (action: "allow" | "block", text: string): Rule => ({
      action,
      target: parseRuleTarget(text) as never,
    });
    expect(allowsEverything([rule("allow", "0.0.0.0/0")])).toBe(true);
    expect(allowsEverything([rule("allow", "0.0.0.0/1"), rule("allow", "128.0.0.0/1")])).toBe(false);
    expect(allowsEverything([rule("block", "0.0.0.0/0")])).toBe(false);
  });
});

describe("longest prefix match agrees with a brute-force reference", () => {
  const ruleArbitrary = fc.record({
    action: fc.constantFrom("allow" as const, "block" as const),
    address: fc.integer({ min: 0, max: 0xffffffff }),
    prefixLength: fc.integer({ min: 0, max: 32 }),
  });

  test("for random rule sets and addresses", () => {
    fc.assert(
      fc.property(
        fc.array(ruleArbitrary, { maxLength: 12 }),
        fc.array(fc.integer({ min: 0, max: 0xffffffff }), { maxLength: 20 }),
        (raw, probes) => {
          const rules: Rule[] = raw.map((r) => ({
            action: r.action,
            target: parseRuleTarget(`${formatIpv4(r.address)}/${r.prefixLength}`) as never,
          }));
          const table = RuleTable.compile(rules, undefined);
          // Reference: scan every rule that contains the address, longest prefix first, block wins ties.
          for (const address of [...probes, ...raw.map((r) => r.address)]) {
            let best = -1;
            let action: number = RuleAction.NONE;
            for (const rule of rules) {
              if (rule.target.kind !== "network") continue;
              if (!networkContains(rule.target.network, rule.target.prefixLength, address)) continue;
              const value = rule.action === "block" ? RuleAction.BLOCK : RuleAction.ALLOW;
              if (
                rule.target.prefixLength > best ||
                (rule.target.prefixLength === best && value === RuleAction.BLOCK)
              ) {
                best = rule.target.prefixLength;
                action = value;
              }
            }
            expect(table.lookup(address)).toBe(action as never);
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe("the fast global check agrees with the network table", () => {
  test("for random addresses and for every network edge", () => {
    const edges = [
      0x00000000, 0x0a000000, 0x64400000, 0x7f000000, 0xa9fe0000, 0xac100000, 0xc0000000, 0xc0000200,
      0xc0a80000, 0xc6120000, 0xc6336400, 0xcb007100, 0xf0000000,
    ];
    const reference = (address: number) => {
      if (address === 0xc0000009 || address === 0xc000000a) return true;
      const table: Array<[number, number]> = [
        [0, 8],
        [0x0a000000, 8],
        [0x64400000, 10],
        [0x7f000000, 8],
        [0xa9fe0000, 16],
        [0xac100000, 12],
        [0xc0000000, 24],
        [0xc0000200, 24],
        [0xc0a80000, 16],
        [0xc6120000, 15],
        [0xc6336400, 24],
        [0xcb007100, 24],
        [0xf0000000, 4],
      ];
      return !table.some(([network, length]) => networkContains(network, length, address));
    };
    const probes = edges
      .flatMap((edge) => [edge, edge - 1, edge + 1, edge + 255, edge + 0x10000, edge + 0x400000])
      .map((a) => a >>> 0);
    for (const address of probes)
      expect({ address: formatIpv4(address), global: isGlobal(address) }).toEqual({
        address: formatIpv4(address),
        global: reference(address),
      });
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0xffffffff }),
        (address) => isGlobal(address) === reference(address),
      ),
      { numRuns: 20000 },
    );
  });
});
