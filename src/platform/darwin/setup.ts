/**
 * macOS: from parsed options to a FilterSetup (filter-setup.ts). As root: the VM socket, the exposed
 * ports checked, bootpd's lease time, vmnet started with its callbacks (compiled as the user softnet
 * drops to); then it becomes that user for good. runtime.ts runs the filter on what this returns.
 */
import type { SoftnetOptions } from "../../cli.ts";
import { SoftnetError } from "../../errors.ts";
import { Cleanups, type FilterSetup, loadFilterModules, PROBED_AS_ROOT } from "../../filter-setup.ts";
import type { Logger } from "../../log.ts";
import { allowsEverything } from "../../policy/rules.ts";
import { checkExposedPortsAllowed } from "../../port-forwards.ts";
import { enableErrorReports } from "../../sentry.ts";
import type { DarwinPlatform } from "./system.ts";

/**
 * macOS: vmnet.framework in shared (nat) or host mode. `platform` names the libraries; a release
 * build always passes the constant macOS paths, tests pass the vmnet double.
 */
export async function setUpDarwin(
  options: SoftnetOptions,
  logger: Logger,
  platform: DarwinPlatform,
): Promise<FilterSetup | typeof PROBED_AS_ROOT> {
  const { openDarwinSystem } = await import("./system.ts");
  const { darwinIdentityCalls } = await import("./identity.ts");
  const { asTargetUser, becomeUser, decideCallerOnce, describeTarget, escalateWithSudo, resolveDropTarget } =
    await import("../identity.ts");
  const system = openDarwinSystem(platform.libraries);
  const calls = darwinIdentityCalls(system);
  if (options.sudoEscalationProbing) {
    if (calls.geteuid() === 0) return PROBED_AS_ROOT;
    throw new SoftnetError("not running as root");
  }
  const caller = decideCallerOnce(calls);
  if (calls.geteuid() !== 0) {
    throw escalateWithSudo(calls, process.argv.slice(2), (line) => logger.warn(line));
  }

  const { DarwinDatagramLink } = await import("./datagram-link.ts");
  const { openVmnet } = await import("./vmnet.ts");
  const { pollReactorBackend, preparePollReactorSource } = await import("./poll-reactor.ts");

  const target = resolveDropTarget(calls, caller, options);
  checkExposedPortsAllowed(options.exposedPorts, caller.kind === "root");
  // A port in use on the Mac is refused before vmnet is asked for anything (port-check.ts: checked
  // and released, not held as on Linux).
  const { checkExposedPortsFree } = await import("./port-check.ts");
  checkExposedPortsFree(system, options.exposedPorts);
  if (platform.configureBootpd) {
    // bootpd reads its lease time when the shared network starts: before vmnet_start_interface.
    const { openBootpdSymbols, setBootpdLeaseTime } = await import("./bootpd.ts");
    const warning = setBootpdLeaseTime(options.bootpdLeaseTimeSeconds, openBootpdSymbols(system));
    if (warning !== undefined) logger.warn(`bootpd lease time not set: ${warning}`);
  }
  // vmnet needs its callbacks (native code) before it starts, and it starts only as root; the
  // compiler must not run as root, so it runs now as the user softnet will drop to. Both C sources
  // are read first, as root, into descriptors the caller can neither reach nor write (runtime-c.ts):
  // the blocks run as root, the reactor in the process that holds vmnet.
  const { nativeBlocks, prepareBlocksSource } = await import("./blocks.ts");
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

    return {
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
    };
  } catch (error) {
    await cleanups.run();
    throw error;
  }
}
