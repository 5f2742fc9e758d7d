/**
 * What softnet asks of a Linux bridge, through rtnetlink (no `ip` or `bridge` subprocess: this runs
 * as root): the interfaces and the bridge's forwarding database (FDB), the flags of a bridge port,
 * a static FDB entry pinning the VM's MAC to its port, and interface MAC addresses. Two operations
 * put these together for tap.ts: refuseMacInUse before anything changes, and lockPortToVm once the
 * VM's TAP is a port of the bridge.
 *
 * Sources for every number below:
 * - include/uapi/linux/rtnetlink.h: RTM_NEWLINK 16, RTM_GETLINK 18, RTM_SETLINK 19,
 *   RTM_NEWNEIGH 28, RTM_GETNEIGH 30; struct ifinfomsg { u8 family; u8 pad; u16 type; s32 index;
 *   u32 flags; u32 change } (16 bytes).
 * - include/uapi/linux/if_link.h: IFLA_ADDRESS 1, IFLA_IFNAME 3, IFLA_MASTER 10, IFLA_PROTINFO 12,
 *   IFLA_LINKINFO 18 { IFLA_INFO_KIND 1, IFLA_INFO_DATA 2 }; for kind "tun", IFLA_INFO_DATA holds
 *   IFLA_TUN_OWNER 1 (u32 uid, present only when TUNSETOWNER set one: drivers/net/tun.c
 *   tun_fill_info, Linux 4.15+); IFLA_BRPORT_LEARNING 8, IFLA_BRPORT_UNICAST_FLOOD 9,
 *   IFLA_BRPORT_ISOLATED 33 (u8 each, nested in IFLA_PROTINFO).
 * - include/uapi/linux/neighbour.h: struct ndmsg { u8 family; u8 pad1; u16 pad2; s32 ifindex;
 *   u16 state; u8 flags; u8 type } (12 bytes); NDA_LLADDR 2, NDA_VLAN 5, NDA_MASTER 9;
 *   NTF_MASTER 0x04, NTF_STICKY 0x40; NUD_NOARP 0x40, NUD_PERMANENT 0x80.
 * - include/linux/socket.h: AF_BRIDGE 7.
 * - include/linux/netdevice.h: NET_ADDR_PERM 0, NET_ADDR_RANDOM 1, NET_ADDR_STOLEN 2,
 *   NET_ADDR_SET 3 (dev->addr_assign_type, shown in /sys/class/net/<dev>/addr_assign_type).
 * (Values checked by compiling against this machine's linux-libc-dev headers.)
 *
 * Kernel behaviour this relies on (net/bridge/br_fdb.c, br_stp_if.c, br_netlink.c; net/core/dev.c):
 * - An FDB entry with state NUD_NOARP is "static": it never ages out. NUD_PERMANENT would make it
 *   a *local* entry (frames for it go up to the host, not to the port), so it is not used here.
 * - br_fdb_update() moves an existing entry, static or not, to the port a frame with that source
 *   arrived on, unless the entry is sticky (NTF_STICKY, Linux 5.3+) or the port does not learn.
 * - fdb_add_entry() with NLM_F_EXCL fails with EEXIST when the bridge already has an entry for the
 *   address, on any port, and without it *moves* the entry: the exclusive add is both the pinning
 *   and a race-free "is this MAC taken?" check.
 * - br_stp_recalculate_bridge_id(): unless the bridge's address was set explicitly
 *   (addr_assign_type NET_ADDR_SET), the bridge takes the lowest MAC among its ports, and
 *   00:00:00:00:00:00 when it has none. dev_set_mac_address() marks the address NET_ADDR_SET, even
 *   when it is set to the value it already has.
 */
import { readFileSync } from "node:fs";
import { SoftnetError } from "../../errors.ts";
import { formatMac } from "../../wire/bytes.ts";
import { Errno } from "./libc.ts";
import {
  attribute,
  findAttribute,
  NetlinkError,
  NetlinkMessage,
  type NetlinkSocket,
  NLM_F_CREATE,
  NLM_F_EXCL,
  walkAttributes,
} from "./netlink.ts";

const RTM_GETLINK = 18;
const RTM_SETLINK = 19;
const RTM_NEWNEIGH = 28;
const RTM_GETNEIGH = 30;
const AF_UNSPEC = 0;
const AF_BRIDGE = 7;
const IFINFOMSG_BYTES = 16;
const NDMSG_BYTES = 12;
const IFLA_ADDRESS = 1;
const IFLA_IFNAME = 3;
const IFLA_MASTER = 10;
const IFLA_PROTINFO = 12;
const IFLA_LINKINFO = 18;
const IFLA_INFO_KIND = 1;
const IFLA_INFO_DATA = 2;
const IFLA_TUN_OWNER = 1;
const IFLA_BRPORT_LEARNING = 8;
const IFLA_BRPORT_UNICAST_FLOOD = 9;
const IFLA_BRPORT_ISOLATED = 33;
const NDA_LLADDR = 2;
const NDA_VLAN = 5;
const NDA_MASTER = 9;
export const NTF_MASTER = 0x04;
export const NTF_STICKY = 0x40;
export const NUD_NOARP = 0x40;
export const NUD_PERMANENT = 0x80;
/** dev->addr_assign_type: the address was set by someone (include/linux/netdevice.h). */
export const NET_ADDR_SET = 3;

export const ROOT_HINT =
  "softnet needs root or CAP_NET_ADMIN to create a TAP device and attach it to a bridge";

/** Runs a netlink step; a refusal becomes a SoftnetError saying what failed. */
export function netlinkStep<T>(what: string, step: () => T): T {
  try {
    return step();
  } catch (error) {
    if (!(error instanceof NetlinkError)) throw error;
    throw new SoftnetError(what, {
      cause: error,
      hint: error.errno === Errno.EPERM || error.errno === Errno.EACCES ? ROOT_HINT : undefined,
    });
  }
}

/** An interface, as RTM_GETLINK describes it. */
export interface Link {
  index: number;
  name: string;
  /** The MAC as a 48-bit number; undefined for links without a 6-byte address (lo has one of zeros). */
  mac: number | undefined;
  /** Index of the bridge (or bond, ...) it is enslaved to, 0 when none. */
  master: number;
  /** rtnl_link_ops kind: "bridge", "veth", "tun", ...; undefined for physical devices. */
  kind: string | undefined;
  /** For a TUN/TAP device: the uid TUNSETOWNER gave it; undefined when it has none. */
  tunOwner?: number;
}

/** One entry of a bridge's forwarding database (or a port's own address list), from RTM_GETNEIGH. */
export interface FdbEntry {
  /** The port (or the bridge itself) the entry points to. */
  portIndex: number;
  /** The bridge it belongs to (NDA_MASTER); 0 for a device's own ("self") entries. */
  bridgeIndex: number;
  mac: number;
  /** NUD_* state: NUD_PERMANENT for local addresses, NUD_NOARP for static entries, else dynamic. */
  state: number;
  /** NTF_* flags. */
  flags: number;
  vlan: number | undefined;
}

/** What the bridge port flags softnet sets read back as. */
export interface BridgePortFlags {
  learning: boolean;
  unicastFlood: boolean;
  isolated: boolean;
}

function macNumber(bytes: Uint8Array | undefined): number | undefined {
  if (bytes === undefined || bytes.length !== 6) return undefined;
  let mac = 0;
  for (const byte of bytes) mac = mac * 256 + byte;
  return mac;
}

function macBytes(mac: number): Uint8Array {
  const bytes = new Uint8Array(6);
  for (let i = 5, rest = mac; i >= 0; i--, rest = Math.floor(rest / 256)) bytes[i] = rest % 256;
  return bytes;
}

function ifinfomsg(family: number, index: number): Uint8Array {
  const header = new Uint8Array(IFINFOMSG_BYTES);
  const view = new DataView(header.buffer);
  view.setUint8(0, family); // ifi_family
  view.setInt32(4, index, true); // ifi_index
  return header;
}

/** Every interface in softnet's network namespace. */
export function listLinks(netlink: NetlinkSocket): Link[] {
  const links: Link[] = [];
  netlink.dump(new NetlinkMessage(RTM_GETLINK, 0, ifinfomsg(AF_UNSPEC, 0)), "RTM_GETLINK", (span, view) => {
    if (span.payloadLength < IFINFOMSG_BYTES) return;
    const end = span.payloadLength;
    const start = IFINFOMSG_BYTES;
    const name = attribute.string(view, findAttribute(view, start, end, IFLA_IFNAME));
    if (name === undefined) return;
    const linkInfo = findAttribute(view, start, end, IFLA_LINKINFO);
    const kind =
      linkInfo === undefined
        ? undefined
        : attribute.string(
            view,
            findAttribute(view, linkInfo.data, linkInfo.data + linkInfo.dataLength, IFLA_INFO_KIND),
          );
    let tunOwner: number | undefined;
    if (kind === "tun" && linkInfo !== undefined) {
      const data = findAttribute(view, linkInfo.data, linkInfo.data + linkInfo.dataLength, IFLA_INFO_DATA);
      if (data !== undefined) {
        tunOwner = attribute.u32(
          view,
          findAttribute(view, data.data, data.data + data.dataLength, IFLA_TUN_OWNER),
        );
      }
    }
    links.push({
      index: view.getInt32(4, true),
      name,
      mac: macNumber(attribute.bytes(view, findAttribute(view, start, end, IFLA_ADDRESS))),
      master: attribute.u32(view, findAttribute(view, start, end, IFLA_MASTER)) ?? 0,
      kind,
      tunOwner,
    });
  });
  return links;
}

/** Every AF_BRIDGE neighbour entry: the FDBs of all bridges, and the ports' own address lists. */
export function listFdb(netlink: NetlinkSocket): FdbEntry[] {
  const entries: FdbEntry[] = [];
  const header = new Uint8Array(NDMSG_BYTES);
  header[0] = AF_BRIDGE; // ndm_family
  netlink.dump(new NetlinkMessage(RTM_GETNEIGH, 0, header), "RTM_GETNEIGH", (span, view) => {
    if (span.payloadLength < NDMSG_BYTES) return;
    const end = span.payloadLength;
    const mac = macNumber(attribute.bytes(view, findAttribute(view, NDMSG_BYTES, end, NDA_LLADDR)));
    if (mac === undefined) return;
    entries.push({
      portIndex: view.getInt32(4, true),
      bridgeIndex: attribute.u32(view, findAttribute(view, NDMSG_BYTES, end, NDA_MASTER)) ?? 0,
      mac,
      state: view.getUint16(8, true),
      flags: view.getUint8(10),
      vlan: attribute.u16(view, findAttribute(view, NDMSG_BYTES, end, NDA_VLAN)),
    });
  });
  return entries;
}

/**
 * Who on `bridge` already has `mac`, in words for an error message, or undefined when nobody does:
 * an FDB entry of the bridge on any port (learned, static or a port's own address), or any
 * interface in the namespace with that address. Pure: give it listLinks() and listFdb().
 */
export function findMacHolder(
  mac: number,
  bridge: Link,
  links: readonly Link[],
  fdb: readonly FdbEntry[],
): string | undefined {
  const nameOf = (index: number) => links.find((link) => link.index === index)?.name ?? `ifindex ${index}`;
  const owner = links.find((link) => link.mac === mac);
  if (owner !== undefined) return `interface ${owner.name} has that address`;
  const ports = new Set(links.filter((link) => link.master === bridge.index).map((link) => link.index));
  const entry = fdb.find(
    (candidate) =>
      candidate.mac === mac &&
      (candidate.bridgeIndex === bridge.index ||
        candidate.portIndex === bridge.index ||
        ports.has(candidate.portIndex)),
  );
  if (entry === undefined) return undefined;
  const kind =
    (entry.state & NUD_PERMANENT) !== 0
      ? "as its own address"
      : (entry.state & NUD_NOARP) !== 0
        ? "pinned (a static entry)"
        : "learned from its traffic";
  const where =
    entry.portIndex === bridge.index ? `the bridge ${bridge.name} itself` : `port ${nameOf(entry.portIndex)}`;
  return `${where} has it, ${kind}`;
}

function macInUse(mac: number, bridge: string, holder: string): SoftnetError {
  return new SoftnetError(`MAC ${formatMac(mac)} is already in use on bridge ${bridge}: ${holder}`, {
    hint:
      "every VM on a bridge needs a MAC of its own; if another VM uses this one, give this VM a new " +
      "MAC (tart set <vm> --random-mac)",
  });
}

/**
 * Refuses, before anything changes, when `bridge` already has `vmMac` (findMacHolder says who): a
 * second VM with the same MAC would otherwise take the first one's traffic.
 */
export function refuseMacInUse(
  netlink: NetlinkSocket,
  vmMac: number,
  bridge: Link,
  links: readonly Link[],
): void {
  const fdb = netlinkStep(`cannot read the forwarding database of bridge ${bridge.name}`, () =>
    listFdb(netlink),
  );
  const holder = findMacHolder(vmMac, bridge, links, fdb);
  if (holder !== undefined) throw macInUse(vmMac, bridge.name, holder);
}

/**
 * Locks the bridge port `port` to the VM whose MAC is `vmMac`: learning and unicast flooding off,
 * isolation as asked (read back, since old kernels ignore flags they do not know), then the VM's
 * MAC pinned to the port by a static, sticky FDB entry, created exclusively: EEXIST means the
 * bridge got the MAC since refuseMacInUse (another softnet starting with it at the same time), a
 * refusal too. Call it before the port is up, so that no frame ever passes through it unlocked.
 */
export function lockPortToVm(
  netlink: NetlinkSocket,
  port: { readonly name: string; readonly index: number },
  bridge: Link,
  vmMac: number,
  isolate: boolean,
): void {
  const wanted = { learning: false, unicastFlood: false, isolated: isolate };
  netlinkStep(`cannot set the bridge port flags of ${port.name} on ${bridge.name}`, () =>
    setBridgePortFlags(netlink, port.index, wanted),
  );
  const actual = netlinkStep(`cannot read the bridge port flags of ${port.name}`, () =>
    readBridgePortFlags(netlink, port.index),
  );
  if (
    actual === undefined ||
    actual.learning !== wanted.learning ||
    actual.unicastFlood !== wanted.unicastFlood ||
    actual.isolated !== wanted.isolated
  ) {
    throw new SoftnetError(
      `bridge port ${port.name} on ${bridge.name} reads ${JSON.stringify(actual ?? "nothing")} after setting ${JSON.stringify(wanted)}`,
      { hint: "softnet needs Linux 4.18 or later (bridge port isolation)" },
    );
  }
  netlinkStep(`cannot pin MAC ${formatMac(vmMac)} to ${port.name} on ${bridge.name}`, () => {
    try {
      addStaticFdbEntry(netlink, port.index, vmMac);
    } catch (error) {
      if (!(error instanceof NetlinkError && error.errno === Errno.EEXIST)) throw error;
      const holder = findMacHolder(vmMac, bridge, listLinks(netlink), listFdb(netlink));
      throw macInUse(vmMac, bridge.name, holder ?? "the bridge has an entry for it");
    }
  });
}

/**
 * Pins `mac` to `portIndex`: a static, sticky FDB entry on the port's bridge (what `bridge fdb add
 * MAC dev PORT master static sticky` does), created exclusively. Throws the NetlinkError (EEXIST
 * when the bridge already has an entry for the MAC anywhere).
 */
export function addStaticFdbEntry(netlink: NetlinkSocket, portIndex: number, mac: number): void {
  const header = new Uint8Array(NDMSG_BYTES);
  const view = new DataView(header.buffer);
  view.setUint8(0, AF_BRIDGE); // ndm_family
  view.setInt32(4, portIndex, true); // ndm_ifindex
  view.setUint16(8, NUD_NOARP, true); // ndm_state: static
  view.setUint8(10, NTF_MASTER | NTF_STICKY); // ndm_flags: the bridge's FDB; never moves
  const message = new NetlinkMessage(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_EXCL, header).attribute(
    NDA_LLADDR,
    macBytes(mac),
  );
  netlink.request(message, "RTM_NEWNEIGH");
}

/**
 * Sets the flags of the bridge port `portIndex` (RTM_SETLINK, family AF_BRIDGE, IFLA_PROTINFO),
 * what `bridge link set dev PORT learning .. flood .. isolated ..` does.
 */
export function setBridgePortFlags(netlink: NetlinkSocket, portIndex: number, flags: BridgePortFlags): void {
  const message = new NetlinkMessage(RTM_SETLINK, 0, ifinfomsg(AF_BRIDGE, portIndex)).nested(
    IFLA_PROTINFO,
    (protinfo) =>
      protinfo
        .u8(IFLA_BRPORT_LEARNING, flags.learning ? 1 : 0)
        .u8(IFLA_BRPORT_UNICAST_FLOOD, flags.unicastFlood ? 1 : 0)
        .u8(IFLA_BRPORT_ISOLATED, flags.isolated ? 1 : 0),
  );
  netlink.request(message, "RTM_SETLINK(IFLA_PROTINFO)");
}

/**
 * The port's flags as the kernel reports them (an AF_BRIDGE link dump), or undefined when the port
 * is not listed or a flag is missing. A kernel that does not know a flag ignores it silently when
 * it is set, so softnet reads back what it set.
 */
export function readBridgePortFlags(netlink: NetlinkSocket, portIndex: number): BridgePortFlags | undefined {
  let flags: BridgePortFlags | undefined;
  netlink.dump(
    new NetlinkMessage(RTM_GETLINK, 0, ifinfomsg(AF_BRIDGE, 0)),
    "RTM_GETLINK(AF_BRIDGE)",
    (span, view) => {
      if (span.payloadLength < IFINFOMSG_BYTES || view.getInt32(4, true) !== portIndex) return;
      const protinfo = findAttribute(view, IFINFOMSG_BYTES, span.payloadLength, IFLA_PROTINFO);
      if (protinfo === undefined) return;
      const values = new Map<number, number>();
      walkAttributes(view, protinfo.data, protinfo.data + protinfo.dataLength, (inner) => {
        const value = attribute.u8(view, inner);
        if (value !== undefined) values.set(inner.type, value);
      });
      const learning = values.get(IFLA_BRPORT_LEARNING);
      const unicastFlood = values.get(IFLA_BRPORT_UNICAST_FLOOD);
      const isolated = values.get(IFLA_BRPORT_ISOLATED);
      if (learning === undefined || unicastFlood === undefined || isolated === undefined) return;
      flags = { learning: learning !== 0, unicastFlood: unicastFlood !== 0, isolated: isolated !== 0 };
    },
  );
  return flags;
}

/** Sets an interface's MAC address (RTM_SETLINK with IFLA_ADDRESS), as `ip link set DEV address`. */
export function setLinkMac(netlink: NetlinkSocket, index: number, mac: number): void {
  const message = new NetlinkMessage(RTM_SETLINK, 0, ifinfomsg(AF_UNSPEC, index)).attribute(
    IFLA_ADDRESS,
    macBytes(mac),
  );
  netlink.request(message, `RTM_SETLINK(IFLA_ADDRESS ${formatMac(mac)})`);
}

/**
 * The bridge's addr_assign_type, or undefined when it cannot be known. rtnetlink does not report
 * it; sysfs does, but /sys shows the interfaces of the network namespace it was mounted in, which
 * need not be softnet's (nsenter without remounting /sys). The value counts only when the sysfs
 * directory is the same device: same ifindex and same address as netlink reports.
 */
export function readAddressAssignType(bridge: Link): number | undefined {
  try {
    const directory = `/sys/class/net/${bridge.name}`;
    const index = Number(readFileSync(`${directory}/ifindex`, "ascii").trim());
    const address = readFileSync(`${directory}/address`, "ascii").trim();
    if (index !== bridge.index || bridge.mac === undefined || address !== formatMac(bridge.mac))
      return undefined;
    const type = Number(readFileSync(`${directory}/addr_assign_type`, "ascii").trim());
    return Number.isInteger(type) ? type : undefined;
  } catch {
    return undefined;
  }
}

/** A random locally administered unicast MAC whose first byte is `firstByte` (which must be one). */
export function randomLocalMac(firstByte: number): number {
  if ((firstByte & 0x03) !== 0x02) throw new RangeError(`0x${firstByte.toString(16)} is not local unicast`);
  const rest = crypto.getRandomValues(new Uint8Array(5));
  let mac = firstByte;
  for (const byte of rest) mac = mac * 256 + byte;
  return mac;
}
