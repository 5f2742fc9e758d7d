/**
 * The binaries the start-up benchmark runs: softnet's release build for this machine's CPU (what
 * `npm run build` ships) and Bun's floor, a one-line hello world compiled exactly as the release
 * (the same hardened runtime, the same `bun build` arguments: scripts/build.ts releaseCompileArgs).
 *
 * Both live in node_modules/.cache/softnet-bench/ and are rebuilt only when what they are built
 * from changed (a fingerprint of src/, the build scripts, package.json, the lock and Bun's
 * version), so a second benchmark run does not pay the build again. `--release PATH` in bench.ts
 * measures a given binary instead.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { releaseCompileArgs } from "../build.ts";
import { hardenedRuntime, ROOT, TARGETS, type Target } from "../release/runtimes.ts";

export const BENCH_CACHE = join(ROOT, "node_modules/.cache/softnet-bench");

/** What the release build depends on: every file under these, hashed with its path. */
const INPUTS = [
  "src",
  "scripts/build.ts",
  "scripts/release",
  "package.json",
  "package-lock.json",
  "bunfig.toml",
  "tsconfig.json",
];

function thisMachinesTarget(): Target {
  const name = process.arch === "arm64" ? "linux-arm64" : "linux-x64";
  const target = TARGETS.find((candidate) => candidate.name === name);
  if (process.platform !== "linux" || target === undefined) {
    throw new Error(`no release target for ${process.platform}/${process.arch}`);
  }
  return target;
}

function fingerprint(extra: string): string {
  const hash = createHash("sha256").update(`${Bun.version}\n${extra}\n`);
  const add = (path: string) => {
    const absolute = join(ROOT, path);
    if (!existsSync(absolute)) return;
    const entries = readdirSyncSafe(absolute);
    if (entries === undefined) {
      hash.update(`${path}\n`).update(readFileSync(absolute));
      return;
    }
    for (const entry of entries.sort()) add(join(path, entry));
  };
  for (const input of INPUTS) add(input);
  return hash.digest("hex");
}

function readdirSyncSafe(path: string): string[] | undefined {
  try {
    return readdirSync(path);
  } catch {
    return undefined; // a file
  }
}

async function run(argv: string[], what: string): Promise<void> {
  const child = Bun.spawn(argv, { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  const [code, stdout, stderr] = await Promise.all([
    child.exited,
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
  ]);
  if (code !== 0) throw new Error(`${what} failed (exit ${code}):\n${stdout}${stderr}`.trim());
}

export interface StartupBinaries {
  /** The release binary (dist/softnet-linux-<arch> as `npm run build` makes it). */
  release: string;
  /** A one-line hello world on the same hardened runtime with the same compile arguments. */
  floor: string;
  /** What had to be built in this run (empty when the cache was current). */
  built: string[];
}

/** Builds (when stale) and returns the release binary and Bun's floor for this machine. */
export async function startupBinaries(
  say: (line: string) => void,
  release?: string,
): Promise<StartupBinaries> {
  const target = thisMachinesTarget();
  mkdirSync(BENCH_CACHE, { recursive: true });
  const built: string[] = [];

  let releasePath = release;
  if (releasePath === undefined) {
    const dist = join(BENCH_CACHE, "dist");
    const stamp = join(dist, "fingerprint");
    const wanted = fingerprint(target.name);
    releasePath = join(dist, `softnet-${target.name}`);
    if (!existsSync(releasePath) || !existsSync(stamp) || readFileSync(stamp, "utf8") !== wanted) {
      say(
        `building the release binary (scripts/build.ts --targets ${target.name}) into ${relative(ROOT, dist)}`,
      );
      rmSync(dist, { recursive: true, force: true });
      await run(
        [process.execPath, join(ROOT, "scripts/build.ts"), "--targets", target.name, "--out", dist],
        "scripts/build.ts",
      );
      writeFileSync(stamp, wanted);
      built.push("release");
    }
  }

  const runtime = hardenedRuntime(target).path;
  const floorDir = join(BENCH_CACHE, "floor");
  const entry = join(floorDir, "hello.ts");
  const floor = join(floorDir, `hello-${target.name}`);
  const argv = releaseCompileArgs({
    target,
    runtime,
    identity: { version: "0.0.0", commit: "floor" },
    entry,
    outfile: floor,
  });
  const floorStamp = join(floorDir, "fingerprint");
  const floorWanted = createHash("sha256")
    .update(`${Bun.version}\n${argv.join("\n")}\n`)
    .digest("hex");
  if (!existsSync(floor) || !existsSync(floorStamp) || readFileSync(floorStamp, "utf8") !== floorWanted) {
    say("compiling Bun's floor: a one-line hello world, with the release's runtime and arguments");
    rmSync(floorDir, { recursive: true, force: true });
    mkdirSync(floorDir, { recursive: true });
    writeFileSync(entry, 'console.log("hello");\n');
    await run(argv, "compiling the hello world");
    writeFileSync(floorStamp, floorWanted);
    built.push("floor");
  }
  return { release: releasePath, floor, built };
}
