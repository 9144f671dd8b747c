/**
 * The optional initrd artifact (SPEC.md section 2): a manifest that lists
 * `dev-initrd-{arch}` makes it a required part of the set, verified while it
 * is copied, installed as `initrd` in the same atomic object, recorded in the
 * receipt and shown by `status`. A manifest without it is the four-file set.
 * End to end through the built CLI, with sets signed by the test PKI.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { CliResult } from './support/cli.js';
import { HOST_ARCH, testHost, VERSION, type TestHost } from './support/host.js';
import { TestPki } from './support/pki.js';
import { writeReleaseSet, type ReleaseFiles } from './support/release.js';

let root: string;
let pki: TestPki;
let trustedRoot: string;
let withInitrd: ReleaseFiles;
let fourFiles: ReleaseFiles;
let n = 0;

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'mvm-initrd-'));
  pki = await TestPki.create();
  trustedRoot = pki.writeTrustedRoot(root);
  withInitrd = await writeReleaseSet(pki, join(root, 'with-initrd'), {
    version: VERSION,
    arch: HOST_ARCH,
    initrd: true,
  });
  fourFiles = await writeReleaseSet(pki, join(root, 'four-files'), {
    version: VERSION,
    arch: HOST_ARCH,
  });
});
after(() => rmSync(root, { recursive: true, force: true }));

const host = () => testHost(join(root, `host${n++}`), trustedRoot);
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const INITRD_NAME = `dev-initrd-${HOST_ARCH}`;
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** `--initrd FILE` for a set that has one. */
const initrdFlag = (set: ReleaseFiles): string[] => ['--initrd', set.initrd!];

/** Every name under the prebuilt directory (objects included), with file digests. */
function storeListing(dir: string): string[] {
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
      const st = statSync(p, { throwIfNoEntry: false });
      if (st?.isDirectory()) walk(p, `${rel}${name}/`);
      else out.push(`${rel}${name} ${st ? sha(readFileSync(p)) : 'dangling'}`);
    }
  };
  walk(dir, '');
  return out;
}

const installedVersions = (h: TestHost): string[] => {
  try {
    return readdirSync(h.prebuilt).filter((f) => f.startsWith('v'));
  } catch {
    return []; // refused before the store was opened
  }
};

const operatorFiles = (set: ReleaseFiles) =>
  [set.manifest, set.bundle, set.vmlinux, set.rootfs, ...(set.initrd ? [set.initrd] : [])].map(
    (f) => sha(readFileSync(f)),
  );

/**
 * A refused import: its exit code and first error line, cause and fix, no
 * stack trace, one failed audit record with `code`, the store and the
 * operator's files as they were.
 */
async function assertRefused(
  h: TestHost,
  set: ReleaseFiles,
  run: () => Promise<CliResult>,
  o: { exit: number; code: string; wording: RegExp },
): Promise<CliResult> {
  const store = storeListing(h.prebuilt);
  const files = operatorFiles(set);
  const auditBefore = h.audit().length;
  const r = await run();
  assert.equal(r.code, o.exit, `exit ${r.code}: ${r.stderr}`);
  const first = r.stderr.split('\n').find((l) => l.startsWith('Error: ')) ?? '';
  assert.match(first, o.wording);
  assert.match(r.stderr, /\n {2}cause: +\S/);
  assert.match(r.stderr, /\n {2}fix: +\S/);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  assert.deepEqual(storeListing(h.prebuilt), store, 'the store is untouched');
  assert.deepEqual(operatorFiles(set), files, "the operator's files are untouched");
  const records = h.audit().slice(auditBefore);
  assert.equal(records.length, 1, 'one audit record');
  assert.equal(records[0]!['event'], 'dev.import-image');
  assert.equal(records[0]!['outcome'], 'failed');
  assert.equal(records[0]!['code'], o.code);
  return r;
}

async function status(h: TestHost): Promise<Json> {
  const r = await h.run(['status', '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Json;
}

describe('dev import-image: a set with an initrd', () => {
  it('installs the initrd (0600, right digest) in the same object, in the receipt and in status', async () => {
    const h = host();
    const r = await h.importSet(withInitrd, initrdFlag(withInitrd));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`✓ initrd +sha256 ${sha(withInitrd.initrdBytes!)} \\(`));

    const dir = join(h.prebuilt, `v${VERSION}`);
    const installed = join(dir, 'initrd');
    assert.equal(statSync(installed).mode & 0o777, 0o600);
    assert.equal(sha(readFileSync(installed)), sha(withInitrd.initrdBytes!));
    // One object holds all of it: kernel, rootfs and initrd side by side.
    assert.deepEqual(readdirSync(dir).sort(), [
      'initrd',
      'manifest.json',
      'manifest.json.bundle',
      'receipt.json',
      'rootfs.ext4',
      'vmlinux',
    ]);

    const receipt = JSON.parse(readFileSync(join(dir, 'receipt.json'), 'utf8')) as Json;
    assert.deepEqual(receipt['artifacts'].initrd, {
      file: 'initrd',
      name: INITRD_NAME,
      sha256: sha(withInitrd.initrdBytes!),
      bytes: withInitrd.initrdBytes!.length,
    });

    const s = await status(h);
    assert.deepEqual(s['images'][0].initrd, receipt['artifacts'].initrd);
    assert.deepEqual(s['images'][0].receipt.artifacts.initrd, receipt['artifacts'].initrd);
    const text = await h.run(['status']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(
      text.stdout,
      new RegExp(`\\n {4}initrd ${INITRD_NAME} {2}sha256 ${sha(withInitrd.initrdBytes!)} \\(`),
    );

    const again = await h.importSet(withInitrd, initrdFlag(withInitrd));
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /^Already installed/);
  });

  it('--dir picks the initrd up by its release name', async () => {
    const h = host();
    const r = await h.run(['dev', 'import-image', '--dir', withInitrd.dir, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as Json;
    assert.equal(out['receipt'].artifacts.initrd.sha256, sha(withInitrd.initrdBytes!));
    assert.equal(
      sha(readFileSync(join(h.prebuilt, `v${VERSION}`, 'initrd'))),
      sha(withInitrd.initrdBytes!),
    );
  });

  it('a tampered initrd: exit 14, "initrd SHA-256 mismatch", counted, audited, store untouched', async () => {
    const h = host();
    const set = await writeReleaseSet(pki, join(root, 'tampered-initrd'), {
      version: VERSION,
      arch: HOST_ARCH,
      initrd: Buffer.from('the initrd that was signed'),
    });
    writeFileSync(set.initrd!, 'an initrd swapped in transit');
    const r = await assertRefused(h, set, () => h.importSet(set, initrdFlag(set)), {
      exit: 14,
      code: 'digest',
      wording: new RegExp(
        `^Error: initrd SHA-256 mismatch: the manifest records ${sha(Buffer.from('the initrd that was signed'))}, .*${INITRD_NAME} has ${sha(Buffer.from('an initrd swapped in transit'))}$`,
      ),
    });
    assert.match(r.stderr, /cause: +Artifact tampered or corrupted in transit/);
    const m = await h.metrics();
    assert.equal(m['dev_image_verify_digest_mismatch_total'], 1);
    assert.equal(m['dev_image_verify_ok_total'], 0);
    assert.deepEqual(installedVersions(h), [], 'nothing installed');
  });

  it('a tampered initrd does not disturb the image already installed', async () => {
    const h = host();
    assert.equal((await h.importSet(withInitrd, initrdFlag(withInitrd))).code, 0);
    const set = await writeReleaseSet(pki, join(root, 'tampered-over-installed'), {
      version: VERSION,
      arch: HOST_ARCH,
      initrd: Buffer.from('another signed initrd'),
    });
    writeFileSync(set.initrd!, 'evil initrd');
    await assertRefused(h, set, () => h.importSet(set, initrdFlag(set)), {
      exit: 14,
      code: 'digest',
      wording: /^Error: initrd SHA-256 mismatch/,
    });
    assert.equal(
      sha(readFileSync(join(h.prebuilt, `v${VERSION}`, 'initrd'))),
      sha(withInitrd.initrdBytes!),
    );
  });

  it('listed but not given: exit 3 naming the file and --initrd', async () => {
    const h = host();
    await assertRefused(h, withInitrd, () => h.importSet(withInitrd), {
      exit: 3,
      code: 'input',
      wording: new RegExp(
        `^Error: The manifest lists an initrd \\(${INITRD_NAME}\\), but no initrd file was given$`,
      ),
    }).then((r) =>
      assert.match(r.stderr, new RegExp(`fix: +Name it with --initrd ${INITRD_NAME}`)),
    );
  });

  it('listed but absent from --dir: exit 3 naming the path and --initrd', async () => {
    const h = host();
    const set = await writeReleaseSet(pki, join(root, 'dir-without-initrd'), {
      version: VERSION,
      arch: HOST_ARCH,
      initrd: true,
    });
    rmSync(set.initrd!);
    const r = await h.run(['dev', 'import-image', '--dir', set.dir]);
    assert.equal(r.code, 3, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `^Error: The manifest lists an initrd \\(${INITRD_NAME}\\), but ${join(set.dir, INITRD_NAME)} does not exist$`,
        'm',
      ),
    );
    assert.match(r.stderr, /fix: +.*--initrd/);
    assert.equal(h.audit().at(-1)!['code'], 'input');
    assert.deepEqual(installedVersions(h), [], 'nothing installed');
  });

  it('--initrd naming a missing file: exit 3', async () => {
    const h = host();
    const missing = join(root, 'no-such-initrd');
    const r = await h.importSet(withInitrd, ['--initrd', missing]);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, new RegExp(`^Error: initrd ${missing} does not exist$`, 'm'));
  });

  it('an initrd over the rootfs size limit is refused before it is read', async () => {
    const h = host();
    const set = await writeReleaseSet(pki, join(root, 'big-initrd'), {
      version: VERSION,
      arch: HOST_ARCH,
      rootfs: Buffer.from('a small rootfs'),
      initrd: Buffer.alloc(4096, 1),
    });
    await assertRefused(
      h,
      set,
      () => h.importSet(set, initrdFlag(set), { MVM_MAX_ROOTFS_BYTES: '1024' }),
      { exit: 3, code: 'input', wording: /^Error: initrd .* is too large: 4096 bytes/ },
    ).then((r) => assert.match(r.stderr, /MVM_MAX_ROOTFS_BYTES/));
  });
});

describe('dev import-image: a set without an initrd', () => {
  it('--initrd for a manifest that lists none is refused (exit 3), nothing installed', async () => {
    const h = host();
    const r = await assertRefused(
      h,
      fourFiles,
      () => h.importSet(fourFiles, initrdFlag(withInitrd)),
      {
        exit: 3,
        code: 'input',
        wording: new RegExp(
          `^Error: --initrd was given, but the manifest lists no initrd \\(${INITRD_NAME}\\)`,
        ),
      },
    );
    assert.match(r.stderr, /fix: +Drop --initrd/);
  });

  it('the four-file set installs as before: no initrd in the object, the receipt or status', async () => {
    const h = host();
    const r = await h.importSet(fourFiles);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /^. initrd /m);
    const dir = join(h.prebuilt, `v${VERSION}`);
    assert.deepEqual(readdirSync(dir).sort(), [
      'manifest.json',
      'manifest.json.bundle',
      'receipt.json',
      'rootfs.ext4',
      'vmlinux',
    ]);
    const receipt = JSON.parse(readFileSync(join(dir, 'receipt.json'), 'utf8')) as Json;
    assert.deepEqual(Object.keys(receipt['artifacts']).sort(), ['kernel', 'rootfs']);
    assert.equal((await status(h))['images'][0].initrd, null);
    assert.doesNotMatch((await h.run(['status'])).stdout, /^ +initrd /m);
  });

  it('with --dir, a stray initrd file the manifest does not list is ignored, with a warning', async () => {
    const h = host();
    const set = await writeReleaseSet(pki, join(root, 'stray-initrd'), {
      version: VERSION,
      arch: HOST_ARCH,
    });
    writeFileSync(join(set.dir, INITRD_NAME), 'not part of the signed set');
    const r = await h.run(['dev', 'import-image', '--dir', set.dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `warning: ${join(set.dir, INITRD_NAME)} is not listed by the manifest; it is ignored`,
      ),
    );
    assert.ok(!readdirSync(join(h.prebuilt, `v${VERSION}`)).includes('initrd'));
  });

  it('--dir cannot be combined with --initrd (usage, exit 2)', async () => {
    const h = host();
    const r = await h.run([
      'dev',
      'import-image',
      '--dir',
      withInitrd.dir,
      ...initrdFlag(withInitrd),
    ]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^Error: --dir cannot be combined with --initrd/m);
  });
});
