/**
 * Linux: from parsed options to a FilterSetup (filter-setup.ts). While still root it opens only
 * what the host link needs: the VM socket, a TAP port on the bridge, the watches on both, the
 * exposed ports held; then it drops privileges (privileges.ts) and compiles the reactor as the
 * user softnet now is. runtime.ts runs the filter on what this returns.
 */
import type { SoftnetOptions } from "../../cli.ts";
import { SoftnetError, UsageError } from "../../errors.ts";
import { Cleanups, type FilterSetup, loadFilterModules, PROBED_AS_ROOT } from "../../filter-setup.ts";
import type { Logger } from "../../log.ts";
import { allowsEverything } from "../../policy/rules.ts";
import { checkExposedPortsAllowed } from "../../port-forwards.ts";
import { enableErrorReports } from "../../sentry.ts";
import type { BridgePortWatch } from "./port-watch.ts";

export async function setUpLinux(
  options: SoftnetOptions,
  logger: Logger,
): Promise<FilterSetup | typeof PROBED_AS_ROOT> {
  const { libc } = await import("./libc.ts");
  if (options.sudoEscalationProbing) {
    if (libc.geteuid() === 0) return PROBED_AS_ROOT;
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

  const { DatagramLink } = await import("./datagram-link.ts");
  const { openTapOnBridge } = await import("./tap.ts");
  const { dropPrivileges, hasSetupPrivileges, linuxIdentityCalls } = await import("./privileges.ts");
  const { decideCallerOnce, describeTarget, escalateWithSudo, resolveDropTarget } = await import(
    "../identity.ts"
  );
  const caller = decideCallerOnce(linuxIdentityCalls);
  // Without root or CAP_NET_ADMIN: become root through passwordless sudo (this process is replaced).
  if (!hasSetupPrivileges()) {
    throw escalateWithSudo(linuxIdentityCalls, process.argv.slice(2), (line) => logger.warn(line));
  }
  // A caller who is not root may use only the bridges root lists in /etc/softnet/bridge.conf, and
  // at most as many VMs at once as it allows them there.
  const { enforceBridgeAcl } = await import("./bridge-acl-file.ts");
  const vmCap = enforceBridgeAcl(options.bridge, caller);
  const { epollReactorBackend, prepareEpollReactorSource } = await import("./epoll-reactor.ts");
  const nftables = await import("./nftables.ts");
  const { UnixPeerWatch } = await import("./peer-watch.ts");
  const { BridgePortWatch } = await import("./port-watch.ts");

  // As root, only what opening the host link needs, before a single frame is read: no compiler
  // (Bun's cc writes header files into /tmp as whoever runs it), no subprocess (nft), no Sentry.
  const target = resolveDropTarget(linuxIdentityCalls, caller, options);
  checkExposedPortsAllowed(options.exposedPorts, caller.kind === "root");
  // The exposed host ports, held until exit (port-hold.ts); taken first, so a port that is in use
  // is refused before anything exists that would have to be undone.
  const { holdExposedPorts } = await import("./port-hold.ts");
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
    // The ring, like the reactor, is made as the caller: io_uring is theirs to use or not (a
    // kernel that refuses it to them leaves one write() per frame, which works the same).
    logger.debug(`frames to ${host.name} are written with ${host.batchWrites()}`);
    // nft refuses to run with a real uid that differs from the effective one (setuid): after the
    // drop both are the caller's, and CAP_NET_ADMIN rides along in the ambient set.
    if (forwardBackend !== undefined) {
      // Ending the nft session is what deletes its owned table: after the forwards' own removal.
      cleanups.add(() => forwardBackend.close());
      await forwardBackend.open(); // starts nft; removes what an older softnet may have left
    }

    return {
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
    };
  } catch (error) {
    await cleanups.run();
    throw error;
  }
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
