/**
 * Keeps the host's port forwards (--expose) in line with the VM's lease: installed once the VM
 * holds a valid lease, moved when its address changes, removed when the lease expires or is
 * refused, and on exit. The platform does the installing (nftables on Linux, vmnet on macOS);
 * this module only decides what should exist. Changes are serialised: a reconcile that arrives
 * while another runs is folded into one more pass afterwards.
 */
import type { ExposedPort } from "./cli.ts";
import { describeError, SoftnetError } from "./errors.ts";
import type { Logger } from "./log.ts";
import { formatIpv4 } from "./wire/bytes.ts";

/** Host ports below this are the host's own services' (ssh, http, ...): only root may expose them. */
export const FIRST_UNPRIVILEGED_PORT = 1024;

/**
 * Refuses an --expose list that takes a privileged host port when softnet was started by someone
 * other than root (setuid, or sudo by a user): `--expose 22:22` would DNAT the host's own ssh port,
 * on every address, to that user's VM.
 */
export function checkExposedPortsAllowed(ports: readonly ExposedPort[], startedByRoot: boolean): void {
  if (startedByRoot) return;
  const privileged = ports.find((port) => port.externalPort < FIRST_UNPRIVILEGED_PORT);
  if (privileged === undefined) return;
  throw new SoftnetError(
    `--expose ${privileged.externalPort}:${privileged.internalPort}: only root may expose a host port below ${FIRST_UNPRIVILEGED_PORT}`,
    {
      hint: `ports below ${FIRST_UNPRIVILEGED_PORT} belong to the host's own services; pick a port from ${FIRST_UNPRIVILEGED_PORT} up, e.g. --expose 2222:${privileged.internalPort}`,
    },
  );
}

export interface PortForwardBackend {
  /** Forwards TCP `externalPort` on the host to `address:internalPort`, for every exposed port. */
  install(ports: readonly ExposedPort[], address: number): Promise<void>;
  /** Removes every forward this softnet installed. Safe to call when none are installed. */
  removeAll(): Promise<void>;
  /**
   * False when the installed forwards vanished without removeAll() (Linux: the nft session that
   * owned them ended), so the next reconcile installs them again. Absent: they never vanish.
   */
  intact?(): boolean;
}

/**
 * A failure that persists (nft broken, the kernel refusing) is retried on every reconcile, which
 * the runtime asks for once a second; it is logged when it first happens or changes, then only
 * every this many failed attempts in a row (about once a minute), so the log says it still fails
 * without a line a second.
 */
const FAILED_ATTEMPTS_PER_LOG = 60;

export class PortForwards {
  /** The address the forwards currently point to, or -1 when none are installed. */
  private installedFor = -1;
  private running: Promise<void> | undefined;
  private again = false;
  private closed = false;
  private failedAttempts = 0;
  private lastFailureLogged = "";

  constructor(
    private readonly ports: readonly ExposedPort[],
    private readonly backend: PortForwardBackend,
    private readonly logger: Logger,
    /** Where the forwards should point now: the leased address, or -1 without a valid lease. */
    private readonly desiredAddress: () => number,
  ) {}

  get installedAddress(): number {
    return this.installedFor;
  }

  /** Brings the installed forwards in line with desiredAddress(); resolves when they are. */
  reconcile(): Promise<void> {
    if (this.ports.length === 0 || this.closed) return Promise.resolve();
    if (this.running !== undefined) {
      this.again = true;
      return this.running;
    }
    this.running = this.loop().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /** Removes everything and refuses further changes (used at exit). */
  async close(): Promise<void> {
    this.closed = true;
    await this.running?.catch(() => {});
    if (this.installedFor !== -1) {
      const address = this.installedFor;
      this.installedFor = -1;
      await this.backend.removeAll();
      this.logger.info(`port forwards to ${formatIpv4(address)} removed`, "forwards-removed", {
        address: formatIpv4(address),
        reason: "exit",
      });
    }
  }

  /** For the line that reports success: how many attempts failed before it (and resets the count). */
  private afterFailures(): { count: number; text: string } {
    const count = this.failedAttempts;
    this.failedAttempts = 0;
    this.lastFailureLogged = "";
    return { count, text: count === 0 ? "" : ` (after ${count} failed attempt${count === 1 ? "" : "s"})` };
  }

  private async loop(): Promise<void> {
    do {
      this.again = false;
      const desired = this.desiredAddress();
      if (this.installedFor !== -1 && this.backend.intact?.() === false) {
        this.logger.warn(
          `port forwards to ${formatIpv4(this.installedFor)} vanished (their owner ended); installing them again`,
          "forwards-lost",
          { address: formatIpv4(this.installedFor) },
        );
        this.installedFor = -1;
      }
      if (desired === this.installedFor) continue;
      const list = this.ports.map((p) => `${p.externalPort}→${p.internalPort}`).join(", ");
      try {
        if (desired === -1) {
          await this.backend.removeAll();
          const failed = this.afterFailures();
          this.logger.info(
            `port forwards removed (${list}): the VM has no valid lease${failed.text}`,
            "forwards-removed",
            {
              ports: list,
              reason: "no-lease",
              failed_attempts: failed.count,
            },
          );
        } else {
          await this.backend.install(this.ports, desired);
          const failed = this.afterFailures();
          this.logger.info(
            `port forwards installed: TCP ${list} to ${formatIpv4(desired)}${failed.text}`,
            "forwards-installed",
            {
              ports: list,
              address: formatIpv4(desired),
              failed_attempts: failed.count,
            },
          );
        }
        this.installedFor = desired;
      } catch (error) {
        // Not fatal: the VM keeps its network; the next lease change or tick tries again.
        const why = describeError(error);
        this.failedAttempts++;
        if (why !== this.lastFailureLogged || this.failedAttempts % FAILED_ATTEMPTS_PER_LOG === 0) {
          this.lastFailureLogged = why;
          const attempts =
            this.failedAttempts === 1 ? "" : ` (${this.failedAttempts} failed attempts so far)`;
          this.logger.warn(
            `could not update port forwards (${list}): ${why}; will retry${attempts}`,
            "forwards-failed",
            {
              ports: list,
              error: why,
              failed_attempts: this.failedAttempts,
            },
          );
        }
        return;
      }
    } while (this.again && !this.closed);
  }
}
