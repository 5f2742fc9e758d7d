/**
 * The host side of softnet on Linux: a TAP device enslaved to an existing bridge.
 *
 * The bridge belongs to the administrator: it has the host's IPv4 address on the VM network (which
 * becomes the VM's gateway), usually a DHCP server (dnsmasq) and NAT. softnet adds one TAP port per
 * VM, with bridge port isolation on, so VMs reach the host and the outside but not each other.
 *
 * A TAP has no batch system calls: read() and write() move one frame each. The fd is non-blocking,
 * so a receive reads until EAGAIN or the batch is full.
 *
 * Closing the fd deletes the TAP (it is not made persistent), which also removes it from the bridge:
 * when softnet dies, however it dies, nothing is left behind.
 */
import type { Pointer } from "bun:ffi";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { SoftnetError } from "../../errors.ts";
import {
  AF_INET,
  Errno,
  lastErrno,
  libc,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDWR,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SysError,
  stableAddress,
} from "../libc.ts";
import type { FrameBatch, FrameLink } from "../link.ts";

/** A TAP port on a bridge, plus what softnet needs to know about the bridge's network. */
export interface TapOnBridge extends FrameLink {
  /** The TAP's interface name, e.g. "sn1a2b3c". */
  readonly name: string;
  /** The bridge it is enslaved to. */
  readonly bridge: string;
  /** The bridge's IPv4 address (the VM's gateway) as a uint32 in host order, e.g. 0xc0a86401. */
  readonly gateway: number;
  /** Prefix length of the bridge's IPv4 subnet, e.g. 24. */
  readonly prefixLength: number;
  /** The bridge's MTU, which the TAP was given too. */
  readonly mtu: number;
  /**
   * Largest frame the TAP delivers: mtu + 14 (Ethernet header, no FCS). VLAN-tagged frames could
   * be 4 bytes longer, but the port is untagged and softnet drops 802.1Q frames anyway, so batch
   * slots of maxFrameSize bytes suffice.
   */
  readonly maxFrameSize: number;
  /** Frames the kernel refused one by one (EINVAL: shorter than an Ethernet header; EIO: TAP down). */
  readonly rejectedFrames: number;
}

export interface TapOptions {
  /** Name of an existing Linux bridge with an IPv4 address. */
  bridge: string;
  /** Bridge port isolation: on keeps VMs on this bridge from reaching each other directly. */
  isolate: boolean;
  /** TAP name; by default "sn" and 6 random hex digits. It must not exist yet. */
  name?: string;
}

const ETHERNET_HEADER_BYTES = 14;

// From <linux/if_tun.h>, <linux/sockios.h>, <linux/if.h>.
const TUNSETIFF = 0x400454ca; // _IOW('T', 202, int)
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
const IFF_UP = 0x1;
const SIOCGIFFLAGS = 0x8913;
const SIOCSIFFLAGS = 0x8914;
const SIOCGIFADDR = 0x8915;
const SIOCGIFNETMASK = 0x891b;
const SIOCGIFMTU = 0x8921;
const SIOCSIFMTU = 0x8922;
const SIOCGIFINDEX = 0x8933;
const SIOCBRADDIF = 0x89a2;

// struct ifreq (40 bytes): char ifr_name[16]; then a union at offset 16: short ifr_flags,
// int ifr_ifindex, int ifr_mtu, or struct sockaddr_in { u16 family; u16 port; u8 addr[4]; ... }.
const IFREQ_BYTES = 40;
const IFNAMSIZ = 16;
const IFR_UNION = 16;
const IFR_SOCKADDR_IN_ADDR = IFR_UNION + 4;

const ROOT_HINT = "softnet needs root or CAP_NET_ADMIN to create a TAP device and attach it to a bridge";

/**
 * Creates a TAP device, gives it the bridge's MTU, attaches it to `options.bridge` with port
 * isolation as asked, and brings it up. Reads the bridge's IPv4 address and prefix, which become
 * the VM network's gateway and subnet. Throws a SoftnetError that says what to fix.
 */
export function openTapOnBridge(options: TapOptions): TapOnBridge {
  const bridge = options.bridge;
  checkInterfaceName(bridge, "--bridge");
  if (!existsSync(`/sys/class/net/${bridge}`)) {
    throw new SoftnetError(`bridge ${bridge} does not exist`, {
      hint: `create it with "ip link add ${bridge} type bridge", or pick one from "ip -br link show type bridge"`,
    });
  }
  if (!existsSync(`/sys/class/net/${bridge}/bridge`)) {
    throw new SoftnetError(`${bridge} is not a bridge`, {
      hint: '--bridge takes a Linux bridge; pick one from "ip -br link show type bridge"',
    });
  }
  if (options.name !== undefined) {
    checkInterfaceName(options.name, "TAP name");
    if (existsSync(`/sys/class/net/${options.name}`)) {
      throw new SoftnetError(`cannot create TAP device ${options.name}: an interface with that name exists`, {
        hint: "choose another name, or leave it out to get a random one",
      });
    }
  }

  const control = libc.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (control < 0) {
    throw new SoftnetError("cannot open a socket to configure network interfaces", {
      cause: new SysError("socket(AF_INET)", lastErrno()),
    });
  }
  let tap = -1;
  try {
    const request = new InterfaceRequest(control);
    const gateway = request.ipv4Address(bridge);
    const prefixLength = request.prefixLength(bridge);
    const mtu = request.mtu(bridge);

    tap = openTunDevice();
    const name = createTap(tap, options.name ?? randomTapName());
    // Before enslaving: a bridge without an explicit MTU follows its smallest port, so a TAP left
    // at 1500 would shrink a jumbo-frame bridge.
    request.setMtu(name, mtu);
    request.addToBridge(bridge, name);
    // Before the port is up, so no frame is ever forwarded through it without isolation.
    setPortIsolation(name, bridge, options.isolate);
    request.bringUp(name);

    return new TapLink(tap, control, name, bridge, gateway, prefixLength, mtu);
  } catch (error) {
    if (tap >= 0) libc.close(tap); // deletes the TAP, and with it the bridge port
    libc.close(control);
    throw error;
  }
}

class TapLink implements TapOnBridge {
  readonly description: string;
  readonly pollFd: number;
  readonly maxFrameSize: number;
  rejectedFrames = 0;
  private closed = false;

  constructor(
    private readonly fd: number,
    private readonly controlSocket: number,
    readonly name: string,
    readonly bridge: string,
    readonly gateway: number,
    readonly prefixLength: number,
    readonly mtu: number,
  ) {
    this.pollFd = fd;
    this.maxFrameSize = mtu + ETHERNET_HEADER_BYTES;
    this.description = `tap ${name} on ${bridge}`;
  }

  receive(batch: FrameBatch): number {
    // read() on a TAP silently truncates a frame to the buffer and returns the truncated length, so
    // a slot smaller than the largest frame would corrupt frames without any sign.
    if (batch.slotSize < this.maxFrameSize) {
      throw new RangeError(
        `${this.description}: batch slots of ${batch.slotSize} bytes < ${this.maxFrameSize}`,
      );
    }
    const base = stableAddress(batch.bytes);
    const slotSize = batch.slotSize;
    const lengths = batch.lengths;
    let count = 0;
    while (count < batch.capacity) {
      const length = libc.read(this.fd, (base + count * slotSize) as Pointer, slotSize);
      if (length >= 0) {
        lengths[count++] = length;
        continue;
      }
      const errno = lastErrno();
      if (errno === Errno.EAGAIN) break;
      if (errno === Errno.EINTR) continue;
      if (errno === Errno.EBADFD) {
        // The TAP was deleted under us (ip link del): the host side is gone.
        batch.count = 0;
        return -1;
      }
      batch.count = count;
      throw new SoftnetError(`cannot receive frames from ${this.description}`, {
        cause: new SysError("read", errno),
      });
    }
    batch.count = count;
    return count;
  }

  send(batch: FrameBatch, slots: Uint16Array, count: number): number {
    const base = stableAddress(batch.bytes);
    const slotSize = batch.slotSize;
    const lengths = batch.lengths;
    let sent = 0;
    for (let j = 0; j < count; j++) {
      const slot = slots[j]!;
      const written = libc.write(this.fd, (base + slot * slotSize) as Pointer, lengths[slot]!);
      if (written >= 0) {
        sent++;
        continue;
      }
      const errno = lastErrno();
      if (errno === Errno.EAGAIN || errno === Errno.ENOBUFS) break; // no room: drop the rest
      if (errno === Errno.EINTR) {
        j--; // retry the same frame
        continue;
      }
      if (errno === Errno.EINVAL || errno === Errno.EIO || errno === Errno.EMSGSIZE) {
        this.rejectedFrames++; // this frame only (too short or too long), or the TAP is down
        continue;
      }
      if (errno === Errno.EBADFD) return -1;
      throw new SoftnetError(`cannot send frames to ${this.description}`, {
        cause: new SysError("write", errno),
      });
    }
    return sent;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    libc.close(this.fd);
    libc.close(this.controlSocket);
  }
}

/** ioctl(SIOC*) requests on an AF_INET control socket, one reusable struct ifreq. */
class InterfaceRequest {
  private readonly ifreq = new Uint8Array(IFREQ_BYTES);
  private readonly view = new DataView(this.ifreq.buffer);

  constructor(private readonly socket: number) {}

  ipv4Address(bridge: string): number {
    const errno = this.call(bridge, SIOCGIFADDR);
    if (errno === Errno.EADDRNOTAVAIL) {
      throw new SoftnetError(`bridge ${bridge} has no IPv4 address`, {
        hint: `softnet gives VMs the bridge's address as their gateway: add one, e.g. "ip addr add 192.168.100.1/24 dev ${bridge}"`,
      });
    }
    this.check(errno, `cannot read the IPv4 address of bridge ${bridge}`, "ioctl(SIOCGIFADDR)");
    return this.view.getUint32(IFR_SOCKADDR_IN_ADDR, false); // network byte order
  }

  prefixLength(bridge: string): number {
    this.check(
      this.call(bridge, SIOCGIFNETMASK),
      `cannot read the netmask of bridge ${bridge}`,
      "ioctl(SIOCGIFNETMASK)",
    );
    const mask = this.view.getUint32(IFR_SOCKADDR_IN_ADDR, false);
    const prefix = Math.clz32(~mask);
    if (prefix < 32 && mask << prefix !== 0) {
      throw new SoftnetError(`bridge ${bridge} has a non-contiguous netmask 0x${mask.toString(16)}`);
    }
    return prefix;
  }

  mtu(name: string): number {
    this.check(this.call(name, SIOCGIFMTU), `cannot read the MTU of ${name}`, "ioctl(SIOCGIFMTU)");
    return this.view.getInt32(IFR_UNION, true);
  }

  setMtu(name: string, mtu: number): void {
    this.prepare(name);
    this.view.setInt32(IFR_UNION, mtu, true);
    this.check(this.invoke(SIOCSIFMTU), `cannot set the MTU of ${name} to ${mtu}`, "ioctl(SIOCSIFMTU)");
  }

  addToBridge(bridge: string, port: string): void {
    this.check(this.call(port, SIOCGIFINDEX), `cannot find the index of ${port}`, "ioctl(SIOCGIFINDEX)");
    const index = this.view.getInt32(IFR_UNION, true);
    this.prepare(bridge);
    this.view.setInt32(IFR_UNION, index, true);
    this.check(this.invoke(SIOCBRADDIF), `cannot add ${port} to bridge ${bridge}`, "ioctl(SIOCBRADDIF)");
  }

  bringUp(name: string): void {
    this.check(this.call(name, SIOCGIFFLAGS), `cannot read the flags of ${name}`, "ioctl(SIOCGIFFLAGS)");
    const flags = this.view.getUint16(IFR_UNION, true);
    this.view.setUint16(IFR_UNION, flags | IFF_UP, true);
    this.check(this.invoke(SIOCSIFFLAGS), `cannot bring ${name} up`, "ioctl(SIOCSIFFLAGS)");
  }

  /** Fills in the name, clears the union, runs the request; 0 or errno. */
  private call(name: string, request: number): number {
    this.prepare(name);
    return this.invoke(request);
  }

  private prepare(name: string): void {
    this.ifreq.fill(0);
    this.ifreq.set(Buffer.from(name, "ascii"));
  }

  private invoke(request: number): number {
    return libc.ioctl(this.socket, request, this.ifreq) < 0 ? lastErrno() : 0;
  }

  private check(errno: number, what: string, syscall: string): void {
    if (errno === 0) return;
    throw new SoftnetError(what, {
      cause: new SysError(syscall, errno),
      hint: errno === Errno.EPERM || errno === Errno.EACCES ? ROOT_HINT : undefined,
    });
  }
}

function openTunDevice(): number {
  const fd = libc.open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd >= 0) return fd;
  const errno = lastErrno();
  const hints: Partial<Record<number, string>> = {
    [Errno.ENOENT]:
      "the tun driver is missing: load it with modprobe tun (in a container, pass --device /dev/net/tun)",
    [Errno.ENODEV]: "the tun driver is missing: load it with modprobe tun",
    [Errno.ENXIO]: "the tun driver is missing: load it with modprobe tun",
    [Errno.EPERM]: ROOT_HINT,
    [Errno.EACCES]: ROOT_HINT,
  };
  throw new SoftnetError("cannot open /dev/net/tun", {
    cause: new SysError("open", errno),
    hint: hints[errno],
  });
}

/** TUNSETIFF: turns the fd into a new TAP device; returns the name the kernel gave it. */
function createTap(fd: number, name: string): string {
  const ifreq = new Uint8Array(IFREQ_BYTES);
  ifreq.set(Buffer.from(name, "ascii"));
  new DataView(ifreq.buffer).setUint16(IFR_UNION, IFF_TAP | IFF_NO_PI, true);
  if (libc.ioctl(fd, TUNSETIFF, ifreq) < 0) {
    const errno = lastErrno();
    const hints: Partial<Record<number, string>> = {
      [Errno.EPERM]: ROOT_HINT,
      [Errno.EBUSY]: `${name} is a TAP device already in use by another process`,
      [Errno.EINVAL]: `an interface named ${name} exists and is not a TAP device`,
    };
    throw new SoftnetError(`cannot create TAP device ${name}`, {
      cause: new SysError("ioctl(TUNSETIFF)", errno),
      hint: hints[errno],
    });
  }
  const end = ifreq.indexOf(0);
  return Buffer.from(ifreq.subarray(0, end < 0 || end > IFNAMSIZ ? IFNAMSIZ : end)).toString("ascii");
}

function setPortIsolation(port: string, bridge: string, isolate: boolean): void {
  const path = `/sys/class/net/${port}/brport/isolated`;
  try {
    writeFileSync(path, isolate ? "1" : "0");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new SoftnetError(
      `cannot turn bridge port isolation ${isolate ? "on" : "off"} for ${port} on ${bridge}`,
      {
        cause: error,
        hint:
          code === "ENOENT"
            ? "bridge port isolation needs Linux 4.18 or later"
            : code === "EACCES"
              ? ROOT_HINT
              : undefined,
      },
    );
  }
  const actual = readFileSync(path, "ascii").trim();
  if (actual !== (isolate ? "1" : "0")) {
    throw new SoftnetError(
      `bridge port isolation for ${port} reads ${actual} after writing ${isolate ? 1 : 0}`,
    );
  }
}

function randomTapName(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(3));
  return `sn${Buffer.from(bytes).toString("hex")}`;
}

/** Linux's rules for interface names (dev_valid_name), limited to printable ASCII. */
function checkInterfaceName(name: string, what: string): void {
  const valid =
    name.length > 0 &&
    name.length < IFNAMSIZ &&
    name !== "." &&
    name !== ".." &&
    /^[\x21-\x7e]+$/.test(name) &&
    !/[/:]/.test(name);
  if (!valid) {
    throw new SoftnetError(`${what} ${JSON.stringify(name)} is not a valid network interface name`, {
      hint: "1 to 15 printable ASCII characters, without '/', ':' or spaces",
    });
  }
}
