// What counts as a Linux interface name: the kernel's rule, for names an administrator wrote
// (bridge.conf) and names handed to the kernel (tap.ts), and the plain subset softnet takes on its
// command line, whose --bridge ends up inside the text of nft rules.
import { describe, expect, test } from "bun:test";
import { isInterfaceName, isPlainInterfaceName } from "../../src/interface-name.ts";

describe("interface names", () => {
  // [name, the kernel accepts it, softnet's command line accepts it]
  const rows: Array<[string, boolean, boolean]> = [
    ["br0", true, true],
    ["br-1a2b3c4d5e6f", true, true],
    ["vmbr0.100", true, true],
    ["a_b", true, true],
    ["abcdefghijklmno", true, true], // 15 bytes, the most IFNAMSIZ leaves room for
    ["abcdefghijklmnop", false, false],
    ["", false, false],
    [".", false, false],
    ["..", false, false],
    ["...", true, true],
    ["br/0", false, false],
    ["br0:1", false, false],
    ["br 0", false, false],
    ["br\t0", false, false],
    ["brü", false, false],
    ["br-lab_1.vm@x", true, false],
    ['a";flush', true, false],
    ["a\\b", true, false],
    ["br$0", true, false],
  ];
  for (const [name, kernel, plain] of rows) {
    test(`${JSON.stringify(name)}: ${kernel ? "an interface name" : "not an interface name"}, ${plain ? "" : "not "}plain`, () => {
      expect(isInterfaceName(name)).toBe(kernel);
      expect(isPlainInterfaceName(name)).toBe(plain);
    });
  }
});
