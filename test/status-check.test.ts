/**
 * `mvmctl status` for people and for monitoring: states spelled out with
 * correct plurals, and `--check` exiting 19 (naming each problem) when this
 * mvmctl's image is recalled, UNVERIFIED or expired, the cached list does not
 * verify, or the audit chain is broken. CLI as a subprocess, real stores.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { HOST_ARCH, testHost, VERSION, type TestHost } from './support/host.js';
import { TestPki } from './support/pki.js';
import { writeReleaseSet, writeRevocationList, type ReleaseFiles } from './support/release.js';
import { suiteWorld } from './support/world.js';

let root: string;
let pki: TestPki;
let trustedRoot: string;
let good: ReleaseFiles;
let n = 0;

before(async () => ({ root, pki, trustedRoot, good } = await suiteWorld('mvm-status-')));
after(() => rmSync(root, { recursive: true, force: true }));

async function installedHost(set = good, env: Record<string, string> = {}): Promise<TestHost> {
  const h = testHost(join(root, `h${n++}`), trustedRoot);
  const r = await h.importSet(set, [], env);
  assert.equal(r.code, 0, r.stderr);
  return h;
}

async function check(h: TestHost) {
  const human = await h.run(['status', '--check']);
  const json = await h.run(['status', '--check', '--json']);
  return {
    human,
    json,
    doc: JSON.parse(json.stdout) as { check: { ok: boolean; problems: string[] } },
  };
}

describe('status --check', () => {
  it('a healthy host: exit 0, check.ok', async () => {
    const h = await installedHost();
    await writeRevocationList(pki, h.revocations, [{ version: '0.0.1' }]);
    const { human, json, doc } = await check(h);
    assert.equal(human.code, 0, human.stderr);
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(doc.check, { ok: true, problems: [] });
    assert.match(
      human.stdout,
      /^Dev image \(what dev up boots\): v[\d.]+, verified, not recalled$/m,
    );
    assert.match(human.stdout, /^Revocation list: verified, 1 entry, /m);
    assert.match(human.stdout, /^Audit log: chain intact \(1 record\)$/m);
    assert.match(human.stdout, /^Store: no leftovers$/m);
  });

  it('the current image recalled: exit 19 naming the recall; plain status still exits 0', async () => {
    const h = await installedHost();
    await writeRevocationList(pki, h.revocations, [
      { version: VERSION, arch: HOST_ARCH, reason: 'CVE-2026-7777: test' },
    ]);
    const { human, json, doc } = await check(h);
    assert.equal(human.code, 19, human.stderr);
    assert.match(human.stderr, /✗ v[\d.]+ \(this mvmctl's image\) is RECALLED: CVE-2026-7777/);
    assert.match(human.stdout, /RECALLED \(CVE-2026-7777: test\)/);
    assert.equal(json.code, 19);
    assert.equal(doc.check.ok, false);
    assert.equal(doc.check.problems.length, 1);
    assert.equal((await h.run(['status'])).code, 0);
  });

  it('the current image UNVERIFIED (installed with an escape hatch): exit 19', async () => {
    const h = await installedHost(good, { MVM_SKIP_HASH_VERIFY: '1' });
    const { human, doc } = await check(h);
    assert.equal(human.code, 19, human.stderr);
    assert.match(human.stderr, /is UNVERIFIED \(installed with MVM_SKIP_HASH_VERIFY\)/);
    assert.match(human.stdout, /\(this mvmctl\) {2}UNVERIFIED, not recalled/);
    assert.equal(doc.check.problems.length, 1);
  });

  it('the current image past its not_after (already at install): exit 19', async () => {
    const expired = await writeReleaseSet(pki, join(root, `expired${n++}`), {
      version: VERSION,
      arch: HOST_ARCH,
      builtAt: new Date(Date.now() - 100 * 86_400_000),
      notAfter: new Date(Date.now() - 10 * 86_400_000),
    });
    const h = await installedHost(expired);
    const { human } = await check(h);
    assert.equal(human.code, 19, human.stderr);
    assert.match(human.stderr, /is past its not_after/);
    assert.match(human.stdout, /EXPIRED \(already at install\)/);
  });

  it('a broken audit chain: exit 19; another version recalled alone is not a problem', async () => {
    const h = await installedHost();
    await writeRevocationList(pki, h.revocations, [{ version: '0.0.1' }]);
    const log = join(h.dir, 'data', 'telemetry', 'audit.jsonl');
    const text = readFileSync(log, 'utf8');
    writeFileSync(log, text.replace('"outcome":"ok"', '"outcome":"OK"'));
    const { human, doc } = await check(h);
    assert.equal(human.code, 19, human.stderr);
    assert.match(human.stderr, /✗ the audit log's chain is broken/);
    assert.equal(doc.check.problems.length, 1, doc.check.problems.join('\n'));
  });

  it('nothing installed is no problem for --check, and says how to install', async () => {
    const h = testHost(join(root, `h${n++}`), trustedRoot);
    mkdirSync(h.dir, { recursive: true });
    const { human, doc } = await check(h);
    assert.equal(human.code, 0, human.stderr);
    assert.equal(doc.check.ok, true);
    assert.match(human.stdout, /NOT INSTALLED \(mvmctl dev pull, or dev import-image --dir DIR\)/);
    assert.match(human.stdout, /^Revocation list: NONE cached/m);
  });
});
