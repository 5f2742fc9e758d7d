/**
 * From parsed options to a running softnet: open the VM socket and the host link while still root,
 * drop privileges, then run the filter loop until SIGINT/SIGTERM or until the VM closes its end.
 * Returns the exit code; throws SoftnetError for anything fatal (main prints it).
 *
 * Each platform sets up its own links (Linux: a TAP port on a bridge; macOS: vmnet) and hands them
 * to runFilter(), which is the same everywhere.
 */
import type { Caller } from "./caller.ts";
import type { SoftnetOptions } from "./cli.ts";
import { describeRules } from "./cli.ts";
import { SoftnetError, UsageError } from "./errors.ts";
import { FilterLoop, type StopCause } from "./filter-loop.ts";
import { startFilterTimer } from "./filter-timer.ts";
import { Logger } from "./log.ts";
import type { DarwinLibraries } from "./platform/darwin/system.ts";
import { FrameBatch, type FrameLink, type HostLink } from "./platform/link.ts";
import type { BridgePortWatch } from "./platform/linux/port-watch.ts";
import type { ReactorBackend } from "./platform/reactor.ts";
import { LearnedNames } from "./policy/learned-names.ts";
import { NamePatterns } from "./policy/name-patterns.ts";
import { Policy } from "./policy/policy.ts";
import { Rejecter } from "./policy/reject.ts";
import { allowsEverything, RuleTable } from "./policy/rules.ts";
import { checkExposedPortsAllowed, type PortForwardBackend, PortForwards } from "./port-forwards.ts";
import { enableErrorReports } from "./sentry.ts";
import { onCounterSignals, onStopSignals } from "./signals.ts";
import { counterReport, TrafficDirection } from "./stats.ts";
import { formatIpv4, formatMac } from "./wire/bytes.ts";

/** Frames per receive call, per direction: enough to amortise a syscall, small enough to stay in cache. */
const BATCH_FRAMES = 64;
/** Frames handled per readiness event before yielding to timers, signals and the other direction. */
const DRAIN_BUDGET = 1024;

/** Where the macOS runtime gets its libraries. Only tests pass anything but the default. */
export interface DarwinPlatform {
  libraries: DarwinLibraries;
  /** Set bootpd's lease time (macOS only; the vmnet double has no bootpd). */
  configureBootpd: boolean;
}

export async function runSoftnet(options: SoftnetOptions): Promise<number> {
  const logger = new Logger(options.logLevel, undefined, { format: options.logFormat });
  if (process.platform === "linux") return runOnLinux(options, logger);
  if (process.platform === "darwin") {
    const { MACOS_LIBRARIES } = await import("./platform/darwin/system.ts");
    return runOnDarwin(options, logger, { libraries: MACOS_LIBRARIES, configureBootpd: true });
  }
  throw new SoftnetError(`softnet does not run on ${process.platform}`, {
    hint: "it supports macOS and Linux",
  });
}

/**
 * Who started this softnet (caller.ts), decided once, from the ids it had at exec, before anything
 * changed them (macOS's asTargetUser leaves the caller's groups in place): every later question
 * (the drop, the bridge list, the port guard, an error report's drop) gets this same answer.
 */
let startedBy: Caller | undefined;

async function decideCallerOnce(calls: import("./platform/identity.ts").IdentityCalls): Promise<Caller> {
  const { callerOf } = await import("./platform/identity.ts");
  startedBy ??= callerOf(calls, process.env);
  return startedBy;
}

/**
 * Before an error report leaves this process (main.ts): if it still runs as root, become the user
 * it would have dropped to, for good. Nothing else runs afterwards but the report and the exit.
 */
export async function dropForErrorReport(options: SoftnetOptions): Promise<void> {
  const { resolveDropTarget } = await import("./platform/identity.ts");
  if (process.platform === "linux") {
    const { dropPrivileges, linuxIdentityCalls } = await import("./platform/linux/privileges.ts");
    if (linuxIdentityCalls.geteuid() !== 0) return;
    const caller = await decideCallerOnce(linuxIdentityCalls);
    dropPrivileges(resolveDropTarget(linuxIdentityCalls, caller, options), { keepNetAdmin: false });
    return;
  }
  if (process.platform === "darwin") {
    const { MACOS_LIBRARIES, openDarwinSystem } = await import("./platform/darwin/system.ts");
    const { darwinIdentityCalls } = await import("./platform/darwin/identity.ts");
    const { becomeUser } = await import("./platform/identity.ts");
    const calls = darwinIdentityCalls(openDarwinSystem(MACOS_LIBRARIES));
    if (calls.geteuid() !== 0) return;
    becomeUser(calls, resolveDropTarget(calls, await decideCallerOnce(calls), options));
    return;
  }
  throw new SoftnetError(`no error reports on ${process.platform}`);
}

/** Undo steps, run in reverse order; a failing step must not keep the others from running. */
class Cleanups {
  private readonly steps: Array<() => void | Promise<void>> = [];
  constructor(private readonly logger: Logger) {}
  add(step: () => void | Promise<void>): void {
    this.steps.push(step);
  }
  async run(): Promise<void> {
    for (const step of this.steps.reverse()) {
      try {
        await step();
      } catch (error) {
        this.logger.error(
          `cleanup failed: ${error instanceof Error ? error.message : String(error)}`,
          "cleanup-failed",
        );
      }
    }
  }
}

interface FilterSetup {
  options: SoftnetOptions;
  logger: Logger;
  vm: FrameLink;
  host: HostLink;
  isolate: boolean;
  forwardBackend: PortForwardBackend | undefined;
  reactorBackend: ReactorBackend;
  /** Polled once a second: true when the VM's end is known to be closed. */
  vmEndClosed: () => boolean;
  /** Polled once a second: why the host link no longer reaches the host's network, if it does not. */
  hostLinkLost: () => SoftnetError | undefined;
  runningAs: string;
  cleanups: Cleanups;
  modules: FilterModules;
}

/**
 * The modules runFilter needs, loaded before the privilege drop with the rest of the program: in a
 * checkout only root can read (root's home), the user softnet drops to could not load them after.
 * The release binary embeds them; there this only runs their top level earlier.
 */
interface FilterModules {
  Reactor: typeof import("./platform/reactor.ts").Reactor;
  /** Only with --capture, so a start without it does not pay for the capture code. */
  openCapture: typeof import("./capture/capture.ts").openCapture | undefined;
}

async function loadFilterModules(options: SoftnetOptions): Promise<FilterModules> {
  const { Reactor } = await import("./platform/reactor.ts");
  const openCapture =
    options.capture === undefined ? undefined : (await import("./capture/capture.ts")).openCapture;
  return { Reactor, openCapture };
}

async function runOnLinux(options: SoftnetOptions, logger: Logger): Promise<number> {
  const { libc } = await import("./platform/linux/libc.ts");
  if (options.sudoEscalationProbing) {
    if (libc.geteuid() === 0) return 0;
    throw new SoftnetError("not running as root");
  }
  if (options.bridge === undefined) {
    throw new UsageError("--bridge is required on Linux", {
      hint: "name the bridge the VM should join, e.g. --bridge br0 (create it with: ip link add br0 type bridge)",
    });
  }
  if (options.netType !== "nat") logger.debug("--vm-net-type has no effect on Linux: the bridge decides");
  logger.debug(
    `--bootpd-lease-time ${options.bootpdLeaseTimeSeconds} has no effect on Linux (macOS bootpd only)`,
  );

  const { DatagramLink } = await import("./platform/linux/datagram-link.ts");
  const { openTapOnBridge } = await import("./platform/linux/tap.ts");
  const { dropPrivileges, hasSetupPrivileges, linuxIdentityCalls } = await import(
    "./platform/linux/privileges.ts"
  );
  const { describeTarget, escalateWithSudo, resolveDropTarget } = await import("./platform/identity.ts");
  const caller = await decideCallerOnce(linuxIdentityCalls);
  // Without root or CAP_NET_ADMIN: become root through passwordless sudo (this process is replaced).
  if (!hasSetupPrivileges()) {
    throw escalateWithSudo(linuxIdentityCalls, process.argv.slice(2), (line) => logger.warn(line));
  }
  // A caller who is not root may use only the bridges root lists in /etc/softnet/bridge.conf, and
  // at most as many VMs at once as it allows them there.
  const { enforceBridgeAcl } = await import("./platform/linux/bridge-acl-file.ts");
  const vmCap = enforceBridgeAcl(options.bridge, caller);
  const { epollReactorBackend, prepareEpollReactorSource } = await import(
    "./platform/linux/epoll-reactor.ts"
  );
  const nftables = await import("./platform/linux/nftables.ts");
  const { UnixPeerWatch } = await import("./platform/linux/peer-watch.ts");
  const { BridgePortWatch } = await import("./platform/linux/port-watch.ts");

  // As root, only what opening the host link needs, before a single frame is read: no compiler
  // (Bun's cc writes header files into /tmp as whoever runs it), no subprocess (nft), no Sentry.
  const target = resolveDropTarget(linuxIdentityCalls, caller, options);
  checkExposedPortsAllowed(options.exposedPorts, caller.kind === "root");
  // The exposed host ports, held until exit (port-hold.ts); taken first, so a port that is in use
  // is refused before anything exists that would have to be undone.
  const { holdExposedPorts } = await import("./platform/linux/port-hold.ts");
  const held = holdExposedPorts(options.exposedPorts);
  let reactorSource: ReturnType<typeof prepareEpollReactorSource> | undefined;
  let vm: InstanceType<typeof DatagramLink>;
  try {
    // The reactor's C source is part of the program: read while root (a checkout only root can
    // read works too) into a sealed memfd, compiled from that descriptor after the drop (runtime-c.ts).
    reactorSource = prepareEpollReactorSource();
    vm = new DatagramLink(options.vmFd, { optionName: "--vm-fd" });
  } catch (error) {
    reactorSource?.close();
    held.release();
    throw error;
  }
  const sealedReactorSource = reactorSource;
  const cleanups = new Cleanups(logger);
  cleanups.add(() => held.release());
  cleanups.add(() => sealedReactorSource.close());
  cleanups.add(() => vm.close());
  try {
    const isolate = !allowsEverything(options.rules);
    const host = openTapOnBridge({
      bridge: options.bridge,
      isolate,
      vmMac: options.vmMac,
      owner: caller.uid,
      ownerCap: vmCap,
    });
    cleanups.add(() => host.close());
    for (const change of host.bridgeChanges) logger.info(change);
    const nft = options.exposedPorts.length > 0 ? nftables.locateNft() : undefined;
    const forwardBackend =
      nft === undefined ? undefined : new nftables.NftablesPortForwards(nft, host.name, options.bridge);
    const peerWatch = UnixPeerWatch.open(options.vmFd);
    if (typeof peerWatch === "string") {
      logger.debug(
        `cannot watch the VM end for closing (${peerWatch}); SIGINT or a failed send will stop softnet`,
      );
    } else {
      cleanups.add(() => peerWatch.close());
    }
    const portWatch = BridgePortWatch.open(host.index, host.bridgeIndex);
    if (typeof portWatch === "string") {
      logger.debug(`cannot watch ${host.name}'s place on ${options.bridge} (${portWatch})`);
    } else {
      cleanups.add(() => portWatch.close());
    }

    const modules = await loadFilterModules(options);
    dropPrivileges(target, { keepNetAdmin: forwardBackend !== undefined });
    await enableErrorReports(process.env);
    // Compiled as the user softnet now is (Bun stages its headers in that user's own
    // /tmp/bun-cc-<uid>), from the sealed memfd: TinyCC reads nothing else (runtime-c.ts).
    const reactorBackend = epollReactorBackend(sealedReactorSource);
    // nft refuses to run with a real uid that differs from the effective one (setuid): after the
    // drop both are the caller's, and CAP_NET_ADMIN rides along in the ambient set.
    if (forwardBackend !== undefined) {
      // Ending the nft session is what deletes its owned table: after the forwards' own removal.
      cleanups.add(() => forwardBackend.close());
      await forwardBackend.open(); // starts nft; removes what an older softnet may have left
    }

    return await runFilter({
      modules,
      options,
      logger,
      vm,
      host,
      isolate,
      forwardBackend,
      reactorBackend,
      vmEndClosed: () => typeof peerWatch !== "string" && peerWatch.peerState() === "gone",
      hostLinkLost: () => (typeof portWatch === "string" ? undefined : tapLeftBridge(portWatch, host)),
      runningAs: describeTarget(target),
      cleanups,
    });
  } finally {
    await cleanups.run();
  }
}

/**
 * macOS: vmnet.framework in shared (nat) or host mode. `platform` names the libraries; a release
 * build always passes the constant macOS paths, tests pass the vmnet double.
 */
export async function runOnDarwin(
  options: SoftnetOptions,
  logger: Logger,
  platform: DarwinPlatform,
): Promise<number> {
  const { openDarwinSystem } = await import("./platform/darwin/system.ts");
  const { darwinIdentityCalls } = await import("./platform/darwin/identity.ts");
  const { asTargetUser, becomeUser, describeTarget, escalateWithSudo, resolveDropTarget } = await import(
    "./platform/identity.ts"
  );
  const system = openDarwinSystem(platform.libraries);
  const calls = darwinIdentityCalls(system);
  if (options.sudoEscalationProbing) {
    if (calls.geteuid() === 0) return 0;
    throw new SoftnetError("not running as root");
  }
  const caller = await decideCallerOnce(calls);
  if (calls.geteuid() !== 0) {
    throw escalateWithSudo(calls, process.argv.slice(2), (line) => logger.warn(line));
  }

  const { DarwinDatagramLink } = await import("./platform/darwin/datagram-link.ts");
  const { openVmnet } = await import("./platform/darwin/vmnet.ts");
  const { pollReactorBackend, preparePollReactorSource } = await import("./platform/darwin/poll-reactor.ts");

  const target = resolveDropTarget(calls, caller, options);
  checkExposedPortsAllowed(options.exposedPorts, caller.kind === "root");
  // A port in use on the Mac is refused before vmnet is asked for anything (port-check.ts: checked
  // and released, not held as on Linux).
  const { checkExposedPortsFree } = await import("./platform/darwin/port-check.ts");
  checkExposedPortsFree(system, options.exposedPorts);
  if (platform.configureBootpd) {
    // bootpd reads its lease time when the shared network starts: before vmnet_start_interface.
    const { openBootpdSymbols, setBootpdLeaseTime } = await import("./platform/darwin/bootpd.ts");
    const warning = setBootpdLeaseTime(options.bootpdLeaseTimeSeconds, openBootpdSymbols(system));
    if (warning !== undefined) logger.warn(`bootpd lease time not set: ${warning}`);
  }
  // vmnet needs its callbacks (native code) before it starts, and it starts only as root; the
  // compiler must not run as root, so it runs now as the user softnet will drop to. Both C sources
  // are read first, as root, into descriptors the caller can neither reach nor write (runtime-c.ts):
  // the blocks run as root, the reactor in the process that holds vmnet.
  const { nativeBlocks, prepareBlocksSource } = await import("./platform/darwin/blocks.ts");
  const blocksSource = prepareBlocksSource(system);
  const reactorSource = preparePollReactorSource(system);
  const cleanups = new Cleanups(logger);
  cleanups.add(() => reactorSource.close());
  try {
    asTargetUser(calls, target, () => nativeBlocks(system, blocksSource));
  } catch (error) {
    reactorSource.close();
    throw error;
  }
  const vm = new DarwinDatagramLink(system, options.vmFd, { optionName: "--vm-fd" });
  cleanups.add(() => vm.close());
  try {
    const isolate = !allowsEverything(options.rules);
    const host = openVmnet({
      mode: options.netType,
      isolate,
      system,
      portForwarding: options.exposedPorts.length > 0,
    });
    cleanups.add(() => host.close());

    const modules = await loadFilterModules(options);
    becomeUser(calls, target);
    await enableErrorReports(process.env);
    const reactorBackend = pollReactorBackend(system, reactorSource);

    return await runFilter({
      modules,
      options,
      logger,
      vm,
      host,
      isolate,
      forwardBackend: options.exposedPorts.length > 0 ? host : undefined,
      reactorBackend,
      // A closed VM end is noticed by receive/send (ECONNRESET, EDESTADDRREQ), but macOS never
      // reports the socket readable again afterwards: the tick asks (datagram-link.ts).
      vmEndClosed: () => vm.peerClosed(),
      // vmnet reports a lost interface through its own events, not by a poll here.
      hostLinkLost: () => undefined,
      runningAs: describeTarget(target),
      cleanups,
    });
  } finally {
    await cleanups.run();
  }
}

/** The part that is the same on every platform: policy, loop, readiness, timers, signals. */
async function runFilter(setup: FilterSetup): Promise<number> {
  const { options, logger, vm, host, cleanups } = setup;
  const { Reactor, openCapture } = setup.modules;
  // Names in --allow, and what the VM's DNS answers teach about every name it looks up.
  const names = new LearnedNames(new NamePatterns(options.allowedNames));
  const policy = new Policy({
    vmMac: options.vmMac,
    gateway: host.gateway,
    // The VM's network and whether it is isolated: what it may receive depends on both.
    prefixLength: host.prefixLength,
    isolated: setup.isolate,
    rules: RuleTable.compile(options.rules, host.gateway, names),
    names,
  });
  const clock = () => performance.now();
  const startedAtMs = clock();
  const slotSize = Math.max(host.maxFrameSize, 1518);

  // --capture (src/capture). runFilter runs after the privilege drop on every platform, so the
  // file is opened as the user softnet now is, never as root.
  let capture: import("./capture/capture.ts").FrameCapture | undefined;
  if (options.capture !== undefined && openCapture !== undefined) {
    capture = openCapture(options.capture, {
      logger,
      vmMac: options.vmMac,
      hostLink: host.description,
      maxFrameBytes: slotSize,
    });
    const opened = capture;
    cleanups.add(() => opened.close());
  }

  let forwards: PortForwards | undefined;
  let resolveStop!: (cause: StopCause) => void;
  const stopped = new Promise<StopCause>((resolve) => {
    resolveStop = resolve;
  });
  const loop = new FilterLoop({
    policy,
    vm,
    host,
    vmBatch: new FrameBatch(BATCH_FRAMES, slotSize),
    hostBatch: new FrameBatch(BATCH_FRAMES, slotSize),
    logger,
    clock,
    onLeaseChange: () => void forwards?.reconcile(),
    onStop: (cause) => resolveStop(cause),
    capture,
    reject: options.reject ? new Rejecter(policy) : undefined,
  });
  if (setup.forwardBackend !== undefined) {
    const forwardBackend = setup.forwardBackend;
    forwards = new PortForwards(options.exposedPorts, forwardBackend, logger, () =>
      policy.lease.isValidAt(clock()) ? policy.lease.address : -1,
    );
    const installed = forwards;
    cleanups.add(() => installed.close());
  }

  const reactor = new Reactor(setup.reactorBackend);
  cleanups.add(() => reactor.close());
  // The capture is written once per drain (one write for up to DRAIN_BUDGET frames), not per frame.
  reactor.watch(vm.pollFd, () => {
    const more = loop.drainFromVm(DRAIN_BUDGET);
    capture?.flush();
    return more;
  });
  reactor.watch(host.pollFd, () => {
    const more = loop.drainFromHost(DRAIN_BUDGET);
    capture?.flush();
    return more;
  });

  cleanups.add(
    startFilterTimer({
      loop,
      logger,
      vmEndClosed: setup.vmEndClosed,
      hostLinkLost: setup.hostLinkLost,
      forwards,
    }),
  );
  cleanups.add(
    onStopSignals((signal) => {
      logger.info(`${signal} received: stopping`, "signal", { signal });
      loop.stop({ kind: "signal", signal });
    }),
  );

  // Counters on demand: SIGUSR2 everywhere; SIGINFO (Ctrl-T in a terminal) where the system has it.
  const exposed = options.exposedPorts.map((port) => `${port.externalPort}→${port.internalPort}`).join(", ");
  const printCounters = (trigger: string, force: boolean) => {
    capture?.flush(); // so the file holds everything the counters count
    const report = counterReport({
      trigger,
      traffic: loop.traffic,
      lease: policy.lease,
      nowMs: clock(),
      startedAtMs,
      exposed,
      forwardsInstalledFor: forwards?.installedAddress ?? -1,
      capture: capture?.status,
      reject: options.reject,
      names,
      truncatedFrames: [vm.truncatedFrames ?? 0, host.truncatedFrames ?? 0],
    });
    logger.report("info", report.lines, "counters", report.fields, force);
  };
  cleanups.add(onCounterSignals((signal) => printCounters(signal, true)));

  logger.info(
    `forwarding for VM ${formatMac(options.vmMac)} on fd ${options.vmFd} through ${host.description} ` +
      `(gateway ${formatIpv4(host.gateway)}/${host.prefixLength}, MTU ${host.mtu}, ` +
      `${setup.isolate ? "isolated from other VMs" : "not isolated: --allow 0.0.0.0/0"}); ` +
      `rules: ${describeRules(options.rules, options.allowedNames)}${options.reject ? " (dropped destinations answered: --reject)" : ""}; ` +
      `running as ${setup.runningAs}` +
      (options.capture === undefined ? "" : `; capturing to ${options.capture.path}`),
    "startup",
    {
      vm_mac: formatMac(options.vmMac),
      vm_fd: options.vmFd,
      host_link: host.description,
      gateway: formatIpv4(host.gateway),
      prefix_length: host.prefixLength,
      mtu: host.mtu,
      isolated: setup.isolate,
      rules: describeRules(options.rules, options.allowedNames),
      reject: options.reject,
      exposed: exposed === "" ? null : exposed,
      running_as: setup.runningAs,
      capture: options.capture?.path ?? null,
    },
  );

  const cause = await stopped;
  // A clean stop gives the VM's address back to the DHCP server's pool (policy/release.ts).
  if (cause.kind !== "fatal") loop.releaseLease();
  const dropped: Record<string, number> = {};
  const summary = loop.dropSummary(dropped);
  const why =
    cause.kind === "fatal" ? "failure" : cause.kind === "signal" ? cause.signal : "the VM closed its end";
  const toHost = loop.traffic.deliveredFrames[TrafficDirection.FROM_VM];
  const toVm = loop.traffic.deliveredFrames[TrafficDirection.FROM_HOST];
  logger.info(
    `stopped (${why}): forwarded ${toHost} frames to the host and ${toVm} to the VM` +
      `${summary === "" ? "" : `; dropped: ${summary}`}`,
    "stop",
    { cause: why, forwarded_to_host: toHost, forwarded_to_vm: toVm, dropped },
  );
  printCounters("exit", false);
  if (cause.kind === "fatal") {
    // A SoftnetError already says what failed and why. A link that failed otherwise ("went away":
    // EBADFD from a deleted TAP) is explained by the port watch when it can say more.
    if (cause.error instanceof SoftnetError) throw cause.error;
    const lost = setup.hostLinkLost();
    if (lost !== undefined) throw lost;
    throw new SoftnetError("the filter loop failed", { cause: cause.error });
  }
  return 0;
}

/**
 * Linux: the error to stop with when the TAP is no longer a port of its bridge (deleted bridge,
 * port taken off it), or undefined while it still is or the kernel did not say.
 */
function tapLeftBridge(
  watch: BridgePortWatch,
  host: { name: string; bridge: string },
): SoftnetError | undefined {
  const state = watch.portState();
  if (state === "attached" || state === "unknown") return undefined;
  const hint = "the VM has no network without it: start the VM again";
  if (state === "no-interface")
    return new SoftnetError(`lost the host network: TAP port ${host.name} was deleted`, { hint });
  if (watch.bridgeExists() === false) {
    return new SoftnetError(`lost the host network: bridge ${host.bridge} was deleted`, {
      hint: `${hint} once the bridge is back`,
    });
  }
  return new SoftnetError(
    `lost the host network: TAP port ${host.name} was taken off bridge ${host.bridge}`,
    {
      hint,
    },
  );
}
