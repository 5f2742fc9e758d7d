// Who a user's setuid softnet becomes, and how many VMs it may run: the Linux release binary
// installed setuid root, started by an unprivileged user (softnet-attacker) on a real bridge in a
// network namespace, with a private /etc (test/support/etc-overlay.ts) for bridge.conf and the
// group database.
// - The drop gives back exactly the groups the caller had at exec: a caller that cleared its
//   groups does not get its /etc/group memberships back (and cannot use one to create a file).
// - max-vms-per-user in /etc/softnet/bridge.conf: N VMs run, the next is refused with one line,
//   and once one stops another may start.
// Needs root on Linux x86-64.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { SetuidLab } from "../../scripts/release/setuid-attacks.ts";
import { closeFd, datagramSocketPair, Topology } from "../e2e/lib/index.ts";
import { REQUIRED_IN_CI } from "../support/ci.ts";
import { EtcOverlay } from "../support/etc-overlay.ts";
import { requireTools } from "../support/tools.ts";
import { canRunLinuxX64, isRoot, releaseDist } from "./release-build.ts";

const runnable = canRunLinuxX64 && isRoot;
let lab: SetuidLab;
let topology: Topology;
const overlays: EtcOverlay[] = [];
/** A group that exists only in the overlay's /etc/group, with the attacker as its member. */
const GROUP = "softnet-capture-group";
let groupGid: number;

beforeAll(async () => {
  if (!runnable) return;
  requireTools(["setpriv", "unshare", "ip"]);
  lab = SetuidLab.create(join(await releaseDist(), "softnet-linux-x64"));
  topology = await Topology.create();
  const used = new Set(
    readFileSync("/etc/group", "utf8")
      .split("\n")
      .map((line) => Number(line.split(":")[2])),
  );
  groupGid = 61_000;
  while (used.has(groupGid)) groupGid++;
}, 300_000);

afterAll(async () => {
  await topology?.teardown();
  lab?.cleanup();
  for (const overlay of overlays) overlay.cleanup();
});

function etcWith(files: Record<string, string>): EtcOverlay {
  const overlay = EtcOverlay.create();
  overlays.push(overlay);
  for (const [relative, content] of Object.entries(files)) overlay.writeFile(relative, content);
  return overlay;
}

interface Running {
  /** "started" once softnet logs its start-up line; else its exit code and stderr. */
  outcome: Promise<{ started: true } | { started: false; code: number | null; stderr: string }>;
  stop(): Promise<number | null>;
}

/**
 * The setuid softnet, started by the attacker through setpriv with `groupsOption`
 * (--init-groups: its /etc/group memberships; --clear-groups: none), on a VM socket of its own,
 * in the bridge's namespace with `etc` as /etc.
 */
function startAttacker(etc: EtcOverlay, mac: string, args: string[], groupsOption: string): Running {
  const pair = datagramSocketPair();
  const argv = etc.wrap([
    "setpriv",
    `--reuid=${lab.uid}`,
    `--regid=${lab.gid}`,
    groupsOption,
    "--",
    "/usr/bin/env",
    "-i",
    "PATH=/usr/bin:/bin",
    lab.binary,
    "--vm-fd",
    "0",
    "--vm-mac-address",
    mac,
    "--bridge",
    topology.bridge,
    ...args,
  ]);
  const child = Bun.spawn(["ip", "netns", "exec", topology.hostNamespace, ...argv], {
    stdin: pair.hostEnd,
    stdout: "ignore",
    stderr: "pipe",
  });
  let stderr = "";
  const exited = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of child.stderr) stderr += decoder.decode(chunk, { stream: true });
    const code = await child.exited;
    closeFd(pair.vmEnd);
    closeFd(pair.hostEnd);
    return code;
  })();
  const outcome = (async () => {
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      if (stderr.includes("forwarding for VM")) return { started: true as const };
      const done = await Promise.race([exited.then(() => true), Bun.sleep(100).then(() => false)]);
      if (done && !stderr.includes("forwarding for VM")) {
        return { started: false as const, code: child.exitCode, stderr };
      }
    }
    child.kill("SIGKILL");
    return { started: false as const, code: null, stderr };
  })();
  return {
    outcome,
    stop: async () => {
      child.kill("SIGINT");
      return exited;
    },
  };
}

describe.skipIf(!runnable && !REQUIRED_IN_CI)("the groups a user's setuid softnet runs with", () => {
  test("a caller without supplementary groups does not get its /etc/group ones back", async () => {
    const etc = etcWith({
      "softnet/bridge.conf": "allow br0\n",
      group: `${readFileSync("/etc/group", "utf8")}${GROUP}:x:${groupGid}:softnet-attacker\n`,
    });
    const groupDir = join(lab.base, "group-only");
    mkdirSync(groupDir, { mode: 0o770 });
    chownSync(groupDir, 0, groupGid);
    chmodSync(groupDir, 0o770);

    // The control: with its memberships (setpriv --init-groups reads the overlay's /etc/group),
    // the attacker may create a file there, so the refusal below is about the groups alone.
    const member = join(groupDir, "as-member.pcap");
    const withGroups = startAttacker(etc, "02:5e:30:00:00:01", ["--capture", member], "--init-groups");
    expect(await withGroups.outcome).toEqual({ started: true });
    expect(statSync(member).uid).toBe(lab.uid);
    expect(await withGroups.stop()).toBe(0);

    const cleared = join(groupDir, "cleared.pcap");
    const withoutGroups = startAttacker(etc, "02:5e:30:00:00:02", ["--capture", cleared], "--clear-groups");
    const outcome = await withoutGroups.outcome;
    expect(outcome.started, JSON.stringify(outcome)).toBe(false);
    expect(outcome).toMatchObject({ code: 1 });
    expect(existsSync(cleared)).toBe(false);
  }, 60_000);
});

describe.skipIf(!runnable && !REQUIRED_IN_CI)("max-vms-per-user in /etc/softnet/bridge.conf", () => {
  test("two VMs run, the third is refused with one line, and after one stops another starts", async () => {
    const etc = etcWith({ "softnet/bridge.conf": "allow br0\nmax-vms-per-user 2\n" });
    const first = startAttacker(etc, "02:5e:31:00:00:01", [], "--init-groups");
    expect(await first.outcome).toEqual({ started: true });
    const second = startAttacker(etc, "02:5e:31:00:00:02", [], "--init-groups");
    expect(await second.outcome).toEqual({ started: true });

    const third = await startAttacker(etc, "02:5e:31:00:00:03", [], "--init-groups").outcome;
    expect(third.started, JSON.stringify(third)).toBe(false);
    if (third.started) return;
    expect(third.code).toBe(1);
    expect(third.stderr.trim().split("\n")).toHaveLength(1);
    expect(third.stderr).toStartWith(
      `softnet: uid ${lab.uid} already runs 2 VMs on bridge br0, the most it may: ` +
        'line 2 of /etc/softnet/bridge.conf says "max-vms-per-user 2"',
    );

    expect(await first.stop()).toBe(0);
    const fourth = startAttacker(etc, "02:5e:31:00:00:04", [], "--init-groups");
    expect(await fourth.outcome).toEqual({ started: true });
    expect(await second.stop()).toBe(0);
    expect(await fourth.stop()).toBe(0);
  }, 90_000);
});
