/**
 * softnet playing a VM for a moment, on a host link (a TAP port on Linux, vmnet on macOS): a DHCP
 * DISCOVER from a throwaway MAC, waiting for the OFFER, and a burst of ARP probes to the gateway.
 *
 * Only DISCOVER is ever sent, never REQUEST: a server reserves nothing it has to keep for an
 * OFFER (dnsmasq and bootpd write a lease only on REQUEST/ACK), so the probe leaves no lease behind.
 * ARP probes (sender address 0.0.0.0, RFC 5227) are answered by the gateway without it adding a
 * neighbour entry for the throwaway MAC.
 *
 * Frames are built and read with the repo's wire code (src/wire); the link moves them through a
 * FrameBatch as in softnet's own loop. Not a per-frame hot path: allocating here is fine.
 */
import { FrameBatch, type FrameLink } from "../platform/link.ts";
import { ArpOperation, emitArp, parseArp } from "../wire/arp.ts";
import { formatIpv4, formatMac } from "../wire/bytes.ts";
import { BootpOp, DhcpMessageType, DhcpPort, type DhcpRepr, emitDhcp, parseDhcp } from "../wire/dhcp.ts";
import { EtherType, emitEthernet, parseEthernet } from "../wire/ethernet.ts";
import { emitIpv4, IpProtocol, parseIpv4Packet } from "../wire/ipv4.ts";
import { emitUdp, parseUdp } from "../wire/udp.ts";

const BROADCAST = "ff:ff:ff:ff:ff:ff";

/**
 * A random unicast, locally administered MAC (first octet xxxxxx10): it can belong to no NIC a
 * vendor made, so the probe never impersonates a real machine.
 */
export function throwawayMac(random: Uint8Array = crypto.getRandomValues(new Uint8Array(6))): number {
  const first = (random[0]! & 0xfc) | 0x02;
  let mac = first;
  for (let i = 1; i < 6; i++) mac = mac * 256 + random[i]!;
  return mac;
}

/** A broadcast DHCPDISCOVER from `mac` (chaddr = source MAC), transaction `xid`. */
export function discoverFrame(mac: number, xid: number): Uint8Array {
  const dhcp = emitDhcp({
    op: BootpOp.REQUEST,
    xid,
    clientMac: formatMac(mac),
    messageType: DhcpMessageType.DISCOVER,
  });
  const udp = emitUdp(
    { sourcePort: DhcpPort.CLIENT, destinationPort: DhcpPort.SERVER },
    dhcp,
    "0.0.0.0",
    "255.255.255.255",
  );
  const ip = emitIpv4({ source: "0.0.0.0", destination: "255.255.255.255", protocol: IpProtocol.UDP }, udp);
  return emitEthernet({ source: formatMac(mac), destination: BROADCAST, etherType: EtherType.IPV4 }, ip);
}

/** What an OFFER said, with the addresses as text. */
export interface Offer {
  /** The server's IPv4 source address. */
  readonly from: string;
  readonly fromMac: string;
  readonly dhcp: DhcpRepr;
}

/**
 * The DHCPOFFER in this frame for (mac, xid), or undefined for any other frame: wrong protocol,
 * ports, transaction, client hardware address or message type, or anything malformed.
 */
export function offerIn(frame: Uint8Array, mac: number, xid: number): Offer | undefined {
  const ethernet = parseEthernet(frame);
  if (ethernet === undefined || ethernet.etherType !== EtherType.IPV4) return undefined;
  const ip = parseIpv4Packet(frame.subarray(14));
  if (ip === undefined || ip.repr.protocol !== IpProtocol.UDP || ip.repr.fragmentOffset !== 0)
    return undefined;
  const udp = parseUdp(ip.payload);
  if (udp === undefined) return undefined;
  if (udp.repr.sourcePort !== DhcpPort.SERVER || udp.repr.destinationPort !== DhcpPort.CLIENT)
    return undefined;
  const dhcp = parseDhcp(udp.payload);
  if (dhcp === undefined || dhcp.op !== BootpOp.REPLY || dhcp.xid !== xid) return undefined;
  if (dhcp.clientMac !== formatMac(mac) || dhcp.messageType !== DhcpMessageType.OFFER) return undefined;
  return { from: ip.repr.source, fromMac: ethernet.source, dhcp };
}

/** An ARP probe (RFC 5227: sender address 0.0.0.0) from `mac` asking who has `target`. */
export function arpProbeFrame(mac: number, target: number): Uint8Array {
  const arp = emitArp({
    operation: ArpOperation.REQUEST,
    senderMac: formatMac(mac),
    senderIp: "0.0.0.0",
    targetMac: "00:00:00:00:00:00",
    targetIp: formatIpv4(target),
  });
  return emitEthernet({ source: formatMac(mac), destination: BROADCAST, etherType: EtherType.ARP }, arp);
}

/** True when the frame is an ARP reply from `gateway` addressed to `mac`. */
export function isArpReplyFrom(frame: Uint8Array, gateway: number, mac: number): boolean {
  const ethernet = parseEthernet(frame);
  if (ethernet === undefined || ethernet.etherType !== EtherType.ARP) return false;
  const arp = parseArp(frame.subarray(14));
  return (
    arp !== undefined &&
    arp.operation === ArpOperation.REPLY &&
    arp.senderIp === formatIpv4(gateway) &&
    arp.targetMac === formatMac(mac)
  );
}

/** How long to poll between reads; the links are non-blocking and the doctor has time. */
const POLL_MS = 10;

/** A link the doctor can send to and read from, with the largest frame it delivers. */
export interface ProbeLink {
  readonly link: FrameLink;
  readonly maxFrameSize: number;
}

/** Sends frames and reads what comes back, through one link, outside softnet's filter loop. */
export class LinkProbe {
  private readonly inbox: FrameBatch;
  private readonly outbox: FrameBatch;
  private readonly slots = new Uint16Array(64);

  constructor(
    private readonly target: ProbeLink,
    /** True once the run is being interrupted: every wait ends early. */
    private readonly interrupted: () => boolean = () => false,
  ) {
    const slotSize = Math.max(target.maxFrameSize, 1518);
    this.inbox = new FrameBatch(64, slotSize);
    this.outbox = new FrameBatch(64, slotSize);
    for (let i = 0; i < this.slots.length; i++) this.slots[i] = i;
  }

  /** Sends the frames in one call; returns how many the link took. */
  send(frames: readonly Uint8Array[]): number {
    const count = Math.min(frames.length, this.outbox.capacity);
    for (let i = 0; i < count; i++) {
      this.outbox.bytes.set(frames[i]!, this.outbox.offsetOf(i));
      this.outbox.lengths[i] = frames[i]!.length;
    }
    return this.target.link.send(this.outbox, this.slots, count);
  }

  /** Reads every frame waiting now; copies, so the caller may keep them. */
  drain(): Uint8Array[] {
    const frames: Uint8Array[] = [];
    for (;;) {
      const count = this.target.link.receive(this.inbox);
      for (let i = 0; i < count; i++) {
        const start = this.inbox.offsetOf(i);
        frames.push(this.inbox.bytes.slice(start, start + this.inbox.lengths[i]!));
      }
      if (count < this.inbox.capacity) return frames;
    }
  }

  /**
   * DISCOVER from `mac`, repeated every `retryMs`, until an OFFER for it arrives or `timeoutMs`
   * passes. Returns the offer and how many DISCOVERs went out.
   */
  async dhcpOffer(
    mac: number,
    timeoutMs: number,
    retryMs = 1000,
  ): Promise<{ offer: Offer | undefined; discovers: number; elapsedMs: number }> {
    const xid = crypto.getRandomValues(new Uint32Array(1))[0]!;
    const discover = discoverFrame(mac, xid);
    const started = performance.now();
    let discovers = 0;
    let nextDiscover = started;
    while (!this.interrupted()) {
      const now = performance.now();
      if (now - started > timeoutMs) break;
      if (now >= nextDiscover) {
        discovers += this.send([discover]);
        nextDiscover = now + retryMs;
      }
      for (const frame of this.drain()) {
        const offer = offerIn(frame, mac, xid);
        if (offer !== undefined) return { offer, discovers, elapsedMs: performance.now() - started };
      }
      await Bun.sleep(POLL_MS);
    }
    return { offer: undefined, discovers, elapsedMs: performance.now() - started };
  }

  /**
   * `count` ARP probes for the gateway in one send, then `settleMs` without reading (so replies
   * wait in the link, as a busy softnet would leave them), then one drain. Returns how many were
   * sent and how many replies came back; the caller reads the link's event count around it.
   */
  async arpBurst(
    mac: number,
    gateway: number,
    count: number,
    settleMs: number,
    /** Called after the idle wait, before anything is read (the caller reads event counters). */
    settled: () => void = () => {},
  ): Promise<{ sent: number; replies: number; otherFrames: number }> {
    this.drain(); // start from an empty link
    const probe = arpProbeFrame(mac, gateway);
    const sent = this.send(Array.from({ length: count }, () => probe));
    const deadline = performance.now() + settleMs;
    while (!this.interrupted() && performance.now() < deadline) await Bun.sleep(POLL_MS);
    settled();
    let replies = 0;
    let otherFrames = 0;
    for (const frame of this.drain()) {
      if (isArpReplyFrom(frame, gateway, mac)) replies++;
      else otherFrames++;
    }
    return { sent, replies, otherFrames };
  }
}
