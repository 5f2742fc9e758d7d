/**
 * --expose on Linux: TCP port forwards from the host to the VM's leased address, as nftables NAT
 * rules in a table that belongs to this softnet instance alone (named after its TAP port), so two
 * softnets never touch each other's rules and removing ours is one `delete table`.
 *
 * The table cannot outlive this softnet, however it ends (SIGKILL included): it is created with
 * the `owner` flag, which binds it to the netlink socket that created it; the kernel deletes it
 * when that socket is closed, and no other socket may change or delete it meanwhile
 * (include/uapi/linux/netfilter/nf_tables.h NFT_TABLE_F_OWNER; net/netfilter/nf_tables_api.c,
 * nft_rcv_nl_event on NETLINK_URELEASE; Linux 5.12 and later). That socket is the one of a single
 * `nft -i` child that lives as long as softnet: it reads its commands from a pipe whose only writer
 * is softnet, so when softnet dies its stdin ends, nft exits, and the table goes with it.
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

/** nft's interactive mode answers nothing on success: each command is followed by this marker. */
const SYNC_MARKER = "softnet_sync_";

/**
 * One `nft -i` child, fed one command per line. Success prints nothing and an error prints
 * "Error: ..." plus the command and a caret line, all on stderr; a marker line after each command
 * (a syntax error that echoes the marker) says where that command's answer ends.
 */
class NftSession {
  private readonly child: Bun.Subprocess<"pipe", "ignore", "pipe">;
  private readonly stdin: Bun.FileSink;
  private stderr = "";
  private sent = 0;
  private answered = 0;
  private waiting: Array<{ serial: number; settle: (answer: string | Error) => void }> = [];
  private queue: Promise<unknown> = Promise.resolve();
  exitedWith: number | undefined;

  constructor(nft: string) {
    this.child = Bun.spawn([nft, "-i"], {
      stdin: "pipe",
      stdout: "ignore",
      stderr: "pipe",
      // nft -i (libedit) keeps a history file in $HOME: under /dev/null it cannot create one.
      env: { HOME: "/dev/null" },
    });
    this.stdin = this.child.stdin;
    void this.readAnswers();
    void this.child.exited.then((code) => {
      this.exitedWith = code;
      for (const waiter of this.waiting.splice(0)) {
        waiter.settle(new Error(`nft -i exited with status ${code}`));
      }
    });
  }

  /** Runs one single-line command; resolves with nft's error text ("" when it succeeded). */
  run(command: string): Promise<string> {
    const result = this.queue.then(() => this.send(command));
    this.queue = result.catch(() => {});
    return result;
  }

  /** Ends nft's input: it exits, and the kernel deletes the tables its socket owned. */
  async close(): Promise<void> {
    if (this.exitedWith === undefined) {
      try {
        this.stdin.end();
      } catch {
        // already gone
      }
    }
    await this.child.exited;
  }

  private send(command: string): Promise<string> {
    if (this.exitedWith !== undefined) {
      return Promise.reject(new Error(`nft -i exited with status ${this.exitedWith}`));
    }
    const serial = ++this.sent;
    const answer = new Promise<string>((resolve, reject) => {
      this.waiting.push({
        serial,
        settle: (value) => (value instanceof Error ? reject(value) : resolve(value)),
      });
    });
    try {
      this.stdin.write(`${command}\n${SYNC_MARKER}${serial}\n`);
      // A pipe whose reader is gone fails the flush; the exit handler settles the answer then.
      void Promise.resolve(this.stdin.flush()).catch(() => {});
    } catch {
      // the same: nft has exited or is exiting
    }
    return answer;
  }

  private async readAnswers(): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of this.child.stderr) {
      this.stderr += decoder.decode(chunk, { stream: true });
      this.settleAnswered();
    }
  }

  /** Hands out every answer whose marker line (and the caret line after it) has arrived. */
  private settleAnswered(): void {
    for (;;) {
      const lines = this.stderr.split("\n"); // the last element is an unfinished line
      const marker = lines.indexOf(`${SYNC_MARKER}${this.answered + 1}`);
      if (marker === -1 || marker + 1 >= lines.length - 1) return;
      // Before the marker: this command's errors, then the marker's own "Error: syntax error" line.
      const answer = lines
        .slice(0, Math.max(0, marker - 1))
        .join("\n")
        .trim();
      this.stderr = lines.slice(marker + 2).join("\n");
      this.answered++;
      this.waiting.shift()?.settle(answer);
    }
  }
}

export class NftablesPortForwards implements PortForwardBackend {
  readonly table: string;
  private session: NftSession | undefined;
  /** True while our owned table exists in the kernel, as far as we know. */
  private tableOwned = false;

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
   * Starts the nft session and removes a table of our name that a softnet without the owner flag
   * (an older version) may have left behind. Call after the privilege drop: nft refuses to run
   * while the real and effective uids differ, and it must not run as root.
   */
  async open(): Promise<void> {
    // An unowned table of this name can only be a leftover: declaring it without flags and
    // deleting it works whether or not it exists.
    await this.run(`table ip ${this.table} {} ; delete table ip ${this.table}`, "remove port forwards");
  }

  /** False once the nft session has ended (killed, crashed): the owned table went with it. */
  intact(): boolean {
    return this.session !== undefined && this.session.exitedWith === undefined;
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
    this.tableOwned = true;
  }

  /**
   * The one-line nft command install() runs (nft -i reads a command per line); `softnet doctor`
   * checks it with `nft --check` (nothing applied).
   */
  installScript(ports: readonly ExposedPort[], address: number): string {
    const target = formatIpv4(address);
    const dnat = ports.map((p) => `tcp dport ${p.externalPort} dnat to ${target}:${p.internalPort}`);
    const owned = `table ip ${this.table} { flags owner; }`;
    return [
      // Declared with the same flag first, so the delete succeeds whether or not it exists.
      owned,
      `; delete table ip ${this.table} ;`,
      `table ip ${this.table} { flags owner;`,
      "chain prerouting { type nat hook prerouting priority -100; policy accept;",
      ...dnat.map((rule) => `fib daddr type local ${rule};`),
      "} ; chain output { type nat hook output priority -100; policy accept;",
      ...dnat.map((rule) => `fib daddr type local ip daddr != 127.0.0.0/8 ${rule};`),
      "} ; chain postrouting { type nat hook postrouting priority 100; policy accept;",
      `oifname "${this.bridge}" ip daddr ${target} ct status dnat masquerade;`,
      "} ; }",
    ].join(" ");
  }

  async removeAll(): Promise<void> {
    if (!this.tableOwned || !this.intact()) {
      this.tableOwned = false;
      return; // never installed, or gone with the session that owned it
    }
    await this.run(
      `table ip ${this.table} { flags owner; } ; delete table ip ${this.table}`,
      "remove port forwards",
    );
    this.tableOwned = false;
  }

  /** Ends the nft session: whatever it still owns is deleted by the kernel. */
  async close(): Promise<void> {
    const session = this.session;
    this.session = undefined;
    this.tableOwned = false;
    await session?.close();
  }

  private async run(command: string, what: string): Promise<void> {
    if (!this.intact()) {
      await this.session?.close();
      this.session = new NftSession(this.nft);
      this.tableOwned = false;
    }
    const session = this.session as NftSession;
    let answer: string;
    try {
      answer = await session.run(command);
    } catch (error) {
      throw new SoftnetError(`cannot ${what} with ${this.nft}`, { cause: error });
    }
    if (answer === "") return;
    // nft's first line ("Error: Could not process rule: Operation not permitted").
    const why = answer.split("\n")[0]?.replace(/^Error: /, "") ?? answer;
    throw new SoftnetError(`cannot ${what} with ${this.nft}`, {
      cause: new Error(why),
      // EPERM also comes from a table of this name that another program created with the owner
      // flag (only its creator may change it), not only from a missing capability.
      hint: /Operation not permitted/.test(answer)
        ? `nft needs CAP_NET_ADMIN, and table ip ${this.table} must not belong to another program: see nft list table ip ${this.table}`
        : /Operation not supported|syntax error/.test(answer)
          ? "softnet ties its forwards to its own life with the nftables table flag `owner`: it needs Linux 5.12 or later and an nft that knows it"
          : undefined,
    });
  }
}
