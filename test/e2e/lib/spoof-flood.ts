// Builds and starts spoof-flood.c (a hostile VM writing forged frames into its end of the
// socketpair as fast as softnet takes them). Compiled once per test process with the system cc.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { check, Daemon } from "./proc.ts";

let compiled: Promise<string> | undefined;

function floodBinary(): Promise<string> {
  compiled ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), "softnet-spoof-flood-"));
    const binary = join(dir, "spoof-flood");
    await check(["cc", "-O2", "-Wall", "-Werror", "-o", binary, join(import.meta.dir, "spoof-flood.c")]);
    return binary;
  })();
  return compiled;
}

export interface FloodResult {
  sent: number;
  seconds: number;
  stoppedBy: "count" | "signal" | "peer-gone";
}

/** A running flood: stop it with SIGTERM (result printed) or SIGKILL (the VM dies mid-burst). */
export class SpoofFlood {
  private constructor(readonly daemon: Daemon) {}

  /** Starts writing `frames` forged frames (0: until stopped) into vmEnd, as the VM `vmMac`. */
  static async start(vmEnd: number, vmMac: string, frames: number): Promise<SpoofFlood> {
    const binary = await floodBinary();
    return new SpoofFlood(
      new Daemon(`spoof flood (${frames || "unbounded"})`, [binary, String(frames), vmMac], {
        extraFds: [vmEnd],
      }),
    );
  }

  /** Resolves with what it sent once it stops by itself (count reached, softnet gone) or is stopped. */
  async result(): Promise<FloodResult> {
    const code = await this.daemon.exited;
    const line = this.daemon.log.split("\n").find((text) => text.startsWith("{"));
    if (code !== 0 || line === undefined) throw new Error(`spoof-flood exited ${code}: ${this.daemon.log}`);
    return JSON.parse(line) as FloodResult;
  }
}
