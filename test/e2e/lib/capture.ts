// tcpdump as the witness: what actually crossed an interface (usually the bridge), written to a
// pcap so a test can ask several questions of one capture with tcpdump's own filter language.

import { inNamespace } from "./netns.ts";
import { check, Daemon } from "./proc.ts";

export class Capture {
  private constructor(
    readonly interfaceName: string,
    readonly pcapPath: string,
    private readonly daemon: Daemon,
  ) {}

  /**
   * Starts tcpdump on interfaceName inside namespace and resolves once it is capturing.
   * On a bridge, tcpdump's promiscuous mode makes the bridge hand the capture every frame it
   * forwards between ports, not only those addressed to the host.
   */
  static async start(namespace: string, interfaceName: string, pcapPath: string): Promise<Capture> {
    const daemon = new Daemon(
      `tcpdump on ${interfaceName}`,
      // --immediate-mode: without it libpcap hands packets over in blocks, at the latest after a
      // 1 s timeout, and tcpdump stopped within that second never writes the last ones.
      // -U: write each packet as it arrives. -Z root: keep write access to the root-only temp dir
      // (Debian's tcpdump otherwise drops to user tcpdump).
      inNamespace(namespace, [
        "tcpdump",
        "-i",
        interfaceName,
        "--immediate-mode",
        "-U",
        "-Z",
        "root",
        "-n",
        "-w",
        pcapPath,
      ]),
    );
    // tcpdump prints this after the capture handle is active: frames from now on are recorded.
    await daemon.waitForOutput(/listening on/);
    return new Capture(interfaceName, pcapPath, daemon);
  }

  get running(): boolean {
    return this.daemon.running;
  }

  get pid(): number {
    return this.daemon.pid;
  }

  /** Stops the capture (SIGINT makes tcpdump flush and close the file). Idempotent. */
  async stop(): Promise<void> {
    await this.daemon.stop("SIGINT");
  }

  /**
   * Lines of `tcpdump -r pcap -nn -e -t [filter]`: one per frame, no timestamp, starting with the
   * link-layer addresses, e.g.
   * `02:5e:10:00:00:01 > ff:ff:ff:ff:ff:ff, ethertype IPv4 (0x0800), length 342: 0.0.0.0.68 > ...`.
   * Can be called while capturing or after stop(). With verbose, tcpdump -v: protocol details
   * follow a frame on indented lines.
   */
  async lines(filter = "", { verbose = false } = {}): Promise<string[]> {
    const argv = ["tcpdump", "-r", this.pcapPath, "-nn", "-e", "-t"];
    // -v decodes more, e.g. every DHCP option, each on a line of its own.
    if (verbose) argv.push("-v");
    if (filter !== "") argv.push(filter);
    const output = await check(argv);
    return output.split("\n").filter((line) => line !== "");
  }

  /** How many captured frames match filter. */
  async count(filter = ""): Promise<number> {
    return (await this.lines(filter)).length;
  }
}
