/** Chooses the host link for this platform and runs the filter loop until softnet must stop. */
import type { SoftnetOptions } from "./cli.ts";
import { SoftnetError } from "./errors.ts";

export async function runSoftnet(_options: SoftnetOptions): Promise<number> {
  throw new SoftnetError(`softnet cannot forward frames on ${process.platform} yet`, {
    hint: "the Linux runtime is being built (issue 3); the policy demo runs with `npm run demo`",
  });
}
