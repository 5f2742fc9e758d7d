// "The forwarder": whatever sits between a guest's socketpair end and the bridge. softnet in the
// real tests; a transparent socat relay to prove the harness itself (and to show that what softnet
// drops would otherwise have got through).
import { resolve } from "node:path";
import { inNamespace } from "./netns.ts";
import { check, Daemon, waitFor } from "./proc.ts";

/** What a forwarder is started with. Its socketpair end becomes its stdin (fd 0). */
export interface ForwarderContext {
  /** Namespace holding the bridge (the "host"). */
  hostNamespace: string;
  bridge: string;
  /** The guest's MAC address (what --vm-mac-address gets). */
  vmMac: string;
  /** 1, 2, ...: a per-topology guest number, for naming things after the guest. */
  guestIndex: number;
  /** The forwarder's socketpair end; closed in the test process once start() returns. */
  hostEnd: number;
}

export interface ForwarderSpec {
  readonly description: string;
  /** Starts the forwarder and resolves once frames can flow between the guest and the bridge. */
  start(context: ForwarderContext): Promise<Forwarder>;
}

export class Forwarder {
  constructor(
    readonly daemon: Daemon,
    /** The forwarder's port on the bridge (a TAP in the host namespace). */
    readonly bridgePort: string,
    private readonly defaultStopSignal: NodeJS.Signals,
    private readonly afterStop: () => Promise<void> = async () => {},
  ) {}

  get running(): boolean {
    return this.daemon.running;
  }

  /** Resolves with the exit status once the forwarder exits by itself (128 + n for signal n). */
  get exited(): Promise<number> {
    return this.daemon.exited;
  }

  get log(): string {
    return this.daemon.log;
  }

  /** Signals the forwarder, waits for it (SIGKILL after graceMs) and returns its exit status. */
  async stop(signal: NodeJS.Signals = this.defaultStopSignal, graceMs = 3_000): Promise<number> {
    const status = await this.daemon.stop(signal, graceMs);
    await this.afterStop();
    return status;
  }
}

interface LinkInfo {
  ifname: string;
  flags: string[];
  master?: string;
}

async function bridgePortsWithCarrier(namespace: string, bridge: string): Promise<LinkInfo[]> {
  const links = JSON.parse(await check(["ip", "-n", namespace, "-j", "link", "show", "master", bridge]));
  return (links as LinkInfo[]).filter((link) => link.flags.includes("LOWER_UP"));
}

async function linkHasCarrier(namespace: string, name: string): Promise<boolean> {
  const [link] = JSON.parse(
    await check(["ip", "-n", namespace, "-j", "link", "show", "dev", name]),
  ) as LinkInfo[];
  return link?.flags.includes("LOWER_UP") ?? false;
}

/**
 * A transparent relay: socat copies frames between the socketpair and a TAP on the bridge.
 * The TAP is created persistent and enslaved *before* socat attaches to it, so there is no race
 * between socat creating the device and `ip link set master`: carrier (LOWER_UP) on the port is
 * the sign that socat holds it and frames flow.
 */
export function transparentRelay(): ForwarderSpec {
  return {
    description: "transparent socat relay",
    async start(context) {
      const { hostNamespace: namespace, bridge } = context;
      const port = `relay${context.guestIndex}`;
      await check(["ip", "-n", namespace, "tuntap", "add", "dev", port, "mode", "tap"]);
      await check(["ip", "-n", namespace, "link", "set", port, "master", bridge, "up"]);
      const daemon = new Daemon(
        `relay for guest ${context.guestIndex}`,
        inNamespace(namespace, ["socat", `TUN,tun-type=tap,tun-name=${port},iff-no-pi`, "FD:0"]),
        { stdinFd: context.hostEnd },
      );
      const removePort = async () => {
        await check(["ip", "-n", namespace, "link", "del", port]).catch(() => {});
      };
      try {
        await waitFor(`carrier on ${port}`, async () => {
          if (!daemon.running) throw new Error(`socat exited ${daemon.exitCode}: ${daemon.log}`);
          return linkHasCarrier(namespace, port);
        });
      } catch (error) {
        await daemon.stop("SIGKILL");
        await removePort();
        throw error;
      }
      return new Forwarder(daemon, port, "SIGTERM", removePort);
    },
  };
}

const REPOSITORY_ROOT = resolve(import.meta.dir, "../../..");

/**
 * Any forwarder that creates its own port on the bridge, given as the argv to run in the host
 * namespace with the socketpair end as stdin. Ready when a new bridge port with carrier appears.
 */
export function commandForwarder(
  description: string,
  argv: (context: ForwarderContext) => string[],
  options: { stopSignal?: NodeJS.Signals; cwd?: string; readyTimeoutMs?: number } = {},
): ForwarderSpec {
  return {
    description,
    async start(context) {
      const { hostNamespace: namespace, bridge } = context;
      const before = new Set((await bridgePortsWithCarrier(namespace, bridge)).map((link) => link.ifname));
      const daemon = new Daemon(description, inNamespace(namespace, argv(context)), {
        stdinFd: context.hostEnd,
        cwd: options.cwd ?? REPOSITORY_ROOT,
      });
      let port: string;
      try {
        port = await waitFor(
          `${description} to add a port with carrier to ${bridge}`,
          async () => {
            if (!daemon.running) throw new Error(`it exited ${daemon.exitCode}: ${daemon.log}`);
            const ports = await bridgePortsWithCarrier(namespace, bridge);
            return ports.find((link) => !before.has(link.ifname))?.ifname;
          },
          { timeoutMs: options.readyTimeoutMs ?? 15_000 },
        );
      } catch (error) {
        await daemon.stop("SIGKILL");
        throw error;
      }
      return new Forwarder(daemon, port, options.stopSignal ?? "SIGINT");
    },
  };
}

/**
 * softnet itself, as Tart runs it (--vm-fd 0, the socketpair end on stdin), from the source tree
 * with the Bun running the tests. extraArgs: --allow, --block, --expose, --log-level, ...
 * Stopped with SIGINT, as Tart stops it.
 */
export function softnet(
  extraArgs: string[] = [],
  options: { description?: string; wrap?: (argv: string[]) => string[] } = {},
): ForwarderSpec {
  const wrap = options.wrap ?? ((argv: string[]) => argv);
  return commandForwarder(options.description ?? `softnet ${extraArgs.join(" ")}`.trim(), (context) =>
    wrap([
      process.execPath,
      "src/main.ts",
      "--vm-fd",
      "0",
      "--vm-mac-address",
      context.vmMac,
      "--bridge",
      context.bridge,
      ...extraArgs,
    ]),
  );
}
