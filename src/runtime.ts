/**
 * From parsed options to a running softnet: open the VM socket and the host link while still root,
 * drop privileges, then run the filter loop until SIGINT/SIGTERM or until the VM closes its end.
 * Returns the exit code; throws SoftnetError for anything fatal (main prints it).
 *
 * Each platform sets up its own links (platform/linux/setup.ts: a TAP port on a bridge;
 * platform/darwin/setup.ts: vmnet) and hands them to runFilter(), which is the same everywhere.
 */
import type { SoftnetOptions } from "./cli.ts";
import { describeRules } from "./cli.ts";
import { SoftnetError } from "./errors.ts";
import { FilterLoop, type StopCause } from "./filter-loop.ts";
import { type FilterSetup, PROBED_AS_ROOT } from "./filter-setup.ts";
import { startFilterTimer } from "./filter-timer.ts";
import { Logger } from "./log.ts";
import type { DarwinPlatform } from "./platform/darwin/system.ts";
import { FrameBatch } from "./platform/link.ts";
import { LearnedNames } from "./policy/learned-names.ts";
import { NamePatterns } from "./policy/name-patterns.ts";
import { Policy } from "./policy/policy.ts";
import { Rejecter } from "./policy/reject.ts";
import { RuleTable } from "./policy/rules.ts";
import { PortForwards } from "./port-forwards.ts";
import { onCounterSignals, onStopSignals } from "./signals.ts";
import { counterReport, TrafficDirection } from "./stats.ts";
import { formatIpv4, formatMac } from "./wire/bytes.ts";

/** Frames per receive call, per direction: enough to amortise a syscall, small enough to stay in cache. */
const BATCH_FRAMES = 64;
/** Frames handled per readiness event before yielding to timers, signals and the other direction. */
const DRAIN_BUDGET = 1024;

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
 * Before an error report leaves this process (main.ts): if it still runs as root, become the user
 * it would have dropped to, for good. Nothing else runs afterwards but the report and the exit.
 */
export async function dropForErrorReport(options: SoftnetOptions): Promise<void> {
  const { decideCallerOnce, resolveDropTarget } = await import("./platform/identity.ts");
  if (process.platform === "linux") {
    const { dropPrivileges, linuxIdentityCalls } = await import("./platform/linux/privileges.ts");
    if (linuxIdentityCalls.geteuid() !== 0) return;
    const caller = decideCallerOnce(linuxIdentityCalls);
    dropPrivileges(resolveDropTarget(linuxIdentityCalls, caller, options), { keepNetAdmin: false });
    return;
  }
  if (process.platform === "darwin") {
    const { MACOS_LIBRARIES, openDarwinSystem } = await import("./platform/darwin/system.ts");
    const { darwinIdentityCalls } = await import("./platform/darwin/identity.ts");
    const { becomeUser } = await import("./platform/identity.ts");
    const calls = darwinIdentityCalls(openDarwinSystem(MACOS_LIBRARIES));
    if (calls.geteuid() !== 0) return;
    becomeUser(calls, resolveDropTarget(calls, decideCallerOnce(calls), options));
    return;
  }
  throw new SoftnetError(`no error reports on ${process.platform}`);
}

async function runOnLinux(options: SoftnetOptions, logger: Logger): Promise<number> {
  const { setUpLinux } = await import("./platform/linux/setup.ts");
  return runFilterOn(await setUpLinux(options, logger));
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
  const { setUpDarwin } = await import("./platform/darwin/setup.ts");
  return runFilterOn(await setUpDarwin(options, logger, platform));
}

/** Runs the filter on a platform's set-up, then its undo steps, however the filter ended. */
async function runFilterOn(setup: FilterSetup | typeof PROBED_AS_ROOT): Promise<number> {
  if (setup === PROBED_AS_ROOT) return 0;
  try {
    return await runFilter(setup);
  } finally {
    await setup.cleanups.run();
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
