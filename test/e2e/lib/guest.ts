// A guest namespace standing in for the VM: its kernel network stack is the guest OS, its eth0 a
// TAP whose frames socat relays to one end of a datagram socketpair, exactly the "one datagram, one
// frame" socket that Tart gives softnet. Real clients run in it: udhcpc, ping, nc, dig.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Forwarder, ForwarderSpec } from "./forwarder.ts";
import { inNamespace } from "./netns.ts";
import { check, Daemon, type RunOptions, type RunResult, run, waitFor } from "./proc.ts";
import { closeFd, datagramSocketPair } from "./socketpair.ts";

/** What the guest's DHCP client was given, as its udhcpc script recorded it. */
export interface GuestLease {
  address: string;
  prefixLength: number;
  router: string;
  dnsServers: string[];
  leaseSeconds: number;
  serverId: string;
  /** How many times the script ran for "bound" or "renew" so far. */
  boundOrRenewedCount: number;
}

/** What Guest needs from its topology. */
export interface GuestSite {
  hostNamespace: string;
  bridge: string;
  workDir: string;
  udhcpcScript: string;
}

export class Guest {
  private nicRelay: Daemon | undefined;
  private dhcpClient: Daemon | undefined;
  private readonly background: Daemon[] = [];
  private onceCount = 0;
  /** The forwarder between this guest and the bridge, while attached. */
  forwarder: Forwarder | undefined;

  constructor(
    readonly name: string,
    readonly index: number,
    readonly namespace: string,
    /** eth0's MAC address: what the forwarder must be given as --vm-mac-address. */
    readonly mac: string,
    private readonly site: GuestSite,
  ) {}

  private get leaseFile(): string {
    return join(this.site.workDir, `${this.name}.lease`);
  }

  /** Creates eth0 in the (already created) namespace: a persistent TAP with the guest's MAC. */
  async createNic(): Promise<void> {
    // Persistent, so the MAC and (later) the leased address survive detach/attach of relays, like
    // a VM's NIC surviving its backend being re-plugged; and the MAC is set before anything is sent.
    await check(["ip", "-n", this.namespace, "tuntap", "add", "dev", "eth0", "mode", "tap"]);
    await check(["ip", "-n", this.namespace, "link", "set", "eth0", "address", this.mac, "up"]);
  }

  /** Runs argv inside the guest. */
  exec(argv: string[], options?: RunOptions): Promise<RunResult> {
    return run(inNamespace(this.namespace, argv), options);
  }

  /**
   * Plugs the guest into the bridge through forwarder: a fresh socketpair, socat relaying eth0 to
   * one end, the forwarder started on the other. Resolves once both ends are live.
   */
  async attach(spec: ForwarderSpec): Promise<Forwarder> {
    if (this.forwarder !== undefined) throw new Error(`${this.name} is already attached: detach() first`);
    const pair = datagramSocketPair();
    try {
      this.nicRelay = new Daemon(
        `${this.name} NIC relay`,
        inNamespace(this.namespace, ["socat", "TUN,tun-type=tap,tun-name=eth0,iff-no-pi", "FD:3"]),
        { extraFds: [pair.vmEnd] },
      );
      this.forwarder = await spec.start({
        hostNamespace: this.site.hostNamespace,
        bridge: this.site.bridge,
        vmMac: this.mac,
        guestIndex: this.index,
        hostEnd: pair.hostEnd,
      });
    } catch (error) {
      await this.nicRelay?.stop("SIGKILL");
      this.nicRelay = undefined;
      throw error;
    } finally {
      // The children hold their own copies. Closing ours matters: the forwarder must see the VM
      // side go away when the guest's relay dies, which it cannot while we keep a copy open.
      closeFd(pair.vmEnd);
      closeFd(pair.hostEnd);
    }
    const relay = this.nicRelay;
    await waitFor(`carrier on ${this.name}'s eth0`, async () => {
      if (!relay.running) throw new Error(`its relay exited ${relay.exitCode}: ${relay.log}`);
      const [link] = JSON.parse(
        await check(["ip", "-n", this.namespace, "-j", "link", "show", "dev", "eth0"]),
      );
      return (link.flags as string[]).includes("LOWER_UP");
    });
    return this.forwarder;
  }

  /** Kills the guest's NIC relay: the VM end of the socketpair closes, as when the VM goes away. */
  async closeVmEnd(): Promise<void> {
    await this.nicRelay?.stop("SIGKILL");
    this.nicRelay = undefined;
  }

  /** Stops the forwarder (its default signal) and the NIC relay. Returns the forwarder's status. */
  async detach(): Promise<number | undefined> {
    const status = await this.forwarder?.stop();
    this.forwarder = undefined;
    await this.closeVmEnd();
    return status;
  }

  /** Starts busybox udhcpc on eth0 (foreground, retrying, renewing for as long as it runs). */
  startDhcp(): void {
    if (this.dhcpClient?.running) throw new Error(`${this.name}'s DHCP client is already running`);
    this.dhcpClient = new Daemon(
      `${this.name} udhcpc`,
      inNamespace(this.namespace, [
        "busybox",
        "udhcpc",
        "-f", // stay in the foreground: it is our child, and it must keep renewing
        "-i",
        "eth0",
        "-s",
        this.site.udhcpcScript,
        "-T",
        "1", // one second between discovers, not three: tests wait on this
        "-t",
        "5",
        "-A",
        "1",
        "-x",
        `hostname:${this.name}`,
      ]),
      { env: { LEASE_FILE: this.leaseFile } },
    );
  }

  /**
   * One busybox udhcpc run on eth0 that quits once it has a lease (-q) or gave up (-n), with
   * `args` added (e.g. -x 0x3d:... for a client identifier, -r ADDRESS to ask for one). Its
   * script applies the lease to eth0 as startDhcp's does. Resolves with udhcpc's exit code, the
   * lease it applied (if any) and what it printed. It releases nothing when it quits.
   */
  async udhcpcOnce(
    args: string[],
    { timeoutSeconds = 10 } = {},
  ): Promise<RunResult & { lease?: GuestLease }> {
    const leaseFile = join(this.site.workDir, `${this.name}.once-${++this.onceCount}.lease`);
    const result = await this.exec(
      [
        "env",
        `LEASE_FILE=${leaseFile}`,
        "busybox",
        "udhcpc",
        "-q",
        "-n",
        "-i",
        "eth0",
        "-s",
        this.site.udhcpcScript,
        "-T",
        "1",
        "-t",
        "3",
        "-A",
        "1",
        ...args,
      ],
      { timeoutMs: timeoutSeconds * 1000 },
    );
    return { ...result, lease: readLeaseFile(leaseFile) };
  }

  /** The lease udhcpc applied, or undefined while it has none. */
  lease(): GuestLease | undefined {
    return readLeaseFile(this.leaseFile);
  }

  /** Waits until udhcpc has applied a lease (the address is on eth0 and the default route set). */
  async waitForLease(timeoutMs = 15_000): Promise<GuestLease> {
    return waitFor(
      `${this.name} to obtain a DHCP lease`,
      () => {
        if (this.dhcpClient !== undefined && !this.dhcpClient.running) {
          throw new Error(`udhcpc exited ${this.dhcpClient.exitCode}: ${this.dhcpClient.log}`);
        }
        return this.lease();
      },
      { timeoutMs },
    ).catch((error: Error) => {
      throw new Error(`${error.message}\nudhcpc said:\n${this.dhcpClient?.log ?? "(not started)"}`);
    });
  }

  /** startDhcp + waitForLease. */
  async dhcp(timeoutMs = 15_000): Promise<GuestLease> {
    this.startDhcp();
    return this.waitForLease(timeoutMs);
  }

  /**
   * Makes udhcpc renew now (SIGUSR1: a unicast REQUEST to the server) instead of at T1, and
   * resolves with the lease once its script has recorded the renewal.
   */
  async renewLease(timeoutMs = 10_000): Promise<GuestLease> {
    const client = this.dhcpClient;
    if (!client?.running) throw new Error(`${this.name}'s DHCP client is not running`);
    const before = this.lease()?.boundOrRenewedCount ?? 0;
    client.process.kill("SIGUSR1");
    return waitFor(
      `${this.name} to renew its lease`,
      () => {
        const lease = this.lease();
        return lease !== undefined && lease.boundOrRenewedCount > before ? lease : undefined;
      },
      { timeoutMs },
    );
  }

  async stopDhcp(): Promise<void> {
    await this.dhcpClient?.stop();
    this.dhcpClient = undefined;
  }

  /** eth0's IPv4 addresses as the kernel has them. */
  async addresses(): Promise<string[]> {
    const [link] = JSON.parse(
      await check(["ip", "-n", this.namespace, "-4", "-j", "addr", "show", "dev", "eth0"]),
    );
    return ((link?.addr_info ?? []) as Array<{ local: string }>).map((info) => info.local);
  }

  /** True when `count` echo requests to address got a reply (ping exits 0). */
  async ping(address: string, { count = 1, waitSeconds = 2 } = {}): Promise<boolean> {
    const result = await this.exec(["ping", "-n", "-c", String(count), "-W", String(waitSeconds), address], {
      timeoutMs: (count + waitSeconds + 2) * 1000,
    });
    return result.code === 0;
  }

  /**
   * Opens a TCP connection with netcat and returns what the server sent before closing (the
   * banner servers started by the harness send one line). code 0 means the connection was made.
   */
  tcpConnect(address: string, port: number, { timeoutSeconds = 2, send = "" } = {}): Promise<RunResult> {
    return this.exec(["nc", "-N", "-w", String(timeoutSeconds), address, String(port)], {
      stdin: send,
      timeoutMs: (timeoutSeconds + 3) * 1000,
    });
  }

  /**
   * Asks server for name's A records over UDP (or TCP) with dig. answers is empty when nothing
   * came back; code is dig's (9: no reply from the server).
   */
  async dnsQuery(
    server: string,
    name: string,
    { timeoutSeconds = 1, tcp = false } = {},
  ): Promise<{ code: number; answers: string[] }> {
    const argv = ["dig", `@${server}`, "+short", `+time=${timeoutSeconds}`, "+tries=1", name, "A"];
    if (tcp) argv.push("+tcp");
    const result = await this.exec(argv, { timeoutMs: (timeoutSeconds + 3) * 1000 });
    const answers =
      result.code === 0 ? result.stdout.split("\n").filter((line) => /^\d+\.\d+\.\d+\.\d+$/.test(line)) : [];
    return { code: result.code, answers };
  }

  /** Starts a TCP server in the guest on port (all addresses) that sends banner to each client. */
  async startTcpServer(port: number, banner: string): Promise<Daemon> {
    const server = await startBannerServer(this.namespace, "0.0.0.0", port, banner);
    this.background.push(server);
    return server;
  }

  /**
   * Starts a long-running tool in the guest (arpspoof, hping3, iperf3 -s, ...) that the guest
   * stops on detach-all and teardown. Stop it earlier with the returned Daemon's stop().
   */
  spawn(name: string, argv: string[]): Daemon {
    const daemon = new Daemon(`${this.name}: ${name}`, inNamespace(this.namespace, argv));
    this.background.push(daemon);
    return daemon;
  }

  /** Everything the guest's daemons printed, for failure messages. */
  logs(): string {
    return [this.nicRelay, this.dhcpClient, this.forwarder?.daemon, ...this.background]
      .filter((daemon) => daemon !== undefined)
      .map(
        (daemon) =>
          `--- ${daemon.name} (${daemon.running ? "running" : `exited ${daemon.exitCode}`})\n${daemon.log}`,
      )
      .join("\n");
  }

  /** Every process the guest started, for teardown. */
  daemons(): Daemon[] {
    return [this.dhcpClient, this.nicRelay, this.forwarder?.daemon, ...this.background].filter(
      (daemon) => daemon !== undefined,
    );
  }

  /** Stops everything in dependency order: clients and servers, forwarder, NIC relay. */
  async stopAll(): Promise<void> {
    await this.stopDhcp();
    await Promise.all(this.background.splice(0).map((server) => server.stop()));
    await this.detach().catch(() => {});
  }
}

/**
 * A TCP server in namespace on address:port that writes banner and a newline to each client, then
 * closes. Resolves once it listens.
 */
export async function startBannerServer(
  namespace: string,
  address: string,
  port: number,
  banner: string,
): Promise<Daemon> {
  if (!/^[\w.-]+$/.test(banner)) throw new Error(`banner must be one word: ${banner}`);
  const server = new Daemon(
    `tcp server ${address}:${port} in ${namespace}`,
    inNamespace(namespace, [
      "socat",
      `TCP-LISTEN:${port},bind=${address},reuseaddr,fork`,
      `SYSTEM:echo ${banner}`,
    ]),
  );
  await waitFor(`${server.name} to listen`, async () => {
    if (!server.running) throw new Error(`it exited ${server.exitCode}: ${server.log}`);
    const listening = await check(["ip", "netns", "exec", namespace, "ss", "-Hltn", `sport = :${port}`]);
    return listening.trim() !== "";
  });
  return server;
}

/** What the udhcpc script recorded in `path`, or undefined while it holds no lease. */
function readLeaseFile(path: string): GuestLease | undefined {
  if (!existsSync(path)) return undefined;
  const fields = new Map<string, string>();
  for (const line of readFileSync(path, "utf8").split("\n")) {
    const equals = line.indexOf("=");
    if (equals > 0) fields.set(line.slice(0, equals), line.slice(equals + 1));
  }
  if (!fields.get("ip")) return undefined;
  return {
    address: fields.get("ip")!,
    prefixLength: Number(fields.get("mask")),
    router: (fields.get("router") ?? "").split(" ")[0]!,
    dnsServers: (fields.get("dns") ?? "").split(" ").filter((server) => server !== ""),
    leaseSeconds: Number(fields.get("lease")),
    serverId: fields.get("serverid") ?? "",
    boundOrRenewedCount: Number(fields.get("count")),
  };
}
