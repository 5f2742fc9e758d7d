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
 *
 * A bridge is allowed when at least one `allow` line names it (or says `all`) and no `deny` line
 * names it (or says `all`); the order of the lines does not matter, and anything not allowed is
 * refused. That is qemu-bridge-helper's rule. Unlike qemu-bridge-helper there is no `include`:
 * softnet reads this one root-owned file and nothing it could point to, and an `include` line is
 * an error rather than silently ignored. Any line that is not one of the four forms is an error
 * naming the file and the line number: a typo must not quietly change who may use what.
 *
 * Root is not limited: the list applies when the real caller is not root (a setuid softnet started
 * by a user, or sudo with SUDO_UID naming a user).
 */
import { SoftnetError } from "./errors.ts";

export interface BridgeAclRule {
  action: "allow" | "deny";
  /** A bridge name, or "all". */
  bridge: string;
  /** 1-based line number, for messages. */
  line: number;
}

export interface BridgeAcl {
  /** Where the rules came from, for messages (the file's path). */
  source: string;
  rules: BridgeAclRule[];
}

export interface BridgeDecision {
  allowed: boolean;
  /** Why, in words: which line allowed or denied it, or that none allowed it. */
  reason: string;
}

/** Linux interface names (dev_valid_name): 1 to 15 bytes, printable, no '/', ':' or whitespace. */
const INTERFACE_NAME = /^[\x21-\x7e]{1,15}$/;

/** Parses the text of a bridge ACL file; throws SoftnetError("<source> line N: ...") on the first bad line. */
export function parseBridgeAcl(text: string, source: string): BridgeAcl {
  const rules: BridgeAclRule[] = [];
  const lines = text.split("\n");
  for (let index = 0; index < lines.length; index++) {
    const line = index + 1;
    const content = lines[index]!.replace(/\r$/, "").trim();
    if (content === "" || content.startsWith("#")) continue;
    const fail = (problem: string): never => {
      throw new SoftnetError(`${source} line ${line}: ${problem}`, {
        hint: 'each line is "allow NAME", "allow all", "deny NAME" or "deny all"; comments start with #',
      });
    };
    if (!/^[\x20-\x7e\t]*$/.test(content)) fail("contains a character that is not printable ASCII");
    const words = content.split(/[ \t]+/);
    const action = words[0]!;
    if (action === "include") fail("include is not supported: softnet reads only this file");
    if (action !== "allow" && action !== "deny") fail(`unknown rule ${JSON.stringify(action)}`);
    if (words.length !== 2) {
      fail(`"${action}" takes one bridge name or "all", not ${words.length - 1} words`);
    }
    const bridge = words[1]!;
    if (
      bridge !== "all" &&
      (!INTERFACE_NAME.test(bridge) || /[/:]/.test(bridge) || bridge === "." || bridge === "..")
    ) {
      fail(`${JSON.stringify(bridge)} is not a network interface name`);
    }
    rules.push({ action: action as "allow" | "deny", bridge, line });
  }
  return { source, rules };
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

/**
 * The uid the access list applies to, or undefined when the caller is root and not limited.
 * `realUid` is getuid(): a setuid softnet's caller. Under sudo the real uid is 0 and sudo names the
 * user in SUDO_UID; it is believed only then (a setuid caller's environment is their own, and a
 * caller who is not root is limited whatever it says). Root running softnet directly, or through
 * sudo as root, is not limited.
 */
export function bridgeAclCaller(realUid: number, sudoUid: string | undefined): number | undefined {
  if (realUid !== 0) return realUid;
  if (sudoUid !== undefined && /^[0-9]{1,10}$/.test(sudoUid) && Number(sudoUid) !== 0) return Number(sudoUid);
  return undefined;
}
