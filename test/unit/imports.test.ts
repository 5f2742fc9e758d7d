// The shape of softnet's source: every import arrow between src files points one way (no cycle,
// however long), and no script imports the doctor. Read from the files' text, so a cycle is
// caught before anything runs.
import { describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "../..");

/** Every .ts file under `directory`, recursively (declaration files declare, they import nothing). */
function sourceFiles(directory: string): string[] {
  const files: string[] = [];
  for (const entry of readdirSync(directory, { withFileTypes: true })) {
    const path = join(directory, entry.name);
    if (entry.isDirectory()) files.push(...sourceFiles(path));
    else if (entry.name.endsWith(".ts") && !entry.name.endsWith(".d.ts")) files.push(path);
  }
  return files;
}

/**
 * What a file imports, by kind. Static and type-only imports (`import ... from "x"`, `export ...
 * from "x"`, over as many lines as the list of names takes) and dynamic ones (`await import("x")`,
 * and `import("x").T` in a type) all count: runtime.ts and doctor/index.ts load platform code with
 * import() so that only the running OS's code is loaded, and only when it is needed, not to hide
 * an arrow; a cycle through an import() is still a module a reader cannot follow to its end, and
 * a type-only import still makes one file depend on the other's shape. Only relative specifiers
 * name files of this repository (packages and node: modules are not part of the graph).
 */
function importsOf(file: string): string[] {
  const text = readFileSync(file, "utf8");
  const specifiers: string[] = [];
  const statement = /^\s*(?:import|export)\s[^;"']*?\bfrom\s*"([^"]+)"/gm;
  const sideEffect = /^\s*import\s*"([^"]+)"/gm;
  const dynamic = /\bimport\(\s*"([^"]+)"\s*\)/g;
  for (const pattern of [statement, sideEffect, dynamic]) {
    for (const match of text.matchAll(pattern)) specifiers.push(match[1]!);
  }
  return specifiers
    .filter((specifier) => specifier.startsWith("."))
    .map((specifier) => resolve(dirname(file), specifier));
}

/** The graph of imports among `files`, by path relative to the repository. */
function importGraph(files: readonly string[]): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of files) {
    const targets = importsOf(file).filter((target) => target.endsWith(".ts") && existsSync(target));
    graph.set(
      relative(ROOT, file),
      targets.map((target) => relative(ROOT, target)),
    );
  }
  return graph;
}

/** One cycle of `graph` as the path that closes it (a -> b -> a), or undefined when there is none. */
function findCycle(graph: ReadonlyMap<string, readonly string[]>): string[] | undefined {
  const done = new Set<string>();
  const onPath: string[] = [];
  const visit = (node: string): string[] | undefined => {
    const start = onPath.indexOf(node);
    if (start >= 0) return [...onPath.slice(start), node];
    if (done.has(node)) return undefined;
    onPath.push(node);
    for (const next of graph.get(node) ?? []) {
      const cycle = visit(next);
      if (cycle !== undefined) return cycle;
    }
    onPath.pop();
    done.add(node);
    return undefined;
  };
  for (const node of [...graph.keys()].sort()) {
    const cycle = visit(node);
    if (cycle !== undefined) return cycle;
  }
  return undefined;
}

describe("the source's import arrows point one way", () => {
  const src = importGraph(sourceFiles(join(ROOT, "src")));

  test("the import reader sees the imports the files have", () => {
    // Guards the reader itself: a pattern that missed multi-line, type-only or dynamic imports
    // would find no cycle in anything.
    expect(src.get("src/cli.ts")).toContain("src/doctor/cli.ts"); // static, one line
    expect(src.get("src/platform/linux/tap.ts")).toContain("src/platform/linux/bridge.ts"); // a list of names over lines
    expect(src.get("src/log.ts")).toContain("src/cli.ts"); // type-only
    expect(src.get("src/main.ts")).toContain("src/runtime.ts"); // await import()
    expect(
      findCycle(
        new Map([
          ["a", ["b"]],
          ["b", ["c"]],
          ["c", ["a"]],
        ]),
      ),
    ).toEqual(["a", "b", "c", "a"]);
    expect(
      findCycle(
        new Map([
          ["a", ["b", "c"]],
          ["b", ["c"]],
          ["c", []],
        ]),
      ),
    ).toBeUndefined();
  });

  test("no file under src/ imports, through any chain of imports, a file that imports it", () => {
    const cycle = findCycle(src);
    expect(cycle === undefined ? "no cycle" : cycle.join(" -> ")).toBe("no cycle");
  });

  test("no script imports a file under src/doctor/", () => {
    // The doctor is a command of softnet; what a script and the doctor share belongs in a module
    // of its own (wire/, policy/, platform/, test/support/), not in the doctor.
    const scripts = importGraph(sourceFiles(join(ROOT, "scripts")));
    expect(scripts.get("scripts/fuzz.ts")).toContain("src/policy/policy.ts"); // the reader sees them
    const intoDoctor = [...scripts].flatMap(([script, targets]) =>
      targets.filter((target) => target.startsWith("src/doctor/")).map((target) => `${script} -> ${target}`),
    );
    expect(intoDoctor).toEqual([]);
  });
});
