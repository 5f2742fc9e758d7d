/**
 * One-line descriptions of frames for logs, e.g.
 * `02:00:00:00:00:01 > 5e:00:00:00:00:01 IPv4 192.168.64.5 > 10.0.0.1 TCP 40000 > 22`.
 * Builds strings, so it is called only for a frame that is actually going to be logged.
 */
import { arpOperation, arpSenderIp, arpSenderMac, arpTargetIp, isEthernetIpv4Arp } from "./arp.ts";
import { formatIpv4, formatMac, readU16 } from "./bytes.ts";
import { Ethernet, EtherType, ethernetDestination, ethernetSource, isValidEthernet } from "./ethernet.ts";
import {
  checkIpv4,
  IpProtocol,
  ipv4Destination,
  ipv4FragmentOffset,
  ipv4Protocol,
  ipv4Source,
} from "./ipv4.ts";

export function describeFrame(bytes: Uint8Array, offset: number, length: number): string {
  if (!isValidEthernet(bytes, offset, length))
    return `${length}-byte frame without a valid Ethernet II header`;
  const macs = `${formatMac(ethernetSource(bytes, offset))} > ${formatMac(ethernetDestination(bytes, offset))}`;
  const etherType = readU16(bytes, offset + Ethernet.ETHER_TYPE);
  const payload = offset + Ethernet.HEADER_LENGTH;
  const available = length - Ethernet.HEADER_LENGTH;
  if (etherType === EtherType.ARP) {
    if (!isEthernetIpv4Arp(bytes, payload, available)) return `${macs} ARP (not Ethernet/IPv4 or truncated)`;
    const operation = arpOperation(bytes, payload);
    const sender = formatIpv4(arpSenderIp(bytes, payload));
    const target = formatIpv4(arpTargetIp(bytes, payload));
    if (operation === 1) return `${macs} ARP who-has ${target} tell ${sender}`;
    if (operation === 2)
      return `${macs} ARP reply ${sender} is-at ${formatMac(arpSenderMac(bytes, payload))}`;
    return `${macs} ARP operation ${operation}`;
  }
  if (etherType !== EtherType.IPV4) return `${macs} ethertype 0x${etherType.toString(16).padStart(4, "0")}`;
  const headerLength = checkIpv4(bytes, payload, available);
  if (headerLength === 0) return `${macs} IPv4 (malformed header)`;
  const addresses = `${formatIpv4(ipv4Source(bytes, payload))} > ${formatIpv4(ipv4Destination(bytes, payload))}`;
  const protocol = ipv4Protocol(bytes, payload);
  const l4 = payload + headerLength;
  const hasPorts = ipv4FragmentOffset(bytes, payload) === 0 && available >= headerLength + 4;
  const name =
    protocol === IpProtocol.TCP
      ? "TCP"
      : protocol === IpProtocol.UDP
        ? "UDP"
        : protocol === IpProtocol.ICMP
          ? "ICMP"
          : `protocol ${protocol}`;
  if ((protocol === IpProtocol.TCP || protocol === IpProtocol.UDP) && hasPorts) {
    return `${macs} IPv4 ${addresses} ${name} ${readU16(bytes, l4)} > ${readU16(bytes, l4 + 2)}`;
  }
  return `${macs} IPv4 ${addresses} ${name}`;
}
