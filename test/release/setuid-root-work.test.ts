// As root, softnet does only what opening the host link needs: no compiling as root, ports below
// 1024 only for root, --expose working under setuid. The Linux
// release binary is installed setuid root and started by an unprivileged user (softnet-attacker)
// with a real guest behind it:
// - Bun's cc() stages its headers in /tmp/bun-cc-<real uid>, a directory the caller may own. With
//   a symlink planted as its `node/` and a hardlink to a root-owned file planted as `stdbool.h`,
//   nothing may be written through them: the compiler runs only after the drop, as the caller.
// - `--expose` below 1024 is refused (the host's own ports belong to root), and `--expose` above
//   works under setuid (nft refuses to run while the real and effective uids differ, so it runs
//   only after the drop, with CAP_NET_ADMIN alone).
// - A forwarded port is held: a port in use on the host is refused, and while the forward lasts no
//   one else (the same user, root) can bind it. Killed by its caller, softnet leaves no forward.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  chownSync,
  linkSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { SetuidLab } from "../../scripts/release/setuid-attacks.ts";
import { ADDRESSES, type Forwarder, type Guest, softnet, Topology, waitFor } from "../e2e/lib/index.ts";
import { REQUIRED_IN_CI } from "../support/ci.ts";
import { EtcOverlay } from "../support/etc-overlay.ts";
import { canRunLinuxX64, isRoot, releaseDist } from "./release-build.ts";

const runnable = canRunLinuxX64 && isRoot;
let lab: SetuidLab;
/** /etc/softnet/bridge.conf for the setuid runs: a user may join only the bridges root allows. */
let etc: EtcOverlay;
let topology: Topology;

beforeAll(async () => {
  if (!runnable) return;
  lab = SetuidLab.create(join(await releaseDist(), "softnet-linux-x64"));
  etc = EtcOverlay.create();
  etc.writeFile("softnet/bridge.conf", "allow br0\n");
  topology = await Topology.create();
}, 300_000);

afterAll(async () => {
  await topology?.teardown();
  lab?.cleanup();
  etc?.cleanup();
});

/** softnet as Tart would start it, but the setuid release binary run by the unprivileged user. */
function setuidSoftnet(extraArgs: string[]) {
  return softnet(extraArgs, {
    description: `setuid softnet ${extraArgs.join(" ")}`.trim(),
    wrap: (argv) => etc.wrap(lab.asAttacker(lab.binary, argv.slice(2), { PATH: "/usr/bin:/bin" })),
  });
}

/** The arguments Tart would pass for a VM with this MAC on the test bridge (VM end on stdin). */
function argvFor(mac: string): string[] {
  return ["--vm-fd", "0", "--vm-mac-address", mac, "--bridge", topology.bridge];
}

/** Root-owned entries under /tmp whose names Bun's cc() uses (`bun-cc-*`, `.*.bun-cc`). */
function rootOwnedCompilerLeftovers(): string[] {
  return readdirSync("/tmp")
    .filter((name) => name.startsWith("bun-cc-") || name.endsWith(".bun-cc"))
    .filter((name) => lstatSync(join("/tmp", name)).uid === 0)
    .sort();
}

describe.skipIf(!runnable && !REQUIRED_IN_CI)(
  "as root only the host link: the setuid build, an unprivileged user",
  () => {
    test("planted /tmp/bun-cc-<uid> symlink and hardlink: nothing is written through them, nothing left by root", async () => {
      const staging = `/tmp/bun-cc-${lab.uid}`;
      rmSync(staging, { recursive: true, force: true });
      const victimDir = join(lab.rootOnly, "cc-victim");
      mkdirSync(victimDir, { mode: 0o700 });
      const victimFile = join(lab.rootOnly, "precious.conf");
      writeFileSync(victimFile, "root's data\n", { mode: 0o644 });
      // A hardlink to a file the user cannot write needs protected_hardlinks=0 (macOS has no such
      // protection at all); restored afterwards.
      const hardlinkSetting = "/proc/sys/fs/protected_hardlinks";
      const protectedBefore = readFileSync(hardlinkSetting, "utf8").trim();
      writeFileSync(hardlinkSetting, "0");
      const leftoversBefore = rootOwnedCompilerLeftovers();
      let guest: Guest | undefined;
      let forwarder: Forwarder | undefined;
      try {
        // What the user plants, as the user: mkdir -m700 /tmp/bun-cc-$UID; ln -s DIR node; ln FILE stdbool.h
        mkdirSync(staging, { mode: 0o700 });
        chownSync(staging, lab.uid, lab.gid);
        symlinkSync(victimDir, join(staging, "node"));
        linkSync(victimFile, join(staging, "stdbool.h"));
        guest = await topology.addGuest();
        forwarder = await guest.attach(setuidSoftnet(["--log-level", "debug"]));
        const lease = await guest.dhcp();
        expect(await guest.ping(ADDRESSES.gateway)).toBe(true);
        expect(forwarder.log).toContain(`running as softnet-attacker (uid ${lab.uid}`);
        expect(lease.address).toStartWith("192.168.64.");
        expect(await forwarder.stop("SIGINT")).toBe(0);
      } finally {
        writeFileSync(hardlinkSetting, protectedBefore);
        await guest?.stopAll();
      }
      // Before the fix, as euid 0: node_api.h and three more in victimDir, precious.conf truncated.
      expect(readdirSync(victimDir)).toEqual([]);
      expect(readFileSync(victimFile, "utf8")).toBe("root's data\n");
      expect(statSync(victimFile).uid).toBe(0);
      expect(rootOwnedCompilerLeftovers()).toEqual(leftoversBefore);
      rmSync(staging, { recursive: true, force: true });
    }, 120_000);

    test("--expose 22:22 is refused with one line: the host's ssh port is root's", async () => {
      const argv = argvFor("02:00:00:00:00:22");
      const result = await topology.hostExec(
        etc.wrap(lab.asAttacker(lab.binary, [...argv, "--expose", "22:22"])),
        {
          stdin: "",
        },
      );
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(
        /^softnet: --expose 22:22: only root may expose a host port below 1024 \(.*--expose 2222:22\)\n$/,
      );
      expect(await topology.hostExec(["nft", "list", "tables"]).then((r) => r.stdout)).not.toContain(
        "softnet_",
      );
    }, 60_000);

    test("--expose 2222:22 works: the host's port 2222 reaches the guest's server", async () => {
      const guest = await topology.addGuest();
      const forwarder = await guest.attach(setuidSoftnet(["--expose", "2222:22"]));
      const lease = await guest.dhcp();
      await guest.startTcpServer(22, "hello-from-a-setuid-forward");
      await waitFor("the port forward to be installed", () =>
        forwarder.log.includes(`port forwards installed: TCP 2222→22 to ${lease.address}`),
      ).catch((error: Error) => {
        throw new Error(`${error.message}\nsoftnet said:\n${forwarder.log}`);
      });
      const fromHost = await topology.hostExec(["nc", "-N", "-w", "2", ADDRESSES.gateway, "2222"], {
        stdin: "",
      });
      expect(fromHost.stdout).toContain("hello-from-a-setuid-forward");
      const status = readFileSync(`/proc/${forwarder.daemon.pid}/status`, "utf8");
      expect(status).toMatch(
        new RegExp(`^Uid:\\s+${lab.uid}\\s+${lab.uid}\\s+${lab.uid}\\s+${lab.uid}$`, "m"),
      );
      expect(status.match(/^CapEff:\s*(\S+)/m)?.[1]).toBe("0000000000001000");
      // While it runs, the port is the forward's: the same user cannot take it with a second
      // softnet or a listener, and neither can root.
      const second = await topology.hostExec(
        etc.wrap(lab.asAttacker(lab.binary, [...argvFor("02:00:00:00:00:23"), "--expose", "2222:22"])),
        { stdin: "", timeoutMs: 20_000 },
      );
      expect(second.code).toBe(1);
      expect(second.stderr).toMatch(
        /^softnet: cannot expose port 2222: it is in use on this host \(held by .*\)\n$/,
      );
      const asUser = await topology.hostExec(lab.asAttacker("/usr/bin/nc", ["-4", "-l", "2222"]), {
        timeoutMs: 3_000,
      });
      expect(asUser.stderr).toContain("Address already in use");
      const asRoot = await topology.hostExec(["nc", "-l", ADDRESSES.gateway, "2222"], { timeoutMs: 3_000 });
      expect(asRoot.stderr).toContain("Address already in use");
      expect(await forwarder.stop("SIGINT")).toBe(0);
      expect(await topology.hostExec(["nft", "list", "tables"]).then((r) => r.stdout)).not.toContain(
        "softnet_",
      );
      await guest.stopAll();
    }, 60_000);

    test("--expose 5432:22 while root's service listens on 5432 is refused with one line naming port and holder", async () => {
      const service = await topology.startTcpServer(topology.hostNamespace, "0.0.0.0", 5432, "root-postgres");
      try {
        const result = await topology.hostExec(
          etc.wrap(lab.asAttacker(lab.binary, [...argvFor("02:00:00:00:00:24"), "--expose", "5432:22"])),
          { stdin: "", timeoutMs: 20_000 },
        );
        expect(result.code).toBe(1);
        expect(result.stderr).toBe(
          "softnet: cannot expose port 5432: it is in use on this host (held by a listening socket of root (uid 0))\n",
        );
        const reply = await topology.hostExec(["nc", "-N", "-w", "2", ADDRESSES.gateway, "5432"], {
          stdin: "",
        });
        expect(reply.stdout).toContain("root-postgres");
      } finally {
        await service.stop("SIGTERM");
      }
    }, 60_000);

    test("killed by its caller (SIGKILL), a setuid softnet leaves no forward; SIGHUP ends it cleanly", async () => {
      const guest = await topology.addGuest();
      const killed = await guest.attach(setuidSoftnet(["--expose", "2228:22"]));
      const lease = await guest.dhcp();
      await waitFor("the port forward to be installed", () =>
        killed.log.includes(`port forwards installed: TCP 2228→22 to ${lease.address}`),
      );
      const table = `softnet_${killed.bridgePort}`;
      // The caller's own kill: softnet runs as the caller after the drop.
      await topology.hostExec(lab.asAttacker("/bin/kill", ["-KILL", String(killed.daemon.pid)]));
      await killed.exited;
      await waitFor(
        `${table} to be deleted`,
        async () => !(await topology.hostExec(["nft", "list", "tables"])).stdout.includes(table),
      );
      await guest.stopAll();

      const next = await topology.addGuest();
      const hungUp = await next.attach(setuidSoftnet(["--expose", "2228:22"]));
      const nextLease = await next.dhcp();
      await waitFor("the port forward to be installed", () =>
        hungUp.log.includes(`port forwards installed: TCP 2228→22 to ${nextLease.address}`),
      );
      expect(await hungUp.stop("SIGHUP")).toBe(0);
      expect(hungUp.log).toContain("stopped (SIGHUP)");
      expect(await topology.hostExec(["nft", "list", "tables"]).then((r) => r.stdout)).not.toContain(
        "softnet_",
      );
      await next.stopAll();
    }, 90_000);
  },
);
