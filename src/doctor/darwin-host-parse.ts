/**
 * Pure readers for what a Mac says about the things that keep a VM behind vmnet from getting an
 * address: bootpd's lease file, the Application Firewall's answers, vmnet's preferences, the IPv4
 * routing table and launchd's view of bootpd. No I/O here: darwin-host.ts reads the text (from the
 * system, or from fixtures on the vmnet double) and hands it in. Every parser accepts any text and
 * says "unreadable" rather than throwing; lengths and counts in the text are never trusted.
 */
import { formatIpv4, parseIpv4 } from "../wire/bytes.ts";

// --- /var/db/dhcpd_leases -------------------------------------------------------------------------

/**
 * One entry of bootpd's lease file. The writer is PLCache_write() in Apple's bootp sources,
 * bootplib/NICache.c: for each entry "{\n", then one "\tname=value\n" per property (or "\tname\n"
 * for a property without a value), then "}\n"; its reader PLCache_read() in the same file takes
 * lines of at most 1024 bytes. bootpd.tproj/dhcpd.c S_create_host() writes the properties (names
 * from bootplib/netinfo.h): name (the client's host name option, when sent), ip_address,
 * hw_address and identifier (identifierToStringWithBuffer() in bootplib/host_identifier.c: the
 * hardware type in hex, ",", then each byte in hex WITHOUT zero padding, joined by ":"), and
 * lease, the expiry in seconds since the epoch as "0x%lx" (LEASE_FORMAT, S_set_lease()). An entry
 * without lease is a binding that never expires (S_lease_time_expiry() returns DHCP_INFINITE_TIME).
 */
export interface LeaseEntry {
  readonly name?: string;
  readonly ipAddress?: number;
  /** Normalised "aa:bb:cc:dd:ee:ff" when hw_address is type 1 (Ethernet) and six bytes. */
  readonly hardwareAddress?: string;
  /** The raw identifier property: the client identifier option, or the hardware address. */
  readonly identifier?: string;
  /** Expiry, seconds since the epoch; undefined: no lease property (never expires). */
  readonly expiresAt?: number;
  /** True when a lease property was there but not a number bootpd would read. */
  readonly badLease?: boolean;
}

export type LeaseFile =
  | { readonly kind: "entries"; readonly entries: readonly LeaseEntry[]; readonly malformedLines: number }
  | { readonly kind: "unreadable"; readonly why: string };

/** The longest line PLCache_read() reads whole (its line buffer). */
const PLCACHE_LINE_MAX = 1024;

/** "1,a:b:c:d:e:f" → "0a:0b:0c:0d:0e:0f"; undefined for other types or lengths. */
export function normaliseHardwareAddress(text: string): string | undefined {
  const match = /^1,([0-9a-fA-F]{1,2}(?::[0-9a-fA-F]{1,2}){5})$/.exec(text.trim());
  if (match === null) return undefined;
  return match[1]!
    .split(":")
    .map((byte) => byte.toLowerCase().padStart(2, "0"))
    .join(":");
}

/** strtol(value, NULL, 0) as bootpd uses it for lease: 0x hex, 0 octal, else decimal. */
function parseLeaseValue(text: string): number | undefined {
  const value = text.trim();
  if (/^0[xX][0-9a-fA-F]{1,16}$/.test(value)) return Number.parseInt(value.slice(2), 16);
  if (/^0[0-7]*$/.test(value)) return Number.parseInt(value, 8);
  if (/^[1-9][0-9]{0,19}$/.test(value)) return Number(value);
  return undefined;
}

export function parseLeaseFile(text: string): LeaseFile {
  const entries: LeaseEntry[] = [];
  let malformedLines = 0;
  let current: Map<string, string | undefined> | undefined;
  const finish = (properties: Map<string, string | undefined>) => {
    const ip = properties.get("ip_address");
    const hw = properties.get("hw_address");
    const lease = properties.get("lease");
    const expiresAt = lease === undefined ? undefined : parseLeaseValue(lease);
    entries.push({
      name: properties.get("name"),
      ipAddress: ip === undefined ? undefined : parseIpv4(ip.trim()),
      hardwareAddress: hw === undefined ? undefined : normaliseHardwareAddress(hw),
      identifier: properties.get("identifier")?.trim(),
      expiresAt,
      badLease: properties.has("lease") && expiresAt === undefined ? true : undefined,
    });
  };
  for (const line of text.split("\n")) {
    if (line.length > PLCACHE_LINE_MAX) {
      malformedLines++;
      continue;
    }
    const trimmed = line.trim();
    if (trimmed === "") continue;
    if (trimmed === "{") {
      if (current !== undefined) malformedLines++; // an entry that never closed
      current = new Map();
    } else if (trimmed === "}") {
      if (current === undefined) malformedLines++;
      else if (current.size > 0) finish(current);
      current = undefined;
    } else if (current === undefined) {
      malformedLines++;
    } else {
      const at = trimmed.indexOf("=");
      if (at < 0) current.set(trimmed, undefined);
      else current.set(trimmed.slice(0, at), trimmed.slice(at + 1));
    }
  }
  if (current !== undefined) malformedLines++; // the file ends inside an entry
  if (entries.length === 0 && malformedLines > 0) {
    return {
      kind: "unreadable",
      why: `no entry in bootpd's format (${malformedLines} lines not understood)`,
    };
  }
  return { kind: "entries", entries, malformedLines };
}

export interface Ipv4Subnet {
  /** The network address (host bits zero). */
  readonly network: number;
  readonly prefixLength: number;
}

export function subnetOf(address: number, mask: number): Ipv4Subnet | undefined {
  // Contiguous masks only: ones then zeros.
  const inverted = ~mask >>> 0;
  if ((inverted & (inverted + 1)) !== 0) return undefined;
  const prefixLength = 32 - Math.log2(inverted + 1);
  return { network: (address & mask) >>> 0, prefixLength };
}

function maskOf(prefixLength: number): number {
  return prefixLength === 0 ? 0 : (0xffff_ffff << (32 - prefixLength)) >>> 0;
}

export function contains(subnet: Ipv4Subnet, address: number): boolean {
  return (address & maskOf(subnet.prefixLength)) >>> 0 === subnet.network;
}

export function overlaps(a: Ipv4Subnet, b: Ipv4Subnet): boolean {
  const shorter = Math.min(a.prefixLength, b.prefixLength);
  const mask = maskOf(shorter);
  return (a.network & mask) >>> 0 === (b.network & mask) >>> 0;
}

export function formatSubnet(subnet: Ipv4Subnet): string {
  return `${formatIpv4(subnet.network)}/${subnet.prefixLength}`;
}

/**
 * The addresses bootpd can hand out in the shared subnet: every host address but the gateway's
 * (vmnet's host side) and the network and broadcast addresses.
 */
export function poolSize(subnet: Ipv4Subnet): number {
  return Math.max(0, 2 ** (32 - subnet.prefixLength) - 3);
}

export interface LeaseCensus {
  readonly inSubnet: number;
  readonly live: number;
  readonly expired: number;
  /** Entries without a lease property: bindings bootpd keeps for good. */
  readonly permanent: number;
  readonly pool: number;
}

export function leaseCensus(
  entries: readonly LeaseEntry[],
  subnet: Ipv4Subnet,
  nowSeconds: number,
): LeaseCensus {
  let live = 0;
  let expired = 0;
  let permanent = 0;
  for (const entry of entries) {
    if (entry.ipAddress === undefined || !contains(subnet, entry.ipAddress)) continue;
    // DHCPLeases_reclaim() (dhcpd.c) treats an unparsable lease as expiry 0: reclaimable.
    if (entry.expiresAt === undefined && !entry.badLease) permanent++;
    else if ((entry.expiresAt ?? 0) < nowSeconds) expired++;
    else live++;
  }
  return { inSubnet: live + expired + permanent, live, expired, permanent, pool: poolSize(subnet) };
}

/** Identifiers held by more than one hardware address, in the subnet: cloned VMs sharing one. */
export function sharedIdentifiers(
  entries: readonly LeaseEntry[],
  subnet: Ipv4Subnet,
): Array<{ identifier: string; hardwareAddresses: string[]; addresses: string[] }> {
  const byIdentifier = new Map<string, { hw: Set<string>; ip: Set<string> }>();
  for (const entry of entries) {
    if (entry.identifier === undefined || entry.hardwareAddress === undefined) continue;
    if (entry.ipAddress === undefined || !contains(subnet, entry.ipAddress)) continue;
    const held = byIdentifier.get(entry.identifier) ?? { hw: new Set(), ip: new Set() };
    held.hw.add(entry.hardwareAddress);
    held.ip.add(formatIpv4(entry.ipAddress));
    byIdentifier.set(entry.identifier, held);
  }
  return [...byIdentifier]
    .filter(([, held]) => held.hw.size > 1)
    .map(([identifier, held]) => ({
      identifier,
      hardwareAddresses: [...held.hw].sort(),
      addresses: [...held.ip].sort(),
    }));
}

/**
 * Live addresses held by more than one hardware address (openai/tart#1097 quotes two VMs' entries
 * with one ip_address between them): whichever asks last takes the address from the other.
 */
export function sharedAddresses(
  entries: readonly LeaseEntry[],
  subnet: Ipv4Subnet,
  nowSeconds: number,
): Array<{ address: string; hardwareAddresses: string[] }> {
  const byAddress = new Map<number, Set<string>>();
  for (const entry of entries) {
    if (entry.ipAddress === undefined || entry.hardwareAddress === undefined) continue;
    if (!contains(subnet, entry.ipAddress)) continue;
    if (entry.expiresAt !== undefined && entry.expiresAt < nowSeconds) continue;
    const held = byAddress.get(entry.ipAddress) ?? new Set();
    held.add(entry.hardwareAddress);
    byAddress.set(entry.ipAddress, held);
  }
  return [...byAddress]
    .filter(([, held]) => held.size > 1)
    .map(([address, held]) => ({ address: formatIpv4(address), hardwareAddresses: [...held].sort() }));
}

// --- socketfilterfw ---------------------------------------------------------------------------------

/**
 * `socketfilterfw --getglobalstate`: "Firewall is disabled. (State = 0)", "Firewall is enabled.
 * (State = 1)", and with block-all on "Firewall is blocking all non-essential incoming
 * connections. (State = 2)" (outputs quoted in rgcr/m-cli#160 and dan-snelson/Mac-Health-Check#8).
 */
export function parseFirewallGlobalState(text: string): 0 | 1 | 2 | undefined {
  const match = /\(State = ([0-2])\)/.exec(text);
  return match === null ? undefined : (Number(match[1]) as 0 | 1 | 2);
}

/** `--getblockall`: "Firewall has block all state set to disabled." / "... enabled." */
export function parseFirewallBlockAll(text: string): boolean | undefined {
  if (/block all state set to enabled/i.test(text) || /is blocking all/i.test(text)) return true;
  if (/block all state set to disabled/i.test(text)) return false;
  return undefined;
}

/**
 * bootpd's entry in `--listapps`: the list prints each application as a line `N : <path>`, followed
 * by a line with its verdict in parentheses, `( Allow incoming connections )` or `( Block incoming
 * connections )`. Read from the list, not from `--getappblocked`: that subcommand answers
 * "permitted" for a path the firewall has never heard of, so it cannot tell an allowed entry from a
 * missing one (observed and worked around the same way by two independent public tools; on older
 * releases it said "The application is not part of the firewall", as quoted in
 * lima-vm/socket_vmnet#51). undefined when the entry is there but its verdict line is not.
 */
export function parseFirewallAppList(
  text: string,
  path: string,
): "permitted" | "blocked" | "absent" | undefined {
  const lines = text.split("\n", 10_000).map((line) => line.trim());
  for (let index = 0; index < lines.length; index++) {
    const entry = /^\d+\s*:\s*(.+)$/.exec(lines[index]!);
    if (entry === null || entry[1]!.trim() !== path) continue;
    const verdict = /^\(\s*(allow|block)/i.exec(lines[index + 1] ?? "");
    if (verdict === null) return undefined;
    return verdict[1]!.toLowerCase() === "block" ? "blocked" : "permitted";
  }
  return "absent";
}

/**
 * `--getallowsigned`: "Automatically allow built-in signed software ENABLED." (and a second line
 * for downloaded software). Since macOS 15 bootpd is no longer listed and passes as built-in
 * signed software (kubernetes/minikube#20399, #20400).
 */
export function parseFirewallAllowsBuiltIn(text: string): boolean | undefined {
  const match = /built-in signed software (ENABLED|DISABLED)/i.exec(text);
  return match === null ? undefined : match[1]!.toUpperCase() === "ENABLED";
}

// --- com.apple.vmnet.plist -----------------------------------------------------------------------

/**
 * vmnet's shared-mode subnet from /Library/Preferences/SystemConfiguration/com.apple.vmnet.plist,
 * as `plutil -convert xml1 -o - FILE` prints it (an XML property list, Apple's PropertyList-1.0
 * DTD). The keys are Shared_Net_Address (the gateway, i.e. the host's address on the shared
 * network) and Shared_Net_Mask, both strings: the names tools that change vmnet's subnet write
 * with `defaults write` (e.g. docker/machine's xhyve and boot2docker-xhyve READMEs, Tart users'
 * notes). Only top-level <key>/<string> pairs are read; anything else is ignored.
 */
export type VmnetPreferences =
  | { readonly kind: "set"; readonly address?: number; readonly mask?: number }
  | { readonly kind: "unreadable"; readonly why: string };

function xmlText(text: string): string {
  return text
    .replace(/&lt;/g, "<")
    .replace(/&gt;/g, ">")
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&amp;/g, "&");
}

export function parseVmnetPreferences(xml: string): VmnetPreferences {
  if (!/<plist\b[^>]*>/.test(xml) || !/<dict\s*>|<dict\/>/.test(xml)) {
    return { kind: "unreadable", why: "not an XML property list with a dictionary" };
  }
  const values = new Map<string, string>();
  const pair = /<key>([^<]{0,200})<\/key>\s*<string>([^<]{0,200})<\/string>/g;
  for (let match = pair.exec(xml); match !== null; match = pair.exec(xml)) {
    values.set(xmlText(match[1]!), xmlText(match[2]!).trim());
  }
  const address = values.get("Shared_Net_Address");
  const mask = values.get("Shared_Net_Mask");
  const parsedAddress = address === undefined ? undefined : parseIpv4(address);
  const parsedMask = mask === undefined ? undefined : parseIpv4(mask);
  if (address !== undefined && parsedAddress === undefined)
    return {
      kind: "unreadable",
      why: `Shared_Net_Address ${JSON.stringify(address)} is not an IPv4 address`,
    };
  if (mask !== undefined && parsedMask === undefined)
    return { kind: "unreadable", why: `Shared_Net_Mask ${JSON.stringify(mask)} is not an IPv4 mask` };
  return { kind: "set", address: parsedAddress, mask: parsedMask };
}

// --- netstat -rn -f inet ---------------------------------------------------------------------------

export interface Route {
  readonly destination: Ipv4Subnet;
  readonly gateway: string;
  readonly flags: string;
  readonly interfaceName: string;
}

/**
 * `netstat -rn -f inet` (macOS netstat, route.c): a header line "Destination Gateway Flags Netif
 * Expire", then one route per line. Destinations are abbreviated the BSD way: trailing zero
 * octets are left out and the prefix length is implied by the octets shown ("192.168.64" is
 * 192.168.64.0/24, "127" is 127.0.0.0/8) unless written as "/N" ("10.8/16"); a host route (flag H)
 * is a /32; "default" is 0.0.0.0/0. Lines that do not parse (link-layer entries, IPv6) are skipped.
 */
export function parseRoutes(text: string): Route[] {
  const routes: Route[] = [];
  let columns: { flags: number; netif: number } | undefined;
  for (const line of text.split("\n")) {
    const fields = line.trim().split(/\s+/);
    if (fields[0] === "Destination") {
      const flags = fields.indexOf("Flags");
      const netif = fields.indexOf("Netif");
      columns = flags > 0 && netif > 0 ? { flags, netif } : undefined;
      continue;
    }
    if (columns === undefined || fields.length <= columns.netif) continue;
    const destination = parseDestination(fields[0]!, fields[columns.flags]!);
    if (destination === undefined) continue;
    routes.push({
      destination,
      gateway: fields[1]!,
      flags: fields[columns.flags]!,
      interfaceName: fields[columns.netif]!,
    });
  }
  return routes;
}

function parseDestination(text: string, flags: string): Ipv4Subnet | undefined {
  if (text === "default") return { network: 0, prefixLength: 0 };
  const [address, prefix, ...rest] = text.split("/");
  if (rest.length > 0 || address === undefined) return undefined;
  const octets = address.split(".");
  if (octets.length < 1 || octets.length > 4 || !octets.every((octet) => /^(0|[1-9][0-9]{0,2})$/.test(octet)))
    return undefined;
  const full = [...octets, "0", "0", "0"].slice(0, 4).join(".");
  const network = parseIpv4(full);
  if (network === undefined) return undefined;
  let prefixLength: number;
  if (prefix !== undefined) {
    if (!/^(0|[1-9][0-9]?)$/.test(prefix) || Number(prefix) > 32) return undefined;
    prefixLength = Number(prefix);
  } else {
    prefixLength = flags.includes("H") ? 32 : octets.length * 8;
  }
  return { network: (network & maskOf(prefixLength)) >>> 0, prefixLength };
}

/**
 * Routes that take some of the shared subnet's traffic to another interface than vmnet's bridge:
 * the default route and routes on vmnet's own interface (the one whose route is exactly the
 * subnet, a bridgeN) do not count.
 */
export function clashingRoutes(routes: readonly Route[], subnet: Ipv4Subnet): Route[] {
  const own = new Set(
    routes
      .filter(
        (route) =>
          route.destination.network === subnet.network &&
          route.destination.prefixLength === subnet.prefixLength &&
          route.interfaceName.startsWith("bridge"),
      )
      .map((route) => route.interfaceName),
  );
  // lo0 carries the host's own addresses (its address on vmnet's bridge among them); flag L marks
  // link-layer (ARP) entries, one per neighbour: neither takes the subnet's traffic elsewhere.
  return routes.filter(
    (route) =>
      route.destination.prefixLength > 0 &&
      !route.interfaceName.startsWith("lo") &&
      !route.flags.includes("L") &&
      !own.has(route.interfaceName) &&
      overlaps(route.destination, subnet),
  );
}

// --- launchctl print system/com.apple.bootpd ---------------------------------------------------------

/**
 * `launchctl print system/com.apple.bootpd`: exit 0 and a description with "state = running" or
 * "state = not running" (and "pid = N" while it runs) when launchd has the job; a non-zero exit
 * with "Could not find service" when it is not loaded. bootpd's job (bootpd.tproj/bootps.plist in
 * Apple's bootp sources) is Disabled by default and socket-activated on the bootps port: Internet
 * Sharing enables it while vmnet's shared network is up, and launchd starts bootpd on demand, so
 * "not running" between requests is normal; "not loaded" while vmnet runs is not.
 */
export type BootpdService =
  | { readonly kind: "loaded"; readonly running: boolean; readonly pid?: number; readonly lastExit?: string }
  | { readonly kind: "not-loaded" }
  | { readonly kind: "unreadable"; readonly why: string };

export function parseLaunchctlPrint(code: number, stdout: string, stderr: string): BootpdService {
  if (/Could not find service/i.test(`${stdout}\n${stderr}`)) return { kind: "not-loaded" };
  if (code !== 0) return { kind: "unreadable", why: (stderr || stdout).split("\n")[0] || `exit ${code}` };
  const state = /^\s*state = (.+)$/m.exec(stdout)?.[1]?.trim();
  if (state === undefined) return { kind: "unreadable", why: "no state line in launchctl's answer" };
  const pid = /^\s*pid = ([0-9]{1,10})$/m.exec(stdout)?.[1];
  const lastExit = /^\s*last exit (?:code|reason) = (.+)$/m.exec(stdout)?.[1]?.trim();
  return {
    kind: "loaded",
    running: state === "running",
    pid: pid === undefined ? undefined : Number(pid),
    lastExit,
  };
}
