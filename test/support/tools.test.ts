// The table of programs and files the tests take from the system (tools.ts) against what dpkg says
// owns them and against what scripts/e2e-deps.sh installs, so that `npm test` on a fresh Debian
// machine installs everything before the first test needs it.
import { expect, test } from "bun:test";
import { existsSync, readFileSync, readlinkSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { REQUIRED_IN_CI } from "./ci.ts";
import { FILE_PACKAGES, type NeededFile, requireTool, TOOL_PACKAGES, type Tool, toolPath } from "./tools.ts";

const REPO = join(import.meta.dir, "../..");

/** The packages in scripts/e2e-deps.sh's `packages=( ... )`, comments removed. */
function installedByScript(): string[] {
  const script = readFileSync(join(REPO, "scripts/e2e-deps.sh"), "utf8");
  const list = /^packages=\(\n([\s\S]*?)\n\)$/m.exec(script);
  if (list === null) throw new Error("scripts/e2e-deps.sh has no packages=( ... ) list");
  return list[1]!
    .split("\n")
    .map((line) => line.replace(/#.*/, "").trim())
    .filter((line) => line !== "");
}

test("e2e-deps.sh installs every package the table names, and nothing the table does not name", () => {
  const installed = installedByScript();
  const named = new Set<string>([...Object.values(TOOL_PACKAGES), ...Object.values(FILE_PACKAGES)]);
  expect([...named].filter((name) => !installed.includes(name)).sort()).toEqual([]);
  expect(installed.filter((name) => !named.has(name)).sort()).toEqual([]);
});

test("a missing program is an error that names its Debian package", () => {
  expect(() => requireTool("socat", "/nonexistent")).toThrow(
    "socat is missing: install the Debian package socat (scripts/e2e-deps.sh installs every package the tests use)",
  );
  expect(() => requireTool("arpspoof", "/nonexistent")).toThrow("install the Debian package dsniff");
});

/**
 * The paths dpkg may know a file by: each step of its symlink chain (/usr/bin/cc -> /etc/alternatives/cc
 * -> /usr/bin/gcc ...), and for each, the /bin or /sbin name Debian 12's merged /usr still records.
 */
function namesOf(path: string): string[] {
  const names: string[] = [];
  let current = path;
  for (let step = 0; step < 10; step++) {
    names.push(current, current.replace(/^\/usr\/(s?bin|lib)\//, "/$1/"));
    let target: string;
    try {
      target = readlinkSync(current);
    } catch {
      break;
    }
    current = resolve(dirname(current), target);
  }
  return [...new Set(names)];
}

/** path -> the packages dpkg says own it, for many paths in one dpkg-query call. */
function owners(paths: string[]): Map<string, string[]> {
  const result = Bun.spawnSync([requireTool("dpkg"), "-S", ...paths], { stdout: "pipe", stderr: "pipe" });
  const found = new Map<string, string[]>();
  for (const line of result.stdout.toString().split("\n")) {
    const match = /^(.+?): (\/.*)$/.exec(line);
    if (match === null || match[1]!.startsWith("diversion by")) continue;
    const packages = match[1]!.split(", ").map((name) => name.replace(/:.*$/, ""));
    found.set(match[2]!, [...(found.get(match[2]!) ?? []), ...packages]);
  }
  return found;
}

const hasDpkg = toolPath("dpkg") !== null;

test.skipIf(!hasDpkg && !REQUIRED_IN_CI)(
  "each program and file the tests use belongs to the package the table names (dpkg -S)",
  () => {
    const checks: Array<{ what: string; expected: string; names: string[] }> = [];
    const absent: string[] = [];
    for (const [tool, expected] of Object.entries(TOOL_PACKAGES)) {
      const path = toolPath(tool as Tool);
      if (path === null) absent.push(tool);
      else checks.push({ what: tool, expected, names: namesOf(path) });
    }
    for (const [file, expected] of Object.entries(FILE_PACKAGES)) {
      if (!existsSync(file)) absent.push(file);
      else checks.push({ what: file as NeededFile, expected, names: namesOf(file) });
    }
    // In CI every one of them is installed (e2e-deps.sh ran); elsewhere the absent ones are not checked.
    if (REQUIRED_IN_CI) expect(absent).toEqual([]);
    const owned = owners(checks.flatMap((check) => check.names));
    const wrong = checks.flatMap(({ what, expected, names }) => {
      const packages = names.flatMap((name) => owned.get(name) ?? []);
      return packages.includes(expected)
        ? []
        : [`${what}: ${expected} expected, dpkg says ${[...new Set(packages)].join(", ") || "none"}`];
    });
    expect(wrong).toEqual([]);
  },
);
