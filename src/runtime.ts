/**
 * From parsed options to a running softnet: open the VM socket and the host link while still root,
 * drop privileges, then run the filter loop until SIGINT/SIGTERM or until the VM closes its end.
 * Returns the exit code; throws SoftnetError for anything fatal (main prints it).
 */
import type { SoftnetOptions } from "./cli.ts";
import { describeRules } from "./cli.ts";
import { SoftnetError, UsageError } from "./errors.ts";
import { FilterLoop, type StopCause } from "./filter-loop.ts";
import { Logger } from "./log.ts";
import { FrameBatch } from "./platform/link.ts";
import { Policy } from "./policy/policy.ts";
import { allowsEverything, RuleTable } from "./policy/rules.ts";
import { PortForwards } from "./port-forwards.ts";
import { formatIpv4, formatMac } from "./wire/bytes.ts";

/** Frames per receive call, per direction: enough to amortise a syscall, small enough to stay in cache. */
const BATCH_FRAMES = 64;
/** Frames handled per readiness event before yielding to timers, signals and the other direction. */
const DRAIN_BUDGET = 1024;
const TICK_MS = 1000;
const DROP_SUMMARY_EVERY_TICKS = 60;

export async function runSoftnet(options: SoftnetOptions): Promise<number> {
  const logger = new Logger(options.logLevel);
  if (process.platform === "linux") return runOnLinux(options, logger);
  throw new SoftnetError(`softnet does not run on ${process.platform} yet`, {
    hint: "the macOS runtime (vmnet.framework) is being built; Linux is supported",
  });
}

async function runOnLinux(options: SoftnetOptions, logger: Logger): Promise<number> {
  const { libc } = await import("./platform/libc.ts");
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
  const { dropPrivileges, hasSetupPrivileges, linuxIdentityCalls } = await import("./platform/privileges.ts");
  const { describeTarget, escalateWithSudo, resolveDropTarget } = await import("./platform/identity.ts");
  // Without root or CAP_NET_ADMIN: become root through passwordless sudo (this process is replaced).
  if (!hasSetupPrivileges()) throw escalateWithSudo(linuxIdentityCalls, process.argv.slice(2));
  const { Reactor } = await import("./platform/reactor.ts");
  const { epollReactorBackend } = await import("./platform/linux/epoll-reactor.ts");
  const nftables = await import("./platform/linux/nftables.ts");
  const { UnixPeerWatch } = await import("./platform/linux/peer-watch.ts");

  // Everything that needs root happens here, before a single frame is read.
  const target = resolveDropTarget(linuxIdentityCalls, options, process.env);
  const vm = new DatagramLink(options.vmFd, { optionName: "--vm-fd" });
  const cleanups: Array<() => void | Promise<void>> = [() => vm.close()];
  try {
    const isolate = !allowsEverything(options.rules);
    const host = openTapOnBridge({ bridge: options.bridge, isolate });
    cleanups.push(() => host.close());
    const nft = options.exposedPorts.length > 0 ? nftables.locateNft() : undefined;
    const forwardBackend =
      nft === undefined ? undefined : new nftables.NftablesPortForwards(nft, host.name, options.bridge);
    if (forwardBackend !== undefined) await forwardBackend.removeAll(); // leftovers of a crashed run
    const peerWatch = UnixPeerWatch.open(options.vmFd);
    if (typeof peerWatch === "string") {
      logger.debug(
        `cannot watch the VM end for closing (${peerWatch}); SIGINT or a failed send will stop softnet`,
      );
    } else {
      cleanups.push(() => peerWatch.close());
    }

    dropPrivileges(target, { keepNetAdmin: forwardBackend !== undefined });

    const policy = new Policy({
      vmMac: options.vmMac,
      gateway: host.gateway,
      rules: RuleTable.compile(options.rules, host.gateway),
    });
    const clock = () => performance.now();
    const slotSize = Math.max(host.maxFrameSize, 1518);
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
    });
    if (forwardBackend !== undefined) {
      forwards = new PortForwards(options.exposedPorts, forwardBackend, logger, () =>
        policy.lease.isValidAt(clock()) ? policy.lease.address : -1,
      );
      cleanups.push(() => forwards!.close());
    }

    const reactor = new Reactor(epollReactorBackend());
    cleanups.push(() => reactor.close());
    reactor.watch(vm.pollFd, () => loop.drainFromVm(DRAIN_BUDGET));
    reactor.watch(host.pollFd, () => loop.drainFromHost(DRAIN_BUDGET));

    let ticks = 0;
    const timer = setInterval(() => {
      loop.tick();
      if (typeof peerWatch !== "string" && peerWatch.peerState() === "gone") loop.stop({ kind: "vm-closed" });
      void forwards?.reconcile(); // retries a failed update; a no-op when nothing changed
      if (++ticks % DROP_SUMMARY_EVERY_TICKS === 0) {
        const summary = loop.dropSummary();
        if (summary !== "") logger.info(`dropped in the last minute: ${summary}`);
      }
    }, TICK_MS);
    cleanups.push(() => clearInterval(timer));
    const onSignal = (signal: NodeJS.Signals) => {
      logger.info(`${signal} received: stopping`);
      loop.stop({ kind: "signal", signal });
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);

    logger.info(
      `forwarding for VM ${formatMac(options.vmMac)} on fd ${options.vmFd} through ${host.description} ` +
        `(gateway ${formatIpv4(host.gateway)}/${host.prefixLength}, MTU ${host.mtu}, ` +
        `${isolate ? "isolated from other ports" : "not isolated: --allow 0.0.0.0/0"}); ` +
        `rules: ${describeRules(options.rules)}; running as ${describeTarget(target)}`,
    );

    const cause = await stopped;
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    const summary = loop.dropSummary();
    logger.info(
      `stopped (${cause.kind === "fatal" ? "failure" : cause.kind === "signal" ? cause.signal : "the VM closed its end"}): forwarded ${loop.forwardedToHost} frames to the host ` +
        `and ${loop.forwardedToVm} to the VM${summary === "" ? "" : `; dropped: ${summary}`}`,
    );
    if (cause.kind === "fatal") throw new SoftnetError("the filter loop failed", { cause: cause.error });
    return 0;
  } finally {
    // Undo in reverse order; a failing step must not keep the others from running.
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch (error) {
        logger.error(`cleanup failed: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
  }
}
