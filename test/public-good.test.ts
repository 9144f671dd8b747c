/**
 * Real bundles from the public-good Sigstore instance (Fulcio + Rekor), verified
 * offline against the embedded production trusted root. Provenance of every
 * fixture: test/fixtures/public-good/SOURCE.md.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { EMBEDDED_TRUSTED_ROOT_PATH } from '../src/index.js';
import { runCli } from './support/cli.js';

const FIX = new URL('./fixtures/public-good/', import.meta.url).pathname;
const ARTIFACT = join(FIX, 'artifact-a.txt');
const SIGNER = [
  '--certificate-identity',
  'appu@google.com',
  '--certificate-oidc-issuer',
  'https://accounts.google.com',
];
const tmp = mkdtempSync(join(tmpdir(), 'mvm-pg-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

describe('public-good bundles verify offline against the embedded root', () => {
  for (const [name, format] of [
    ['artifact-a.v03.sigstore.json', 'v0.3'],
    ['artifact-a.v01.sigstore.json', 'v0.1'],
  ] as const) {
    it(`${format}: ${name}`, async () => {
      const r = await runCli([
        'verify-blob',
        '--bundle',
        join(FIX, name),
        ...SIGNER,
        '--json',
        ARTIFACT,
      ]);
      assert.equal(r.code, 0, r.stderr + r.stdout);
      const out = JSON.parse(r.stdout);
      assert.equal(out.bundleFormat, format);
      assert.equal(out.signer.identity, 'appu@google.com');
      assert.equal(out.signer.issuer, 'https://accounts.google.com');
      assert.equal(out.tlog.logIndex, '41958702');
      assert.equal(out.tlog.integratedTime, '2023-10-11T14:28:04.000Z');
      assert.equal(out.tlog.logUrl, 'https://rekor.sigstore.dev');
      assert.equal(out.trustedRoot.source, 'embedded');
    });
  }

  it('fails for a one-byte change of the real artifact', async () => {
    const bytes = readFileSync(ARTIFACT);
    bytes[0]! ^= 0x20;
    const path = join(tmp, 'a.txt');
    writeFileSync(path, bytes);
    const r = await runCli([
      'verify-blob',
      '--bundle',
      join(FIX, 'artifact-a.v03.sigstore.json'),
      ...SIGNER,
      path,
    ]);
    assert.equal(r.code, 10);
    assert.match(r.stderr, /check: artifact-digest/);
  });

  it('fails for a near-miss identity (suffix) and an unanchored-looking pattern', async () => {
    const bundle = join(FIX, 'artifact-a.v03.sigstore.json');
    for (const flags of [
      ['--certificate-identity', 'appu@google.co'],
      ['--certificate-identity-regexp', 'appu@google'],
      ['--certificate-identity-regexp', 'ppu@google.com'],
    ]) {
      const r = await runCli([
        'verify-blob',
        '--bundle',
        bundle,
        ...flags,
        '--certificate-oidc-issuer',
        'https://accounts.google.com',
        ARTIFACT,
      ]);
      assert.equal(r.code, 10, flags.join(' '));
      assert.match(r.stderr, /check: identity/);
    }
  });

  it('fails when the checkpoint of the real v0.3 bundle is removed (no crash)', async () => {
    const b = JSON.parse(readFileSync(join(FIX, 'artifact-a.v03.sigstore.json'), 'utf8'));
    delete b.verificationMaterial.tlogEntries[0].inclusionProof.checkpoint;
    const path = join(tmp, 'nocheckpoint.json');
    writeFileSync(path, JSON.stringify(b));
    const r = await runCli(['verify-blob', '--bundle', path, ...SIGNER, ARTIFACT]);
    assert.equal(r.code, 10);
    assert.doesNotMatch(r.stderr, /TypeError|\n\s+at /);
  });
});

describe('public-good Rekor v2 bundle (hashedrekord 0.0.2, Ed25519 checkpoint, TSA time)', () => {
  const BUNDLE = join(FIX, 'rekor-v2-test.sigstore.json');
  const SUBJECT = join(FIX, 'rekor-v2-test-subject.json');
  const IDENTITY =
    'https://github.com/tkgsn/sigstore-public-good-instance-test/.github/workflows/rekor-v2.yml@refs/heads/main';
  const V2_SIGNER = [
    '--certificate-identity',
    IDENTITY,
    '--certificate-oidc-issuer',
    'https://token.actions.githubusercontent.com',
  ];

  it('verifies offline with the right identity, and reports the TSA time', async () => {
    const r = await runCli(['verify-blob', '--bundle', BUNDLE, ...V2_SIGNER, '--json', SUBJECT]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const out = JSON.parse(r.stdout);
    assert.equal(out.bundleFormat, 'v0.3');
    assert.equal(out.signer.identity, IDENTITY);
    assert.equal(
      out.artifactSha256,
      '9d05b15b975c8f4cb829ab4c2bf272d6b09f9ed72fddfd8866d08c78970873d5',
    );
    assert.equal(out.tlog.logIndex, '40335848');
    assert.equal(out.tlog.logUrl, 'https://log2025-1.rekor.sigstore.dev');
    // Rekor v2 signs no entry timestamp: the time is the TSA's (timestamp.sigstore.dev).
    assert.equal(out.tlog.integratedTime, null);
    assert.deepEqual(out.signedTime, {
      source: 'timestamp-authority',
      time: '2026-07-26T01:42:18.000Z',
    });
    assert.equal(out.trustedRoot.source, 'embedded');
  });

  it('fails with a wrong identity', async () => {
    const r = await runCli([
      'verify-blob',
      '--bundle',
      BUNDLE,
      '--certificate-identity',
      IDENTITY.replace('refs/heads/main', 'refs/heads/evil'),
      '--certificate-oidc-issuer',
      'https://token.actions.githubusercontent.com',
      SUBJECT,
    ]);
    assert.equal(r.code, 10);
    assert.match(r.stderr, /check: identity\n/);
  });

  it('fails for a one-byte change of the subject', async () => {
    const bytes = readFileSync(SUBJECT);
    bytes[10]! ^= 0x01;
    const path = join(tmp, 'subject.json');
    writeFileSync(path, bytes);
    const r = await runCli(['verify-blob', '--bundle', BUNDLE, ...V2_SIGNER, path]);
    assert.equal(r.code, 10);
    assert.match(r.stderr, /check: artifact-digest\n/);
  });

  it('fails when the RFC 3161 timestamp is removed (no verified time)', async () => {
    const b = JSON.parse(readFileSync(BUNDLE, 'utf8'));
    b.verificationMaterial.timestampVerificationData.rfc3161Timestamps = [];
    const path = join(tmp, 'no-tsa.json');
    writeFileSync(path, JSON.stringify(b));
    const r = await runCli(['verify-blob', '--bundle', path, ...V2_SIGNER, SUBJECT]);
    assert.equal(r.code, 10);
    assert.match(r.stderr, /check: timestamp\n/);
  });

  it("fails when the log shard's key ended before the TSA time", async () => {
    const root = JSON.parse(readFileSync(EMBEDDED_TRUSTED_ROOT_PATH, 'utf8'));
    const shard = root.tlogs.find(
      (t: { baseUrl: string }) => t.baseUrl === 'https://log2025-1.rekor.sigstore.dev',
    );
    shard.publicKey.validFor.end = '2026-07-01T00:00:00Z';
    const rootPath = join(tmp, 'ended-root.json');
    writeFileSync(rootPath, JSON.stringify(root));
    const r = await runCli([
      'verify-blob',
      '--trusted-root',
      rootPath,
      '--bundle',
      BUNDLE,
      ...V2_SIGNER,
      SUBJECT,
    ]);
    assert.equal(r.code, 10);
    assert.match(r.stderr, /check: timestamp\n/);
    assert.match(r.stderr, /2026-07-26T01:42:18\.000Z is outside the validity of the key/);
  });
});
