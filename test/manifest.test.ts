/** The pure core the import pipeline (issue 3) stands on: manifest schema, release identity, revocations. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  artifactFor,
  artifactName,
  hostArch,
  listedArtifact,
  parseManifest,
  sameDigest,
} from '../src/core/manifest.js';
import { checkSigner } from '../src/core/policy.js';
import {
  releasePolicy,
  releaseRepo,
  releaseTagVersion,
  revocationsPolicy,
} from '../src/core/release.js';
import {
  cacheAge,
  droppedEntries,
  findRecall,
  parseRevocationList,
} from '../src/core/revocation.js';
import { MvmError } from '../src/errors.js';

const H = (c: string) => c.repeat(64);
const goodManifest = (): Record<string, unknown> => ({
  schema_version: 1,
  version: '0.14.0',
  arch: 'x86_64',
  variant: 'dev',
  rootfs_format: 'ext4',
  artifacts: [
    { name: 'dev-rootfs-x86_64.ext4', sha256: H('B') },
    { name: 'dev-vmlinux-x86_64', sha256: H('a') },
  ],
  nix_store_hash: 'abc',
  source_git_sha: 'def',
  flake_locks: { 'flake.lock': `sha256:${H('c')}` },
  built_at: '2026-11-01T00:00:00Z',
  not_after: '2027-01-30T00:00:00Z',
});
const bytes = (o: unknown) => Buffer.from(typeof o === 'string' ? o : JSON.stringify(o));
const manifestError = (o: unknown, cause: RegExp) =>
  assert.throws(
    () => parseManifest(bytes(o)),
    (e: unknown) =>
      e instanceof MvmError && e.code === 'manifest' && e.exitCode === 15 && cause.test(e.message),
  );
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const edit = (f: (m: Json) => void) => {
  const m = goodManifest();
  f(m);
  return m;
};

describe('manifest schema v1', () => {
  it('parses a valid manifest; artifacts by name, not position; digests lower-cased', () => {
    const m = parseManifest(bytes(goodManifest()));
    assert.equal(m.version, '0.14.0');
    assert.equal(artifactFor(m, 'kernel').sha256, H('a'));
    assert.equal(artifactFor(m, 'rootfs').sha256, H('b'));
    assert.deepEqual(m.addressedAdvisories, []);
    assert.ok(sameDigest(H('B'), H('b')));
  });

  const corpus: [string, unknown, RegExp][] = [
    ['truncated', JSON.stringify(goodManifest()).slice(0, 50), /not valid JSON/],
    ['not an object', '[]', /not a JSON object/],
    [
      'a newer schema',
      edit((m) => (m.schema_version = 2)),
      /schema_version 2, newer than this mvmctl reads/,
    ],
    ['schema as a string', edit((m) => (m.schema_version = '1')), /schema_version/],
    [
      'a missing artifact entry',
      edit((m) => m.artifacts.pop()),
      /missing artifact entry dev-vmlinux-x86_64/,
    ],
    [
      'an artifact of the other arch only',
      edit((m) => (m.artifacts[1].name = 'dev-vmlinux-aarch64')),
      /missing artifact entry/,
    ],
    ['a short digest', edit((m) => (m.artifacts[0].sha256 = 'ab')), /64 hex/],
    ['a non-hex digest', edit((m) => (m.artifacts[0].sha256 = 'z'.repeat(64))), /64 hex/],
    ['a leading v', edit((m) => (m.version = 'v0.14.0')), /not strict semver/],
    ['a path in the version', edit((m) => (m.version = '../../etc')), /not strict semver/],
    ['a version with a slash', edit((m) => (m.version = '0.14.0/../x')), /not strict semver/],
    [
      'a path in an artifact name',
      edit((m) => (m.artifacts[0].name = '../dev-rootfs-x86_64.ext4')),
      /not a plain file name/,
    ],
    ['a dot name', edit((m) => (m.artifacts[0].name = '..')), /not a plain file name/],
    ['an unknown arch', edit((m) => (m.arch = 'riscv64')), /arch must be one of/],
    ['a duplicate artifact', edit((m) => m.artifacts.push(m.artifacts[0])), /listed twice/],
    // Unknown fields of schema 1 are accepted since issue 11 (upstream's parser ignores them):
    // test/manifest-compat.test.ts. A malformed known field still fails with one beside it.
    [
      'a malformed known field beside an unknown one',
      edit((m) => {
        m.extra = 1;
        m.arch = 'riscv64';
      }),
      /arch must be one of/,
    ],
    ['a non-UTC time', edit((m) => (m.built_at = '2026-11-01T00:00:00+02:00')), /RFC 3339 UTC/],
    [
      'not_after before built_at',
      edit((m) => (m.not_after = '2026-10-01T00:00:00Z')),
      /not after built_at/,
    ],
    ['a bad flake lock', edit((m) => (m.flake_locks = { x: 'md5:00' })), /flake_locks/],
    ['wrong types', edit((m) => (m.artifacts = 'dev-vmlinux')), /artifacts/],
    ['duplicate keys', '{"schema_version":1,"schema_version":1}', /duplicate key/],
    ['deep nesting', '{"a":' + '['.repeat(10_000), /nested deeper/],
    ['huge string', edit((m) => (m.nix_store_hash = 'x'.repeat(100_000))), /too long/],
  ];
  for (const [name, input, cause] of corpus)
    it(`refuses ${name}`, () => manifestError(input, cause));

  it('random bytes never crash the parser (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1024 }), (b) => {
        try {
          parseManifest(b);
          return false;
        } catch (e) {
          return e instanceof MvmError && e.code === 'manifest';
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('random edits of a valid manifest never crash the parser (property)', () => {
    const keys = Object.keys(goodManifest());
    fc.assert(
      fc.property(fc.constantFrom(...keys), fc.jsonValue({ maxDepth: 3 }), (key, value) => {
        try {
          parseManifest(bytes({ ...goodManifest(), [key]: value }));
          return true;
        } catch (e) {
          return e instanceof MvmError && e.code === 'manifest';
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('an initrd is optional: listed, it is found by its name ({variant}-initrd-{arch}); absent, it is no part of the set', () => {
    assert.equal(
      artifactName({ variant: 'builder', arch: 'aarch64', rootfsFormat: 'ext4' }, 'initrd'),
      'builder-initrd-aarch64',
    );
    const four = parseManifest(bytes(goodManifest()));
    assert.equal(listedArtifact(four, 'initrd'), undefined);
    assert.throws(
      () => artifactFor(four, 'initrd'),
      (e: unknown) =>
        e instanceof MvmError && /missing artifact entry dev-initrd-x86_64/.test(e.message),
    );
    const five = parseManifest(
      bytes(edit((m) => m.artifacts.unshift({ name: 'dev-initrd-x86_64', sha256: H('D') }))),
    );
    assert.equal(listedArtifact(five, 'initrd')?.sha256, H('d'));
    assert.equal(artifactFor(five, 'kernel').sha256, H('a'));
    // Another arch's initrd is not this set's.
    const other = parseManifest(
      bytes(edit((m) => m.artifacts.push({ name: 'dev-initrd-aarch64', sha256: H('e') }))),
    );
    assert.equal(listedArtifact(other, 'initrd'), undefined);
  });

  it('maps Node arch names', () => {
    assert.equal(hostArch('x64'), 'x86_64');
    assert.equal(hostArch('arm64'), 'aarch64');
    assert.equal(hostArch('ia32'), undefined);
  });
});

describe('release identity', () => {
  const repo = 'tinylabscom/mvm';
  const id = (tag: string, r = repo) =>
    `https://github.com/${r}/.github/workflows/release.yml@refs/tags/${tag}`;
  const signer = (identity: string) => ({
    identity,
    issuer: 'https://token.actions.githubusercontent.com',
  });
  const refused = (identity: string) =>
    assert.throws(
      () => checkSigner(releasePolicy(repo), signer(identity)),
      (e: unknown) => e instanceof MvmError && e.check === 'identity',
      identity,
    );

  it('accepts the release workflow at a semver tag, and reads the tag back', () => {
    checkSigner(releasePolicy(repo), signer(id('v0.14.0')));
    checkSigner(releasePolicy(repo), signer(id('v1.2.3-rc.1')));
    assert.equal(releaseTagVersion(id('v0.14.0'), repo), '0.14.0');
  });

  it('refuses other tags, branches, workflows, repositories and look-alikes', () => {
    refused(id('0.14.0'));
    refused(id('v0.14'));
    refused(id('v0.14.0/../main'));
    refused(`${id('v0.14.0')}x/`);
    refused(id('v0.14.0').replace('refs/tags', 'refs/heads'));
    refused(id('v0.14.0').replace('release.yml', 'revocations.yml'));
    refused(id('v0.14.0', 'tinylabscom/mvm-fork'));
    refused(id('v0.14.0').replace('github.com', 'githubXcom'));
    refused(`x${id('v0.14.0')}`);
  });

  it('validates MVM_RELEASE_REPO', () => {
    assert.equal(releaseRepo(undefined), 'tinylabscom/mvm');
    assert.equal(releaseRepo('org/repo.name'), 'org/repo.name');
    for (const bad of ['a', 'a/b/c', 'a/(b|c)', '../x', 'a/b\n']) {
      assert.throws(
        () => releaseRepo(bad),
        (e: unknown) => e instanceof MvmError && e.code === 'usage',
        bad,
      );
    }
  });

  it('revocation lists need the revocations workflow, exactly', () => {
    const ok = `https://github.com/${repo}/.github/workflows/revocations.yml@refs/tags/revocations`;
    checkSigner(revocationsPolicy(repo), signer(ok));
    assert.throws(() => checkSigner(revocationsPolicy(repo), signer(id('v0.14.0'))), MvmError);
  });
});

describe('revocation list', () => {
  const list = (entries: object[]) => bytes({ schema_version: 1, revocations: entries });
  const e = (version: string, arch = 'aarch64') => ({
    version,
    variant: 'dev',
    arch,
    reason: 'CVE-2026-1',
    revoked_at: '2026-11-01T00:00:00Z',
  });

  it('matches on version, variant and arch together', () => {
    const l = parseRevocationList(list([e('0.14.0')]));
    assert.equal(
      findRecall(l, { version: '0.14.0', variant: 'dev', arch: 'aarch64' })?.reason,
      'CVE-2026-1',
    );
    assert.equal(findRecall(l, { version: '0.14.0', variant: 'dev', arch: 'x86_64' }), undefined);
    assert.equal(
      findRecall(l, { version: '0.14.0', variant: 'builder', arch: 'aarch64' }),
      undefined,
    );
    assert.equal(findRecall(l, { version: '0.14.1', variant: 'dev', arch: 'aarch64' }), undefined);
  });

  it('detects a list that drops an entry (rollback)', () => {
    const cached = parseRevocationList(list([e('0.13.0'), e('0.14.0')]));
    assert.deepEqual(
      droppedEntries(cached, parseRevocationList(list([e('0.13.0'), e('0.14.0'), e('0.15.0')]))),
      [],
    );
    assert.deepEqual(
      droppedEntries(cached, parseRevocationList(list([e('0.13.0')]))).map((r) => r.version),
      ['0.14.0'],
    );
  });

  const listCorpus: [string, string | object, RegExp][] = [
    ['truncated', '{"schema_version":1,"revocations":[{"version":"0.14.0"', /not valid JSON/],
    ['an array', '[]', /not a JSON object/],
    ['a string schema', { schema_version: '1', revocations: [] }, /schema_version/],
    [
      'revocations as an object',
      { schema_version: 1, revocations: {} },
      /revocations is missing or not an array/,
    ],
    [
      'an entry that is a string',
      { schema_version: 1, revocations: ['0.14.0'] },
      /revocations\[0\] is not an object/,
    ],
    [
      'a numeric version',
      { schema_version: 1, revocations: [{ ...e('0.14.0'), version: 14 }] },
      /version is missing/,
    ],
    [
      'a path in the version',
      { schema_version: 1, revocations: [{ ...e('0.14.0'), version: '../../0.14.0' }] },
      /not strict semver/,
    ],
    [
      'a leading v',
      { schema_version: 1, revocations: [{ ...e('0.14.0'), version: 'v0.14.0' }] },
      /not strict semver/,
    ],
    [
      'a huge reason',
      { schema_version: 1, revocations: [{ ...e('0.14.0'), reason: 'x'.repeat(5000) }] },
      /reason is missing or not a string/,
    ],
    [
      'a bad time',
      { schema_version: 1, revocations: [{ ...e('0.14.0'), revoked_at: 'yesterday' }] },
      /revoked_at is not a time/,
    ],
    ['deep nesting', '{"schema_version":1,"revocations":' + '['.repeat(5000), /nested deeper/],
    [
      'duplicate keys',
      '{"schema_version":1,"revocations":[],"revocations":[]}',
      /duplicate key "revocations"/,
    ],
    ['a newer schema', { schema_version: 2, revocations: [] }, /newer than this mvmctl reads/],
  ];
  for (const [name, input, why] of listCorpus) {
    it(`refuses a list with ${name}`, () =>
      assert.throws(
        () => parseRevocationList(bytes(input)),
        (err: unknown) => err instanceof MvmError && why.test(err.message),
      ));
  }

  it('random bytes never crash the list parser (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1024 }), (b) => {
        try {
          parseRevocationList(b);
          return true;
        } catch (err) {
          return err instanceof MvmError;
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('fails closed on an unknown schema and malformed entries', () => {
    for (const bad of [
      bytes({ schema_version: 2, revocations: [] }),
      bytes({ schema_version: 1 }),
      list([{ ...e('0.14.0'), version: '../x' }]),
      list([{ ...e('0.14.0'), reason: 5 }]),
      bytes('{"schema_version":1,"revocations":[],"revocations":[]}'),
    ]) {
      assert.throws(() => parseRevocationList(bad), MvmError);
    }
  });

  it('applies the seed cache policy', () => {
    const h = 3600_000;
    assert.equal(cacheAge(23 * h), 'fresh');
    assert.equal(cacheAge(25 * h), 'tolerated');
    assert.equal(cacheAge(7 * 24 * h), 'tolerated');
    assert.equal(cacheAge(7 * 24 * h + 1), 'stale');
  });
});
