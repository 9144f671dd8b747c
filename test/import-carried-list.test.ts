/**
 * `dev import-image --dir` with the revocation pair a transfer set carries
 * (as `dev fetch` writes it): installed before the recall check when it
 * verifies and is not older than the cached list; a pair that does not verify
 * fails closed; an older one leaves the cached list in force; half a pair is
 * an input error. CLI as a subprocess, real files, lists signed by the test PKI.
 */
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { HOST_ARCH, testHost, VERSION } from './support/host.js';
import { TestPki } from './support/pki.js';
import { writeReleaseSet, writeRevocationList } from './support/release.js';

const LIST = 'revoked-versions.json';
const BUNDLE = 'revoked-versions.json.bundle';

let root: string;
let pki: TestPki;
let trustedRoot: string;
let setDir: string;
let n = 0;

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'mvm-carried-'));
  pki = await TestPki.create();
  trustedRoot = pki.writeTrustedRoot(root);
  setDir = join(root, 'set');
  await writeReleaseSet(pki, setDir, { version: VERSION, arch: HOST_ARCH });
});
after(() => rmSync(root, { recursive: true, force: true }));

/** A copy of the set with `entries` as its carried list (signed by `identity` when given). */
async function setWithList(
  entries: { version: string }[],
  o: { identity?: string } = {},
): Promise<string> {
  const dir = join(root, `set-${n++}`);
  cpSync(setDir, dir, { recursive: true });
  await writeRevocationList(pki, dir, entries, o);
  return dir;
}

const host = () => testHost(join(root, `h${n++}`), trustedRoot);
const installed = (h: ReturnType<typeof host>) => existsSync(join(h.prebuilt, `v${VERSION}`));

describe('dev import-image --dir with the set’s revocation pair', () => {
  it('installs the carried list before the recall check: a recall it holds refuses the import', async () => {
    const h = host();
    const dir = await setWithList([{ version: VERSION }]);
    const r = await h.run(['dev', 'import-image', '--dir', dir]);
    assert.equal(r.code, 13, r.stderr);
    assert.equal(installed(h), false);
    assert.deepEqual(readFileSync(join(h.revocations, LIST)), readFileSync(join(dir, LIST)));
  });

  it('a carried list that is not the revocations workflow’s fails closed (exit 10), cache untouched', async () => {
    const h = host();
    await writeRevocationList(pki, h.revocations, [{ version: '0.0.1' }]);
    const before = readFileSync(join(h.revocations, LIST));
    const dir = await setWithList([], {
      identity:
        'https://github.com/tinylabscom/mvm/.github/workflows/evil.yml@refs/tags/revocations',
    });
    const r = await h.run(['dev', 'import-image', '--dir', dir]);
    assert.equal(r.code, 10, r.stderr);
    assert.match(r.stderr, /Cosign verification failed for the revocation list/);
    assert.equal(installed(h), false);
    assert.deepEqual(readFileSync(join(h.revocations, LIST)), before);
  });

  it('an older carried list (it drops a cached recall) leaves the cached list in force, with a warning', async () => {
    const h = host();
    await writeRevocationList(pki, h.revocations, [{ version: '0.0.1' }, { version: '0.0.2' }]);
    const cached = readFileSync(join(h.revocations, LIST));
    const dir = await setWithList([{ version: '0.0.1' }]);
    const r = await h.run(['dev', 'import-image', '--dir', dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /older than the one cached here/);
    assert.deepEqual(readFileSync(join(h.revocations, LIST)), cached);
    assert.equal(installed(h), true);
    const rollback = h.audit().find((a) => a['event'] === 'revocations.import');
    assert.equal(rollback?.['code'], 'rollback');
  });

  it('half a pair is an input error naming the missing file (exit 3), nothing installed', async () => {
    const h = host();
    const dir = await setWithList([]);
    unlinkSync(join(dir, BUNDLE));
    const r = await h.run(['dev', 'import-image', '--dir', dir]);
    assert.equal(r.code, 3, r.stderr);
    assert.ok(r.stderr.includes(join(dir, BUNDLE)), r.stderr);
    assert.equal(installed(h), false);
    assert.equal(existsSync(join(h.revocations, LIST)), false);
  });
});
