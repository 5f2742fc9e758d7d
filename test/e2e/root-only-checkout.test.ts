// softnet started by root from a checkout only root can read (a clone in root's 0700 home): softnet
// drops to nobody, who cannot read a byte of the checkout, so everything softnet needs from it (its
// modules, its C sources) must be read before the drop, as part of loading the program. A real guest
// gets a lease and reaches the host through it; `npm run demo` (bun scripts/demo.ts) from the same
// checkout runs to its end.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { cpSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { ADDRESSES, commandForwarder, run, Topology } from "./lib/index.ts";

const REPOSITORY = resolve(import.meta.dir, "../..");
let parent: string;
let checkout: string;
let topology: Topology;

beforeAll(async () => {
  // mkdtemp makes the directory 0700, like /root: nobody can search it.
  parent = mkdtempSync(join(tmpdir(), "softnet-root-only-"));
  checkout = join(parent, "softnet");
  for (const entry of ["package.json", "bunfig.toml", "tsconfig.json", "src", "scripts", "test"]) {
    cpSync(join(REPOSITORY, entry), join(checkout, entry), { recursive: true });
  }
  // node_modules holds Bun itself (~100 MB): hard links, which cost nothing on the same file system
  // and are as unreachable for nobody as copies, since they sit under the 0700 directory.
  const linked = await run(["cp", "-al", join(REPOSITORY, "node_modules"), join(checkout, "node_modules")], {
    timeoutMs: 60_000,
  });
  if (linked.code !== 0) {
    cpSync(join(REPOSITORY, "node_modules"), join(checkout, "node_modules"), { recursive: true });
  }
  topology = await Topology.create();
}, 120_000);

afterAll(async () => {
  await topology?.teardown();
  if (parent !== undefined) rmSync(parent, { recursive: true, force: true });
});

test("the checkout is out of nobody's reach", async () => {
  expect(statSync(parent).mode & 0o777).toBe(0o700);
  const asNobody = await run([
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "cat",
    join(checkout, "src/platform/linux/epoll-reactor.c"),
  ]);
  expect(asNobody.code).not.toBe(0);
  expect(asNobody.stderr).toContain("Permission denied");
});

test("softnet from a root-only checkout drops to nobody and forwards a real guest's traffic", async () => {
  const guest = await topology.addGuest();
  const forwarder = await guest.attach(
    commandForwarder(
      "softnet from a root-only checkout",
      (context) => [
        join(checkout, "node_modules/.bin/bun"),
        "src/main.ts",
        "--vm-fd",
        "0",
        "--vm-mac-address",
        context.vmMac,
        "--bridge",
        context.bridge,
        "--log-level",
        "debug",
      ],
      { cwd: checkout },
    ),
  );
  try {
    const lease = await guest.dhcp();
    expect(lease.address).toStartWith("192.168.64.");
    expect(await guest.ping(ADDRESSES.gateway)).toBe(true);
    expect(forwarder.log).toContain("running as nobody (uid 65534");
    expect(forwarder.log).not.toContain("EACCES");
    expect(await forwarder.stop("SIGINT")).toBe(0);
  } finally {
    await guest.stopAll();
  }
}, 60_000);

test("npm run demo from a root-only checkout runs to its end", async () => {
  const demo = await run([join(checkout, "node_modules/.bin/bun"), "scripts/demo.ts"], {
    cwd: checkout,
    timeoutMs: 240_000,
  });
  const output = `${demo.stdout}\n${demo.stderr}`;
  expect(output).not.toContain("EACCES");
  expect(output).not.toContain("unexpected!");
  expect(demo.code).toBe(0);
}, 300_000);
