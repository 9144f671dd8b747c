import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  anchoredPattern,
  checkGithubWorkflow,
  checkSigner,
  MvmError,
  parseBundle,
  type TrustPolicy,
} from '../src/index.js';

const ID = 'https://github.com/tinylabscom/mvm/.github/workflows/release.yml@refs/tags/v0.14.0';
const ISS = 'https://token.actions.githubusercontent.com';

describe('issuer pattern and GitHub workflow claims (pure core)', () => {
  it('an issuer pattern is anchored at both ends', () => {
    const p: TrustPolicy = {
      kind: 'certificate',
      issuer: { pattern: 'https://token\\.actions\\.githubusercontent\\.com' },
      identity: { exact: ID },
    };
    checkSigner(p, { identity: ID, issuer: ISS });
    for (const bad of [`${ISS}.evil.example`, `https://evil.example/${ISS}`, `${ISS}\n`]) {
      assert.throws(
        () => checkSigner(p, { identity: ID, issuer: bad }),
        (e: unknown) => e instanceof MvmError && e.check === 'issuer',
        bad,
      );
    }
  });

  it('every named workflow claim must be recorded, exactly', () => {
    const actual = { repository: 'tinylabscom/mvm', ref: 'refs/tags/v0.14.0', trigger: 'push' };
    checkGithubWorkflow({}, actual);
    checkGithubWorkflow({ repository: 'tinylabscom/mvm', ref: 'refs/tags/v0.14.0' }, actual);
    for (const expected of [
      { repository: 'tinylabscom/mvm2' },
      { repository: 'tinylabscom/mv' },
      { ref: 'refs/tags/v0.14' },
      { sha: 'abc' }, // not recorded at all: absence proves nothing
    ]) {
      assert.throws(
        () => checkGithubWorkflow(expected, actual),
        (e: unknown) => e instanceof MvmError && e.code === 'signature' && e.check === 'identity',
        JSON.stringify(expected),
      );
    }
  });
});

describe('identity policy (pure core)', () => {
  it('exact identity: equal passes, any prefix or suffix fails', () => {
    const p: TrustPolicy = { kind: 'certificate', issuer: ISS, identity: { exact: ID } };
    checkSigner(p, { identity: ID, issuer: ISS });
    for (const bad of [
      `${ID}x`,
      `x${ID}`,
      ID.slice(1),
      ID.slice(0, -1),
      `${ID}\n`,
      ID.toUpperCase(),
    ]) {
      assert.throws(
        () => checkSigner(p, { identity: bad, issuer: ISS }),
        (e: unknown) => e instanceof MvmError && e.check === 'identity',
      );
    }
  });

  it('a missing SAN or issuer never matches', () => {
    const p: TrustPolicy = { kind: 'certificate', issuer: ISS, identity: { pattern: '.*' } };
    assert.throws(
      () => checkSigner(p, { issuer: ISS }),
      (e: unknown) => e instanceof MvmError && e.check === 'identity',
    );
    assert.throws(
      () => checkSigner(p, { identity: ID }),
      (e: unknown) => e instanceof MvmError && e.check === 'issuer',
    );
  });

  it('patterns are anchored at both ends, including across alternation and newlines', () => {
    assert.ok(anchoredPattern('a|b').test('a'));
    assert.ok(!anchoredPattern('a|b').test('ab'));
    assert.ok(!anchoredPattern('a|b').test('xa'));
    assert.ok(!anchoredPattern('abc').test('abc\n'));
    assert.ok(!anchoredPattern('abc').test('\nabc'));
  });

  it('an anchored pattern matches only strings the pattern matches in whole (property)', () => {
    fc.assert(
      fc.property(fc.string(), fc.string({ minLength: 1 }), (s, extra) => {
        const re = anchoredPattern(s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
        return re.test(s) && !re.test(s + extra) && !re.test(extra + s);
      }),
    );
  });

  it('an invalid pattern is a usage error', () => {
    assert.throws(
      () => anchoredPattern('(['),
      (e: unknown) => e instanceof MvmError && e.code === 'usage',
    );
  });
});

describe('bundle parser', () => {
  it('random bytes never crash it: only a signature error comes out (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2048 }), (bytes) => {
        try {
          parseBundle(bytes);
          return false; // random bytes are never a valid bundle
        } catch (e) {
          return e instanceof MvmError && e.code === 'signature';
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('random JSON objects never crash it (property)', () => {
    fc.assert(
      fc.property(
        fc.jsonValue({ maxDepth: 6 }),
        fc.constantFrom(
          undefined,
          'application/vnd.dev.sigstore.bundle.v0.3+json',
          'application/vnd.dev.sigstore.bundle+json;version=0.1',
        ),
        (value, mediaType) => {
          const obj =
            value !== null && typeof value === 'object' && !Array.isArray(value)
              ? { ...value, mediaType }
              : value;
          try {
            parseBundle(Buffer.from(JSON.stringify(obj) ?? 'null'));
            return true;
          } catch (e) {
            return e instanceof MvmError && e.code === 'signature';
          }
        },
      ),
      { numRuns: 1000 },
    );
  });
});
