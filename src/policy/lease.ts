/**
 * What softnet learned by snooping the host's DHCP server: the VM's address, until when it may use
 * it, and which DNS servers it was given. Time is passed in (milliseconds on a monotonic clock), so
 * tests control expiry.
 */
import { MAX_DNS_SERVERS } from "../wire/dhcp.ts";

export class Lease {
  /** The leased IPv4 address; meaningful while `held` is true. */
  address = 0;
  /** Monotonic milliseconds after which the lease is no longer valid (Infinity for infinite leases). */
  expiresAtMs = 0;
  held = false;
  readonly dnsServers = new Uint32Array(MAX_DNS_SERVERS);
  dnsServerCount = 0;
  /**
   * The server identifier (option 54) of the ACK that granted the lease, or -1 when it had none:
   * where a DHCPRELEASE goes (RFC 2131 4.4.6).
   */
  serverIdentifier = -1;
  /** Bumped on every change (learned, renewed, cleared), so the loop notices without callbacks. */
  generation = 0;

  isValidAt(nowMs: number): boolean {
    return this.held && nowMs < this.expiresAtMs;
  }

  /** True when the lease is valid and `address` is the leased address. */
  isValidSource(address: number, nowMs: number): boolean {
    return this.held && address === this.address && nowMs < this.expiresAtMs;
  }

  isDnsServer(address: number): boolean {
    for (let i = 0; i < this.dnsServerCount; i++) if (this.dnsServers[i] === address) return true;
    return false;
  }

  grant(
    address: number,
    leaseSeconds: number,
    nowMs: number,
    dnsServers: Uint32Array,
    dnsServerCount: number,
    serverIdentifier = -1,
  ): void {
    this.address = address;
    // 0xffffffff is "infinite" in DHCP (RFC 2131 section 3.3).
    this.expiresAtMs = leaseSeconds === 0xffffffff ? Number.POSITIVE_INFINITY : nowMs + leaseSeconds * 1000;
    this.held = true;
    // A loop, not set(subarray()): snooping a renewal must not allocate.
    for (let i = 0; i < dnsServerCount; i++) this.dnsServers[i] = dnsServers[i];
    this.dnsServerCount = dnsServerCount;
    this.serverIdentifier = serverIdentifier;
    this.generation++;
  }

  clear(): void {
    if (!this.held) return;
    this.held = false;
    this.dnsServerCount = 0;
    this.serverIdentifier = -1;
    this.generation++;
  }
}
