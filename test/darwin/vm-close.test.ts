// When Tart dies without stopping softnet, the VM's end of the socket closes and softnet must exit
// on its own (0, "the VM closed its end"), not linger. This runs the macOS runtime (runOnDarwin)
// against the vmnet double with the double's xnu sockets as the C library, so the close behaves as
// xnu's does (bsd/kern/uipc_usrreq.c unp_detach -> unp_drop(ECONNRESET); see
// test/vmnet-double/xnu-socket.c): the ECONNRESET comes once, possibly in the same receive as the
// VM's last frames, and poll never reports the socket again.
//
// Each run is a separate process (test/darwin/vm-close-on-double.ts), because runOnDarwin drops
// privileges. A run that does not stop within the deadline is killed, and that is the failure.

import { expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { bunCommand } from "../support/emulation.ts";
import { inPrivateNetworkNamespace, makeBridge, REPO } from "./support.ts";

const BRIDGE = "sdbr3";
const DEADLINE_MS = 20_000;

function runSoftnet(vm: "frames-then-close" | "close", extra: string[] = []) {
  const env = { ...process.env };
  delete env.SUDO_UID;
  delete env.SUDO_GID;
  const result = Bun.spawnSync(
    [
      ...bunCommand(),
      "test/darwin/vm-close-on-double.ts",
      "--vm",
      vm,
      "--bridge",
      BRIDGE,
      "--vm-mac-address",
      "02:00:00:00:00:01",
      "--log-level",
      "debug",
      ...extra,
    ],
    { cwd: REPO, env, stdout: "pipe", stderr: "pipe", timeout: DEADLINE_MS, killSignal: "SIGKILL" },
  );
  const log = result.stderr.toString();
  return { exitCode: result.exitCode, killed: result.signalCode === "SIGKILL", log };
}

inPrivateNetworkNamespace(
  import.meta.path,
  "softnet exits when the VM's end closes (macOS semantics)",
  () => {
    test("the VM sends frames and closes at once: the frames are handled, then softnet stops (exit 0)", () => {
      // No IPv6 chatter on the bridge: an idle VM must mean an idle softnet.
      writeFileSync("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
      writeFileSync("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1");
      makeBridge(BRIDGE, "198.18.3.1/24");
      const run = runSoftnet("frames-then-close");
      expect({ killed: run.killed, exitCode: run.exitCode }, run.log).toEqual({ killed: false, exitCode: 0 });
      expect(run.log).toContain("vm: closed its end");
      expect(run.log).toContain("mac-spoof"); // the frames that came before the close were read
      expect(run.log).toContain("stopped (the VM closed its end)");
      expect(run.log).toContain("vmnet double: 0 violations");
    }, 60_000);

    test("an idle VM closes: softnet's waiting poll is not woken, softnet still stops (exit 0)", () => {
      const run = runSoftnet("close");
      expect({ killed: run.killed, exitCode: run.exitCode }, run.log).toEqual({ killed: false, exitCode: 0 });
      expect(run.log).toContain("stopped (the VM closed its end)");
      expect(run.log).toContain("vmnet double: 0 violations");
    }, 60_000);

    test("on a vmnet without the address-family forwarding functions only --expose fails, saying what it needs", () => {
      const exposed = runSoftnet("close", ["--variant", "before-macos-11", "--expose", "2222:22"]);
      expect(exposed.exitCode, exposed.log).toBe(1);
      expect(exposed.log).toMatch(
        /softnet: --expose needs vmnet port forwarding, but \S+ does not export vmnet_interface_add_ip_port_forwarding_rule \(vmnet's port forwarding with an address family needs macOS 11 or later\)/,
      );
      const plain = runSoftnet("close", ["--variant", "before-macos-11"]);
      expect({ killed: plain.killed, exitCode: plain.exitCode }, plain.log).toEqual({
        killed: false,
        exitCode: 0,
      });
      expect(plain.log).toContain("stopped (the VM closed its end)");
    }, 60_000);
  },
);
