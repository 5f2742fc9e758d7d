/**
 * TCP throughput of a real guest (iperf3), built on the e2e harness: a guest namespace whose kernel
 * TAP eth0 is relayed by socat to a socketpair, and on the other end either softnet or a transparent
 * socat relay (each to its own TAP port on br0); plus a plain veth port on the same bridge as the
 * kernel-only baseline. The iperf3 server listens on the gateway 192.168.64.1 (the bridge's address
 * in the host namespace), which softnet lets a leased guest reach.
 */

import { rmSync } from "node:fs";
import { join } from "node:path";
import { ADDRESSES, type Guest, softnet, Topology, transparentRelay } from "../../test/e2e/lib/index.ts";
import { destroyNamespaceSync } from "../../test/e2e/lib/netns.ts";
import { cpuSeconds, type Resources, sh, sleep } from "./system.ts";

export type TcpPath = "veth" | "socat relay" | "softnet";

export interface TcpResult {
  path: TcpPath;
  description: string;
  /** Guest → host (iperf3 client in the guest sends): the VM→host direction. */
  guestToHostGbit?: number;
  /** Host → guest (iperf3 -R): the host→VM direction. */
  hostToGuestGbit?: number;
  guestToHostRetransmits?: number;
  hostToGuestRetransmits?: number;
  /** CPU (1.0 = one core) of the processes in the path during each run, by role. */
  guestToHostCpu?: Record<string, number>;
  hostToGuestCpu?: Record<string, number>;
}

const VETH_GUEST_ADDRESS = "192.168.64.200";
const IPERF_PORT = 5201;

interface IperfJson {
  error?: string;
  end?: {
    sum_received?: { bits_per_second: number };
    sum_sent?: { bits_per_second: number; retransmits?: number };
  };
}

export class GuestTcpBench {
  readonly results: TcpResult[] = [];
  private topology: Topology | undefined;
  private workDir = "";
  private vethNamespace: string | undefined;

  constructor(
    resources: Resources,
    private readonly seconds: number,
    private readonly fail: (what: string, error: unknown) => void,
    private readonly say: (line: string) => void,
  ) {
    resources.onCleanup(() => {
      if (this.vethNamespace !== undefined) destroyNamespaceSync(this.vethNamespace);
      this.topology?.teardownSync();
    });
  }

  async run(): Promise<void> {
    try {
      this.topology = await Topology.create();
    } catch (error) {
      this.fail("building the e2e topology for iperf3", error);
      return;
    }
    const topology = this.topology;
    this.workDir = topology.workDir;
    try {
      const server = topology.spawn(topology.hostNamespace, "iperf3 server", [
        "iperf3",
        "-s",
        "-B",
        ADDRESSES.gateway,
        "-p",
        String(IPERF_PORT),
      ]);
      await this.waitForListener(topology, () => server.running);

      await this.measureVeth(topology);

      const guest = await topology.addGuest();
      await this.measureGuest(guest, "socat relay", "guest socat + transparent socat relay (no softnet)");
      await this.measureGuest(guest, "softnet", "guest socat + softnet (full filtering)");
    } catch (error) {
      this.fail("iperf3 set-up", error);
    } finally {
      if (this.vethNamespace !== undefined) {
        destroyNamespaceSync(this.vethNamespace);
        this.vethNamespace = undefined;
      }
      await topology.teardown();
      this.topology = undefined;
    }
  }

  private async waitForListener(topology: Topology, running: () => boolean): Promise<void> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const result = await topology.hostExec(["ss", "-Hltn", `sport = :${IPERF_PORT}`]);
      if (result.stdout.trim() !== "") return;
      if (!running()) throw new Error("the iperf3 server exited");
      if (Date.now() > deadline) throw new Error("timed out waiting for the iperf3 server");
      await sleep(50);
    }
  }

  /** A namespace on a plain veth port of br0, static address: the kernel-only path. */
  private async measureVeth(topology: Topology): Promise<void> {
    const namespace = `${topology.name}-veth`;
    this.vethNamespace = namespace;
    const result: TcpResult = { path: "veth", description: "plain veth port (kernel only, no relay)" };
    this.results.push(result);
    try {
      sh(["ip", "netns", "add", namespace]);
      sh(["ip", "-n", namespace, "link", "set", "lo", "up"]);
      sh([
        "ip",
        "-n",
        topology.hostNamespace,
        "link",
        "add",
        "vbench0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        namespace,
      ]);
      sh(["ip", "-n", topology.hostNamespace, "link", "set", "vbench0", "master", topology.bridge, "up"]);
      sh(["ip", "-n", namespace, "addr", "add", `${VETH_GUEST_ADDRESS}/24`, "dev", "eth0"]);
      sh(["ip", "-n", namespace, "link", "set", "eth0", "up"]);
      const exec = (argv: string[]) =>
        topology.exec(namespace, argv, { timeoutMs: (this.seconds + 15) * 1000 });
      await this.iperfBoth(result, exec);
    } catch (error) {
      this.fail("iperf3 over veth", error);
    } finally {
      destroyNamespaceSync(namespace);
      this.vethNamespace = undefined;
    }
  }

  private async measureGuest(guest: Guest, path: TcpPath, description: string): Promise<void> {
    const result: TcpResult = { path, description };
    this.results.push(result);
    try {
      const forwarder = await guest.attach(path === "softnet" ? softnet() : transparentRelay());
      try {
        await guest.dhcp();
        if (path === "softnet") {
          // softnet learned the lease from the ACK it forwarded; give its log a moment to say so.
          const deadline = Date.now() + 5_000;
          while (!/lease (learned|renewed)/.test(forwarder.log) && Date.now() < deadline) await sleep(20);
          if (!/lease (learned|renewed)/.test(forwarder.log)) {
            throw new Error(`softnet did not learn the guest's lease:\n${forwarder.log}`);
          }
        }
        // The lease file can be ahead of the interface by a moment: wait until the gateway answers.
        const deadline = Date.now() + 10_000;
        while (!(await guest.ping(ADDRESSES.gateway, { waitSeconds: 1 }))) {
          if (Date.now() > deadline)
            throw new Error(`${guest.name} cannot reach the gateway through ${path}`);
        }
        const nicRelay = guest.daemons().find((daemon) => daemon.name.includes("NIC relay"));
        const pids: Record<string, number> = { [path]: forwarder.daemon.pid };
        if (nicRelay) pids["guest socat"] = nicRelay.pid;
        await this.iperfBoth(
          result,
          (argv) => guest.exec(argv, { timeoutMs: (this.seconds + 15) * 1000 }),
          pids,
        );
      } finally {
        await guest.stopDhcp();
        await guest.detach();
        // udhcpc may leave its lease file behind; the next attach must wait for a fresh lease.
        rmSync(join(this.workDir, `${guest.name}.lease`), { force: true });
      }
    } catch (error) {
      this.fail(`iperf3 through ${path}`, error);
    }
  }

  private async iperfBoth(
    result: TcpResult,
    exec: (argv: string[]) => Promise<{ code: number; stdout: string; stderr: string }>,
    pids: Record<string, number> = {},
  ): Promise<void> {
    for (const reverse of [false, true]) {
      const argv = [
        "iperf3",
        "-c",
        ADDRESSES.gateway,
        "-p",
        String(IPERF_PORT),
        "-t",
        String(this.seconds),
        "-J",
        ...(reverse ? ["-R"] : []),
      ];
      const cpuBefore = Object.fromEntries(
        Object.entries(pids).map(([role, pid]) => [role, cpuSeconds(pid)]),
      );
      const start = performance.now();
      const output = await exec(argv);
      const elapsed = (performance.now() - start) / 1000;
      const cpu: Record<string, number> = {};
      for (const [role, pid] of Object.entries(pids)) {
        try {
          cpu[role] = (cpuSeconds(pid) - cpuBefore[role]!) / elapsed;
        } catch {
          // it exited
        }
      }
      let parsed: IperfJson | undefined;
      try {
        parsed = JSON.parse(output.stdout) as IperfJson;
      } catch {
        parsed = undefined;
      }
      const bits = parsed?.end?.sum_received?.bits_per_second;
      if (output.code !== 0 || bits === undefined) {
        this.fail(
          `iperf3 ${reverse ? "host→guest" : "guest→host"} through ${result.path}`,
          new Error(parsed?.error ?? (output.stderr.trim() || output.stdout.slice(0, 500))),
        );
        continue;
      }
      const retransmits = parsed?.end?.sum_sent?.retransmits;
      if (reverse) {
        result.hostToGuestGbit = bits / 1e9;
        result.hostToGuestRetransmits = retransmits;
        result.hostToGuestCpu = cpu;
      } else {
        result.guestToHostGbit = bits / 1e9;
        result.guestToHostRetransmits = retransmits;
        result.guestToHostCpu = cpu;
      }
      this.say(
        `iperf3 ${result.path.padEnd(11)} ${reverse ? "host→guest" : "guest→host"}: ${(bits / 1e9).toFixed(2)} Gbit/s`,
      );
    }
  }
}
