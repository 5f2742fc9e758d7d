/**
 * The command line, drop-in compatible with how Tart starts Cirrus Labs' softnet:
 *   softnet --vm-fd 0 --vm-mac-address MAC [--vm-net-type host] [--allow ..] [--block ..] [--expose ..]
 * Every bad value becomes a UsageError naming the flag and the value (exit code 2).
 */
import { Command, CommanderError, Option } from "commander";
import { invalid, parseInterfaceName, parseLeaseTime } from "./cli-values.ts";
import { type DoctorOptions, parseDoctorCommandLine } from "./doctor/cli.ts";
import { UsageError } from "./errors.ts";
import {
  formatNamePattern,
  looksLikeName,
  type NamePattern,
  parseNamePattern,
} from "./policy/name-patterns.ts";
import { formatRuleTarget, parseRuleTarget, type Rule } from "./policy/rules.ts";
import { COMMIT, VERSION } from "./version.ts";
import { BROADCAST_MAC, formatMac, isMulticastMac, parseMac } from "./wire/bytes.ts";

export const LOG_LEVELS = ["error", "warn", "info", "debug"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ["text", "json"] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/** --capture FILE and its companions: where every frame goes, as pcapng (src/capture). */
export interface CaptureOptions {
  path: string;
  /** --capture-overwrite: truncate FILE if it is a regular file the caller owns (else it must not exist). */
  overwrite: boolean;
  /** --capture-limit in bytes: writing stops, cleanly, before the file would grow past it. */
  limitBytes: number;
}

/** --capture-limit when none is given: 100 MiB. */
export const DEFAULT_CAPTURE_LIMIT = "100M";
/** Room for the file's header blocks and a few frames; smaller limits are a mistake. */
export const MIN_CAPTURE_LIMIT_BYTES = 4096;
/** 1 TiB: far beyond any sensible capture, and exact as a double. */
export const MAX_CAPTURE_LIMIT_BYTES = 2 ** 40;

export interface ExposedPort {
  externalPort: number;
  internalPort: number;
}

export interface SoftnetOptions {
  vmFd: number;
  vmMac: number;
  netType: "nat" | "host";
  bootpdLeaseTimeSeconds: number;
  user: string | undefined;
  group: string | undefined;
  /** --allow and --block in the order given; RuleTable resolves ties (block wins). */
  rules: Rule[];
  /** DNS names in --allow: addresses their answers name become /32 allows (src/policy/learned-names.ts). */
  allowedNames: NamePattern[];
  exposedPorts: ExposedPort[];
  bridge: string | undefined;
  logLevel: LogLevel;
  logFormat: LogFormat;
  capture: CaptureOptions | undefined;
  /** --reject: answer frames dropped for their destination (TCP RST, ICMP prohibited) instead of dropping silently. */
  reject: boolean;
  sudoEscalationProbing: boolean;
  sudoEscalationDone: boolean;
}

/** Either options to run with, the doctor's options, or text that --help / --version asked for. */
export type ParsedCommandLine =
  | { kind: "run"; options: SoftnetOptions }
  | { kind: "doctor"; options: DoctorOptions }
  | { kind: "print"; text: string };

const CLI_EXAMPLES = `
Examples:
  Tart runs:          softnet --vm-fd 0 --vm-mac-address 12:34:56:78:9a:bc
  Host-only network:  softnet --vm-fd 0 --vm-mac-address 12:34:56:78:9a:bc --vm-net-type host
  Reach a LAN too:    softnet ... --allow 192.168.1.0/24 --block 192.168.1.1/32
  Only the host:      softnet ... --block 0.0.0.0/0 --allow @host
  SSH into the VM:    softnet ... --expose 2222:22
  Fail fast:          softnet ... --block 10.0.0.0/8 --reject   (refused at once instead of timing out)
  Linux bridge:       softnet --vm-fd 0 --vm-mac-address 12:34:56:78:9a:bc --bridge br0
  See the frames:     softnet ... --capture vm.pcapng    (then: wireshark vm.pcapng)
  Check this machine: sudo softnet doctor [--bridge br0] [--json]   (softnet doctor --help)

Counters: send SIGUSR2 (or press Ctrl-T on macOS: SIGINFO) to print what softnet has done so far.

Exit codes: 0 stopped cleanly (SIGINT, SIGTERM, or the VM closed its end), 1 failure, 2 bad usage.
Set SENTRY_DSN to report failures to Sentry (tags from CIRRUS_SENTRY_TAGS=k=v,k2=v2).`;

function buildProgram(collect: { help: string }): Command {
  const program = new Command("softnet")
    .description(
      "Network isolation for one virtual machine: forwards the VM's Ethernet frames between a datagram " +
        "socket (--vm-fd) and the host's network, letting through only what the VM is entitled to send.",
    )
    .version(`softnet ${VERSION} (${COMMIT})`, "-V, --version", "print the version and exit")
    .helpOption("-h, --help", "print this help and exit")
    .addOption(
      new Option(
        "--vm-fd <fd>",
        "file descriptor of the VM's end: an AF_UNIX SOCK_DGRAM socket, one frame per datagram",
      ).makeOptionMandatory(),
    )
    .addOption(
      new Option(
        "--vm-mac-address <mac>",
        "the VM's MAC address; frames from any other source are dropped",
      ).makeOptionMandatory(),
    )
    .addOption(
      new Option("--vm-net-type <type>", "nat: shared network with NAT; host: host-only network (macOS)")
        .choices(["nat", "host"])
        .default("nat"),
    )
    .addOption(
      new Option(
        "--bootpd-lease-time <seconds>",
        "DHCP lease time set for macOS bootpd before the VM starts",
      ).default("600"),
    )
    .option(
      "--user <name>",
      "user to drop privileges to after set-up (default: the user who started softnet)",
    )
    .option("--group <name>", "group to drop privileges to after set-up (default: that user's primary group)")
    .addOption(
      new Option(
        "--allow <cidrs>",
        "comma-separated IPv4 networks, @host, or DNS names (example.com, *.example.com) the VM may reach " +
          "even if not global; a name allows the addresses the VM's own DNS answers give it; repeatable",
      ).argParser(accumulate),
    )
    .addOption(
      new Option(
        "--block <cidrs>",
        "comma-separated IPv4 networks (or @host) the VM may not reach; repeatable",
      ).argParser(accumulate),
    )
    .addOption(
      new Option(
        "--expose <ports>",
        "comma-separated EXTERNAL:INTERNAL TCP ports forwarded from the host to the VM; repeatable",
      ).argParser(accumulate),
    )
    .option(
      "--reject",
      "answer what the rules drop for its destination (blocked-by-rule, not-allowed-destination) with a " +
        "TCP reset or ICMP 'administratively prohibited', so the VM fails at once instead of timing out " +
        "(default: drop silently, as Cirrus Labs softnet does)",
    )
    .option("--bridge <name>", "Linux: the bridge to attach the VM's TAP port to (required on Linux)")
    .addOption(
      new Option("--log-level <level>", "how much to log on stderr").choices(LOG_LEVELS).default("info"),
    )
    .addOption(
      new Option("--log-format <format>", "text: lines for people; json: one JSON object per line")
        .choices(LOG_FORMATS)
        .default("text"),
    )
    .option(
      "--capture <file>",
      "write every frame, both directions, to FILE as pcapng (Wireshark, tcpdump), dropped ones with " +
        "their reason; FILE is created as the user softnet drops to, mode 0600, and must not exist",
    )
    .option(
      "--capture-overwrite",
      "let --capture truncate FILE when it is a regular file you own (never follows a symlink)",
    )
    .option(
      "--capture-limit <size>",
      "bytes, or with K, M, G, T (powers of 1024): writing stops before FILE would grow past it " +
        `(default: ${DEFAULT_CAPTURE_LIMIT})`,
    )
    .addOption(new Option("--sudo-escalation-probing").hideHelp())
    .addOption(new Option("--sudo-escalation-done").hideHelp())
    .addHelpText("after", CLI_EXAMPLES)
    .allowExcessArguments(false)
    .exitOverride()
    .configureOutput({
      writeOut: (text) => {
        collect.help += text;
      },
      // Errors are rethrown as UsageError and printed by main() in softnet's own format.
      writeErr: () => {},
    });
  return program;
}

function accumulate(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** Parses process.argv.slice(2)-style arguments. Throws UsageError on any invalid input. */
export function parseCommandLine(args: readonly string[]): ParsedCommandLine {
  if (args[0] === "doctor") return parseDoctorCommandLine(args.slice(1));
  const collect = { help: "" };
  const program = buildProgram(collect);
  try {
    program.parse([...args], { from: "user" });
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === "commander.helpDisplayed" || error.code === "commander.version") {
        return { kind: "print", text: collect.help };
      }
      throw new UsageError(commanderMessage(error), { hint: "see softnet --help" });
    }
    throw error;
  }
  const raw = program.opts();
  return { kind: "run", options: validate(raw) };
}

/**
 * Commander says "error: required option '--vm-fd <fd>' not specified"; we drop the "error: ". Its
 * suggestion for a mistyped flag comes on a line of its own ("\n(Did you mean --bridge?)"): joined,
 * so that every error stays one line.
 */
function commanderMessage(error: CommanderError): string {
  return error.message
    .replace(/^error: /, "")
    .replace(/\s*\n\s*/g, " ")
    .replace(/\.$/, "");
}

function validate(raw: Record<string, unknown>): SoftnetOptions {
  return {
    vmFd: parseFd(raw.vmFd as string),
    vmMac: parseVmMac(raw.vmMacAddress as string),
    netType: raw.vmNetType as "nat" | "host",
    bootpdLeaseTimeSeconds: parseLeaseTime(raw.bootpdLeaseTime as string),
    user: nonEmpty("--user", raw.user as string | undefined),
    group: nonEmpty("--group", raw.group as string | undefined),
    rules: [
      ...parseRules("--allow", "allow", raw.allow as string[] | undefined),
      ...parseRules("--block", "block", raw.block as string[] | undefined),
    ],
    allowedNames: parseAllowedNames(raw.allow as string[] | undefined),
    exposedPorts: parseExposedPorts(raw.expose as string[] | undefined),
    bridge: parseInterfaceName(raw.bridge as string | undefined),
    logLevel: raw.logLevel as LogLevel,
    logFormat: raw.logFormat as LogFormat,
    capture: parseCapture(raw),
    reject: raw.reject === true,
    sudoEscalationProbing: raw.sudoEscalationProbing === true,
    sudoEscalationDone: raw.sudoEscalationDone === true,
  };
}

function parseFd(text: string): number {
  if (!/^(0|[1-9][0-9]{0,9})$/.test(text) || Number(text) > 0x7fff_ffff) {
    throw invalid("--vm-fd", text, "expected a file descriptor number such as 0");
  }
  return Number(text);
}

function parseVmMac(text: string): number {
  const mac = parseMac(text);
  if (mac === undefined)
    throw invalid("--vm-mac-address", text, "expected six hex pairs such as 12:34:56:78:9a:bc");
  if (mac === 0) throw invalid("--vm-mac-address", text, "the all-zero address cannot belong to a VM");
  if (mac === BROADCAST_MAC)
    throw invalid("--vm-mac-address", text, "the broadcast address cannot belong to a VM");
  if (isMulticastMac(mac)) {
    throw invalid(
      "--vm-mac-address",
      text,
      `${formatMac(mac)} is a multicast address (its first octet is odd)`,
    );
  }
  return mac;
}

function nonEmpty(flag: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (value.trim() === "") throw invalid(flag, value, "must not be empty");
  return value;
}

/** The comma-separated entries of a repeatable list flag, trimmed; an empty one is a usage error. */
function listEntries(flag: string, values: string[] | undefined): string[] {
  const entries: string[] = [];
  for (const value of values ?? []) {
    for (const item of value.split(",")) {
      const text = item.trim();
      if (text === "") throw invalid(flag, value, "empty entry in the comma-separated list");
      entries.push(text);
    }
  }
  return entries;
}

function parseRules(flag: string, action: "allow" | "block", values: string[] | undefined): Rule[] {
  const rules: Rule[] = [];
  for (const text of listEntries(flag, values)) {
    if (looksLikeName(text)) {
      if (action === "block") {
        throw invalid(
          flag,
          text,
          "names cannot be blocked: an address serves many names (CDNs, virtual hosting), so blocking " +
            "a name would block whatever else lives there; block its addresses (A.B.C.D/N) instead",
        );
      }
      continue; // a name: parseAllowedNames
    }
    const target = parseRuleTarget(text);
    if (typeof target === "string") throw invalid(flag, text, `${target}; expected A.B.C.D/N or @host`);
    rules.push({ action, target });
  }
  return rules;
}

function parseAllowedNames(values: string[] | undefined): NamePattern[] {
  const names: NamePattern[] = [];
  for (const text of listEntries("--allow", values)) {
    if (!looksLikeName(text)) continue;
    const pattern = parseNamePattern(text);
    if (typeof pattern === "string") {
      throw invalid("--allow", text, `${pattern}; expected a DNS name such as example.com or *.example.com`);
    }
    names.push(pattern);
  }
  return names;
}

function parsePort(flag: string, whole: string, text: string, which: string): number {
  if (!/^[1-9][0-9]{0,4}$/.test(text) || Number(text) > 65535) {
    throw invalid(flag, whole, `${which} port ${JSON.stringify(text)} is not a TCP port from 1 to 65535`);
  }
  return Number(text);
}

function parseExposedPorts(values: string[] | undefined): ExposedPort[] {
  const ports: ExposedPort[] = [];
  const seenExternal = new Set<number>();
  for (const value of values ?? []) {
    for (const item of value.split(",")) {
      const text = item.trim();
      const parts = text.split(":");
      if (parts.length !== 2) throw invalid("--expose", text, "expected EXTERNAL:INTERNAL, e.g. 2222:22");
      const externalPort = parsePort("--expose", text, parts[0], "external");
      const internalPort = parsePort("--expose", text, parts[1], "internal");
      if (seenExternal.has(externalPort)) {
        throw invalid("--expose", text, `external port ${externalPort} is already exposed`);
      }
      seenExternal.add(externalPort);
      ports.push({ externalPort, internalPort });
    }
  }
  return ports;
}

function parseCapture(raw: Record<string, unknown>): CaptureOptions | undefined {
  const path = raw.capture as string | undefined;
  const limit = raw.captureLimit as string | undefined;
  if (path === undefined) {
    if (raw.captureOverwrite === true) throw new UsageError("--capture-overwrite needs --capture FILE");
    if (limit !== undefined) throw new UsageError("--capture-limit needs --capture FILE");
    return undefined;
  }
  if (path === "") throw invalid("--capture", path, "must name a file");
  if (path.includes("\0")) throw invalid("--capture", path, "a file name cannot contain a NUL byte");
  return {
    path,
    overwrite: raw.captureOverwrite === true,
    limitBytes: parseByteSize("--capture-limit", limit ?? DEFAULT_CAPTURE_LIMIT),
  };
}

const SIZE_UNITS: Record<string, number> = { "": 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/** "4096", "100M", "1G", "512KiB", "2GB": whole bytes, or a whole number of K, M, G, T (powers of 1024). */
export function parseByteSize(flag: string, text: string): number {
  const match = /^([1-9][0-9]{0,15})\s*(?:([KMGT])(?:i?B)?|B)?$/i.exec(text.trim());
  const bytes = match === null ? Number.NaN : Number(match[1]) * SIZE_UNITS[(match[2] ?? "").toUpperCase()];
  if (!Number.isSafeInteger(bytes)) {
    throw invalid(flag, text, "expected a size such as 100M, 1G or 65536 (K, M, G, T are powers of 1024)");
  }
  if (bytes < MIN_CAPTURE_LIMIT_BYTES || bytes > MAX_CAPTURE_LIMIT_BYTES) {
    throw invalid(flag, text, `must be from ${MIN_CAPTURE_LIMIT_BYTES} bytes (4K) to 1T`);
  }
  return bytes;
}

/** For logs: the rules as the user would write them, names in --allow after the networks. */
export function describeRules(rules: readonly Rule[], names: readonly NamePattern[] = []): string {
  const parts = rules.map((rule) => `${rule.action} ${formatRuleTarget(rule.target)}`);
  for (const name of names) parts.push(`allow ${formatNamePattern(name)}`);
  return parts.join(", ") || "none";
}
