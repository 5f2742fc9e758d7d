/**
 * DHCP over BOOTP (RFC 2131, options RFC 2132). softnet reads DHCP to learn the VM's lease from the
 * host's server (snooping the ACK) and to check the VM's own requests.
 *
 * readDhcp() fills a caller-owned DhcpMessage so that snooping allocates nothing; parseDhcp() and
 * emitDhcp() work on plain objects for tests and tools.
 */
import {
  formatIpv4,
  formatMac,
  parseIpv4,
  parseMac,
  readMac,
  readU16,
  readU32,
  writeMac,
  writeU16,
  writeU32,
} from "./bytes.ts";

/** Field offsets from the start of the BOOTP message. */
export const Dhcp = {
  OP: 0, // 1: 1 request, 2 reply
  HARDWARE_TYPE: 1, // 1
  HARDWARE_LENGTH: 2, // 1
  HOPS: 3, // 1
  XID: 4, // 4
  SECONDS: 8, // 2
  FLAGS: 10, // 2: bit 15 = broadcast
  CLIENT_ADDRESS: 12, // 4 ciaddr
  YOUR_ADDRESS: 16, // 4 yiaddr
  SERVER_ADDRESS: 20, // 4 siaddr
  GATEWAY_ADDRESS: 24, // 4 giaddr
  CLIENT_HARDWARE_ADDRESS: 28, // 16 chaddr
  SERVER_NAME: 44, // 64 sname
  BOOT_FILE: 108, // 128 file
  MAGIC_COOKIE: 236, // 4
  OPTIONS: 240,
} as const;

export const DHCP_MAGIC_COOKIE = 0x63825363;
export const DhcpPort = { SERVER: 67, CLIENT: 68 } as const;
export const BootpOp = { REQUEST: 1, REPLY: 2 } as const;
export const DHCP_FLAG_BROADCAST = 0x8000;

export const DhcpOption = {
  PAD: 0,
  SUBNET_MASK: 1,
  ROUTER: 3,
  DOMAIN_NAME_SERVER: 6,
  HOST_NAME: 12,
  REQUESTED_IP_ADDRESS: 50,
  LEASE_TIME: 51,
  /** RFC 2132 9.3: the sname and file fields hold more options. */
  OPTION_OVERLOAD: 52,
  MESSAGE_TYPE: 53,
  SERVER_IDENTIFIER: 54,
  CLIENT_IDENTIFIER: 61,
  /** RFC 4702: the client's fully qualified domain name, for the server to register in DNS. */
  CLIENT_FQDN: 81,
  /** RFC 3046: added by relay agents, never by a client. */
  RELAY_AGENT_INFORMATION: 82,
  /** RFC 3011: asks for an address on another subnet than the one the message arrived on. */
  SUBNET_SELECTION: 118,
  END: 255,
} as const;

export const DhcpMessageType = {
  DISCOVER: 1,
  OFFER: 2,
  REQUEST: 3,
  DECLINE: 4,
  ACK: 5,
  NAK: 6,
  RELEASE: 7,
  INFORM: 8,
} as const;

/** DNS servers beyond this many in one message are ignored (bootpd sends one or two). */
export const MAX_DNS_SERVERS = 8;

/** The decoded fields softnet uses. Reused across messages; -1 marks an absent optional field. */
export class DhcpMessage {
  op = 0;
  hardwareType = 0;
  hardwareLength = 0;
  xid = 0;
  flags = 0;
  clientAddress = 0;
  yourAddress = 0;
  serverAddress = 0;
  gatewayAddress = 0;
  /** chaddr as a 48-bit MAC; meaningful when hardwareType is 1 and hardwareLength is 6. */
  clientMac = 0;
  messageType = -1;
  leaseTimeSeconds = -1;
  serverIdentifier = -1;
  subnetMask = -1;
  router = -1;
  requestedAddress = -1;
  /** Where option 61's data starts in the buffer, and its length (-1 when absent). */
  clientIdentifierOffset = -1;
  clientIdentifierLength = -1;
  readonly dnsServers = new Uint32Array(MAX_DNS_SERVERS);
  dnsServerCount = 0;

  reset(): void {
    this.op = 0;
    this.hardwareType = 0;
    this.hardwareLength = 0;
    this.xid = 0;
    this.flags = 0;
    this.clientAddress = 0;
    this.yourAddress = 0;
    this.serverAddress = 0;
    this.gatewayAddress = 0;
    this.clientMac = 0;
    this.messageType = -1;
    this.leaseTimeSeconds = -1;
    this.serverIdentifier = -1;
    this.subnetMask = -1;
    this.router = -1;
    this.requestedAddress = -1;
    this.clientIdentifierOffset = -1;
    this.clientIdentifierLength = -1;
    this.dnsServerCount = 0;
  }
}

/**
 * Decodes the BOOTP header and the options area into `into`. Returns false (message malformed) when
 * the fixed part is short, the magic cookie is wrong, hlen exceeds chaddr, an option runs past the
 * end, or a known option has an impossible length. Options carried in sname/file (option 52
 * overload) are not read: neither bootpd nor dnsmasq put lease data there.
 */
export function readDhcp(bytes: Uint8Array, offset: number, length: number, into: DhcpMessage): boolean {
  into.reset();
  if (length < Dhcp.OPTIONS) return false;
  if (readU32(bytes, offset + Dhcp.MAGIC_COOKIE) !== DHCP_MAGIC_COOKIE) return false;
  into.op = bytes[offset + Dhcp.OP];
  into.hardwareType = bytes[offset + Dhcp.HARDWARE_TYPE];
  into.hardwareLength = bytes[offset + Dhcp.HARDWARE_LENGTH];
  if (into.hardwareLength > 16) return false;
  into.xid = readU32(bytes, offset + Dhcp.XID);
  into.flags = readU16(bytes, offset + Dhcp.FLAGS);
  into.clientAddress = readU32(bytes, offset + Dhcp.CLIENT_ADDRESS);
  into.yourAddress = readU32(bytes, offset + Dhcp.YOUR_ADDRESS);
  into.serverAddress = readU32(bytes, offset + Dhcp.SERVER_ADDRESS);
  into.gatewayAddress = readU32(bytes, offset + Dhcp.GATEWAY_ADDRESS);
  into.clientMac = readMac(bytes, offset + Dhcp.CLIENT_HARDWARE_ADDRESS);

  const end = offset + length;
  let cursor = offset + Dhcp.OPTIONS;
  while (cursor < end) {
    const code = bytes[cursor];
    if (code === DhcpOption.PAD) {
      cursor += 1;
      continue;
    }
    if (code === DhcpOption.END) return true;
    if (cursor + 2 > end) return false;
    const dataLength = bytes[cursor + 1];
    const data = cursor + 2;
    if (data + dataLength > end) return false;
    if (!readOption(bytes, code, data, dataLength, into)) return false;
    cursor = data + dataLength;
  }
  // No END option: tolerated when the options end exactly with the message, as many clients do.
  return true;
}

function readOption(
  bytes: Uint8Array,
  code: number,
  data: number,
  length: number,
  into: DhcpMessage,
): boolean {
  switch (code) {
    case DhcpOption.MESSAGE_TYPE:
      if (length !== 1) return false;
      into.messageType = bytes[data];
      return true;
    case DhcpOption.LEASE_TIME:
      if (length !== 4) return false;
      into.leaseTimeSeconds = readU32(bytes, data);
      return true;
    case DhcpOption.SERVER_IDENTIFIER:
      if (length !== 4) return false;
      into.serverIdentifier = readU32(bytes, data);
      return true;
    case DhcpOption.SUBNET_MASK:
      if (length !== 4) return false;
      into.subnetMask = readU32(bytes, data);
      return true;
    case DhcpOption.REQUESTED_IP_ADDRESS:
      if (length !== 4) return false;
      into.requestedAddress = readU32(bytes, data);
      return true;
    case DhcpOption.ROUTER:
      if (length < 4 || length % 4 !== 0) return false;
      if (into.router === -1) into.router = readU32(bytes, data);
      return true;
    case DhcpOption.DOMAIN_NAME_SERVER:
      if (length < 4 || length % 4 !== 0) return false;
      // A repeated option 6 continues the list (RFC 3396 splits long options this way).
      for (let i = 0; i < length && into.dnsServerCount < MAX_DNS_SERVERS; i += 4) {
        into.dnsServers[into.dnsServerCount++] = readU32(bytes, data + i);
      }
      return true;
    case DhcpOption.CLIENT_IDENTIFIER:
      if (length < 2) return false;
      into.clientIdentifierOffset = data;
      into.clientIdentifierLength = length;
      return true;
    default:
      return true;
  }
}

/**
 * Overwrites in place, with PAD (0) bytes, every option of a client message that would let the
 * client choose how the server tells clients apart or which network it serves them from:
 *
 * - 61, client identifier. dnsmasq and macOS bootpd key a lease by it when it is present, and by
 *   htype + chaddr otherwise (RFC 2131 4.2), so with it a client names itself whatever it likes.
 * - 82, relay agent information, and 118, subnet selection: a relay's or a client's way to ask
 *   for an address on another network the server serves (dnsmasq honours both).
 * - 52, option overload: without it, a server reads no options out of sname and file, which are
 *   not walked here.
 * - 12, host name (RFC 2132 3.14), and 81, client FQDN (RFC 4702): dnsmasq enters the name a
 *   client gives in its DNS, for the address it leases to that client, taking it from any earlier
 *   holder; one VM could take another's name, and with it the other's traffic. A VM cannot prove
 *   it owns a name, and softnet knows no other VM's, so no VM registers one: names come from the
 *   server's own configuration, keyed by MAC (dnsmasq dhcp-host=MAC,name).
 *
 * Every instance goes, so RFC 3396 split options go whole. The message keeps its length, so no
 * header but the UDP checksum needs fixing. Returns the cleared bytes' sum for
 * updateUdpChecksumAfterClearing (0 when nothing was cleared), or -1, with nothing changed, when
 * the message is shorter than its fixed part or an option runs past `length`. Options end at END
 * or at `length`, where dnsmasq and bootpd stop reading them too.
 */
export function stripClientOptions(bytes: Uint8Array, offset: number, length: number): number {
  if (length < Dhcp.OPTIONS) return -1;
  const end = offset + length;
  // Check the whole list before changing a byte: a message that is dropped stays as it came.
  let cursor = offset + Dhcp.OPTIONS;
  while (cursor < end) {
    const code = bytes[cursor];
    if (code === DhcpOption.END) break;
    if (code === DhcpOption.PAD) {
      cursor += 1;
      continue;
    }
    if (cursor + 2 > end) return -1;
    cursor += 2 + bytes[cursor + 1];
    if (cursor > end) return -1;
  }
  let clearedSum = 0;
  cursor = offset + Dhcp.OPTIONS;
  while (cursor < end) {
    const code = bytes[cursor];
    if (code === DhcpOption.END) break;
    if (code === DhcpOption.PAD) {
      cursor += 1;
      continue;
    }
    const next = cursor + 2 + bytes[cursor + 1];
    if (isStrippedClientOption(code)) {
      for (let i = cursor; i < next; i++) {
        // The UDP header is 8 bytes long, so even offsets in the message are even in the datagram.
        clearedSum += (i - offset) % 2 === 0 ? bytes[i] << 8 : bytes[i];
        bytes[i] = DhcpOption.PAD;
      }
    }
    cursor = next;
  }
  return clearedSum;
}

function isStrippedClientOption(code: number): boolean {
  return (
    code === DhcpOption.CLIENT_IDENTIFIER ||
    code === DhcpOption.HOST_NAME ||
    code === DhcpOption.CLIENT_FQDN ||
    code === DhcpOption.RELAY_AGENT_INFORMATION ||
    code === DhcpOption.SUBNET_SELECTION ||
    code === DhcpOption.OPTION_OVERLOAD
  );
}

/** A DHCP message as plain values, for tests and tools (never on the per-frame path). */
export interface DhcpRepr {
  op: number;
  xid: number;
  flags?: number;
  clientAddress?: string;
  yourAddress?: string;
  serverAddress?: string;
  gatewayAddress?: string;
  clientMac: string;
  messageType?: number;
  leaseTimeSeconds?: number;
  serverIdentifier?: string;
  subnetMask?: string;
  router?: string;
  requestedAddress?: string;
  clientIdentifier?: Uint8Array;
  dnsServers?: string[];
  /** Encoded options (code, length, data ...) emitted as given, before END; for tests. */
  rawOptions?: Uint8Array;
}

export function parseDhcp(bytes: Uint8Array): DhcpRepr | undefined {
  const message = new DhcpMessage();
  if (!readDhcp(bytes, 0, bytes.length, message)) return undefined;
  const repr: DhcpRepr = {
    op: message.op,
    xid: message.xid,
    flags: message.flags,
    clientAddress: formatIpv4(message.clientAddress),
    yourAddress: formatIpv4(message.yourAddress),
    serverAddress: formatIpv4(message.serverAddress),
    gatewayAddress: formatIpv4(message.gatewayAddress),
    clientMac: formatMac(message.clientMac),
  };
  if (message.messageType !== -1) repr.messageType = message.messageType;
  if (message.leaseTimeSeconds !== -1) repr.leaseTimeSeconds = message.leaseTimeSeconds;
  if (message.serverIdentifier !== -1) repr.serverIdentifier = formatIpv4(message.serverIdentifier);
  if (message.subnetMask !== -1) repr.subnetMask = formatIpv4(message.subnetMask);
  if (message.router !== -1) repr.router = formatIpv4(message.router);
  if (message.requestedAddress !== -1) repr.requestedAddress = formatIpv4(message.requestedAddress);
  if (message.clientIdentifierLength !== -1) {
    repr.clientIdentifier = bytes.slice(
      message.clientIdentifierOffset,
      message.clientIdentifierOffset + message.clientIdentifierLength,
    );
  }
  if (message.dnsServerCount > 0) {
    repr.dnsServers = Array.from(message.dnsServers.subarray(0, message.dnsServerCount), formatIpv4);
  }
  return repr;
}

export function emitDhcp(repr: DhcpRepr): Uint8Array {
  const options: number[] = [];
  const address = (code: number, text: string | undefined) => {
    if (text === undefined) return;
    const value = parseIpv4(text)!;
    options.push(code, 4, value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff);
  };
  if (repr.messageType !== undefined) options.push(DhcpOption.MESSAGE_TYPE, 1, repr.messageType);
  address(DhcpOption.SERVER_IDENTIFIER, repr.serverIdentifier);
  if (repr.leaseTimeSeconds !== undefined) {
    const t = repr.leaseTimeSeconds;
    options.push(DhcpOption.LEASE_TIME, 4, t >>> 24, (t >>> 16) & 0xff, (t >>> 8) & 0xff, t & 0xff);
  }
  address(DhcpOption.SUBNET_MASK, repr.subnetMask);
  address(DhcpOption.ROUTER, repr.router);
  address(DhcpOption.REQUESTED_IP_ADDRESS, repr.requestedAddress);
  if (repr.dnsServers !== undefined && repr.dnsServers.length > 0) {
    options.push(DhcpOption.DOMAIN_NAME_SERVER, repr.dnsServers.length * 4);
    for (const server of repr.dnsServers) {
      const value = parseIpv4(server)!;
      options.push(value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff);
    }
  }
  if (repr.clientIdentifier !== undefined) {
    options.push(DhcpOption.CLIENT_IDENTIFIER, repr.clientIdentifier.length, ...repr.clientIdentifier);
  }
  if (repr.rawOptions !== undefined) options.push(...repr.rawOptions);
  options.push(DhcpOption.END);

  const message = new Uint8Array(Dhcp.OPTIONS + options.length);
  message[Dhcp.OP] = repr.op;
  message[Dhcp.HARDWARE_TYPE] = 1;
  message[Dhcp.HARDWARE_LENGTH] = 6;
  writeU32(message, Dhcp.XID, repr.xid);
  writeU16(message, Dhcp.FLAGS, repr.flags ?? 0);
  writeU32(message, Dhcp.CLIENT_ADDRESS, parseIpv4(repr.clientAddress ?? "0.0.0.0")!);
  writeU32(message, Dhcp.YOUR_ADDRESS, parseIpv4(repr.yourAddress ?? "0.0.0.0")!);
  writeU32(message, Dhcp.SERVER_ADDRESS, parseIpv4(repr.serverAddress ?? "0.0.0.0")!);
  writeU32(message, Dhcp.GATEWAY_ADDRESS, parseIpv4(repr.gatewayAddress ?? "0.0.0.0")!);
  writeMac(message, Dhcp.CLIENT_HARDWARE_ADDRESS, parseMac(repr.clientMac)!);
  writeU32(message, Dhcp.MAGIC_COOKIE, DHCP_MAGIC_COOKIE);
  message.set(options, Dhcp.OPTIONS);
  return message;
}

/** Option 50 (RFC 2132 9.1): code, length 4, the address. */
const REQUESTED_ADDRESS_LENGTH = 6;

/** What asInitReboot did. */
export const InitReboot = {
  /** Rewritten: ciaddr 0, option 50 = the address, no option 54. */
  REWRITTEN: 1,
  /** Left exactly as it came: no option 50, and no room to add one without growing the message. */
  NO_ROOM: 0,
  /** Left exactly as it came: an option runs past `length`, or option 50 or 54 is not 4 long. */
  MALFORMED: -1,
} as const;

/**
 * Turns a DHCPREQUEST in place into an INIT-REBOOT request for `address` (RFC 2131 4.3.2 and
 * table 5 in 4.4.1): ciaddr 0, option 50 (requested IP address) = `address`, no option 54
 * (server identifier). The server then answers the client's hardware address, never ciaddr
 * (RFC 2131 4.1: with giaddr and ciaddr zero, to chaddr and yiaddr, or by broadcast when the
 * client set the flag), so its ACK reaches the VM without the host resolving an address.
 *
 * Every option 54 becomes PAD (as stripClientOptions clears); every option 50 gets `address`.
 * Without one, option 50 goes where the message has room for it without growing, the first of:
 *
 * - 6 PAD bytes in a row before END (a cleared option 54, or options stripClientOptions cleared:
 *   dhcpcd and systemd-networkd send a DUID client identifier of 19 bytes or more);
 * - the list's free tail, from the end of its last option over the PADs, END and whatever follows
 *   END to `length`, with a new END after it (RFC 1542 2.1 wants "the minimal BOOTP header of
 *   300 octets", so clients pad a short message, and RFC 2132 3.2: octets after END are PAD,
 *   which a server does not read).
 *
 * RFC 2131 fixes no order for options. The caller fixes the checksums. Options end at END or at
 * `length`, as in stripClientOptions.
 */
export function asInitReboot(bytes: Uint8Array, offset: number, length: number, address: number): number {
  if (length < Dhcp.OPTIONS) return InitReboot.MALFORMED;
  const end = offset + length;
  // Check the whole list and find the room before changing a byte. A run is bytes that will be
  // PAD once the server identifiers are cleared.
  let hasRequestedAddress = false;
  let slot = -1;
  let runStart = -1;
  let cursor = offset + Dhcp.OPTIONS;
  while (cursor < end) {
    const code = bytes[cursor];
    if (code === DhcpOption.END) break;
    if (code === DhcpOption.PAD) {
      if (runStart === -1) runStart = cursor;
      cursor += 1;
      continue;
    }
    if (cursor + 2 > end) return InitReboot.MALFORMED;
    const dataLength = bytes[cursor + 1];
    const next = cursor + 2 + dataLength;
    if (next > end) return InitReboot.MALFORMED;
    if (code === DhcpOption.REQUESTED_IP_ADDRESS || code === DhcpOption.SERVER_IDENTIFIER) {
      if (dataLength !== 4) return InitReboot.MALFORMED;
    }
    if (code === DhcpOption.SERVER_IDENTIFIER) {
      if (runStart === -1) runStart = cursor;
    } else {
      if (code === DhcpOption.REQUESTED_IP_ADDRESS) hasRequestedAddress = true;
      if (slot === -1 && runStart !== -1 && cursor - runStart >= REQUESTED_ADDRESS_LENGTH) slot = runStart;
      runStart = -1;
    }
    cursor = next;
  }
  const tail = runStart === -1 ? cursor : runStart;
  if (slot === -1 && cursor - tail >= REQUESTED_ADDRESS_LENGTH) slot = tail;
  // Or at the tail with a new END: END and what follows it are free too.
  const atTail = slot === -1;
  if (!hasRequestedAddress && atTail && end - tail < REQUESTED_ADDRESS_LENGTH + 1) return InitReboot.NO_ROOM;

  cursor = offset + Dhcp.OPTIONS;
  while (cursor < end) {
    const code = bytes[cursor];
    if (code === DhcpOption.END) break;
    if (code === DhcpOption.PAD) {
      cursor += 1;
      continue;
    }
    const next = cursor + 2 + bytes[cursor + 1];
    if (code === DhcpOption.SERVER_IDENTIFIER) bytes.fill(DhcpOption.PAD, cursor, next);
    else if (code === DhcpOption.REQUESTED_IP_ADDRESS) writeU32(bytes, cursor + 2, address);
    cursor = next;
  }
  if (!hasRequestedAddress) {
    const at = atTail ? tail : slot;
    bytes[at] = DhcpOption.REQUESTED_IP_ADDRESS;
    bytes[at + 1] = 4;
    writeU32(bytes, at + 2, address);
    if (atTail) bytes[at + REQUESTED_ADDRESS_LENGTH] = DhcpOption.END;
  }
  writeU32(bytes, offset + Dhcp.CLIENT_ADDRESS, 0);
  return InitReboot.REWRITTEN;
}
