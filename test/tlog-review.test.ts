/**
 * Adversarial review of the transparency-log evidence checks
 * (src/trust/tlog.ts): bundles crafted so that every signature and proof the
 * library checks still holds, and only a binding or time check of ours can
 * refuse them. Verified in process (the CLI path is covered by
 * rekor-v2.test.ts), with the test PKI of test/support/pki.ts.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { before, describe, it } from 'node:test';
import {
  MvmError,
  parseBundle,
  parseTrustedRoot,
  verifyArtifact,
  type VerifiedSignature,
} from '../src/index.js';
import { ARTIFACT, POLICY, SHA256 } from './support/sample.js';
import { TestPki } from './support/pki.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

let pki: TestPki;
before(async () => {
  pki = await TestPki.create();
});

function verify(bundle: object, root: object = pki.trustedRoot()): VerifiedSignature {
  return verifyArtifact(
    ARTIFACT,
    parseBundle(Buffer.from(JSON.stringify(bundle))),
    parseTrustedRoot(Buffer.from(JSON.stringify(root)), 'test'),
    POLICY,
  );
}

function assertRefused(bundle: object, check: string, message: RegExp): void {
  assert.throws(
    () => verify(bundle),
    (e: unknown) => {
      assert.ok(e instanceof MvmError, `not an MvmError: ${String(e)}`);
      assert.equal(e.check, check, e.message);
      assert.match(e.message, message);
      return true;
    },
  );
}

describe('intoto 0.0.2 entries (Rekor v1 attestations)', () => {
  const intoto = (tamper = {}): Promise<Json> =>
    pki.signAttestation({ 'artifact.json': SHA256 }, { logKind: 'intoto', tamper });

  it('a correctly bound entry verifies', async () => {
    const bundle = await intoto();
    assert.equal(bundle.verificationMaterial.tlogEntries[0].kindVersion.kind, 'intoto');
    assert.equal(verify(bundle).signer.kind, 'certificate');
  });

  it('the logged certificate is another one for the same key', async () =>
    assertRefused(
      await intoto({ otherCertificate: true }),
      'tlog-entry',
      /certificate logged in the intoto 0\.0\.2 entry is not the bundle's signing certificate/,
    ));

  it('the logged signature is another (equally valid) one', async () =>
    assertRefused(
      await intoto({ otherSignature: true }),
      'tlog-entry',
      /signature logged in the intoto 0\.0\.2 entry is not the envelope's signature/,
    ));

  it('the logged payload hash is of other bytes', async () =>
    assertRefused(
      await intoto({ loggedDigest: 'other' }),
      'tlog-entry',
      /digest logged in the intoto 0\.0\.2 entry is not the SHA-256 of the DSSE envelope's payload/,
    ));

  it('key-signed: the logged key must be the pinned key', async () => {
    const keys = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const bundle = await pki.signAttestation(
      { 'artifact.json': SHA256 },
      { logKind: 'intoto', key: keys },
    );
    const verifyWith = (publicKey: typeof keys.publicKey) =>
      verifyArtifact(
        ARTIFACT,
        parseBundle(Buffer.from(JSON.stringify(bundle))),
        parseTrustedRoot(Buffer.from(JSON.stringify(pki.trustedRoot())), 'test'),
        { kind: 'key', publicKeyPem: publicKey.export({ format: 'pem', type: 'spki' }) as string },
      );
    assert.deepEqual(verifyWith(keys.publicKey).signer, { kind: 'key' });
    const other = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    assert.throws(
      () => verifyWith(other.publicKey),
      (e: unknown) =>
        e instanceof MvmError &&
        e.check === 'tlog-entry' &&
        /public key logged in the intoto 0\.0\.2 entry is not the verification key/.test(e.message),
    );
  });
});
