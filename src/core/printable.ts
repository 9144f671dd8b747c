/**
 * Text from carried-in files (bundle fields a verifier quotes, manifest
 * strings, file names) reaches terminals, logs and the audit log. Raw, a
 * crafted value could clear the screen, set the window title, reorder what is
 * shown (bidirectional overrides) or forge a line that reads like an `ok`
 * record. Everything untrusted is rendered through here: control characters,
 * DEL, C1 controls, bidi controls and line/paragraph separators become
 * visible escapes, and the length is bounded.
 */
// C0 (incl. \n, \r, \t, ESC), DEL, C1, LRM/RLM/ALM, LS/PS, bidi embeddings, overrides and isolates.
const UNSAFE =
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/gu;

export const DEFAULT_PRINTABLE_LENGTH = 1024;

export function printable(text: string, maxLength: number = DEFAULT_PRINTABLE_LENGTH): string {
  const escaped = text.replace(UNSAFE, (c) => {
    const code = c.codePointAt(0)!;
    if (c === '\n') return '\\n';
    if (c === '\r') return '\\r';
    if (c === '\t') return '\\t';
    return code <= 0xff
      ? `\\x${code.toString(16).padStart(2, '0')}`
      : `\\u${code.toString(16).padStart(4, '0')}`;
  });
  if (escaped.length <= maxLength) return escaped;
  // Cut on a code point boundary, and say how much was left out.
  const cut = Array.from(escaped.slice(0, maxLength + 1))
    .slice(0, -1)
    .join('')
    .slice(0, maxLength);
  return `${cut}…(${escaped.length - cut.length} more characters)`;
}
