/**
 * DNS names in `--allow`: `example.com` (that name only) and `*.example.com` (any name below it,
 * not example.com itself). Matching is case-insensitive and ignores a trailing dot. Names are
 * compared as the DNS reader writes them (src/wire/dns.ts): lowercase, labels joined by ".", any
 * byte outside letters, digits, "-" and "_" escaped (a dot inside a label never reads as a label
 * boundary).
 */

/** RFC 1035 2.3.4: a label is 1 to 63 octets, a name at most 253 characters as text. */
export const MAX_LABEL_LENGTH = 63;
export const MAX_NAME_TEXT_LENGTH = 253;

export interface NamePattern {
  /** The name (for a wildcard, the part after "*."), lowercase, no trailing dot. */
  name: string;
  wildcard: boolean;
}

// Letters, digits, hyphen and underscore (underscore appears in real names: _dmarc, SRV owners).
const LABEL_CHARACTERS = /^[a-z0-9_-]+$/;

/**
 * True when an entry of --allow/--block is meant as a DNS name: it has a letter, "*" or "_" and is
 * neither an alias (@host) nor a network (a "/" makes it one, so "10.0.0.0/8x" is reported as a
 * bad network, not as a bad name).
 */
export function looksLikeName(text: string): boolean {
  return /[a-zA-Z*_]/.test(text) && !text.startsWith("@") && !text.includes("/");
}

/**
 * Parses one name pattern. Returns an explanation string when it is not a valid name: an empty
 * label, a label over 63 bytes, a name over 253, `*` anywhere but as the whole first label, a bare
 * `*`, a character outside letters, digits, hyphen and underscore.
 */
export function parseNamePattern(text: string): NamePattern | string {
  let name = text.toLowerCase();
  if (name.endsWith(".")) name = name.slice(0, -1);
  if (name === "") return "a name may not be empty";
  if (name === "*") return 'a bare "*" would allow every name: block nothing by name, or list the names';
  let wildcard = false;
  if (name.startsWith("*.")) {
    wildcard = true;
    name = name.slice(2);
  }
  if (name.length > MAX_NAME_TEXT_LENGTH) return `the name is longer than ${MAX_NAME_TEXT_LENGTH} characters`;
  for (const label of name.split(".")) {
    if (label === "") return "a name may not have an empty label (two dots, or a leading dot)";
    if (label.includes("*")) return '"*" may only stand as the whole first label, as in *.example.com';
    if (label.length > MAX_LABEL_LENGTH)
      return `the label "${label}" is longer than ${MAX_LABEL_LENGTH} characters`;
    if (!LABEL_CHARACTERS.test(label)) {
      return `the label "${label}" has a character other than letters, digits, "-" and "_"`;
    }
  }
  return { name, wildcard };
}

export function formatNamePattern(pattern: NamePattern): string {
  return pattern.wildcard ? `*.${pattern.name}` : pattern.name;
}

/**
 * A set of name patterns: exact names in one set, wildcard suffixes in another. A name matches
 * when it is an exact name, or when one of its proper suffixes (after a ".") is a wildcard's name.
 */
export class NamePatterns {
  private readonly exact = new Set<string>();
  private readonly below = new Set<string>();

  constructor(patterns: readonly NamePattern[]) {
    for (const pattern of patterns) (pattern.wildcard ? this.below : this.exact).add(pattern.name);
  }

  get size(): number {
    return this.exact.size + this.below.size;
  }

  /** The pattern that allows `name` (as the DNS reader writes names), or undefined. */
  match(name: string): string | undefined {
    if (this.exact.has(name)) return name;
    if (this.below.size === 0) return undefined;
    for (let dot = name.indexOf("."); dot !== -1; dot = name.indexOf(".", dot + 1)) {
      const suffix = name.slice(dot + 1);
      if (this.below.has(suffix)) return `*.${suffix}`;
    }
    return undefined;
  }
}
