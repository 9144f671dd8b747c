/**
 * `mvmctl trust import` and `trust status`, end to end: the built CLI as a
 * subprocess inside `unshare -n` (no network at all), a TUF repository the
 * tests generate and sign (test/support/tuf-repo.ts), verified by the real
 * TUF client (tuf-js), and Sigstore trusted roots from the test PKI whose
 * signatures verify-blob checks for real. MVM_TUF_ROOT anchors the host on
 * the test repository's first root, as a private Sigstore deployment would.
 */
import assert from 'node:assert/strict';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runMvm } from './support/release-server.js';
import { GITHUB_ISSUER, releaseIdentity, TestPki } from './support/pki.js';
import { serveDir, TufRepo } from './support/tuf-repo.js';

const DAY = 86_400_000;
const NET = ['unshare', '-n', '--'];

let dir: string;
let pki: TestPki;
/** The PKI's trusted root, and the same without its second (Rekor v2, Ed25519) log: "before the new shard". */
let fullRoot: Buffer;
let oldRoot: Buffer;
let n = 0;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mvm-trust-'));
  pki = await TestPki.create();
  const full = pki.trustedRoot();
  fullRoot = Buffer.from(JSON.stringify(full, null, 2));
  oldRoot = Buffer.from(
    JSON.stringify({ ...full, tlogs: (full['tlogs'] as unknown[]).slice(0, 1) }, null, 2),
  );
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** A fresh host (data directory) anchored on `repo`'s first root. */
function host(repo: TufRepo) {
  const h = join(dir, `h${n++}`);
  const anchor = join(h, 'tuf-root.json');
  const env = {
    MVM_DATA_DIR: join(h, 'data'),
    MVM_CACHE_DIR: join(h, 'cache'),
    MVM_TUF_ROOT: anchor,
  };
  // The anchor is held to the trusted root's owner/mode rule: a private directory.
  mkdirSync(h, { recursive: true });
  chmodSync(h, 0o700);
  writeFileSync(anchor, repo.roots[0]!);
  const run = (args: string[]) => runMvm(args, env, { wrapper: NET });
  return {
    env,
    data: env.MVM_DATA_DIR,
    import: (bundle: string) => run(['trust', 'import', bundle, '--json']),
    importText: (bundle: string) => run(['trust', 'import', bundle]),
    status: async () => {
      const r = await run(['trust', 'status', '--json']);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout);
    },
    run,
    audit: (): Record<string, unknown>[] => {
      const p = join(env.MVM_DATA_DIR, 'telemetry', 'audit.jsonl');
      return existsSync(p)
        ? readFileSync(p, 'utf8')
            .trim()
            .split('\n')
            .map((l) => JSON.parse(l))
        : [];
    },
    trustSets: () =>
      existsSync(join(env.MVM_DATA_DIR, 'trust'))
        ? readdirSync(join(env.MVM_DATA_DIR, 'trust')).filter((f) => /^r\d+-t\d+-/.test(f))
        : [],
  };
}

/** A repository at root v1 with its first trusted root published. */
function repoWith(target: Buffer = oldRoot, opts: ConstructorParameters<typeof TufRepo>[0] = {}) {
  const repo = new TufRepo(opts);
  repo.publishRoot();
  repo.publish(target);
  return repo;
}

const bundleOf = (repo: TufRepo, opts?: Parameters<TufRepo['writeBundle']>[1]) =>
  repo.writeBundle(join(dir, `b${n++}`), opts);

/** Asserts a refusal: exit 3, the role and check in the message, nothing installed, an audit record. */
function assertRefused(r: { code: number; stdout: string; stderr: string }, wording: RegExp): void {
  assert.equal(r.code, 3, `expected exit 3, got ${r.code}: ${r.stderr}${r.stdout}`);
  const err = JSON.parse(r.stdout).error;
  assert.match(err.message, wording);
  assert.match(err.message, /^The trust bundle .* does not verify: /);
  assert.match(err.fix, /trust fetch/);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
}

describe('trust import: a generated TUF repository', () => {
  it('root rotations v1 → v2 → v3 with new keys each time verify and install; status names them', async () => {
    const repo = repoWith();
    const h = host(repo);
    repo.rotateRootKeys(2);
    repo.thresholds.root = 2;
    repo.publishRoot();
    repo.rotateRootKeys(3);
    repo.rotateKeys('timestamp');
    repo.publishRoot();
    repo.publish(fullRoot);
    const r = await h.import(bundleOf(repo));
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const out = JSON.parse(r.stdout);
    assert.equal(out.installed, true);
    assert.deepEqual(out.rotations, [2, 3]);
    assert.equal(out.anchorRootVersion, 1);
    assert.equal(out.versions.root, 3);
    assert.equal(out.freshness.state, 'fresh');
    assert.match(
      out.trustedRoot.source,
      /^installed \(TUF root v3, timestamp v2, verified \d{4}-\d\d-\d\d\)$/,
    );
    const s = await h.status();
    assert.equal(s.origin, 'installed');
    assert.equal(s.tufRootVersion, 3);
    assert.equal(s.installed.trustedRootSha256, out.trustedRoot.sha256);
    const rec = h.audit().filter((a) => a['event'] === 'trust.import');
    assert.equal(rec.length, 1);
    assert.equal(rec[0]!['outcome'], 'ok');
    assert.equal((rec[0]!['trust'] as { root: number }).root, 3);

    // The same bundle again: verified, nothing changed.
    const again = await h.import(bundleOf(repo));
    assert.equal(again.code, 0, again.stderr);
    assert.equal(JSON.parse(again.stdout).unchanged, true);
    assert.equal(h.trustSets().length, 1);
  });

  it('a root rotation not signed by the threshold of the root before it is refused, nothing installed', async () => {
    const repo = repoWith();
    const h = host(repo);
    repo.rotateRootKeys();
    // Signed by the new keys only: the old root's one required key did not sign.
    repo.publishRoot({ signers: repo.keys.root });
    repo.publish(fullRoot);
    assertRefused(await h.import(bundleOf(repo)), /root\.json: signed by 0 of 1 required keys/);
    assert.deepEqual(h.trustSets(), []);
    assert.equal((await h.status()).origin, 'embedded');
    const rec = h.audit().filter((a) => a['event'] === 'trust.import');
    assert.equal(rec[0]!['outcome'], 'failed');
    assert.equal(rec[0]!['code'], 'trusted-root');
  });

  it('targets.json signed by 1 of 2 required keys is refused', async () => {
    const repo = new TufRepo({ keysPerRole: 3, thresholds: { targets: 2 } });
    repo.publishRoot();
    repo.publish(oldRoot, { signers: { targets: repo.keys.targets.slice(0, 1) } });
    const h = host(repo);
    assertRefused(await h.import(bundleOf(repo)), /targets\.json: signed by 1 of 2 required keys/);
  });

  it('a root chain that skips a version is refused before any check, either way it is cut', async () => {
    const repo = repoWith();
    const h = host(repo);
    repo.publishRoot();
    repo.publishRoot();
    repo.publishRoot();
    repo.publish(fullRoot);
    assertRefused(
      await h.import(bundleOf(repo, { skip: [3] })),
      /the root chain: the root chain skips version 3 \(it has 2, then 4\)/,
    );
    assertRefused(
      await h.import(bundleOf(repo, { skip: [2] })),
      /carries root version 3 but not 2: this host trusts root version 1/,
    );
    assert.deepEqual(h.trustSets(), []);
  });

  it('rollback: an older timestamp, snapshot or targets than the installed one is refused and the installed trust stays', async () => {
    const repo = repoWith();
    const h = host(repo);
    repo.publish(oldRoot, { versions: { timestamp: 5, snapshot: 5, targets: 5 } });
    const first = await h.import(bundleOf(repo));
    assert.equal(first.code, 0, first.stderr);
    const installed = (await h.status()).installed.trustedRootSha256;

    repo.publish(fullRoot, { versions: { timestamp: 3, snapshot: 6, targets: 6 } });
    assertRefused(
      await h.import(bundleOf(repo)),
      /timestamp\.json: rollback: version 3 is older than version 5 already trusted here/,
    );
    repo.publish(fullRoot, { versions: { timestamp: 6, snapshot: 4, targets: 6 } });
    assertRefused(
      await h.import(bundleOf(repo)),
      /snapshot\.json: rollback: version 4 is older than version 5 already trusted here/,
    );
    repo.publish(fullRoot, { versions: { timestamp: 7, snapshot: 7, targets: 4 } });
    assertRefused(
      await h.import(bundleOf(repo)),
      /targets\.json: rollback: version 4 is older than version 5 already trusted here/,
    );
    const s = await h.status();
    assert.equal(s.installed.trustedRootSha256, installed, 'the installed trust is unchanged');
    assert.equal(s.installed.versions.timestamp, 5);
  });

  it('a tampered or oversized trusted_root.json is refused by its length and SHA-256', async () => {
    const repo = repoWith();
    const h = host(repo);
    const tampered = bundleOf(repo);
    const bytes = readFileSync(join(tampered, 'trusted_root.json'));
    bytes[bytes.length - 5] = bytes[bytes.length - 5]! ^ 0x01;
    writeFileSync(join(tampered, 'trusted_root.json'), bytes);
    assertRefused(
      await h.import(tampered),
      /trusted_root\.json: its length or SHA-256 is not what the signed metadata records \(Expected hash/,
    );

    const oversized = bundleOf(repo);
    writeFileSync(
      join(oversized, 'trusted_root.json'),
      Buffer.concat([
        readFileSync(join(oversized, 'trusted_root.json')),
        Buffer.alloc(1 << 20, 0x20),
      ]),
    );
    assertRefused(
      await h.import(oversized),
      /trusted_root\.json: its length or SHA-256 is not what the signed metadata records \(Max length reached\)/,
    );
    assert.deepEqual(h.trustSets(), []);
  });

  it('an expired timestamp: accepted STALE up to 7 days past its expiry, refused beyond', async () => {
    const now = Date.now();
    const at = (ms: number) => new Date(now + ms);
    const cases: [string, number, 'fresh' | 'stale' | 'refused'][] = [
      ['expires in an hour', 3_600_000, 'fresh'],
      ['expired 2 days ago', -2 * DAY, 'stale'],
      ['expired 7 days less 5 minutes ago', -7 * DAY + 300_000, 'stale'],
      ['expired 7 days and 5 minutes ago', -7 * DAY - 300_000, 'refused'],
      ['expired 30 days ago', -30 * DAY, 'refused'],
    ];
    for (const [what, offset, expect] of cases) {
      const repo = repoWith();
      repo.publish(oldRoot, { timestampExpires: at(offset) });
      const h = host(repo);
      const r = await h.import(bundleOf(repo));
      if (expect === 'refused') {
        assertRefused(r, /timestamp\.json: expired beyond the tolerance/);
        continue;
      }
      assert.equal(r.code, 0, `${what}: ${r.stderr}${r.stdout}`);
      assert.equal(JSON.parse(r.stdout).freshness.state, expect, what);
      if (expect === 'stale') {
        const text = await h.importText(bundleOf(repo));
        assert.match(text.stderr, /warning: the bundle is STALE: timestamp\.json expired .* ago/);
      }
    }
  });

  it('mix and match: a timestamp from another repository is refused', async () => {
    const a = repoWith();
    const b = repoWith(fullRoot);
    const h = host(a);
    const mixed = bundleOf(a);
    writeFileSync(join(mixed, 'timestamp.json'), b.timestamp);
    assertRefused(await h.import(mixed), /timestamp\.json: signed by 0 of 1 required keys/);
    const mixed2 = bundleOf(a);
    writeFileSync(join(mixed2, 'snapshot.json'), b.snapshot);
    assertRefused(await h.import(mixed2), /snapshot/);
  });

  it('a bundle file that is a symlink is not followed', async () => {
    const repo = repoWith();
    const h = host(repo);
    const b = bundleOf(repo);
    rmSync(join(b, 'timestamp.json'));
    writeFileSync(join(dir, 'elsewhere.json'), repo.timestamp);
    symlinkSync(join(dir, 'elsewhere.json'), join(b, 'timestamp.json'));
    const r = await h.import(b);
    assert.equal(r.code, 3, r.stderr + r.stdout);
    assert.deepEqual(h.trustSets(), []);
  });
});

describe('trust import: a new Rekor shard', () => {
  it('a bundle logged in a shard only the new root lists fails before the import (naming trust import) and verifies after', async () => {
    const repo = repoWith(oldRoot);
    const h = host(repo);
    assert.equal((await h.import(bundleOf(repo))).code, 0);

    const manifest = Buffer.from('{"schema_version":1,"version":"0.14.0"}\n');
    const artifact = join(dir, `m${n++}.json`);
    writeFileSync(artifact, manifest);
    const bundle = join(dir, `m${n++}.bundle`);
    writeFileSync(bundle, JSON.stringify(await pki.signBlob(manifest, { rekorV2: true })));
    const verify = () =>
      h.run([
        'verify-blob',
        '--bundle',
        bundle,
        '--certificate-identity',
        releaseIdentity('tinylabscom/mvm', 'v0.14.0'),
        '--certificate-oidc-issuer',
        GITHUB_ISSUER,
        artifact,
      ]);
    const before = await verify();
    assert.equal(before.code, 10, before.stderr);
    assert.match(before.stderr, /Trusted root|trusted root/);
    assert.match(before.stderr, /mvmctl trust import/);

    repo.publish(fullRoot);
    const r = await h.import(bundleOf(repo));
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).authorities.tlogs.length, 2);
    const afterImport = await verify();
    assert.equal(afterImport.code, 0, afterImport.stderr);
    assert.match(afterImport.stderr, /Trusted root: +installed \(TUF root v1, timestamp v2/);
  });
});

const ONLINE = {
  MVM_OFFLINE: '',
  MVM_HTTP_TIMEOUT_SECONDS: '5',
  HTTP_PROXY: '',
  HTTPS_PROXY: '',
  http_proxy: '',
  https_proxy: '',
};

describe('trust fetch → carry → trust import', () => {
  it('fetches from a loopback TUF repository, writes a bundle that imports on a host with no network', async () => {
    const repo = repoWith();
    repo.rotateRootKeys();
    repo.publishRoot();
    repo.publishRoot();
    repo.publish(fullRoot);
    const served = await serveDir(repo.writeRepository(join(dir, `repo${n++}`)));
    try {
      const connected = host(repo);
      const out = join(dir, `fetched${n++}`);
      const r = await runMvm(
        ['trust', 'fetch', '--out', out, '--repository', served.url, '--json'],
        { ...connected.env, ...ONLINE },
      );
      assert.equal(r.code, 0, r.stderr + r.stdout);
      const f = JSON.parse(r.stdout);
      assert.equal(f.versions.root, 3);
      assert.deepEqual(f.rotations, [2, 3]);
      assert.deepEqual(readdirSync(out).sort(), [
        '2.root.json',
        '3.root.json',
        'snapshot.json',
        'targets.json',
        'timestamp.json',
        'trusted_root.json',
      ]);
      // The client asked as a TUF client does: the next roots until a 404, then the consistent names.
      assert.deepEqual(served.paths.slice(0, 4), [
        '/2.root.json',
        '/3.root.json',
        '/4.root.json',
        '/timestamp.json',
      ]);
      assert.ok(served.paths.includes(`/${repo.versions.snapshot}.snapshot.json`));
      assert.ok(served.paths.some((p) => /^\/targets\/[0-9a-f]{64}\.trusted_root\.json$/.test(p)));
      assert.deepEqual(connected.trustSets(), [], 'trust fetch installs nothing');

      const airGapped = host(repo);
      const imported = await airGapped.import(out);
      assert.equal(imported.code, 0, imported.stderr + imported.stdout);
      assert.equal(JSON.parse(imported.stdout).versions.root, 3);
      assert.equal(JSON.parse(imported.stdout).trustedRoot.sha256, f.trustedRootSha256);
    } finally {
      await served.close();
    }
  });

  it('a repository whose snapshot does not verify writes nothing; offline refuses at once', async () => {
    const repo = repoWith();
    const other = repoWith();
    const root = repo.writeRepository(join(dir, `repo${n++}`));
    writeFileSync(join(root, `${repo.versions.snapshot}.snapshot.json`), other.snapshot);
    const served = await serveDir(root);
    try {
      const h = host(repo);
      const out = join(dir, `fetched${n++}`);
      const r = await runMvm(
        ['trust', 'fetch', '--out', out, '--repository', served.url, '--json'],
        {
          ...h.env,
          ...ONLINE,
        },
      );
      assert.equal(r.code, 3, r.stderr + r.stdout);
      assert.match(
        JSON.parse(r.stdout).error.message,
        /^The TUF repository http:\/\/127\.0\.0\.1:\d+ does not verify: snapshot/,
      );
      assert.equal(existsSync(out), false, 'nothing written');

      const asked = served.paths.length;
      const off = await runMvm(['trust', 'fetch', '--out', out, '--repository', served.url], {
        ...h.env,
        MVM_OFFLINE: '1',
      });
      assert.equal(off.code, 16, off.stderr);
      assert.match(off.stderr, /offline .* nothing was requested/);
      assert.equal(served.paths.length, asked, 'offline: no request was made');
    } finally {
      await served.close();
    }
  });
});
