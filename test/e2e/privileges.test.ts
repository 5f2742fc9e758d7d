// Started by an unprivileged user, softnet becomes root through passwordless sudo (replacing
// itself, the VM's fd kept), sets up, and drops back to that user; without sudo rights it refuses
// with one line that says how to fix it. A real user, a real sudoers rule, a real guest.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { EtcOverlay } from "../support/etc-overlay.ts";
import { checkoutReadableByOthers, readableBun } from "../support/readable-checkout.ts";
import { requireTools } from "../support/tools.ts";
import {
  closeFd,
  datagramSocketPair,
  type Forwarder,
  type Guest,
  run,
  softnet,
  Topology,
  waitFor,
} from "./lib/index.ts";

/** This Bun, by a path USER can reach. */
const BUN = readableBun();

const USER = "softnet-e2e";
const SUDOERS = "/etc/sudoers.d/softnet-e2e";
let topology: Topology;
let uid: number;
/** A non-root caller may use only the bridges /etc/softnet/bridge.conf allows: this one allows br0. */
const etc = EtcOverlay.create();
etc.writeFile("softnet/bridge.conf", "allow br0\n");

beforeAll(async () => {
  requireTools(["id", "useradd", "setpriv", "sudo", "pgrep"]);
  if ((await run(["id", "-u", USER])).code !== 0) {
    const added = await run([
      "useradd",
      "--system",
      "--no-create-home",
      "--shell",
      "/usr/sbin/nologin",
      USER,
    ]);
    expect(added.code).toBe(0);
  }
  uid = Number((await run(["id", "-u", USER])).stdout.trim());
  mkdirSync(usersOwn, { mode: 0o700 });
  chownSync(usersOwn, uid, uid);
  topology = await Topology.create();
});

/** A directory only root can write (mode 0700), and one USER owns, for --capture. */
const scratch = mkdtempSync("/var/tmp/softnet-privileges-");
chmodSync(scratch, 0o755);
const rootOnly = join(scratch, "root-only");
mkdirSync(rootOnly, { mode: 0o700 });
const usersOwn = join(scratch, "users-own");

afterAll(async () => {
  rmSync(scratch, { recursive: true, force: true });
  rmSync(SUDOERS, { force: true });
  await topology?.teardown();
  etc.cleanup();
});

/**
 * Runs argv as USER. setpriv execs in place (runuser and su fork and keep a parent that does not
 * pass SIGINT on), so the pid the test signals is softnet's own, as when Tart runs it.
 */
/**
 * argv run as USER, from a copy of the checkout USER can read (the checkout may be root's alone, as
 * a clone in root's home is), with this Bun by its path there.
 */
function asUser(argv: string[]): string[] {
  const readable = argv.map((part) => (part === process.execPath ? BUN : part));
  return [
    "setpriv",
    `--reuid=${USER}`,
    `--regid=${USER}`,
    "--init-groups",
    "--reset-env",
    "--",
    "/usr/bin/env",
    "--chdir",
    checkoutReadableByOthers(),
    ...readable,
  ];
}

/** softnet started by USER, as a person would type it (with `env` set for it). */
function softnetAsUser(args: string[] = [], env: Record<string, string> = {}): ReturnType<typeof softnet> {
  const variables = Object.entries(env).map(([name, value]) => `${name}=${value}`);
  return softnet(args, {
    description: `softnet ${args.join(" ")} run by an unprivileged user`.trim(),
    wrap: (argv) => etc.wrap(asUser(variables.length === 0 ? argv : ["/usr/bin/env", ...variables, ...argv])),
  });
}

/**
 * USER runs `sudo -n softnet ... args` on a VM socket of its own, as the README's sudoers rule lets
 * them, until softnet exits (10 s at most): exit code and stderr, or code null when it was still
 * running then (it had started: it is killed).
 */
let sudoRuns = 0;
async function sudoSoftnetToExit(args: string[]): Promise<{ code: number | null; stderr: string }> {
  const pair = datagramSocketPair();
  const argv = [
    "/usr/bin/sudo",
    "-n",
    process.execPath,
    "src/main.ts",
    "--vm-fd",
    "0",
    "--vm-mac-address",
    `02:00:00:00:01:${(++sudoRuns).toString(16).padStart(2, "0")}`,
    "--bridge",
    topology.bridge,
    ...args,
  ];
  const child = Bun.spawn(["ip", "netns", "exec", topology.hostNamespace, ...etc.wrap(asUser(argv))], {
    stdin: pair.hostEnd,
    stdout: "pipe",
    stderr: "pipe",
  });
  // Still running after 10 s: it started. SIGTERM, which sudo passes on, so no softnet outlives the
  // test holding its MAC on the bridge; SIGKILL only if that does not end it.
  let started = false;
  const timer = setTimeout(() => {
    started = true;
    child.kill("SIGTERM");
    setTimeout(() => child.kill("SIGKILL"), 5_000).unref();
  }, 10_000);
  const [exitCode, stderr] = await Promise.all([child.exited, new Response(child.stderr).text()]);
  clearTimeout(timer);
  closeFd(pair.vmEnd);
  closeFd(pair.hostEnd);
  return { code: started ? null : exitCode, stderr };
}

/** The softnet process under sudo (sudo stays as its parent to relay signals). */
async function softnetProcess(forwarder: Forwarder): Promise<number> {
  // The forwarder's pid became sudo (softnet exec'd it); softnet runs as its child.
  const found = await run(["pgrep", "-P", String(forwarder.daemon.pid)]);
  expect(found.code).toBe(0);
  return Number(found.stdout.trim());
}

describe("an unprivileged user", () => {
  let guest: Guest;

  test("with passwordless sudo: softnet escalates, forwards, and runs as that user", async () => {
    writeFileSync(SUDOERS, `${USER} ALL=(root) NOPASSWD: ${BUN}\n`, { mode: 0o440 });
    guest = await topology.addGuest();
    const forwarder = await guest.attach(softnetAsUser());
    const lease = await guest.dhcp();
    expect(lease.router).toBe("192.168.64.1");
    const pid = await softnetProcess(forwarder);
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    expect(status.match(/^Uid:\s*(.*)$/m)?.[1]).toBe(`${uid}\t${uid}\t${uid}\t${uid}`);
    expect(status.match(/^CapEff:\s*(\S+)/m)?.[1]).toBe("0000000000000000");
    expect(forwarder.log).toContain(`running as ${USER} (uid ${uid}`);
    // Tart's SIGINT reaches softnet through sudo; the clean exit comes back through it too.
    expect(await forwarder.stop("SIGINT")).toBe(0);
    await guest.stopAll();
  });

  test("with passwordless sudo, a bridge /etc/softnet/bridge.conf does not allow is refused", async () => {
    writeFileSync(SUDOERS, `${USER} ALL=(root) NOPASSWD: ${BUN}\n`, { mode: 0o440 });
    await topology.hostExec(["ip", "link", "add", "br9", "type", "bridge"]);
    await topology.hostExec(["ip", "addr", "add", "192.0.2.1/24", "dev", "br9"]);
    const result = await topology.hostExec(
      etc.wrap(
        asUser([
          process.execPath,
          "src/main.ts",
          "--vm-fd",
          "0",
          "--vm-mac-address",
          "02:00:00:00:00:09",
          "--bridge",
          "br9",
        ]),
      ),
    );
    expect(result.code).toBe(1);
    expect(result.stderr).toStartWith(
      `softnet: uid ${uid} may not use bridge br9: no line of /etc/softnet/bridge.conf says "allow br9" or "allow all"`,
    );
  });

  test("its own copy asked for --user root: the sudo re-exec still runs as that user, the capture theirs", async () => {
    writeFileSync(SUDOERS, `${USER} ALL=(root) NOPASSWD: ${BUN}\n`, { mode: 0o440 });
    const capture = join(usersOwn, "reexec.pcap");
    const guest = await topology.addGuest();
    const forwarder = await guest.attach(
      softnetAsUser(["--user", "root", "--group", "0", "--capture", capture]),
    );
    // The start-up line comes once set-up is done, which may be after the link is up.
    await waitFor("softnet's start-up line", () =>
      forwarder.log.includes(`running as ${USER} (uid ${uid}, gid `),
    );
    const pid = await softnetProcess(forwarder);
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    expect(status.match(/^Uid:\s*(.*)$/m)?.[1]).toBe(`${uid}\t${uid}\t${uid}\t${uid}`);
    expect(statSync(capture).uid).toBe(uid);
    expect(await forwarder.stop("SIGINT")).toBe(0);
    await guest.stopAll();
  });

  test("with SENTRY_DSN and a sudoers rule that does not let it through: a warning, and softnet runs", async () => {
    writeFileSync(SUDOERS, `${USER} ALL=(root) NOPASSWD: ${BUN}\n`, { mode: 0o440 });
    const guest = await topology.addGuest();
    const forwarder = await guest.attach(softnetAsUser([], { SENTRY_DSN: "http://key@127.0.0.1:9/1" }));
    expect(forwarder.log).toContain(
      "warn: sudo does not let SENTRY_DSN through (the sudoers rule has no SETENV): running without them",
    );
    // The start-up line comes once set-up is done, which may be after the link is up.
    await waitFor("softnet's start-up line", () => forwarder.log.includes(`running as ${USER} (uid ${uid}`));
    expect(await forwarder.stop("SIGINT")).toBe(0);
    await guest.stopAll();
  });

  test("without sudo rights: exit 1 and one line saying how to fix it", async () => {
    rmSync(SUDOERS, { force: true });
    const result = await topology.hostExec(
      asUser([
        process.execPath,
        "src/main.ts",
        "--vm-fd",
        "0",
        "--vm-mac-address",
        "02:00:00:00:00:01",
        "--bridge",
        topology.bridge,
      ]),
    );
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /^softnet: root privileges are required and passwordless sudo is not available \(.*sudoers.*setuid root.*\)\n$/,
    );
  });
});

describe("a user with the README's sudoers rule (sudo -n softnet ...) cannot choose whom softnet runs as", () => {
  const refusals: Array<[string, string[], string]> = [
    ["--user root", ["--user", "root"], "--user root"],
    ["--user 0", ["--user", "0"], "--user 0"],
    ["--user of another user", ["--user", "nobody"], "--user nobody"],
    ["--group 0", ["--group", "0"], "--group 0"],
  ];
  for (const [what, flags, named] of refusals) {
    test(`${what}: refused with one line, and the --capture file is never created`, async () => {
      writeFileSync(SUDOERS, `${USER} ALL=(root) NOPASSWD: ${BUN}\n`, { mode: 0o440 });
      const capture = join(rootOnly, `${flags.join("-")}.pcap`);
      const result = await sudoSoftnetToExit([...flags, "--capture", capture]);
      expect(result.code, result.stderr).toBe(1);
      expect(result.stderr.trim().split("\n")).toHaveLength(1);
      expect(result.stderr).toStartWith(
        `softnet: ${named}: softnet started by uid ${uid} (through sudo) runs only as`,
      );
      expect(existsSync(capture)).toBe(false);
    }, 30_000);
  }

  test("--user 0 --capture-overwrite leaves a root-owned file as it was", async () => {
    writeFileSync(SUDOERS, `${USER} ALL=(root) NOPASSWD: ${BUN}\n`, { mode: 0o440 });
    const precious = join(rootOnly, "authorized_keys");
    writeFileSync(precious, "ssh-ed25519 AAAA root's own key\n", { mode: 0o600 });
    const result = await sudoSoftnetToExit(["--user", "0", "--capture", precious, "--capture-overwrite"]);
    expect(result.code, result.stderr).toBe(1);
    expect(readFileSync(precious, "utf8")).toBe("ssh-ed25519 AAAA root's own key\n");
  }, 30_000);
});
