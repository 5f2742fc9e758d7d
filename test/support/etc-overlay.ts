/**
 * A private /etc for one command: an overlay on /etc in a mount namespace of its own, whose upper
 * layer holds the files a test writes. softnet reads its bridge access list from the constant
 * /etc/softnet/bridge.conf (never from a path the caller chooses), so this is how tests that run
 * softnet as a program give it one, without touching the machine's /etc. Needs root and
 * util-linux's unshare; files written here are owned by root unless a test says otherwise.
 */
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";

export class EtcOverlay {
  /** The files shown over /etc: the top layer of a read-only overlay (no upper layer, so any
   * number of commands can mount it at once). */
  private readonly layer: string;

  private constructor(private readonly base: string) {
    this.layer = join(base, "etc");
    mkdirSync(this.layer, { mode: 0o755 });
  }

  /** An empty overlay (the machine's /etc unchanged) in a fresh root-only directory under /var/tmp. */
  static create(): EtcOverlay {
    const base = mkdtempSync("/var/tmp/softnet-etc-");
    return new EtcOverlay(base);
  }

  /** Writes /etc/<relative> as seen through the overlay, with the given mode and owner. */
  writeFile(
    relative: string,
    content: string,
    options: { mode?: number; uid?: number; gid?: number } = {},
  ): void {
    const path = join(this.layer, relative);
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    rmSync(path, { force: true, recursive: true });
    writeFileSync(path, content);
    chmodSync(path, options.mode ?? 0o644);
    chownSync(path, options.uid ?? 0, options.gid ?? 0);
  }

  /** Removes /etc/<relative> from the overlay (the machine's own /etc never had it). */
  remove(relative: string): void {
    rmSync(join(this.layer, relative), { force: true, recursive: true });
  }

  /**
   * argv that runs `argv` with this /etc: unshare gives it a private mount namespace (nothing
   * leaks to the machine), mounts the overlay on /etc there (read-only: this layer over the real
   * /etc), and execs argv in place. The layer is read when the command starts.
   */
  wrap(argv: string[]): string[] {
    return [
      "unshare",
      "--mount",
      "--propagation",
      "private",
      "--",
      "/bin/sh",
      "-c",
      'mount -t overlay softnet-etc -o "lowerdir=$1:/etc" /etc && shift && exec "$@"',
      "sh",
      this.layer,
      ...argv,
    ];
  }

  cleanup(): void {
    rmSync(this.base, { recursive: true, force: true });
  }
}
