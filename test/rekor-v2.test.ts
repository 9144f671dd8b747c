/**
 * Rekor v2 bundles end to end: the test PKI (test/support/pki.ts) logs
 * hashedrekord 0.0.2 entries in an Ed25519-keyed shard with no signed entry
 * timestamp, and stamps the signature with a test TSA (@sigstore/mock); the
 * built CLI verifies them as a subprocess with real Sigstore verification.
 * Each refusal breaks one binding before the entry is logged, so the
 * inclusion proof still holds and only that binding's check can catch it.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  MvmError,
  parseBundle,
  parseTrustedRoot,
  verifyArtifact,
  type VerifiedSignature,
} from '../src/index.js';
import { runCli, type CliResult } from './support/cli.js';
import { ARTIFACT, IDENTITY, POLICY, SHA256 } from './support/sample.js';
import { GITHUB_ISSUER, TestPki, type SignOptions } from './support/pki.js';

let dir: string;
let pki: TestPki;
let rootPath: string;
let artifactPath: string;
let n = 0;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mvm-rekor-v2-'));
  pki = await TestPki.create();
  rootPath = pki.writeTrustedRoot(join(dir, 'root'));
  artifactPath = join(dir, 'artifact.json');
  writeFileSync(artifactPath, ARTIFACT);
});
after(() => rmSync(dir, { recursive: true, force: true }));

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
type Make = (o: SignOptions) => Promise<Json>;
const blob: Make = (o) => pki.signBlob(ARTIFACT, { rekorV2: true, ...o });
const attestation: Make = (o) =>
  pki.signAttestation({ 'artifact.json': SHA256 }, { rekorV2: true, ...o });

function verify(bundle: object, opts: { root?: string; json?: boolean } = {}): Promise<CliResult> {
  const path = join(dir, `b${n++}.json`);
  writeFileSync(path, JSON.stringify(bundle));
  return runCli([
    'verify-blob',
    '--trusted-root',
    opts.root ?? rootPath,
    '--bundle',
    path,
    '--certificate-identity',
    IDENTITY,
    '--certificate-oidc-issuer',
    GITHUB_ISSUER,
    ...(opts.json ? ['--json'] : []),
    artifactPath,
  ]);
}

/** The same verification in process, for the MvmError itself. */
function verifyInProcess(bundle: object, root: object = pki.trustedRoot()): VerifiedSignature {
  return verifyArtifact(
    ARTIFACT,
    parseBundle(Buffer.from(JSON.stringify(bundle))),
    parseTrustedRoot(Buffer.from(JSON.stringify(root)), 'test'),
    POLICY,
  );
}

/** Exit 10 with the check named, the binding named in the first line, and the same MvmError in process. */
async function assertRefused(
  bundle: object,
  check: string,
  binding: RegExp,
  root?: Record<string, unknown>,
): Promise<void> {
  const r = await verify(
    bundle,
    root ? { root: pki.writeTrustedRoot(join(dir, `r${n++}`), root) } : {},
  );
  assert.equal(r.code, 10, `expected exit 10, got ${r.code}: ${r.stderr}${r.stdout}`);
  assert.match(r.stderr, new RegExp(`check: ${check}\\n`));
  assert.match(r.stderr.split('\n')[0]!, binding);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
  assert.throws(
    () => verifyInProcess(bundle, root),
    (e: unknown) =>
      e instanceof MvmError &&
      e.code === 'signature' &&
      e.check === check &&
      binding.test(e.message),
  );
}

describe('Rekor v2: accepted', () => {
  for (const [name, make] of [
    ['a message signature', blob],
    ['a DSSE attestation logged as hashedrekord 0.0.2 over the PAE', attestation],
  ] as const) {
    it(name, async () => {
      const bundle = await make({});
      const e = bundle.verificationMaterial.tlogEntries[0];
      assert.deepEqual(e.kindVersion, { kind: 'hashedrekord', version: '0.0.2' });
      assert.equal(e.integratedTime, '0');
      assert.equal(e.inclusionPromise, undefined);
      assert.match(e.inclusionProof.checkpoint.envelope, /^log2025-1\.rekor\.mvm\.test - /);
      assert.equal(
        bundle.verificationMaterial.timestampVerificationData.rfc3161Timestamps.length,
        1,
      );

      const r = await verify(bundle, { json: true });
      assert.equal(r.code, 0, r.stderr + r.stdout);
      const out = JSON.parse(r.stdout);
      assert.equal(out.signer.identity, IDENTITY);
      assert.equal(out.artifactSha256, SHA256);
      assert.equal(out.tlog.logUrl, 'https://log2025-1.rekor.mvm.test');
      assert.equal(out.tlog.integratedTime, null);
      // The TSA stamped at the default log time, one second after the certificate was issued.
      assert.deepEqual(out.signedTime, {
        source: 'timestamp-authority',
        time: new Date(pki.start.getTime() + 2000).toISOString(),
      });
    });
  }

  it('a key-signed message signature (the logged verifier is the key)', async () => {
    const keys = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const bundle = await blob({ key: keys });
    const keyPath = join(dir, 'cosign.pub');
    writeFileSync(keyPath, keys.publicKey.export({ format: 'pem', type: 'spki' }));
    const r = await runCli([
      'verify-blob',
      '--trusted-root',
      rootPath,
      '--bundle',
      (writeFileSync(join(dir, 'key.json'), JSON.stringify(bundle)), join(dir, 'key.json')),
      '--key',
      keyPath,
      '--json',
      artifactPath,
    ]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.equal(JSON.parse(r.stdout).signedTime.source, 'timestamp-authority');
  });

  it('a log key with an end date, the TSA time inside its validity', async () => {
    const root = pki.trustedRoot({ v2LogEnd: new Date(pki.start.getTime() + 60_000) });
    const bundle = await blob({});
    const v = verifyInProcess(bundle, root);
    assert.equal(v.signedTime?.source, 'timestamp-authority');
    const r = await verify(bundle, { root: pki.writeTrustedRoot(join(dir, 'end-ok'), root) });
    assert.equal(r.code, 0, r.stderr);
  });

  it('a Rekor v1 entry reports its signed entry timestamp as the signed time', async () => {
    const v = verifyInProcess(await pki.signBlob(ARTIFACT));
    assert.equal(v.signedTime?.source, 'signed-entry-timestamp');
    assert.equal(v.signedTime?.time, v.tlog.integratedTime);
  });
});

describe('Rekor v2: every binding of the logged entry is checked', () => {
  for (const [kind, make] of [
    ['message signature', blob],
    ['DSSE', attestation],
  ] as const) {
    it(`${kind}: the logged signature is another (equally valid) one`, async () =>
      assertRefused(
        await make({ tamper: { otherSignature: true } }),
        'tlog-entry',
        kind === 'DSSE'
          ? /signature logged in the hashedrekord 0\.0\.2 entry is not the envelope's signature/
          : /signature logged in the hashedrekord 0\.0\.2 entry is not the bundle's signature/,
      ));

    it(`${kind}: the logged certificate is another one for the same key`, async () =>
      assertRefused(
        await make({ tamper: { otherCertificate: true } }),
        'tlog-entry',
        /certificate logged in the hashedrekord 0\.0\.2 entry is not the bundle's signing certificate/,
      ));
  }

  it('message signature: the logged digest is of other bytes', async () =>
    assertRefused(
      await blob({ tamper: { loggedDigest: 'other' } }),
      'tlog-entry',
      /digest logged in the hashedrekord 0\.0\.2 entry is not the bundle's message digest/,
    ));

  it('DSSE: the logged digest is of the payload, not of the PAE', async () =>
    assertRefused(
      await attestation({ tamper: { loggedDigest: 'payload' } }),
      'tlog-entry',
      /digest logged in the hashedrekord 0\.0\.2 entry is not the SHA-256 of the DSSE envelope's PAE/,
    ));

  it('DSSE: two envelope signatures', async () => {
    const bundle = await attestation({ tamper: { twoEnvelopeSignatures: true } });
    const r = await verify(bundle);
    assert.equal(r.code, 10, r.stderr);
    assert.match(r.stderr, /check: signature\n/);
    assert.match(r.stderr.split('\n')[0]!, /DSSE envelope carries 2 signatures; exactly one/);
    assert.throws(
      () => parseBundle(Buffer.from(JSON.stringify(bundle))),
      (e: unknown) => e instanceof MvmError && e.check === 'signature',
    );
  });

  it('DSSE: logged as hashedrekord 0.0.1 (over the PAE, which @sigstore/verify 4.1 would accept)', async () =>
    assertRefused(
      await attestation({ tamper: { hashedrekordVersion: '0.0.1' } }),
      'tlog-entry',
      /DSSE bundle logged as a hashedrekord 0\.0\.1 entry is refused/,
    ));

  it('message signature: hashedrekord 0.0.1 with another certificate logged', async () =>
    assertRefused(
      await pki.signBlob(ARTIFACT, { tamper: { otherCertificate: true } }),
      'tlog-entry',
      /certificate logged in the hashedrekord 0\.0\.1 entry is not the bundle's signing certificate/,
    ));

  it('key-signed: the logged key is another key', async () => {
    const keys = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const bundle = await blob({ key: keys });
    // Re-sign under the operator's key claim with another key pinned: the logged key is not it.
    const other = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    assert.throws(
      () =>
        verifyArtifact(
          ARTIFACT,
          parseBundle(Buffer.from(JSON.stringify(bundle))),
          parseTrustedRoot(Buffer.from(JSON.stringify(pki.trustedRoot())), 'test'),
          {
            kind: 'key',
            publicKeyPem: other.publicKey.export({ format: 'pem', type: 'spki' }) as string,
          },
        ),
      (e: unknown) =>
        e instanceof MvmError &&
        e.check === 'tlog-entry' &&
        /public key logged in the hashedrekord 0\.0\.2 entry is not the verification key/.test(
          e.message,
        ),
    );
  });
});

describe('Rekor v2: the time that counts is the verified TSA time', () => {
  it('the TSA time is after the end of the log key', async () => {
    const end = new Date(pki.start.getTime() + 60_000);
    await assertRefused(
      await blob({ tsaTime: new Date(pki.start.getTime() + 120_000) }),
      'timestamp',
      /timestamp authority's time .* is outside the validity of the key of https:\/\/log2025-1\.rekor\.mvm\.test/,
      pki.trustedRoot({ v2LogEnd: end }),
    );
  });

  it('no TSA timestamp from a log whose key has an end date', async () =>
    assertRefused(
      await blob({ tsaTime: null }),
      'timestamp',
      /without a signed entry timestamp from https:\/\/log2025-1\.rekor\.mvm\.test, whose key has an end date, needs an RFC 3161 timestamp/,
      pki.trustedRoot({ v2LogEnd: new Date(pki.start.getTime() + 86_400_000) }),
    ));

  it('no TSA timestamp from an open-ended log: no verified time at all', async () => {
    const r = await verify(await attestation({ tsaTime: null }));
    assert.equal(r.code, 10, r.stderr);
    assert.match(r.stderr, /check: timestamp\n/);
  });

  it('a TSA timestamp the trusted root does not vouch for', async () => {
    const root = pki.trustedRoot() as Json;
    root.timestampAuthorities = [];
    await assertRefused(await blob({}), 'timestamp', /timestamp could not be verified/, root);
  });

  it('a TSA timestamp over another signature', async () => {
    const bundle = await blob({});
    const other = await blob({});
    bundle.verificationMaterial.timestampVerificationData =
      other.verificationMaterial.timestampVerificationData;
    await assertRefused(bundle, 'timestamp', /timestamp could not be verified/);
  });

  it('a TSA time after the certificate expired', async () => {
    const r = await verify(await blob({ tsaTime: new Date(pki.start.getTime() + 3600_000) }));
    assert.equal(r.code, 10, r.stderr);
    assert.match(r.stderr, /check: certificate-validity\n/);
  });
});
