/**
 * The command line of --capture, --capture-overwrite, --capture-limit and --log-format: what each
 * value means, every bad value refused with the flag named (exit code 2), and --help listing them.
 */
import { describe, expect, test } from "bun:test";
import { parseCommandLine, type SoftnetOptions } from "../../src/cli.ts";
import { UsageError } from "../../src/errors.ts";

const BASE = ["--vm-fd", "0", "--vm-mac-address", "12:34:56:78:9a:bc"];
const MiB = 1024 * 1024;

function run(args: string[]): SoftnetOptions {
  const parsed = parseCommandLine([...BASE, ...args]);
  if (parsed.kind !== "run") throw new Error("expected options");
  return parsed.options;
}

function usageError(args: string[]): string {
  try {
    parseCommandLine([...BASE, ...args]);
  } catch (error) {
    expect(error).toBeInstanceOf(UsageError);
    return (error as UsageError).what;
  }
  throw new Error(`accepted: ${args.join(" ")}`);
}

describe("--capture and its companions", () => {
  test("off by default; text logs by default", () => {
    const options = run([]);
    expect(options.capture).toBeUndefined();
    expect(options.logFormat).toBe("text");
  });

  test("--capture FILE: a new file, 100 MiB at most", () => {
    expect(run(["--capture", "vm.pcapng"]).capture).toEqual({
      path: "vm.pcapng",
      overwrite: false,
      limitBytes: 100 * MiB,
    });
  });

  test("--capture-overwrite", () => {
    expect(run(["--capture", "/tmp/x.pcapng", "--capture-overwrite"]).capture?.overwrite).toBe(true);
  });

  const sizes: Array<[string, number]> = [
    ["4096", 4096],
    ["65536", 65536],
    ["512K", 512 * 1024],
    ["512k", 512 * 1024],
    ["100M", 100 * MiB],
    ["2MiB", 2 * MiB],
    ["2MB", 2 * MiB],
    ["1G", 1024 * MiB],
    ["1T", 1024 * 1024 * MiB],
    ["8192B", 8192],
  ];
  for (const [text, bytes] of sizes) {
    test(`--capture-limit ${text} is ${bytes} bytes`, () => {
      expect(run(["--capture", "f", "--capture-limit", text]).capture?.limitBytes).toBe(bytes);
    });
  }

  test("--log-format json", () => {
    expect(run(["--log-format", "json"]).logFormat).toBe("json");
  });
});

describe("bad values name the flag", () => {
  const rows: Array<[string, string[], string]> = [
    ["an empty file name", ["--capture", ""], 'invalid --capture "": must name a file'],
    ["--capture-overwrite alone", ["--capture-overwrite"], "--capture-overwrite needs --capture FILE"],
    ["--capture-limit alone", ["--capture-limit", "1G"], "--capture-limit needs --capture FILE"],
    [
      "a limit of 0",
      ["--capture", "f", "--capture-limit", "0"],
      'invalid --capture-limit "0": expected a size',
    ],
    ["a fractional limit", ["--capture", "f", "--capture-limit", "1.5G"], 'invalid --capture-limit "1.5G"'],
    ["an unknown unit", ["--capture", "f", "--capture-limit", "10X"], 'invalid --capture-limit "10X"'],
    ["a negative limit", ["--capture", "f", "--capture-limit", "-5M"], 'invalid --capture-limit "-5M"'],
    [
      "a limit below 4K",
      ["--capture", "f", "--capture-limit", "100"],
      'invalid --capture-limit "100": must be from 4096 bytes (4K) to 1T',
    ],
    [
      "a limit above 1T",
      ["--capture", "f", "--capture-limit", "2T"],
      'invalid --capture-limit "2T": must be from',
    ],
    ["--capture without a file", ["--capture"], "argument missing"],
    ["an unknown log format", ["--log-format", "xml"], "'xml' is invalid"],
  ];
  for (const [name, args, message] of rows) {
    test(name, () => {
      expect(usageError(args)).toContain(message);
    });
  }

  test("the real process: one line on stderr, exit code 2", async () => {
    const child = Bun.spawn(
      [process.execPath, "src/main.ts", ...BASE, "--capture", "f", "--capture-limit", "lots"],
      { stdout: "pipe", stderr: "pipe", env: { PATH: process.env.PATH ?? "" } },
    );
    const [stderr, code] = await Promise.all([new Response(child.stderr).text(), child.exited]);
    expect(code).toBe(2);
    expect(stderr).toBe(
      'softnet: invalid --capture-limit "lots": expected a size such as 100M, 1G or 65536 (K, M, G, T are powers of 1024)\n',
    );
  });
});

test("--help lists the new flags and how to ask for the counters", async () => {
  const child = Bun.spawn([process.execPath, "src/main.ts", "--help"], { stdout: "pipe", stderr: "pipe" });
  const [text, code] = await Promise.all([new Response(child.stdout).text(), child.exited]);
  expect(code).toBe(0);
  const stdout = text.replace(/\s+/g, " "); // the help is wrapped to the terminal's width
  for (const flag of [
    "--capture <file>",
    "--capture-overwrite",
    "--capture-limit <size>",
    "--log-format <format>",
  ]) {
    expect(stdout).toContain(flag);
  }
  expect(stdout).toContain('choices: "text", "json"');
  expect(stdout).toContain("(default: 100M)");
  expect(stdout).toContain("SIGUSR2");
});
