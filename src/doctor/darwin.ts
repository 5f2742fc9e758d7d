/**
 * The macOS checks: what README "Proven on Linux, to check on a Mac" lists, measured on this
 * machine, each result naming the system it ran on and the value it saw. The same code runs in CI
 * against the vmnet double (test/darwin/doctor.test.ts): the libraries come in as a DarwinPlatform,
 * exactly as runOnDarwin takes them.
 *
 * The order follows softnet's own start (runtime.ts runOnDarwin), so that each step is checked in
 * the state softnet is in when it takes it:
 *   symbols → callbacks compiled as the user softnet drops to → bootpd's lease time (written,
 *   read back) → vmnet in host mode (started, values, stopped) → vmnet in shared mode → a DHCP
 *   DISCOVER through it from a throwaway MAC (DISCOVER only) → bootpd's setting put back → the
 *   privilege drop → a port forward added and removed → a burst of ARP probes, counting event
 *   callbacks while the JavaScript thread sleeps → vmnet_stop_interface, as the dropped user.
 * Without root only the first two run; the rest say "needs root".
 */
import { release } from "node:os";
import { SoftnetError } from "../errors.ts";
import {
  type DarwinPlatform,
  type DarwinSystem,
  GLOBAL_BLOCK_CLASS,
  readCString,
  type VmnetKey,
} from "../platform/darwin/system.ts";
import type { VmnetLink } from "../platform/darwin/vmnet.ts";
import {
  asTargetUser,
  becomeUser,
  type DropTarget,
  describeTarget,
  type IdentityCalls,
  resolveDropTarget,
} from "../platform/identity.ts";
import { formatIpv4, parseIpv4 } from "../wire/bytes.ts";
import type { DoctorContext } from "./common.ts";
import { type BootpdPlatform, writeBootpdLeaseTime } from "./darwin-bootpd.ts";
import { type DarwinHostReader, HOST_CHECK_IDS, type HostCheckInput, hostChecks } from "./darwin-host.ts";
import { dhcpResult } from "./linux.ts";
import { LinkProbe, type Offer, throwawayMac } from "./probe.ts";
import { type Checklist, type CheckValue, NEEDS_ROOT, NEEDS_ROOT_ADVICE } from "./report.ts";

/**
 * The libraries to open, as runOnDarwin takes them (tests pass the vmnet double), and for tests
 * only, stand-ins for CoreFoundation/SystemConfiguration so that the bootpd check can run on Linux
 * (BootpdPlatform, darwin-bootpd.ts).
 */
export interface DarwinDoctorPlatform extends DarwinPlatform, BootpdPlatform {
  /**
   * Where the checks of darwin-host.ts read the Mac's files and command outputs. A release leaves
   * it out: on macOS that is PRODUCTION_HOST_READER (constant paths and argument vectors). Tests
   * on the double pass fixtures; with neither, those checks say n/a.
   */
  readonly hostReader?: DarwinHostReader;
}

export interface DarwinDoctorOptions {
  /** Written for bootpd and read back, as softnet's --bootpd-lease-time. */
  readonly bootpdLeaseTimeSeconds: number;
  readonly dhcpTimeoutMs: number;
  /** The VM whose leases to look at (--vm-mac-address), when given. */
  readonly vmMac?: number;
}

/** How many ARP probes make the burst: more than one vmnet_read returns on old macOS, fewer than a batch. */
const BURST_PROBES = 32;
/** How long the burst's replies wait unread while the event callback is counted. */
const BURST_SETTLE_MS = 300;

const KEYS_REQUIRED: readonly VmnetKey[] = [
  "vmnet_operation_mode_key",
  "vmnet_enable_isolation_key",
  "vmnet_start_address_key",
  "vmnet_subnet_mask_key",
  "vmnet_mtu_key",
  "vmnet_max_packet_size_key",
];
const KEYS_MACOS_15: readonly VmnetKey[] = ["vmnet_read_max_packets_key", "vmnet_write_max_packets_key"];

/** "macOS 15.1 arm64", or what the double stands on. */
export async function describeDarwinSystem(system: DarwinSystem): Promise<string> {
  if (system.kernel.name !== "darwin") {
    return `vmnet double on Linux ${release()} ${process.arch}`;
  }
  const { macosProductVersion } = await import("../platform/darwin/doctor-probes.ts");
  return `macOS ${macosProductVersion(system) ?? "(version unknown)"} ${process.arch}`;
}

export async function darwinChecks(
  list: Checklist,
  context: DoctorContext,
  options: DarwinDoctorOptions,
  platform: DarwinDoctorPlatform,
  system: DarwinSystem,
  systemName: string,
): Promise<void> {
  const on = { system: systemName };
  list.ok(
    "darwin.system",
    "the system under vmnet",
    system.kernel.name === "darwin"
      ? `${systemName} (kern.osproductversion)`
      : `${systemName}, not macOS: the results below are the double's (libraries ${platform.libraries.vmnet}, ` +
          `${platform.libraries.libc})`,
    on,
  );

  // --- Data symbols: bun:ffi cannot bind them; softnet reads them through dlsym on the library's handle.
  const keyValues: Record<string, CheckValue> = { ...on };
  const missing: string[] = [];
  for (const key of [...KEYS_REQUIRED, ...KEYS_MACOS_15]) {
    const value = system.vmnetKey(key);
    keyValues[key] = value === 0 ? null : readCString(value);
    if (value === 0 && KEYS_REQUIRED.includes(key)) missing.push(key);
  }
  const blockClass = system.dataAddress("dispatch", GLOBAL_BLOCK_CLASS);
  keyValues[GLOBAL_BLOCK_CLASS] = blockClass === 0 ? null : `0x${blockClass.toString(16)}`;
  if (blockClass === 0) missing.push(GLOBAL_BLOCK_CLASS);
  const newKeys = KEYS_MACOS_15.filter((key) => keyValues[key] !== null);
  if (missing.length > 0) {
    list.problem(
      "darwin.symbols",
      "vmnet's data symbols resolve",
      `missing on ${systemName}: ${missing.join(", ")}`,
      "softnet needs macOS 11 or later; on a later macOS, report this with the JSON output",
      keyValues,
    );
  } else {
    list.ok(
      "darwin.symbols",
      "vmnet's data symbols resolve",
      `${KEYS_REQUIRED.length} vmnet keys and ${GLOBAL_BLOCK_CLASS} found through dlsym on ${systemName}; ` +
        `read/write max packets keys ${newKeys.length === 2 ? "present" : "absent (before macOS 15)"}`,
      keyValues,
    );
  }

  // --- The native callbacks, compiled as the user softnet drops to (never as root: runtime.ts).
  const { darwinIdentityCalls } = await import("../platform/darwin/identity.ts");
  const calls = darwinIdentityCalls(system);
  let target: DropTarget | undefined;
  let compiled = false;
  try {
    target = resolveDropTarget(calls, context.caller, { user: undefined, group: undefined });
    const { nativeBlocks, prepareBlocksSource } = await import("../platform/darwin/blocks.ts");
    const started = performance.now();
    const dropTarget = target;
    // As in runtime.ts: the source is read as root, compiled as the target user (runtime-c.ts).
    const source = prepareBlocksSource(system);
    asTargetUser(calls, dropTarget, () => nativeBlocks(system, source));
    compiled = true;
    const strategy =
      system.memfdCreate === undefined
        ? "read-only unlinked mkstemp file, /dev/fd/N"
        : "sealed memfd, /proc/self/fd/N";
    list.ok(
      "darwin.callbacks.compile",
      "the native vmnet callbacks compile",
      `blocks.c compiled by TinyCC with -nostdlib in ${Math.round(performance.now() - started)} ms` +
        `${context.asRoot ? ` as ${describeTarget(dropTarget)}` : ""}, source through ${strategy}, on ${systemName}`,
      { ...on, sourcePath: strategy, compiledAs: context.asRoot ? describeTarget(dropTarget) : "this user" },
    );
  } catch (error) {
    list.problem(
      "darwin.callbacks.compile",
      "the native vmnet callbacks compile",
      `${describe(error)} (on ${systemName})`,
      "report this with the JSON output: softnet cannot start vmnet without them",
      on,
    );
  }

  const rootOnly: Array<[string, string]> = [
    ["darwin.bootpd", "bootpd's lease time reads back as written"],
    ["darwin.vmnet.host", "vmnet starts in host mode"],
    ["darwin.vmnet.shared", "vmnet starts in shared (NAT) mode"],
    ["darwin.dhcp", "a DHCP server answers through vmnet"],
    ["darwin.privilege-drop", "softnet drops root with vmnet running"],
    ["darwin.forward", "a port forward is added and removed after the drop"],
    ["darwin.events", "the event callback under a burst"],
    ["darwin.callbacks.thread", "the callbacks run on vmnet's threads"],
    ["darwin.stop", "vmnet stops after the drop"],
  ];
  const why = !context.asRoot
    ? NEEDS_ROOT
    : !compiled || target === undefined
      ? "not checked: the native callbacks did not compile"
      : undefined;
  if (why !== undefined) {
    for (const [id, title] of rootOnly)
      list.skipped(id, title, why, why === NEEDS_ROOT ? NEEDS_ROOT_ADVICE : undefined);
    await runHostChecks(list, options, platform, system, systemName, {
      dhcpUnanswered: false,
      vmnetRunning: false,
    });
    return;
  }
  // Placeholders keep the lines in this order while later steps fill them in.
  for (const [id, title] of rootOnly) list.skipped(id, title, "not reached");
  await rootChecks(list, context, options, platform, system, systemName, target!, calls);
}

async function rootChecks(
  list: Checklist,
  context: DoctorContext,
  options: DarwinDoctorOptions,
  platform: DarwinDoctorPlatform,
  system: DarwinSystem,
  systemName: string,
  target: DropTarget,
  calls: IdentityCalls,
): Promise<void> {
  const on = { system: systemName };
  const { openVmnet } = await import("../platform/darwin/vmnet.ts");

  // --- bootpd: written before vmnet starts (InternetSharing starts bootpd, which reads it then).
  const bootpd = await writeBootpdLeaseTime(
    list,
    context,
    options.bootpdLeaseTimeSeconds,
    platform,
    system,
    systemName,
  );

  // --- host mode: started, looked at, stopped.
  const host = startVmnet(
    list,
    "darwin.vmnet.host",
    "vmnet starts in host mode",
    "host",
    system,
    systemName,
    openVmnet,
  );
  if (host !== undefined) {
    try {
      host.close();
    } catch (error) {
      list.replace({
        ...list.get("darwin.vmnet.host")!,
        status: "problem",
        detail: `${list.get("darwin.vmnet.host")!.detail}; stopping it failed: ${describe(error)}`,
        advice: "report this with the JSON output",
      });
    }
  }

  // --- shared mode: the rest of the checks run on it.
  const shared = startVmnet(
    list,
    "darwin.vmnet.shared",
    "vmnet starts in shared (NAT) mode",
    "nat",
    system,
    systemName,
    openVmnet,
  );
  if (shared === undefined) {
    bootpd.restore();
    // The host's state is read as the caller, never as root: it needs no privilege, and a setuid
    // doctor must run no program as root that opening vmnet does not need.
    becomeUser(calls, target);
    await runHostChecks(list, options, platform, system, systemName, {
      dhcpUnanswered: false,
      vmnetRunning: false,
    });
    for (const id of [
      "darwin.dhcp",
      "darwin.privilege-drop",
      "darwin.forward",
      "darwin.events",
      "darwin.callbacks.thread",
      "darwin.stop",
    ]) {
      const placeholder = list.get(id)!;
      list.replace({ ...placeholder, detail: "not checked: vmnet did not start in shared mode" });
    }
    bootpd.finish(undefined);
    return;
  }
  const close = () => shared.close();
  context.cleanups.add(close);
  const mac = throwawayMac();
  const probe = new LinkProbe({ link: shared, maxFrameSize: shared.maxFrameSize }, context.interrupted);
  let offer: Offer | undefined;
  let eventsDuringDhcp = 0;
  try {
    // --- DHCP through vmnet, as root, while bootpd has the lease time just written.
    const eventsBeforeDhcp = shared.events;
    const result = await probe.dhcpOffer(mac, options.dhcpTimeoutMs);
    eventsDuringDhcp = shared.events - eventsBeforeDhcp;
    offer = result.offer;
    dhcpResult(
      list,
      "a DHCP server answers through vmnet",
      "vmnet",
      mac,
      result,
      formatIpv4(shared.gateway),
      options,
      "darwin.dhcp",
    );
    withSystem(list, "darwin.dhcp", systemName);
    bootpd.restore();
    bootpd.finish(offer);

    // --- The drop, as softnet makes it once vmnet runs.
    try {
      becomeUser(calls, target);
      list.replace({
        id: "darwin.privilege-drop",
        title: "softnet drops root with vmnet running",
        status: "ok",
        detail: `now ${describeTarget(target)}, with the shared interface still running`,
        values: { ...on, uid: target.uid, gid: target.gid },
      });
    } catch (error) {
      list.replace({
        id: "darwin.privilege-drop",
        title: "softnet drops root with vmnet running",
        status: "problem",
        detail: describe(error),
        advice: "report this with the JSON output: softnet fails the same way",
        values: on,
      });
      list.replace({ ...list.get("darwin.forward")!, detail: "not checked: the drop failed" });
    }

    // Why a VM would get no address, read while vmnet's shared network is up and after the drop:
    // as the caller, never as root (it needs no privilege, and a setuid doctor must run no program
    // as root that opening vmnet does not need). Skipped if the drop failed.
    if (list.passed("darwin.privilege-drop")) {
      const causes = await runHostChecks(list, options, platform, system, systemName, {
        dhcpUnanswered: offer === undefined,
        vmnetRunning: true,
        vmnet: { gateway: shared.gateway, mask: shared.subnetMask },
      });
      if (offer === undefined) {
        list.replace({
          ...list.get("darwin.dhcp")!,
          advice:
            causes.length > 0
              ? `bootpd did not answer: ${causes.join("; ")} (see the lines below for what to do)`
              : system.kernel.name === "darwin"
                ? "bootpd did not answer, and none of the known causes below was found: report this with the JSON output"
                : "the double's bridge has no DHCP server answering (dnsmasq stands in for bootpd)",
        });
      }
    }

    // --- A port forward, added and removed after the drop.
    if (list.passed("darwin.privilege-drop")) await forwardCheck(list, shared, offer, systemName);

    // --- A burst, counting event callbacks while the JavaScript thread sleeps.
    const eventsBefore = shared.events;
    let eventsWhileIdle = 0;
    const burst = await probe.arpBurst(mac, shared.gateway, BURST_PROBES, BURST_SETTLE_MS, () => {
      eventsWhileIdle = shared.events - eventsBefore;
    });
    burstResults(list, burst, eventsWhileIdle, eventsDuringDhcp, shared, systemName);
  } finally {
    bootpd.restore();
    context.cleanups.delete(close);
    try {
      shared.close();
      list.replace({
        id: "darwin.stop",
        title: "vmnet stops after the drop",
        status: "ok",
        detail: `vmnet_stop_interface completed as uid ${calls.geteuid()}`,
        values: { ...on, uid: calls.geteuid() },
      });
    } catch (error) {
      list.replace({
        id: "darwin.stop",
        title: "vmnet stops after the drop",
        status: "problem",
        detail: `${describe(error)} (as uid ${calls.geteuid()})`,
        advice: "report this with the JSON output: softnet stops vmnet the same way at exit",
        values: { ...on, uid: calls.geteuid() },
      });
    }
  }
}

/** The checks of darwin-host.ts, or their n/a lines when there is nothing to read them from. */
async function runHostChecks(
  list: Checklist,
  options: DarwinDoctorOptions,
  platform: DarwinDoctorPlatform,
  system: DarwinSystem,
  systemName: string,
  state: Pick<HostCheckInput, "dhcpUnanswered" | "vmnetRunning" | "vmnet">,
): Promise<string[]> {
  let reader = platform.hostReader;
  if (reader === undefined && system.kernel.name === "darwin") {
    reader = (await import("./darwin-host.ts")).PRODUCTION_HOST_READER;
  }
  if (reader === undefined) {
    for (const id of HOST_CHECK_IDS)
      list.notApplicable(id, id, `not on ${systemName}: on a Mac this reads the system's state`, {
        system: systemName,
      });
    return [];
  }
  const major = /^macOS (\d+)/.exec(systemName)?.[1];
  return hostChecks(list, reader, {
    ...state,
    vmMac: options.vmMac,
    macosMajor: major === undefined ? undefined : Number(major),
    systemName,
  });
}

function startVmnet(
  list: Checklist,
  id: string,
  title: string,
  mode: "nat" | "host",
  system: DarwinSystem,
  systemName: string,
  openVmnet: typeof import("../platform/darwin/vmnet.ts").openVmnet,
): VmnetLink | undefined {
  let link: VmnetLink;
  try {
    link = openVmnet({ mode, isolate: true, system });
  } catch (error) {
    list.replace({
      id,
      title,
      status: "problem",
      detail: `${describe(error)} (on ${systemName})`,
      advice:
        error instanceof SoftnetError && error.hint !== undefined ? error.hint : "softnet fails the same way",
      values: { system: systemName },
    });
    return undefined;
  }
  list.replace({ id, title, status: "ok", ...describeVmnet(link, system, systemName) });
  return link;
}

/** The start parameters vmnet reported, as the questions in README ask them. */
function describeVmnet(
  link: VmnetLink,
  system: DarwinSystem,
  systemName: string,
): { detail: string; values: Record<string, CheckValue> } {
  const reported = (key: VmnetKey) => system.vmnetKey(key) !== 0;
  const batches = (value: number, key: VmnetKey) =>
    reported(key) ? `${value}` : `${value} (softnet's fallback: vmnet has no ${key} before macOS 15)`;
  const overhead = link.maxPacketSize - link.mtu;
  return {
    detail:
      `gateway ${formatIpv4(link.gateway)}/${link.prefixLength} (mask ${formatIpv4(link.subnetMask)}), ` +
      `MTU ${link.mtu}, max packet size ${link.maxPacketSize} (MTU + ${overhead}), ` +
      `read max packets ${batches(link.readMaxPackets, "vmnet_read_max_packets_key")}, ` +
      `write max packets ${batches(link.writeMaxPackets, "vmnet_write_max_packets_key")}, on ${systemName}`,
    values: {
      system: systemName,
      gateway: formatIpv4(link.gateway),
      subnetMask: formatIpv4(link.subnetMask),
      prefixLength: link.prefixLength,
      mtu: link.mtu,
      maxPacketSize: link.maxPacketSize,
      maxPacketSizeMinusMtu: overhead,
      readMaxPackets: link.readMaxPackets,
      writeMaxPackets: link.writeMaxPackets,
      readMaxPacketsReported: reported("vmnet_read_max_packets_key"),
      writeMaxPacketsReported: reported("vmnet_write_max_packets_key"),
    },
  };
}

async function forwardCheck(
  list: Checklist,
  link: VmnetLink,
  offer: Offer | undefined,
  systemName: string,
): Promise<void> {
  const title = "a port forward is added and removed after the drop";
  // To the address bootpd just offered (nobody else has it); else the second host of the subnet.
  const address =
    (offer?.dhcp.yourAddress ? parseIpv4(offer.dhcp.yourAddress) : undefined) ?? (link.gateway + 1) >>> 0;
  // A high port, chosen at random, so that nothing listening on the Mac is in the way.
  const externalPort = 49152 + (crypto.getRandomValues(new Uint16Array(1))[0]! % 16000);
  const values = { system: systemName, externalPort, internalPort: 22, address: formatIpv4(address) };
  try {
    await link.install([{ externalPort, internalPort: 22 }], address);
    const installed = link.forwardedPorts.includes(externalPort);
    await link.removeAll();
    const left = link.forwardedPorts.length;
    if (!installed || left !== 0) {
      list.replace({
        id: "darwin.forward",
        title,
        status: "problem",
        detail: `vmnet accepted the requests, but softnet's record says installed=${installed}, left=${left}`,
        advice: "report this with the JSON output",
        values,
      });
      return;
    }
    list.replace({
      id: "darwin.forward",
      title,
      status: "ok",
      detail: `TCP ${externalPort} → ${formatIpv4(address)}:22 added and removed by vmnet, as uid ${process.getuid?.() ?? "?"}, on ${systemName}`,
      values,
    });
  } catch (error) {
    list.replace({
      id: "darwin.forward",
      title,
      status: "problem",
      detail: `${describe(error)} (after the drop, on ${systemName})`,
      advice:
        error instanceof SoftnetError && error.hint !== undefined
          ? error.hint
          : "--expose would fail the same way: report this with the JSON output",
      values,
    });
  }
}

function burstResults(
  list: Checklist,
  burst: { sent: number; replies: number; otherFrames: number },
  eventsWhileIdle: number,
  /** Event callbacks during the DHCP exchange: evidence when the burst brought nothing back. */
  eventsDuringDhcp: number,
  link: VmnetLink,
  systemName: string,
): void {
  const values = {
    system: systemName,
    probesSent: burst.sent,
    replies: burst.replies,
    otherFrames: burst.otherFrames,
    eventsWhileIdle,
    eventsTotal: link.events,
  };
  const seen = `${burst.sent} ARP probes for ${formatIpv4(link.gateway)} → ${burst.replies} replies (+${burst.otherFrames} other frames)`;
  if (burst.replies + burst.otherFrames === 0) {
    list.replace({
      id: "darwin.events",
      title: "the event callback under a burst",
      status: "skipped",
      detail: `${seen}: nothing came back to count events with`,
      advice: "report this with the JSON output (the gateway did not answer ARP probes)",
      values,
    });
  } else {
    list.replace({
      id: "darwin.events",
      title: "the event callback under a burst",
      status: eventsWhileIdle > 0 ? "ok" : "problem",
      detail:
        `${seen}; while they waited ${BURST_SETTLE_MS} ms unread, the event callback fired ${eventsWhileIdle} ` +
        `time${eventsWhileIdle === 1 ? "" : "s"} (on ${systemName})`,
      advice:
        eventsWhileIdle > 0
          ? undefined
          : "vmnet never announced the waiting packets: softnet would never read them",
      values,
    });
  }
  // Blocks on the serial queue softnet gives vmnet run on GCD's worker threads; what can be seen
  // from here is that they ran, and ran while the JavaScript thread was asleep in no vmnet call.
  const title = "the callbacks run on vmnet's threads";
  const threadValues = { system: systemName, eventsWhileIdle, eventsDuringDhcp };
  if (eventsWhileIdle > 0) {
    list.replace({
      id: "darwin.callbacks.thread",
      title,
      status: "ok",
      detail:
        `${eventsWhileIdle} event callbacks ran while the JavaScript thread slept in no vmnet call: on vmnet's ` +
        `(GCD) threads, natively, and the process lives (on ${systemName})`,
      values: threadValues,
    });
  } else if (eventsDuringDhcp > 0) {
    list.replace({
      id: "darwin.callbacks.thread",
      title,
      status: "ok",
      detail: `${eventsDuringDhcp} event callbacks ran during the DHCP exchange, natively, and the process lives (on ${systemName})`,
      values: threadValues,
    });
  } else {
    list.replace({
      id: "darwin.callbacks.thread",
      title,
      status: burst.replies + burst.otherFrames === 0 ? "skipped" : "problem",
      detail: "no event callback was seen at all",
      advice: "see the event callback line",
      values: threadValues,
    });
  }
}

function withSystem(list: Checklist, id: string, systemName: string): void {
  const result = list.get(id);
  if (result !== undefined)
    list.replace({ ...result, values: { ...(result.values ?? {}), system: systemName } });
}

function describe(error: unknown): string {
  if (error instanceof SoftnetError) {
    const cause = error.cause instanceof Error ? `: ${error.cause.message}` : "";
    return `${error.what}${cause}`;
  }
  return error instanceof Error ? error.message : String(error);
}
