import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { MAX_JSON_DEPTH, parseJsonObject, parseStrictJson } from '../src/core/json.js';

const reason = (text: string): string => {
  const r = parseStrictJson(text);
  assert.equal(r.ok, false, `expected ${JSON.stringify(text)} to be refused`);
  return (r as { reason: string }).reason;
};

describe('strict JSON', () => {
  it('reads every valid JSON document as JSON.parse does (property)', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 8 }), fc.boolean(), (v, pretty) => {
        const text = pretty ? JSON.stringify(v, null, 2) : JSON.stringify(v);
        const r = parseStrictJson(text);
        return r.ok && JSON.stringify(r.value) === JSON.stringify(JSON.parse(text));
      }),
      { numRuns: 1000 },
    );
  });

  it('never throws on arbitrary text, and refuses what JSON.parse refuses (property)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (s) => {
        const r = parseStrictJson(s);
        let native = true;
        try {
          JSON.parse(s);
        } catch {
          native = false;
        }
        return native || !r.ok;
      }),
      { numRuns: 3000 },
    );
  });

  it('refuses duplicate keys, at any depth', () => {
    assert.match(reason('{"a":1,"a":2}'), /duplicate key "a"/);
    assert.match(
      reason('{"x":{"version":"0.14.0","version":"0.13.0"}}'),
      /duplicate key "version"/,
    );
    assert.match(reason('{"a":1,"\\u0061":2}'), /duplicate key "a"/);
  });

  it('bounds nesting depth', () => {
    const deep = '['.repeat(MAX_JSON_DEPTH + 2) + ']'.repeat(MAX_JSON_DEPTH + 2);
    assert.match(reason(deep), /nested deeper than/);
    assert.match(reason('['.repeat(1_000_000)), /nested deeper than/);
    assert.ok(parseStrictJson('['.repeat(MAX_JSON_DEPTH) + ']'.repeat(MAX_JSON_DEPTH)).ok);
  });

  it('keeps "__proto__" as data', () => {
    const r = parseStrictJson('{"__proto__":{"polluted":true}}');
    assert.ok(r.ok);
    assert.equal(({} as Record<string, unknown>)['polluted'], undefined);
    assert.deepEqual(Object.keys(r.value as object), ['__proto__']);
  });

  it('refuses trailing content, bad escapes, control characters, leading zeros', () => {
    for (const bad of [
      '{} x',
      '"\\x"',
      '"a\nb"',
      '01',
      '[1,]',
      '{"a":1,}',
      '',
      ' ',
      'NaN',
      '"\\u12"',
    ])
      reason(bad);
  });

  it('parseJsonObject: UTF-8 and object-ness', () => {
    assert.deepEqual(parseJsonObject(Buffer.from([0x7b, 0xc3, 0x7d])), {
      ok: false,
      reason: 'not valid UTF-8',
    });
    assert.deepEqual(parseJsonObject(Buffer.from('[1]')), {
      ok: false,
      reason: 'not a JSON object',
    });
    assert.ok(parseJsonObject(Buffer.from('{"a":[1,{"b":null}]}')).ok);
  });
});
