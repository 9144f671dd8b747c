/** The library entry point later commands reuse: typed result, typed errors with a closed code union. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ERROR_TABLE, MvmError, verifyBlob, type ErrorCode } from '../src/index.js';

const FIX = new URL('./fixtures/public-good/', import.meta.url).pathname;
const base = {
  artifactPath: `${FIX}artifact-a.txt`,
  bundlePath: `${FIX}artifact-a.v01.sigstore.json`,
  certificateOidcIssuer: 'https://accounts.google.com',
};

describe('verifyBlob (library)', () => {
  it('returns a typed verdict', async () => {
    const r = await verifyBlob({ ...base, certificateIdentity: 'appu@google.com' });
    assert.equal(r.verified, true);
    assert.deepEqual(r.signer, {
      kind: 'certificate',
      identity: 'appu@google.com',
      issuer: 'https://accounts.google.com',
    });
    assert.equal(r.bundleFormat, 'v0.1');
    assert.equal(r.trustedRoot.source, 'embedded');
  });

  it('throws MvmError with a code from the table and the failed check', async () => {
    await assert.rejects(
      verifyBlob({ ...base, certificateIdentityRegexp: '.*@google\\.co' }),
      (e: unknown) =>
        e instanceof MvmError &&
        e.code === 'signature' &&
        e.check === 'identity' &&
        e.exitCode === 10,
    );
  });

  it('every error code maps to an exit status, and SPEC.md exit codes hold', () => {
    const spec: Partial<Record<ErrorCode, number>> = {
      usage: 2,
      input: 3,
      signature: 10,
      version: 11,
      arch: 12,
      revoked: 13,
      digest: 14,
      manifest: 15,
      network: 16,
      store: 17,
      'stale-revocations': 18,
    };
    for (const [code, exit] of Object.entries(spec))
      assert.equal(ERROR_TABLE[code as ErrorCode].exit, exit, code);
    for (const c of Object.values(ERROR_TABLE)) assert.ok(c.fix.length > 10);
  });
});
