/**
 * Control characters out of what softnet prints. A value that came from outside (an argument, a
 * path, a DHCP host name, an interface name, an error message that embeds one of them) could
 * otherwise end a log line and forge the next (`--capture $'x\nsoftnet[1] warn: ...'`), or send
 * escape sequences to a terminal. The logger and the error printer apply this to every line, so
 * no call site has to.
 *
 * C0 controls (U+0000-U+001F), DEL (U+007F) and C1 controls (U+0080-U+009F, which some terminals
 * obey as escape sequences: ECMA-48 section 5.3) become `\n`, `\r`, `\t` or `\xHH`; U+2028 and
 * U+2029 (line and paragraph separators, which some viewers break lines at) become `\u2028`,
 * `\u2029`. Backslashes are kept as they are, so escaping twice changes nothing more.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
const NAMED: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

function escapeOne(character: string): string {
  const named = NAMED[character];
  if (named !== undefined) return named;
  const code = character.charCodeAt(0);
  return code > 0xff ? `\\u${code.toString(16)}` : `\\x${code.toString(16).padStart(2, "0")}`;
}

/** `text` with every control character escaped (see the module comment). */
export function escapeControlCharacters(text: string): string {
  CONTROL.lastIndex = 0;
  return CONTROL.test(text) ? text.replace(CONTROL, escapeOne) : text;
}

const JSON_UNSAFE = /[\u007f-\u009f\u2028\u2029]/g;

/**
 * A JSON text made safe for a terminal and for line-based readers: JSON.stringify already writes
 * C0 controls as \uXXXX (ECMA-262 QuoteJSONString), but not DEL, C1 controls, U+2028 or U+2029.
 * Outside strings a JSON text has none of these, so writing them as \uXXXX escapes (RFC 8259
 * section 7) keeps every value as it was.
 */
export function jsonWithoutControlCharacters(json: string): string {
  JSON_UNSAFE.lastIndex = 0;
  return JSON_UNSAFE.test(json)
    ? json.replace(JSON_UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)
    : json;
}
