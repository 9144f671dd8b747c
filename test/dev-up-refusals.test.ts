/**
 * `dev up` refuses before any hypervisor starts when the installed image no
 * longer matches what was verified, or when the revocation evidence cannot be
 * trusted: each refusal through the CLI is its exit code and wording, one
 * failed `dev.up` audit record, the right counter moved once, and no QEMU.
 * A small signed set is enough: nothing here boots.
 */
import assert from 'node:assert/strict';
import {
  appendFileSync,
  chmodSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { HOST_ARCH, importArgs, testHost, VERSION, type TestHost } from './support/host.js';
import { TestPki } from './support/pki.js';
import { writeReleaseSet, writeRevocationList, type ReleaseFiles } from './support/release.js';
import { processesMentioning, writeVmState } from './support/vm.js';

let root: string;
let pki: TestPki;
let trustedRoot: string;
let set: ReleaseFiles;
let n = 0;

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'mvm-uprefuse-'));
  pki = await TestPki.create();
  trustedRoot = pki.writeTrustedRoot(root);
  set = await writeReleaseSet(pki, join(root, 'set'), { version: VERSION, arch: HOST_ARCH });
});
after(() => rmSync(root, { recursive: true, force: true }));

/** A host with the set installed. */
async function installed(): Promise<TestHost> {
  const h = testHost(join(root, `h${n++}`), trustedRoot);
  const r = await h.run(importArgs(set));
  assert.equal(r.code, 0, r.stderr);
  return h;
}

const upRecords = (h: TestHost) => h.audit().filter((a) => a['event'] === 'dev.up');

async function refusedUp(
  h: TestHost,
  o: { exit: number; code: string; wording: RegExp; counter?: string },
): Promise<void> {
  const r = await h.run(['dev', 'up', '--accel', 'tcg', '--no-wait']);
  assert.equal(r.code, o.exit, r.stderr);
  assert.match(r.stderr, o.wording);
  assert.doesNotMatch(r.stderr, /hypervisor started/);
  assert.deepEqual(processesMentioning(h.dir), [], 'no QEMU started');
  const records = upRecords(h);
  assert.equal(records.length, 1);
  assert.equal(records[0]!['outcome'], 'failed');
  assert.equal(records[0]!['code'], o.code);
  if (o.counter) assert.equal((await h.metrics())[o.counter], 1);
}

describe('dev up: the installed image changed after import', () => {
  for (const [file, name] of [
    ['vmlinux', 'kernel'],
    ['rootfs.ext4', 'rootfs'],
  ] as const) {
    it(`the ${name}: exit 14 with the seed's wording, counted and audited once, no QEMU`, async () => {
      const h = await installed();
      const path = join(h.prebuilt, `v${VERSION}`, file);
      chmodSync(path, 0o600);
      appendFileSync(path, 'x');
      await refusedUp(h, {
        exit: 14,
        code: 'digest',
        wording: new RegExp(`^Error: ${name} SHA-256 mismatch`, 'm'),
        counter: 'dev_image_verify_digest_mismatch_total',
      });
    });
  }
});

describe('dev up: revocation evidence that cannot be trusted', () => {
  it('a forged cached pair (the list edited after signing) fails closed: exit 10, no QEMU', async () => {
    const h = await installed();
    const pair = await writeRevocationList(pki, h.revocations, [{ version: '0.1.0' }]);
    // Drop the recall from the signed list: the bytes no longer match their signature.
    const list = JSON.parse(readFileSync(pair.json, 'utf8'));
    list.revocations = [];
    writeFileSync(pair.json, JSON.stringify(list, null, 2) + '\n');
    await refusedUp(h, { exit: 10, code: 'signature', wording: /Re-import the pair/ });
  });
});

describe('dev status: the recall state of the version the VM booted', () => {
  it('is read now, from the cached list and the remembered recalls (here for a stale state)', async () => {
    const h = await installed();
    const vmDir = join(h.dir, 'data', 'vms', 'dev');
    // A VM that died: no such process, so the state is stale, and its version is still reported.
    writeVmState(vmDir, 2147483646, '1');
    const before = await h.run(['dev', 'status', '--json']);
    assert.equal(before.code, 0, before.stderr);
    const s0 = JSON.parse(before.stdout);
    assert.equal(s0.state, 'stale');
    assert.deepEqual(s0.recall, { recalled: false, list: 'absent' });

    await writeRevocationList(pki, h.revocations, [
      { version: VERSION, arch: HOST_ARCH, reason: 'CVE-2026-4242: recalled' },
    ]);
    const after = await h.run(['dev', 'status', '--json']);
    assert.deepEqual(JSON.parse(after.stdout).recall, {
      recalled: true,
      reason: 'CVE-2026-4242: recalled',
      list: 'verified',
    });
    const human = await h.run(['dev', 'status']);
    assert.match(
      human.stdout,
      /^recall: +RECALLED: CVE-2026-4242: recalled \(stop it: mvmctl dev down\)$/m,
    );
  });
});
