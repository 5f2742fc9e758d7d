// The soak's CI run (scripts/soak.ts; long runs are `sudo bun scripts/soak.ts --minutes 30`): two
// minutes of softnet with a real guest under allowed, blocked and spoofed load, a lease renewal
// each minute. A leak check, not a timing: it fails when softnet's RSS grows by 5 % or more after
// the first minute, when its open fds grow, when the guest loses its lease, when allowed traffic
// stops passing or blocked traffic gets through, or when softnet does not exit 0 on SIGINT.
// (The 2-minute run has no lease expiry: that takes three minutes of its own; runs of 5 minutes
// and more include one.)
import { expect, test } from "bun:test";
import { runSoak } from "../../scripts/soak.ts";

test(
  "2 minutes of mixed load: RSS growth under 5 % after minute 1, fds flat, no lease lost",
  async () => {
    const report = await runSoak({ minutes: 2 });
    expect(report.failures).toEqual([]);
    expect(report.minutes.map((row) => row.minute)).toEqual([1, 2]);
    expect(report.minutes.every((row) => row.probes.length === 0)).toBe(true);
    expect(report.rssGrowthPercent).toBeLessThan(5);
    expect(report.fdGrowth).toBeLessThanOrEqual(0);
    expect(report.renewals).toBeGreaterThanOrEqual(1);
    expect(report.exitStatus).toBe(0);
  },
  5 * 60_000,
);
