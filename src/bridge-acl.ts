/**
 * Which bridges a caller who is not root may attach VMs to: the administrator's access list,
 * /etc/softnet/bridge.conf, in the manner of qemu-bridge-helper's bridge.conf. Pure: the text comes
 * in, a decision goes out; platform/linux/bridge-acl-file.ts reads the file (as root, carefully).
 *
 * The format, one rule per line:
 *
 *   # comment (a line whose first non-blank character is '#'; blank lines are ignored too)
 *   allow br0        the bridge br0 may be used
 *   allow all        every bridge may be used
 *   deny br1         br1 may not be used, whatever else the file allows
 *   deny all         no bridge may be used, whatever else the file allows
 *   max-vms-per-user N          a caller may run at most N VMs at once on any one bridge
 *   max-vms-per-user N br0      ... on br0 (this line wins over the one without a bridge)
 *
 * A bridge is allowed when at least one `allow` line names it (or says `all`) and no `deny` line
 * names it (or says `all`); the order of the lines does not matter, and anything not allowed is
 * refused. That is qemu-bridge-helper's rule. Unlike qemu-bridge-helper there is no `include`:
 * softnet reads this one root-owned file and nothing it could point to, and an `include` line is
 * an error rather than silently ignored. Any line that is not one of these forms is an error
 * naming the file and the line number: a typo must not quietly change who may use what. A second
 * max-vms-per-user line for the same bridge (or a second one without a bridge) is an error too.
 *
 * The cap counts, per bridge, the VMs the caller runs at that moment (platform/linux/tap.ts counts
 * the TAP ports on the bridge that the kernel says belong to the caller's uid); it keeps one user
 * from draining the bridge's DHCP pool with many short-lived softnets and throwaway MACs.
 *
 * Root is not limited: the list and the cap apply when the caller is not root (caller.ts: a
 * setuid softnet started by a user, or sudo with SUDO_UID naming a user).
 */
import { SoftnetError } from "./errors.ts";
import { isInterfaceName } from "./interface-name.ts";

export interface BridgeAclRule {
  action: "allow" | "deny";
  /** A bridge name, or "all". */
  bridge: string;
  /** 1-based line number, for messages. */
  line: number;
}

/** A `max-vms-per-user N [BRIDGE]` line. */
export interface VmCapRule {
  max: number;
  /** The bridge it is for, or undefined for every bridge without a line of its own. */
  bridge: string | undefined;
  line: number;
}

export interface BridgeAcl {
  /** Where the rules came from, for messages (the file's path). */
  source: string;
  rules: BridgeAclRule[];
  caps: VmCapRule[];
}

/** The cap on one caller's VMs on one bridge, and the line that sets it. */
export interface VmCap {
  max: number;
  /** `line 3 of /etc/softnet/bridge.conf says "max-vms-per-user 2"`, for messages. */
  reason: string;
}

/** Larger than any host's VM count: a bigger number is a typo, not a policy. */
const MAX_VM_CAP = 100_000;

export interface BridgeDecision {
  allowed: boolean;
  /** Why, in words: which line allowed or denied it, or that none allowed it. */
  reason: string;
}

/** Parses the text of a bridge ACL file; throws SoftnetError("<source> line N: ...") on the first bad line. */
export function parseBridgeAcl(text: string, source: string): BridgeAcl {
  const rules: BridgeAclRule[] = [];
  const caps: VmCapRule[] = [];
  const lines = text.split("\n");
  for (let index = 0; index < lines.length; index++) {
    const line = index + 1;
    const content = lines[index]!.replace(/\r$/, "").trim();
    if (content === "" || content.startsWith("#")) continue;
    const fail = (problem: string): never => {
      throw new SoftnetError(`${source} line ${line}: ${problem}`, {
        hint:
          'each line is "allow NAME", "allow all", "deny NAME", "deny all", "max-vms-per-user N" or ' +
          '"max-vms-per-user N NAME"; comments start with #',
      });
    };
    if (!/^[\x20-\x7e\t]*$/.test(content)) fail("contains a character that is not printable ASCII");
    const words = content.split(/[ \t]+/);
    const action = words[0]!;
    if (action === "include") fail("include is not supported: softnet reads only this file");
    if (action === "max-vms-per-user") {
      if (words.length !== 2 && words.length !== 3) {
        fail(`"max-vms-per-user" takes a number and optionally a bridge name, not ${words.length - 1} words`);
      }
      const count = words[1]!;
      if (!/^[0-9]{1,6}$/.test(count) || Number(count) > MAX_VM_CAP) {
        fail(`${JSON.stringify(count)} is not a number of VMs from 0 to ${MAX_VM_CAP}`);
      }
      const bridge = words[2];
      if (bridge !== undefined && !isInterfaceName(bridge)) {
        fail(`${JSON.stringify(bridge)} is not a network interface name`);
      }
      const earlier = caps.find((cap) => cap.bridge === bridge);
      if (earlier !== undefined) {
        fail(
          `a second max-vms-per-user ${bridge === undefined ? "without a bridge" : `for ${bridge}`} ` +
            `(line ${earlier.line} has one)`,
        );
      }
      caps.push({ max: Number(count), bridge, line });
      continue;
    }
    if (action !== "allow" && action !== "deny") fail(`unknown rule ${JSON.stringify(action)}`);
    if (words.length !== 2) {
      fail(`"${action}" takes one bridge name or "all", not ${words.length - 1} words`);
    }
    const bridge = words[1]!;
    if (bridge !== "all" && !isInterfaceName(bridge)) {
      fail(`${JSON.stringify(bridge)} is not a network interface name`);
    }
    rules.push({ action: action as "allow" | "deny", bridge, line });
  }
  return { source, rules, caps };
}

/** The cap on a caller's VMs on `bridge`: its own line, else the line without a bridge, else none. */
export function vmCapFor(acl: BridgeAcl, bridge: string): VmCap | undefined {
  const cap =
    acl.caps.find((rule) => rule.bridge === bridge) ?? acl.caps.find((rule) => rule.bridge === undefined);
  if (cap === undefined) return undefined;
  const words = cap.bridge === undefined ? `${cap.max}` : `${cap.max} ${cap.bridge}`;
  return { max: cap.max, reason: `line ${cap.line} of ${acl.source} says "max-vms-per-user ${words}"` };
}

/** Whether `bridge` may be used under `acl`, and why. */
export function decideBridge(acl: BridgeAcl, bridge: string): BridgeDecision {
  const matches = (rule: BridgeAclRule) => rule.bridge === "all" || rule.bridge === bridge;
  const denial = acl.rules.find((rule) => rule.action === "deny" && matches(rule));
  if (denial !== undefined) {
    return { allowed: false, reason: `line ${denial.line} of ${acl.source} says "deny ${denial.bridge}"` };
  }
  const allowance = acl.rules.find((rule) => rule.action === "allow" && matches(rule));
  if (allowance !== undefined) {
    return {
      allowed: true,
      reason: `line ${allowance.line} of ${acl.source} says "allow ${allowance.bridge}"`,
    };
  }
  return { allowed: false, reason: `no line of ${acl.source} says "allow ${bridge}" or "allow all"` };
}
