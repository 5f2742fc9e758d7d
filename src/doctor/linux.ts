/**
 * The Linux checks: everything a VM behind softnet needs on `--bridge NAME`.
 *
 * Without root: the bridge as /sys shows it, its IPv4 address (iproute2), whether /dev/net/tun is
 * there. As root, what softnet itself does: a temporary TAP port on the bridge (isolated, as a
 * VM's), a DHCPDISCOVER through it from a throwaway MAC, nftables' verdict on softnet's port-forward
 * rules (`nft --check`: the kernel validates them, nothing is applied).
 *
 * Nothing here changes the system for good. The TAP is not persistent: closing its descriptor
 * deletes it and its bridge port, which happens when the check ends, when SIGINT/SIGTERM stops the
 * doctor (index.ts runs the cleanups) and, should the process die, when the kernel closes its
 * descriptors. The check then confirms the interface is gone.
 */
import { closeSync, constants, existsSync, openSync, readdirSync, readFileSync } from "node:fs";
import type { Caller } from "../caller.ts";
import { SoftnetError } from "../errors.ts";
import type { TapOnBridge } from "../platform/linux/tap.ts";
import { formatIpv4, formatMac, parseIpv4 } from "../wire/bytes.ts";
import { type DoctorContext, runBounded } from "./common.ts";
import { LinkProbe, type Offer, throwawayMac } from "./probe.ts";
import { type Checklist, NEEDS_ROOT, NEEDS_ROOT_ADVICE } from "./report.ts";

export interface LinuxDoctorOptions {
  readonly bridge: string;
  /** How long to wait for a DHCP OFFER. */
  readonly dhcpTimeoutMs: number;
}

/**
 * Who may use which bridge, as softnet enforces it for callers who are not root: the access list
 * /etc/softnet/bridge.conf (src/bridge-acl.ts).
 */
export interface BridgeAccessList {
  /** The file the list is read from, for messages. */
  readonly path: string;
  /**
   * Throws a SoftnetError saying why when `caller` (caller.ts) may not use `bridge`. Returns when
   * they may (root always may).
   */
  enforce(bridge: string, caller: Caller): void;
}

/**
 * The access list softnet itself enforces (/etc/softnet/bridge.conf), loaded lazily: that module
 * binds glibc, and macOS imports this file.
 */
export async function builtInBridgeAccessList(): Promise<BridgeAccessList | undefined> {
  const { BRIDGE_ACL_PATH, enforceBridgeAcl } = await import("../platform/linux/bridge-acl-file.ts");
  return {
    path: BRIDGE_ACL_PATH,
    enforce: (bridge, caller) => {
      enforceBridgeAcl(bridge, caller);
    },
  };
}

const IP_LOCATIONS = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"] as const;
const IFF_UP = 0x1; // <linux/if.h>
/** /sys/class/net/PORT/brport/state (<linux/if_bridge.h> BR_STATE_*). */
const PORT_STATES = ["disabled", "listening", "learning", "forwarding", "blocking"] as const;
const BR_STATE_FORWARDING = 3;

function sysNet(name: string, file: string): string | undefined {
  try {
    return readFileSync(`/sys/class/net/${name}/${file}`, "ascii").trim();
  } catch {
    return undefined;
  }
}

/** The bridges on this machine, for advice. */
export function listBridges(): string[] {
  try {
    return readdirSync("/sys/class/net")
      .filter((name) => existsSync(`/sys/class/net/${name}/bridge`))
      .sort();
  } catch {
    return [];
  }
}

function bridgeListAdvice(): string {
  const bridges = listBridges();
  return bridges.length === 0 ? "there is no bridge on this machine" : `bridges here: ${bridges.join(", ")}`;
}

/** The bridge's IPv4 addresses as iproute2 lists them (ip -j -4 addr show dev NAME). */
async function ipv4Addresses(bridge: string): Promise<{
  ip: string | undefined;
  addresses: { address: string; prefixLength: number }[];
  error?: string;
}> {
  const ip = IP_LOCATIONS.find((path) => Bun.file(path).size > 0);
  if (ip === undefined) return { ip, addresses: [] };
  const result = await runBounded([ip, "-j", "-4", "addr", "show", "dev", bridge], 5000, {});
  if (result.code !== 0) return { ip, addresses: [], error: result.stderr || `exit ${result.code}` };
  try {
    const links = JSON.parse(result.stdout) as Array<{
      addr_info?: Array<{ family?: string; local?: string; prefixlen?: number }>;
    }>;
    const addresses = links
      .flatMap((link) => link.addr_info ?? [])
      .filter((info) => info.family === "inet" && typeof info.local === "string")
      .map((info) => ({ address: info.local!, prefixLength: info.prefixlen ?? 32 }));
    return { ip, addresses };
  } catch (error) {
    return { ip, addresses: [], error: `cannot read ${ip}'s JSON: ${(error as Error).message}` };
  }
}

export async function linuxChecks(
  list: Checklist,
  context: DoctorContext,
  options: LinuxDoctorOptions,
  accessList: BridgeAccessList | undefined,
): Promise<void> {
  const { bridge } = options;

  // --- The bridge, as anyone can see it.
  const bridgeTitle = `bridge ${bridge} exists`;
  let bridgeOk = false;
  if (!existsSync(`/sys/class/net/${bridge}`)) {
    list.problem(
      "linux.bridge",
      bridgeTitle,
      `there is no network interface ${bridge}`,
      `create it (ip link add ${bridge} type bridge), or name another with --bridge; ${bridgeListAdvice()}`,
    );
  } else if (!existsSync(`/sys/class/net/${bridge}/bridge`)) {
    list.problem(
      "linux.bridge",
      bridgeTitle,
      `${bridge} exists but is not a Linux bridge`,
      `softnet attaches VMs to a bridge; ${bridgeListAdvice()}`,
    );
  } else {
    bridgeOk = true;
    const stp = sysNet(bridge, "bridge/stp_state");
    const forwardDelay = Number(sysNet(bridge, "bridge/forward_delay") ?? "0") / 100;
    list.ok(
      "linux.bridge",
      bridgeTitle,
      `${bridge} is a bridge (STP ${stp === "0" ? "off" : `on, forward delay ${forwardDelay} s`})`,
      { stp: stp !== "0", forwardDelaySeconds: forwardDelay },
    );
  }
  const afterBridge = `not checked: bridge ${bridge} is missing`;

  if (!bridgeOk) {
    list.skipped("linux.bridge.up", `bridge ${bridge} is up`, afterBridge);
  } else {
    const flags = Number.parseInt(sysNet(bridge, "flags") ?? "0", 16);
    const operstate = sysNet(bridge, "operstate") ?? "unknown";
    if ((flags & IFF_UP) !== 0) {
      // A bridge without a port that has a carrier reports operstate "down" though it is up.
      list.ok("linux.bridge.up", `bridge ${bridge} is up`, `administratively up (operstate ${operstate})`, {
        operstate,
      });
    } else {
      list.problem(
        "linux.bridge.up",
        `bridge ${bridge} is up`,
        `${bridge} is down`,
        `ip link set ${bridge} up`,
        { operstate },
      );
    }
  }

  let bridgeAddress: { address: string; prefixLength: number } | undefined;
  if (!bridgeOk) {
    list.skipped("linux.bridge.ipv4", `bridge ${bridge} has an IPv4 address`, afterBridge);
  } else {
    const found = await ipv4Addresses(bridge);
    const mtu = Number(sysNet(bridge, "mtu") ?? "0");
    if (found.ip === undefined) {
      list.skipped(
        "linux.bridge.ipv4",
        `bridge ${bridge} has an IPv4 address`,
        `cannot list addresses: iproute2 (ip) is not at ${IP_LOCATIONS.join(", ")}` +
          (context.asRoot ? "; the TAP check below reads it as softnet does" : ""),
        "install iproute2",
      );
    } else if (found.error !== undefined) {
      list.problem(
        "linux.bridge.ipv4",
        `bridge ${bridge} has an IPv4 address`,
        `${found.ip} -4 addr show dev ${bridge} failed: ${found.error}`,
        `check the bridge with: ip addr show dev ${bridge}`,
      );
    } else if (found.addresses.length === 0) {
      list.problem(
        "linux.bridge.ipv4",
        `bridge ${bridge} has an IPv4 address`,
        `${bridge} has no IPv4 address: softnet gives VMs the bridge's address as their gateway`,
        `add one, e.g. ip addr add 192.168.100.1/24 dev ${bridge}, and a DHCP server for that subnet`,
        { mtu },
      );
    } else {
      bridgeAddress = found.addresses[0];
      const all = found.addresses.map((entry) => `${entry.address}/${entry.prefixLength}`);
      list.ok(
        "linux.bridge.ipv4",
        `bridge ${bridge} has an IPv4 address`,
        `${all.join(", ")} (the VMs' gateway: ${bridgeAddress!.address}), MTU ${mtu}`,
        { addresses: all, gateway: bridgeAddress!.address, mtu },
      );
    }
  }

  // --- Who may use the bridge.
  const aclAllows = bridgeAccessCheck(list, context, bridge, accessList);

  // --- /dev/net/tun.
  let tunOk = false;
  const tunTitle = "/dev/net/tun is usable";
  if (!existsSync("/dev/net/tun")) {
    list.problem(
      "linux.tun",
      tunTitle,
      "/dev/net/tun does not exist: softnet cannot create TAP ports",
      "load the tun driver (modprobe tun); in a container, pass the device in (docker run --device /dev/net/tun ...)",
    );
  } else if (!context.asRoot) {
    list.skipped("linux.tun", tunTitle, `/dev/net/tun exists; opening it ${NEEDS_ROOT}`, NEEDS_ROOT_ADVICE);
  } else {
    try {
      // Opening the clone device creates nothing: a TAP exists only after TUNSETIFF.
      closeSync(openSync("/dev/net/tun", constants.O_RDWR | constants.O_NONBLOCK));
      tunOk = true;
      list.ok("linux.tun", tunTitle, "/dev/net/tun opens for reading and writing");
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? "";
      list.problem(
        "linux.tun",
        tunTitle,
        `cannot open /dev/net/tun: ${(error as Error).message}`,
        code === "ENODEV" || code === "ENXIO"
          ? "the tun driver is missing: modprobe tun"
          : "check the device's permissions and any device cgroup or security module that denies it",
        { errno: code },
      );
    }
  }

  // --- As softnet does it: a TAP port on the bridge, and a DHCP server answering through it.
  const tapTitle = `a TAP port joins ${bridge}, isolated, and is removed afterwards`;
  const isolationTitle = "bridge port isolation is supported";
  const dhcpTitle = `a DHCP server answers on ${bridge}`;
  const missing = !bridgeOk
    ? afterBridge
    : !context.asRoot
      ? NEEDS_ROOT
      : !tunOk
        ? "not checked: /dev/net/tun is not usable"
        : !aclAllows
          ? `not checked: the access list does not allow ${bridge}`
          : undefined;
  let offerAddress: number | undefined;
  if (missing !== undefined) {
    list.skipped("linux.tap", tapTitle, missing, missing === NEEDS_ROOT ? NEEDS_ROOT_ADVICE : undefined);
    isolationWithoutTap(list, bridge, isolationTitle, missing);
    list.skipped("linux.dhcp", dhcpTitle, missing, missing === NEEDS_ROOT ? NEEDS_ROOT_ADVICE : undefined);
  } else {
    offerAddress = await tapAndDhcp(
      list,
      context,
      options,
      { tapTitle, isolationTitle, dhcpTitle },
      bridgeAddress,
    );
  }

  // --- nftables for --expose.
  await nftCheck(list, context, bridge, offerAddress ?? sampleAddress(bridgeAddress));
}

/** Isolation support without a TAP of our own: an existing port shows whether the kernel has it. */
function isolationWithoutTap(list: Checklist, bridge: string, title: string, why: string): void {
  let ports: string[] = [];
  try {
    ports = readdirSync(`/sys/class/net/${bridge}/brif`);
  } catch {
    // no bridge, or no ports directory
  }
  const port = ports.find((name) => existsSync(`/sys/class/net/${name}/brport/isolated`));
  if (port !== undefined) {
    list.ok("linux.isolation", title, `the kernel has it (port ${port} of ${bridge} has brport/isolated)`);
  } else {
    list.skipped("linux.isolation", title, why, why === NEEDS_ROOT ? NEEDS_ROOT_ADVICE : undefined);
  }
}

/** An address in the bridge's subnet for the nft check: the one after the gateway. */
function sampleAddress(bridge: { address: string; prefixLength: number } | undefined): number {
  const gateway = bridge === undefined ? undefined : parseIpv4(bridge.address);
  return gateway === undefined ? 0xc0000201 /* 192.0.2.1, TEST-NET-1 */ : (gateway + 1) >>> 0;
}

async function tapAndDhcp(
  list: Checklist,
  context: DoctorContext,
  options: LinuxDoctorOptions,
  titles: { tapTitle: string; isolationTitle: string; dhcpTitle: string },
  bridgeAddress: { address: string; prefixLength: number } | undefined,
): Promise<number | undefined> {
  const { bridge } = options;
  const { openTapOnBridge } = await import("../platform/linux/tap.ts");
  const mac = throwawayMac();
  // The port is locked to the VM's MAC (a static FDB entry): here the throwaway one.
  const tapOptions = { bridge, isolate: true, vmMac: mac };
  let tap: TapOnBridge;
  try {
    tap = openTapOnBridge(tapOptions);
  } catch (error) {
    const softnetError = error instanceof SoftnetError ? error : undefined;
    const what = softnetError?.what ?? (error as Error).message;
    const cause = error instanceof Error && error.cause instanceof Error ? `: ${error.cause.message}` : "";
    list.problem(
      "linux.tap",
      titles.tapTitle,
      `softnet could not attach a port to ${bridge}: ${what}${cause}`,
      softnetError?.hint ?? "see the message; softnet fails the same way",
    );
    const notChecked = "not checked: no TAP port";
    if (/isolation/.test(what)) {
      list.problem(
        "linux.isolation",
        titles.isolationTitle,
        what,
        softnetError?.hint ?? "use Linux 4.18 or later",
      );
    } else {
      isolationWithoutTap(list, bridge, titles.isolationTitle, notChecked);
    }
    list.skipped("linux.dhcp", titles.dhcpTitle, notChecked);
    return undefined;
  }

  const close = () => tap.close();
  context.cleanups.add(close);
  // The TAP's line comes first but is written last, once its removal is confirmed.
  list.skipped("linux.tap", titles.tapTitle, "not reached");
  let offer: Offer | undefined;
  let tapDetail = `${tap.name} (MTU ${tap.mtu}, gateway ${formatIpv4(tap.gateway)}/${tap.prefixLength})`;
  const tapValues: Record<string, string | number | boolean> = {
    tap: tap.name,
    mtu: tap.mtu,
    gateway: formatIpv4(tap.gateway),
    prefixLength: tap.prefixLength,
  };
  try {
    const isolated = sysNet(tap.name, "brport/isolated");
    if (isolated === "1") {
      list.ok("linux.isolation", titles.isolationTitle, `${tap.name}/brport/isolated reads 1`);
    } else {
      list.problem(
        "linux.isolation",
        titles.isolationTitle,
        `${tap.name}/brport/isolated reads ${isolated ?? "nothing"} after softnet turned isolation on`,
        "bridge port isolation needs Linux 4.18 or later",
      );
    }

    // A port with STP on listens and learns for twice the forward delay before it forwards.
    const forwardDelay = Number(sysNet(bridge, "bridge/forward_delay") ?? "0") / 100;
    const waitLimitMs = Math.min(35_000, Math.max(3000, (2 * forwardDelay + 2) * 1000));
    const waitStarted = performance.now();
    let state = Number(sysNet(tap.name, "brport/state") ?? "-1");
    while (state !== BR_STATE_FORWARDING && !context.interrupted()) {
      if (performance.now() - waitStarted > waitLimitMs) break;
      await Bun.sleep(50);
      state = Number(sysNet(tap.name, "brport/state") ?? "-1");
    }
    const waitedMs = Math.round(performance.now() - waitStarted);
    const stateName = PORT_STATES[state] ?? `state ${state}`;
    tapValues.portState = stateName;
    tapValues.forwardingAfterMs = waitedMs;
    if (state !== BR_STATE_FORWARDING) {
      list.problem(
        "linux.dhcp",
        titles.dhcpTitle,
        `no frame can pass: the new port is still ${stateName} after ${waitedMs} ms`,
        `with STP on, VMs wait 2 × forward delay (${forwardDelay} s) before any frame passes: ` +
          `ip link set ${bridge} type bridge stp_state 0, or forward_delay 0`,
      );
    } else {
      if (waitedMs >= 1000) {
        tapDetail += `, forwarding only after ${(waitedMs / 1000).toFixed(1)} s (STP): VMs lose that much at start`;
      }
      const result = await new LinkProbe(
        { link: tap, maxFrameSize: tap.maxFrameSize },
        context.interrupted,
      ).dhcpOffer(mac, options.dhcpTimeoutMs);
      offer = result.offer;
      dhcpResult(
        list,
        titles.dhcpTitle,
        bridge,
        mac,
        result,
        bridgeAddress?.address ?? formatIpv4(tap.gateway),
        options,
      );
    }
  } finally {
    tap.close();
    context.cleanups.delete(close);
  }
  if (existsSync(`/sys/class/net/${tap.name}`)) {
    list.problem(
      "linux.tap",
      titles.tapTitle,
      `${tapDetail}; it is still there after softnet closed it`,
      `remove it (ip link del ${tap.name}) and report this as a bug`,
      tapValues,
    );
  } else {
    list.ok("linux.tap", titles.tapTitle, `${tapDetail}; removed afterwards`, tapValues);
  }
  return offer === undefined ? undefined : parseIpv4(offer.dhcp.yourAddress ?? "");
}

/** The DHCP line: the OFFER and what it says, or what to do when none came. */
export function dhcpResult(
  list: Checklist,
  title: string,
  where: string,
  mac: number,
  result: { offer: Offer | undefined; discovers: number; elapsedMs: number },
  gateway: string,
  options: { dhcpTimeoutMs: number },
  id = "linux.dhcp",
): void {
  const probe = `throwaway MAC ${formatMac(mac)}, DISCOVER only: no lease taken`;
  const { offer } = result;
  if (offer === undefined) {
    list.problem(
      id,
      title,
      `no DHCP OFFER within ${options.dhcpTimeoutMs / 1000} s (${result.discovers} DISCOVERs from ${probe})`,
      `run a DHCP server for ${where}'s subnet on ${where} (e.g. dnsmasq --interface=${where} --bind-interfaces ` +
        "--dhcp-range=FIRST,LAST,10m), make sure it answers unknown MACs, and that no firewall drops UDP 67/68 there",
      { probeMac: formatMac(mac), discovers: result.discovers },
    );
    return;
  }
  const dhcp = offer.dhcp;
  const notes: string[] = [];
  if (dhcp.router !== undefined && dhcp.router !== gateway) {
    notes.push(`the router it offers is not ${gateway}, which softnet treats as the VMs' gateway`);
  }
  if (dhcp.serverIdentifier !== undefined && dhcp.serverIdentifier !== gateway) {
    notes.push(
      `renewals go to ${dhcp.serverIdentifier}, not the gateway: softnet passes only broadcast ones there`,
    );
  }
  list.ok(
    id,
    title,
    `OFFER of ${dhcp.yourAddress} from ${offer.from} after ${Math.round(result.elapsedMs)} ms: ` +
      `router ${dhcp.router ?? "none"}, DNS ${(dhcp.dnsServers ?? []).join(" ") || "none"}, ` +
      `mask ${dhcp.subnetMask ?? "none"}, lease ${dhcp.leaseTimeSeconds ?? "?"} s (${probe})` +
      (notes.length === 0 ? "" : `; note: ${notes.join("; ")}`),
    {
      offeredAddress: dhcp.yourAddress ?? null,
      server: offer.from,
      serverMac: offer.fromMac,
      serverIdentifier: dhcp.serverIdentifier ?? null,
      router: dhcp.router ?? null,
      dnsServers: dhcp.dnsServers ?? [],
      subnetMask: dhcp.subnetMask ?? null,
      leaseTimeSeconds: dhcp.leaseTimeSeconds ?? null,
      probeMac: formatMac(mac),
      elapsedMs: Math.round(result.elapsedMs),
    },
  );
}

/**
 * linux.nft: nft is where softnet looks for it and the kernel accepts softnet's own port-forward
 * rules for this bridge. `nft --check` sends the whole transaction to the kernel, which validates
 * it (tables, nat chains, fib, masquerade); nft then aborts it, so nothing is applied.
 */
async function nftCheck(
  list: Checklist,
  context: DoctorContext,
  bridge: string,
  address: number,
): Promise<void> {
  const title = "nftables accepts softnet's --expose rules";
  const nftables = await import("../platform/linux/nftables.ts");
  let nft: string;
  try {
    nft = nftables.locateNft();
  } catch (error) {
    list.problem(
      "linux.nft",
      title,
      (error as SoftnetError).what ?? (error as Error).message,
      "only VMs started with --expose need it: install nftables (Debian/Ubuntu: apt-get install nftables)",
    );
    return;
  }
  const version = await runBounded([nft, "--version"], 5000, {});
  const versionText = version.code === 0 ? version.stdout : "version unknown";
  if (!context.asRoot) {
    list.skipped(
      "linux.nft",
      title,
      `${nft} (${versionText}) is there; checking its rules ${NEEDS_ROOT}`,
      NEEDS_ROOT_ADVICE,
    );
    return;
  }
  const forwards = new nftables.NftablesPortForwards(nft, "doctor_check", bridge);
  const script = forwards.installScript([{ externalPort: 2222, internalPort: 22 }], address);
  const child = Bun.spawn([nft, "--check", "-f", "-"], {
    stdin: new TextEncoder().encode(`${script}\n`),
    stdout: "ignore",
    stderr: "pipe",
    env: {},
  });
  const [stderr, code] = await Promise.all([new Response(child.stderr).text(), child.exited]);
  const values = { nft, version: versionText, table: forwards.table };
  if (code === 0) {
    list.ok(
      "linux.nft",
      title,
      `${nft} (${versionText}): the kernel accepts a forward 2222→${formatIpv4(address)}:22 via ${bridge} ` +
        "(nft --check: nothing applied)",
      values,
    );
  } else {
    list.problem(
      "linux.nft",
      title,
      `${nft} --check refused softnet's rules: ${stderr.trim().split("\n")[0] || `exit ${code}`}`,
      "only VMs started with --expose need it: the kernel needs nf_tables with nat, fib and masquerade " +
        "(modprobe nft_nat nft_fib_ipv4 nft_masq), or update nftables",
      values,
    );
  }
}

/** linux.bridge-acl: would softnet, started by this caller, be allowed on `bridge`? */
export function bridgeAccessCheck(
  list: Checklist,
  context: Pick<DoctorContext, "caller">,
  bridge: string,
  accessList: BridgeAccessList | undefined,
): boolean {
  const title = `the bridge access list allows ${bridge}`;
  if (accessList === undefined) {
    list.notApplicable(
      "linux.bridge-acl",
      title,
      "this softnet limits no one's bridges (it has no bridge access list)",
    );
    return true;
  }
  const caller = context.caller.kind === "root" ? "root" : `uid ${context.caller.uid}`;
  try {
    accessList.enforce(bridge, context.caller);
  } catch (error) {
    const softnetError = error instanceof SoftnetError ? error : undefined;
    list.problem(
      "linux.bridge-acl",
      title,
      `softnet started by ${caller} would refuse ${bridge}: ${softnetError?.what ?? (error as Error).message}`,
      softnetError?.hint ?? `ask root to allow ${bridge} in ${accessList.path}`,
      { caller, path: accessList.path },
    );
    return false;
  }
  list.ok(
    "linux.bridge-acl",
    title,
    caller === "root"
      ? `root is not limited by ${accessList.path}; run the doctor through sudo as the user who runs Tart to check theirs`
      : `${accessList.path} lets ${caller} use ${bridge}`,
    { caller, path: accessList.path },
  );
  return true;
}
