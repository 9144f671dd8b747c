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
