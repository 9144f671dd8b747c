/**
 * The real public-good metadata, offline: the TUF root.json mvmctl embeds
 * (assets/tuf-root.json) is the one @sigstore/tuf ships in seeds.json, byte
 * for byte, and it verifies by its own root keys (3 of 5 ECDSA P-256
 * signatures) in tuf-js; the trusted_root.json target shipped beside it is
 * the embedded trusted root. No network: everything is a file of the package.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';
import { Metadata, MetadataKind } from '@tufjs/models';
import {
  EMBEDDED_TRUSTED_ROOT_PATH,
  EMBEDDED_TUF_ROOT_PATH,
  embeddedTufRootBytes,
} from '../src/trust/trusted-root.js';

const require = createRequire(import.meta.url);
const seeds = require('@sigstore/tuf/seeds.json') as Record<
  string,
  { 'root.json': string; targets: Record<string, string> }
>;
const seed = seeds['https://tuf-repo-cdn.sigstore.dev']!;
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Pinned: a change of the embedded anchor is a reviewed change of this test too. */
const TUF_ROOT_SHA256 = '27aea7e372aa7864065174f0661784fcf8b0e28b1dbfebeada31a0f1fb19167f';

describe('the public-good TUF root', () => {
  it('is embedded byte for byte as seeds.json ships it, pinned by SHA-256', () => {
    const embedded = readFileSync(EMBEDDED_TUF_ROOT_PATH);
    assert.equal(sha256(embedded), TUF_ROOT_SHA256);
    assert.deepEqual(embedded, Buffer.from(seed['root.json'], 'base64'));
    assert.deepEqual(embeddedTufRootBytes(), embedded);
  });

  it('verifies by its own root keys in tuf-js: version 16, threshold 3 of 5, consistent snapshots', () => {
    const root = Metadata.fromJSON(
      MetadataKind.Root,
      JSON.parse(readFileSync(EMBEDDED_TUF_ROOT_PATH, 'utf8')),
    );
    root.verifyDelegate(MetadataKind.Root, root);
    assert.equal(root.signed.version, 16);
    assert.equal(root.signed.roles['root']!.threshold, 3);
    assert.equal(root.signed.roles['root']!.keyIDs.length, 5);
    assert.equal(root.signed.consistentSnapshot, true);
  });

  it('does not verify with three of its five signatures damaged (2 of 3 required)', () => {
    const json = JSON.parse(readFileSync(EMBEDDED_TUF_ROOT_PATH, 'utf8'));
    for (const s of json.signatures.slice(0, 3))
      s.sig = s.sig.replace(/.$/, (c: string) => (c === '0' ? '1' : '0'));
    const root = Metadata.fromJSON(MetadataKind.Root, json);
    assert.throws(
      () => root.verifyDelegate(MetadataKind.Root, root),
      /root was signed by 2\/3 keys/,
    );
  });

  it('its trusted_root.json target is the embedded trusted root', () => {
    const target = Buffer.from(seed.targets['trusted_root.json']!, 'base64');
    assert.deepEqual(readFileSync(EMBEDDED_TRUSTED_ROOT_PATH), target);
  });
});
