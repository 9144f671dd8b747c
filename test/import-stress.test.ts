/**
 * Crash safety and concurrency of `dev import-image` against a real store:
 * kill -9 at several moments of a large import, and many imports at once.
 * The invariant: `v{version}` is absent, the previous complete image or the
 * new complete image; counters equal the outcomes.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLI } from './support/cli.js';
import { gatedCp, HOST_ARCH, importArgs, testHost, VERSION } from './support/host.js';
import { TestPki } from './support/pki.js';
import { writeReleaseSet, type ReleaseFiles } from './support/release.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

let root: string;
let pki: TestPki;
let trustedRoot: string;
let small: ReleaseFiles;
let large: ReleaseFiles;
let n = 0;

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'mvm-stress-'));
  pki = await TestPki.create();
  trustedRoot = pki.writeTrustedRoot(root);
  small = await writeReleaseSet(pki, join(root, 'small'), { version: VERSION, arch: HOST_ARCH });
  // 256 MiB: big enough that a kill lands while it is being hashed and copied.
  const rootfs = Buffer.alloc(256 * 1024 * 1024);
  for (let i = 0; i < rootfs.length; i += 4096) rootfs.writeUInt32LE(i, i);
  large = await writeReleaseSet(pki, join(root, 'large'), {
    version: VERSION,
    arch: HOST_ARCH,
    rootfs,
  });
});
after(() => rmSync(root, { recursive: true, force: true }));

const host = () => testHost(join(root, `host${n++}`), trustedRoot);

/** The store invariant: the version is absent or exactly one of the given complete images. */
function installedImage(prebuilt: string, candidates: ReleaseFiles[]): ReleaseFiles | 'absent' {
  const dir = join(prebuilt, `v${VERSION}`);
  if (!existsSync(dir)) return 'absent';
  const receipt = JSON.parse(readFileSync(join(dir, 'receipt.json'), 'utf8'));
  const rootfs = sha(readFileSync(join(dir, receipt.artifacts.rootfs.file)));
  const kernel = sha(readFileSync(join(dir, receipt.artifacts.kernel.file)));
  const match = candidates.find(
    (c) => sha(c.rootfsBytes) === rootfs && sha(c.kernelBytes) === kernel,
  );
  assert.ok(match, 'the installed image is one complete image, not a mix or a partial copy');
  assert.equal(receipt.artifacts.rootfs.sha256, rootfs);
  assert.deepEqual(readFileSync(join(dir, 'manifest.json')), readFileSync(match.manifest));
  return match;
}

/** A moment of an import, observed on disk in the staging object it is building. */
type Moment = (object: string) => boolean;
const size = (p: string): number => {
  try {
    return statSync(p).size;
  } catch {
    return -1;
  }
};
const ROOTFS = 'rootfs.ext4';
const MOMENTS: [string, Moment][] = [
  ['the staging object exists', () => true],
  ['the rootfs copy has begun', (o) => size(join(o, ROOTFS)) > 0],
  ['half the rootfs is copied', (o) => size(join(o, ROOTFS)) >= large.rootfsBytes.length / 2],
  [
    'the rootfs is copied (hashing may still run)',
    (o) => size(join(o, ROOTFS)) === large.rootfsBytes.length,
  ],
  ['the receipt is written (the publish is next)', (o) => existsSync(join(o, 'receipt.json'))],
];

/**
 * Starts an import of `set` and kills it (and its cp) with SIGKILL as soon as
 * `moment` is seen in the staging object it creates, or lets it finish if it
 * gets past the moment unseen. Resolves with the exit code (null when killed).
 */
async function killAt(
  h: ReturnType<typeof host>,
  set: ReleaseFiles,
  moment: Moment,
): Promise<{ code: number | null; killed: boolean; stderr: string }> {
  const objects = join(h.prebuilt, '.objects');
  const before = new Set(existsSync(objects) ? readdirSync(objects) : []);
  const child = spawn(process.execPath, [CLI, ...importArgs(set)], {
    env: { ...process.env, ...h.env },
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: true, // its own process group: the kill takes its cp too
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  let exit: number | null | undefined;
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r((exit = code))));
  let killed = false;
  while (exit === undefined) {
    const fresh = (existsSync(objects) ? readdirSync(objects) : []).filter((o) => !before.has(o));
    if (fresh.some((o) => moment(join(objects, o)))) {
      process.kill(-child.pid!, 'SIGKILL');
      killed = true;
      break;
    }
    await new Promise((r) => setImmediate(r));
  }
  return { code: await exited, killed, stderr };
}

describe('crash safety', () => {
  it('kill -9 at each moment of an import leaves the old or the new complete image; the next import succeeds and cleans up', async () => {
    const h = host();
    assert.equal((await h.importSet(small)).code, 0);
    const seen = new Set<string>();
    let sawLeftover = false;
    for (const [name, moment] of MOMENTS) {
      const { code, killed, stderr } = await killAt(h, large, moment);
      assert.ok(code === null || code === 0, `${name}: the import itself must not fail: ${stderr}`);
      if (killed && readdirSync(join(h.prebuilt, '.objects')).length > 1) sawLeftover = true;
      const img = installedImage(h.prebuilt, [small, large]);
      seen.add(img === 'absent' ? 'absent' : img === small ? 'old' : 'new');
      assert.notEqual(img, 'absent', `${name}: a published version never disappears on a crash`);
      // Make the next round start from the old image again when this one completed.
      if (img === large) assert.equal((await h.importSet(small)).code, 0);
    }
    // The kills really interrupted imports: at least one round left the old image in place.
    assert.ok(seen.has('old'), `rounds ended with: ${[...seen].join(', ')}`);
    assert.ok(sawLeftover, 'at least one kill landed while an image was being staged');
    const r = await h.importSet(large);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(installedImage(h.prebuilt, [large]), large);
    assert.deepEqual(
      readdirSync(join(h.prebuilt, '.objects')).length,
      1,
      'leftover staging from killed runs was removed',
    );
    assert.deepEqual(
      readdirSync(h.prebuilt).filter((f) => f.startsWith('.link-')),
      [],
      'no temporary link left',
    );
  });

  it('a kill while the copy is held mid-way always leaves the old image and a leftover that the next run removes', async () => {
    const h = host();
    assert.equal((await h.importSet(small)).code, 0);
    const gate = gatedCp(h.dir);
    const child = spawn(process.execPath, [CLI, ...importArgs(large)], {
      env: { ...process.env, ...h.env, ...gate.env },
      stdio: ['ignore', 'ignore', 'pipe'],
      detached: true,
    });
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    await gate.started(2, exited);
    process.kill(-child.pid!, 'SIGKILL');
    assert.equal(await exited, null);
    assert.equal(readdirSync(join(h.prebuilt, '.objects')).length, 2, 'the staging object is left');
    assert.equal(installedImage(h.prebuilt, [small, large]), small);
    assert.equal((await h.importSet(small)).code, 0);
    assert.equal(
      readdirSync(join(h.prebuilt, '.objects')).length,
      1,
      'and removed by the next run',
    );
  });
});

describe('concurrency', () => {
  it('8 imports of the same set at once: all succeed, one consistent image, 8 counted', async () => {
    const h = host();
    const results = await Promise.all(Array.from({ length: 8 }, () => h.importSet(small)));
    for (const r of results) assert.equal(r.code, 0, r.stderr);
    assert.equal(installedImage(h.prebuilt, [small]), small);
    const m = await h.metrics();
    // One installs; the others verify and find it installed (or install it first): 8 verifications.
    assert.equal(m['dev_image_verify_ok_total']! + m['dev_image_verify_unchanged_total']!, 8);
    assert.ok(m['dev_image_verify_ok_total']! >= 1);
    assert.equal(h.audit().length, 8);
    const duration = m['dev_image_verify_duration_seconds'] as unknown as { count: number };
    assert.equal(duration.count, 8);
  });

  it('8 imports of two different sets at once: the store ends with one of them, complete; then cleans up', async () => {
    const h = host();
    const other = await writeReleaseSet(pki, join(root, 'other'), {
      version: VERSION,
      arch: HOST_ARCH,
      rootfs: Buffer.from('another build '.repeat(100_000)),
    });
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) => h.importSet(i % 2 ? small : other)),
    );
    for (const r of results) assert.equal(r.code, 0, r.stderr);
    const img = installedImage(h.prebuilt, [small, other]);
    assert.notEqual(img, 'absent');
    const m = await h.metrics();
    assert.equal(m['dev_image_verify_ok_total']! + m['dev_image_verify_unchanged_total']!, 8);
    assert.equal((await h.importSet(img as ReleaseFiles)).code, 0);
    assert.equal(readdirSync(join(h.prebuilt, '.objects')).length, 1);
  });

  it('mixed outcomes at once: every counter equals the number of its outcomes', async () => {
    const h = host();
    const bad = await writeReleaseSet(pki, join(root, 'bad-rootfs'), {
      version: VERSION,
      arch: HOST_ARCH,
      rootfs: Buffer.from('bad set rootfs'),
    });
    writeFileSync(bad.rootfs, 'tampered');
    const badSig = { ...small, bundle: bad.bundle };
    const plan = [small, bad, badSig, small, bad, badSig, small, small, bad, small];
    const results = await Promise.all(plan.map((s) => h.importSet(s)));
    const exits = results.map((r) => r.code);
    assert.deepEqual(
      exits,
      plan.map((s) => (s === small ? 0 : s === bad ? 14 : 10)),
    );
    const m = await h.metrics();
    assert.equal(m['dev_image_verify_ok_total']! + m['dev_image_verify_unchanged_total']!, 5);
    assert.equal(m['dev_image_verify_digest_mismatch_total'], 3);
    assert.equal(m['dev_image_verify_sig_invalid_total'], 2);
    assert.equal(h.audit().length, 10);
    // Concurrent writers still leave one unbroken hash chain.
    const tail = await h.run(['audit', 'tail', '-n', '3', '--json']);
    assert.equal(tail.code, 0, tail.stderr);
    const audit = JSON.parse(tail.stdout);
    assert.deepEqual(audit.chain, { intact: true });
    assert.equal(audit.records, 10);
    assert.deepEqual(
      h.audit().map((r) => r['seq']),
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    );
    assert.equal(installedImage(h.prebuilt, [small]), small);
  });
});
