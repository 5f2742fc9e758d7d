// What `npm run build` (scripts/build.ts) ships: every artifact present, version and commit
// embedded, every slice of every binary hardened (proved on its bytes), the tarball, the formula,
// the source maps and the checksums.
import { beforeAll, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { inspectHardening } from "../../scripts/release/harden-runtime.ts";
import { REQUIRED_IN_CI } from "../support/ci.ts";
import { requireTool } from "../support/tools.ts";
import { canRunLinuxX64, releaseDist } from "./release-build.ts";

let dist: string;
let info: { version: string; commit: string; artifacts: Record<string, { bytes: number }> };

beforeAll(async () => {
  dist = await releaseDist();
  info = JSON.parse(readFileSync(join(dist, "build-info.json"), "utf8"));
}, 300_000);

const BINARIES = [
  "softnet-linux-x64",
  "softnet-linux-arm64",
  "softnet-darwin-arm64",
  "softnet-darwin-x64",
  "softnet-darwin-universal",
];

const TARBALLS = { arm64: "softnet-darwin-arm64.tar.gz", x64: "softnet-darwin-x64.tar.gz" };

test("every artifact is there, and SHA256SUMS matches them", () => {
  const tarballs = Object.values(TARBALLS);
  for (const name of [...BINARIES, ...tarballs, "softnet.rb", "SHA256SUMS", "build-info.json"]) {
    expect(statSync(join(dist, name)).size).toBeGreaterThan(0);
  }
  const sums = readFileSync(join(dist, "SHA256SUMS"), "utf8").trim().split("\n");
  expect(sums.map((line) => line.split("  ")[1]).sort()).toEqual([...BINARIES, ...tarballs].sort());
  for (const line of sums) {
    const [sum, name] = line.split("  ");
    expect(new Bun.CryptoHasher("sha256").update(readFileSync(join(dist, name!))).digest("hex")).toBe(sum!);
  }
});

describe("every binary runs the environment scrubber first, in every slice", () => {
  for (const name of BINARIES) {
    test(name, () => {
      const proofs = inspectHardening(new Uint8Array(readFileSync(join(dist, name))));
      expect(proofs.length).toBe(name.endsWith("universal") ? 2 : 1);
      for (const proof of proofs) {
        expect(proof.problems).toEqual([]);
        expect(proof.hooked).toBe(true);
        expect(proof.allowlist).toEqual(["SENTRY_DSN", "CIRRUS_SENTRY_TAGS", "SUDO_UID", "SUDO_GID"]);
      }
    });
  }
});

test.skipIf(!canRunLinuxX64 && !REQUIRED_IN_CI)(
  "the version and commit are embedded, and BUN_BE_BUN/BUN_OPTIONS do nothing",
  () => {
    const sha = Bun.spawnSync([requireTool("git"), "rev-parse", "--short=12", "HEAD"])
      .stdout.toString()
      .trim();
    expect(info.commit.startsWith(sha)).toBe(true);
    for (const env of [{}, { BUN_BE_BUN: "1" }, { BUN_OPTIONS: "--version" }]) {
      const run = Bun.spawnSync([join(dist, "softnet-linux-x64"), "--version"], { env, stdout: "pipe" });
      expect(run.stdout.toString()).toBe(`softnet ${info.version} (${info.commit})\n`);
    }
  },
);

describe("one tarball per CPU: that binary as softnet, LICENSE and README.md", () => {
  for (const [arch, tarball] of Object.entries(TARBALLS)) {
    test(tarball, () => {
      const list = Bun.spawnSync(["tar", "-tvzf", join(dist, tarball)])
        .stdout.toString()
        .trim()
        .split("\n");
      expect(list.map((line) => line.split(/\s+/).pop()).sort()).toEqual(["LICENSE", "README.md", "softnet"]);
      expect(list.find((line) => line.endsWith(" softnet"))).toMatch(/^-rwxr-xr-x 0\/0 /);
      const softnet = Bun.spawnSync(["tar", "-xOzf", join(dist, tarball), "softnet"], {
        stdout: "pipe",
      }).stdout;
      expect(Buffer.compare(Buffer.from(softnet), readFileSync(join(dist, `softnet-darwin-${arch}`)))).toBe(
        0,
      );
      // A Mac downloads only its own architecture: well under half of the universal binary.
      expect(statSync(join(dist, tarball)).size).toBeLessThan(
        statSync(join(dist, "softnet-darwin-universal")).size / 3,
      );
    });
  }
});

test("the Homebrew formula: macOS only, one tarball per CPU with its sha256, caveats about sudoers and setuid", () => {
  const formula = readFileSync(join(dist, "softnet.rb"), "utf8");
  const sha = (name: string) =>
    new Bun.CryptoHasher("sha256").update(readFileSync(join(dist, name))).digest("hex");
  const block = (start: string) =>
    formula.slice(formula.indexOf(start), formula.indexOf("end", formula.indexOf(start)));
  expect(block("on_arm do")).toContain(`/${TARBALLS.arm64}"`);
  expect(block("on_arm do")).toContain(`sha256 "${sha(TARBALLS.arm64)}"`);
  expect(block("on_intel do")).toContain(`/${TARBALLS.x64}"`);
  expect(block("on_intel do")).toContain(`sha256 "${sha(TARBALLS.x64)}"`);
  expect(formula).toContain(`version "${info.version}"`);
  expect(formula).toContain("depends_on :macos");
  expect(formula).toContain('bin.install "softnet"');
  // sudoers names the root-owned copy, never the Homebrew path (a Cellar the user can write).
  expect(formula).toContain("NOPASSWD: /usr/local/libexec/softnet");
  expect(formula).not.toMatch(/NOPASSWD: #\{HOMEBREW_PREFIX\}/);
  expect(formula).toContain("setuid root");
  expect(formula).not.toContain("@@");
});

test("source maps per binary, for Sentry: its entry chunk's and its other chunks', covering softnet's sources", () => {
  for (const name of BINARIES.filter((binary) => !binary.endsWith("universal"))) {
    const entry = JSON.parse(readFileSync(join(dist, `${name}.map`), "utf8"));
    expect(entry.sources).toContain("src/main.ts");
    const chunks = readdirSync(join(dist, `${name}.maps`)).map((file) =>
      JSON.parse(readFileSync(join(dist, `${name}.maps`, file), "utf8")),
    );
    for (const map of [entry, ...chunks]) expect(map.version).toBe(3);
    const sources = [entry, ...chunks].flatMap((map) => map.sources as string[]);
    for (const source of ["src/policy/policy.ts", "src/runtime.ts", "src/cli.ts"])
      expect(sources).toContain(source);
    // @sentry/bun is a chunk of its own: loaded only when SENTRY_DSN is set (scripts/build.ts).
    expect(chunks.some((map) => map.sources.some((source: string) => source.includes("@sentry/bun")))).toBe(
      true,
    );
    expect(chunks.reduce((total, map) => total + map.mappings.length, 0)).toBeGreaterThan(1000);
  }
});

test("sizes are recorded", () => {
  for (const name of BINARIES) expect(info.artifacts[name]!.bytes).toBe(statSync(join(dist, name)).size);
});
