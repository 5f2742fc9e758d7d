// One e2e topology per test file: namespaces, a bridge with DHCP and DNS, a "global" test host, a
// private server, guests. Nothing in it is connected to the machine's own network namespace: every
// link is a veth between two of its namespaces or a TAP relayed by a process, so no frame can leave.
//
//   guest g1 (eth0 ◀socat▶ socketpair ◀forwarder▶ TAP) ─┐
//   guest g2 (...)                                   ─┤ br0 192.168.64.1/24 ── host ── inet0 198.18.0.1/30 ── wan0 198.18.0.2/30 ── internet: 8.8.8.8 (global test host)
//                                                       dnsmasq DHCP+DNS      (ip_forward) ── priv0 10.99.0.254/24 ── lan0 ── private: 10.99.0.1, 10.99.0.53
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { requireTools } from "../../support/tools.ts";
import { Capture } from "./capture.ts";
import { Guest, startBannerServer } from "./guest.ts";
import {
  destroyNamespaceSync,
  inNamespace,
  listNamespaces,
  NAME_PREFIX,
  namespaceExists,
  removeLeftovers,
} from "./netns.ts";
import { check, Daemon, type RunOptions, type RunResult, run } from "./proc.ts";

/** The addresses of the topology. All of them exist only inside its namespaces. */
export const ADDRESSES = {
  bridgeSubnet: "192.168.64.0/24",
  /** br0's address in the host namespace: DHCP server, router and DNS server (like bridge100). */
  gateway: "192.168.64.1",
  gatewayPrefixLength: 24,
  /** br0's MAC, fixed so that it does not change as ports join (a bridge otherwise takes the lowest). */
  gatewayMac: "02:5e:00:00:00:01",
  dhcpRange: { first: "192.168.64.10", last: "192.168.64.99" },
  /**
   * The "global" test host. Globally routable in every classification (IANA special-purpose
   * registries, Rust/Python is_global), so the policy must treat it as the Internet; here it is
   * only an address on a veth in the "internet" namespace.
   */
  globalHost: "8.8.8.8",
  /** The host ↔ internet link (benchmarking block 198.18.0.0/15, never global). */
  transitHost: "198.18.0.1",
  transitInternet: "198.18.0.2",
  /** A private server behind the gateway that the policy must not let the guest reach. */
  privateServer: "10.99.0.1",
  /** A second DNS server, private too, but listed in the DHCP DNS option: DNS to it must pass. */
  secondDnsServer: "10.99.0.53",
  privateRouter: "10.99.0.254",
  privateSubnet: "10.99.0.0/24",
} as const;

/** Names every DNS server of the topology answers, and with what. */
export const DNS_NAMES = {
  /** Resolves to ADDRESSES.globalHost on every DNS server. */
  example: "example.test",
  /** Resolves to the answering server's own address: tells which server replied. */
  whoami: "whoami.test",
  /** On br0's server only: a host record for ADDRESSES.globalHost. */
  target: "target.test",
  /** On br0's server only: a CNAME to `target`, a name no --allow needs to list. */
  alias: "alias.test",
  /** On br0's server only: a global-looking name that answers with ADDRESSES.privateServer. */
  rebind: "rebind.test",
} as const;

/** Port of the banner TCP servers on the global host and the private server. */
export const BANNER_PORT = 80;
export const BANNERS = { globalHost: "hello-from-global-host", privateServer: "hello-from-private-server" };

export const DHCP_LEASE_SECONDS = 120; // dnsmasq's minimum; shorter values are raised to it

export interface DnsmasqLease {
  expiresAt: number;
  mac: string;
  address: string;
  hostname: string;
  clientId: string;
}

/** What a test may change about a topology. */
export interface TopologyOptions {
  /** dnsmasq's address pool (default ADDRESSES.dhcpRange); a small one makes exhaustion visible. */
  dhcpRange?: { first: string; last: string };
}

/** A plain machine on the bridge, not behind softnet: a namespace with a veth port on br0. */
export interface BridgeHost {
  namespace: string;
  /** Its interface's name inside its namespace. */
  interfaceName: string;
  mac: string;
  address: string;
}

export interface Neighbour {
  address: string;
  mac: string | undefined;
  state: string[];
}

const UDHCPC_SCRIPT = `#!/bin/sh
# udhcpc event script (busybox): applies the lease to the interface and records it in $LEASE_FILE
# as key=value lines for the test. busybox exports ip, mask (prefix length), router, dns, lease,
# serverid; router and dns may hold several space-separated addresses.
set -u
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    rm -f "$LEASE_FILE"
    ;;
  bound|renew)
    count=$(( $(sed -n 's/^count=//p' "$LEASE_FILE" 2>/dev/null || echo 0) + 0 ))
    previous=$(sed -n 's/^ip=//p' "$LEASE_FILE" 2>/dev/null || true)
    if [ "$1" = bound ] || [ "$previous" != "$ip" ]; then
      ip -4 addr flush dev "$interface"
    fi
    ip -4 addr replace "$ip/$mask" dev "$interface"
    set -- \${router:-}
    if [ $# -gt 0 ]; then ip -4 route replace default via "$1" dev "$interface"; fi
    # Written whole, then renamed: the test never reads half a lease.
    cat >"$LEASE_FILE.tmp" <<EOF
ip=$ip
mask=$mask
router=\${router:-}
dns=\${dns:-}
lease=\${lease:-}
serverid=\${serverid:-}
count=$((count + 1))
EOF
    mv "$LEASE_FILE.tmp" "$LEASE_FILE"
    ;;
esac
exit 0
`;

let topologyCount = 0;
const liveTopologies = new Set<Topology>();
let safetyNetInstalled = false;

/**
 * If the runner exits without afterAll having run (a crash, process.exit, Ctrl-C), tear down
 * synchronously: kill what runs in our namespaces, delete them, remove the temp dir.
 */
function installSafetyNet(): void {
  if (safetyNetInstalled) return;
  safetyNetInstalled = true;
  process.on("exit", () => {
    for (const topology of liveTopologies) topology.teardownSync();
  });
  for (const [signal, number] of [
    ["SIGINT", 2],
    ["SIGTERM", 15],
    ["SIGHUP", 1],
  ] as const) {
    process.once(signal, () => {
      for (const topology of liveTopologies) topology.teardownSync();
      process.exit(128 + number);
    });
  }
}

export class Topology {
  /** softnet-e2e-<pid>-<seq>: prefix of every namespace and of the temp dir. */
  readonly name: string;
  readonly hostNamespace: string;
  readonly internetNamespace: string;
  readonly privateNamespace: string;
  readonly bridge = "br0";
  readonly workDir: string;
  readonly dnsmasqLeaseFile: string;
  readonly guests: Guest[] = [];
  private readonly daemons: Daemon[] = [];
  private dhcpServer: Daemon | undefined;
  private readonly captures: Capture[] = [];
  private readonly namespaces: string[] = [];
  private readonly udhcpcScript: string;
  private readonly dhcpRange: { first: string; last: string };
  private bridgeHostCount = 0;
  private captureCount = 0;
  private tornDown = false;

  private constructor(options: TopologyOptions) {
    this.dhcpRange = options.dhcpRange ?? ADDRESSES.dhcpRange;
    this.name = `${NAME_PREFIX}${process.pid}-${++topologyCount}`;
    this.hostNamespace = `${this.name}-host`;
    this.internetNamespace = `${this.name}-internet`;
    this.privateNamespace = `${this.name}-private`;
    removeLeftovers(this.name);
    this.workDir = mkdtempSync(join(tmpdir(), `${this.name}-`));
    this.dnsmasqLeaseFile = join(this.workDir, "dnsmasq.leases");
    this.udhcpcScript = join(this.workDir, "udhcpc.script");
    writeFileSync(this.udhcpcScript, UDHCPC_SCRIPT);
    chmodSync(this.udhcpcScript, 0o755);
    liveTopologies.add(this);
    installSafetyNet();
  }

  /**
   * Builds the whole topology (namespaces, links, routes, dnsmasq, DNS and TCP servers) and
   * resolves once every server is ready. On failure, tears down what was built and rethrows.
   */
  static async create(options: TopologyOptions = {}): Promise<Topology> {
    if (process.getuid?.() !== 0) throw new Error("e2e tests need root (network namespaces, TAP devices)");
    requireTools(["ip", "bridge", "socat", "dnsmasq", "busybox", "tcpdump", "ping", "nc", "dig", "ss", "sh"]);
    const topology = new Topology(options);
    try {
      await topology.build();
    } catch (error) {
      await topology.teardown();
      throw error;
    }
    return topology;
  }

  private async addNamespace(namespace: string): Promise<void> {
    this.namespaces.push(namespace);
    await check(["ip", "netns", "add", namespace]);
    await check(["ip", "-n", namespace, "link", "set", "lo", "up"]);
  }

  private ip(namespace: string, ...args: string[]): Promise<string> {
    return check(["ip", "-n", namespace, ...args]);
  }

  private async build(): Promise<void> {
    const A = ADDRESSES;
    const host = this.hostNamespace;
    const internet = this.internetNamespace;
    const privateNet = this.privateNamespace;
    await Promise.all([this.addNamespace(host), this.addNamespace(internet), this.addNamespace(privateNet)]);

    // The bridge: STP off and no forward delay, so ports forward as soon as they join.
    await this.ip(
      host,
      "link",
      "add",
      this.bridge,
      "address",
      A.gatewayMac,
      "type",
      "bridge",
      "stp_state",
      "0",
      "forward_delay",
      "0",
    );
    await this.ip(host, "addr", "add", `${A.gateway}/${A.gatewayPrefixLength}`, "dev", this.bridge);
    await this.ip(host, "link", "set", this.bridge, "up");
    // Routing between the bridge subnet and the other namespaces, in the host namespace only.
    // (/proc/sys/net is the writer's own namespace's; no need for procps' sysctl.)
    await check(inNamespace(host, ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]));

    // host ↔ internet, veth ends created directly in their namespaces (never in the machine's).
    await this.ip(host, "link", "add", "inet0", "type", "veth", "peer", "name", "wan0", "netns", internet);
    await this.ip(host, "addr", "add", `${A.transitHost}/30`, "dev", "inet0");
    await this.ip(host, "link", "set", "inet0", "up");
    await this.ip(internet, "addr", "add", `${A.transitInternet}/30`, "dev", "wan0");
    await this.ip(internet, "addr", "add", `${A.globalHost}/32`, "dev", "wan0");
    await this.ip(internet, "link", "set", "wan0", "up");
    await this.ip(host, "route", "add", `${A.globalHost}/32`, "via", A.transitInternet);
    await this.ip(internet, "route", "add", A.bridgeSubnet, "via", A.transitHost);

    // host ↔ private: reachable by routing, so that only the filter can keep a guest out.
    await this.ip(host, "link", "add", "priv0", "type", "veth", "peer", "name", "lan0", "netns", privateNet);
    await this.ip(host, "addr", "add", `${A.privateRouter}/24`, "dev", "priv0");
    await this.ip(host, "link", "set", "priv0", "up");
    await this.ip(privateNet, "addr", "add", `${A.privateServer}/24`, "dev", "lan0");
    await this.ip(privateNet, "addr", "add", `${A.secondDnsServer}/24`, "dev", "lan0");
    await this.ip(privateNet, "link", "set", "lan0", "up");
    await this.ip(privateNet, "route", "add", A.bridgeSubnet, "via", A.privateRouter);

    await Promise.all([
      this.startDhcpServer(),
      this.startDnsServer(privateNet, A.secondDnsServer),
      this.startDnsServer(privateNet, A.privateServer),
      this.startTcpServer(internet, A.globalHost, BANNER_PORT, BANNERS.globalHost),
      this.startTcpServer(privateNet, A.privateServer, BANNER_PORT, BANNERS.privateServer),
    ]);
  }

  private dnsmasqCommonArgs(pidFile: string): string[] {
    return [
      "dnsmasq",
      "--keep-in-foreground",
      "--log-facility=-", // to stderr, which Daemon keeps for failure messages
      "--conf-file=/dev/null",
      "--no-resolv",
      "--no-hosts",
      "--bind-interfaces",
      `--pid-file=${pidFile}`,
      // Stays root: its lease file is in our root-only temp dir.
      "--user=root",
      "--group=root",
    ];
  }

  /**
   * Stops the DHCP server on br0 (SIGKILL: as if it crashed; SIGTERM: a clean restart), keeping
   * its lease file. Start it again with startDhcpServer(). Guests' leases live on meanwhile.
   */
  async stopDhcpServer(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    await this.dhcpServer?.stop(signal);
    this.dhcpServer = undefined;
  }

  /** What the DHCP (and DNS) server on br0 logged so far ("" when it is not running). */
  dhcpServerLog(): string {
    return this.dhcpServer?.log ?? "";
  }

  /** Starts dnsmasq as the DHCP (and DNS) server on br0, with the topology's lease file. */
  async startDhcpServer(): Promise<void> {
    if (this.dhcpServer?.running) throw new Error("the DHCP server is already running");
    const A = ADDRESSES;
    const daemon = new Daemon(
      "dnsmasq (DHCP + DNS on br0)",
      inNamespace(this.hostNamespace, [
        ...this.dnsmasqCommonArgs(join(this.workDir, "dnsmasq.pid")),
        `--interface=${this.bridge}`,
        "--except-interface=lo",
        "--port=53",
        `--address=/${DNS_NAMES.example}/${A.globalHost}`,
        `--address=/${DNS_NAMES.whoami}/${A.gateway}`,
        `--host-record=${DNS_NAMES.target},${A.globalHost}`,
        `--cname=${DNS_NAMES.alias},${DNS_NAMES.target}`,
        `--host-record=${DNS_NAMES.rebind},${A.privateServer}`,
        `--dhcp-range=${this.dhcpRange.first},${this.dhcpRange.last},${DHCP_LEASE_SECONDS}`,
        `--dhcp-option=option:router,${A.gateway}`,
        `--dhcp-option=option:dns-server,${A.gateway},${A.secondDnsServer}`,
        `--dhcp-leasefile=${this.dnsmasqLeaseFile}`,
        "--dhcp-authoritative",
        "--no-ping",
        "--log-dhcp",
        // Every query it answers, with its source: a witness that a forged one never got here.
        "--log-queries",
      ]),
    );
    this.daemons.push(daemon);
    this.dhcpServer = daemon;
    await daemon.waitForOutput(/DHCP, IP range/);
    await daemon.waitForOutput(/started, version/);
  }

  private async startDnsServer(namespace: string, address: string): Promise<void> {
    const daemon = new Daemon(
      `dnsmasq (DNS on ${address})`,
      inNamespace(namespace, [
        ...this.dnsmasqCommonArgs(join(this.workDir, `dns-${address}.pid`)),
        `--listen-address=${address}`,
        "--port=53",
        `--address=/${DNS_NAMES.example}/${ADDRESSES.globalHost}`,
        `--address=/${DNS_NAMES.whoami}/${address}`,
      ]),
    );
    this.daemons.push(daemon);
    await daemon.waitForOutput(/started, version/);
  }

  /** Starts a banner TCP server (see startBannerServer) owned by the topology. */
  async startTcpServer(namespace: string, address: string, port: number, banner: string): Promise<Daemon> {
    const daemon = await startBannerServer(namespace, address, port, banner);
    this.daemons.push(daemon);
    return daemon;
  }

  /** Starts a long-running tool in namespace, stopped at teardown (e.g. an iperf3 server). */
  spawn(namespace: string, name: string, argv: string[]): Daemon {
    const daemon = new Daemon(name, inNamespace(namespace, argv));
    this.daemons.push(daemon);
    return daemon;
  }

  /** Adds a guest namespace with its eth0 (MAC 02:5e:10:00:00:NN), not yet attached to anything. */
  async addGuest(): Promise<Guest> {
    const index = this.guests.length + 1;
    const namespace = `${this.name}-g${index}`;
    const mac = `02:5e:10:00:00:${index.toString(16).padStart(2, "0")}`;
    await this.addNamespace(namespace);
    const guest = new Guest(`g${index}`, index, namespace, mac, {
      hostNamespace: this.hostNamespace,
      bridge: this.bridge,
      workDir: this.workDir,
      udhcpcScript: this.udhcpcScript,
    });
    this.guests.push(guest);
    await guest.createNic();
    return guest;
  }

  /**
   * Adds a plain machine on the bridge (MAC 02:5e:20:00:00:NN, `address`/24 on the bridge's
   * network): a namespace whose veth's other end is a port of br0 with nothing filtering it, as
   * an administrator's container or a VM without softnet would be.
   */
  async addBridgeHost(address: string): Promise<BridgeHost> {
    const index = ++this.bridgeHostCount;
    const namespace = `${this.name}-b${index}`;
    const mac = `02:5e:20:00:00:${index.toString(16).padStart(2, "0")}`;
    const port = `bhost${index}`;
    await this.addNamespace(namespace);
    await this.ip(
      this.hostNamespace,
      "link",
      "add",
      port,
      "type",
      "veth",
      "peer",
      "name",
      "eth0",
      "netns",
      namespace,
    );
    await this.ip(this.hostNamespace, "link", "set", port, "master", this.bridge, "up");
    await this.ip(namespace, "link", "set", "eth0", "address", mac, "up");
    await this.ip(namespace, "addr", "add", `${address}/${ADDRESSES.gatewayPrefixLength}`, "dev", "eth0");
    return { namespace, interfaceName: "eth0", mac, address };
  }

  /** Runs argv in namespace. */
  exec(namespace: string, argv: string[], options?: RunOptions): Promise<RunResult> {
    return run(inNamespace(namespace, argv), options);
  }

  /** Runs argv in the host namespace (where the bridge, dnsmasq and the forwarders are). */
  hostExec(argv: string[], options?: RunOptions): Promise<RunResult> {
    return this.exec(this.hostNamespace, argv, options);
  }

  /** Starts a tcpdump witness on an interface of the host namespace (the bridge by default). */
  async startCapture(interfaceName: string = this.bridge, namespace = this.hostNamespace): Promise<Capture> {
    // Numbered before the first await: captures started together must not share a file.
    const path = join(this.workDir, `capture-${++this.captureCount}-${interfaceName}.pcap`);
    const capture = await Capture.start(namespace, interfaceName, path);
    this.captures.push(capture);
    return capture;
  }

  /** The host namespace's neighbour (ARP) entries on the bridge. */
  async hostNeighbours(): Promise<Neighbour[]> {
    const entries = JSON.parse(
      await this.ip(this.hostNamespace, "-4", "-j", "neigh", "show", "dev", this.bridge),
    );
    return (entries as Array<{ dst: string; lladdr?: string; state?: string[] }>).map((entry) => ({
      address: entry.dst,
      mac: entry.lladdr,
      state: entry.state ?? [],
    }));
  }

  /** The host's neighbour entry for address, if any. */
  async hostNeighbour(address: string): Promise<Neighbour | undefined> {
    return (await this.hostNeighbours()).find((entry) => entry.address === address);
  }

  /** dnsmasq's leases: `<expiry epoch> <mac> <ip> <hostname or *> <client id or *>` per line. */
  dhcpServerLeases(): DnsmasqLease[] {
    if (!existsSync(this.dnsmasqLeaseFile)) return [];
    return readFileSync(this.dnsmasqLeaseFile, "utf8")
      .split("\n")
      .filter((line) => line.trim() !== "")
      .map((line) => {
        const [expiresAt, mac, address, hostname, clientId] = line.split(" ");
        return {
          expiresAt: Number(expiresAt),
          mac: mac!,
          address: address!,
          hostname: hostname!,
          clientId: clientId!,
        };
      });
  }

  /** Names of the bridge's ports. */
  async bridgePorts(): Promise<string[]> {
    const links = JSON.parse(await this.ip(this.hostNamespace, "-j", "link", "show", "master", this.bridge));
    return (links as Array<{ ifname: string }>).map((link) => link.ifname);
  }

  /** Every daemon's output, for failure messages. */
  logs(): string {
    return [
      ...this.daemons.map(
        (daemon) =>
          `--- ${daemon.name} (${daemon.running ? "running" : `exited ${daemon.exitCode}`})\n${daemon.log}`,
      ),
      ...this.guests.map((guest) => guest.logs()),
    ].join("\n");
  }

  /** Pids of every process the topology started (guests' included), running or not. */
  startedPids(): number[] {
    return [
      ...this.daemons.map((daemon) => daemon.pid),
      ...this.captures.map((capture) => capture.pid),
      ...this.guests.flatMap((guest) => guest.daemons().map((daemon) => daemon.pid)),
    ];
  }

  /**
   * What is left after teardown: namespaces and temp dir of this topology, and processes still
   * in them. All empty after a clean teardown.
   */
  leftovers(): { namespaces: string[]; workDir: boolean } {
    return {
      namespaces: listNamespaces().filter((name) => name.startsWith(`${this.name}-`)),
      workDir: existsSync(this.workDir),
    };
  }

  /**
   * Stops everything gracefully (guests' clients, forwarders, relays, servers, captures), then
   * kills whatever still runs in the namespaces and deletes them. Idempotent; safe after a failure.
   */
  async teardown(): Promise<void> {
    if (this.tornDown) return;
    for (const guest of this.guests) await guest.stopAll().catch(() => {});
    await Promise.all([
      ...this.daemons.map((daemon) => daemon.stop().catch(() => {})),
      ...this.captures.map((capture) => capture.stop().catch(() => {})),
    ]);
    this.teardownSync();
  }

  /** The synchronous part of teardown, also run by the process 'exit' safety net. */
  teardownSync(): void {
    if (this.tornDown) return;
    for (const guest of this.guests) for (const daemon of guest.daemons()) daemon.killNow();
    for (const daemon of this.daemons) daemon.killNow();
    for (const namespace of [...this.namespaces].reverse()) {
      if (namespaceExists(namespace)) destroyNamespaceSync(namespace);
    }
    rmSync(this.workDir, { recursive: true, force: true });
    this.tornDown = true;
    liveTopologies.delete(this);
  }
}
