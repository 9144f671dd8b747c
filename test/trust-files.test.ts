/**
 * A trusted root (--trusted-root, MVM_TRUSTED_ROOT) or --key file decides
 * every signature, so it is held to the store's owner/mode rule: a file
 * writable by group or others, owned by another user (root excepted), or in a
 * directory others can rewrite is refused with exit 3 and the fix. The built
 * CLI as a subprocess, real files and modes (the suite runs as root; the
 * foreign-owner cases chown to nobody, 65534).
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCli, type CliResult } from './support/cli.js';
import { HOST_ARCH, testHost, VERSION } from './support/host.js';
import { GITHUB_ISSUER, releaseIdentity, TestPki } from './support/pki.js';
import { writeReleaseSet, type ReleaseFiles } from './support/release.js';

const IDENTITY = releaseIdentity('tinylabscom/mvm', 'v0.14.0');
const MANIFEST = Buffer.from('{"schema_version":1}\n');
const NOBODY = 65534;
const asRoot = { skip: process.getuid?.() !== 0 ? 'needs root to chown' : false };

let dir: string;
let pki: TestPki;
let rootJson: string;
let bundlePath: string;
let keyBundlePath: string;
let manifestPath: string;
let keyPem: string;
let n = 0;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mvm-trustfiles-'));
  pki = await TestPki.create();
  rootJson = JSON.stringify(pki.trustedRoot());
  manifestPath = join(dir, 'manifest.json');
  writeFileSync(manifestPath, MANIFEST);
  bundlePath = join(dir, 'manifest.json.bundle');
  writeFileSync(bundlePath, JSON.stringify(await pki.signBlob(MANIFEST)));
  const keys = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  keyPem = keys.publicKey.export({ format: 'pem', type: 'spki' }) as string;
  keyBundlePath = join(dir, 'key.bundle');
  writeFileSync(keyBundlePath, JSON.stringify(await pki.signBlob(MANIFEST, { key: keys })));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** A fresh directory of the given mode holding a file of the given mode and content. */
function place(content: string, fileMode: number, dirMode = 0o755, name = 'trusted_root.json') {
  const d = join(dir, `d${n++}`);
  mkdirSync(d);
  chmodSync(d, dirMode);
  const path = join(d, name);
  writeFileSync(path, content);
  chmodSync(path, fileMode);
  return { dir: d, path };
}

const verifyWithRoot = (root: string, extra: string[] = []): Promise<CliResult> =>
  runCli([
    'verify-blob',
    '--trusted-root',
    root,
    '--bundle',
    bundlePath,
    '--certificate-identity',
    IDENTITY,
    '--certificate-oidc-issuer',
    GITHUB_ISSUER,
    ...extra,
    manifestPath,
  ]);

const verifyWithKey = (key: string): Promise<CliResult> =>
  runCli([
    'verify-blob',
    '--trusted-root',
    place(rootJson, 0o644).path,
    '--bundle',
    keyBundlePath,
    '--key',
    key,
    manifestPath,
  ]);

/** Exit 3, no stack trace, nothing on stdout, the cause and fix lines matching. */
function assertRefused(r: CliResult, cause: RegExp, fix: RegExp): void {
  assert.equal(r.code, 3, `expected exit 3, got ${r.code}: ${r.stderr}${r.stdout}`);
  assert.match(
    r.stderr,
    /^Error: The (trusted root|key) .* (is not protected from other users|is in a directory other users can change)\n/,
  );
  assert.match(r.stderr, cause);
  assert.match(r.stderr, fix);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
  assert.equal(r.stdout, '');
}

describe('trusted root file: owner and mode', () => {
  it('control: a 0644 root in a 0755 directory, and a 0600 one, verify', async () => {
    for (const mode of [0o644, 0o600]) {
      const r = await verifyWithRoot(place(rootJson, mode).path);
      assert.equal(r.code, 0, r.stderr);
    }
  });

  it('control: a root in a world-writable sticky directory of its owner (as /tmp) verifies', async () => {
    const r = await verifyWithRoot(place(rootJson, 0o644, 0o1777).path);
    assert.equal(r.code, 0, r.stderr);
  });

  it('a world-writable (0666) root is refused', async () => {
    const { path } = place(rootJson, 0o666);
    assertRefused(
      await verifyWithRoot(path),
      /cause: the file is writable by group or others \(mode 666\)/,
      new RegExp(`fix: +chmod go-w ${path}\\n`),
    );
  });

  it('a group-writable (0620) root is refused', async () => {
    const { path } = place(rootJson, 0o620);
    assertRefused(
      await verifyWithRoot(path),
      /writable by group or others \(mode 620\)/,
      new RegExp(`fix: +chmod go-w ${path}\\n`),
    );
  });

  it('a root owned by another user is refused', asRoot, async () => {
    const { path } = place(rootJson, 0o644);
    chownSync(path, NOBODY, NOBODY);
    assertRefused(
      await verifyWithRoot(path),
      new RegExp(`owned by uid ${NOBODY}, not by this user \\(uid 0\\) or root`),
      new RegExp(`fix: .*chown 0 ${path}`),
    );
  });

  it('a root in a 0777 directory (no sticky bit) is refused', async () => {
    const { path, dir: d } = place(rootJson, 0o644, 0o777);
    assertRefused(
      await verifyWithRoot(path),
      new RegExp(`its directory ${d} is writable by group or others \\(mode 777\\)`),
      new RegExp(`fix: +chmod go-w ${d}`),
    );
  });

  it('a root in a group-writable directory (0775) is refused', async () => {
    const { path } = place(rootJson, 0o644, 0o775);
    assertRefused(await verifyWithRoot(path), /mode 775/, /chmod go-w/);
  });

  it(
    'a root in a sticky directory owned by another user is refused (its owner can replace the file)',
    asRoot,
    async () => {
      const { path, dir: d } = place(rootJson, 0o644, 0o1777);
      chownSync(d, NOBODY, NOBODY);
      assertRefused(
        await verifyWithRoot(path),
        new RegExp(`its directory ${d} is owned by uid ${NOBODY}`),
        /Move the trusted root into a directory you own/,
      );
    },
  );

  it('a symlink to a root in a 0777 directory is refused (the opened file is judged)', async () => {
    const { path, dir: d } = place(rootJson, 0o644, 0o777);
    const link = join(place('x', 0o644).dir, 'link.json');
    symlinkSync(path, link);
    assertRefused(
      await verifyWithRoot(link),
      new RegExp(`its directory ${d} is writable`),
      /chmod go-w/,
    );
  });

  it('a symlink in a 0777 directory to a safe root is refused (the link can be repointed)', async () => {
    const { path } = place(rootJson, 0o644);
    const open = place('x', 0o644, 0o777).dir;
    const link = join(open, 'link.json');
    symlinkSync(path, link);
    assertRefused(
      await verifyWithRoot(link),
      new RegExp(`its directory ${open} is writable`),
      /chmod go-w/,
    );
  });

  it('MVM_TRUSTED_ROOT is held to the same rule; --json names the code', async () => {
    const { path } = place(rootJson, 0o666);
    const r = await runCli(
      [
        'verify-blob',
        '--bundle',
        bundlePath,
        '--certificate-identity',
        IDENTITY,
        '--certificate-oidc-issuer',
        GITHUB_ISSUER,
        '--json',
        manifestPath,
      ],
      { MVM_TRUSTED_ROOT: path },
    );
    assert.equal(r.code, 3, r.stderr);
    const { error } = JSON.parse(r.stdout);
    assert.equal(error.code, 'trusted-root');
    assert.match(error.cause, /writable by group or others \(mode 666\)/);
    assert.equal(error.fix, `chmod go-w ${path}`);
  });

  it('the embedded root is not a file of the operator and is unaffected', async () => {
    const fixtures = new URL('./fixtures/public-good/', import.meta.url).pathname;
    const r = await runCli([
      'verify-blob',
      '--bundle',
      join(fixtures, 'artifact-a.v03.sigstore.json'),
      '--certificate-identity',
      'appu@google.com',
      '--certificate-oidc-issuer',
      'https://accounts.google.com',
      join(fixtures, 'artifact-a.txt'),
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /Trusted root: +embedded/);
  });
});

describe('--key file: owner and mode', () => {
  it('control: a 0644 key verifies', async () => {
    const r = await verifyWithKey(place(keyPem, 0o644, 0o755, 'cosign.pub').path);
    assert.equal(r.code, 0, r.stderr);
  });

  it('a group-writable key is refused as an input error', async () => {
    const { path } = place(keyPem, 0o664, 0o755, 'cosign.pub');
    const r = await verifyWithKey(path);
    assertRefused(r, /writable by group or others \(mode 664\)/, new RegExp(`chmod go-w ${path}`));
  });

  it('a key owned by another user is refused', asRoot, async () => {
    const { path } = place(keyPem, 0o644, 0o755, 'cosign.pub');
    chownSync(path, NOBODY, NOBODY);
    assertRefused(await verifyWithKey(path), /owned by uid 65534/, /chown 0 /);
  });

  it('a key in a 0777 directory is refused', async () => {
    const { path } = place(keyPem, 0o644, 0o777, 'cosign.pub');
    assertRefused(await verifyWithKey(path), /mode 777/, /chmod go-w/);
  });
});

describe('dev import-image: the trusted root is held to the rule too', () => {
  let set: ReleaseFiles;
  before(async () => {
    set = await writeReleaseSet(pki, join(dir, 'set'), { version: VERSION, arch: HOST_ARCH });
  });

  it('control: the same set imports with a 0644 root', async () => {
    const host = testHost(join(dir, `host${n++}`), place(rootJson, 0o644).path);
    const r = await host.importSet(set);
    assert.equal(r.code, 0, r.stderr);
  });

  it('a group-writable MVM_TRUSTED_ROOT: exit 3, nothing installed', async () => {
    const { path } = place(rootJson, 0o620);
    const host = testHost(join(dir, `host${n++}`), path);
    const r = await host.importSet(set);
    assertRefused(r, /writable by group or others \(mode 620\)/, new RegExp(`chmod go-w ${path}`));
    const installed = existsSync(host.prebuilt) ? readdirSync(host.prebuilt) : [];
    assert.deepEqual(installed, []);
  });
});
