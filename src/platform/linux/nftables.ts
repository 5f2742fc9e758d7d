/**
 * --expose on Linux: TCP port forwards from the host to the VM's leased address, as nftables NAT
 * rules in a table that belongs to this softnet instance alone (named after its TAP port), so two
 * softnets never touch each other's rules and removing ours is one `delete table`.
 *
 * nft runs as a child process with an empty environment, from a fixed path (never PATH: this code
 * may run in a setuid-root process). After softnet drops root it keeps CAP_NET_ADMIN as an ambient
 * capability only when --expose needs it, which is what lets the child still change the ruleset.
 */
import type { ExposedPort } from "../../cli.ts";
import { SoftnetError } from "../../errors.ts";
import type { PortForwardBackend } from "../../port-forwards.ts";
import { formatIpv4 } from "../../wire/bytes.ts";

/** Where Debian, Ubuntu, Fedora and Arch install nft. Constants on purpose: see the module comment. */
const NFT_LOCATIONS = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"] as const;

export function locateNft(): string {
  for (const path of NFT_LOCATIONS) {
    if (Bun.file(path).size > 0) return path;
  }
  throw new SoftnetError(`--expose needs nftables, but nft is not at ${NFT_LOCATIONS.join(", ")}`, {
    hint: "install it (Debian/Ubuntu: apt-get install nftables)",
  });
}

export class NftablesPortForwards implements PortForwardBackend {
  readonly table: string;

  constructor(
    private readonly nft: string,
    /** The TAP port's name: it makes the table name unique to this softnet. */
    tapName: string,
    /** The bridge the VM sits on: connections forwarded into it are masqueraded. */
    private readonly bridge: string,
  ) {
    this.table = `softnet_${tapName.replace(/[^A-Za-z0-9_]/g, "_")}`;
  }

  /**
   * Replaces the table atomically (one nft transaction) with DNAT rules for every exposed port:
   * - prerouting: connections from other machines to any of the host's addresses;
   * - output: connections from the host itself (not via loopback: DNAT of 127.0.0.1 would need
   *   route_localnet, which weakens the host);
   * - postrouting: forwarded connections are masqueraded to the bridge's address, so the VM sees
   *   them coming from the gateway (as vmnet does), which the VM may always answer.
   */
  async install(ports: readonly ExposedPort[], address: number): Promise<void> {
    await this.run(this.installScript(ports, address), `install port forwards to ${formatIpv4(address)}`);
  }

  /** The nft script install() runs; `softnet doctor` checks it with `nft --check` (nothing applied). */
  installScript(ports: readonly ExposedPort[], address: number): string {
    const target = formatIpv4(address);
    const dnat = ports.map((p) => `tcp dport ${p.externalPort} dnat to ${target}:${p.internalPort}`);
    const script = [
      `table ip ${this.table} {}`,
      `delete table ip ${this.table}`,
      `table ip ${this.table} {`,
      "  chain prerouting {",
      "    type nat hook prerouting priority -100; policy accept;",
      ...dnat.map((rule) => `    fib daddr type local ${rule}`),
      "  }",
      "  chain output {",
      "    type nat hook output priority -100; policy accept;",
      ...dnat.map((rule) => `    fib daddr type local ip daddr != 127.0.0.0/8 ${rule}`),
      "  }",
      "  chain postrouting {",
      "    type nat hook postrouting priority 100; policy accept;",
      `    oifname "${this.bridge}" ip daddr ${target} ct status dnat masquerade`,
      "  }",
      "}",
    ].join("\n");
    return script;
  }

  async removeAll(): Promise<void> {
    // Declaring the table first makes the delete succeed whether or not it exists.
    await this.run(`table ip ${this.table} {}\ndelete table ip ${this.table}`, "remove port forwards");
  }

  private async run(script: string, what: string): Promise<void> {
    const child = Bun.spawn([this.nft, "-f", "-"], {
      stdin: new TextEncoder().encode(`${script}\n`),
      stdout: "ignore",
      stderr: "pipe",
      env: {},
    });
    const [stderr, code] = await Promise.all([new Response(child.stderr).text(), child.exited]);
    if (code !== 0) {
      // nft's first line, without the position in our script it starts with ("/dev/stdin:1:1-29: ").
      const why =
        stderr
          .trim()
          .split("\n")[0]
          ?.replace(/^\/dev\/stdin:[\d:-]+ /, "") || `nft exited with status ${code}`;
      throw new SoftnetError(`cannot ${what} with ${this.nft}`, {
        cause: new Error(why),
        // EPERM also comes from a table of this name that another program created with the owner
        // flag (only its creator may change it), not only from a missing capability.
        hint: /Operation not permitted/.test(stderr)
          ? `nft needs CAP_NET_ADMIN, and table ip ${this.table} must not belong to another program: see nft list table ip ${this.table}`
          : undefined,
      });
    }
  }
}
