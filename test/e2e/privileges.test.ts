// Started by an unprivileged user, softnet becomes root through passwordless sudo (replacing
// itself, the VM's fd kept), sets up, and drops back to that user; without sudo rights it refuses
// with one line that says how to fix it. A real user, a real sudoers rule, a real guest.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { EtcOverlay } from "../support/etc-overlay.ts";
import { requireTools } from "../support/tools.ts";
import { type Forwarder, type Guest, run, softnet, Topology } from "./lib/index.ts";

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
  topology = await Topology.create();
});

afterAll(async () => {
  rmSync(SUDOERS, { force: true });
  await topology?.teardown();
  etc.cleanup();
});

/**
 * Runs argv as USER. setpriv execs in place (runuser and su fork and keep a parent that does not
 * pass SIGINT on), so the pid the test signals is softnet's own, as when Tart runs it.
 */
function asUser(argv: string[]): string[] {
  return ["setpriv", `--reuid=${USER}`, `--regid=${USER}`, "--init-groups", "--reset-env", "--", ...argv];
}

/** softnet started by USER, as a person would type it. */
function softnetAsUser(): ReturnType<typeof softnet> {
  return softnet([], {
    description: "softnet run by an unprivileged user",
    wrap: (argv) => etc.wrap(asUser(argv)),
  });
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
    writeFileSync(SUDOERS, `${USER} ALL=(root) NOPASSWD: ${process.execPath}\n`, { mode: 0o440 });
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
    writeFileSync(SUDOERS, `${USER} ALL=(root) NOPASSWD: ${process.execPath}\n`, { mode: 0o440 });
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
