/**
 * What a Linux network interface name is, in one place, for every place one comes in: a bridge in
 * /etc/softnet/bridge.conf (bridge-acl.ts), the bridge and TAP names platform/linux/tap.ts hands to
 * the kernel, and --bridge on softnet's and the doctor's command lines (cli-values.ts). Pure, so
 * that modules which must not import platform/ can use it.
 */

/**
 * The kernel's rule (net/core/dev.c dev_valid_name): 1 to IFNAMSIZ - 1 = 15 bytes
 * (include/uapi/linux/if.h: IFNAMSIZ 16, counting the NUL), not "." or "..", no '/', ':' or
 * whitespace; here, in printable ASCII only.
 */
export function isInterfaceName(name: string): boolean {
  return /^[\x21-\x7e]{1,15}$/.test(name) && !/[/:]/.test(name) && name !== "." && name !== "..";
}

/**
 * An interface name made only of letters, digits, '-', '_' and '.': what softnet takes from the
 * person starting it (--bridge). That name reaches text other programs parse, such as the nft
 * rules of platform/linux/nftables.ts (oifname "NAME"), so it has no quote, backslash or other
 * character they could read as anything but part of the name. Bridges are named this way in
 * practice (br0, virbr0, br-1a2b3c4d5e6f, vmbr0.100).
 */
export function isPlainInterfaceName(name: string): boolean {
  return isInterfaceName(name) && /^[A-Za-z0-9_.-]+$/.test(name);
}
