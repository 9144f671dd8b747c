/**
 * Compatibility with the real producer (issue 11): upstream writes manifests
 * with `jq` in scripts/generate-image-manifest.sh, and its serde parser
 * ignores fields it does not know. A signed schema-1 manifest that adds a
 * field must install here too; the fields are kept, shown and recorded, never
 * acted on. An unknown schema_version and every malformed known field still
 * fail closed (exit 15).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseManifest, unknownFieldsOf } from '../src/core/manifest.js';
import { MvmError } from '../src/errors.js';
import { HOST_ARCH, importArgs, testHost, VERSION, type TestHost } from './support/host.js';
import { releaseIdentity, TestPki } from './support/pki.js';
import { REPO } from './support/release.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const sha = (b: Uint8Array | string) => createHash('sha256').update(b).digest('hex');
const FIXTURE = new URL(
  './fixtures/upstream-manifest/dev-image-x86_64.manifest.json',
  import.meta.url,
);

/** `date -u +%Y-%m-%dT%H:%M:%SZ`. */
const jqDate = (d: Date) => d.toISOString().replace(/\.\d+Z$/, 'Z');

interface ProducerInputs {
  version: string;
  arch: string;
  kernelSha: string;
  rootfsSha: string;
  storePath: string;
  gitSha: string;
  /** Paths of the flake.lock files and their SHA-256, as `find ... | sort` lists them. */
  flakeLocks: [string, string][];
  builtAt: Date;
  notAfterDays?: number;
}

/**
 * The object scripts/generate-image-manifest.sh builds, in its field order,
 * and the bytes jq prints for it (two-space indentation, a final newline).
 */
function producerManifest(i: ProducerInputs): Record<string, unknown> {
  return {
    schema_version: 1,
    version: i.version,
    arch: i.arch,
    variant: 'dev',
    rootfs_format: 'ext4',
    artifacts: [
      { name: `dev-vmlinux-${i.arch}`, sha256: i.kernelSha },
      { name: `dev-rootfs-${i.arch}.ext4`, sha256: i.rootfsSha },
    ],
    // basename "${STORE_PATH}" | cut -d- -f1
    nix_store_hash: i.storePath.split('/').at(-1)!.split('-')[0],
    source_git_sha: i.gitSha,
    flake_locks: Object.fromEntries(i.flakeLocks.map(([p, h]) => [p, `sha256:${h}`])),
    addressed_advisories: [],
    built_at: jqDate(i.builtAt),
    not_after: jqDate(new Date(i.builtAt.getTime() + (i.notAfterDays ?? 90) * 86_400_000)),
  };
}
const jqBytes = (o: unknown) => Buffer.from(`${JSON.stringify(o, null, 2)}\n`);

describe('the producer format', () => {
  it("the generator here writes exactly jq's bytes (the fixture made by upstream's jq program)", () => {
    const fixture = readFileSync(FIXTURE);
    const ours = jqBytes(
      producerManifest({
        version: '0.14.0',
        arch: 'x86_64',
        kernelSha: sha('kernel'),
        rootfsSha: sha('rootfs'),
        storePath: '/nix/store/0a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p-mvm-dev',
        gitSha: '0123456789abcdef0123456789abcdef01234567',
        flakeLocks: [
          'flake.lock',
          'nix/images/builder/flake.lock',
          'nix/images/dev/flake.lock',
        ].map((p) => [p, sha(p)]),
        builtAt: new Date('2026-05-01T12:00:00Z'),
      }),
    );
    assert.equal(ours.toString(), fixture.toString());
    // And the parser reads it as it is.
    const m = parseManifest(fixture);
    assert.equal(m.nixStoreHash, '0a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p');
    assert.equal(Object.keys(m.flakeLocks).length, 3);
    assert.deepEqual(m.unknownFields, {});
  });

  it('a producer run with no flake.lock at all (`add // {}`) parses', () => {
    const m = parseManifest(
      jqBytes({
        ...producerManifest({
          version: '0.14.0',
          arch: 'x86_64',
          kernelSha: sha('k'),
          rootfsSha: sha('r'),
          storePath: '/nix/store/abc-x',
          gitSha: 'deadbeef',
          flakeLocks: [],
          builtAt: new Date('2026-05-01T12:00:00Z'),
        }),
      }),
    );
    assert.deepEqual(m.flakeLocks, {});
  });
});

describe('unknown fields of schema 1 (pure)', () => {
  const base = () =>
    producerManifest({
      version: '0.14.0',
      arch: 'x86_64',
      kernelSha: sha('k'),
      rootfsSha: sha('r'),
      storePath: '/nix/store/abc-x',
      gitSha: 'deadbeef',
      flakeLocks: [['flake.lock', sha('l')]],
      builtAt: new Date('2026-05-01T12:00:00Z'),
    });

  it('are kept as signed, top-level and per artifact, and change nothing known', () => {
    const o = base();
    o['sbom_sha256'] = sha('sbom');
    o['builder'] = { runner: 'ubuntu-24.04', nix: '2.24.0' };
    (o['artifacts'] as Record<string, unknown>[])[0]!['size'] = 4096;
    const m = parseManifest(jqBytes(o));
    // Signed values as parsed (objects without a prototype): compared as the JSON they are.
    const plainJson = (v: unknown): unknown => JSON.parse(JSON.stringify(v));
    assert.deepEqual(plainJson(m.unknownFields), {
      sbom_sha256: sha('sbom'),
      builder: { runner: 'ubuntu-24.04', nix: '2.24.0' },
    });
    assert.deepEqual(m.artifacts[0]!.unknownFields, { size: 4096 });
    assert.equal(m.artifacts[1]!.unknownFields, undefined);
    const plain = parseManifest(jqBytes(base()));
    assert.deepEqual(
      {
        ...m,
        unknownFields: {},
        artifacts: m.artifacts.map(({ name, sha256 }) => ({ name, sha256 })),
      },
      plain,
    );
    assert.deepEqual(plainJson(unknownFieldsOf(m)), {
      sbom_sha256: sha('sbom'),
      builder: { runner: 'ubuntu-24.04', nix: '2.24.0' },
      'artifacts[dev-vmlinux-x86_64].size': 4096,
    });
  });

  it('a "__proto__" field stays a plain field (no prototype is set from signed data)', () => {
    const text = jqBytes(base())
      .toString()
      .replace('{\n', '{\n  "__proto__": {"polluted": true},\n');
    const m = parseManifest(Buffer.from(text));
    assert.equal(Object.getPrototypeOf(m.unknownFields), Object.prototype);
    assert.ok(Object.hasOwn(m.unknownFields, '__proto__'));
    assert.equal(({} as Record<string, unknown>)['polluted'], undefined);
  });

  it('are recorded within bounds: a large value is replaced by a note, at most 64 fields', () => {
    const o = base();
    o['big'] = 'x'.repeat(5000);
    for (let i = 0; i < 70; i++) o[`f${i}`] = i;
    const recorded = unknownFieldsOf(parseManifest(jqBytes(o)));
    assert.deepEqual(recorded['big'], {
      omitted: '5002 characters of JSON; the installed manifest.json holds it',
    });
    assert.equal(Object.keys(recorded).length, 65);
    assert.equal(recorded['(more)'], '7 more unknown fields are in the installed manifest.json');
  });

  const refused: [string, (o: Json) => void, RegExp][] = [
    [
      'an unknown schema_version, with a new field',
      (o) => ((o.schema_version = 2), (o.x = 1)),
      /schema_version 2, newer/,
    ],
    [
      'a malformed known field beside a new one',
      (o) => ((o.x = 1), (o.built_at = '2026-05-01 12:00:00')),
      /built_at is not an RFC 3339/,
    ],
    [
      'a malformed artifact digest beside a new artifact field',
      (o) => ((o.artifacts[0].size = 1), (o.artifacts[0].sha256 = 'ab')),
      /64 hex/,
    ],
    [
      'a known field of the wrong type',
      (o) => ((o.extra = 1), (o.flake_locks = [])),
      /flake_locks is missing or not an object/,
    ],
  ];
  for (const [name, edit, wording] of refused) {
    it(`still refuses ${name}`, () => {
      const o = base();
      edit(o);
      assert.throws(
        () => parseManifest(jqBytes(o)),
        (e: unknown) => e instanceof MvmError && e.exitCode === 15 && wording.test(e.message),
      );
    });
  }
});

describe('signed manifests made the way the producer makes them, from the CLI', () => {
  let root: string;
  let pki: TestPki;
  let trustedRoot: string;
  let n = 0;
  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'mvm-compat-'));
    pki = await TestPki.create();
    trustedRoot = pki.writeTrustedRoot(root);
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  /** A release set whose manifest is the producer's, edited (a newer producer) before signing. */
  async function producerSet(name: string, edit: (o: Json) => void = () => {}) {
    const dir = join(root, name);
    mkdirSync(dir, { recursive: true });
    const kernel = Buffer.from(`kernel ${name} `.repeat(2048));
    const rootfs = Buffer.from(`rootfs ${name} `.repeat(8192));
    const o = producerManifest({
      version: VERSION,
      arch: HOST_ARCH,
      kernelSha: sha(kernel),
      rootfsSha: sha(rootfs),
      storePath: '/nix/store/0a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p-mvm-mvm-dev-dev',
      gitSha: '0123456789abcdef0123456789abcdef01234567',
      flakeLocks: [
        ['flake.lock', sha('root lock')],
        ['nix/images/dev/flake.lock', sha('dev lock')],
      ],
      builtAt: new Date(Date.now() - 3_600_000),
    });
    edit(o);
    const bytes = jqBytes(o);
    const set = {
      manifest: join(dir, `dev-image-${HOST_ARCH}.manifest.json`),
      bundle: join(dir, `dev-image-${HOST_ARCH}.manifest.json.bundle`),
      vmlinux: join(dir, `dev-vmlinux-${HOST_ARCH}`),
      rootfs: join(dir, `dev-rootfs-${HOST_ARCH}.ext4`),
    };
    writeFileSync(set.manifest, bytes);
    writeFileSync(
      set.bundle,
      JSON.stringify(await pki.signBlob(bytes, { identity: releaseIdentity(REPO, `v${VERSION}`) })),
    );
    writeFileSync(set.vmlinux, kernel);
    writeFileSync(set.rootfs, rootfs);
    return set;
  }
  const host = (): TestHost => testHost(join(root, `host${n++}`), trustedRoot);
  const receiptOf = (h: TestHost) =>
    JSON.parse(readFileSync(join(h.prebuilt, `v${VERSION}`, 'receipt.json'), 'utf8'));
  const installed = (h: TestHost) => {
    try {
      return readdirSync(h.prebuilt).filter((f) => f.startsWith('v'));
    } catch {
      return [];
    }
  };

  it("the producer's manifest installs, and its receipt records no unknown fields", async () => {
    const h = host();
    const r = await h.run(importArgs(await producerSet('plain')));
    assert.equal(r.code, 0, r.stderr);
    assert.equal(receiptOf(h).manifestUnknownFields, undefined);
  });

  it('a newer producer adding a top-level and an artifact field installs; status and the receipt show them', async () => {
    const h = host();
    const set = await producerSet('newer', (o) => {
      o.sbom_sha256 = sha('sbom');
      o.artifacts[1].size_bytes = 131072;
    });
    const r = await h.run(importArgs(set));
    assert.equal(r.code, 0, r.stderr);
    const expected = {
      sbom_sha256: sha('sbom'),
      [`artifacts[dev-rootfs-${HOST_ARCH}.ext4].size_bytes`]: 131072,
    };
    assert.deepEqual(receiptOf(h).manifestUnknownFields, expected);
    // The installed manifest is the signed one, unknown fields and all.
    assert.deepEqual(
      readFileSync(join(h.prebuilt, `v${VERSION}`, 'manifest.json')),
      readFileSync(set.manifest),
    );
    const human = await h.run(['status']);
    assert.equal(human.code, 0, human.stderr);
    assert.match(
      human.stdout,
      /manifest fields this mvmctl does not know \(signed; recorded, not acted on\):/,
    );
    assert.match(human.stdout, new RegExp(`sbom_sha256 = "${sha('sbom')}"`));
    assert.match(human.stdout, /artifacts\[dev-rootfs-.*\.ext4\]\.size_bytes = 131072/);
    const json = JSON.parse((await h.run(['status', '--json'])).stdout);
    assert.deepEqual(json.images[0].receipt.manifestUnknownFields, expected);
    assert.equal((await h.metrics())['dev_image_verify_manifest_invalid_total'], 0);
  });

  it('an unknown schema_version, signed, still fails closed (exit 15, counted, nothing installed)', async () => {
    const h = host();
    const set = await producerSet('schema2', (o) => {
      o.schema_version = 2;
      o.sbom_sha256 = sha('sbom');
    });
    const r = await h.run(importArgs(set));
    assert.equal(r.code, 15, r.stderr);
    assert.match(
      r.stderr,
      /^Error: The manifest uses schema_version 2, newer than this mvmctl reads \(1\)/m,
    );
    assert.deepEqual(installed(h), []);
    assert.equal((await h.metrics())['dev_image_verify_manifest_invalid_total'], 1);
  });

  it('a malformed known field beside a new one, signed, still fails closed (exit 15)', async () => {
    const h = host();
    const set = await producerSet('malformed', (o) => {
      o.sbom_sha256 = sha('sbom');
      o.not_after = 'in ninety days';
    });
    const r = await h.run(importArgs(set));
    assert.equal(r.code, 15, r.stderr);
    assert.match(r.stderr, /not_after is not an RFC 3339 UTC time/);
    assert.deepEqual(installed(h), []);
  });
});
