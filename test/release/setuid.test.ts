// The setuid-root attack suite (README "Security model"). The Linux release binary is
// installed setuid root in a root-owned directory and run by an unprivileged user
// (softnet-attacker) with one attack at a time: Bun's and JavaScriptCore's environment hooks,
// NODE_OPTIONS, .env and bunfig.toml in the current directory, a planted TMPDIR, LD_PRELOAD,
// BUN_TCC_OPTIONS, argv[0] games. Pass: no attacker code ever runs as root, no inspector listens
// or connects, no file appears where only root can write, and softnet still prints its version.
// A control build on the official, unhardened runtime must fall to the same attacks, so a Bun
// upgrade or build change that reopens a hole turns this red. Needs root on Linux x86-64.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  ATTACKS,
  type Attack,
  exploited,
  type Outcome,
  SetuidLab,
} from "../../scripts/release/setuid-attacks.ts";
import { libc } from "../../src/platform/linux/libc.ts";
import { REQUIRED_IN_CI } from "../support/ci.ts";
import { EtcOverlay } from "../support/etc-overlay.ts";
import { requireTools } from "../support/tools.ts";
import { canRunLinuxX64, isRoot, releaseDist, unhardenedBuild } from "./release-build.ts";

const runnable = canRunLinuxX64 && isRoot;
let hardened: SetuidLab;
let control: SetuidLab;
let controlAutoload: SetuidLab;
let scratch: string;
let version: string;

beforeAll(async () => {
  if (!runnable) return;
  requireTools(["id", "useradd", "setpriv", "findmnt", "stat", "chown", "cat", "kill", "gcc"]);
  const dist = await releaseDist();
  hardened = SetuidLab.create(join(dist, "softnet-linux-x64"));
  scratch = mkdtempSync(join(tmpdir(), "softnet-setuid-control-"));
  control = SetuidLab.create(await unhardenedBuild(scratch));
  controlAutoload = SetuidLab.create(await unhardenedBuild(scratch, { autoload: true }));
  const info = JSON.parse(readFileSync(join(dist, "build-info.json"), "utf8"));
  version = `softnet ${info.version} (${info.commit})\n`;
}, 300_000);

afterAll(() => {
  hardened?.cleanup();
  control?.cleanup();
  controlAutoload?.cleanup();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

function summary(outcome: Outcome): string {
  return JSON.stringify({ ...outcome, output: outcome.output.slice(0, 400) });
}

describe.skipIf(!runnable && !REQUIRED_IN_CI)(
  "the release binary installed setuid root, run by an unprivileged user",
  () => {
    test("is really setuid root and prints its version", async () => {
      const stat = Bun.spawnSync(["stat", "-c", "%U %a", hardened.binary]).stdout.toString().trim();
      expect(stat).toBe("root 4755");
      const run = Bun.spawnSync(hardened.asAttacker(hardened.binary, ["--version"]), { stdout: "pipe" });
      expect(run.stdout.toString()).toBe(version);
    });

    for (const attack of ATTACKS) {
      test(`blocks ${attack.id}: ${attack.what}`, async () => {
        const outcome = await hardened.run(attack);
        const detail = summary(outcome);
        expect(outcome.rootCode, detail).toBe(false);
        expect(outcome.code, detail).toBe(false);
        expect(outcome.inspector, detail).toBe(false);
        expect(outcome.rootFile, detail).toBe(false);
        expect(outcome.jscOption, detail).toBe(false);
        expect(outcome.versionOk, detail).toBe(true);
      }, 30_000);
    }
  },
);

describe.skipIf(!runnable && !REQUIRED_IN_CI)("control: the same build on the unhardened Bun runtime", () => {
  // The attacks that must succeed against an unhardened setuid Bun executable (Bun 1.4.5). If one
  // stops working, the attack is broken or Bun changed: look before deleting it.
  const mustFall: Record<string, (outcome: Outcome) => boolean> = {
    BUN_BE_BUN: (outcome) => outcome.rootCode,
    "BUN_OPTIONS-preload": (outcome) => outcome.rootCode,
    BUN_INSPECT: (outcome) => outcome.rootCode, // driven through the inspector like a debugger
    "BUN_OPTIONS-cpu-prof": (outcome) => outcome.rootFile,
    BUN_BYTECODE_ORDER_OUT: (outcome) => outcome.rootFile,
    BUN_JSC_: (outcome) => outcome.jscOption,
  };
  for (const [id, fell] of Object.entries(mustFall)) {
    test(`falls to ${id}`, async () => {
      const attack = ATTACKS.find((candidate) => candidate.id === id) as Attack;
      const outcome = await control.run(attack);
      expect(exploited(outcome), summary(outcome)).toBe(true);
      expect(fell(outcome), summary(outcome)).toBe(true);
    }, 30_000);
  }

  test("falls to bunfig (built without --no-compile-autoload-bunfig)", async () => {
    const outcome = await controlAutoload.run(ATTACKS.find((candidate) => candidate.id === "bunfig")!);
    expect(outcome.rootCode, summary(outcome)).toBe(true);
  }, 30_000);

  test("LD_PRELOAD's evil.so works when nothing is setuid (so the blocked result above means something)", () => {
    const so = readdirSync(hardened.base).includes("evil.so") ? join(hardened.base, "evil.so") : undefined;
    if (!so) return; // no gcc: the LD_PRELOAD attack ran without a library
    const run = Bun.spawnSync(
      [
        "setpriv",
        `--reuid=${hardened.uid}`,
        `--regid=${hardened.gid}`,
        "--init-groups",
        "--",
        "/usr/bin/env",
        "-i",
        `LD_PRELOAD=${so}`,
        "/bin/true",
      ],
      { stderr: "pipe" },
    );
    expect(run.stderr.toString()).toContain(`ATTACKER-CODE euid=${hardened.uid}`);
  });
});

/** An AF_UNIX SOCK_DGRAM pair, as Tart hands softnet its VM end. */
function datagramPair(): [number, number] {
  const fds = new Int32Array(2);
  if (libc.socketpair(1 /* AF_UNIX */, 2 /* SOCK_DGRAM */, 0, fds) !== 0)
    throw new Error("socketpair failed");
  return [fds[0]!, fds[1]!];
}

function sh(argv: string[]): string {
  const result = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe" });
  if (result.exitCode !== 0) throw new Error(`${argv.join(" ")}: ${result.stderr.toString()}`);
  return result.stdout.toString();
}

describe.skipIf(!runnable && !REQUIRED_IN_CI)("a full run under every attack at once", () => {
  const namespace = `softnet-suid-${process.pid}`;
  // A user's softnet may use only the bridges /etc/softnet/bridge.conf allows (setuid-bridge.test.ts):
  // these runs get a private /etc that allows every bridge.
  let etc: EtcOverlay;
  beforeAll(() => {
    if (!runnable) return;
    etc = EtcOverlay.create();
    etc.writeFile("softnet/bridge.conf", "allow all\n");
    sh(["ip", "netns", "add", namespace]);
    sh(["ip", "-n", namespace, "link", "set", "lo", "up"]);
    sh(["ip", "-n", namespace, "link", "add", "br0", "type", "bridge"]);
    sh(["ip", "-n", namespace, "addr", "add", "192.0.2.1/24", "dev", "br0"]);
    sh(["ip", "-n", namespace, "link", "set", "br0", "up"]);
  });
  afterAll(() => {
    if (runnable) Bun.spawnSync(["ip", "netns", "delete", namespace]);
    etc?.cleanup();
  });

  /** Every environment hook of the attack list, with .env and bunfig.toml planted in the cwd. */
  function everything(dir: string, rootOnly: string): Record<string, string> {
    const evil = join(dir, "evil.js");
    writeFileSync(
      evil,
      `process.getBuiltinModule("fs").writeFileSync(${JSON.stringify(join(rootOnly, "code-all"))}, "euid="+process.geteuid());`,
    );
    writeFileSync(
      join(dir, ".env"),
      `BUN_INSPECT=127.0.0.1:29229/x?break=1\nBUN_OPTIONS=--preload ${evil}\n`,
    );
    writeFileSync(join(dir, "bunfig.toml"), `preload = [${JSON.stringify(evil)}]\n`);
    Bun.spawnSync(["chown", "-R", `${hardened.uid}:${hardened.gid}`, dir]);
    return {
      PATH: "/usr/bin:/bin",
      BUN_BE_BUN: "1",
      BUN_OPTIONS: `--preload ${evil}`,
      BUN_INSPECT: "127.0.0.1:29229/softnet-attack?break=1",
      BUN_INSPECT_CONNECT_TO: `unix://${dir}/debugger.sock`,
      BUN_INSPECT_PRELOAD: evil,
      BUN_JSC_dumpOptions: "2",
      JSC_dumpOptions: "1",
      NODE_OPTIONS: `--require ${evil}`,
      BUN_BYTECODE_ORDER_OUT: join(rootOnly, "bytecode-order"),
      BUN_TCC_OPTIONS: "-DREACTOR_MAX_EVENTS=1 -run /dev/null",
      TMPDIR: dir,
      CIRRUS_SENTRY_TAGS: "suite=setuid",
    };
  }

  test("softnet attaches to the bridge, drops to the attacker, ignores every hook, stops on SIGINT", async () => {
    const dir = mkdtempSync(join(hardened.base, "everything-"));
    const env = everything(dir, hardened.rootOnly);
    const [vmEnd, hostEnd] = datagramPair();
    const argv = [
      "ip",
      "netns",
      "exec",
      namespace,
      ...etc.wrap(
        hardened.asAttacker(
          hardened.binary,
          ["--vm-fd", "0", "--vm-mac-address", "02:00:00:00:00:01", "--bridge", "br0"],
          env,
        ),
      ),
    ];
    const child = Bun.spawn(argv, {
      cwd: dir,
      env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
      stdin: hostEnd,
      stdout: "pipe",
      stderr: "pipe",
    });
    let stderr = "";
    const reader = (async () => {
      for await (const chunk of child.stderr) stderr += new TextDecoder().decode(chunk);
    })();
    const deadline = Date.now() + 15_000;
    while (!stderr.includes("forwarding for VM") && child.exitCode === null && Date.now() < deadline)
      await Bun.sleep(50);
    try {
      expect(stderr, stderr).toContain("forwarding for VM 02:00:00:00:00:01");
      expect(stderr).toContain(`running as softnet-attacker (uid ${hardened.uid}, gid ${hardened.gid}`);
      // The kernel's word on who it runs as, and on what it kept of its environment.
      const status = readFileSync(`/proc/${child.pid}/status`, "utf8");
      expect(status).toMatch(
        new RegExp(`^Uid:\\s+${hardened.uid}\\s+${hardened.uid}\\s+${hardened.uid}\\s+${hardened.uid}$`, "m"),
      );
      const environ = readFileSync(`/proc/${child.pid}/environ`, "latin1")
        .split("\0")
        .filter((entry) => entry !== "");
      // The scrubber zeroed every entry it dropped. TMPDIR's bytes may remain: glibc's loader
      // already unset it (secure mode) before the scrubber ran, so the scrubber never saw it.
      expect(environ.filter((entry) => !entry.startsWith("TMPDIR="))).toEqual([
        "CIRRUS_SENTRY_TAGS=suite=setuid",
      ]);
      const listening = sh(["ip", "netns", "exec", namespace, "ss", "-Hlnpx", "-t", "-u"]);
      expect(listening).not.toContain(`pid=${child.pid},`);
      expect(
        readdirSync(hardened.rootOnly).filter((name) => name.includes("all") || name === "bytecode-order"),
      ).toEqual([]);
      expect(stderr).not.toContain("JSC options");
      // After the drop the process stays undumpable: its own user cannot read its memory.
      const peek = Bun.spawnSync(
        [
          "setpriv",
          `--reuid=${hardened.uid}`,
          `--regid=${hardened.gid}`,
          "--init-groups",
          "--",
          "cat",
          `/proc/${child.pid}/environ`,
        ],
        { stdout: "pipe", stderr: "pipe" },
      );
      expect(peek.exitCode, peek.stdout.toString()).not.toBe(0);
      expect(peek.stderr.toString()).toContain("Permission denied");
    } finally {
      child.kill("SIGINT");
    }
    expect(await child.exited).toBe(0);
    await reader;
    expect(stderr).toContain("SIGINT received: stopping");
    libc.close(vmEnd);
    libc.close(hostEnd);
  }, 60_000);

  test("SIGUSR1 from the attacker opens no inspector", async () => {
    const dir = mkdtempSync(join(hardened.base, "sigusr1-"));
    Bun.spawnSync(["chown", `${hardened.uid}:${hardened.gid}`, dir]);
    const [vmEnd, hostEnd] = datagramPair();
    const child = Bun.spawn(
      [
        "ip",
        "netns",
        "exec",
        namespace,
        ...etc.wrap(
          hardened.asAttacker(
            hardened.binary,
            ["--vm-fd", "0", "--vm-mac-address", "02:00:00:00:00:01", "--bridge", "br0"],
            { PATH: "/usr/bin:/bin" },
          ),
        ),
      ],
      { cwd: dir, stdin: hostEnd, stdout: "pipe", stderr: "pipe" },
    );
    let stderr = "";
    const reader = (async () => {
      for await (const chunk of child.stderr) stderr += new TextDecoder().decode(chunk);
    })();
    const deadline = Date.now() + 15_000;
    while (!stderr.includes("forwarding for VM") && child.exitCode === null && Date.now() < deadline)
      await Bun.sleep(50);
    expect(stderr).toContain("forwarding for VM");
    // The attacker may signal it (same real uid): Node opens an inspector on SIGUSR1; Bun must not.
    Bun.spawnSync([
      "setpriv",
      `--reuid=${hardened.uid}`,
      `--regid=${hardened.gid}`,
      "--init-groups",
      "--",
      "kill",
      "-USR1",
      String(child.pid),
    ]);
    await Bun.sleep(1000);
    const listening = sh(["ip", "netns", "exec", namespace, "ss", "-Hlnpx", "-t", "-u"]);
    expect(listening).not.toContain(`pid=${child.pid},`);
    expect(listening).not.toContain(":9229");
    child.kill("SIGKILL");
    await child.exited;
    await reader;
    libc.close(vmEnd);
    libc.close(hostEnd);
  }, 60_000);

  test("without the bridge it refuses with one line", async () => {
    const [vmEnd, hostEnd] = datagramPair();
    const run = Bun.spawn(
      [
        "ip",
        "netns",
        "exec",
        namespace,
        ...etc.wrap(
          hardened.asAttacker(
            hardened.binary,
            ["--vm-fd", "0", "--vm-mac-address", "02:00:00:00:00:01", "--bridge", "br9"],
            { BUN_BE_BUN: "1" },
          ),
        ),
      ],
      { stdin: hostEnd, stdout: "pipe", stderr: "pipe" },
    );
    const code = await run.exited;
    const stderr = await new Response(run.stderr).text();
    expect(code).toBe(1);
    expect(stderr.trim().split("\n")).toHaveLength(1);
    expect(stderr).toMatch(/^softnet: .*bridge br9 does not exist/);
    libc.close(vmEnd);
    libc.close(hostEnd);
  }, 30_000);
});
