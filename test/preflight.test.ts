/**
 * What `dev up` checks before it boots (SPEC.md section 8, steps 1 to 3),
 * called in-process on a simulated host after a real `dev import-image` of a
 * set signed by the test PKI: the image lookup, the receipt, the recalls in
 * force, the signed manifest beside the image, and the at-rest re-hash of
 * each installed file through the descriptors a boot is handed. No VM is started.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { configFrom } from '../src/config.js';
import { ERROR_TABLE, MvmError } from '../src/errors.js';
import { loadTrustedRoot } from '../src/trust/trusted-root.js';
import { preflightDevImage, type BootableImage } from '../src/vm/preflight.js';
import { HOST_ARCH, importArgs, testHost, VERSION, type TestHost } from './support/host.js';
import { TestPki } from './support/pki.js';
import { writeReleaseSet, writeRevocationList, type ReleaseFiles } from './support/release.js';

let root: string;
let pki: TestPki;
let trustedRoot: string;
let fourFiles: ReleaseFiles;
let withInitrd: ReleaseFiles;
let n = 0;

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'mvm-preflight-'));
  pki = await TestPki.create();
  trustedRoot = pki.writeTrustedRoot(root);
  fourFiles = await writeReleaseSet(pki, join(root, 'four-files'), {
    version: VERSION,
    arch: HOST_ARCH,
  });
  withInitrd = await writeReleaseSet(pki, join(root, 'with-initrd'), {
    version: VERSION,
    arch: HOST_ARCH,
    initrd: true,
  });
});
after(() => rmSync(root, { recursive: true, force: true }));

const host = () => testHost(join(root, `host${n++}`), trustedRoot);
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** A real `dev import-image` through the built CLI (with --initrd for a five-file set). */
async function install(h: TestHost, set: ReleaseFiles, env: Record<string, string> = {}) {
  const r = await h.run([...importArgs(set), ...(set.initrd ? ['--initrd', set.initrd] : [])], env);
  assert.equal(r.code, 0, r.stderr);
}

/** preflightDevImage on this host, in-process; the warnings it printed. */
async function preflight(
  h: TestHost,
  keepOpen = false,
  env: Record<string, string> = {},
): Promise<{ image?: BootableImage; error?: MvmError; warnings: string[] }> {
  const warnings: string[] = [];
  try {
    const image = await preflightDevImage({
      config: configFrom({ ...h.env, ...env }, h.dir),
      trustedRoot: await loadTrustedRoot(trustedRoot),
      now: () => new Date(),
      warn: (m) => warnings.push(m),
    });
    if (!keepOpen) await image.opened.close();
    return { image, warnings };
  } catch (e) {
    if (!(e instanceof MvmError)) throw e;
    return { error: e, warnings };
  }
}

/** The error preflight must fail with: its code, exit status and first-line wording. */
async function refused(
  h: TestHost,
  code: MvmError['code'],
  wording: RegExp,
  env: Record<string, string> = {},
) {
  const r = await preflight(h, false, env);
  assert.ok(r.error, `preflight passed: ${JSON.stringify(r.image)}`);
  assert.equal(r.error.code, code, r.error.message);
  assert.match(r.error.message, wording);
  return { ...r, error: r.error, exit: ERROR_TABLE[r.error.code].exit };
}

describe('dev up preflight: the installed image', () => {
  it('a verified image: the paths inside its object, which exist, and its receipt', async () => {
    const h = host();
    await install(h, withInitrd);
    await writeRevocationList(pki, h.revocations, [{ version: '0.0.1', arch: HOST_ARCH }]);
    const { image, error, warnings } = await preflight(h);
    assert.equal(error, undefined, error?.message);
    assert.ok(image);
    assert.deepEqual(warnings, []);
    assert.equal(image.version, VERSION);
    const link = join(h.prebuilt, `v${VERSION}`);
    assert.ok(image.objectDir.startsWith(join(h.prebuilt, '.objects')), image.objectDir);
    assert.equal(image.kernel, join(image.objectDir, 'vmlinux'));
    assert.equal(image.rootfs, join(image.objectDir, 'rootfs.ext4'));
    assert.equal(image.initrd, join(image.objectDir, 'initrd'));
    assert.deepEqual(readFileSync(image.kernel), withInitrd.kernelBytes);
    assert.deepEqual(readFileSync(image.rootfs), withInitrd.rootfsBytes);
    assert.deepEqual(readFileSync(image.initrd), withInitrd.initrdBytes);
    assert.equal(image.receipt.verification, 'verified');
    assert.equal(image.receipt.artifacts.rootfs.sha256, sha(withInitrd.rootfsBytes));
    assert.deepEqual(
      JSON.parse(readFileSync(join(link, 'receipt.json'), 'utf8')),
      JSON.parse(JSON.stringify(image.receipt)),
    );
  });

  it('a four-file set has no initrd', async () => {
    const h = host();
    await install(h, fourFiles);
    const { image, error } = await preflight(h);
    assert.equal(error, undefined, error?.message);
    assert.equal(image?.initrd, undefined);
    assert.equal(image?.receipt.artifacts.initrd, undefined);
  });

  it('nothing installed (offline): the clear error, exit 3, naming both ways in', async () => {
    const h = host();
    const { error, exit } = await refused(
      h,
      'input',
      new RegExp(`^No dev image is installed for v${escape(VERSION)}$`),
    );
    assert.equal(exit, 3);
    // The air-gapped way (a transfer set made by dev fetch, installed with import-image --dir) and the connected one.
    assert.match(error.fix ?? '', /mvmctl dev fetch --version \S+ --out DIR/);
    assert.match(error.fix ?? '', /mvmctl dev import-image --dir DIR/);
    assert.match(error.fix ?? '', /mvmctl dev pull/);
    assert.match(error.cause ?? '', /MVM_OFFLINE=1 or --offline/);
    assert.equal(existsSync(h.prebuilt), false, 'asking created nothing');
  });

  it('an image installed through an escape hatch boots with a loud warning', async () => {
    const h = host();
    await install(h, fourFiles, { MVM_SKIP_COSIGN_VERIFY: '1' });
    await writeRevocationList(pki, h.revocations, []);
    const { image, error, warnings } = await preflight(h);
    assert.equal(error, undefined, error?.message);
    assert.equal(image?.receipt.verification, 'UNVERIFIED');
    assert.equal(warnings.length, 1, warnings.join('\n'));
    assert.match(
      warnings[0]!,
      new RegExp(
        `^BOOTING AN UNVERIFIED IMAGE: v${escape(VERSION)} was installed with MVM_SKIP_COSIGN_VERIFY=1, so its signature was NOT verified`,
      ),
    );
  });
});

describe('dev up preflight: the store changed after import', () => {
  const cases = [
    ['kernel', 'vmlinux', 'flip'],
    ['rootfs', 'rootfs.ext4', 'flip'],
    ['initrd', 'initrd', 'flip'],
    ['rootfs', 'rootfs.ext4', 'append'],
    ['initrd', 'initrd', 'append'],
  ] as const;
  for (const [role, file, how] of cases) {
    it(`${role} with a byte ${how === 'flip' ? 'flipped' : 'appended'}: exit 14 naming the file`, async () => {
      const h = host();
      await install(h, withInitrd);
      const path = join(h.prebuilt, `v${VERSION}`, file);
      const expected = sha(readFileSync(path));
      if (how === 'append') appendFileSync(path, 'x');
      else {
        const bytes = readFileSync(path);
        bytes[bytes.length >> 1]! ^= 0x01;
        writeFileSync(path, bytes);
      }
      const got = sha(readFileSync(path));
      const { error, exit } = await refused(
        h,
        'digest',
        new RegExp(
          `^${role} SHA-256 mismatch: the verified image records ${expected}, .*/${escape(file)} has ${got}$`,
        ),
      );
      assert.equal(exit, 14);
      assert.match(error.fix ?? '', /mvmctl dev import-image/);
    });
  }

  it('an installed file replaced by a symlink is never followed', async () => {
    const h = host();
    await install(h, fourFiles);
    const path = join(h.prebuilt, `v${VERSION}`, 'rootfs.ext4');
    const elsewhere = join(h.dir, 'elsewhere.ext4');
    writeFileSync(elsewhere, fourFiles.rootfsBytes);
    rmSync(path);
    symlinkSync(elsewhere, path);
    await refused(h, 'store', /^The installed rootfs .*rootfs\.ext4 is a symbolic link$/);
  });
});

/** Rewrites the installed image's receipt.json through `edit`. */
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
function editReceipt(h: TestHost, edit: (r: Json) => void): void {
  const path = join(h.prebuilt, `v${VERSION}`, 'receipt.json');
  const r = JSON.parse(readFileSync(path, 'utf8'));
  edit(r);
  writeFileSync(path, JSON.stringify(r));
}

/** The descriptors this process has open. */
const openDescriptors = (): number => readdirSync('/proc/self/fd').length;

describe('dev up preflight: the receipt is checked against the signed manifest', () => {
  it('a changed rootfs with its digest edited into the receipt: exit 14, the signed manifest says otherwise', async () => {
    const h = host();
    await install(h, fourFiles);
    const path = join(h.prebuilt, `v${VERSION}`, 'rootfs.ext4');
    const bytes = readFileSync(path);
    bytes[0]! ^= 0x01;
    writeFileSync(path, bytes);
    editReceipt(h, (r) => (r.artifacts.rootfs.sha256 = sha(bytes)));
    const { error, exit } = await refused(
      h,
      'digest',
      new RegExp(
        `^rootfs SHA-256 mismatch: the receipt of v${escape(VERSION)} records ${sha(bytes)}, its signed manifest ${sha(fourFiles.rootfsBytes)}$`,
      ),
    );
    assert.equal(exit, 14);
    assert.match(error.cause ?? '', /nothing was booted/);
  });

  it('the manifest replaced, its digest edited into the receipt: exit 10, its signature does not verify', async () => {
    const h = host();
    await install(h, fourFiles);
    const path = join(h.prebuilt, `v${VERSION}`, 'manifest.json');
    const forged = Buffer.from(
      readFileSync(path, 'utf8').replace(sha(fourFiles.rootfsBytes), 'a'.repeat(64)),
    );
    writeFileSync(path, forged);
    editReceipt(h, (r) => (r.manifestSha256 = sha(forged)));
    const { error, exit } = await refused(
      h,
      'signature',
      new RegExp(`^The installed manifest of v${escape(VERSION)} does not verify: `),
    );
    assert.equal(exit, 10);
    assert.match(error.cause ?? '', /checked before every boot/);
  });

  it('the manifest changed and the receipt not: exit 14 naming both digests', async () => {
    const h = host();
    await install(h, fourFiles);
    const path = join(h.prebuilt, `v${VERSION}`, 'manifest.json');
    const before = sha(readFileSync(path));
    appendFileSync(path, ' ');
    const { exit } = await refused(
      h,
      'digest',
      new RegExp(
        `^manifest SHA-256 mismatch: the receipt of v${escape(VERSION)} records ${before}, .*manifest\\.json has ${sha(readFileSync(path))}$`,
      ),
    );
    assert.equal(exit, 14);
  });

  it('a receipt entry naming another file than the one installed is refused before it is opened', async () => {
    // The digest agrees with the signed manifest; only the name changed, to a copy of the
    // verified kernel outside the object. The receipt is unsigned: it never chooses what boots.
    const h = host();
    await install(h, fourFiles);
    const outside = join(h.dir, 'planted-vmlinux');
    writeFileSync(outside, fourFiles.kernelBytes);
    for (const file of [outside, '../../planted-vmlinux', 'rootfs.ext4']) {
      editReceipt(h, (r) => (r.artifacts.kernel.file = file));
      const { error, exit } = await refused(
        h,
        'store',
        /^The receipt of the installed image \(.*receipt\.json\) is not usable$/,
      );
      assert.match(error.cause ?? '', /^its kernel entry is missing or malformed;/);
      assert.equal(exit, 17);
    }
  });

  it('a receipt that claims another variant than the manifest signs is refused', async () => {
    const h = host();
    await install(h, fourFiles);
    editReceipt(h, (r) => (r.variant = 'builder'));
    await refused(
      h,
      'digest',
      /does not agree with its signed manifest: variant "builder", signed "dev"$/,
    );
  });

  it('an UNVERIFIED image (signature skipped at import) still has its receipt held to the manifest', async () => {
    const h = host();
    await install(h, fourFiles, { MVM_SKIP_COSIGN_VERIFY: '1' });
    editReceipt(h, (r) => (r.artifacts.kernel.sha256 = 'b'.repeat(64)));
    await refused(
      h,
      'digest',
      /^kernel SHA-256 mismatch: the receipt of .* records b{64}, its signed manifest/,
    );
  });
});

describe('dev up preflight: what is hashed is what boots', () => {
  it('the descriptors handed to QEMU read the bytes hashed, after the files in the store were replaced', async () => {
    const h = host();
    await install(h, withInitrd);
    const { image, error } = await preflight(h, true);
    assert.equal(error, undefined, error?.message);
    assert.ok(image);
    try {
      // Someone who can write the store swaps every file after the check, before QEMU opens it.
      for (const path of [image.kernel, image.rootfs, image.initrd!]) {
        writeFileSync(`${path}.swap`, 'not what was verified');
        renameSync(`${path}.swap`, path);
      }
      // QEMU opens /proc/self/fd/N (qemu-args.ts): the open file, not the name.
      const read = (fd: number) => readFileSync(`/proc/self/fd/${fd}`);
      assert.deepEqual(read(image.opened.kernel.fd), withInitrd.kernelBytes);
      assert.deepEqual(read(image.opened.rootfs.fd), withInitrd.rootfsBytes);
      assert.deepEqual(read(image.opened.initrd!.fd), withInitrd.initrdBytes);
      assert.equal(readFileSync(image.rootfs, 'utf8'), 'not what was verified');
    } finally {
      await image.opened.close();
    }
  });

  it('a refused image leaves no descriptor open', async () => {
    const h = host();
    await install(h, withInitrd);
    const path = join(h.prebuilt, `v${VERSION}`, 'initrd');
    appendFileSync(path, 'x');
    const before = openDescriptors();
    await refused(h, 'digest', /^initrd SHA-256 mismatch/);
    assert.equal(
      openDescriptors(),
      before,
      'the kernel and rootfs hashed before the initrd are closed',
    );
  });

  it('a FIFO in place of the rootfs is refused as not a regular file, without hanging', async () => {
    const h = host();
    await install(h, fourFiles);
    const path = join(h.prebuilt, `v${VERSION}`, 'rootfs.ext4');
    rmSync(path);
    execFileSync('mkfifo', [path]);
    await refused(h, 'store', /^The installed rootfs .*rootfs\.ext4 is not a regular file$/);
  });

  it('a directory in place of the kernel is refused as not a regular file, before any hashing', async () => {
    const h = host();
    await install(h, fourFiles);
    const path = join(h.prebuilt, `v${VERSION}`, 'vmlinux');
    rmSync(path);
    mkdirSync(path);
    const before = openDescriptors();
    await refused(h, 'store', /^The installed kernel .*vmlinux is not a regular file$/);
    assert.equal(openDescriptors(), before);
  });
});

describe('dev up preflight: the recalls in force', () => {
  it('a version recalled in the cached list: exit 13, in the seed wording', async () => {
    const h = host();
    await install(h, fourFiles);
    await writeRevocationList(pki, h.revocations, [
      { version: VERSION, arch: HOST_ARCH, reason: 'CVE-2026-7777: bad image' },
    ]);
    const { exit } = await refused(
      h,
      'revoked',
      new RegExp(
        `^Imported manifest is on the project's revocation list: ${escape(VERSION)} dev ${HOST_ARCH} was recalled: CVE-2026-7777: bad image$`,
      ),
    );
    assert.equal(exit, 13);
  });

  it('a list older than 7 days warns before a boot, and refuses it when fresh lists are required (exit 18)', async () => {
    const h = host();
    await install(h, fourFiles);
    const pair = await writeRevocationList(pki, h.revocations, [{ version: '0.0.1' }]);
    const old = new Date(Date.now() - 8 * 86_400_000);
    utimesSync(pair.json, old, old);
    const warned = await preflight(h);
    assert.equal(warned.error, undefined, warned.error?.message);
    assert.ok(
      warned.warnings.some((w) =>
        /^STALE REVOCATION LIST: it is 19\d(\.\d)? hours old \(more than 7 days\)\. It is still enforced/.test(
          w,
        ),
      ),
      warned.warnings.join('\n'),
    );
    const { exit } = await refused(
      h,
      'stale-revocations',
      /^The cached revocation list is stale \(it is .* hours old \(more than 7 days\)\) and fresh revocations are required \(MVM_REQUIRE_FRESH_REVOCATIONS=1\)$/,
      { MVM_REQUIRE_FRESH_REVOCATIONS: '1' },
    );
    assert.equal(exit, 18);
  });

  it('a list 3 days old boots with a warning, even when fresh lists are required', async () => {
    const h = host();
    await install(h, fourFiles);
    const pair = await writeRevocationList(pki, h.revocations, [{ version: '0.0.1' }]);
    const old = new Date(Date.now() - 3 * 86_400_000);
    utimesSync(pair.json, old, old);
    const r = await preflight(h, false, { MVM_REQUIRE_FRESH_REVOCATIONS: '1' });
    assert.equal(r.error, undefined, r.error?.message);
    assert.deepEqual(
      r.warnings.map((w) => w.replace(/\d+(\.\d)? hours/, 'N hours')),
      [
        'The cached revocation list is N hours old (refreshed after 24 h; tolerated up to 7 days). Recalls issued since may be missing: run mvmctl revocations refresh, or carry in a fresh pair.',
      ],
    );
  });

  it('a cached pair that does not verify fails closed', async () => {
    const h = host();
    await install(h, fourFiles);
    const pair = await writeRevocationList(pki, h.revocations, [{ version: '0.1.0' }]);
    writeFileSync(pair.json, readFileSync(pair.json, 'utf8').replace('0.1.0', '0.1.1'));
    const { error, exit } = await refused(
      h,
      'signature',
      /^Cosign verification failed for the cached revocation list/,
    );
    assert.equal(exit, 10);
    assert.match(error.fix ?? '', /^Re-import the pair/);
  });

  it('a recall remembered on this host is enforced after the list is deleted', async () => {
    const h = host();
    await install(h, fourFiles);
    const transfer = await writeRevocationList(pki, join(h.dir, 'transfer'), [
      { version: VERSION, arch: HOST_ARCH, reason: 'CVE-2026-8888: remembered' },
    ]);
    const r = await h.run([
      'revocations',
      'import',
      '--list',
      transfer.json,
      '--bundle',
      transfer.bundle,
    ]);
    assert.equal(r.code, 0, r.stderr);
    rmSync(join(h.dir, 'cache'), { recursive: true, force: true });
    const { warnings, exit } = await refused(
      h,
      'revoked',
      /^Imported manifest is on the project's revocation list: .* was recalled: CVE-2026-8888: remembered$/,
    );
    assert.equal(exit, 13);
    assert.ok(
      warnings.some((w) => /^REVOCATION LIST ROLLED BACK OR REMOVED: 1 recall/.test(w)),
      warnings.join('\n'),
    );
  });
});
