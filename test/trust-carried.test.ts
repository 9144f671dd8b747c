/**
 * A trust bundle in a transfer set, end to end through the built CLI: `dev fetch` on a connected
 * host (a release location and a TUF repository, both real HTTP servers on 127.0.0.1) writes
 * DIR/trust and verifies the set with the trusted root it fetched; `dev import-image --dir` on a
 * host with no network at all (`unshare -n`) imports it first. The release and its revocation
 * list are signed in a Rekor shard (the test PKI's Ed25519 v2 log) that only the new trusted root
 * lists: before the import both fail naming `mvmctl trust import`, after it both verify.
 * TUF is real (tuf-js on metadata the tests sign, test/support/tuf-repo.ts), so is Sigstore.
 */
import assert from 'node:assert/strict';
import {
  chmodSync,
  cpSync,
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
import { HOST_ARCH, VERSION } from './support/host.js';
import { TestPki } from './support/pki.js';
import { onlineEnv, ReleaseServer, runMvm } from './support/release-server.js';
import { writeReleaseSet, writeRevocationList } from './support/release.js';
import { serveDir, TufRepo } from './support/tuf-repo.js';

const NET = ['unshare', '-n', '--'];
const DAY = 86_400_000;

let dir: string;
let pki: TestPki;
/** The PKI's trusted root, and the same without its Rekor v2 shard: the root before the shard. */
let fullRoot: Buffer;
let oldRoot: Buffer;
/** The repository: v1 published with the old root, then v2 with the full one. */
let repo: TufRepo;
let oldBundle: string;
let tuf: Awaited<ReturnType<typeof serveDir>>;
let server: ReleaseServer;
let n = 0;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mvm-carried-'));
  pki = await TestPki.create();
  const full = pki.trustedRoot();
  fullRoot = Buffer.from(JSON.stringify(full, null, 2));
  oldRoot = Buffer.from(
    JSON.stringify({ ...full, tlogs: (full['tlogs'] as unknown[]).slice(0, 1) }, null, 2),
  );
  repo = new TufRepo();
  repo.publishRoot();
  repo.publish(oldRoot);
  oldBundle = repo.writeBundle(join(dir, 'old-bundle'));
  repo.publish(fullRoot);
  tuf = await serveDir(repo.writeRepository(join(dir, 'tuf')));
  // Signed as Sigstore signs today: in the Rekor v2 shard, with an RFC 3161 timestamp.
  const release = join(dir, 'release', `v${VERSION}`);
  await writeReleaseSet(pki, release, { version: VERSION, arch: HOST_ARCH, rekorV2: true });
  const lists = join(dir, 'lists');
  await writeRevocationList(pki, lists, [{ version: '0.1.0' }], { rekorV2: true });
  server = await ReleaseServer.start({ releases: { [VERSION]: release }, revocations: lists });
});

after(async () => {
  await server?.close();
  await tuf?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A host anchored on the repository's first root (MVM_TUF_ROOT), as a private deployment is. */
function host(extra: Record<string, string> = {}) {
  const h = join(dir, `h${n++}`);
  mkdirSync(h, { recursive: true });
  chmodSync(h, 0o700);
  const anchor = join(h, 'tuf-root.json');
  writeFileSync(anchor, repo.roots[0]!);
  const env = {
    MVM_DATA_DIR: join(h, 'data'),
    MVM_CACHE_DIR: join(h, 'cache'),
    XDG_CACHE_HOME: join(h, 'xdg'),
    MVM_TUF_ROOT: anchor,
    ...extra,
  };
  return {
    env,
    prebuilt: join(env.MVM_DATA_DIR, 'dev', 'prebuilt'),
    trustSets: () =>
      existsSync(join(env.MVM_DATA_DIR, 'trust'))
        ? readdirSync(join(env.MVM_DATA_DIR, 'trust')).filter((f) => /^r\d+-t\d+-/.test(f))
        : [],
    audit: (): Record<string, unknown>[] => {
      const p = join(env.MVM_DATA_DIR, 'telemetry', 'audit.jsonl');
      return existsSync(p)
        ? readFileSync(p, 'utf8')
            .trim()
            .split('\n')
            .map((l) => JSON.parse(l))
        : [];
    },
  };
}

/** A connected host: the loopback release location and TUF repository. */
const connected = () => host({ ...onlineEnv(server.baseUrl), MVM_TUF_REPOSITORY: tuf.url });
/** An air-gapped host: no network namespace to reach anything, and MVM_OFFLINE=1. */
function airGapped() {
  const h = host({ MVM_OFFLINE: '1' });
  return { ...h, run: (args: string[]) => runMvm(args, h.env, { wrapper: NET }) };
}

/** One `dev fetch` transfer set with its trust bundle, shared by the tests that only read it. */
let fetched: { dir: string; json: Record<string, any> } | undefined; // eslint-disable-line @typescript-eslint/no-explicit-any
async function transferSet() {
  if (fetched) return fetched;
  const c = connected();
  const out = join(dir, 'set');
  const r = await runMvm(['dev', 'fetch', '--out', out, '--json'], c.env);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  fetched = { dir: out, json: JSON.parse(r.stdout) };
  return fetched;
}
/** A private copy of the transfer set, to change. */
async function copyOfSet(): Promise<string> {
  const copy = join(dir, `set${n++}`);
  cpSync((await transferSet()).dir, copy, { recursive: true });
  return copy;
}

describe('dev fetch carries a trust bundle', () => {
  it('writes DIR/trust from the TUF repository and verifies the set with the root it fetched', async () => {
    const c = connected();
    const out = join(dir, `set${n++}`);
    const r = await runMvm(['dev', 'fetch', '--out', out], c.env);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    // The trust in force here is the embedded public-good root, which knows nothing of the test
    // PKI: the set verified only because it was checked with the root just fetched.
    assert.match(
      r.stderr,
      /✓ trust +TUF-verified trusted root from http:\/\/127\.0\.0\.1:\d+ \(root v1, timestamp v2, expires /,
    );
    assert.match(r.stderr, /✓ signature/);
    assert.match(
      r.stdout,
      /Trust bundle: trust\/ \(TUF root v1, timestamp v2\); import the set by /,
    );
    assert.deepEqual(readdirSync(join(out, 'trust')).sort(), [
      'snapshot.json',
      'targets.json',
      'timestamp.json',
      'trusted_root.json',
    ]);
    assert.deepEqual(readFileSync(join(out, 'trust', 'trusted_root.json')), fullRoot);
    assert.ok(tuf.paths.includes('/2.root.json'), 'the root walk asked for the next root');
    // Nothing was installed on the connected host: the bundle is for carrying.
    assert.deepEqual(c.trustSets(), []);

    const { json } = await transferSet();
    assert.equal(json['trust'].state, 'carried');
    assert.deepEqual(json['trust'].versions, { root: 1, timestamp: 2, snapshot: 2, targets: 2 });
    assert.equal(
      Date.parse(json['trust'].importBy) - Date.parse(json['trust'].expires.timestamp),
      7 * DAY,
    );
  });

  it('dev pull fetches the bundle into its staging directory and imports it with the image', async () => {
    const c = connected();
    const r = await runMvm(['dev', 'pull'], c.env);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(
      r.stderr,
      /✓ trust +imported the set's trust bundle: installed \(TUF root v1, timestamp v2, verified /,
    );
    assert.equal(c.trustSets().length, 1);
    assert.ok(existsSync(join(c.prebuilt, `v${VERSION}`, 'receipt.json')));
  });

  it('--no-trust-bundle leaves it out and asks the TUF repository nothing; then the set does not verify here', async () => {
    const c = connected();
    const before = tuf.paths.length;
    const out = join(dir, `set${n++}`);
    const r = await runMvm(['dev', 'fetch', '--out', out, '--no-trust-bundle', '--json'], c.env);
    // Without the fetched root, the embedded public-good root is used, and it lacks the test PKI.
    assert.equal(r.code, 10, r.stderr + r.stdout);
    assert.equal(tuf.paths.length, before);
    assert.equal(existsSync(join(out, 'trust')), false);
  });

  it('a TUF repository that cannot be reached stops dev fetch with exit 16 naming the way out', async () => {
    const c = host({ ...onlineEnv(server.baseUrl), MVM_TUF_REPOSITORY: 'http://127.0.0.1:9' });
    const out = join(dir, `set${n++}`);
    const r = await runMvm(['dev', 'fetch', '--out', out, '--json'], c.env);
    assert.equal(r.code, 16, r.stderr + r.stdout);
    const err = JSON.parse(r.stdout).error;
    assert.match(err.fix, /MVM_TUF_REPOSITORY/);
    assert.match(err.fix, /--no-trust-bundle/);
    assert.equal(existsSync(join(out, 'trust', 'trusted_root.json')), false);
  });

  it('with --trusted-root or MVM_TRUSTED_ROOT naming the root, no bundle is carried and the set says why', async () => {
    const file = join(dir, `h${n++}`);
    mkdirSync(file, { mode: 0o700 });
    const c = host({
      ...onlineEnv(server.baseUrl),
      MVM_TUF_REPOSITORY: tuf.url,
      MVM_TRUSTED_ROOT: pki.writeTrustedRoot(file),
    });
    const out = join(dir, `set${n++}`);
    const r = await runMvm(['dev', 'fetch', '--out', out, '--json'], c.env);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const trust = JSON.parse(r.stdout)['trust'];
    assert.equal(trust.state, 'not-carried');
    assert.match(
      trust.reason,
      /the trusted root is the file .* \(--trusted-root or MVM_TRUSTED_ROOT\)/,
    );
    assert.equal(existsSync(join(out, 'trust')), false);
  });
});

describe('dev import-image --dir imports the set’s trust bundle first (no network)', () => {
  it('before: the release and the revocation list in the new shard fail naming trust import; with the bundle both verify', async () => {
    const a = airGapped();
    // This host already trusts the repository's v1 metadata, whose root lacks the shard.
    const old = await a.run(['trust', 'import', oldBundle, '--json']);
    assert.equal(old.code, 0, old.stderr + old.stdout);

    const withoutTrust = await copyOfSet();
    rmSync(join(withoutTrust, 'trust'), { recursive: true });
    const manifest = await a.run(['dev', 'import-image', '--dir', withoutTrust, '--json']);
    assert.equal(manifest.code, 10, manifest.stderr + manifest.stdout);
    const mErr = JSON.parse(manifest.stdout).error;
    assert.match(mErr.message, /^Cosign verification failed for the imported manifest/);
    assert.match(mErr.cause, /installed trusted root, installed \(TUF root v1, timestamp v1/);
    assert.match(mErr.cause, /does not know the transparency log/);
    assert.match(mErr.fix, /mvmctl trust import DIR/);

    const list = await a.run([
      'revocations',
      'import',
      '--list',
      join(withoutTrust, 'revoked-versions.json'),
      '--bundle',
      join(withoutTrust, 'revoked-versions.json.bundle'),
      '--json',
    ]);
    assert.equal(list.code, 10, list.stderr + list.stdout);
    const lErr = JSON.parse(list.stdout).error;
    assert.match(lErr.cause, /does not know the transparency log the list was logged in/);
    assert.match(lErr.fix, /mvmctl trust import DIR/);
    assert.equal(existsSync(a.prebuilt), false);

    const set = await copyOfSet();
    const r = await a.run(['dev', 'import-image', '--dir', set]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(
      r.stderr,
      /✓ trust +imported the set's trust bundle: installed \(TUF root v1, timestamp v2, verified /,
    );
    assert.match(r.stderr, /✓ revocation {2}installed the set's revocation list \(1 entry\)/);
    const status = await a.run(['trust', 'status', '--json']);
    const s = JSON.parse(status.stdout);
    assert.equal(s.origin, 'installed');
    assert.equal(s.installed.versions.timestamp, 2);
    // The receipt names the root the set was checked with.
    const receipt = JSON.parse(
      readFileSync(join(a.prebuilt, `v${VERSION}`, 'receipt.json'), 'utf8'),
    );
    assert.match(receipt.trustedRoot.source, /^installed \(TUF root v1, timestamp v2/);
    const events = a.audit().filter((e) => e['event'] === 'trust.import');
    assert.deepEqual(
      events.map((e) => e['outcome']),
      ['ok', 'ok'],
    );

    // Once more: already installed, nothing changes.
    const again = await a.run(['dev', 'import-image', '--dir', set]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, /✓ trust +the set's trust bundle is already installed/);
    assert.equal(a.trustSets().length, 2);
  });

  it('a bundle older than the installed trust is left out, and the import goes on with the installed one', async () => {
    const a = airGapped();
    const set = await copyOfSet();
    assert.equal((await a.run(['trust', 'import', join(set, 'trust')])).code, 0);
    const older = await copyOfSet();
    rmSync(join(older, 'trust'), { recursive: true });
    cpSync(oldBundle, join(older, 'trust'), { recursive: true });
    const r = await a.run(['dev', 'import-image', '--dir', older]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(
      r.stderr,
      /! trust +the set's trust bundle was not imported: it is older \(timestamp v1\) than the trust installed here \(root v1, timestamp v2\)/,
    );
    assert.equal(a.trustSets().length, 1);
  });

  it('a bundle expired beyond 7 days is left out with a line saying so; the set then fails on its signature', async () => {
    const stale = new TufRepo({ now: new Date(Date.now() - 40 * DAY) });
    // The same keys would be needed to verify: a repository of its own, anchored on its own root.
    stale.publishRoot();
    stale.publish(fullRoot);
    const a = airGapped();
    writeFileSync(a.env.MVM_TUF_ROOT, stale.roots[0]!);
    const set = await copyOfSet();
    rmSync(join(set, 'trust'), { recursive: true });
    stale.writeBundle(join(set, 'trust'));
    const r = await a.run(['dev', 'import-image', '--dir', set]);
    assert.match(
      r.stderr,
      /! trust +the set's trust bundle was not imported: its timestamp\.json expired .*, more than 7 days ago/,
    );
    // The embedded public-good root does not know the test PKI: refused, nothing installed.
    assert.equal(r.code, 10, r.stderr + r.stdout);
    assert.deepEqual(a.trustSets(), []);
    assert.equal(existsSync(a.prebuilt), false);
  });

  it('a tampered bundle stops the import: exit 3, nothing in the store, no trust installed, audited', async () => {
    const a = airGapped();
    const set = await copyOfSet();
    const target = join(set, 'trust', 'trusted_root.json');
    const t = JSON.parse(readFileSync(target, 'utf8'));
    t.tlogs.push(t.tlogs[0]);
    writeFileSync(target, JSON.stringify(t));
    const r = await a.run(['dev', 'import-image', '--dir', set, '--json']);
    assert.equal(r.code, 3, r.stderr + r.stdout);
    const err = JSON.parse(r.stdout).error;
    assert.match(err.message, /^The trust bundle .* does not verify: trusted_root\.json: /);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
    assert.equal(existsSync(a.prebuilt), false);
    assert.deepEqual(a.trustSets(), []);
    assert.ok(
      a.audit().some((e) => e['event'] === 'trust.import' && e['outcome'] === 'failed'),
      JSON.stringify(a.audit()),
    );
  });

  it('trust/ as a symbolic link is refused (exit 3) and nothing is read through it', async () => {
    const a = airGapped();
    const set = await copyOfSet();
    const real = join(dir, `elsewhere${n++}`);
    cpSync(join(set, 'trust'), real, { recursive: true });
    rmSync(join(set, 'trust'), { recursive: true });
    symlinkSync(real, join(set, 'trust'));
    const r = await a.run(['dev', 'import-image', '--dir', set, '--json']);
    assert.equal(r.code, 3, r.stderr + r.stdout);
    assert.match(
      JSON.parse(r.stdout).error.message,
      /trust is not a directory \(a symbolic link\)/,
    );
    assert.deepEqual(a.trustSets(), []);
    assert.equal(existsSync(a.prebuilt), false);
  });
});
