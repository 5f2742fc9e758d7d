/**
 * What a platform's set-up (platform/linux/setup.ts, platform/darwin/setup.ts) hands to the filter
 * (runtime.ts runFilter): the links, the reactor backend, what to poll once a second, the undo
 * steps, and the modules loaded before the privilege drop.
 */
import type { SoftnetOptions } from "./cli.ts";
import type { SoftnetError } from "./errors.ts";
import type { Logger } from "./log.ts";
import type { FrameLink, HostLink } from "./platform/link.ts";
import type { ReactorBackend } from "./platform/reactor.ts";
import type { PortForwardBackend } from "./port-forwards.ts";

/**
 * The set-up is done as far as it goes: --sudo-escalation-probing found this process running as
 * root, so it exits 0 without opening anything.
 */
export const PROBED_AS_ROOT = "probed-as-root";

/** Undo steps, run in reverse order; a failing step must not keep the others from running. */
export class Cleanups {
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

export interface FilterSetup {
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
export interface FilterModules {
  Reactor: typeof import("./platform/reactor.ts").Reactor;
  /** Only with --capture, so a start without it does not pay for the capture code. */
  openCapture: typeof import("./capture/capture.ts").openCapture | undefined;
}

export async function loadFilterModules(options: SoftnetOptions): Promise<FilterModules> {
  const { Reactor } = await import("./platform/reactor.ts");
  const openCapture =
    options.capture === undefined ? undefined : (await import("./capture/capture.ts")).openCapture;
  return { Reactor, openCapture };
}
