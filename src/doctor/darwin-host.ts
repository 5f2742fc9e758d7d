/**
 * Why a VM behind vmnet gets no address, read from the Mac itself (read-only): the Application
 * Firewall and bootpd, bootpd's pool and its stale or shared leases, a route that takes vmnet's
 * subnet, bootpd's launchd job, and whether Local Network privacy can matter.
 *
 * What is read comes through a DarwinHostReader. The release uses PRODUCTION_HOST_READER: constant
 * absolute paths and fixed argument vectors, run with an empty environment, no shell, bounded
 * output and time. Nothing from the environment, the command line or a file chooses a path or a
 * program (softnet runs setuid root). Tests on the vmnet double pass a reader that answers from
 * fixtures (test/darwin/doctor-on-double.ts); it can only be handed in by code, never by a flag.
 */
import { closeSync, openSync, readSync } from "node:fs";
import { formatIpv4, formatMac } from "../wire/bytes.ts";
import {
  type BootpdService,
  clashingRoutes,
  contains,
  formatSubnet,
  type Ipv4Subnet,
  type LeaseFile,
  leaseCensus,
  parseFirewallAllowsBuiltIn,
  parseFirewallAppList,
  parseFirewallBlockAll,
  parseFirewallGlobalState,
  parseLaunchctlPrint,
  parseLeaseFile,
  parseRoutes,
  parseVmnetPreferences,
  sharedAddresses,
  sharedIdentifiers,
  subnetOf,
} from "./darwin-host-parse.ts";
import type { Checklist, CheckValue } from "./report.ts";

/** bootpd's lease database (bootpd.tproj/dhcpd.c DHCP_LEASES_FILE). */
export const DHCPD_LEASES_FILE = "/var/db/dhcpd_leases";
export const VMNET_PREFERENCES_FILE = "/Library/Preferences/SystemConfiguration/com.apple.vmnet.plist";
/**
 * Present when an MDM profile manages the firewall (payload com.apple.security.firewall, Apple's
 * Device Management "Firewall" reference); then socketfilterfw refuses changes with "Firewall
 * settings cannot be modified from command line on managed Mac computers." (lima-vm/socket_vmnet#18).
 */
export const FIREWALL_MANAGED_FILE = "/Library/Managed Preferences/com.apple.security.firewall.plist";
const SOCKETFILTERFW = "/usr/libexec/ApplicationFirewall/socketfilterfw";
const BOOTPD = "/usr/libexec/bootpd";

export type HostFile = "leases" | "firewall-managed";
export type HostCommand =
  | "firewall-global"
  | "firewall-blockall"
  | "firewall-apps"
  | "firewall-allowsigned"
  | "routes"
  | "bootpd-service"
  | "vmnet-preferences";

const FILES: Record<HostFile, string> = {
  leases: DHCPD_LEASES_FILE,
  "firewall-managed": FIREWALL_MANAGED_FILE,
};

/** The fixed argument vectors: nothing in them comes from outside. */
export const HOST_COMMANDS: Record<HostCommand, readonly string[]> = {
  "firewall-global": [SOCKETFILTERFW, "--getglobalstate"],
  "firewall-blockall": [SOCKETFILTERFW, "--getblockall"],
  "firewall-apps": [SOCKETFILTERFW, "--listapps"],
  "firewall-allowsigned": [SOCKETFILTERFW, "--getallowsigned"],
  routes: ["/usr/sbin/netstat", "-rn", "-f", "inet"],
  "bootpd-service": ["/bin/launchctl", "print", "system/com.apple.bootpd"],
  "vmnet-preferences": ["/usr/bin/plutil", "-convert", "xml1", "-o", "-", VMNET_PREFERENCES_FILE],
};

export type FileRead =
  | { readonly kind: "text"; readonly text: string }
  | { readonly kind: "missing" }
  | { readonly kind: "unreadable"; readonly why: string };

export interface CommandOutput {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface DarwinHostReader {
  readFile(file: HostFile): FileRead;
  run(command: HostCommand): Promise<CommandOutput>;
  /** Seconds since the epoch, for lease expiry. */
  now(): number;
}

/** More than any lease file of a /24 (about 150 bytes an entry) or any of these commands prints. */
const MAX_READ_BYTES = 1 << 20;
const COMMAND_TIMEOUT_MS = 5000;

/** Reads at most MAX_READ_BYTES of a file; exported for its test (callers pass constants only). */
export function readBounded(path: string): FileRead {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return code === "ENOENT" ? { kind: "missing" } : { kind: "unreadable", why: (error as Error).message };
  }
  try {
    const buffer = Buffer.alloc(MAX_READ_BYTES);
    let length = 0;
    for (;;) {
      const read = readSync(fd, buffer, length, buffer.length - length, null);
      if (read === 0) break;
      length += read;
      if (length === buffer.length) return { kind: "unreadable", why: `larger than ${MAX_READ_BYTES} bytes` };
    }
    return { kind: "text", text: buffer.subarray(0, length).toString("utf8") };
  } catch (error) {
    return { kind: "unreadable", why: (error as Error).message };
  } finally {
    closeSync(fd);
  }
}

async function readStream(stream: ReadableStream<Uint8Array>, onOverflow: () => void): Promise<string> {
  const chunks: Uint8Array[] = [];
  let length = 0;
  for await (const chunk of stream) {
    if (length + chunk.length > MAX_READ_BYTES) {
      onOverflow();
      break;
    }
    chunks.push(chunk);
    length += chunk.length;
  }
  return Buffer.concat(chunks).toString("utf8");
}

/**
 * Runs one of HOST_COMMANDS: absolute path, empty environment, no input, no shell, bounded output
 * and time (killed on either). Exported for its test; callers pass HOST_COMMANDS only.
 */
export async function runFixed(
  argv: readonly string[],
  timeoutMs = COMMAND_TIMEOUT_MS,
): Promise<CommandOutput> {
  let child: ReturnType<typeof Bun.spawn>;
  try {
    child = Bun.spawn([...argv], { stdin: "ignore", stdout: "pipe", stderr: "pipe", env: {} });
  } catch (error) {
    return { code: 127, stdout: "", stderr: (error as Error).message };
  }
  const kill = () => child.kill("SIGKILL");
  const timer = setTimeout(kill, timeoutMs);
  const [stdout, stderr, code] = await Promise.all([
    readStream(child.stdout as ReadableStream<Uint8Array>, kill),
    readStream(child.stderr as ReadableStream<Uint8Array>, kill),
    child.exited,
  ]);
  clearTimeout(timer);
  return { code, stdout, stderr };
}

export const PRODUCTION_HOST_READER: DarwinHostReader = {
  readFile: (file) => readBounded(FILES[file]),
  run: (command) => runFixed(HOST_COMMANDS[command]),
  now: () => Math.floor(Date.now() / 1000),
};

export interface HostCheckInput {
  /** The shared subnet as vmnet reported it when the doctor started it (gateway, mask). */
  readonly vmnet?: { readonly gateway: number; readonly mask: number };
  /** True when the doctor's DHCP probe got no OFFER through vmnet. */
  readonly dhcpUnanswered: boolean;
  /** True while the doctor holds vmnet's shared interface (Internet Sharing should run bootpd). */
  readonly vmnetRunning: boolean;
  /** The VM's MAC (--vm-mac-address), when given. */
  readonly vmMac?: number;
  /** macOS major version, when known (Local Network privacy exists from 15). */
  readonly macosMajor?: number;
  readonly systemName: string;
}

/** vmnet's default shared subnet when nothing sets another (the gateway vmnet reports: 192.168.64.1/24). */
const DEFAULT_SHARED: Ipv4Subnet = { network: 0xc0a84000, prefixLength: 24 };

export const HOST_CHECK_IDS = [
  "darwin.firewall",
  "darwin.leases.pool",
  "darwin.leases.clash",
  "darwin.subnet.routes",
  "darwin.bootpd.service",
  "darwin.local-network",
] as const;

/** Names of the problems found, for the DHCP check's advice. */
export async function hostChecks(
  list: Checklist,
  reader: DarwinHostReader,
  input: HostCheckInput,
): Promise<string[]> {
  const on = { system: input.systemName };
  const found: string[] = [];

  // --- The shared subnet: what vmnet said, else its preferences, else the default.
  let subnet = DEFAULT_SHARED;
  let subnetSource = "vmnet's default";
  if (input.vmnet !== undefined) {
    const reported = subnetOf(input.vmnet.gateway, input.vmnet.mask);
    if (reported !== undefined) {
      subnet = reported;
      subnetSource = "as vmnet reported it";
    }
  } else {
    const preferences = await reader.run("vmnet-preferences");
    if (preferences.code === 0) {
      const parsed = parseVmnetPreferences(preferences.stdout);
      if (parsed.kind === "set" && parsed.address !== undefined) {
        const configured = subnetOf(parsed.address, parsed.mask ?? 0xffff_ff00);
        if (configured !== undefined) {
          subnet = configured;
          subnetSource = "from com.apple.vmnet.plist";
        }
      }
    }
  }
  const subnetText = `${formatSubnet(subnet)} (${subnetSource})`;

  // --- 1. The Application Firewall and bootpd.
  {
    const id = "darwin.firewall";
    const title = "the Application Firewall lets DHCP requests reach bootpd";
    const [global, blockAll, app, signed] = await Promise.all([
      reader.run("firewall-global"),
      reader.run("firewall-blockall"),
      reader.run("firewall-apps"),
      reader.run("firewall-allowsigned"),
    ]);
    const state = parseFirewallGlobalState(global.stdout);
    const blocksAll = parseFirewallBlockAll(blockAll.stdout);
    const bootpd = app.code === 0 ? parseFirewallAppList(app.stdout, BOOTPD) : undefined;
    const builtIn = parseFirewallAllowsBuiltIn(signed.stdout);
    const managed = reader.readFile("firewall-managed").kind === "text";
    const values: Record<string, CheckValue> = {
      ...on,
      globalState: state ?? null,
      blockAll: blocksAll ?? null,
      bootpd: bootpd ?? null,
      allowBuiltInSigned: builtIn ?? null,
      managedByProfile: managed,
    };
    const fw = SOCKETFILTERFW;
    const addUnblock = `sudo ${fw} --add ${BOOTPD} && sudo ${fw} --unblock ${BOOTPD}`;
    const profileAdvice =
      "this Mac's firewall is managed by a profile (the command line cannot change it): ask its administrator " +
      `for a com.apple.security.firewall Applications entry allowing ${BOOTPD}`;
    const remedy = (commands: string) => (managed ? profileAdvice : commands);
    if (state === undefined) {
      list.skipped(
        id,
        title,
        `${fw} --getglobalstate gave no state: ${(global.stderr || global.stdout).split("\n")[0] || `exit ${global.code}`}`,
        "run the doctor as root on macOS; report this with the JSON output",
      );
    } else if (state === 0) {
      list.ok(id, title, "the firewall is off", values);
    } else if (blocksAll === true || state === 2) {
      found.push("the firewall blocks all incoming connections");
      list.problem(
        id,
        title,
        "the firewall blocks all incoming connections, bootpd's DHCP requests included",
        remedy(`sudo ${fw} --setblockall off (System Settings > Network > Firewall > Options)`),
        values,
      );
    } else if (bootpd === "blocked") {
      found.push("the firewall blocks bootpd");
      list.problem(id, title, `the firewall is on and blocks ${BOOTPD}`, remedy(addUnblock), values);
    } else if (bootpd === "absent" && builtIn !== true) {
      found.push("bootpd is not in the firewall and built-in software is not allowed");
      list.problem(
        id,
        title,
        `the firewall is on, ${BOOTPD} has no entry and built-in signed software is not allowed automatically`,
        remedy(addUnblock),
        values,
      );
    } else if (input.dhcpUnanswered && bootpd === "permitted") {
      // lima-vm/socket_vmnet#62: an entry that reads right but is stale; only remove-and-add helps.
      found.push("bootpd's firewall entry may be stale");
      list.problem(
        id,
        title,
        `${BOOTPD} is permitted, yet bootpd did not answer: the entry may be stale`,
        remedy(`sudo ${fw} --remove ${BOOTPD} && ${addUnblock}`),
        values,
      );
    } else {
      list.ok(
        id,
        title,
        bootpd === "permitted"
          ? `the firewall is on and permits ${BOOTPD}`
          : "the firewall is on; bootpd passes as built-in signed software (no entry of its own, as on macOS 15)",
        values,
      );
    }
  }

  // --- 2 and 3. bootpd's lease file: the pool, and stale or shared leases.
  const leases = reader.readFile("leases");
  let file: LeaseFile | undefined;
  if (leases.kind === "text") file = parseLeaseFile(leases.text);
  const poolId = "darwin.leases.pool";
  const poolTitle = "bootpd has free addresses in the shared subnet";
  const clashId = "darwin.leases.clash";
  const clashTitle = "no lease is stale or shared between VMs";
  const kickstart = "sudo launchctl kickstart -kp system/com.apple.bootpd";
  if (leases.kind === "missing") {
    list.ok(poolId, poolTitle, `${DHCPD_LEASES_FILE} does not exist: bootpd has handed out no address yet`, {
      ...on,
      leaseFile: "missing",
    });
    list.notApplicable(clashId, clashTitle, `no ${DHCPD_LEASES_FILE}`, on);
  } else if (leases.kind === "unreadable" || file?.kind === "unreadable") {
    const why = leases.kind === "unreadable" ? leases.why : (file as { why: string }).why;
    list.skipped(poolId, poolTitle, `cannot read ${DHCPD_LEASES_FILE}: ${why}`, "run the doctor as root");
    list.skipped(clashId, clashTitle, `cannot read ${DHCPD_LEASES_FILE}: ${why}`, "run the doctor as root");
  } else if (file?.kind === "entries") {
    const census = leaseCensus(file.entries, subnet, reader.now());
    const values = { ...on, subnet: formatSubnet(subnet), ...census, malformedLines: file.malformedLines };
    const detail =
      `${census.inSubnet} of ${census.pool} addresses in ${subnetText} held: ${census.live} live, ` +
      `${census.expired} expired, ${census.permanent} without a lease time`;
    if (census.live + census.permanent >= census.pool) {
      found.push("bootpd's pool is full");
      list.problem(
        poolId,
        poolTitle,
        `${detail}: every address is taken by a live lease`,
        "shorten leases (softnet --bootpd-lease-time, e.g. 600), remove entries of VMs that are gone from " +
          `${DHCPD_LEASES_FILE}, then ${kickstart}`,
        values,
      );
    } else if (census.inSubnet >= census.pool) {
      // DHCPLeases_reclaim() (dhcpd.c) frees expired bindings only once no address is left.
      list.ok(
        poolId,
        poolTitle,
        `${detail}: bootpd reclaims expired leases only now that no address is left, so each new VM waits ` +
          "for that; softnet --bootpd-lease-time keeps the pool from filling up",
        values,
      );
    } else {
      list.ok(poolId, poolTitle, detail, values);
    }

    const shared = sharedIdentifiers(file.entries, subnet);
    const sharedAddress = sharedAddresses(file.entries, subnet, reader.now());
    const mine =
      input.vmMac === undefined
        ? []
        : file.entries.filter((entry) => entry.hardwareAddress === formatMac(input.vmMac!));
    const mineText = mine.map(
      (entry) =>
        `${entry.ipAddress === undefined ? "no address" : formatIpv4(entry.ipAddress)}` +
        `${entry.expiresAt === undefined ? " (no lease time)" : entry.expiresAt < reader.now() ? " (expired)" : ""}`,
    );
    const mineOutside = mine.filter(
      (entry) => entry.ipAddress !== undefined && !contains(subnet, entry.ipAddress),
    );
    const clashValues: Record<string, CheckValue> = {
      ...on,
      sharedIdentifiers: shared.map((item) => `${item.identifier}: ${item.hardwareAddresses.join(" ")}`),
      sharedAddresses: sharedAddress.map((item) => `${item.address}: ${item.hardwareAddresses.join(" ")}`),
      vmMac: input.vmMac === undefined ? null : formatMac(input.vmMac),
      vmLeases: mineText,
    };
    if (shared.length > 0) {
      found.push("VMs share a DHCP client identifier");
      list.problem(
        clashId,
        clashTitle,
        shared
          .map(
            (item) =>
              `identifier ${item.identifier} is held by ${item.hardwareAddresses.join(", ")} ` +
              `(${item.addresses.join(", ")})`,
          )
          .join("; "),
        "cloned VMs send the same client identifier and get one address between them: give each clone its " +
          "own (regenerate /etc/machine-id, or use a MAC-based DHCP identifier), remove the stale entries from " +
          `${DHCPD_LEASES_FILE}, then ${kickstart}`,
        clashValues,
      );
    } else if (sharedAddress.length > 0) {
      found.push("two VMs hold one address");
      list.problem(
        clashId,
        clashTitle,
        sharedAddress
          .map((item) => `${item.address} is leased to ${item.hardwareAddresses.join(" and ")}`)
          .join("; "),
        `remove the entries of VMs that are gone from ${DHCPD_LEASES_FILE}, then ${kickstart}, and renew the ` +
          "VMs' leases",
        clashValues,
      );
    } else if (mineOutside.length > 0) {
      found.push("this VM holds a lease outside the shared subnet");
      list.problem(
        clashId,
        clashTitle,
        `${formatMac(input.vmMac!)} holds ${mineText.join(", ")}, outside ${subnetText}`,
        `remove that entry from ${DHCPD_LEASES_FILE}, then ${kickstart}`,
        clashValues,
      );
    } else {
      list.ok(
        clashId,
        clashTitle,
        `no identifier is held by two hardware addresses` +
          (input.vmMac === undefined
            ? " (pass --vm-mac-address to look at one VM's leases)"
            : `; ${formatMac(input.vmMac)} holds ${mine.length === 0 ? "no lease" : mineText.join(", ")}`),
        clashValues,
      );
    }
  }

  // --- 4. A route that overlaps the shared subnet.
  {
    const id = "darwin.subnet.routes";
    const title = "no other route overlaps vmnet's shared subnet";
    const output = await reader.run("routes");
    if (output.code !== 0) {
      list.skipped(id, title, `netstat failed: ${output.stderr.split("\n")[0] || `exit ${output.code}`}`);
    } else {
      const routes = parseRoutes(output.stdout);
      const clashes = clashingRoutes(routes, subnet);
      const values = {
        ...on,
        subnet: formatSubnet(subnet),
        routes: routes.length,
        clashes: clashes.map((route) => `${formatSubnet(route.destination)} via ${route.interfaceName}`),
      };
      if (clashes.length > 0) {
        found.push(`a route on ${clashes[0]!.interfaceName} overlaps vmnet's subnet`);
        list.problem(
          id,
          title,
          `${clashes.map((route) => `${formatSubnet(route.destination)} via ${route.interfaceName} (gateway ${route.gateway})`).join(", ")} ` +
            `overlaps ${subnetText}: the VM's replies go there`,
          "give vmnet another shared subnet: sudo defaults write " +
            `${VMNET_PREFERENCES_FILE} Shared_Net_Address -string 10.77.64.1 (and Shared_Net_Mask 255.255.255.0), ` +
            "pick one no VPN or LAN uses, then stop every VM and start them again",
          values,
        );
      } else {
        list.ok(id, title, `${routes.length} IPv4 routes, none but vmnet's own in ${subnetText}`, values);
      }
    }
  }

  // --- 5. bootpd's launchd job.
  {
    const id = "darwin.bootpd.service";
    const title = "bootpd's launchd job is loaded and not wedged";
    const output = await reader.run("bootpd-service");
    const service: BootpdService = parseLaunchctlPrint(output.code, output.stdout, output.stderr);
    const values: Record<string, CheckValue> = {
      ...on,
      service: service.kind,
      running: service.kind === "loaded" ? service.running : null,
      vmnetRunning: input.vmnetRunning,
    };
    if (service.kind === "unreadable") {
      list.skipped(
        id,
        title,
        `launchctl print system/com.apple.bootpd: ${service.why}`,
        "run the doctor as root",
      );
    } else if (service.kind === "not-loaded") {
      if (input.vmnetRunning) {
        found.push("bootpd is not loaded while vmnet runs");
        list.problem(
          id,
          title,
          "launchd has no com.apple.bootpd job although vmnet's shared network is up: Internet Sharing did not start it",
          "sudo launchctl enable system/com.apple.bootpd && " +
            "sudo launchctl bootstrap system /System/Library/LaunchDaemons/bootps.plist, or restart the Mac",
          values,
        );
      } else {
        list.ok(id, title, "not loaded, as expected while no VM uses vmnet's shared network", values);
      }
    } else if (input.dhcpUnanswered && found.length === 0) {
      // No cause above explains the silence: bootpd itself is stuck (canonical/multipass#3209).
      found.push("bootpd is loaded but did not answer");
      list.problem(
        id,
        title,
        `loaded, ${service.running ? `running (pid ${service.pid ?? "?"})` : "not running"}, yet no OFFER came: bootpd may be wedged`,
        kickstart,
        values,
      );
    } else {
      list.ok(
        id,
        title,
        `loaded, ${service.running ? `running (pid ${service.pid ?? "?"})` : "started on demand"}`,
        values,
      );
    }
  }

  // --- Local Network privacy (macOS 15+).
  {
    const id = "darwin.local-network";
    const title = "Local Network privacy does not stand in the way";
    if (input.macosMajor === undefined || input.macosMajor < 15) {
      list.notApplicable(
        id,
        title,
        input.macosMajor === undefined
          ? "macOS version unknown (on the double: no such setting)"
          : "before macOS 15 there is no Local Network privacy setting",
        on,
      );
    } else {
      // Apple TN3179 "Understanding local network privacy", macOS considerations: access is allowed
      // automatically for any daemon launchd starts and any program running as root.
      list.notApplicable(
        id,
        title,
        "per Apple TN3179, launchd daemons (bootpd) and programs running as root (softnet when it opens vmnet) " +
          "are exempt; whether vmnet's packets after softnet drops root count as local network access TN3179 " +
          "does not say, and this is not settled",
        on,
      );
    }
  }
  return found;
}
