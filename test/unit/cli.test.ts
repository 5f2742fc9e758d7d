/**
 * The command line as Tart and people use it: every bad value gets one line naming the flag and the
 * value, and exit code 2. The table runs through parseCommandLine; a few rows also run the real
 * process to prove the exit code and the single stderr line.
 */
import { describe, expect, test } from "bun:test";
import { parseCommandLine, type SoftnetOptions } from "../../src/cli.ts";
import { UsageError } from "../../src/errors.ts";
import { parseIpv4 } from "../../src/wire/bytes.ts";

const BASE = ["--vm-fd", "0", "--vm-mac-address", "12:34:56:78:9a:bc"];

function run(args: string[]): SoftnetOptions {
  const parsed = parseCommandLine(args);
  if (parsed.kind !== "run") throw new Error("expected options");
  return parsed.options;
}

function usageError(args: string[]): string {
  try {
    parseCommandLine(args);
  } catch (error) {
    expect(error).toBeInstanceOf(UsageError);
    return (error as UsageError).what;
  }
  throw new Error(`accepted: ${args.join(" ")}`);
}

describe("valid command lines", () => {
  test("what Tart passes, with the defaults", () => {
    expect(run(BASE)).toEqual({
      vmFd: 0,
      vmMac: 0x123456789abc,
      netType: "nat",
      bootpdLeaseTimeSeconds: 600,
      user: undefined,
      group: undefined,
      rules: [],
      allowedNames: [],
      exposedPorts: [],
      bridge: undefined,
      logLevel: "info",
      logFormat: "text",
      capture: undefined,
      reject: false,
      sudoEscalationProbing: false,
      sudoEscalationDone: false,
    });
  });

  test("repeated --allow/--block accumulate, comma lists split, host bits are cleared", () => {
    const options = run([
      ...BASE,
      "--allow",
      "10.1.2.3/8,@host",
      "--allow=8.8.8.8",
      "--block",
      "10.0.0.0/24",
    ]);
    expect(options.rules).toEqual([
      { action: "allow", target: { kind: "network", network: parseIpv4("10.0.0.0")!, prefixLength: 8 } },
      { action: "allow", target: { kind: "host" } },
      { action: "allow", target: { kind: "network", network: parseIpv4("8.8.8.8")!, prefixLength: 32 } },
      { action: "block", target: { kind: "network", network: parseIpv4("10.0.0.0")!, prefixLength: 24 } },
    ]);
  });

  test("--expose pairs, --vm-net-type host, lease time, user, group, bridge, log level, hidden flags", () => {
    const options = run([
      ...BASE,
      "--expose",
      "2222:22,8080:80",
      "--expose",
      "65535:1",
      "--vm-net-type",
      "host",
      "--bootpd-lease-time",
      "120",
      "--user",
      "admin",
      "--group",
      "staff",
      "--bridge",
      "br0",
      "--log-level",
      "debug",
      "--sudo-escalation-done",
    ]);
    expect(options.exposedPorts).toEqual([
      { externalPort: 2222, internalPort: 22 },
      { externalPort: 8080, internalPort: 80 },
      { externalPort: 65535, internalPort: 1 },
    ]);
    expect(options).toMatchObject({
      netType: "host",
      bootpdLeaseTimeSeconds: 120,
      user: "admin",
      group: "staff",
      bridge: "br0",
      logLevel: "debug",
      sudoEscalationDone: true,
    });
  });

  test("dash-separated MACs are accepted", () => {
    expect(run(["--vm-fd", "3", "--vm-mac-address", "12-34-56-78-9A-BC"]).vmMac).toBe(0x123456789abc);
  });
});

describe("every bad input is refused with the flag and the value named", () => {
  const rows: Array<[string, string[], string]> = [
    ["no flags at all", [], "required option '--vm-fd <fd>' not specified"],
    ["missing --vm-mac-address", ["--vm-fd", "0"], "required option '--vm-mac-address <mac>' not specified"],
    [
      "a bad MAC",
      ["--vm-fd", "0", "--vm-mac-address", "12:34:56:78:9a"],
      'invalid --vm-mac-address "12:34:56:78:9a"',
    ],
    ["a multicast MAC", ["--vm-fd", "0", "--vm-mac-address", "01:00:5e:00:00:01"], "multicast"],
    ["the broadcast MAC", ["--vm-fd", "0", "--vm-mac-address", "ff:ff:ff:ff:ff:ff"], "broadcast"],
    ["the zero MAC", ["--vm-fd", "0", "--vm-mac-address", "00:00:00:00:00:00"], "all-zero"],
    ["a negative fd", ["--vm-fd", "-1", "--vm-mac-address", "12:34:56:78:9a:bc"], "invalid --vm-fd"],
    [
      "a non-numeric fd",
      ["--vm-fd", "stdin", "--vm-mac-address", "12:34:56:78:9a:bc"],
      'invalid --vm-fd "stdin"',
    ],
    ["an fd with junk", ["--vm-fd", "5x", "--vm-mac-address", "12:34:56:78:9a:bc"], 'invalid --vm-fd "5x"'],
    ["/33", [...BASE, "--allow", "1.2.3.0/33"], 'invalid --allow "1.2.3.0/33"'],
    ["300.1.1.1", [...BASE, "--block", "300.1.1.1/32"], 'invalid --block "300.1.1.1/32"'],
    ["@hosts", [...BASE, "--allow", "@hosts"], 'invalid --allow "@hosts": unknown alias'],
    ["an empty list entry", [...BASE, "--allow", "1.2.3.4/32,"], "empty entry"],
    ["an IPv6 network", [...BASE, "--block", "fd00::/8"], 'invalid --block "fd00::/8"'],
    ["22:0", [...BASE, "--expose", "22:0"], 'invalid --expose "22:0": internal port "0"'],
    ["70000:22", [...BASE, "--expose", "70000:22"], 'invalid --expose "70000:22": external port "70000"'],
    ["a port without a colon", [...BASE, "--expose", "2222"], "expected EXTERNAL:INTERNAL"],
    ["three parts", [...BASE, "--expose", "1:2:3"], "expected EXTERNAL:INTERNAL"],
    [
      "a duplicate external port",
      [...BASE, "--expose", "2222:22,2222:23"],
      "external port 2222 is already exposed",
    ],
    ["an unknown net type", [...BASE, "--vm-net-type", "bridged"], "'bridged' is invalid"],
    ["a lease time of 0", [...BASE, "--bootpd-lease-time", "0"], 'invalid --bootpd-lease-time "0"'],
    ["a lease time in minutes", [...BASE, "--bootpd-lease-time", "10m"], 'invalid --bootpd-lease-time "10m"'],
    ["an unknown log level", [...BASE, "--log-level", "verbose"], "'verbose' is invalid"],
    [
      "a bridge name too long",
      [...BASE, "--bridge", "a-very-long-bridge0"],
      'invalid --bridge "a-very-long-bridge0"',
    ],
    ["a bridge name with a slash", [...BASE, "--bridge", "../br0"], 'invalid --bridge "../br0"'],
    ["an empty user", [...BASE, "--user", ""], 'invalid --user ""'],
    ["an unknown flag", [...BASE, "--vm-ip", "1.2.3.4"], "unknown option '--vm-ip'"],
    ["a stray argument", [...BASE, "extra"], "too many arguments"],
    ["a flag without its value", ["--vm-fd"], "argument missing"],
  ];
  for (const [name, args, message] of rows) {
    test(name, () => {
      expect(usageError(args)).toContain(message);
    });
  }
});

describe("the real process", () => {
  async function softnet(args: string[], env: Record<string, string> = {}) {
    const child = Bun.spawn([process.execPath, "src/main.ts", ...args], {
      stdout: "pipe",
      stderr: "pipe",
      env: { PATH: process.env.PATH ?? "", ...env },
    });
    const [stdout, stderr, code] = await Promise.all([
      new Response(child.stdout).text(),
      new Response(child.stderr).text(),
      child.exited,
    ]);
    return { stdout, stderr, code };
  }

  test("a usage error is one line on stderr and exit code 2", async () => {
    const result = await softnet(["--vm-fd", "0", "--vm-mac-address", "zz"]);
    expect(result.code).toBe(2);
    expect(result.stdout).toBe("");
    expect(result.stderr).toBe(
      'softnet: invalid --vm-mac-address "zz": expected six hex pairs such as 12:34:56:78:9a:bc\n',
    );
  });

  test("a mistyped flag is one line too, with commander's suggestion on it", async () => {
    const result = await softnet(["--vm-fd", "0", "--vm-mac-address", "02:00:00:00:00:01", "--brige", "br0"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toBe(
      "softnet: unknown option '--brige' (Did you mean --bridge?) (see softnet --help)\n",
    );
  });

  test("--help prints every flag on stdout and exits 0", async () => {
    const result = await softnet(["--help"]);
    expect(result.code).toBe(0);
    for (const flag of [
      "--vm-fd",
      "--vm-mac-address",
      "--vm-net-type",
      "--bootpd-lease-time",
      "--user",
      "--group",
      "--allow",
      "--block",
      "--expose",
      "--bridge",
      "--log-level",
      "--version",
    ]) {
      expect(result.stdout).toContain(flag);
    }
    expect(result.stdout).not.toContain("--sudo-escalation");
  });

  test("--version prints the version", async () => {
    const result = await softnet(["--version"]);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^softnet \d+\.\d+\.\d+ \(.+\)\n$/);
  });
});

describe("DNS names in --allow", () => {
  test("names stand beside networks and @host, in any order, as Tart passes them", () => {
    const options = run([
      ...BASE,
      "--block",
      "0.0.0.0/0",
      "--allow",
      "github.com,*.GitHubUserContent.com.,10.0.0.0/8,@host",
      "--allow",
      "registry.npmjs.org",
    ]);
    expect(options.allowedNames).toEqual([
      { name: "github.com", wildcard: false },
      { name: "githubusercontent.com", wildcard: true },
      { name: "registry.npmjs.org", wildcard: false },
    ]);
    expect(options.rules.map((rule) => rule.target.kind)).toEqual(["network", "host", "network"]);
  });

  test.each([
    ["a..b.com", "empty label"],
    ["*", 'bare "*"'],
    ["a.*.com", '"*" may only stand'],
    ["ex ample.com", "character other than"],
    [`${"x".repeat(64)}.com`, "longer than 63"],
  ])("--allow %j is refused: %s", (value, why) => {
    const what = usageError([...BASE, "--allow", value]);
    expect(what).toContain("--allow");
    expect(what).toContain(why);
  });

  test("a name in --block is refused with the reason", () => {
    const what = usageError([...BASE, "--block", "evil.example"]);
    expect(what).toContain('--block "evil.example"');
    expect(what).toContain("names cannot be blocked");
  });

  test("a network with a typo is still reported as a network", () => {
    expect(usageError([...BASE, "--allow", "10.0.0.0/8x"])).toContain("prefix length");
  });
});
