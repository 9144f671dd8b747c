/**
 * `mvmctl dev import-image` end to end, from the CLI as a subprocess, with
 * release sets and revocation lists signed by the test PKI, real files, a real
 * store on disk. Each failure row of the seed's table is checked for exit
 * code, wording, counter, audit record, an untouched store and untouched
 * operator files.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { CliResult } from './support/cli.js';
import {
  failingCp,
  gatedCp,
  HOST_ARCH,
  OTHER_ARCH,
  runCliIn,
  testHost,
  VERSION,
  type TestHost,
} from './support/host.js';
import { TestPki } from './support/pki.js';
import {
  REPO,
  writeReleaseSet,
  writeRevocationList,
  type ReleaseFiles,
} from './support/release.js';
import { suiteWorld } from './support/world.js';

let root: string;
let pki: TestPki;
let trustedRoot: string;
let good: ReleaseFiles;
let n = 0;

before(async () => ({ root, pki, trustedRoot, good } = await suiteWorld('mvm-import-')));
after(() => rmSync(root, { recursive: true, force: true }));

/** A fresh host: its own data and cache directories. */
const host = () => testHost(join(root, `host${n++}`), trustedRoot);
type Host = TestHost;

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Everything under the prebuilt directory: names, link targets and file digests. */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    let names: string[];
    try {
      names = readdirSync(d).sort();
    } catch {
      return;
    }
    for (const name of names) {
      const p = join(d, name);
      const r = `${rel}${name}`;
      try {
        out.push(`${r} -> ${readlinkSync(p)}`);
        continue;
      } catch {
        /* not a link */
      }
      try {
        out.push(`${r} ${sha(readFileSync(p))}`);
      } catch {
        out.push(`${r}/`);
        walk(p, `${r}/`);
      }
    }
  };
  walk(dir, '');
  return out;
}

/** Digests of the operator's regular files in a set (devices, FIFOs and missing paths are named, not read). */
const fileDigests = (set: ReleaseFiles) =>
  [set.manifest, set.bundle, set.vmlinux, set.rootfs].map((f) => {
    try {
      return statSync(f).isFile() ? sha(readFileSync(f)) : `${f}: not a file`;
    } catch {
      return `${f}: absent`;
    }
  });

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** An installed image is complete: every file matches its receipt, the manifest and bundle are the verified ones. */
function assertCompleteImage(h: Host, expect?: ReleaseFiles): Json {
  const dir = join(h.prebuilt, `v${VERSION}`);
  const receipt = JSON.parse(readFileSync(join(dir, 'receipt.json'), 'utf8'));
  for (const role of ['kernel', 'rootfs'] as const) {
    const a = receipt.artifacts[role];
    assert.equal(sha(readFileSync(join(dir, a.file))), a.sha256, `${role} matches its receipt`);
  }
  assert.equal(sha(readFileSync(join(dir, 'manifest.json'))), receipt.manifestSha256);
  if (expect) {
    assert.equal(receipt.artifacts.rootfs.sha256, sha(expect.rootfsBytes));
    assert.deepEqual(readFileSync(join(dir, 'manifest.json')), readFileSync(expect.manifest));
  }
  return receipt;
}

/**
 * A refused import: exit code and seed wording on the first line, cause and
 * fix, the counter bumped once, one failed audit record, nothing in the store,
 * the operator's files untouched.
 */
async function assertRefused(
  h: Host,
  set: ReleaseFiles,
  o: {
    exit: number;
    wording: RegExp;
    counter?: string;
    code: string;
    flags?: string[];
    env?: Record<string, string>;
    /** Runs the import (default: h.importSet with flags and env), e.g. to act while it runs. */
    run?: () => Promise<CliResult>;
  },
): Promise<CliResult> {
  const before = fileDigests(set);
  const storeBefore = snapshot(h.prebuilt);
  const r = await (o.run ?? (() => h.importSet(set, o.flags, o.env)))();
  assert.equal(r.code, o.exit, `exit ${r.code}: ${r.stderr}`);
  const first = r.stderr.split('\n').find((l) => l.startsWith('Error: ')) ?? '';
  assert.match(first, o.wording);
  assert.match(r.stderr, /\n {2}fix: +\S/);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  assert.deepEqual(
    snapshot(h.prebuilt).filter((l) => !l.startsWith('.objects')),
    storeBefore.filter((l) => !l.startsWith('.objects')),
  );
  assert.ok(
    !snapshot(h.prebuilt).some((l) => /^\.objects\/./.test(l) && !storeBefore.includes(l)),
    'no new object left behind',
  );
  assert.deepEqual(fileDigests(set), before, "the operator's files are untouched");
  const audit = h.audit();
  const last = audit.at(-1)!;
  assert.equal(last['outcome'], 'failed');
  assert.equal(last['code'], o.code);
  if (o.counter) {
    const m = await h.metrics();
    const imports = audit.filter((a) => a['event'] === 'dev.import-image');
    assert.equal(m[o.counter], imports.filter((a) => a['code'] === o.code).length);
    assert.ok(m[o.counter]! >= 1);
    assert.equal(
      m['dev_image_verify_ok_total'],
      imports.filter((a) => a['outcome'] === 'ok').length,
    );
  }
  return r;
}

describe('dev import-image: happy path', () => {
  it('installs a verified set, prints each step and the dev up hint', async () => {
    const h = host();
    await writeRevocationList(pki, h.revocations, [{ version: '0.1.0' }]);
    const r = await h.importSet(good);
    assert.equal(r.code, 0, r.stderr);
    for (const step of [
      /✓ signature +signed by https:\/\/github\.com\/tinylabscom\/mvm\/\.github\/workflows\/release\.yml@refs\/tags\/v/,
      /✓ version +0\./,
      new RegExp(`✓ arch +${HOST_ARCH}`),
      /✓ max-age +valid until/,
      /✓ revocation +not recalled \(1 entry,/,
      /✓ kernel +sha256 [0-9a-f]{64}/,
      /✓ rootfs +sha256 [0-9a-f]{64}/,
      /✓ install +.*\/dev\/prebuilt\/v/,
    ]) {
      assert.match(r.stderr, step);
    }
    // The hint names dev up only where it can boot (QEMU on an x86_64 host): test/import-mistakes.test.ts.
    assert.match(r.stdout, /Run 'mvmctl dev up'|mvmctl dev up cannot boot it on this host yet/);
    const receipt = assertCompleteImage(h, good);
    assert.equal(receipt.verification, 'verified');
    assert.equal(
      receipt.signer.identity,
      `https://github.com/${REPO}/.github/workflows/release.yml@refs/tags/v${VERSION}`,
    );
    assert.equal(receipt.mvmctlVersion, VERSION);
    assert.equal(receipt.signer.signedTime.source, 'signed-entry-timestamp');
    assert.equal(receipt.signer.signedTime.time, receipt.signer.integratedTime);
    assert.deepEqual(receipt.bypassed, []);
    // Store permissions: directories 0700, files 0600.
    const dir = join(h.prebuilt, `v${VERSION}`);
    assert.equal(execFileSync('stat', ['-L', '-c', '%a', dir]).toString().trim(), '700');
    for (const f of readdirSync(dir))
      assert.equal(
        execFileSync('stat', ['-c', '%a', join(dir, f)])
          .toString()
          .trim(),
        '600',
        f,
      );
    assert.equal(execFileSync('stat', ['-c', '%a', h.prebuilt]).toString().trim(), '700');
    const m = await h.metrics();
    assert.equal(m['dev_image_verify_ok_total'], 1);
    assert.equal(h.audit().at(-1)!['outcome'], 'ok');
  });

  it('a set signed as Sigstore signs today (Rekor v2, RFC 3161 timestamp) installs', async () => {
    const h = host();
    const v2 = await writeReleaseSet(pki, join(root, 'rekor-v2'), {
      version: VERSION,
      arch: HOST_ARCH,
      rekorV2: true,
    });
    const r = await h.importSet(v2);
    assert.equal(r.code, 0, r.stderr);
    const receipt = assertCompleteImage(h, v2);
    assert.equal(receipt.verification, 'verified');
    assert.equal(receipt.signer.integratedTime, null);
    assert.equal(receipt.signer.signedTime.source, 'timestamp-authority');
    assert.ok(Math.abs(Date.parse(receipt.signer.signedTime.time) - pki.start.getTime()) < 60_000);
  });

  it('--dir finds the four files of this host arch; --json gives the result', async () => {
    const h = host();
    const r = await h.run(['dev', 'import-image', '--dir', good.dir, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.installed, true);
    assert.equal(out.version, VERSION);
    assert.equal(out.receipt.artifacts.kernel.sha256, sha(good.kernelBytes));
    assertCompleteImage(h, good);
  });

  it('re-importing the same verified set is idempotent', async () => {
    const h = host();
    assert.equal((await h.importSet(good)).code, 0);
    const before = snapshot(h.prebuilt);
    const r = await h.importSet(good);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Already installed/);
    assert.deepEqual(snapshot(h.prebuilt), before);
    // Counted as what it was: an unchanged re-import, not a second install (issue 12).
    const m = await h.metrics();
    assert.equal(m['dev_image_verify_ok_total'], 1);
    assert.equal(m['dev_image_verify_unchanged_total'], 1);
    assert.equal(h.audit().at(-1)!['outcome'], 'unchanged');
  });

  it('proceeds with a note when no revocation list is cached', async () => {
    const h = host();
    const r = await h.importSet(good);
    assert.equal(r.code, 0);
    assert.match(
      r.stderr,
      /warning: No revocation list is cached in .*revocations; proceeding without a recall check/,
    );
  });

  it('an expired manifest warns, counts and installs', async () => {
    const h = host();
    const old = await writeReleaseSet(pki, join(root, 'expired'), {
      version: VERSION,
      arch: HOST_ARCH,
      builtAt: new Date(Date.now() - 100 * 86_400_000),
    });
    const r = await h.importSet(old);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /warning: The manifest is past its max-age/);
    assert.match(r.stderr, /! max-age +EXPIRED/);
    const m = await h.metrics();
    assert.equal(m['dev_image_verify_expired_total'], 1);
    assert.equal(m['dev_image_verify_ok_total'], 1);
    assert.equal(assertCompleteImage(h, old).expiredAtInstall, true);
  });
});

describe("dev import-image: the seed's failure table", () => {
  it('tampered manifest', async () => {
    const h = host();
    const set = await writeReleaseSet(pki, join(root, 'tampered-manifest'), {
      version: VERSION,
      arch: HOST_ARCH,
    });
    writeFileSync(set.manifest, readFileSync(set.manifest, 'utf8').replace('"dev"', '"builder"'));
    await assertRefused(h, set, {
      exit: 10,
      code: 'signature',
      counter: 'dev_image_verify_sig_invalid_total',
      wording: /^Error: Cosign verification failed for the imported manifest/,
    });
  });

  it('mismatched bundle (from another set)', async () => {
    const h = host();
    const other = await writeReleaseSet(pki, join(root, 'other-arch-for-bundle'), {
      version: VERSION,
      arch: OTHER_ARCH,
    });
    const set = { ...good, bundle: other.bundle };
    await assertRefused(h, set, {
      exit: 10,
      code: 'signature',
      counter: 'dev_image_verify_sig_invalid_total',
      wording: /^Error: Cosign verification failed for the imported manifest/,
    });
  });

  it('a manifest signed at another release tag than the version it states', async () => {
    const h = host();
    const set = await writeReleaseSet(pki, join(root, 'wrong-tag'), {
      version: VERSION,
      arch: HOST_ARCH,
      tag: 'v0.13.0',
    });
    const r = await assertRefused(h, set, {
      exit: 10,
      code: 'signature',
      counter: 'dev_image_verify_sig_invalid_total',
      wording:
        /^Error: Cosign verification failed for the imported manifest: it was signed at tag v0\.13\.0/,
    });
    assert.match(r.stderr, /check: identity/);
  });

  it('a manifest signed by another workflow (the revocations identity)', async () => {
    const h = host();
    const set = await writeReleaseSet(pki, join(root, 'other-workflow'), {
      version: VERSION,
      arch: HOST_ARCH,
      tag: 'v0.14.0',
    });
    const bytes = readFileSync(set.manifest);
    writeFileSync(
      set.bundle,
      JSON.stringify(
        await pki.signBlob(bytes, {
          identity: `https://github.com/${REPO}/.github/workflows/revocations.yml@refs/tags/revocations`,
        }),
      ),
    );
    await assertRefused(h, set, {
      exit: 10,
      code: 'signature',
      counter: 'dev_image_verify_sig_invalid_total',
      wording: /^Error: Cosign verification failed for the imported manifest/,
    });
  });

  it('other version (a genuine manifest of another release)', async () => {
    const h = host();
    const set = await writeReleaseSet(pki, join(root, 'other-version'), {
      version: '0.13.0',
      arch: HOST_ARCH,
    });
    await assertRefused(h, set, {
      exit: 11,
      code: 'version',
      counter: 'dev_image_verify_version_skew_total',
      wording: new RegExp(
        `^Error: Imported manifest is for a different mvmctl version: manifest 0\\.13\\.0, mvmctl ${VERSION.replace(/\./g, '\\.')}`,
      ),
    });
  });

  it('other arch', async () => {
    const h = host();
    const set = await writeReleaseSet(pki, join(root, 'other-arch'), {
      version: VERSION,
      arch: OTHER_ARCH,
    });
    await assertRefused(h, set, {
      exit: 12,
      code: 'arch',
      counter: 'dev_image_verify_arch_mismatch_total',
      wording: new RegExp(
        `^Error: Manifest is for arch ${OTHER_ARCH} but this host is ${HOST_ARCH}$`,
      ),
    });
  });

  it('revoked', async () => {
    const h = host();
    await writeRevocationList(pki, h.revocations, [
      { version: '0.13.0' },
      {
        version: VERSION,
        arch: HOST_ARCH,
        reason: 'CVE-2026-4242: rootfs ships a vulnerable sshd',
      },
    ]);
    await assertRefused(h, good, {
      exit: 13,
      code: 'revoked',
      counter: 'dev_image_verify_revoked_total',
      wording: /^Error: Imported manifest is on the project's revocation list: .*CVE-2026-4242/,
    });
  });

  it('a recall of another arch or variant does not match', async () => {
    const h = host();
    await writeRevocationList(pki, h.revocations, [
      { version: VERSION, arch: OTHER_ARCH },
      { version: VERSION, arch: HOST_ARCH, variant: 'builder' },
    ]);
    assert.equal((await h.importSet(good)).code, 0);
  });

  for (const role of ['kernel', 'rootfs'] as const) {
    it(`tampered ${role}`, async () => {
      const h = host();
      const set = await writeReleaseSet(pki, join(root, `tampered-${role}`), {
        version: VERSION,
        arch: HOST_ARCH,
      });
      const file = role === 'kernel' ? set.vmlinux : set.rootfs;
      const bytes = readFileSync(file);
      bytes[bytes.length - 100]! ^= 0x01;
      writeFileSync(file, bytes);
      await assertRefused(h, set, {
        exit: 14,
        code: 'digest',
        counter: 'dev_image_verify_digest_mismatch_total',
        wording: new RegExp(`^Error: ${role} SHA-256 mismatch`),
      });
    });
  }

  it('a signed manifest of an unknown schema version', async () => {
    const h = host();
    const set = await writeReleaseSet(pki, join(root, 'schema2'), {
      version: VERSION,
      arch: HOST_ARCH,
      edit: (m) => (m['schema_version'] = 2),
    });
    await assertRefused(h, set, {
      exit: 15,
      code: 'manifest',
      counter: 'dev_image_verify_manifest_invalid_total',
      wording: /schema_version 2, newer than this mvmctl reads/,
    });
  });

  it('a signed manifest missing an artifact entry', async () => {
    const h = host();
    const set = await writeReleaseSet(pki, join(root, 'missing-entry'), {
      version: VERSION,
      arch: HOST_ARCH,
      edit: (m) => (m['artifacts'] as unknown[]).pop(),
    });
    await assertRefused(h, set, {
      exit: 15,
      code: 'manifest',
      counter: 'dev_image_verify_manifest_invalid_total',
      wording: /missing artifact entry dev-rootfs/,
    });
  });

  const bundleCorpus: [string, (text: string) => string][] = [
    ['a truncated bundle', (t) => t.slice(0, t.length / 2)],
    ['an empty object', () => '{}'],
    ['an unknown media type', (t) => t.replace('bundle.v0.3+json', 'bundle.v9.9+json')],
    ['duplicate keys', (t) => t.replace('{"mediaType":', '{"mediaType":"x","mediaType":')],
    ['deep nesting', () => '['.repeat(100_000)],
    ['wrong types', (t) => t.replace(/"logIndex":"\d+"/, '"logIndex":{"a":1}')],
  ];
  for (const [name, mutate] of bundleCorpus) {
    it(`a malformed bundle: ${name}`, async () => {
      const h = host();
      const set = await writeReleaseSet(pki, join(root, `bundle-${n}`), {
        version: VERSION,
        arch: HOST_ARCH,
      });
      writeFileSync(set.bundle, mutate(readFileSync(set.bundle, 'utf8')));
      await assertRefused(h, set, {
        exit: 10,
        code: 'signature',
        counter: 'dev_image_verify_sig_invalid_total',
        wording: /^Error: Cosign verification failed for the imported manifest/,
      });
    });
  }

  it('a failure does not disturb an image already installed', async () => {
    const h = host();
    assert.equal((await h.importSet(good)).code, 0);
    const set = await writeReleaseSet(pki, join(root, 'tampered-over-installed'), {
      version: VERSION,
      arch: HOST_ARCH,
      rootfs: Buffer.from('other rootfs'),
    });
    writeFileSync(set.rootfs, 'evil rootfs');
    await assertRefused(h, set, {
      exit: 14,
      code: 'digest',
      counter: 'dev_image_verify_digest_mismatch_total',
      wording: /^Error: rootfs SHA-256 mismatch/,
    });
    assertCompleteImage(h, good);
  });
});

describe('dev import-image: cached revocation list policy', () => {
  it('a cached pair that fails verification fails closed, telling how to re-import', async () => {
    const h = host();
    const pair = await writeRevocationList(pki, h.revocations, [{ version: '0.1.0' }]);
    writeFileSync(pair.json, readFileSync(pair.json, 'utf8').replace('0.1.0', '0.1.1'));
    const r = await assertRefused(h, good, {
      exit: 10,
      code: 'signature',
      wording: /^Error: Cosign verification failed for the cached revocation list/,
    });
    assert.match(r.stderr, /fix: +Re-import the pair/);
  });

  it('a list signed by the release identity instead of the revocations identity is refused', async () => {
    const h = host();
    await writeRevocationList(pki, h.revocations, [], {
      identity: `https://github.com/${REPO}/.github/workflows/release.yml@refs/tags/v${VERSION}`,
    });
    await assertRefused(h, good, {
      exit: 10,
      code: 'signature',
      wording: /cached revocation list/,
    });
  });

  it('a cached list without its bundle fails closed', async () => {
    const h = host();
    const pair = await writeRevocationList(pki, h.revocations, []);
    rmSync(pair.bundle);
    await assertRefused(h, good, {
      exit: 10,
      code: 'signature',
      wording: /cached revocation list.*bundle .*does not exist/,
    });
  });

  it('a stale list (over 7 days) is still enforced, with a loud warning', async () => {
    const h = host();
    const pair = await writeRevocationList(pki, h.revocations, [
      { version: VERSION, arch: HOST_ARCH },
    ]);
    const old = new Date(Date.now() - 8 * 86_400_000);
    utimesSync(pair.json, old, old);
    const r = await assertRefused(h, good, {
      exit: 13,
      code: 'revoked',
      counter: 'dev_image_verify_revoked_total',
      wording: /revocation list/,
    });
    assert.match(
      r.stderr,
      /warning: STALE REVOCATION LIST: it is 19\d(\.\d)? hours old \(more than 7 days\)/,
    );
  });

  it('a stale list without a recall installs with the warning', async () => {
    const h = host();
    const pair = await writeRevocationList(pki, h.revocations, []);
    const old = new Date(Date.now() - 8 * 86_400_000);
    utimesSync(pair.json, old, old);
    const r = await h.importSet(good);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /STALE REVOCATION LIST: it is .* hours old/);
  });

  it('a list modified in the future is stale, and the import says why', async () => {
    // cp -p, rsync -a, tar or a clock that was ahead: "0 hours old" forever would hide every later recall.
    const h = host();
    const pair = await writeRevocationList(pki, h.revocations, []);
    const ahead = new Date(Date.now() + 3 * 86_400_000);
    utimesSync(pair.json, ahead, ahead);
    const r = await h.importSet(good, ['--offline']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      /warning: STALE REVOCATION LIST: its modification time is in the future \(7\d(\.\d)? h ahead/,
    );
    await assertRefused(h, good, {
      exit: 18,
      code: 'stale-revocations',
      counter: 'dev_image_verify_network_total',
      flags: ['--require-fresh-revocations', '--offline'],
      wording:
        /stale \(its modification time is in the future .*\) and --require-fresh-revocations is set/,
    });
  });

  it('--require-fresh-revocations makes staleness fatal', async () => {
    const h = host();
    const pair = await writeRevocationList(pki, h.revocations, []);
    const old = new Date(Date.now() - 8 * 86_400_000);
    utimesSync(pair.json, old, old);
    await assertRefused(h, good, {
      exit: 18,
      code: 'stale-revocations',
      counter: 'dev_image_verify_network_total',
      flags: ['--require-fresh-revocations'],
      wording:
        /stale \(it is \d+(\.\d)? hours old \(more than 7 days\)\) and --require-fresh-revocations is set/,
    });
  });

  it('a list 3 days old is tolerated with a warning, even when fresh lists are required', async () => {
    // Seed: fresh for 24 h, 7 days tolerated offline. Only past 7 days may --require-fresh refuse.
    const h = host();
    const pair = await writeRevocationList(pki, h.revocations, []);
    const old = new Date(Date.now() - 3 * 86_400_000);
    utimesSync(pair.json, old, old);
    const r = await h.importSet(good, ['--require-fresh-revocations'], {
      MVM_REQUIRE_FRESH_REVOCATIONS: '1',
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      /warning: The cached revocation list is 7\d(\.\d)? hours old \(refreshed after 24 h; tolerated up to 7 days\)/,
    );
    assert.doesNotMatch(r.stderr, /STALE/);
  });

  it('a cache directory others can write is refused (exit 17)', async () => {
    const h = host();
    await writeRevocationList(pki, h.revocations, []);
    chmodSync(h.revocations, 0o777);
    await assertRefused(h, good, {
      exit: 17,
      code: 'store',
      wording: /^Error: The revocation cache .*revocations can be changed by other users/,
    });
  });

  it('recalls seen once stay enforced when the cached list is rolled back or removed', async () => {
    const h = host();
    const recall = [{ version: VERSION, arch: HOST_ARCH, reason: 'CVE-2026-1111: remembered' }];
    await writeRevocationList(pki, h.revocations, recall);
    await assertRefused(h, good, {
      exit: 13,
      code: 'revoked',
      counter: 'dev_image_verify_revoked_total',
      wording: /CVE-2026-1111/,
    });
    // An older genuine list without the recall is swapped in...
    await writeRevocationList(pki, h.revocations, []);
    let r = await assertRefused(h, good, {
      exit: 13,
      code: 'revoked',
      counter: 'dev_image_verify_revoked_total',
      wording: /CVE-2026-1111/,
    });
    assert.match(
      r.stderr,
      /REVOCATION LIST ROLLED BACK OR REMOVED: 1 recall\(s\) verified on this host before are missing/,
    );
    // ...or the pair is deleted altogether.
    rmSync(h.revocations, { recursive: true });
    r = await assertRefused(h, good, {
      exit: 13,
      code: 'revoked',
      counter: 'dev_image_verify_revoked_total',
      wording: /CVE-2026-1111/,
    });
    assert.match(r.stderr, /ROLLED BACK OR REMOVED/);
  });

  it("the seed's manual workflow: copy the pair in and touch the JSON", async () => {
    const h = host();
    const carried = await writeRevocationList(pki, join(h.dir, 'usb'), [
      { version: VERSION, arch: HOST_ARCH },
    ]);
    mkdirSync(h.revocations, { recursive: true });
    execFileSync('cp', [carried.json, carried.bundle, h.revocations]);
    execFileSync('touch', [join(h.revocations, 'revoked-versions.json')]);
    await assertRefused(h, good, {
      exit: 13,
      code: 'revoked',
      counter: 'dev_image_verify_revoked_total',
      wording: /revocation list/,
    });
  });
});

describe('dev import-image: escape hatches', () => {
  it('MVM_SKIP_COSIGN_VERIFY=1 installs UNVERIFIED, loudly, counted and audited', async () => {
    const h = host();
    const set = await writeReleaseSet(pki, join(root, 'skip-cosign'), {
      version: VERSION,
      arch: HOST_ARCH,
    });
    writeFileSync(
      set.manifest,
      readFileSync(set.manifest, 'utf8').replace('"nix_store_hash": "', '"nix_store_hash": "x'),
    );
    const r = await h.importSet(set, [], { MVM_SKIP_COSIGN_VERIFY: '1' });
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      /warning: MVM_SKIP_COSIGN_VERIFY=1: the manifest signature is NOT verified/,
    );
    assert.match(r.stdout, /\(UNVERIFIED\)/);
    const receipt = assertCompleteImage(h, set);
    assert.equal(receipt.verification, 'UNVERIFIED');
    assert.deepEqual(receipt.bypassed, ['cosign']);
    assert.equal(receipt.signer, null);
    assert.equal((await h.metrics())['dev_image_verify_bypassed_total'], 1);
    assert.deepEqual(h.audit().at(-1)!['bypassed'], ['cosign']);
    const status = JSON.parse((await h.run(['status', '--json'])).stdout);
    assert.equal(status.images[0].verification, 'UNVERIFIED');
  });

  it('skipping the signature never skips the SHA-256 check', async () => {
    const h = host();
    const set = await writeReleaseSet(pki, join(root, 'skip-cosign-bad-rootfs'), {
      version: VERSION,
      arch: HOST_ARCH,
    });
    writeFileSync(set.rootfs, 'not the rootfs');
    await assertRefused(h, set, {
      exit: 14,
      code: 'digest',
      counter: 'dev_image_verify_digest_mismatch_total',
      env: { MVM_SKIP_COSIGN_VERIFY: '1' },
      wording: /^Error: rootfs SHA-256 mismatch/,
    });
    assert.equal(
      (await h.metrics())['dev_image_verify_bypassed_total'],
      1,
      'the attempt to bypass is counted too',
    );
  });

  it('MVM_SKIP_HASH_VERIFY=1 installs UNVERIFIED, loudly, counted and audited', async () => {
    const h = host();
    const set = await writeReleaseSet(pki, join(root, 'skip-hash'), {
      version: VERSION,
      arch: HOST_ARCH,
    });
    writeFileSync(set.rootfs, 'a different rootfs');
    const r = await h.importSet(set, [], { MVM_SKIP_HASH_VERIFY: '1' });
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      /warning: MVM_SKIP_HASH_VERIFY=1: artifact SHA-256 digests are NOT compared/,
    );
    assert.match(r.stderr, /! rootfs +sha256 .* NOT COMPARED/);
    const receipt = assertCompleteImage(h);
    assert.equal(receipt.verification, 'UNVERIFIED');
    assert.deepEqual(receipt.bypassed, ['hash']);
    assert.equal((await h.metrics())['dev_image_verify_bypassed_total'], 1);
  });

  it('skipping the SHA-256 check never skips the signature', async () => {
    const h = host();
    const set = {
      ...good,
      bundle: (
        await writeReleaseSet(pki, join(root, 'skip-hash-bad-sig'), {
          version: VERSION,
          arch: OTHER_ARCH,
        })
      ).bundle,
    };
    await assertRefused(h, set as ReleaseFiles, {
      exit: 10,
      code: 'signature',
      counter: 'dev_image_verify_sig_invalid_total',
      env: { MVM_SKIP_HASH_VERIFY: '1' },
      wording: /Cosign verification failed for the imported manifest/,
    });
  });
});

describe('dev import-image: inputs and store safety', () => {
  const cases: [string, (set: ReleaseFiles) => Partial<ReleaseFiles>, RegExp][] = [
    ['a missing kernel', (s) => ({ vmlinux: join(s.dir, 'nope') }), /kernel .*nope does not exist/],
    ['a directory as the rootfs', (s) => ({ rootfs: s.dir }), /rootfs .* is not a regular file/],
    [
      'a device as the rootfs',
      () => ({ rootfs: '/dev/zero' }),
      /rootfs \/dev\/zero is not a regular file/,
    ],
    [
      'an empty manifest',
      (s) => {
        const p = join(s.dir, 'empty.json');
        writeFileSync(p, '');
        return { manifest: p };
      },
      /manifest .* is empty/,
    ],
    [
      'an oversized manifest',
      (s) => {
        const p = join(s.dir, 'huge.json');
        writeFileSync(p, Buffer.alloc(2 * 1024 * 1024, 0x20));
        return { manifest: p };
      },
      /manifest .* is too large/,
    ],
    [
      'an oversized bundle',
      (s) => {
        const p = join(s.dir, 'huge.bundle');
        writeFileSync(p, Buffer.alloc(2 * 1024 * 1024, 0x20));
        return { bundle: p };
      },
      /bundle .* is too large/,
    ],
    [
      'a symlink to a directory',
      (s) => {
        const p = join(s.dir, 'link-to-dir');
        symlinkSync(s.dir, p);
        return { vmlinux: p };
      },
      /kernel .* is not a regular file/,
    ],
    [
      'a dangling symlink',
      (s) => {
        const p = join(s.dir, 'dangling');
        symlinkSync(join(s.dir, 'nowhere'), p);
        return { bundle: p };
      },
      /bundle .* does not exist/,
    ],
    [
      'a FIFO as the kernel',
      (s) => {
        const p = join(s.dir, 'fifo');
        execFileSync('mkfifo', [p]);
        return { vmlinux: p };
      },
      /kernel .* is not a regular file/,
    ],
  ];
  for (const [name, make, wording] of cases) {
    it(`${name} is an input error (exit 3), nothing written`, async () => {
      const h = host();
      const set = await writeReleaseSet(pki, join(root, `input-${n}`), {
        version: VERSION,
        arch: HOST_ARCH,
      });
      await assertRefused(h, { ...set, ...make(set) }, { exit: 3, code: 'input', wording });
    });
  }

  it('a symlink to the real file is accepted (the operator may link the set in)', async () => {
    const h = host();
    const link = join(h.dir, 'rootfs-link');
    mkdirSync(h.dir, { recursive: true });
    symlinkSync(good.rootfs, link);
    assert.equal((await h.importSet({ ...good, rootfs: link })).code, 0);
  });

  it('missing flags and --dir mixed with a file flag are usage errors', async () => {
    const h = host();
    assert.equal((await h.run(['dev', 'import-image', '--manifest', good.manifest])).code, 2);
    assert.equal(
      (await h.run(['dev', 'import-image', '--dir', good.dir, '--rootfs', good.rootfs])).code,
      2,
    );
  });

  it('a store directory that is a symlink is refused (exit 17)', async () => {
    const h = host();
    mkdirSync(join(h.dir, 'elsewhere'), { recursive: true });
    mkdirSync(join(h.dir, 'data', 'dev'), { recursive: true, mode: 0o700 });
    chmodSync(join(h.dir, 'data'), 0o700);
    symlinkSync(join(h.dir, 'elsewhere'), h.prebuilt);
    const r = await h.importSet(good);
    assert.equal(r.code, 17, r.stderr);
    assert.match(r.stderr, /prebuilt is a symbolic link/);
    assert.deepEqual(readdirSync(join(h.dir, 'elsewhere')), []);
  });

  it('a group- or world-writable store is refused (exit 17)', async () => {
    const h = host();
    mkdirSync(join(h.dir, 'data'), { recursive: true });
    chmodSync(join(h.dir, 'data'), 0o777);
    const r = await h.importSet(good);
    assert.equal(r.code, 17, r.stderr);
    assert.match(r.stderr, /writable by group or others \(mode 777\)/);
    assert.match(r.stderr, /fix: +chmod go-w/);
  });

  it('a store owned by another user is refused (exit 17)', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root to chown');
    const h = host();
    mkdirSync(join(h.dir, 'data'), { recursive: true, mode: 0o700 });
    execFileSync('chown', ['65534', join(h.dir, 'data')]);
    const r = await h.importSet(good);
    assert.equal(r.code, 17, r.stderr);
    assert.match(r.stderr, /owned by uid 65534/);
  });
});

describe('audit log', () => {
  it('audit tail shows the records; an edited record breaks the chain (exit 10)', async () => {
    const h = host();
    assert.equal((await h.importSet(good)).code, 0);
    const bad = await writeReleaseSet(pki, join(root, `audit-bad`), {
      version: VERSION,
      arch: OTHER_ARCH,
    });
    assert.equal((await h.importSet(bad)).code, 12);
    assert.equal((await h.importSet(good)).code, 0);
    let r = await h.run(['audit', 'tail']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /dev\.import-image +failed +arch +- +v0\.\d+\.\d+ +Manifest is for arch/,
    );
    assert.match(r.stderr, /chain: intact \(3 records\)/);
    // Someone turns the failure into a success after the fact.
    const log = join(h.dir, 'data', 'telemetry', 'audit.jsonl');
    writeFileSync(log, readFileSync(log, 'utf8').replace('"outcome":"failed"', '"outcome":"ok"'));
    r = await h.run(['audit', 'tail']);
    assert.equal(r.code, 10);
    assert.match(r.stderr, /does not chain at line 3/);
  });
});

describe('status and metrics', () => {
  it('status --json shows images, receipts, revocation cache, trusted root and counters', async () => {
    const h = host();
    await writeRevocationList(pki, h.revocations, [{ version: '0.1.0' }]);
    assert.equal((await h.importSet(good)).code, 0);
    const r = await h.run(['status', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout);
    assert.equal(s.images.length, 1);
    assert.equal(s.images[0].version, VERSION);
    assert.equal(s.images[0].verification, 'verified');
    assert.equal(s.images[0].recalled, false);
    assert.equal(s.revocations.state, 'verified');
    assert.equal(s.revocations.entries, 1);
    assert.equal(s.revocations.stale, false);
    assert.equal(s.trustedRoot.source, trustedRoot);
    assert.equal(s.metrics.dev_image_verify_ok_total, 1);
    const human = await h.run(['status']);
    assert.match(
      human.stdout,
      new RegExp(`v${VERSION.replace(/\./g, '\\.')} \\(this mvmctl\\) +verified`),
    );
  });

  it('status shows an installed image as recalled once the list names it', async () => {
    const h = host();
    assert.equal((await h.importSet(good)).code, 0);
    await writeRevocationList(pki, h.revocations, [
      { version: VERSION, arch: HOST_ARCH, reason: 'CVE-2026-9' },
    ]);
    const s = JSON.parse((await h.run(['status', '--json'])).stdout);
    assert.equal(s.images[0].recalled, 'CVE-2026-9');
  });

  it('metrics prints Prometheus text exposition with the mvm_ names', async () => {
    const h = host();
    assert.equal((await h.importSet(good)).code, 0);
    const r = await h.run(['metrics']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^# HELP mvm_dev_image_verify_ok_total /m);
    assert.match(r.stdout, /^# TYPE mvm_dev_image_verify_ok_total counter$/m);
    assert.match(r.stdout, /^mvm_dev_image_verify_ok_total 1$/m);
    assert.match(r.stdout, /^mvm_dev_image_verify_sig_invalid_total 0$/m);
    assert.match(r.stdout, /^mvm_dev_image_verify_duration_seconds_count 1$/m);
    const j = JSON.parse((await h.run(['metrics', '--json'])).stdout);
    assert.equal(j.dev_image_verify_ok_total, 1);
    assert.equal(j.dev_image_verify_duration_seconds.count, 1);
  });
});

describe('dev import-image: recalls that must not be bypassed (issue 8)', () => {
  it('--require-fresh-revocations with no list at all refuses (exit 18), naming revocations import', async () => {
    const h = host();
    const r = await assertRefused(h, good, {
      exit: 18,
      code: 'stale-revocations',
      counter: 'dev_image_verify_network_total',
      flags: ['--require-fresh-revocations'],
      wording:
        /^Error: No revocation list is cached in .*revocations and fresh revocations are required/,
    });
    assert.match(r.stderr, /fix: .*mvmctl revocations import --list/);
    assert.doesNotMatch(r.stderr, /proceeding without a recall check/);
  });

  it('MVM_REQUIRE_FRESH_REVOCATIONS=1 is the same as the flag: no list, or a stale one, refuses', async () => {
    const h = host();
    const env = { MVM_REQUIRE_FRESH_REVOCATIONS: '1' };
    await assertRefused(h, good, {
      exit: 18,
      code: 'stale-revocations',
      counter: 'dev_image_verify_network_total',
      env,
      wording: /fresh revocations are required \(MVM_REQUIRE_FRESH_REVOCATIONS=1\)/,
    });
    const pair = await writeRevocationList(pki, h.revocations, []);
    const old = new Date(Date.now() - 8 * 86_400_000);
    utimesSync(pair.json, old, old);
    await assertRefused(h, good, {
      exit: 18,
      code: 'stale-revocations',
      counter: 'dev_image_verify_network_total',
      env,
      wording: /more than 7 days\)\) and fresh revocations are required/,
    });
    // A fresh list satisfies it.
    utimesSync(pair.json, new Date(), new Date());
    assert.equal((await h.importSet(good, [], env)).code, 0);
  });

  it('dev import-image --help documents MVM_REQUIRE_FRESH_REVOCATIONS and the size limits', async () => {
    const r = await host().run(['dev', 'import-image', '--help']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /MVM_REQUIRE_FRESH_REVOCATIONS=1 +.*--require-fresh-revocations/);
    assert.match(r.stdout, /MVM_MAX_KERNEL_BYTES/);
    assert.match(r.stdout, /MVM_MAX_ROOTFS_BYTES/);
  });

  it('a builder manifest is refused (exit 15) before anything is written: only the dev variant installs', async () => {
    const h = host();
    const set = await writeReleaseSet(pki, join(root, 'builder'), {
      version: VERSION,
      arch: HOST_ARCH,
      edit: (m) => {
        m['variant'] = 'builder';
        for (const a of m['artifacts'] as { name: string }[])
          a.name = a.name.replace(/^dev-/, 'builder-');
      },
    });
    const r = await assertRefused(h, set, {
      exit: 15,
      code: 'manifest',
      counter: 'dev_image_verify_manifest_invalid_total',
      wording:
        /^Error: The manifest is for the builder variant; dev import-image installs only the dev variant$/,
    });
    assert.doesNotMatch(r.stderr, /✓ kernel/, 'nothing was copied');
    assert.deepEqual(snapshot(h.prebuilt), [], 'not even the store was created');
  });

  for (const how of ['revocations import', 'the remembered recalls'] as const) {
    it(`a recall that arrives while the copy runs (${how}) stops the publish (exit 13)`, async () => {
      const h = host();
      const gate = gatedCp(h.dir);
      const reason = 'CVE-2026-7777: recalled during the import';
      const r = await assertRefused(h, good, {
        exit: 13,
        code: 'revoked',
        counter: 'dev_image_verify_revoked_total',
        wording: /^Error: Imported manifest is on the project's revocation list: .*CVE-2026-7777/,
        run: async () => {
          const pending = h.importSet(good, [], gate.env);
          await gate.started(2, pending); // kernel and rootfs copies are running, held at the gate
          if (how === 'revocations import') {
            const carried = await writeRevocationList(pki, join(h.dir, 'usb'), [
              { version: VERSION, arch: HOST_ARCH, reason },
            ]);
            const imported = await h.run([
              'revocations',
              'import',
              '--list',
              carried.json,
              '--bundle',
              carried.bundle,
            ]);
            assert.equal(imported.code, 0, imported.stderr);
          } else {
            const memory = join(h.dir, 'data', 'revocations');
            mkdirSync(memory, { recursive: true, mode: 0o700 });
            const recall = { version: VERSION, variant: 'dev', arch: HOST_ARCH, reason };
            writeFileSync(
              join(memory, 'recalls-seen.jsonl'),
              `${JSON.stringify({ recall: { ...recall, revokedAt: '2026-11-01T00:00:00Z' } })}\n`,
              { mode: 0o600 },
            );
          }
          gate.release();
          return pending;
        },
      });
      assert.match(r.stderr, /✓ rootfs +sha256/, 'the recall was found after the copy, not before');
      assert.ok(!existsSync(join(h.prebuilt, `v${VERSION}`)));
    });
  }
});

describe('dev import-image: inputs and configuration (issue 8)', () => {
  it('a sparse 1 TiB rootfs is refused before any hashing (exit 3), naming size, limit and variable', async () => {
    const h = host();
    const set = await writeReleaseSet(pki, join(root, 'huge-rootfs'), {
      version: VERSION,
      arch: HOST_ARCH,
    });
    truncateSync(set.rootfs, 2 ** 40); // a few KB on the medium, 1 TiB to read
    const r = await assertRefused(h, set, {
      exit: 3,
      code: 'input',
      wording:
        /^Error: rootfs .*dev-rootfs-\w+\.ext4 is too large: 1099511627776 bytes \(1 TiB\), the limit is 68719476736 bytes \(64 GiB\)$/,
    });
    assert.match(r.stderr, /MVM_MAX_ROOTFS_BYTES/);
    assert.equal(h.audit().at(-1)!['manifestSha256'], undefined, 'nothing was hashed');
    assert.doesNotMatch(r.stderr, /✓ signature/);
  });

  it('a kernel over MVM_MAX_KERNEL_BYTES is refused (exit 3), naming the variable', async () => {
    const h = host();
    const r = await assertRefused(h, good, {
      exit: 3,
      code: 'input',
      env: { MVM_MAX_KERNEL_BYTES: '1000' },
      wording: /^Error: kernel .* is too large: \d+ bytes \(\d+ KiB\), the limit is 1000 bytes/,
    });
    assert.match(r.stderr, /fix: .*MVM_MAX_KERNEL_BYTES/);
  });

  for (const [name, dataDir] of [
    ['a trailing slash', (d: string) => `${join(d, 'data')}/`],
    ['a ".." component', (d: string) => `${d}/elsewhere/../data`],
  ] as const) {
    it(`MVM_DATA_DIR with ${name} works and the audit record is written`, async () => {
      const h = host();
      const r = await h.importSet(good, [], { MVM_DATA_DIR: dataDir(h.dir) });
      assert.equal(r.code, 0, r.stderr);
      assertCompleteImage(h, good);
      const audit = h.audit();
      assert.equal(audit.length, 1);
      assert.equal(audit[0]!['outcome'], 'ok');
      assert.ok(!existsSync(join(h.dir, 'elsewhere')));
    });
  }

  it('an explicitly empty MVM_DATA_DIR is a usage error (exit 2), nothing written', async () => {
    const h = host();
    const home = join(h.dir, 'home');
    mkdirSync(home, { recursive: true });
    const r = await h.importSet(good, [], { MVM_DATA_DIR: '', HOME: home });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^Error: MVM_DATA_DIR is set but empty/m);
    assert.match(r.stderr, /fix: +Unset MVM_DATA_DIR, or set it to/);
    assert.deepEqual(readdirSync(home), []);
  });

  it('an empty HOME with no MVM_DATA_DIR is a usage error, never the current directory', async () => {
    const h = host();
    const cwd = join(h.dir, 'cwd');
    mkdirSync(cwd, { recursive: true });
    const env = { HOME: '', MVM_TRUSTED_ROOT: trustedRoot, MVM_OFFLINE: '1' };
    for (const args of [
      [
        'dev',
        'import-image',
        '--manifest',
        good.manifest,
        '--bundle',
        good.bundle,
        '--vmlinux',
        good.vmlinux,
        '--rootfs',
        good.rootfs,
      ],
      ['status', '--json'],
    ]) {
      const r = await runCliIn(cwd, args, env);
      assert.equal(r.code, 2, `${args[0]}: ${r.stderr}${r.stdout}`);
      assert.match(r.stderr + r.stdout, /HOME is empty and MVM_DATA_DIR is not set/);
    }
    // With the data directory given, the cache still needs a home: the same refusal.
    const r = await runCliIn(cwd, ['status'], { ...env, MVM_DATA_DIR: join(h.dir, 'data') });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /HOME is empty and MVM_CACHE_DIR \(or XDG_CACHE_HOME\) is not set/);
    assert.deepEqual(readdirSync(cwd), [], 'nothing was written in the current directory');
  });

  it('a cp that fails silently is a store error naming how it exited (exit 17), nothing installed', async () => {
    const h = host();
    const r = await assertRefused(h, good, {
      exit: 17,
      code: 'store',
      env: failingCp(h.dir, 3),
      wording: /^Error: Cannot copy the image into /,
    });
    assert.match(r.stderr, /cause: .*cp exited with status 3/);
  });
});

describe('dev import-image: the version link (issue 8)', () => {
  it('a real directory where the version link belongs is refused (exit 17) and left as it is', async () => {
    const h = host();
    const dir = join(h.prebuilt, `v${VERSION}`);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(h.prebuilt, 0o700);
    chmodSync(join(h.dir, 'data'), 0o700);
    chmodSync(join(h.dir, 'data', 'dev'), 0o700);
    writeFileSync(join(dir, 'notes.txt'), 'the operator keeps this');
    const r = await assertRefused(h, good, {
      exit: 17,
      code: 'store',
      wording: /^Error: .*v0\.\d+\.\d+ is a directory, not an image installed by mvmctl/,
    });
    assert.match(r.stderr, /fix: +Move .* aside/);
    assert.equal(readFileSync(join(dir, 'notes.txt'), 'utf8'), 'the operator keeps this');
  });

  it('a directory that appears at the version link during the copy is refused, never moved or deleted', async () => {
    const h = host();
    const gate = gatedCp(h.dir);
    const dir = join(h.prebuilt, `v${VERSION}`);
    const pending = h.importSet(good, [], gate.env);
    await gate.started(2, pending);
    mkdirSync(dir, { mode: 0o700 });
    writeFileSync(join(dir, 'notes.txt'), 'the operator keeps this');
    gate.release();
    const r = await pending;
    assert.equal(r.code, 17, r.stderr);
    assert.match(r.stderr, /✓ rootfs +sha256/);
    assert.match(
      r.stderr,
      /^Error: .*v0\.\d+\.\d+ is a directory, not an image installed by mvmctl/m,
    );
    assert.equal(h.audit().at(-1)!['code'], 'store');
    // Neither this import nor the next (which collects garbage) moves or deletes it.
    await assertRefused(h, good, { exit: 17, code: 'store', wording: /is a directory/ });
    assert.equal(readFileSync(join(dir, 'notes.txt'), 'utf8'), 'the operator keeps this');
    assert.deepEqual(readdirSync(join(h.prebuilt, '.objects')), [], 'no staging object left');
  });

  it('a version link pointing outside the store is refused by import (exit 17) and not reported by status', async () => {
    const h = host();
    assert.equal((await h.importSet(good)).code, 0);
    // Someone copies the genuine image out, and points the version link at the copy.
    const elsewhere = join(h.dir, 'elsewhere');
    execFileSync('cp', ['-rL', join(h.prebuilt, `v${VERSION}`), elsewhere]);
    for (const target of [elsewhere, '.objects/../../../elsewhere']) {
      rmSync(join(h.prebuilt, `v${VERSION}`));
      symlinkSync(target, join(h.prebuilt, `v${VERSION}`));
      const r = await assertRefused(h, good, {
        exit: 17,
        code: 'store',
        wording: /^Error: .*v0\.\d+\.\d+ points outside the store/,
      });
      assert.match(r.stderr, /fix: +Move .* aside/);
      const status = await h.run(['status', '--json']);
      assert.equal(status.code, 0, status.stderr);
      assert.deepEqual(JSON.parse(status.stdout).images, [], 'not shown as an installed image');
      assert.equal(readlinkSync(join(h.prebuilt, `v${VERSION}`)), target, 'left as it is');
    }
  });
});

describe('dev import-image: the signed tag is exactly v{version} (issue 8)', () => {
  for (const suffix of ['-rc.1', '+x']) {
    it(`a manifest for ${VERSION} signed at tag v${VERSION}${suffix} is refused (exit 10)`, async () => {
      const h = host();
      const set = await writeReleaseSet(pki, join(root, `tag${suffix}`), {
        version: VERSION,
        arch: HOST_ARCH,
        tag: `v${VERSION}${suffix}`,
      });
      const tag = `v${VERSION}${suffix}`.replace(/[.+]/g, '\\$&');
      const r = await assertRefused(h, set, {
        exit: 10,
        code: 'signature',
        counter: 'dev_image_verify_sig_invalid_total',
        wording: new RegExp(
          `^Error: Cosign verification failed for the imported manifest: it was signed at tag ${tag} but says version`,
        ),
      });
      assert.match(r.stderr, /check: identity/);
      assert.equal(h.audit().at(-1)!['check'], 'identity');
    });
  }
});
