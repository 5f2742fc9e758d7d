// BridgePortWatch against real interfaces: whether a TAP is still a port of the bridge softnet put
// it on, as rtnetlink says once a second (runtime.ts stops softnet when it is not). Needs root.
// Like tap.test.ts, this file runs itself again inside a private network namespace, so the bridges
// and TAPs it makes never touch the host's own interfaces and vanish with the namespace.
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { BridgePortWatch } from "../../src/platform/linux/port-watch.ts";
import { REQUIRED_IN_CI } from "../support/ci.ts";
import { bunCommand } from "../support/emulation.ts";

const NETNS_VARIABLE = "SOFTNET_TEST_NETNS";
const insideNamespace = process.env[NETNS_VARIABLE];

function ip(...args: string[]): void {
  const result = Bun.spawnSync(["ip", ...args], { stdout: "pipe", stderr: "pipe" });
  if (result.exitCode !== 0) {
    throw new Error(`ip ${args.join(" ")} failed (${result.exitCode}): ${result.stderr.toString().trim()}`);
  }
}

/** The interface's index (`ip netns exec` mounts a /sys showing this namespace's interfaces). */
function indexOf(name: string): number {
  return Number(readFileSync(`/sys/class/net/${name}/ifindex`, "utf8"));
}

if (insideNamespace === undefined) {
  const canRun = process.getuid?.() === 0 && Bun.which("ip") !== null && existsSync("/dev/net/tun");
  test.skipIf(!canRun && !REQUIRED_IN_CI)(
    "port watch tests, run inside a private network namespace",
    () => {
      const namespace = `softnet-test-portwatch-${process.pid}`;
      ip("netns", "add", namespace);
      try {
        const inner = Bun.spawnSync(
          ["ip", "netns", "exec", namespace, ...bunCommand(), "test", import.meta.path],
          {
            cwd: resolve(import.meta.dir, "../.."),
            env: { ...process.env, [NETNS_VARIABLE]: namespace },
            stdout: "inherit",
            stderr: "inherit",
          },
        );
        expect(inner.exitCode).toBe(0);
      } finally {
        ip("netns", "del", namespace);
      }
    },
    60_000,
  );
} else {
  describe("BridgePortWatch", () => {
    test("follows a TAP as it is taken off its bridge, put on another, put back, and its bridge deleted", () => {
      ip("link", "add", "brw0", "type", "bridge");
      ip("link", "add", "brw1", "type", "bridge");
      ip("tuntap", "add", "dev", "tapw0", "mode", "tap");
      ip("link", "set", "tapw0", "master", "brw0");
      const watch = BridgePortWatch.open(indexOf("tapw0"), indexOf("brw0"));
      if (typeof watch === "string") throw new Error(watch);
      try {
        expect(watch.portState()).toBe("attached");
        ip("link", "set", "tapw0", "nomaster");
        expect(watch.portState()).toBe("detached");
        expect(watch.bridgeExists()).toBe(true);
        ip("link", "set", "tapw0", "master", "brw1");
        expect(watch.portState()).toBe("detached");
        ip("link", "set", "tapw0", "master", "brw0");
        expect(watch.portState()).toBe("attached");
        ip("link", "del", "brw0");
        expect(watch.portState()).toBe("detached");
        expect(watch.bridgeExists()).toBe(false);
        // A new bridge of the same name is another bridge: the TAP is not on it.
        ip("link", "add", "brw0", "type", "bridge");
        ip("link", "set", "tapw0", "master", "brw0");
        expect(watch.portState()).toBe("detached");
        ip("link", "del", "tapw0");
        expect(watch.portState()).toBe("no-interface");
      } finally {
        watch.close();
      }
    });

    test("an index no interface has is no-interface, asked as often as wanted", () => {
      const watch = BridgePortWatch.open(999_999, 999_998);
      if (typeof watch === "string") throw new Error(watch);
      try {
        for (let attempt = 0; attempt < 3; attempt++) expect(watch.portState()).toBe("no-interface");
        expect(watch.bridgeExists()).toBe(false);
      } finally {
        watch.close();
      }
    });
  });
}
