/**
 * The filter's once-a-second timer and its duties: the loop's own tick (lease expiry, learned names),
 * asking whether the VM's end closed or the host link was lost (each stops the loop), retrying port
 * forwards, and once a minute a summary of what was dropped.
 */
import type { SoftnetError } from "./errors.ts";
import type { FilterLoop } from "./filter-loop.ts";
import type { Logger } from "./log.ts";
import type { PortForwards } from "./port-forwards.ts";

const TICK_MS = 1000;
const DROP_SUMMARY_EVERY_TICKS = 60;

export interface FilterTimerDuties {
  loop: FilterLoop;
  logger: Logger;
  /** True when the VM's end is known to be closed. */
  vmEndClosed: () => boolean;
  /** Why the host link no longer reaches the host's network, if it does not. */
  hostLinkLost: () => SoftnetError | undefined;
  forwards: PortForwards | undefined;
}

/** Starts the timer; returns what stops it. */
export function startFilterTimer(duties: FilterTimerDuties): () => void {
  const { loop, logger, forwards } = duties;
  let ticks = 0;
  const timer = setInterval(() => {
    loop.tick();
    if (duties.vmEndClosed()) loop.stop({ kind: "vm-closed" });
    const lost = duties.hostLinkLost();
    if (lost !== undefined) loop.stop({ kind: "fatal", error: lost });
    void forwards?.reconcile(); // retries a failed update; a no-op when nothing changed
    if (++ticks % DROP_SUMMARY_EVERY_TICKS === 0) {
      const dropped: Record<string, number> = {};
      const summary = loop.dropSummary(dropped);
      if (summary !== "") logger.info(`dropped in the last minute: ${summary}`, "drop-summary", { dropped });
    }
  }, TICK_MS);
  return () => clearInterval(timer);
}
