/**
 * The official Bun runtime executables that the release is compiled onto, one per target, taken
 * from the npm packages Bun publishes them in (@oven/bun-<os>-<arch>), at exactly the version and
 * integrity that package-lock.json pins for the `bun` devDependency. Fetched with `npm pack`
 * (npm's own cache makes later builds offline), checked against the lock's sha512, and unpacked
 * into node_modules/.cache/softnet-release/. Nothing else is downloaded: every compile passes
 * --compile-executable-path, so `bun build` never fetches a runtime itself.
 */
import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type HardeningReport, hardenRuntime } from "./harden-runtime.ts";

export const ROOT = join(import.meta.dir, "../..");
export const CACHE_DIR = join(ROOT, "node_modules/.cache/softnet-release");

export interface Target {
  /** Our name: dist/softnet-<name>. */
  name: "linux-x64" | "linux-arm64" | "darwin-arm64" | "darwin-x64";
  /** bun build --target. */
  bunTarget: string;
  /** The npm package holding the runtime. */
  npmPackage: string;
  os: "linux" | "darwin";
  /**
   * Who signs a darwin artifact: Bun signs darwin-arm64 after compiling (ad hoc, verified here);
   * Bun 1.4.5 leaves the runtime's stale Developer ID signature on darwin-x64 (measured: wrong code
   * limit and page hashes, which macOS refuses), so softnet signs that one ad hoc itself.
   */
  signer?: "bun" | "softnet";
}

export const TARGETS: Target[] = [
  { name: "linux-x64", bunTarget: "bun-linux-x64", npmPackage: "@oven/bun-linux-x64", os: "linux" },
  { name: "linux-arm64", bunTarget: "bun-linux-arm64", npmPackage: "@oven/bun-linux-aarch64", os: "linux" },
  {
    name: "darwin-arm64",
    bunTarget: "bun-darwin-arm64",
    npmPackage: "@oven/bun-darwin-aarch64",
    os: "darwin",
    signer: "bun",
  },
  {
    name: "darwin-x64",
    bunTarget: "bun-darwin-x64",
    npmPackage: "@oven/bun-darwin-x64",
    os: "darwin",
    signer: "softnet",
  },
];

interface LockEntry {
  version: string;
  integrity: string;
}

/** The version and integrity package-lock.json pins for a package. */
export function lockedPackage(name: string): LockEntry {
  const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8"));
  const entry = lock.packages?.[`node_modules/${name}`];
  if (!entry?.version || !entry?.integrity) {
    throw new Error(`package-lock.json pins no version/integrity for ${name} (is bun a devDependency?)`);
  }
  const bun = lock.packages?.["node_modules/bun"];
  if (bun?.version !== entry.version)
    throw new Error(`${name}@${entry.version} does not match bun@${bun?.version}`);
  return { version: entry.version, integrity: entry.integrity };
}

function integrityOf(bytes: Uint8Array): string {
  return `sha512-${createHash("sha512").update(bytes).digest("base64")}`;
}

/**
 * The path of the verified, unpacked official runtime for `target` (fetching it on first use).
 * Throws when the tarball's integrity differs from the lock.
 */
export function officialRuntime(target: Target): { path: string; version: string } {
  const { version, integrity } = lockedPackage(target.npmPackage);
  const dir = join(CACHE_DIR, `${target.npmPackage.replace("/", "+")}-${version}`);
  const runtime = join(dir, "bun");
  const stamp = join(dir, "integrity");
  if (existsSync(runtime) && existsSync(stamp) && readFileSync(stamp, "utf8") === integrity) {
    return { path: runtime, version };
  }
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const pack = Bun.spawnSync(
    ["npm", "pack", "--silent", "--pack-destination", dir, `${target.npmPackage}@${version}`],
    { stdout: "pipe", stderr: "pipe", cwd: dir },
  );
  if (pack.exitCode !== 0) {
    throw new Error(`npm pack ${target.npmPackage}@${version} failed: ${pack.stderr.toString().trim()}`);
  }
  const tarball = join(dir, pack.stdout.toString().trim().split("\n").pop()!);
  const actual = integrityOf(readFileSync(tarball));
  if (actual !== integrity) {
    throw new Error(`${target.npmPackage}@${version}: integrity ${actual} is not the lock's ${integrity}`);
  }
  const unpack = Bun.spawnSync(["tar", "-xzf", tarball, "-C", dir, "package/bin/bun"], { stderr: "pipe" });
  if (unpack.exitCode !== 0) throw new Error(`cannot unpack ${tarball}: ${unpack.stderr.toString()}`);
  renameSync(join(dir, "package/bin/bun"), runtime);
  rmSync(join(dir, "package"), { recursive: true, force: true });
  rmSync(tarball, { force: true });
  writeFileSync(stamp, integrity);
  return { path: runtime, version };
}

/**
 * The hardened copy of a target's official runtime (harden-runtime.ts), cached beside it under a
 * name that changes with the runtime and the scrubber's bytes.
 */
export function hardenedRuntime(target: Target): { path: string; version: string; report: HardeningReport } {
  const official = officialRuntime(target);
  const bytes = new Uint8Array(readFileSync(official.path));
  const report = hardenRuntime(bytes);
  const key = createHash("sha256").update(bytes).digest("hex").slice(0, 16);
  const path = join(CACHE_DIR, `hardened-${target.name}-${official.version}-${key}`);
  if (!existsSync(path)) {
    writeFileSync(`${path}.partial`, bytes);
    chmodSync(`${path}.partial`, 0o755);
    renameSync(`${path}.partial`, path);
  }
  return { path, version: official.version, report };
}
