/**
 * User rules: `--allow` and `--block` lists of IPv4 networks (or `@host`, the gateway), matched by
 * longest prefix. A block and an allow for the very same network: block wins (a typo must not
 * open a hole). Rules only ever apply to traffic from the VM's own leased address.
 */
import { formatIpv4, parseIpv4 } from "../wire/bytes.ts";
import { prefixMask } from "./address.ts";

/** ALLOW_BY_NAME: no rule of /32 matched, and a DNS answer for an allowed name named the address. */
export const RuleAction = { NONE: 0, ALLOW: 1, BLOCK: 2, ALLOW_BY_NAME: 3 } as const;
export type RuleActionValue = (typeof RuleAction)[keyof typeof RuleAction];

/** What a rule applies to: a network, or `@host`, resolved to the gateway once it is known. */
export type RuleTarget = { kind: "network"; network: number; prefixLength: number } | { kind: "host" };

export interface Rule {
  action: "allow" | "block";
  target: RuleTarget;
}

export const HOST_ALIAS = "@host";

/**
 * Parses one rule target: `A.B.C.D/N`, a bare `A.B.C.D` (a /32) or `@host`. Host bits are cleared
 * (`10.1.2.3/8` means 10.0.0.0/8). Returns an explanation string when the text is not valid.
 */
export function parseRuleTarget(text: string): RuleTarget | string {
  if (text === HOST_ALIAS) return { kind: "host" };
  if (text.startsWith("@")) return `unknown alias "${text}" (the only alias is ${HOST_ALIAS})`;
  const slash = text.indexOf("/");
  const addressText = slash === -1 ? text : text.slice(0, slash);
  const address = parseIpv4(addressText);
  if (address === undefined) return `"${addressText}" is not an IPv4 address`;
  let prefixLength = 32;
  if (slash !== -1) {
    const lengthText = text.slice(slash + 1);
    if (!/^(0|[1-9][0-9]?)$/.test(lengthText) || Number(lengthText) > 32) {
      return `"/${lengthText}" is not a prefix length (0 to 32)`;
    }
    prefixLength = Number(lengthText);
  }
  return { kind: "network", network: (address & prefixMask(prefixLength)) >>> 0, prefixLength };
}

export function formatRuleTarget(target: RuleTarget): string {
  return target.kind === "host" ? HOST_ALIAS : `${formatIpv4(target.network)}/${target.prefixLength}`;
}

/** True when the rules allow 0.0.0.0/0, which also lifts the host link's VM-to-VM isolation. */
export function allowsEverything(rules: readonly Rule[]): boolean {
  return rules.some(
    (rule) => rule.action === "allow" && rule.target.kind === "network" && rule.target.prefixLength === 0,
  );
}

/**
 * A longest-prefix-match table. Lookups probe one hash map per distinct prefix length present,
 * longest first, so a typical table (a few lengths) costs a few map reads and allocates nothing.
 */
/** Addresses allowed for a while, as /32 allow rules: what DNS answers for allowed names taught. */
export interface LearnedAllows {
  allows(address: number, nowMs: number): boolean;
}

export class RuleTable {
  private readonly lengths: Int32Array;
  private readonly masks: Uint32Array;
  private readonly maps: Map<number, RuleActionValue>[];
  readonly size: number;
  /** The rules block 0.0.0.0/0: what they do not allow is denied (--block 0.0.0.0/0). */
  readonly deniesByDefault: boolean;
  /** The table's first map is for /32 rules (they outrank learned addresses). */
  private readonly hasHostRules: boolean;

  private constructor(
    byLength: Map<number, Map<number, RuleActionValue>>,
    private readonly learned: LearnedAllows | undefined,
  ) {
    const lengths = [...byLength.keys()].sort((a, b) => b - a);
    this.lengths = Int32Array.from(lengths);
    this.masks = Uint32Array.from(lengths, prefixMask);
    this.maps = lengths.map((length) => byLength.get(length)!);
    this.size = this.maps.reduce((total, map) => total + map.size, 0);
    this.deniesByDefault = byLength.get(0)?.get(0) === RuleAction.BLOCK;
    this.hasHostRules = lengths[0] === 32;
  }

  /**
   * Compiles rules; `@host` becomes gateway/32, or is left out when no gateway is known. `learned`
   * (the addresses DNS answers for names in --allow named) adds /32 allows that come and go.
   */
  static compile(rules: readonly Rule[], gateway: number | undefined, learned?: LearnedAllows): RuleTable {
    const byLength = new Map<number, Map<number, RuleActionValue>>();
    for (const rule of rules) {
      let network: number;
      let prefixLength: number;
      if (rule.target.kind === "host") {
        if (gateway === undefined) continue;
        network = gateway;
        prefixLength = 32;
      } else {
        network = rule.target.network;
        prefixLength = rule.target.prefixLength;
      }
      let map = byLength.get(prefixLength);
      if (map === undefined) {
        map = new Map();
        byLength.set(prefixLength, map);
      }
      const action = rule.action === "block" ? RuleAction.BLOCK : RuleAction.ALLOW;
      // Block wins a tie whatever the order the flags came in.
      if (map.get(network) !== RuleAction.BLOCK) map.set(network, action);
    }
    return new RuleTable(byLength, learned);
  }

  /**
   * The action of the longest matching prefix, or RuleAction.NONE. A learned address is a /32
   * allow: it outranks every shorter rule, and an explicit /32 rule for the same address outranks
   * it (a /32 block wins the tie, as block always does).
   */
  lookup(address: number, nowMs = 0): RuleActionValue {
    let i = 0;
    if (this.hasHostRules) {
      const action = this.maps[0].get(address);
      if (action !== undefined) return action;
      i = 1;
    }
    if (this.learned?.allows(address, nowMs)) return RuleAction.ALLOW_BY_NAME;
    for (; i < this.lengths.length; i++) {
      const action = this.maps[i].get((address & this.masks[i]) >>> 0);
      if (action !== undefined) return action;
    }
    return RuleAction.NONE;
  }

  /** The table's entries, longest prefix first, for logs and tests. */
  entries(): Array<{ network: string; action: "allow" | "block" }> {
    const result: Array<{ network: string; action: "allow" | "block" }> = [];
    for (let i = 0; i < this.lengths.length; i++) {
      for (const [network, action] of this.maps[i]) {
        result.push({
          network: `${formatIpv4(network)}/${this.lengths[i]}`,
          action: action === RuleAction.BLOCK ? "block" : "allow",
        });
      }
    }
    return result;
  }
}
