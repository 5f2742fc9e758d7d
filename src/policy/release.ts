/**
 * The DHCPRELEASE softnet sends for the VM when it stops, so the VM's address returns to the
 * server's pool at once instead of when the lease runs out: a user who starts many short-lived
 * VMs with throwaway MACs would otherwise hold the pool for a lease time each.
 *
 * The message is what the client itself would send (RFC 2131 4.4.6; table 5 in 4.4.1): a
 * DHCPREQUEST-op BOOTP message, ciaddr the leased address, chaddr the VM's MAC, yiaddr, siaddr and
 * giaddr zero, options 53 (DHCPRELEASE) and 54 (the server identifier from the ACK), unicast from
 * the leased address to the server (3.1 step 9, 4.4.6), UDP 68 to 67. The server matches it to the
 * lease by chaddr and ciaddr, as softnet pins a VM's identity at the server to its MAC (options 61,
 * 12 and 81 are cleared from its requests).
 *
 * Pure and allocation-free, like the --reject answers (reject.ts): buildLeaseRelease writes into a
 * buffer the caller owns and returns the frame's length, or 0 when there is nothing to release.
 */

import { BROADCAST_MAC, writeMac, writeU16, writeU32 } from "../wire/bytes.ts";
import { finishChecksum, internetChecksum, pseudoHeaderSum, sumWords } from "../wire/checksum.ts";
import { BootpOp, DHCP_MAGIC_COOKIE, Dhcp, DhcpMessageType, DhcpOption, DhcpPort } from "../wire/dhcp.ts";
import { Ethernet, EtherType } from "../wire/ethernet.ts";
import { IpProtocol, Ipv4 } from "../wire/ipv4.ts";
import { Udp } from "../wire/udp.ts";
import type { Policy } from "./policy.ts";

/**
 * The BOOTP message padded to 300 bytes, the smallest a BOOTP relay or server must accept (RFC 1542
 * 2.1; RFC 951's fixed "vend" size). Options: 53 (3 bytes), 54 (6 bytes), END.
 */
const BOOTP_MESSAGE_BYTES = 300;
const OPTIONS_BYTES = 3 + 6 + 1;
const UDP_BYTES = Udp.HEADER_LENGTH + BOOTP_MESSAGE_BYTES;
const IP_BYTES = Ipv4.MINIMUM_HEADER_LENGTH + UDP_BYTES;
/** The whole frame: Ethernet, IPv4, UDP, BOOTP. */
export const LEASE_RELEASE_FRAME_BYTES = Ethernet.HEADER_LENGTH + IP_BYTES;
/** The usual initial TTL (RFC 1700's 64), as reject.ts uses. */
const RELEASE_TTL = 64;
const ETHERNET_HARDWARE_TYPE = 1;
const ETHERNET_ADDRESS_LENGTH = 6;

/**
 * Writes the DHCPRELEASE for the policy's lease at out[offset..), if the lease is valid at `nowMs`
 * and its ACK named a server. The Ethernet destination is the gateway's MAC when the server is the
 * gateway and its MAC is known; otherwise the broadcast MAC, which a host takes in for any of its
 * addresses (the server's MAC is not known to softnet). Returns the length written, or 0.
 */
export function buildLeaseRelease(
  policy: Policy,
  nowMs: number,
  xid: number,
  out: Uint8Array,
  offset: number,
): number {
  const lease = policy.lease;
  if (!lease.isValidAt(nowMs) || lease.serverIdentifier === -1) return 0;
  if (out.length - offset < LEASE_RELEASE_FRAME_BYTES) return 0;
  const server = lease.serverIdentifier;
  const address = lease.address;
  out.fill(0, offset, offset + LEASE_RELEASE_FRAME_BYTES);

  const toGatewayMac = server === policy.gateway && policy.gatewayMac >= 0;
  writeMac(out, offset + Ethernet.DESTINATION, toGatewayMac ? policy.gatewayMac : BROADCAST_MAC);
  writeMac(out, offset + Ethernet.SOURCE, policy.vmMac);
  writeU16(out, offset + Ethernet.ETHER_TYPE, EtherType.IPV4);

  const ip = offset + Ethernet.HEADER_LENGTH;
  out[ip + Ipv4.VERSION_AND_HEADER_LENGTH] = 0x45;
  writeU16(out, ip + Ipv4.TOTAL_LENGTH, IP_BYTES);
  out[ip + Ipv4.TTL] = RELEASE_TTL;
  out[ip + Ipv4.PROTOCOL] = IpProtocol.UDP;
  writeU32(out, ip + Ipv4.SOURCE, address);
  writeU32(out, ip + Ipv4.DESTINATION, server);
  writeU16(out, ip + Ipv4.CHECKSUM, internetChecksum(out, ip, Ipv4.MINIMUM_HEADER_LENGTH));

  const udp = ip + Ipv4.MINIMUM_HEADER_LENGTH;
  writeU16(out, udp + Udp.SOURCE_PORT, DhcpPort.CLIENT);
  writeU16(out, udp + Udp.DESTINATION_PORT, DhcpPort.SERVER);
  writeU16(out, udp + Udp.LENGTH, UDP_BYTES);

  const dhcp = udp + Udp.HEADER_LENGTH;
  out[dhcp + Dhcp.OP] = BootpOp.REQUEST;
  out[dhcp + Dhcp.HARDWARE_TYPE] = ETHERNET_HARDWARE_TYPE;
  out[dhcp + Dhcp.HARDWARE_LENGTH] = ETHERNET_ADDRESS_LENGTH;
  writeU32(out, dhcp + Dhcp.XID, xid >>> 0);
  writeU32(out, dhcp + Dhcp.CLIENT_ADDRESS, address);
  writeMac(out, dhcp + Dhcp.CLIENT_HARDWARE_ADDRESS, policy.vmMac);
  writeU32(out, dhcp + Dhcp.MAGIC_COOKIE, DHCP_MAGIC_COOKIE);
  let option = dhcp + Dhcp.OPTIONS;
  out[option++] = DhcpOption.MESSAGE_TYPE;
  out[option++] = 1;
  out[option++] = DhcpMessageType.RELEASE;
  out[option++] = DhcpOption.SERVER_IDENTIFIER;
  out[option++] = 4;
  writeU32(out, option, server);
  option += 4;
  out[option] = DhcpOption.END;
  // The rest of the 300 bytes stays zero: PAD (RFC 2132 3.1).
  if (option + 1 - (dhcp + Dhcp.OPTIONS) !== OPTIONS_BYTES) return 0;

  const sum = sumWords(out, udp, UDP_BYTES, pseudoHeaderSum(address, server, IpProtocol.UDP, UDP_BYTES));
  // A computed zero is sent as all ones: zero means "no checksum" in UDP over IPv4 (RFC 768).
  writeU16(out, udp + Udp.CHECKSUM, finishChecksum(sum) || 0xffff);
  return LEASE_RELEASE_FRAME_BYTES;
}
