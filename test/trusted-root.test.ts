import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EMBEDDED_TRUSTED_ROOT_PATH, MvmError, parseTrustedRoot } from '../src/index.js';
import { runCli } from './support/cli.js';
import { GITHUB_ISSUER, releaseIdentity, TestPki } from './support/pki.js';

// Recorded in assets/TRUSTED_ROOT.md; a changed file must be a reviewed change.
const EMBEDDED_SHA256 = '6494e21ea73fa7ee769f85f57d5a3e6a08725eae1e38c755fc3517c9e6bc0b66';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
let good: Json;
let dir: string;
before(async () => {
  good = (await TestPki.create()).trustedRoot();
  dir = mkdtempSync(join(tmpdir(), 'mvm-root-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function rejects(edit: (r: Json) => void, why: RegExp): void {
  const root = structuredClone(good);
  edit(root);
  assert.throws(
    () => parseTrustedRoot(Buffer.from(JSON.stringify(root)), 'test-root.json'),
    (e: unknown) => e instanceof MvmError && e.code === 'trusted-root' && why.test(e.cause ?? ''),
  );
}

describe('trusted root', () => {
  it('the embedded root is the pinned public-good root and validates', () => {
    const bytes = readFileSync(EMBEDDED_TRUSTED_ROOT_PATH);
    assert.equal(createHash('sha256').update(bytes).digest('hex'), EMBEDDED_SHA256);
    const root = parseTrustedRoot(bytes, 'embedded');
    assert.ok(root.root.tlogs.some((t) => t.baseUrl === 'https://rekor.sigstore.dev'));
    assert.ok(root.root.certificateAuthorities.length >= 1);
  });

  it('a generated root validates', () => {
    assert.equal(
      parseTrustedRoot(Buffer.from(JSON.stringify(good)), 'x').mediaType,
      good.mediaType,
    );
  });

  it('rejects an unknown media type', () =>
    rejects((r) => (r.mediaType = 'application/json'), /unknown media type/));
  it('rejects a CA without a validity start', () =>
    rejects(
      (r) => delete r.certificateAuthorities[0].validFor.start,
      /certificateAuthorities\[0\] has no valid validFor\.start/,
    ));
  it('rejects a tlog key without a validity start', () =>
    rejects(
      (r) => delete r.tlogs[0].publicKey.validFor,
      /tlogs\[0\]\.publicKey has no valid validFor\.start/,
    ));
  it('rejects a CT log key without a validity start', () =>
    rejects((r) => (r.ctlogs[0].publicKey.validFor = {}), /ctlogs\[0\]/));
  it('rejects a key that does not parse', () =>
    rejects(
      (r) => (r.tlogs[0].publicKey.rawBytes = Buffer.from('garbage').toString('base64')),
      /does not parse/,
    ));
  it('rejects a CA certificate that does not parse', () =>
    rejects(
      (r) => (r.certificateAuthorities[0].certChain.certificates[0].rawBytes = 'AAAA'),
      /does not parse/,
    ));
  it('rejects a root with no transparency log', () =>
    rejects((r) => (r.tlogs = []), /no transparency log/));
  it('rejects a validity that ends before it starts', () =>
    rejects(
      (r) => (r.certificateAuthorities[0].validFor.end = '2000-01-01T00:00:00Z'),
      /ends before it starts/,
    ));
  it('rejects a log without a logId', () => rejects((r) => delete r.tlogs[0].logId, /no logId/));

  it('rejects a null validity start (null reads as absent)', () =>
    rejects(
      (r) => (r.tlogs[0].publicKey.validFor = { start: null, end: null }),
      /tlogs\[0\]\.publicKey has no valid validFor\.start/,
    ));
  it('rejects a null transparency-log list', () =>
    rejects((r) => (r.tlogs = null), /"tlogs" is missing or not an array/));
  it('rejects a null where an authority should be', () =>
    rejects((r) => (r.ctlogs = [null]), /ctlogs\[0\] is not an object/));
});

describe('trusted root: unset fields written as JSON null (proto3 JSON)', () => {
  /** Every optional field the generated root leaves out, written as null instead. */
  const withNulls = (r: Json): Json => {
    const root = structuredClone(r);
    for (const t of [...root.tlogs, ...root.ctlogs]) {
      t.publicKey.validFor.end = null;
      t.checkpointKeyId = null;
      t.operator = null;
    }
    for (const c of [...root.certificateAuthorities, ...root.timestampAuthorities]) {
      c.validFor.end = null;
      c.operator = null;
    }
    return root;
  };

  it('loads, and TrustedRoot.fromJSON sees the fields as unset', () => {
    const root = withNulls(good);
    const text = JSON.stringify(root);
    assert.match(text, /"end":null/, 'precondition: the root really holds nulls');
    const loaded = parseTrustedRoot(Buffer.from(text), 'nulls.json');
    assert.equal(loaded.root.tlogs.length, good.tlogs.length);
    for (const t of loaded.root.tlogs) assert.equal(t.publicKey?.validFor?.end, undefined);
    assert.equal(loaded.root.timestampAuthorities[0]?.validFor?.end, undefined);
    // The library reads an unset end as open-ended, not as the epoch.
    for (const t of loaded.material.tlogs) assert.ok(t.validFor.end.getTime() > Date.now());
  });

  it('loads with "timestampAuthorities": null and "ctlogs": null', () => {
    const root = withNulls(good);
    root.timestampAuthorities = null;
    root.ctlogs = null;
    const loaded = parseTrustedRoot(Buffer.from(JSON.stringify(root)), 'nulls.json');
    assert.deepEqual(loaded.root.timestampAuthorities, []);
    assert.deepEqual(loaded.root.ctlogs, []);
    assert.equal(loaded.material.ctlogs.length, 0);
  });

  it('a bundle verifies against a root written with nulls', async () => {
    const pki = await TestPki.create();
    const rootPath = pki.writeTrustedRoot(join(dir, 'nulls'), withNulls(pki.trustedRoot()));
    const artifact = join(dir, 'nulls-art');
    writeFileSync(artifact, 'hello');
    const bundle = join(dir, 'nulls.bundle');
    writeFileSync(
      bundle,
      JSON.stringify(await pki.signBlob(Buffer.from('hello'), { rekorV2: true })),
    );
    const r = await runCli([
      'verify-blob',
      '--trusted-root',
      rootPath,
      '--bundle',
      bundle,
      '--certificate-identity',
      releaseIdentity('tinylabscom/mvm', 'v0.14.0'),
      '--certificate-oidc-issuer',
      GITHUB_ISSUER,
      '--json',
      artifact,
    ]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.equal(JSON.parse(r.stdout).signedTime.source, 'timestamp-authority');
  });
});

describe('trusted root: CLI errors', () => {
  it('a bad --trusted-root is exit 3 with cause and fix, nothing verified', async () => {
    const path = join(dir, 'bad-root.json');
    const root = structuredClone(good);
    delete root.certificateAuthorities[0].validFor;
    writeFileSync(path, JSON.stringify(root));
    writeFileSync(join(dir, 'a'), 'a');
    writeFileSync(join(dir, 'b'), '{}');
    const r = await runCli([
      'verify-blob',
      '--trusted-root',
      path,
      '--bundle',
      join(dir, 'b'),
      '--key',
      join(dir, 'a'),
      join(dir, 'a'),
    ]);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /^Error: Trusted root .*bad-root\.json is not usable/);
    assert.match(r.stderr, /cause: certificateAuthorities\[0\] has no valid validFor\.start/);
    assert.match(r.stderr, /fix: +Point --trusted-root/);
  });

  it('a key the library decodes differently (PKCS#1 label on an EC key) is exit 3, not a crash', async () => {
    const pki = await TestPki.create();
    const root = pki.trustedRoot() as Json;
    root.tlogs[0].publicKey.keyDetails = 'PKIX_RSA_PKCS1V5';
    const rootPath = pki.writeTrustedRoot(join(dir, 'pkcs1'), root);
    const artifact = join(dir, 'art');
    writeFileSync(artifact, 'hello');
    const bundle = join(dir, 'pkcs1.bundle');
    writeFileSync(bundle, JSON.stringify(await pki.signBlob(Buffer.from('hello'))));
    const r = await runCli([
      'verify-blob',
      '--trusted-root',
      rootPath,
      '--bundle',
      bundle,
      '--certificate-identity',
      'x',
      '--certificate-oidc-issuer',
      'y',
      artifact,
    ]);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /^Error: Trusted root .* is not usable/);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  });

  it('a missing MVM_TRUSTED_ROOT file is exit 3', async () => {
    writeFileSync(join(dir, 'k'), 'k');
    const r = await runCli(['verify-blob', '--bundle', 'x', '--key', join(dir, 'k'), 'z'], {
      MVM_TRUSTED_ROOT: join(dir, 'nope.json'),
    });
    assert.equal(r.code, 3);
    assert.match(r.stderr, /trusted root .*nope\.json does not exist/);
  });
});
