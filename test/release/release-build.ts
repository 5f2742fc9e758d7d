/**
 * One release build per test process, shared by the test/release suites: `bun scripts/build.ts`
 * into node_modules/.cache/softnet-release/test-dist (all targets, about 40 s; replaced by every
 * run, so it never piles up; the official runtimes come from npm's cache after the first time).
 * SOFTNET_RELEASE_DIST=dir tests a prebuilt dist/ instead (e.g. after `npm run build`).
 */
import { existsSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { CACHE_DIR, officialRuntime, TARGETS } from "../../scripts/release/runtimes.ts";

export const ROOT = resolve(import.meta.dir, "../..");
export const canRunLinuxX64 = process.platform === "linux" && process.arch === "x64";
export const isRoot = process.getuid?.() === 0;

let built: Promise<string> | undefined;

export function releaseDist(): Promise<string> {
  built ??= (async () => {
    const prebuilt = process.env.SOFTNET_RELEASE_DIST;
    if (prebuilt) {
      if (!existsSync(join(prebuilt, "softnet-linux-x64")))
        throw new Error(`${prebuilt} has no release build`);
      return prebuilt;
    }
    const out = join(CACHE_DIR, "test-dist");
    rmSync(out, { recursive: true, force: true });
    const build = Bun.spawn([process.execPath, join(ROOT, "scripts/build.ts"), "--out", out], {
      cwd: ROOT,
      stdout: "pipe",
      stderr: "pipe",
    });
    const [code, stdout, stderr] = await Promise.all([
      build.exited,
      new Response(build.stdout).text(),
      new Response(build.stderr).text(),
    ]);
    if (code !== 0) throw new Error(`scripts/build.ts failed:\n${stdout}${stderr}`);
    return out;
  })();
  return built;
}

/**
 * The control: softnet compiled as the release is (same flags; with `autoload`, without the
 * --no-compile-autoload-* flags) but onto the official, unhardened Bun runtime. The attack suite
 * shows it is exploitable, so the suite can fail.
 */
export async function unhardenedBuild(dir: string, options: { autoload?: boolean } = {}): Promise<string> {
  const target = TARGETS.find((candidate) => candidate.name === "linux-x64")!;
  const outfile = join(dir, options.autoload ? "softnet-unhardened-autoload" : "softnet-unhardened");
  const build = Bun.spawn(
    [
      process.execPath,
      "build",
      "--compile",
      `--compile-executable-path=${officialRuntime(target).path}`,
      "--minify",
      ...(options.autoload ? [] : ["--no-compile-autoload-dotenv", "--no-compile-autoload-bunfig"]),
      "--define",
      'SOFTNET_VERSION="0.0.0-control"',
      "--define",
      'SOFTNET_COMMIT="control"',
      "--outfile",
      outfile,
      "src/main.ts",
    ],
    { cwd: ROOT, stdout: "pipe", stderr: "pipe" },
  );
  if ((await build.exited) !== 0) throw new Error(await new Response(build.stderr).text());
  return outfile;
}
