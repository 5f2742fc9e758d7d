// A short run of the frame fuzzer (scripts/fuzz.ts; the 10-million-frame run is a script, its
// figures are in the closing notes): random and mutated frames through both decisions, DHCP
// snooping and the log description never throw and never write outside the frame.
import { describe, expect, test } from "bun:test";
import { runFuzz } from "../../scripts/fuzz.ts";
import { isPass, type ReasonCode } from "../../src/policy/reasons.ts";

const distinct = (counts: Float64Array) => counts.filter((count) => count > 0).length;

describe("the frame fuzzer, a short run", () => {
  for (const seed of [1, 0xdecafbad, Date.now() >>> 0]) {
    test(`300 000 frames, seed ${seed}: no exception, no write outside a frame`, () => {
      const result = runFuzz({ frames: 300_000, seed });
      expect(result.failures).toEqual([]);
      expect(result.exceptions).toBe(0);
      expect(result.outOfBoundsWrites).toBe(0);
      expect(result.outOfBoundsReads).toBe(0);
      // It really fuzzed the policy, not one early return: most reasons were reached, passes and drops.
      expect(distinct(result.fromVm)).toBeGreaterThanOrEqual(16);
      expect(distinct(result.fromHost)).toBeGreaterThanOrEqual(3);
      const passed = [...result.fromVm.entries()].filter(
        ([reason, count]) => count > 0 && isPass(reason as ReasonCode),
      );
      expect(passed.length).toBeGreaterThanOrEqual(4);
      expect(result.describeCalls).toBeGreaterThan(10_000);
    });
  }
});
