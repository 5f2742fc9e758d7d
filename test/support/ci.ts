/**
 * Tests that need root, a kernel feature or a tool skip themselves on a machine that lacks it, so a
 * developer can run the rest anywhere. In CI nothing may be skipped for that reason: a missing
 * install step must turn CI red, not quietly shrink the suite.
 */
export const REQUIRED_IN_CI = process.env.CI === "true";
