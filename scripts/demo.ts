/**
 * softnet's main job, end to end on one Linux machine (root): builds a throwaway network (a
 * bridge with dnsmasq as the host's DHCP server, a "global" test host 8.8.8.8 and a private
 * server, all inside network namespaces), boots a guest whose kernel network stack talks to
 * softnet through a socket pair exactly as Tart's VM does, and shows what gets through and why.
 * Everything is torn down at the end, also on Ctrl-C.
 *
 *   sudo npm run demo
 */
import { spawnSync } from "node:child_process";
import { ADDRESSES, BANNER_PORT, BANNERS, type Forwarder, softnet, Topology } from "../test/e2e/lib/index.ts";

if (process.getuid?.() !== 0) {
  console.error(
    "softnet demo: run as root (it creates network namespaces, a bridge and TAP devices): sudo npm run demo",
  );
  process.exit(1);
}
const deps = spawnSync("bash", [`${import.meta.dir}/e2e-deps.sh`], { stdio: "inherit" });
if (deps.status !== 0) process.exit(1);

const bold = (text: string) => `\x1b[1m${text}\x1b[0m`;
const verdict = (ok: boolean, expected: boolean) =>
  ok === expected
    ? `\x1b[32m${ok ? "got through" : "blocked"}\x1b[0m`
    : `\x1b[31m${ok ? "got through" : "blocked"} (unexpected!)\x1b[0m`;

let shown = 0;
function softnetSays(forwarder: Forwarder, pattern = /./): void {
  const lines = forwarder.log.split("\n");
  for (const line of lines.slice(shown))
    if (line !== "" && pattern.test(line)) console.log(`      softnet │ ${line}`);
  shown = lines.length - 1;
}

const topology = await Topology.create();
try {
  console.log(
    bold("network: bridge br0 192.168.64.1/24 with dnsmasq; global host 8.8.8.8; private server 10.99.0.1"),
  );
  const guest = await topology.addGuest();
  const args = ["--log-level", "debug", "--block", "1.1.1.0/24"];
  console.log(bold(`\n▶ softnet --vm-fd 0 --vm-mac-address ${guest.mac} --bridge br0 ${args.join(" ")}`));
  const forwarder = await guest.attach(softnet(args));
  softnetSays(forwarder, /forwarding for VM/);

  console.log(bold("\n▶ the guest asks for an address (busybox udhcpc)"));
  const lease = await guest.dhcp();
  console.log(
    `  guest got ${lease.address}/${lease.prefixLength}, router ${lease.router}, DNS ${lease.dnsServers.join(", ")}`,
  );
  await Bun.sleep(100);
  softnetSays(forwarder, /lease/);

  const attempts: Array<[string, () => Promise<boolean>, boolean]> = [
    ["ping the host (gateway) 192.168.64.1", () => guest.ping(ADDRESSES.gateway), true],
    ["ping the global host 8.8.8.8", () => guest.ping(ADDRESSES.globalHost), true],
    [
      "TCP to 8.8.8.8:80",
      async () =>
        (await guest.tcpConnect(ADDRESSES.globalHost, BANNER_PORT)).stdout.includes(BANNERS.globalHost),
      true,
    ],
    [
      "DNS query to 10.99.0.53 (named by the lease)",
      async () => (await guest.dnsQuery(ADDRESSES.secondDnsServer, "example.test")).answers.length > 0,
      true,
    ],
    [
      "DNS query to 10.99.0.1 (not named by the lease)",
      async () => (await guest.dnsQuery(ADDRESSES.privateServer, "example.test")).answers.length > 0,
      false,
    ],
    [
      "TCP to the private server 10.99.0.1:80",
      async () =>
        (await guest.tcpConnect(ADDRESSES.privateServer, BANNER_PORT, { timeoutSeconds: 1 })).stdout.includes(
          BANNERS.privateServer,
        ),
      false,
    ],
    ["ping 1.1.1.1 (--block 1.1.1.0/24)", () => guest.ping("1.1.1.1", { waitSeconds: 1 }), false],
  ];
  console.log(bold("\n▶ what the guest tries"));
  for (const [what, attempt, expected] of attempts) {
    const ok = await attempt();
    console.log(`  ${what.padEnd(48)} ${verdict(ok, expected)}`);
    softnetSays(forwarder, /dropped from VM: (?!non-ip-ethertype)/);
  }

  console.log(bold("\n▶ the guest turns hostile"));
  const arpspoof = guest.spawn("arpspoof", [
    "arpspoof",
    "-i",
    "eth0",
    "-t",
    ADDRESSES.gateway,
    "192.168.64.50",
  ]);
  await Bun.sleep(2500);
  await arpspoof.stop("SIGKILL");
  console.log("  arpspoof: tells the host that 192.168.64.50 is at the guest's MAC");
  softnetSays(forwarder, /arp-spoof/);
  await guest.exec([
    "hping3",
    "-c",
    "5",
    "-i",
    "u20000",
    "-S",
    "-p",
    "80",
    "-a",
    "192.168.64.77",
    ADDRESSES.globalHost,
  ]);
  console.log("  hping3: TCP SYNs with the forged source 192.168.64.77");
  softnetSays(forwarder, /ip-spoof/);

  console.log(bold("\n▶ Tart stops the VM: SIGINT"));
  const status = await forwarder.stop("SIGINT");
  softnetSays(forwarder, /stopped/);
  console.log(`  softnet exited with status ${status}`);
} finally {
  await topology.teardown();
  console.log(bold("\nnetwork torn down"));
}
