/**
 * The command line, drop-in compatible with how Tart starts Cirrus Labs' softnet:
 *   softnet --vm-fd 0 --vm-mac-address MAC [--vm-net-type host] [--allow ..] [--block ..] [--expose ..]
 * Every bad value becomes a UsageError naming the flag and the value (exit code 2).
 */
import { UsageError } from "./errors.ts";
import { formatRuleTarget, parseRuleTarget, type Rule } from "./policy/rules.ts";
import { COMMIT, VERSION } from "./version.ts";
import { BROADCAST_MAC, formatMac, isMulticastMac, parseMac } from "./wire/bytes.ts";

export const LOG_LEVELS = ["error", "warn", "info", "debug"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

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
  exposedPorts: ExposedPort[];
  bridge: string | undefined;
  logLevel: LogLevel;
  sudoEscalationProbing: boolean;
  sudoEscalationDone: boolean;
}

/** Either options to run with, or text that --help / --version asked for. */
export type ParsedCommandLine = { kind: "run"; options: SoftnetOptions } | { kind: "print"; text: string };

const MAX_LEASE_SECONDS = 0xffff_fffe; // 0xffffffff means "infinite" to DHCP
const CLI_EXAMPLES = `
Examples:
  Tart runs:          softnet --vm-fd 0 --vm-mac-address 12:34:56:78:9a:bc
  Host-only network:  softnet --vm-fd 0 --vm-mac-address 12:34:56:78:9a:bc --vm-net-type host
  Reach a LAN too:    softnet ... --allow 192.168.1.0/24 --block 192.168.1.1/32
  Only the host:      softnet ... --block 0.0.0.0/0 --allow @host
  SSH into the VM:    softnet ... --expose 2222:22
  Linux bridge:       softnet --vm-fd 0 --vm-mac-address 12:34:56:78:9a:bc --bridge br0

Exit codes: 0 stopped cleanly (SIGINT, SIGTERM, or the VM closed its end), 1 failure, 2 bad usage.
Set SENTRY_DSN to report failures to Sentry (tags from CIRRUS_SENTRY_TAGS=k=v,k2=v2).`;

const DESCRIPTION =
  "Network isolation for one virtual machine: forwards the VM's Ethernet frames between a datagram " +
  "socket (--vm-fd) and the host's network, letting through only what the VM is entitled to send.";

/**
 * One flag. `value` names its argument; a flag without one is a switch. A flag without `help` is
 * left out of --help. `repeatable` flags collect every value given, the others keep the last.
 */
interface Flag {
  name: `--${string}`;
  short?: `-${string}`;
  value?: `<${string}>`;
  help?: string;
  required?: boolean;
  choices?: readonly string[];
  default?: string;
  repeatable?: boolean;
  /** --version and --help: print and exit, whatever else the command line says. */
  prints?: "version" | "help";
}

/**
 * Every flag softnet takes, in --help's order. This small table and parseCommandLine() replace
 * commander: loading and running commander cost the release binary 13 to 17 ms on every start
 * (scripts/bench/startup.ts), a fifth of the time Tart waits for a VM's first frame.
 */
const FLAGS: readonly Flag[] = [
  { name: "--version", short: "-V", help: "print the version and exit", prints: "version" },
  {
    name: "--vm-fd",
    value: "<fd>",
    required: true,
    help: "file descriptor of the VM's end: an AF_UNIX SOCK_DGRAM socket, one frame per datagram",
  },
  {
    name: "--vm-mac-address",
    value: "<mac>",
    required: true,
    help: "the VM's MAC address; frames from any other source are dropped",
  },
  {
    name: "--vm-net-type",
    value: "<type>",
    choices: ["nat", "host"],
    default: "nat",
    help: "nat: shared network with NAT; host: host-only network (macOS)",
  },
  {
    name: "--bootpd-lease-time",
    value: "<seconds>",
    default: "600",
    help: "DHCP lease time set for macOS bootpd before the VM starts",
  },
  {
    name: "--user",
    value: "<name>",
    help: "user to drop privileges to after set-up (default: the user who started softnet)",
  },
  {
    name: "--group",
    value: "<name>",
    help: "group to drop privileges to after set-up (default: that user's primary group)",
  },
  {
    name: "--allow",
    value: "<cidrs>",
    repeatable: true,
    help: "comma-separated IPv4 networks (or @host) the VM may reach even if not global; repeatable",
  },
  {
    name: "--block",
    value: "<cidrs>",
    repeatable: true,
    help: "comma-separated IPv4 networks (or @host) the VM may not reach; repeatable",
  },
  {
    name: "--expose",
    value: "<ports>",
    repeatable: true,
    help: "comma-separated EXTERNAL:INTERNAL TCP ports forwarded from the host to the VM; repeatable",
  },
  {
    name: "--bridge",
    value: "<name>",
    help: "Linux: the bridge to attach the VM's TAP port to (required on Linux)",
  },
  {
    name: "--log-level",
    value: "<level>",
    choices: LOG_LEVELS,
    default: "info",
    help: "how much to log on stderr",
  },
  { name: "--sudo-escalation-probing" },
  { name: "--sudo-escalation-done" },
  { name: "--help", short: "-h", help: "print this help and exit", prints: "help" },
];

/** How a flag is shown in --help and in errors: `--vm-fd <fd>`, `-V, --version`. */
function usageOf(flag: Flag): string {
  return `${flag.short ? `${flag.short}, ` : ""}${flag.name}${flag.value ? ` ${flag.value}` : ""}`;
}

/** The key of a flag's raw value: --vm-mac-address → vmMacAddress. */
function keyOf(flag: Flag): string {
  return flag.name.slice(2).replace(/-([a-z])/g, (_, letter: string) => letter.toUpperCase());
}

function usage(message: string): UsageError {
  return new UsageError(message, { hint: "see softnet --help" });
}

/** Parses process.argv.slice(2)-style arguments. Throws UsageError on any invalid input. */
export function parseCommandLine(args: readonly string[]): ParsedCommandLine {
  const raw: Record<string, string | string[] | true> = {};
  const operands: string[] = [];
  let unknown: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") {
      operands.push(...args.slice(i + 1));
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      operands.push(arg);
      continue;
    }
    // --flag=value; a short flag never takes its value this way.
    const equals = arg.startsWith("--") ? arg.indexOf("=") : -1;
    const name = equals === -1 ? arg : arg.slice(0, equals);
    const flag = FLAGS.find((candidate) => candidate.name === name || candidate.short === name);
    if (flag === undefined || (equals !== -1 && flag.value === undefined)) {
      unknown ??= arg;
      continue;
    }
    if (flag.prints === "version") return { kind: "print", text: `softnet ${VERSION} (${COMMIT})\n` };
    if (flag.prints === "help") return { kind: "print", text: helpText() };
    const key = keyOf(flag);
    if (flag.value === undefined) {
      raw[key] = true;
      continue;
    }
    // The next argument is the value even when it starts with a dash: `--vm-fd -1` is a bad fd.
    const value = equals === -1 ? args[++i] : arg.slice(equals + 1);
    if (value === undefined) throw usage(`option '${usageOf(flag)}' argument missing`);
    if (flag.choices !== undefined && !flag.choices.includes(value)) {
      throw usage(
        `option '${usageOf(flag)}' argument '${value}' is invalid. Allowed choices are ${flag.choices.join(", ")}`,
      );
    }
    const previous = raw[key];
    raw[key] = flag.repeatable ? [...(Array.isArray(previous) ? previous : []), value] : value;
  }
  for (const flag of FLAGS) {
    const key = keyOf(flag);
    if (raw[key] !== undefined) continue;
    if (flag.required) throw usage(`required option '${usageOf(flag)}' not specified`);
    if (flag.default !== undefined) raw[key] = flag.default;
  }
  if (unknown !== undefined) {
    const likely = closestFlag(unknown.split("=")[0]!);
    throw usage(`unknown option '${unknown}'${likely === undefined ? "" : ` (did you mean ${likely}?)`}`);
  }
  if (operands.length > 0) {
    throw usage(`too many arguments: softnet takes only options, not ${JSON.stringify(operands[0])}`);
  }
  return { kind: "run", options: validate(raw) };
}

/** The documented flag a mistyped one most likely meant: at most a third of its letters off. */
function closestFlag(typed: string): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(1, Math.floor(typed.length / 3)) + 1;
  for (const flag of FLAGS) {
    if (flag.help === undefined) continue;
    const distance = editDistance(typed.toLowerCase(), flag.name);
    if (distance < bestDistance) {
      best = flag.name;
      bestDistance = distance;
    }
  }
  return best;
}

/** Levenshtein distance: insertions, deletions and substitutions of one character each cost 1. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(
        previous[j]! + 1,
        current[j - 1]! + 1,
        previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    previous = current;
  }
  return previous[b.length]!;
}

/** --help: the flags with their defaults and choices, wrapped at 80 columns, then the examples. */
function helpText(): string {
  const shown = FLAGS.filter((flag) => flag.help !== undefined);
  const width = Math.max(...shown.map((flag) => usageOf(flag).length)) + 2;
  const lines = ["Usage: softnet [options]", "", ...wrap(DESCRIPTION, 80), "", "Options:"];
  for (const flag of shown) {
    const extras = [
      flag.choices ? `choices: ${flag.choices.map((choice) => JSON.stringify(choice)).join(", ")}` : "",
      flag.default !== undefined ? `default: ${JSON.stringify(flag.default)}` : "",
    ].filter((extra) => extra !== "");
    const text = `${flag.help}${extras.length > 0 ? ` (${extras.join(", ")})` : ""}`;
    const [first = "", ...rest] = wrap(text, 80 - 2 - width);
    lines.push(`  ${usageOf(flag).padEnd(width)}${first}`);
    for (const line of rest) lines.push(`  ${" ".repeat(width)}${line}`);
  }
  return `${lines.join("\n")}\n${CLI_EXAMPLES}\n`;
}

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line !== "" && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line === "" ? word : `${line} ${word}`;
    }
  }
  return [...lines, line];
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
    exposedPorts: parseExposedPorts(raw.expose as string[] | undefined),
    bridge: parseInterfaceName(raw.bridge as string | undefined),
    logLevel: raw.logLevel as LogLevel,
    sudoEscalationProbing: raw.sudoEscalationProbing === true,
    sudoEscalationDone: raw.sudoEscalationDone === true,
  };
}

function invalid(flag: string, value: string, why: string): UsageError {
  return new UsageError(`invalid ${flag} ${JSON.stringify(value)}: ${why}`);
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

function parseLeaseTime(text: string): number {
  if (!/^[1-9][0-9]{0,9}$/.test(text) || Number(text) > MAX_LEASE_SECONDS) {
    throw invalid("--bootpd-lease-time", text, `expected whole seconds from 1 to ${MAX_LEASE_SECONDS}`);
  }
  return Number(text);
}

function nonEmpty(flag: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (value.trim() === "") throw invalid(flag, value, "must not be empty");
  return value;
}

function parseRules(flag: string, action: "allow" | "block", values: string[] | undefined): Rule[] {
  const rules: Rule[] = [];
  for (const value of values ?? []) {
    for (const item of value.split(",")) {
      const text = item.trim();
      if (text === "") throw invalid(flag, value, "empty entry in the comma-separated list");
      const target = parseRuleTarget(text);
      if (typeof target === "string") throw invalid(flag, text, `${target}; expected A.B.C.D/N or @host`);
      rules.push({ action, target });
    }
  }
  return rules;
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

/** Linux interface names: 1..15 bytes, no '/', whitespace or ':' (IFNAMSIZ is 16 with the NUL). */
function parseInterfaceName(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(value) || value === "." || value === "..") {
    throw invalid(
      "--bridge",
      value,
      "not a network interface name (1 to 15 letters, digits, '-', '_' or '.')",
    );
  }
  return value;
}

/** For logs: the rules as the user would write them. */
export function describeRules(rules: readonly Rule[]): string {
  return rules.map((rule) => `${rule.action} ${formatRuleTarget(rule.target)}`).join(", ") || "none";
}
