// The bridge access list (/etc/softnet/bridge.conf): its parser, its decision, and whose access it
// is. Pure: the file checks are in test/platform/bridge-acl-file.test.ts.
import { describe, expect, test } from "bun:test";
import { decideBridge, parseBridgeAcl, vmCapFor } from "../../src/bridge-acl.ts";
import { expectSoftnetError } from "../support/errors.ts";

const SOURCE = "/etc/softnet/bridge.conf";

describe("parseBridgeAcl: the lines it accepts", () => {
  const rows: Array<[string, string, Array<[string, string, number]>]> = [
    ["an empty file", "", []],
    ["comments and blank lines", "# VM bridges\n\n   # indented comment\n\t\n", []],
    ["allow NAME", "allow br0\n", [["allow", "br0", 1]]],
    ["allow all", "allow all", [["allow", "all", 1]]],
    [
      "deny NAME and deny all, with their line numbers",
      "\ndeny br1\n# x\ndeny all\n",
      [
        ["deny", "br1", 2],
        ["deny", "all", 4],
      ],
    ],
    [
      "blanks and tabs around and between the words, CRLF endings",
      "  allow \t virbr0  \r\n",
      [["allow", "virbr0", 1]],
    ],
    [
      "any name Linux accepts (15 bytes, punctuation)",
      "allow br-lab_1.vm@x\nallow abcdefghijklmno\n",
      [
        ["allow", "br-lab_1.vm@x", 1],
        ["allow", "abcdefghijklmno", 2],
      ],
    ],
  ];
  for (const [what, text, expected] of rows) {
    test(what, () => {
      const acl = parseBridgeAcl(text, SOURCE);
      expect(acl.source).toBe(SOURCE);
      expect(acl.rules.map((rule) => [rule.action, rule.bridge, rule.line])).toEqual(expected);
    });
  }
});

describe("parseBridgeAcl: every other line is an error naming the file and the line", () => {
  const rows: Array<[string, string, string]> = [
    ["a typo in the action", "allow br0\nalow br1\n", `${SOURCE} line 2: unknown rule "alow"`],
    ["upper case", "Allow br0", `${SOURCE} line 1: unknown rule "Allow"`],
    [
      "an action without a name",
      "# x\nallow\n",
      `${SOURCE} line 2: "allow" takes one bridge name or "all", not 0 words`,
    ],
    [
      "two names on one line",
      "deny br0 br1",
      `${SOURCE} line 1: "deny" takes one bridge name or "all", not 2 words`,
    ],
    [
      "a trailing comment (only whole-line comments exist)",
      "allow br0 # lab",
      `${SOURCE} line 1: "allow" takes one bridge name or "all", not 3 words`,
    ],
    [
      "include (qemu-bridge-helper has it; softnet reads one file only)",
      "include /etc/qemu/bridge.conf",
      `${SOURCE} line 1: include is not supported`,
    ],
    [
      "a name longer than 15 bytes",
      "allow abcdefghijklmnop",
      `${SOURCE} line 1: "abcdefghijklmnop" is not a network interface name`,
    ],
    ["a name with a slash", "allow br/0", `${SOURCE} line 1: "br/0" is not a network interface name`],
    ["a name with a colon", "allow br0:1", `${SOURCE} line 1: "br0:1" is not a network interface name`],
    ["a dot name", "allow ..", `${SOURCE} line 1: ".." is not a network interface name`],
    [
      "a control character",
      "allow br0\u0000",
      `${SOURCE} line 1: contains a character that is not printable ASCII`,
    ],
    ["non-ASCII", "allow brü", `${SOURCE} line 1: contains a character that is not printable ASCII`],
  ];
  for (const [what, text, message] of rows) {
    test(what, () => {
      const error = expectSoftnetError(() => parseBridgeAcl(text, SOURCE), message);
      expect(error.hint).toContain(
        '"allow NAME", "allow all", "deny NAME", "deny all", "max-vms-per-user N" or "max-vms-per-user N NAME"',
      );
    });
  }
});

describe("decideBridge: allowed when an allow line names it and no deny line does (qemu-bridge-helper's rule)", () => {
  const rows: Array<[string, string, string, boolean, string]> = [
    ["no rules", "", "br0", false, `no line of ${SOURCE} says "allow br0" or "allow all"`],
    ["allow br0", "allow br0", "br0", true, `line 1 of ${SOURCE} says "allow br0"`],
    [
      "allow br0, asked for br1",
      "allow br0",
      "br1",
      false,
      `no line of ${SOURCE} says "allow br1" or "allow all"`,
    ],
    ["allow all", "allow all", "docker0", true, `line 1 of ${SOURCE} says "allow all"`],
    [
      "allow all, deny docker0",
      "allow all\ndeny docker0",
      "docker0",
      false,
      `line 2 of ${SOURCE} says "deny docker0"`,
    ],
    [
      "allow all, deny docker0, asked for br0",
      "allow all\ndeny docker0",
      "br0",
      true,
      `line 1 of ${SOURCE} says "allow all"`,
    ],
    [
      "deny before allow: order does not matter",
      "deny br0\nallow br0",
      "br0",
      false,
      `line 1 of ${SOURCE} says "deny br0"`,
    ],
    ["deny all wins over allow", "allow br0\ndeny all", "br0", false, `line 2 of ${SOURCE} says "deny all"`],
    [
      "a name is matched exactly",
      "allow br",
      "br0",
      false,
      `no line of ${SOURCE} says "allow br0" or "allow all"`,
    ],
  ];
  for (const [what, text, bridge, allowed, reason] of rows) {
    test(what, () => {
      expect(decideBridge(parseBridgeAcl(text, SOURCE), bridge)).toEqual({ allowed, reason });
    });
  }
});

describe("max-vms-per-user: the cap on one caller's VMs on a bridge", () => {
  test("a line without a bridge caps every bridge; a bridge's own line wins", () => {
    const acl = parseBridgeAcl("allow all\nmax-vms-per-user 4\nmax-vms-per-user 2 br0\n", SOURCE);
    expect(vmCapFor(acl, "br0")).toEqual({
      max: 2,
      reason: `line 3 of ${SOURCE} says "max-vms-per-user 2 br0"`,
    });
    expect(vmCapFor(acl, "br1")).toEqual({ max: 4, reason: `line 2 of ${SOURCE} says "max-vms-per-user 4"` });
  });

  test("no line: no cap", () => {
    expect(vmCapFor(parseBridgeAcl("allow br0\nmax-vms-per-user 1 br1\n", SOURCE), "br0")).toBeUndefined();
  });

  const bad: Array<[string, string, string]> = [
    [
      "no number",
      "max-vms-per-user\n",
      'line 1: "max-vms-per-user" takes a number and optionally a bridge name, not 0 words',
    ],
    [
      "too many words",
      "max-vms-per-user 2 br0 br1\n",
      'line 1: "max-vms-per-user" takes a number and optionally a bridge name, not 3 words',
    ],
    ["not a number", "max-vms-per-user two\n", 'line 1: "two" is not a number of VMs from 0 to 100000'],
    ["a negative number", "max-vms-per-user -1\n", 'line 1: "-1" is not a number of VMs from 0 to 100000'],
    ["too large", "max-vms-per-user 100001\n", 'line 1: "100001" is not a number of VMs from 0 to 100000'],
    ["a bad bridge name", "max-vms-per-user 2 a/b\n", 'line 1: "a/b" is not a network interface name'],
    [
      "two for every bridge",
      "max-vms-per-user 2\n\nmax-vms-per-user 3\n",
      "line 3: a second max-vms-per-user without a bridge (line 1 has one)",
    ],
    [
      "two for one bridge",
      "max-vms-per-user 2 br0\nmax-vms-per-user 3 br0\n",
      "line 2: a second max-vms-per-user for br0 (line 1 has one)",
    ],
  ];
  for (const [what, text, message] of bad) {
    test(`refused, with its line number: ${what}`, () => {
      expectSoftnetError(() => parseBridgeAcl(text, SOURCE), `${SOURCE} ${message}`);
    });
  }
});
