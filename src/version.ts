/**
 * Build identity. Release builds replace these with `--define` (scripts/build.ts); a source checkout
 * reports the package version and "dev".
 */
import packageJson from "../package.json" with { type: "json" };

declare const SOFTNET_VERSION: string | undefined;
declare const SOFTNET_COMMIT: string | undefined;

export const VERSION: string = typeof SOFTNET_VERSION === "string" ? SOFTNET_VERSION : packageJson.version;
export const COMMIT: string = typeof SOFTNET_COMMIT === "string" ? SOFTNET_COMMIT : "dev";
