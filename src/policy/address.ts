/**
 * Address classes of IPv4, as Rust's `Ipv4Addr::is_global` (which the original softnet uses
 * through the ip_network crate) defines them. "Global" is what softnet lets a VM reach by default.
 */

/** [network, prefix length] pairs that are not globally routable. */
const NON_GLOBAL_NETWORKS: ReadonlyArray<readonly [number, number]> = [
  [0x00000000, 8], // 0.0.0.0/8 "this network"
  [0x0a000000, 8], // 10.0.0.0/8 private (RFC 1918)
  [0x64400000, 10], // 100.64.0.0/10 shared address space (RFC 6598, carrier-grade NAT)
  [0x7f000000, 8], // 127.0.0.0/8 loopback
  [0xa9fe0000, 16], // 169.254.0.0/16 link-local
  [0xac100000, 12], // 172.16.0.0/12 private (RFC 1918)
  [0xc0000000, 24], // 192.0.0.0/24 IETF protocol assignments (except .9 and .10, below)
  [0xc0000200, 24], // 192.0.2.0/24 documentation TEST-NET-1
  [0xc0a80000, 16], // 192.168.0.0/16 private (RFC 1918)
  [0xc6120000, 15], // 198.18.0.0/15 benchmarking (RFC 2544)
  [0xc6336400, 24], // 198.51.100.0/24 documentation TEST-NET-2
  [0xcb007100, 24], // 203.0.113.0/24 documentation TEST-NET-3
  [0xf0000000, 4], // 240.0.0.0/4 reserved, which includes 255.255.255.255 broadcast
];

/** 192.0.0.9 (PCP anycast) and 192.0.0.10 (TURN anycast) are globally reachable by RFC 7723/8155. */
const GLOBAL_EXCEPTIONS_IN_192_0_0 = [0xc0000009, 0xc000000a];

function maskOf(prefixLength: number): number {
  return prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
}

/** True when `network`/`prefixLength` contains `address`. */
export function networkContains(network: number, prefixLength: number, address: number): boolean {
  const mask = maskOf(prefixLength);
  return (address & mask) >>> 0 === (network & mask) >>> 0;
}

function isGlobalSlow(address: number): boolean {
  if (address === GLOBAL_EXCEPTIONS_IN_192_0_0[0] || address === GLOBAL_EXCEPTIONS_IN_192_0_0[1]) return true;
  for (let i = 0; i < NON_GLOBAL_NETWORKS.length; i++) {
    const entry = NON_GLOBAL_NETWORKS[i];
    if (networkContains(entry[0], entry[1], address)) return false;
  }
  // Multicast (224.0.0.0/4) is global by this definition, as in the original.
  return true;
}

/**
 * Per first octet: 1 = every address with it is global, 0 = none is, 2 = it depends (the octet
 * starts a network shorter than /8's granularity covers). Built from the table above, so the two
 * cannot disagree; most destinations are decided by one array read.
 *
 * Built in one pass over the table: this runs on every start, before the command line is parsed,
 * and the earlier form (256 octets × the table through closures and array destructuring, cold in
 * the interpreter) cost 6 to 10 ms of the release binary's start-up (scripts/bench/startup.ts).
 */
const FIRST_OCTET_CLASS = (() => {
  const classes = new Uint8Array(256).fill(1);
  for (let i = 0; i < NON_GLOBAL_NETWORKS.length; i++) {
    const entry = NON_GLOBAL_NETWORKS[i];
    if (entry[1] > 8) classes[entry[0] >>> 24] = 2;
  }
  // Networks of /8 or shorter cover whole first octets, and decide them even where a longer one
  // also starts.
  for (let i = 0; i < NON_GLOBAL_NETWORKS.length; i++) {
    const entry = NON_GLOBAL_NETWORKS[i];
    if (entry[1] > 8) continue;
    const first = entry[0] >>> 24;
    classes.fill(0, first, first + 2 ** (8 - entry[1]));
  }
  return classes;
})();

export function isGlobal(address: number): boolean {
  const known = FIRST_OCTET_CLASS[address >>> 24];
  return known === 2 ? isGlobalSlow(address) : known === 1;
}

export const LIMITED_BROADCAST = 0xffffffff;
export const UNSPECIFIED = 0;

export { maskOf as prefixMask };
