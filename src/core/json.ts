/**
 * Strict JSON for security documents (manifests, bundles, trusted roots,
 * revocation lists). JSON.parse silently keeps the last of two equal keys, so
 * two parsers can read one signed document two ways; this parser refuses
 * duplicate keys, bounds nesting, and requires well-formed UTF-8. Pure: no I/O.
 */

export const MAX_JSON_DEPTH = 64;

export type JsonValue =
  null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

export type JsonResult<T> = { ok: true; value: T } | { ok: false; reason: string };

class JsonSyntaxError extends Error {}

/** Parses JSON text strictly; returns a reason on failure, never throws. */
export function parseStrictJson(text: string): JsonResult<JsonValue> {
  try {
    const p = new Parser(text);
    p.ws();
    const value = p.value(0);
    p.ws();
    if (p.i !== text.length) p.fail('unexpected content after the JSON value');
    return { ok: true, value };
  } catch (e) {
    if (e instanceof JsonSyntaxError) return { ok: false, reason: e.message };
    throw e;
  }
}

/** Decodes bytes as strict UTF-8 and parses one JSON object; returns a reason on failure, never throws. */
export function parseJsonObject(bytes: Uint8Array): JsonResult<Record<string, unknown>> {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    return { ok: false, reason: 'not valid UTF-8' };
  }
  const parsed = parseStrictJson(text);
  if (!parsed.ok) return { ok: false, reason: `not valid JSON (${parsed.reason})` };
  const value = parsed.value;
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return { ok: false, reason: 'not a JSON object' };
  }
  return { ok: true, value };
}

/** A document's `schema_version`: a positive safe integer, or undefined when it is not one. */
export function schemaVersionOf(doc: Record<string, unknown>): number | undefined {
  const v = doc['schema_version'];
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 1 ? v : undefined;
}

const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
const ESCAPES: Record<string, string> = {
  '"': '"',
  '\\': '\\',
  '/': '/',
  b: '\b',
  f: '\f',
  n: '\n',
  r: '\r',
  t: '\t',
};

class Parser {
  i = 0;
  constructor(private readonly s: string) {}

  fail(msg: string): never {
    throw new JsonSyntaxError(`${msg} at offset ${this.i}`);
  }

  ws(): void {
    while (this.i < this.s.length) {
      const c = this.s.charCodeAt(this.i);
      if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) break;
      this.i++;
    }
  }

  value(depth: number): JsonValue {
    if (depth > MAX_JSON_DEPTH) this.fail(`nested deeper than ${MAX_JSON_DEPTH} levels`);
    const c = this.s[this.i];
    switch (c) {
      case '{':
        return this.object(depth);
      case '[':
        return this.array(depth);
      case '"':
        return this.string();
      case 't':
        return this.literal('true', true);
      case 'f':
        return this.literal('false', false);
      case 'n':
        return this.literal('null', null);
      default:
        if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) return this.number();
        return this.fail(
          c === undefined ? 'unexpected end of input' : `unexpected character ${JSON.stringify(c)}`,
        );
    }
  }

  private literal<T>(word: string, v: T): T {
    if (!this.s.startsWith(word, this.i)) this.fail(`unexpected token`);
    this.i += word.length;
    return v;
  }

  private number(): number {
    NUMBER.lastIndex = this.i;
    const m = NUMBER.exec(this.s);
    if (!m) return this.fail('invalid number');
    this.i += m[0].length;
    return Number(m[0]);
  }

  private string(): string {
    this.i++; // opening quote
    let out = '';
    let start = this.i;
    for (;;) {
      if (this.i >= this.s.length) this.fail('unterminated string');
      const c = this.s.charCodeAt(this.i);
      if (c === 0x22) {
        out += this.s.slice(start, this.i);
        this.i++;
        return out;
      }
      if (c < 0x20) this.fail('control character in string');
      if (c === 0x5c) {
        out += this.s.slice(start, this.i);
        const e = this.s[this.i + 1];
        if (e === 'u') {
          const hex = this.s.slice(this.i + 2, this.i + 6);
          if (!/^[0-9a-fA-F]{4}$/.test(hex)) this.fail('invalid \\u escape');
          out += String.fromCharCode(parseInt(hex, 16));
          this.i += 6;
        } else {
          const ch = e === undefined ? undefined : ESCAPES[e];
          if (ch === undefined) this.fail('invalid escape');
          out += ch;
          this.i += 2;
        }
        start = this.i;
        continue;
      }
      this.i++;
    }
  }

  private array(depth: number): JsonValue[] {
    this.i++;
    const out: JsonValue[] = [];
    this.ws();
    if (this.s[this.i] === ']') {
      this.i++;
      return out;
    }
    for (;;) {
      this.ws();
      out.push(this.value(depth + 1));
      this.ws();
      const c = this.s[this.i++];
      if (c === ']') return out;
      if (c !== ',') this.fail("expected ',' or ']'");
    }
  }

  private object(depth: number): { [key: string]: JsonValue } {
    this.i++;
    // A null-prototype object: a "__proto__" key is plain data, never a prototype.
    const out: { [key: string]: JsonValue } = Object.create(null);
    const seen = new Set<string>();
    this.ws();
    if (this.s[this.i] === '}') {
      this.i++;
      return out;
    }
    for (;;) {
      this.ws();
      if (this.s[this.i] !== '"') this.fail('expected a string key');
      const key = this.string();
      if (seen.has(key)) this.fail(`duplicate key ${JSON.stringify(key.slice(0, 64))}`);
      seen.add(key);
      this.ws();
      if (this.s[this.i++] !== ':') this.fail("expected ':'");
      this.ws();
      out[key] = this.value(depth + 1);
      this.ws();
      const c = this.s[this.i++];
      if (c === '}') return out;
      if (c !== ',') this.fail("expected ',' or '}'");
    }
  }
}
