/**
 * Issue 11, "messages that name the operator's actual mistake", from the CLI
 * as a subprocess: files given the wrong way round, a trusted root that does
 * not know the signer's log or CA, a --dir with several files missing or with
 * another arch's set, a data directory that cannot take the image (found
 * before the signature work), the dev up hint, and exit 18 for the want of a
 * fresh revocation list (16 is only ever the network). Each refusal is checked
 * for its exit code, its wording (message, cause, fix), an untouched store and
 * the counters it must (and must not) bump.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  copyFileSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCli, type CliResult } from './support/cli.js';
import { HOST_ARCH, OTHER_ARCH, testHost, VERSION, type TestHost } from './support/host.js';
import { TestPki } from './support/pki.js';
import { REPO, writeReleaseSet, type ReleaseFiles } from './support/release.js';
import { suiteWorld } from './support/world.js';

let root: string;
let pki: TestPki;
let trustedRoot: string;
let good: ReleaseFiles;
let n = 0;

before(async () => ({ root, pki, trustedRoot, good } = await suiteWorld('mvm-mistakes-')));
after(() => rmSync(root, { recursive: true, force: true }));

const host = (trusted = trustedRoot) => testHost(join(root, `host${n++}`), trusted);

/** `dev import-image` with each file named by its flag. */
const importArgs = (f: { manifest: string; bundle: string; vmlinux: string; rootfs: string }) => [
  'dev',
  'import-image',
  '--manifest',
  f.manifest,
  '--bundle',
  f.bundle,
  '--vmlinux',
  f.vmlinux,
  '--rootfs',
  f.rootfs,
];

/** Installed versions (v* links) in the store: a refusal leaves none. */
const installed = (h: TestHost): string[] => {
  try {
    return readdirSync(h.prebuilt).filter((f) => f.startsWith('v'));
  } catch {
    return [];
  }
};

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** A refusal: its exit code, message, cause and fix; nothing installed; one failed audit record with the code. */
function assertRefusal(
  h: TestHost,
  r: CliResult,
  o: { exit: number; code: string; message: RegExp; cause?: RegExp; fix?: RegExp; check?: string },
): void {
  assert.equal(r.code, o.exit, `exit ${r.code}: ${r.stderr}`);
  const lines = r.stderr.split('\n');
  const first = lines.find((l) => l.startsWith('Error: ')) ?? '';
  assert.match(first, o.message);
  const line = (label: string) => lines.find((l) => l.startsWith(`  ${label}:`)) ?? '';
  if (o.cause) assert.match(line('cause'), o.cause);
  if (o.fix) assert.match(line('fix'), o.fix);
  if (o.check) assert.equal(line('check').replace(/^ {2}check: /, ''), o.check);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  assert.deepEqual(installed(h), [], 'nothing installed');
  const last = h.audit().at(-1);
  if (last) {
    assert.equal(last['outcome'], 'failed');
    assert.equal(last['code'], o.code);
  }
}

/** A copy of a set in a new directory, under the given names (release names by default). */
function copySet(
  from: ReleaseFiles,
  dir: string,
  names: Partial<Record<'manifest' | 'bundle' | 'vmlinux' | 'rootfs', string>> = {},
) {
  mkdirSync(dir, { recursive: true });
  const out = {
    dir,
    manifest: join(dir, names.manifest ?? `dev-image-${HOST_ARCH}.manifest.json`),
    bundle: join(dir, names.bundle ?? `dev-image-${HOST_ARCH}.manifest.json.bundle`),
    vmlinux: join(dir, names.vmlinux ?? `dev-vmlinux-${HOST_ARCH}`),
    rootfs: join(dir, names.rootfs ?? `dev-rootfs-${HOST_ARCH}.ext4`),
  };
  copyFileSync(from.manifest, out.manifest);
  copyFileSync(from.bundle, out.bundle);
  copyFileSync(from.vmlinux, out.vmlinux);
  copyFileSync(from.rootfs, out.rootfs);
  return out;
}

describe('files given the wrong way round are input mistakes, not tampering', () => {
  it('kernel and rootfs swapped: exit 3, "look swapped", no digest or signature counter, and the fix works', async () => {
    const h = host();
    const r = await h.run(importArgs({ ...good, vmlinux: good.rootfs, rootfs: good.vmlinux }));
    assertRefusal(h, r, {
      exit: 3,
      code: 'input',
      message: new RegExp(
        `^Error: The kernel and rootfs look swapped: the file given as the kernel \\(${escape(good.rootfs)}\\) is the release's rootfs \\(dev-rootfs-${HOST_ARCH}\\.ext4\\), and the file given as the rootfs \\(${escape(good.vmlinux)}\\) its kernel`,
      ),
      cause: /the files were given in the wrong places \(not tampering; nothing was installed\)/,
      fix: new RegExp(
        `Run the import again with --vmlinux ${escape(good.vmlinux)} --rootfs ${escape(good.rootfs)}\\.$`,
      ),
    });
    assert.doesNotMatch(r.stderr, /SHA-256 mismatch/);
    const m = await h.metrics();
    assert.equal(m['dev_image_verify_digest_mismatch_total'], 0, 'not counted as tampering');
    assert.equal(m['dev_image_verify_sig_invalid_total'], 0);
    // What the fix says to run installs.
    const fixed = await h.run(importArgs(good));
    assert.equal(fixed.code, 0, fixed.stderr);
  });

  it('kernel and rootfs swapped in a --dir (wrong names): the fix swaps the names in the directory', async () => {
    const h = host();
    const dir = join(root, 'swapped-dir');
    copySet(good, dir, {
      vmlinux: `dev-rootfs-${HOST_ARCH}.ext4`,
      rootfs: `dev-vmlinux-${HOST_ARCH}`,
    });
    const r = await h.run(['dev', 'import-image', '--dir', dir]);
    assertRefusal(h, r, {
      exit: 3,
      code: 'input',
      message: /^Error: The kernel and rootfs look swapped/,
      fix: new RegExp(
        `Swap the two files' names in ${escape(dir)}: dev-vmlinux-${HOST_ARCH} holds the rootfs, dev-rootfs-${HOST_ARCH}\\.ext4 the kernel\\.`,
      ),
    });
    assert.equal((await h.metrics())['dev_image_verify_digest_mismatch_total'], 0);
  });

  it('an initrd swapped with the kernel, and an initrd given as the rootfs, are named', async () => {
    const h = host();
    const set = await writeReleaseSet(pki, join(root, 'with-initrd'), {
      version: VERSION,
      arch: HOST_ARCH,
      initrd: true,
    });
    const swapped = await h.run([
      ...importArgs({ ...set, vmlinux: set.initrd! }),
      '--initrd',
      set.vmlinux,
    ]);
    assertRefusal(h, swapped, {
      exit: 3,
      code: 'input',
      message: /^Error: The kernel and initrd look swapped/,
      fix: new RegExp(`--vmlinux ${escape(set.vmlinux)} --initrd ${escape(set.initrd!)}\\.$`),
    });
    const misplaced = await h.run([
      ...importArgs({ ...set, rootfs: set.initrd! }),
      '--initrd',
      set.initrd!,
    ]);
    assertRefusal(h, misplaced, {
      exit: 3,
      code: 'input',
      message: new RegExp(
        `^Error: A file of the set was given in the wrong place: ${escape(set.initrd!)}, given as the rootfs, is the release's initrd \\(dev-initrd-${HOST_ARCH}\\)`,
      ),
      fix: /is the initrd \(--initrd\)/,
    });
    assert.equal((await h.metrics())['dev_image_verify_digest_mismatch_total'], 0);
  });

  it("a rootfs that is nobody else's file is still a digest mismatch (exit 14, counted)", async () => {
    const h = host();
    const dir = join(root, 'corrupt');
    const set = copySet(good, dir);
    writeFileSync(set.rootfs, Buffer.concat([good.rootfsBytes, Buffer.from('x')]));
    const r = await h.run(importArgs(set));
    assertRefusal(h, r, { exit: 14, code: 'digest', message: /^Error: rootfs SHA-256 mismatch/ });
    assert.equal((await h.metrics())['dev_image_verify_digest_mismatch_total'], 1);
  });

  it('manifest and bundle swapped: exit 3 before any signature work, with the flags to run instead', async () => {
    const h = host();
    const r = await h.run(importArgs({ ...good, manifest: good.bundle, bundle: good.manifest }));
    assertRefusal(h, r, {
      exit: 3,
      code: 'input',
      message: new RegExp(
        `^Error: The manifest and bundle look swapped: ${escape(good.bundle)} is a Sigstore bundle and ${escape(good.manifest)} is a release manifest$`,
      ),
      cause: /given the wrong way round \(nothing was verified or installed\)/,
      fix: new RegExp(`--manifest ${escape(good.manifest)} --bundle ${escape(good.bundle)}\\.$`),
    });
    assert.doesNotMatch(r.stderr, /✓ signature|Cosign verification/, 'no signature work');
    assert.equal((await h.metrics())['dev_image_verify_sig_invalid_total'], 0);
  });

  it('the manifest given twice, or the bundle given as the manifest, is said as such', async () => {
    const h = host();
    const twice = await h.run(importArgs({ ...good, bundle: good.manifest }));
    assertRefusal(h, twice, {
      exit: 3,
      code: 'input',
      message: /^Error: The same release manifest was given as the manifest and as the bundle/,
    });
    const bundleTwice = await h.run(importArgs({ ...good, manifest: good.bundle }));
    assertRefusal(h, bundleTwice, {
      exit: 3,
      code: 'input',
      message: new RegExp(
        `^Error: The file given as the manifest \\(${escape(good.bundle)}\\) is a Sigstore bundle, not a release manifest`,
      ),
    });
    assert.equal((await h.metrics())['dev_image_verify_sig_invalid_total'], 0);
  });
});

describe('signature failures: cause and fix follow the check that failed', () => {
  const SEED = /^Error: Cosign verification failed for the imported manifest: /;

  it('a trusted root from another deployment (a test root left in MVM_TRUSTED_ROOT) names the root and its log', async () => {
    const other = await TestPki.create();
    const otherRoot = other.writeTrustedRoot(join(root, 'other-root'));
    const h = host(otherRoot);
    const r = await h.run(importArgs(good));
    assertRefusal(h, r, {
      exit: 10,
      code: 'signature',
      check: 'tlog-entry',
      message: SEED,
      cause: new RegExp(
        `the trusted root in use, ${escape(otherRoot)} \\(--trusted-root or MVM_TRUSTED_ROOT\\), does not know the transparency log the manifest's signature was logged in \\(log id [0-9a-f]{64}\\)`,
      ),
      fix: /unset MVM_TRUSTED_ROOT and drop --trusted-root .*point MVM_TRUSTED_ROOT \(or --trusted-root\) at its trusted_root\.json/,
    });
    assert.doesNotMatch(r.stderr, /don’t match|tampered/);
    // Still a signature failure on the fleet's counter: an unknown log is also what a forger's own deployment looks like.
    assert.equal((await h.metrics())['dev_image_verify_sig_invalid_total'], 1);
  });

  it('a root that lists the log but not the CA names the CA', async () => {
    const other = await TestPki.create();
    const mixed = pki.trustedRoot();
    mixed['certificateAuthorities'] = other.trustedRoot()['certificateAuthorities'];
    const path = pki.writeTrustedRoot(join(root, 'root-without-ca'), mixed);
    const h = host(path);
    const r = await h.run(importArgs(good));
    assertRefusal(h, r, {
      exit: 10,
      code: 'signature',
      check: 'certificate-chain',
      message: SEED,
      cause:
        /does not know the certificate authority that issued the signing certificate \(issuer .*sigstore/,
      fix: /MVM_TRUSTED_ROOT/,
    });
    assert.doesNotMatch(r.stderr, /don’t match|tampered/);
  });

  it('the embedded public-good root with a set from another deployment points at MVM_TRUSTED_ROOT', async () => {
    const h = host();
    const r = await runCli(importArgs(good), { ...h.env, MVM_TRUSTED_ROOT: undefined });
    assertRefusal(h, r, {
      exit: 10,
      code: 'signature',
      check: 'tlog-entry',
      message: SEED,
      cause: /^ {2}cause: the embedded public-good trusted root does not know the transparency log/,
      fix: /private Sigstore deployment, point MVM_TRUSTED_ROOT \(or --trusted-root\) at that deployment's trusted_root\.json/,
    });
  });

  it('a tampered manifest keeps the "don\'t match, or tampered" wording', async () => {
    const h = host();
    const set = copySet(good, join(root, 'tampered'));
    writeFileSync(set.manifest, readFileSync(good.manifest, 'utf8').replace('"dev"', '"builder"'));
    const r = await h.run(importArgs(set));
    assertRefusal(h, r, {
      exit: 10,
      code: 'signature',
      message: SEED,
      cause:
        /^ {2}cause: Manifest \+ bundle don’t match, or manifest was tampered with after signing/,
      fix: /Re-export both files together from the same release tag/,
    });
  });

  it('another signer is named: who signed, and the release workflow that should have', async () => {
    const h = host();
    const set = copySet(good, join(root, 'other-signer'));
    const identity = `https://github.com/${REPO}/.github/workflows/revocations.yml@refs/tags/revocations`;
    writeFileSync(
      set.bundle,
      JSON.stringify(await pki.signBlob(readFileSync(set.manifest), { identity })),
    );
    const r = await h.run(importArgs(set));
    assertRefusal(h, r, {
      exit: 10,
      code: 'signature',
      check: 'identity',
      message: SEED,
      cause: new RegExp(
        `the manifest was signed by ${escape(identity)} \\(OIDC issuer https://token\\.actions\\.githubusercontent\\.com\\), not by the release workflow of ${escape(REPO)}`,
      ),
      fix: /MVM_RELEASE_REPO/,
    });
    assert.doesNotMatch(r.stderr, /don’t match|tampered/);
  });
});

describe('--dir and missing files: every problem named at once', () => {
  it('several files missing from --dir are listed in one error', async () => {
    const h = host();
    const dir = join(root, 'partial-dir');
    const set = copySet(good, dir);
    rmSync(set.bundle);
    rmSync(set.rootfs);
    const r = await h.run(['dev', 'import-image', '--dir', dir]);
    assertRefusal(h, r, {
      exit: 3,
      code: 'input',
      message: new RegExp(
        `^Error: ${escape(dir)} does not hold this host's \\(${HOST_ARCH}\\) release set: dev-image-${HOST_ARCH}\\.manifest\\.json\\.bundle, dev-rootfs-${HOST_ARCH}\\.ext4 are missing$`,
      ),
      cause: /2 of the 4 are not in/,
      fix: /Copy them into .* under those names/,
    });
  });

  it('several named files missing are listed in one error', async () => {
    const h = host();
    const r = await h.run(
      importArgs({ ...good, manifest: join(root, 'no-m'), rootfs: join(root, 'no-r') }),
    );
    assertRefusal(h, r, {
      exit: 3,
      code: 'input',
      message: new RegExp(
        `^Error: 2 files of the release set do not exist: manifest ${escape(join(root, 'no-m'))}, rootfs ${escape(join(root, 'no-r'))}$`,
      ),
    });
  });

  it('a --dir that does not exist, or is a file, is named as such', async () => {
    const h = host();
    const missing = join(root, 'no-such-medium');
    assertRefusal(h, await h.run(['dev', 'import-image', '--dir', missing]), {
      exit: 3,
      code: 'input',
      message: new RegExp(`^Error: --dir ${escape(missing)} does not exist$`),
      cause: /not be mounted/,
    });
    assertRefusal(h, await h.run(['dev', 'import-image', '--dir', good.manifest]), {
      exit: 3,
      code: 'input',
      message: new RegExp(`^Error: --dir ${escape(good.manifest)} is not a directory$`),
    });
  });

  it("a --dir holding another arch's set says so and points at the right host or dev fetch --arch", async () => {
    const h = host();
    const dir = join(root, 'other-arch-dir');
    await writeReleaseSet(pki, dir, { version: VERSION, arch: OTHER_ARCH });
    const r = await h.run(['dev', 'import-image', '--dir', dir]);
    assertRefusal(h, r, {
      exit: 3,
      code: 'input',
      message: new RegExp(
        `^Error: ${escape(dir)} holds the ${OTHER_ARCH} release set \\(dev-image-${OTHER_ARCH}\\.manifest\\.json\\), not this host's ${HOST_ARCH} set$`,
      ),
      cause: new RegExp(`this host is ${HOST_ARCH}`),
      fix: new RegExp(
        `Import this set on an ${OTHER_ARCH} host, or carry in the ${HOST_ARCH} set .*mvmctl dev fetch --arch ${HOST_ARCH}`,
      ),
    });
    assert.equal((await h.metrics())['dev_image_verify_arch_mismatch_total'], 0);
  });
});

describe('a data directory that cannot take the image is found before the signature work (exit 17)', () => {
  // A manifest that would fail its signature (exit 10): exit 17 shows the store was checked first.
  let tampered: ReturnType<typeof copySet>;
  before(() => {
    tampered = copySet(good, join(root, 'tampered-for-store'));
    writeFileSync(tampered.manifest, `${readFileSync(good.manifest, 'utf8')} `);
  });

  it('MVM_DATA_DIR under a regular file: names the file and MVM_DATA_DIR', async () => {
    const h = host();
    const file = join(h.dir, 'a-file');
    mkdirSync(h.dir, { recursive: true });
    writeFileSync(file, 'not a directory');
    const data = join(file, 'data');
    const r = await h.run(importArgs(tampered), { MVM_DATA_DIR: data });
    assert.equal(r.code, 17, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `^Error: The data directory ${escape(data)} cannot be created: ${escape(file)} is a file, not a directory$`,
        'm',
      ),
    );
    assert.match(r.stderr, /\n {2}fix: +Set MVM_DATA_DIR \(default ~\/\.mvm\) to a directory path/);
    assert.doesNotMatch(r.stderr, /Cosign verification failed|signature/);
  });

  const canMount = process.getuid?.() === 0;

  /** A tmpfs at `dir`, read-only (mode 0700, owned by root); unmounted by the returned function. */
  function tmpfs(dir: string, options: string): () => void {
    mkdirSync(dir, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir]);
    return () => execFileSync('umount', [dir]);
  }

  it(
    'a read-only file system: names it and MVM_DATA_DIR',
    { skip: !canMount && 'needs root to mount' },
    async (t) => {
      const h = host();
      const mnt = join(h.dir, 'ro');
      let unmount: () => void;
      try {
        unmount = tmpfs(mnt, 'ro,mode=0700');
      } catch (e) {
        t.skip(`mount failed: ${(e as Error).message}`);
        return;
      }
      try {
        const data = join(mnt, 'data');
        const r = await h.run(importArgs(tampered), { MVM_DATA_DIR: data });
        assert.equal(r.code, 17, r.stderr);
        assert.match(
          r.stderr,
          new RegExp(
            `^Error: The data directory ${escape(data)} is on a read-only file system: the image cannot be installed$`,
            'm',
          ),
        );
        assert.match(
          r.stderr,
          /\n {2}fix: +Point MVM_DATA_DIR \(default ~\/\.mvm\) at a directory on a writable file system/,
        );
        assert.doesNotMatch(r.stderr, /Cosign verification failed/);
      } finally {
        unmount();
      }
    },
  );

  it(
    'an existing store on a file system remounted read-only is found by the staging probe',
    { skip: !canMount && 'needs root to mount' },
    async (t) => {
      const h = host();
      const mnt = join(h.dir, 'remounted');
      let unmount: () => void;
      try {
        unmount = tmpfs(mnt, 'rw,mode=0700');
      } catch (e) {
        t.skip(`mount failed: ${(e as Error).message}`);
        return;
      }
      try {
        const data = join(mnt, 'data');
        // Every directory of the store already there, as after an earlier import.
        mkdirSync(join(data, 'dev', 'prebuilt', '.objects'), { recursive: true, mode: 0o700 });
        execFileSync('mount', ['-o', 'remount,ro', mnt]);
        const r = await h.run(importArgs(tampered), { MVM_DATA_DIR: data });
        assert.equal(r.code, 17, r.stderr);
        assert.match(r.stderr, /^Error: The data directory .* is on a read-only file system/m);
        assert.doesNotMatch(r.stderr, /Cosign verification failed/);
      } finally {
        unmount();
      }
    },
  );
});

describe('the dev up hint is only given where dev up can boot', () => {
  it('with QEMU on PATH (x86_64), the import points at dev up; without it, it says what is missing', async () => {
    const qemu = (() => {
      try {
        execFileSync('sh', ['-c', 'command -v qemu-system-x86_64 && command -v qemu-img']);
        return true;
      } catch {
        return false;
      }
    })();
    const h = host();
    const r = await h.run(importArgs(good));
    assert.equal(r.code, 0, r.stderr);
    if (HOST_ARCH === 'x86_64' && qemu)
      assert.match(r.stdout, /Run 'mvmctl dev up' to boot the dev VM/);
    else assert.match(r.stdout, /mvmctl dev up cannot boot it on this host yet/);
    // A PATH with cp (the store copy needs it) and no QEMU.
    const bin = join(h.dir, 'bin-without-qemu');
    mkdirSync(bin, { recursive: true });
    symlinkSync(execFileSync('sh', ['-c', 'command -v cp']).toString().trim(), join(bin, 'cp'));
    const without = await testHost(join(root, `host${n++}`), trustedRoot).run(importArgs(good), {
      PATH: bin,
    });
    assert.equal(without.code, 0, without.stderr);
    assert.doesNotMatch(without.stdout, /Run 'mvmctl dev up'/);
    assert.match(
      without.stdout,
      HOST_ARCH === 'x86_64'
        ? /mvmctl dev up cannot boot it on this host yet: dev up runs the VM under QEMU, and qemu-system-x86_64 and qemu-img are not on PATH/
        : /x86_64 hosts only/,
    );
  });
});

describe('exit 18: no fresh revocation list where one is required (16 stays the network)', () => {
  it('--require-fresh-revocations with no list: exit 18, code stale-revocations, counted on the network counter', async () => {
    const h = host();
    const r = await h.run([...importArgs(good), '--require-fresh-revocations']);
    assertRefusal(h, r, {
      exit: 18,
      code: 'stale-revocations',
      message:
        /^Error: No revocation list is cached in .* and fresh revocations are required \(--require-fresh-revocations\)$/,
      fix: /mvmctl revocations import --list/,
    });
    assert.equal(
      (await h.metrics())['dev_image_verify_network_total'],
      1,
      'counted where it always was: dashboards keep their meaning',
    );
  });

  it('a network failure is still 16', async () => {
    const h = host();
    const r = await h.run(['revocations', 'refresh'], { MVM_OFFLINE: '1' });
    assert.equal(r.code, 16, r.stderr);
  });

  it('dev up under MVM_REQUIRE_FRESH_REVOCATIONS=1 with no list refuses with 18 before booting', async () => {
    const h = host();
    assert.equal((await h.run(importArgs(good))).code, 0);
    const r = await h.run(['dev', 'up', '--no-wait'], { MVM_REQUIRE_FRESH_REVOCATIONS: '1' });
    if (r.code === 0) await h.run(['dev', 'down']); // it booted: never leave a VM behind
    assert.equal(r.code, 18, r.stderr);
    assert.match(r.stderr, /fresh revocations are required \(MVM_REQUIRE_FRESH_REVOCATIONS=1\)/);
  });

  it('every help that lists exit codes gives 18 its own meaning', async () => {
    const h = host();
    const main = (await h.run(['--help'])).stdout;
    assert.match(main, /^ +16 network: /m);
    assert.match(main, /^ +18 no fresh revocation list: /m);
    const imp = (await h.run(['dev', 'import-image', '--help'])).stdout.replace(/\s+/g, ' ');
    assert.match(imp, / 18 no fresh revocation list: one fresher than 7 days is required/);
    assert.doesNotMatch(imp, /16 no fresh/);
    const up = (await h.run(['dev', 'up', '--help'])).stdout.replace(/\s+/g, ' ');
    assert.match(up, / 18 no fresh revocation list: .*\(MVM_REQUIRE_FRESH_REVOCATIONS=1\)/);
  });
});
