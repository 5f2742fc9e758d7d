#!/usr/bin/env bun
/**
 * The release build, one command (`npm run build`): every artifact in dist/.
 *
 *   dist/softnet-linux-x64, softnet-linux-arm64, softnet-darwin-arm64, softnet-darwin-x64
 *   dist/softnet-darwin-universal   fat Mach-O of the two darwin builds
 *   dist/softnet-<target>.map       source map of the binary's entry chunk, for Sentry (minified code)
 *   dist/softnet-<target>.maps/     source maps of its other chunks (<chunk>.js.map, as named inside)
 *   dist/softnet-darwin-arm64.tar.gz, softnet-darwin-x64.tar.gz
 *                                   one architecture's binary as `softnet`, LICENSE, README.md: what
 *                                   Homebrew downloads (the formula picks one with on_arm/on_intel,
 *                                   so a Mac fetches half of what the universal binary weighs)
 *   dist/softnet.rb                 Homebrew formula (from scripts/release/homebrew/)
 *   dist/SHA256SUMS, dist/build-info.json
 *
 * Each binary is `bun build --compile` of src/main.ts onto a hardened copy of the official Bun
 * runtime (scripts/release/harden-runtime.ts: it scrubs its environment before Bun's code runs,
 * which is what makes a setuid-root install safe; README "Security model"), minified, as bytecode
 * in ES module chunks (releaseCompileArgs says why), with --no-compile-autoload-dotenv/-bunfig (and
 * tsconfig/package.json), SOFTNET_VERSION and SOFTNET_COMMIT defined. Every artifact is then checked on its bytes: the scrubber hook is in
 * place in every slice, and every darwin slice carries a valid code signature (the build fails
 * otherwise).
 *
 *   bun scripts/build.ts [--targets linux-x64,darwin-arm64,...] [--out DIR] [--url URL]
 *
 * Environment: SOFTNET_VERSION / SOFTNET_COMMIT override package.json's version and git's commit;
 * SOFTNET_RELEASE_URL (or --url) is where the tarballs are published (a directory URL): the formula
 * downloads <url>/softnet-darwin-<arch>.tar.gz.
 */
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { basename, join, relative } from "node:path";
import { inspectHardening } from "./release/harden-runtime.ts";
import { createFat } from "./release/macho.ts";
import { formatReport, signAdhoc, verifySignatures } from "./release/macho-signature.ts";
import { CACHE_DIR, hardenedRuntime, ROOT, TARGETS, type Target } from "./release/runtimes.ts";

const ENTRY = "src/main.ts";

interface Options {
  targets: Target[];
  out: string;
  url: string;
}

function parseArgs(argv: string[]): Options {
  let targets = TARGETS;
  let out = join(ROOT, "dist");
  let url = process.env.SOFTNET_RELEASE_URL ?? "";
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = () => {
      const next = argv[++i];
      if (next === undefined) throw new Error(`${arg} needs a value`);
      return next;
    };
    if (arg === "--targets") {
      const names = value().split(",");
      targets = names.map((name) => {
        const target = TARGETS.find((candidate) => candidate.name === name);
        if (!target) throw new Error(`unknown target ${name} (${TARGETS.map((t) => t.name).join(", ")})`);
        return target;
      });
    } else if (arg === "--out") {
      out = value();
    } else if (arg === "--url") {
      url = value();
    } else {
      throw new Error(`unknown argument ${arg}`);
    }
  }
  return { targets, out, url };
}

function git(args: string[]): string | undefined {
  const result = Bun.spawnSync(["git", ...args], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  return result.exitCode === 0 ? result.stdout.toString().trim() : undefined;
}

/** package.json's version and the git commit (short; "-dirty" with uncommitted changes to tracked files). */
export function buildIdentity(): { version: string; commit: string } {
  const version =
    process.env.SOFTNET_VERSION ?? JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version;
  let commit = process.env.SOFTNET_COMMIT;
  if (commit === undefined) {
    const sha = git(["rev-parse", "--short=12", "HEAD"]) ?? "unknown";
    const dirty = (git(["status", "--porcelain", "--untracked-files=no"]) ?? "") !== "";
    commit = dirty ? `${sha}-dirty` : sha;
  }
  if (!/^[0-9A-Za-z.+-]+$/.test(version) || !/^[0-9A-Za-z.+-]+$/.test(commit)) {
    throw new Error(`unexpected version "${version}" or commit "${commit}"`);
  }
  return { version, commit };
}

function checkEntry(): void {
  const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
  if (pkg.bin?.softnet !== ENTRY)
    throw new Error(`package.json bin.softnet is ${pkg.bin?.softnet}, not ${ENTRY}`);
  const source = readFileSync(join(ROOT, ENTRY), "utf8");
  if (!source.includes("import.meta.main")) throw new Error(`${ENTRY} does not look like the entry point`);
}

function hardenedRuntimeFor(target: Target): string {
  const { path, version, report } = hardenedRuntime(target);
  console.log(
    `  runtime ${target.npmPackage}@${version}: scrubber at file offset 0x${report.stubFileOffset.toString(16)}, ` +
      `hooked ${report.hookedAt} (continues to 0x${report.originalTarget.toString(16)})`,
  );
  return path;
}

interface Artifact {
  file: string;
  bytes: number;
  seconds?: number;
  hardening: ReturnType<typeof inspectHardening>;
  signature?: ReturnType<typeof verifySignatures>;
}

function fail(message: string): never {
  console.error(`build: ${message}`);
  process.exit(1);
}

/** Checks an artifact's bytes: the scrubber hook in every slice, a valid signature in every darwin slice. */
function verifyArtifact(path: string, isDarwin: boolean): Pick<Artifact, "hardening" | "signature"> {
  const bytes = new Uint8Array(readFileSync(path));
  const hardening = inspectHardening(bytes);
  for (const proof of hardening) {
    if (!proof.hooked) fail(`${path}: ${proof.what}: not hardened: ${proof.problems.join("; ")}`);
  }
  if (!isDarwin) return { hardening };
  const signature = verifySignatures(bytes);
  if (signature.some((slice) => slice.errors.length > 0)) {
    fail(`${path}: invalid code signature\n${formatReport(path, signature)}`);
  }
  return { hardening, signature };
}

/**
 * `bun build` arguments of a release binary, for `entry` (src/main.ts; the benchmark compiles its
 * hello-world floor with exactly these).
 */
export function releaseCompileArgs(options: {
  target: Target;
  runtime: string;
  identity: { version: string; commit: string };
  entry: string;
  outfile: string;
}): string[] {
  const { target, runtime, identity } = options;
  return [
    process.execPath,
    "build",
    "--compile",
    `--target=${target.bunTarget}`,
    `--compile-executable-path=${runtime}`,
    "--minify",
    // Start-up (every Tart VM start waits for softnet; npm run bench measures it, README
    // "Development"). Precompiled JavaScriptCore bytecode: parsing the bundle was most of it.
    // ES modules with code splitting: every dynamic import() becomes a chunk of its own that is
    // loaded when the import runs. Bun loads the entry chunk whole before any JavaScript runs, and
    // with one chunk that included @sentry/bun, two thirds of the bundle though it is imported only
    // when SENTRY_DSN is set: measured 15 to 20 ms of CPU on every start, more than Bun's own floor.
    "--bytecode",
    "--format=esm",
    "--splitting",
    "--sourcemap=external",
    "--no-compile-autoload-dotenv",
    "--no-compile-autoload-bunfig",
    "--no-compile-autoload-tsconfig",
    "--no-compile-autoload-package-json",
    "--define",
    `SOFTNET_VERSION=${JSON.stringify(identity.version)}`,
    "--define",
    `SOFTNET_COMMIT=${JSON.stringify(identity.commit)}`,
    "--outfile",
    options.outfile,
    options.entry,
  ];
}

/**
 * Compiles one target in a staging directory of its own (chunk source maps are named by content,
 * so two targets must not share a directory), then moves the binary to out/softnet-<target>, the
 * entry chunk's map to out/softnet-<target>.map and the other chunks' maps into
 * out/softnet-<target>.maps/.
 */
async function compile(
  target: Target,
  runtime: string,
  out: string,
  identity: { version: string; commit: string },
) {
  const name = `softnet-${target.name}`;
  const outfile = join(out, name);
  const maps = join(out, `${name}.maps`);
  const stage = mkdtempSync(join(out, `.${name}-`));
  try {
    const staged = join(stage, name);
    const argv = releaseCompileArgs({ target, runtime, identity, entry: ENTRY, outfile: staged });
    const started = performance.now();
    const build = Bun.spawn(argv, { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
    const [code, stdout, stderr] = await Promise.all([
      build.exited,
      new Response(build.stdout).text(),
      new Response(build.stderr).text(),
    ]);
    if (code !== 0) fail(`bun build for ${target.name} failed:\n${stdout}${stderr}`);
    if (!existsSync(`${staged}.map`)) fail(`no source map ${staged}.map`);
    if (target.signer === "softnet") {
      const signed = signAdhoc(new Uint8Array(readFileSync(staged)), "softnet");
      writeFileSync(staged, signed);
    }
    renameSync(staged, outfile);
    renameSync(`${staged}.map`, `${outfile}.map`);
    rmSync(maps, { recursive: true, force: true });
    mkdirSync(maps);
    for (const file of readdirSync(stage)) {
      if (!file.endsWith(".js.map")) fail(`bun build for ${target.name} left an unexpected ${file}`);
      renameSync(join(stage, file), join(maps, file));
    }
    return { outfile, seconds: (performance.now() - started) / 1000 };
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

function sha256(path: string): string {
  return new Bun.CryptoHasher("sha256").update(readFileSync(path)).digest("hex");
}

function smokeTest(path: string, identity: { version: string; commit: string }): void {
  if (process.platform !== "linux" || process.arch !== "x64") return;
  const expected = `softnet ${identity.version} (${identity.commit})\n`;
  for (const env of [{}, { BUN_BE_BUN: "1", BUN_OPTIONS: "--version" }]) {
    const run = Bun.spawnSync([path, "--version"], { env, stdout: "pipe", stderr: "pipe" });
    if (run.stdout.toString() !== expected) {
      fail(`${path} --version with ${JSON.stringify(env)} printed ${JSON.stringify(run.stdout.toString())}`);
    }
  }
}

/** dist/softnet-darwin-<arch>.tar.gz: that architecture's binary as `softnet`, LICENSE, README.md. */
function tarball(out: string, binary: string, name: string): string {
  const stage = mkdtempSync(join(tmpdir(), "softnet-tarball-"));
  try {
    copyFileSync(binary, join(stage, "softnet"));
    chmodSync(join(stage, "softnet"), 0o755);
    copyFileSync(join(ROOT, "LICENSE"), join(stage, "LICENSE"));
    copyFileSync(join(ROOT, "README.md"), join(stage, "README.md"));
    const path = join(out, `${name}.tar.gz`);
    const epoch = git(["log", "-1", "--format=%ct"]) ?? "0";
    const tar = Bun.spawnSync(
      [
        "tar",
        "--sort=name",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        `--mtime=@${epoch}`,
        "-czf",
        path,
        "-C",
        stage,
        "softnet",
        "LICENSE",
        "README.md",
      ],
      // -n: no name or time in the gzip header, so the same inputs give the same bytes.
      { stderr: "pipe", env: { ...process.env, GZIP: "-9n" } },
    );
    if (tar.exitCode !== 0) fail(`tar failed: ${tar.stderr.toString()}`);
    return path;
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

function formula(
  out: string,
  tarballs: { arm64: string; x64: string },
  version: string,
  url: string,
): string {
  const template = readFileSync(join(ROOT, "scripts/release/homebrew/softnet.rb.template"), "utf8");
  const base = url.replace(/\/+$/, "") || `REPLACE-WITH-THE-RELEASE-URL/v${version}`;
  const text = template
    .replaceAll("@@VERSION@@", version)
    .replaceAll("@@URL_ARM64@@", `${base}/${basename(tarballs.arm64)}`)
    .replaceAll("@@SHA256_ARM64@@", sha256(tarballs.arm64))
    .replaceAll("@@URL_X64@@", `${base}/${basename(tarballs.x64)}`)
    .replaceAll("@@SHA256_X64@@", sha256(tarballs.x64))
    .replaceAll("@@HOMEPAGE@@", "https://tart.run");
  const path = join(out, "softnet.rb");
  writeFileSync(path, text);
  return path;
}

export async function build(options: Options): Promise<Record<string, Artifact>> {
  const started = performance.now();
  checkEntry();
  const identity = buildIdentity();
  console.log(
    `softnet ${identity.version} (${identity.commit}): ${options.targets.map((t) => t.name).join(", ")}`,
  );
  mkdirSync(options.out, { recursive: true });
  mkdirSync(CACHE_DIR, { recursive: true });
  const artifacts: Record<string, Artifact> = {};
  for (const target of options.targets) {
    console.log(`${target.name}:`);
    const runtime = hardenedRuntimeFor(target);
    const { outfile, seconds } = await compile(target, runtime, options.out, identity);
    const checks = verifyArtifact(outfile, target.os === "darwin");
    if (target.name === "linux-x64") smokeTest(outfile, identity);
    artifacts[relative(options.out, outfile)] = {
      file: outfile,
      bytes: statSync(outfile).size,
      seconds,
      ...checks,
    };
    console.log(
      `  ${relative(ROOT, outfile)}: ${(statSync(outfile).size / 2 ** 20).toFixed(1)} MiB in ${seconds.toFixed(1)} s`,
    );
  }
  const arm = options.targets.some((t) => t.name === "darwin-arm64");
  const x64 = options.targets.some((t) => t.name === "darwin-x64");
  if (arm && x64) {
    const universal = join(options.out, "softnet-darwin-universal");
    const fat = createFat([
      new Uint8Array(readFileSync(join(options.out, "softnet-darwin-arm64"))),
      new Uint8Array(readFileSync(join(options.out, "softnet-darwin-x64"))),
    ]);
    writeFileSync(universal, fat);
    chmodSync(universal, 0o755);
    artifacts["softnet-darwin-universal"] = {
      file: universal,
      bytes: fat.length,
      ...verifyArtifact(universal, true),
    };
    const tarballs = {
      arm64: tarball(options.out, join(options.out, "softnet-darwin-arm64"), "softnet-darwin-arm64"),
      x64: tarball(options.out, join(options.out, "softnet-darwin-x64"), "softnet-darwin-x64"),
    };
    for (const tar of Object.values(tarballs)) {
      artifacts[basename(tar)] = { file: tar, bytes: statSync(tar).size, hardening: [] };
    }
    const rb = formula(options.out, tarballs, identity.version, options.url);
    const mib = (path: string) => (statSync(path).size / 2 ** 20).toFixed(1);
    console.log(
      `universal: ${relative(ROOT, universal)} (${(fat.length / 2 ** 20).toFixed(1)} MiB); ` +
        `tarballs: ${basename(tarballs.arm64)} ${mib(tarballs.arm64)} MiB, ${basename(tarballs.x64)} ${mib(tarballs.x64)} MiB; ${relative(ROOT, rb)}`,
    );
  }
  const sums = Object.values(artifacts)
    .map((artifact) => `${sha256(artifact.file)}  ${relative(options.out, artifact.file)}`)
    .join("\n");
  writeFileSync(join(options.out, "SHA256SUMS"), `${sums}\n`);
  const seconds = (performance.now() - started) / 1000;
  writeFileSync(
    join(options.out, "build-info.json"),
    `${JSON.stringify(
      {
        ...identity,
        seconds,
        artifacts: Object.fromEntries(
          Object.entries(artifacts).map(([name, artifact]) => [
            name,
            {
              bytes: artifact.bytes,
              seconds: artifact.seconds,
              hardening: artifact.hardening,
              signature: artifact.signature?.map((slice) => ({
                arch: slice.arch,
                ok: slice.errors.length === 0,
                cdhash: slice.codeDirectories[0]?.cdhash,
                identifier: slice.codeDirectories[0]?.identifier,
              })),
            },
          ]),
        ),
      },
      null,
      2,
    )}\n`,
  );
  console.log(`done in ${seconds.toFixed(1)} s`);
  return artifacts;
}

if (import.meta.main) {
  try {
    await build(parseArgs(process.argv.slice(2)));
  } catch (error) {
    fail((error as Error).message);
  }
}
