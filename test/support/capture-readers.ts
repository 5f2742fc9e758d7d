/**
 * Reading softnet's --capture files back with real readers, as a user would: tshark (Wireshark's
 * command-line reader, Debian package tshark) for directions, comments and interface names, and
 * tcpdump (libpcap's pcapng reader) for the bytes. Neither shares code with softnet's writer.
 */

export interface CapturedFrame {
  /** From the EPB flags word, as tshark reports it (frame.packet_flags_direction). */
  direction: "inbound" | "outbound" | "not given";
  /** Packet comments (opt_comment), as tshark reports them (frame.comment). */
  comments: string[];
  /** The frame's bytes as hex, from tshark's frame_raw. */
  hex: string;
  /** The interface's if_name (frame.interface_name). */
  interfaceName: string;
  interfaceDescription: string;
  /** Seconds since the epoch with microseconds, as text (frame.time_epoch). */
  timeEpoch: string;
}

const SBIN_PATH = `${process.env.PATH ?? ""}:/usr/sbin:/sbin`;

export function haveTool(name: string): boolean {
  return Bun.which(name, { PATH: SBIN_PATH }) !== null;
}

async function runReader(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = Bun.spawn(argv, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  return { code, stdout, stderr };
}

/** Every value stored under `key` anywhere in a tshark JSON tree. */
function valuesOf(node: unknown, key: string, into: string[] = []): string[] {
  if (Array.isArray(node)) {
    for (const item of node) valuesOf(item, key, into);
  } else if (node !== null && typeof node === "object") {
    for (const [name, value] of Object.entries(node)) {
      if (name === key && typeof value === "string") into.push(value);
      else valuesOf(value, key, into);
    }
  }
  return into;
}

/**
 * The frames of a capture file as tshark dissects them (`tshark -r FILE -T json -x`). Throws when
 * tshark fails or complains about the file (a truncated or malformed block).
 */
export async function readWithTshark(path: string): Promise<CapturedFrame[]> {
  const result = await runReader(["tshark", "-r", path, "-T", "json", "-x"]);
  // tshark warns about running as root on stderr; anything else there is about the file.
  const complaints = result.stderr
    .split("\n")
    .filter((line) => line.trim() !== "" && !/Running as user "root"|This could be dangerous/.test(line));
  if (result.code !== 0 || complaints.length > 0) {
    throw new Error(`tshark -r ${path} exited ${result.code}: ${complaints.join("\n")}`);
  }
  const packets = JSON.parse(result.stdout || "[]") as Array<{
    _source: { layers: Record<string, unknown> };
  }>;
  return packets.map((packet) => {
    const layers = packet._source.layers;
    const raw = layers.frame_raw as unknown[];
    const direction = valuesOf(layers, "frame.packet_flags_direction")[0];
    return {
      direction:
        direction === undefined
          ? "not given"
          : (Number(direction) & 3) === 1
            ? "inbound"
            : (Number(direction) & 3) === 2
              ? "outbound"
              : "not given",
      comments: valuesOf(layers, "frame.comment"),
      hex: String(raw[0]),
      interfaceName: valuesOf(layers, "frame.interface_name")[0] ?? "",
      interfaceDescription: valuesOf(layers, "frame.interface_description")[0] ?? "",
      timeEpoch: valuesOf(layers, "frame.time_epoch")[0] ?? "",
    };
  });
}

/**
 * The frames of a capture file (pcap or pcapng) as hex, read by tcpdump (`tcpdump -r FILE -xx`).
 * Throws when tcpdump fails or reports a damaged file.
 */
export async function readWithTcpdump(path: string, filter = ""): Promise<string[]> {
  const argv = ["tcpdump", "-r", path, "-nn", "-t", "-xx"];
  if (filter !== "") argv.push(filter);
  const result = await runReader(argv);
  const complaints = result.stderr
    .split("\n")
    .filter((line) => line.trim() !== "" && !/^reading from file/.test(line));
  if (result.code !== 0 || complaints.length > 0) {
    throw new Error(`tcpdump -r ${path} exited ${result.code}: ${complaints.join("\n")}`);
  }
  const frames: string[] = [];
  for (const line of result.stdout.split("\n")) {
    const hexLine = /^\s+0x[0-9a-f]+:\s+(.*)$/.exec(line);
    if (hexLine) {
      // "0x0010:  0800 4500 ..." — groups of up to 4 hex digits, then possibly nothing else (-xx).
      frames[frames.length - 1] += hexLine[1]!.replace(/\s+/g, "");
    } else if (line.trim() !== "") {
      frames.push("");
    }
  }
  return frames;
}

export function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("hex");
}
