/**
 * The host side of softnet on Linux: a TAP device enslaved to an existing bridge.
 *
 * The bridge belongs to the administrator: it has the host's IPv4 address on the VM network (which
 * becomes the VM's gateway), usually a DHCP server (dnsmasq) and NAT. softnet adds one TAP port per
 * VM, with bridge port isolation on, so VMs reach the host and the outside but not each other.
 *
 * The port is locked to its VM: it does not learn addresses, the VM's MAC is
 * pinned to it by a static, sticky FDB entry, and unicast frames for addresses the bridge does not
 * know are not flooded to it. softnet refuses to start when the bridge already has the VM's MAC
 * (another VM's port, a learned entry, an interface): a second VM with the same MAC would otherwise
 * take the first one's traffic.
 *
 * The bridge's own MAC (the VM's gateway) must not change as ports come and go: a bridge
 * whose address nobody set follows the lowest MAC among its ports, and drops to zero when the last
 * one leaves. softnet makes the bridge's current address explicit, once (as libvirt does for the
 * bridges it manages), and gives its TAPs fe:xx:xx:xx:xx:xx addresses, which sort above any
 * ordinary MAC.
 *
 * A TAP has no batch system calls: read() and write() move one frame each. The fd is non-blocking,
 * so a receive reads until EAGAIN or the batch is full. Sends go through io_uring where the kernel
 * offers it (io-uring.ts: one system call for a batch of writes), else one write() per frame.
 *
 * Closing the fd deletes the TAP (it is not made persistent), which also removes it from the bridge
 * and deletes its FDB entries: when softnet dies, however it dies, nothing is left behind.
 */
import type { Pointer } from "bun:ffi";
import { SoftnetError } from "../../errors.ts";
import { isInterfaceName } from "../../interface-name.ts";
import { formatMac } from "../../wire/bytes.ts";
import { stableAddress } from "../ffi-helpers.ts";
import {
  type FrameBatch,
  type HostLink,
  MAX_BATCH_CAPACITY,
  markUnsent,
  SendOutcome,
  type SendOutcomeCode,
} from "../link.ts";
import {
  type Link,
  listLinks,
  lockPortToVm,
  NET_ADDR_SET,
  netlinkStep,
  ROOT_HINT,
  randomLocalMac,
  readAddressAssignType,
  refuseMacInUse,
  setLinkMac,
} from "./bridge.ts";
import { TapWriteRing } from "./io-uring.ts";
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
} from "./libc.ts";
import { NETLINK_ROUTE, NetlinkSocket } from "./netlink.ts";

/**
 * A TAP port on a bridge, plus what softnet needs to know about the bridge's network. As a HostLink:
 * the gateway is the bridge's IPv4 address (e.g. 0xc0a86401) and prefixLength its subnet's; mtu is
 * the bridge's MTU, which the TAP was given too; maxFrameSize is mtu + 14 (Ethernet header, no
 * FCS). VLAN-tagged frames could be 4 bytes longer, but the port is untagged and softnet drops
 * 802.1Q frames anyway, so batch slots of maxFrameSize bytes suffice.
 */
export interface TapOnBridge extends HostLink {
  /** The TAP's interface name, e.g. "sn1a2b3c". */
  readonly name: string;
  /** The TAP's interface index. */
  readonly index: number;
  /** The bridge it is enslaved to. */
  readonly bridge: string;
  /** The bridge's interface index: a bridge deleted and created again under its name has another. */
  readonly bridgeIndex: number;
  /** The TAP's own MAC, fe:xx:xx:xx:xx:xx (not the VM's: that one is pinned to the port). */
  readonly tapMac: number;
  /** What softnet changed on the bridge itself, for the log (empty when nothing). */
  readonly bridgeChanges: readonly string[];
  /**
   * Sends batches through an io_uring from now on (io-uring.ts). Returns how frames are written,
   * for the log: "io_uring, ..." or "one write() per frame (io_uring: <why not>)". Call it after
   * the privilege drop.
   */
  batchWrites(): string;
}

export interface TapOptions {
  /** Name of an existing Linux bridge with an IPv4 address. */
  bridge: string;
  /** Bridge port isolation: on keeps VMs on this bridge from reaching each other directly. */
  isolate: boolean;
  /** The VM's MAC: pinned to the TAP port; refused when the bridge already has it. */
  vmMac: number;
  /** TAP name; by default "sn" and 6 random hex digits. It must not exist yet. */
  name?: string;
  /**
   * The uid the TAP is recorded as belonging to (TUNSETOWNER): the person who started softnet
   * (caller.ts). softnet keeps the fd, so the owner gets no access to the device from it; it is
   * what counts the caller's VMs for `ownerCap`, and it goes when the TAP does.
   */
  owner?: number;
  /**
   * At most this many TAPs owned by `owner` on the bridge, this one included
   * (max-vms-per-user in /etc/softnet/bridge.conf); `reason` names the line, for the refusal.
   */
  ownerCap?: { max: number; reason: string };
}

const ETHERNET_HEADER_BYTES = 14;

// From <linux/if_tun.h>, <linux/sockios.h>, <linux/if.h>.
const TUNSETIFF = 0x400454ca; // _IOW('T', 202, int)
// _IOW('T', 204, int): the argument is the uid itself, not a pointer (drivers/net/tun.c
// __tun_chr_ioctl, case TUNSETOWNER: make_kuid(current_user_ns(), arg)).
const TUNSETOWNER = 0x400454cc;
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

/**
 * First byte of every TAP's MAC: locally administered, unicast, and above any vendor-assigned or
 * ordinary random MAC, so a bridge that follows its lowest port never picks a softnet TAP (libvirt
 * uses fe: for its tap devices for the same reason).
 */
const TAP_MAC_FIRST_BYTE = 0xfe;
/** First byte for a bridge that has no address at all (00:00:00:00:00:00): locally administered. */
const BRIDGE_MAC_FIRST_BYTE = 0x02;

/**
 * Creates a TAP device, gives it the bridge's MTU, attaches it to `options.bridge` with port
 * isolation as asked, locks the port to `options.vmMac`, and brings it up. Reads the bridge's IPv4
 * address and prefix, which become the VM network's gateway and subnet. Throws a SoftnetError that
 * says what to fix; on any failure nothing of the TAP is left behind.
 */
export function openTapOnBridge(options: TapOptions): TapOnBridge {
  const bridgeName = options.bridge;
  checkInterfaceName(bridgeName, "--bridge");
  if (options.name !== undefined) checkInterfaceName(options.name, "TAP name");

  const netlink = NetlinkSocket.open(NETLINK_ROUTE, "configure the bridge");
  let control = -1;
  let tap = -1;
  try {
    const links = netlinkStep("cannot list the network interfaces", () => listLinks(netlink));
    const bridge = links.find((link) => link.name === bridgeName);
    if (bridge === undefined) {
      throw new SoftnetError(`bridge ${bridgeName} does not exist`, {
        hint: `create it with "ip link add ${bridgeName} type bridge", or pick one from "ip -br link show type bridge"`,
      });
    }
    if (bridge.kind !== "bridge") {
      throw new SoftnetError(`${bridgeName} is not a bridge`, {
        hint: '--bridge takes a Linux bridge; pick one from "ip -br link show type bridge"',
      });
    }
    if (options.name !== undefined && links.some((link) => link.name === options.name)) {
      throw new SoftnetError(`cannot create TAP device ${options.name}: an interface with that name exists`, {
        hint: "choose another name, or leave it out to get a random one",
      });
    }

    control = libc.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (control < 0) {
      throw new SoftnetError("cannot open a socket to configure network interfaces", {
        cause: new SysError("socket(AF_INET)", lastErrno()),
      });
    }
    const request = new InterfaceRequest(control);
    const gateway = request.ipv4Address(bridgeName);
    const prefixLength = request.prefixLength(bridgeName);
    const mtu = request.mtu(bridgeName);

    // Refuse before changing anything: the VM's MAC must be new to this bridge.
    refuseMacInUse(netlink, options.vmMac, bridge, links);

    const bridgeChanges = fixBridgeMac(netlink, bridge);

    tap = openTunDevice();
    const name = createTap(tap, options.name ?? randomTapName());
    const tapIndex = request.index(name);
    // Before enslaving, so the bridge never sees the kernel's random address on this port.
    const tapMac = randomLocalMac(TAP_MAC_FIRST_BYTE);
    netlinkStep(`cannot set the MAC of ${name}`, () => setLinkMac(netlink, tapIndex, tapMac));
    // Before enslaving: a bridge without an explicit MTU follows its smallest port, so a TAP left
    // at 1500 would shrink a jumbo-frame bridge.
    request.setMtu(name, mtu);
    if (options.owner !== undefined) setTapOwner(tap, name, options.owner);
    request.addToBridge(bridgeName, name);
    // Counted once this TAP is a port: two softnets of one user starting together both count
    // each other, so the cap can only be undershot by a race, never exceeded.
    if (options.owner !== undefined && options.ownerCap !== undefined) {
      checkOwnerCap(netlink, bridge, tapIndex, options.owner, options.ownerCap);
    }
    // Before the port is up, so no frame ever passes through it unlocked or without isolation.
    lockPortToVm(netlink, { name, index: tapIndex }, bridge, options.vmMac, options.isolate);
    request.bringUp(name);

    const link = new TapLink(
      tap,
      control,
      name,
      tapIndex,
      bridgeName,
      bridge.index,
      gateway,
      prefixLength,
      mtu,
      tapMac,
      bridgeChanges,
    );
    tap = -1;
    control = -1;
    return link;
  } finally {
    if (tap >= 0) libc.close(tap); // deletes the TAP, and with it the bridge port and its FDB entries
    if (control >= 0) libc.close(control);
    netlink.close();
  }
}

/**
 * Makes the bridge's current MAC its explicit address unless someone already set one, so adding
 * and removing ports (softnet's and anyone else's) never changes it again. Returns what changed,
 * for the log. A bridge at 00:00:00:00:00:00 lost its last port: no VM has its address cached, and
 * zero cannot be set, so it gets a random locally administered one.
 */
function fixBridgeMac(netlink: NetlinkSocket, bridge: Link): string[] {
  const assignType = readAddressAssignType(bridge);
  if (assignType === NET_ADDR_SET) return [];
  const current = bridge.mac ?? 0;
  const fixed = current === 0 ? randomLocalMac(BRIDGE_MAC_FIRST_BYTE) : current;
  netlinkStep(`cannot fix the MAC address of bridge ${bridge.name}`, () =>
    setLinkMac(netlink, bridge.index, fixed),
  );
  return [
    current === 0
      ? `bridge ${bridge.name} had no MAC address (00:00:00:00:00:00): gave it ${formatMac(fixed)}, which ports joining and leaving will not change`
      : `bridge ${bridge.name}: made its MAC ${formatMac(fixed)} explicit, so ports joining and leaving cannot change the VMs' gateway MAC`,
  ];
}

/**
 * Why a TAP refused one frame written to it (Linux drivers/net/tun.c, tun_get_user): EINVAL when it
 * is shorter than an Ethernet header (len < ETH_HLEN), EIO when the interface is not up (the
 * IFF_UP check before the frame is handed to the stack), EMSGSIZE when no skb that large can be
 * allocated (net/core/sock.c, sock_alloc_send_pskb). undefined: not a refusal of this frame alone.
 */
function refusalOf(errno: number): SendOutcomeCode | undefined {
  if (errno === Errno.EINVAL) return SendOutcome.REFUSED_TOO_SHORT;
  if (errno === Errno.EMSGSIZE) return SendOutcome.REFUSED_TOO_LONG;
  if (errno === Errno.EIO) return SendOutcome.REFUSED_LINK_DOWN;
  return undefined;
}

function describeRing(ring: TapWriteRing): string {
  return `io_uring, up to ${ring.entries} frames per system call`;
}

class TapLink implements TapOnBridge {
  readonly description: string;
  readonly pollFd: number;
  readonly maxFrameSize: number;
  private closed = false;
  /** Set by batchWrites() when the kernel offers io_uring. */
  private writeRing: TapWriteRing | undefined;
  /** Each listed frame's write() result from the ring, by its place in the send's slot list. */
  private readonly ringResults = new Int32Array(MAX_BATCH_CAPACITY);

  constructor(
    private readonly fd: number,
    private readonly controlSocket: number,
    readonly name: string,
    readonly index: number,
    readonly bridge: string,
    readonly bridgeIndex: number,
    readonly gateway: number,
    readonly prefixLength: number,
    readonly mtu: number,
    readonly tapMac: number,
    readonly bridgeChanges: readonly string[],
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

  batchWrites(): string {
    if (this.writeRing !== undefined) return describeRing(this.writeRing);
    const ring = TapWriteRing.open(this.fd);
    if (typeof ring === "string") return `one write() per frame (io_uring: ${ring})`;
    this.writeRing = ring;
    return describeRing(ring);
  }

  send(batch: FrameBatch, slots: Uint16Array, count: number, outcomes?: Uint8Array): number {
    if (this.writeRing !== undefined)
      return this.sendThroughRing(this.writeRing, batch, slots, count, outcomes);
    const base = stableAddress(batch.bytes);
    const slotSize = batch.slotSize;
    const lengths = batch.lengths;
    let sent = 0;
    for (let j = 0; j < count; j++) {
      const slot = slots[j]!;
      const written = libc.write(this.fd, (base + slot * slotSize) as Pointer, lengths[slot]!);
      if (written >= 0) {
        sent++;
        if (outcomes !== undefined) outcomes[slot] = SendOutcome.SENT;
        continue;
      }
      const errno = lastErrno();
      if (errno === Errno.EAGAIN || errno === Errno.ENOBUFS) {
        markUnsent(outcomes, slots, j, count, SendOutcome.NO_ROOM); // no room: drop the rest
        break;
      }
      if (errno === Errno.EINTR) {
        j--; // retry the same frame
        continue;
      }
      // This frame only: the others of the batch are still tried.
      const refusal = refusalOf(errno);
      if (refusal !== undefined) {
        if (outcomes !== undefined) outcomes[slot] = refusal;
        continue;
      }
      if (errno === Errno.EBADFD) return -1;
      throw new SoftnetError(`cannot send frames to ${this.description}`, {
        cause: new SysError("write", errno),
      });
    }
    return sent;
  }

  /** send() through the ring: every frame gets its own write() result (see FrameLink.send). */
  private sendThroughRing(
    ring: TapWriteRing,
    batch: FrameBatch,
    slots: Uint16Array,
    count: number,
    outcomes: Uint8Array | undefined,
  ): number {
    const results = this.ringResults;
    try {
      ring.write(stableAddress(batch.bytes), batch.slotSize, slots, batch.lengths, count, results);
    } catch (error) {
      throw new SoftnetError(`cannot send frames to ${this.description}`, { cause: error });
    }
    let sent = 0;
    for (let j = 0; j < count; j++) {
      const result = results[j]!;
      let outcome: SendOutcomeCode;
      if (result >= 0) {
        sent++;
        outcome = SendOutcome.SENT;
      } else {
        const errno = -result;
        if (errno === Errno.EAGAIN || errno === Errno.ENOBUFS || errno === Errno.EINTR) {
          outcome = SendOutcome.NO_ROOM;
        } else {
          const refusal = refusalOf(errno);
          if (refusal !== undefined) outcome = refusal;
          else if (errno === Errno.EBADFD) return -1;
          else {
            throw new SoftnetError(`cannot send frames to ${this.description}`, {
              cause: new SysError("write (io_uring)", errno),
            });
          }
        }
      }
      if (outcomes !== undefined) outcomes[slots[j]!] = outcome;
    }
    return sent;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.writeRing?.close();
    this.writeRing = undefined;
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

  index(name: string): number {
    this.check(this.call(name, SIOCGIFINDEX), `cannot find the index of ${name}`, "ioctl(SIOCGIFINDEX)");
    return this.view.getInt32(IFR_UNION, true);
  }

  setMtu(name: string, mtu: number): void {
    this.prepare(name);
    this.view.setInt32(IFR_UNION, mtu, true);
    this.check(this.invoke(SIOCSIFMTU), `cannot set the MTU of ${name} to ${mtu}`, "ioctl(SIOCSIFMTU)");
  }

  addToBridge(bridge: string, port: string): void {
    const index = this.index(port);
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

/** TUNSETOWNER: records `uid` as the TAP's owner (shown as IFLA_TUN_OWNER and /sys/class/net/X/owner). */
function setTapOwner(fd: number, name: string, uid: number): void {
  if (libc.ioctl(fd, TUNSETOWNER, uid as unknown as Pointer) < 0) {
    throw new SoftnetError(`cannot record uid ${uid} as the owner of TAP device ${name}`, {
      cause: new SysError("ioctl(TUNSETOWNER)", lastErrno()),
    });
  }
}

/**
 * Refuses when `owner` now has more TAPs on `bridge` than the cap allows. The kernel's word is
 * the count: TUNSETOWNER can be set only by whoever holds CAP_NET_ADMIN, so a user cannot make
 * their own TAPs look like someone else's, and a TAP is gone when the softnet holding it is.
 */
function checkOwnerCap(
  netlink: NetlinkSocket,
  bridge: Link,
  tapIndex: number,
  owner: number,
  cap: { max: number; reason: string },
): void {
  const links = netlinkStep("cannot list the network interfaces", () => listLinks(netlink));
  const mine = links.filter(
    (link) => link.master === bridge.index && link.kind === "tun" && link.tunOwner === owner,
  );
  if (!mine.some((link) => link.index === tapIndex)) {
    throw new SoftnetError(
      `cannot count uid ${owner}'s VMs on bridge ${bridge.name}: the kernel does not report TAP owners`,
      {
        hint: "max-vms-per-user needs Linux 4.15 or later (IFLA_TUN_OWNER)",
      },
    );
  }
  const others = mine.length - 1;
  if (mine.length > cap.max) {
    throw new SoftnetError(
      `uid ${owner} already runs ${others} VM${others === 1 ? "" : "s"} on bridge ${bridge.name}, ` +
        `the most it may: ${cap.reason}`,
      { hint: "stop one of them first, or ask root to raise the cap" },
    );
  }
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

function randomTapName(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(3));
  return `sn${Buffer.from(bytes).toString("hex")}`;
}

/** Refuses a bridge or TAP name the kernel would refuse (interface-name.ts) before it reaches an ioctl. */
function checkInterfaceName(name: string, what: string): void {
  if (!isInterfaceName(name)) {
    throw new SoftnetError(`${what} ${JSON.stringify(name)} is not a valid network interface name`, {
      hint: "1 to 15 printable ASCII characters, without '/', ':' or spaces",
    });
  }
}
