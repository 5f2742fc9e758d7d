// Network namespaces owned by one e2e topology, named so that runs never clash and leftovers of a
// crashed run can be found and removed: softnet-e2e-<pid>-<seq>-<role>, where pid is the test
// runner's and seq counts topologies within it (bun test runs every file in one process).
import { existsSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isKnownTool, requireTool } from "../../support/tools.ts";
import { runSync } from "./proc.ts";

export const NAME_PREFIX = "softnet-e2e-";
const OWNED_NAME = /^softnet-e2e-(\d+)-(\d+)(?:-|$)/;

/** argv that runs argv inside namespace (ip execs the command: the pid is the command's own). */
export function inNamespace(namespace: string, argv: string[]): string[] {
  // A missing program fails here, naming its Debian package, rather than as "exit 255" from ip.
  const program = argv[0];
  if (program !== undefined && isKnownTool(program)) requireTool(program);
  requireTool("ip");
  return ["ip", "netns", "exec", namespace, ...argv];
}

export function listNamespaces(): string[] {
  const result = runSync(["ip", "-j", "netns", "list"]);
  if (result.code !== 0 || result.stdout.trim() === "") return [];
  return (JSON.parse(result.stdout) as Array<{ name: string }>).map((entry) => entry.name);
}

/** Pids of the processes whose network namespace is namespace. */
export function namespacePids(namespace: string): number[] {
  const result = runSync(["ip", "netns", "pids", namespace]);
  if (result.code !== 0) return [];
  return result.stdout
    .split(/\s+/)
    .filter((word) => word !== "")
    .map(Number);
}

/**
 * Kills every process in namespace, then deletes it. Processes first: `ip netns del` only removes
 * the name, and a namespace with a process left in it lives on, invisible, with its links.
 */
export function destroyNamespaceSync(namespace: string): void {
  const deadline = Date.now() + 5_000;
  for (let pids = namespacePids(namespace); pids.length > 0; pids = namespacePids(namespace)) {
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    if (Date.now() > deadline) break;
    Bun.sleepSync(20);
  }
  runSync(["ip", "netns", "del", namespace]);
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Removes namespaces and temp dirs left by an earlier run: those of this very topology name (a
 * previous run that had the same pid and crashed) and those whose runner pid is dead. Live runs in
 * parallel are left alone.
 */
export function removeLeftovers(topologyName: string): string[] {
  const isLeftover = (name: string): boolean => {
    if (name === topologyName || name.startsWith(`${topologyName}-`)) return true;
    const owner = name.match(OWNED_NAME);
    return owner !== null && Number(owner[1]) !== process.pid && !processAlive(Number(owner[1]));
  };
  const removed: string[] = [];
  for (const namespace of listNamespaces().filter(isLeftover)) {
    destroyNamespaceSync(namespace);
    removed.push(namespace);
  }
  for (const entry of readdirSync(tmpdir()).filter(isLeftover)) {
    rmSync(join(tmpdir(), entry), { recursive: true, force: true });
    removed.push(join(tmpdir(), entry));
  }
  return removed;
}

export function namespaceExists(namespace: string): boolean {
  return existsSync(`/run/netns/${namespace}`);
}
