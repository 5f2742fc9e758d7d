// PortForwards when the backend keeps failing (nft broken, the kernel refusing): the runtime asks
// for a reconcile every second, so every failure is retried; the log gets a warning when a failure
// starts or changes, then one a minute, and the success that ends it says how many attempts failed.
import { describe, expect, test } from "bun:test";
import { Logger } from "../../src/log.ts";
import { type PortForwardBackend, PortForwards } from "../../src/port-forwards.ts";
import { formatIpv4, parseIpv4 } from "../../src/wire/bytes.ts";

class FlakyBackend implements PortForwardBackend {
  failure: string | undefined = "nft said no";
  calls: string[] = [];
  async install(_ports: readonly unknown[], address: number): Promise<void> {
    this.calls.push(`install ${formatIpv4(address)}`);
    if (this.failure !== undefined) throw new Error(this.failure);
  }
  async removeAll(): Promise<void> {
    this.calls.push("removeAll");
    if (this.failure !== undefined) throw new Error(this.failure);
  }
}

function setUp(desired: () => number) {
  const backend = new FlakyBackend();
  const lines: string[] = [];
  const forwards = new PortForwards(
    [{ externalPort: 2222, internalPort: 22 }],
    backend,
    new Logger("info", (line) => lines.push(line.trimEnd())),
    desired,
  );
  return { backend, lines, forwards };
}

describe("a port forward update that keeps failing", () => {
  test("is retried on every reconcile, warned about once, then once every 60 failed attempts", async () => {
    const { backend, lines, forwards } = setUp(() => parseIpv4("192.168.64.5")!);
    for (let attempt = 1; attempt <= 130; attempt++) await forwards.reconcile();
    expect(backend.calls.length).toBe(130);
    expect(lines).toEqual([
      expect.stringMatching(/ warn: could not update port forwards \(2222→22\): nft said no; will retry$/),
      expect.stringMatching(/ warn: .*nft said no; will retry \(60 failed attempts so far\)$/),
      expect.stringMatching(/ warn: .*nft said no; will retry \(120 failed attempts so far\)$/),
    ]);
  });

  test("a different failure is warned about at once", async () => {
    const { backend, lines, forwards } = setUp(() => parseIpv4("192.168.64.5")!);
    await forwards.reconcile();
    await forwards.reconcile();
    backend.failure = "nft is gone";
    await forwards.reconcile();
    expect(lines).toEqual([
      expect.stringMatching(/nft said no; will retry$/),
      expect.stringMatching(/nft is gone; will retry \(3 failed attempts so far\)$/),
    ]);
  });

  test("the success that ends it says how many attempts failed, and the count starts again", async () => {
    let desired = parseIpv4("192.168.64.5")!;
    const { backend, lines, forwards } = setUp(() => desired);
    for (let attempt = 1; attempt <= 3; attempt++) await forwards.reconcile();
    backend.failure = undefined;
    await forwards.reconcile();
    desired = -1;
    await forwards.reconcile();
    expect(lines.slice(1)).toEqual([
      expect.stringMatching(
        / info: port forwards installed: TCP 2222→22 to 192\.168\.64\.5 \(after 3 failed attempts\)$/,
      ),
      expect.stringMatching(/ info: port forwards removed \(2222→22\): the VM has no valid lease$/),
    ]);
    expect(forwards.installedAddress).toBe(-1);
  });
});

describe("forwards that vanish behind softnet's back (their nft session ended)", () => {
  test("are installed again on the next reconcile, with one warning that says so", async () => {
    const { backend, lines, forwards } = setUp(() => parseIpv4("192.168.64.5")!);
    backend.failure = undefined;
    let intact = true;
    (backend as PortForwardBackend).intact = () => intact;
    await forwards.reconcile();
    await forwards.reconcile(); // nothing changed: nothing to do
    expect(backend.calls).toEqual(["install 192.168.64.5"]);
    intact = false;
    await forwards.reconcile();
    expect(backend.calls).toEqual(["install 192.168.64.5", "install 192.168.64.5"]);
    expect(lines.filter((line) => line.includes(" warn: "))).toEqual([
      expect.stringMatching(
        /port forwards to 192\.168\.64\.5 vanished \(their owner ended\); installing them again$/,
      ),
    ]);
    expect(forwards.installedAddress).toBe(parseIpv4("192.168.64.5")!);
  });
});
