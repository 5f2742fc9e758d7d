/**
 * `softnet doctor [--bridge NAME] [--json] [--path PATH] ...`: the doctor's command line, a commander
 * command of its own. src/cli.ts hands over when the first argument is "doctor": the main program's
 * --vm-fd and --vm-mac-address are mandatory, and commander checks a parent's mandatory options
 * for its subcommands too, so the doctor cannot be one of its subcommands. The flag values both
 * command lines take are parsed in src/cli-values.ts, so nothing here imports src/cli.ts.
 */
import { Command, CommanderError, Option } from "commander";
import { invalid, parseInterfaceName, parseLeaseTime } from "../cli-values.ts";
import { UsageError } from "../errors.ts";
import { isMulticastMac, parseMac } from "../wire/bytes.ts";

export interface DoctorOptions {
  /** Linux: the bridge VMs join (required there). */
  bridge: string | undefined;
  json: boolean;
  /** The PATH Tart searches for softnet (softnet clears its environment, and sudo replaces PATH). */
  path: string | undefined;
  /** macOS: what to write for bootpd and read back (softnet's --bootpd-lease-time). */
  bootpdLeaseTimeSeconds: number;
  dhcpTimeoutSeconds: number;
  /** macOS: the VM whose entries in bootpd's lease file to report (Tart's --vm-mac-address). */
  vmMac: number | undefined;
}

export type ParsedDoctorCommandLine =
  | { kind: "doctor"; options: DoctorOptions }
  | { kind: "print"; text: string };

const DOCTOR_HELP = `
Checks, on this machine, everything a VM behind softnet needs, and prints one line per check:
ok, PROBLEM (followed by what to do), skipped (and why) or n/a. Run it as root (sudo softnet
doctor ...): without root the checks that need it say so and do not run. It changes nothing for
good: its temporary TAP port or vmnet interface is removed, its DHCP probe sends DISCOVER only
(no lease), nftables is only asked to --check, and bootpd's setting is put back.

Examples:
  Linux:   sudo softnet doctor --bridge br0 --path "$PATH"
  macOS:   sudo softnet doctor --path "$PATH"
  For a bug report: sudo softnet doctor --json --path "$PATH" > doctor.json

Exit codes: 0 no problem found, 1 a problem found, 2 bad usage, 130/143 stopped by SIGINT/SIGTERM.`;

function buildDoctorCommand(collect: { help: string }): Command {
  return new Command("softnet doctor")
    .description("check this machine for what softnet and its VMs need")
    .helpOption("-h, --help", "print this help and exit")
    .option("--bridge <name>", "Linux: the bridge VMs join (required on Linux)")
    .option("--json", "print the results as JSON (for bug reports)", false)
    .option(
      "--path <path>",
      'the PATH Tart searches for softnet, e.g. --path "$PATH" (softnet clears its environment)',
    )
    .addOption(
      new Option(
        "--bootpd-lease-time <seconds>",
        "macOS: lease time to write for bootpd and read back",
      ).default("600"),
    )
    .option(
      "--vm-mac-address <mac>",
      "macOS: a VM's MAC address, to report its leases in bootpd's lease file",
    )
    .addOption(new Option("--dhcp-timeout <seconds>", "how long to wait for a DHCP OFFER").default("10"))
    .addHelpText("after", DOCTOR_HELP)
    .allowExcessArguments(false)
    .exitOverride()
    .configureOutput({
      writeOut: (text) => {
        collect.help += text;
      },
      writeErr: () => {},
    });
}

/** Parses the arguments after "doctor". Throws UsageError on any invalid input. */
export function parseDoctorCommandLine(args: readonly string[]): ParsedDoctorCommandLine {
  const collect = { help: "" };
  const command = buildDoctorCommand(collect);
  try {
    command.parse([...args], { from: "user" });
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === "commander.helpDisplayed") return { kind: "print", text: collect.help };
      throw new UsageError(error.message.replace(/^error: /, "").replace(/\.$/, ""), {
        hint: "see softnet doctor --help",
      });
    }
    throw error;
  }
  const raw = command.opts();
  const timeout = raw.dhcpTimeout as string;
  if (!/^[1-9][0-9]?$/.test(timeout) || Number(timeout) > 60) {
    throw invalid("--dhcp-timeout", timeout, "expected whole seconds from 1 to 60");
  }
  const path = raw.path as string | undefined;
  const macText = raw.vmMacAddress as string | undefined;
  const vmMac = macText === undefined ? undefined : parseMac(macText);
  if (macText !== undefined && (vmMac === undefined || vmMac === 0 || isMulticastMac(vmMac))) {
    throw invalid("--vm-mac-address", macText, "expected a unicast MAC such as 12:34:56:78:9a:bc");
  }
  return {
    kind: "doctor",
    options: {
      bridge: parseInterfaceName(raw.bridge as string | undefined),
      json: raw.json === true,
      path: path === "" ? undefined : path,
      bootpdLeaseTimeSeconds: parseLeaseTime(raw.bootpdLeaseTime as string),
      dhcpTimeoutSeconds: Number(timeout),
      vmMac,
    },
  };
}
