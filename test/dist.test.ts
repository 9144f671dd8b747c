/**
 * The release artifacts for air-gapped hosts, built once by scripts/dist.mjs
 * into a temporary directory (both arches; the aarch64 Node.js comes from
 * .dist-cache/, fetched from the registry the first time): the x86_64 single
 * executable run alone with no Node.js reachable, the aarch64 one checked as
 * a file (it cannot run on this x86_64 machine), the npm tarball installed
 * with the registry unreachable, and SHA256SUMS.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync, type ExecFileOptions } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { HOST_ARCH, importArgs, VERSION } from './support/host.js';
import { TestPki } from './support/pki.js';
import { writeReleaseSet } from './support/release.js';
import { ReleaseServer } from './support/release-server.js';

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const FIX = fileURLToPath(new URL('./fixtures/public-good/', import.meta.url));
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
const EM_X86_64 = 62;
const EM_AARCH64 = 183;

/** verify-blob of a public-good bundle, checked against the trusted root inside mvmctl. */
const VERIFY_PUBLIC_GOOD = [
  'verify-blob',
  '--bundle',
  `${FIX}artifact-a.v03.sigstore.json`,
  '--certificate-identity',
  'appu@google.com',
  '--certificate-oidc-issuer',
  'https://accounts.google.com',
  `${FIX}artifact-a.txt`,
];

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program with exactly the environment given (no inherited variables, as `env -i`). */
function run(
  file: string,
  args: string[],
  env: Record<string, string>,
  cwd?: string,
): Promise<Run> {
  const opts: ExecFileOptions = { env, timeout: 600_000, maxBuffer: 64 << 20, encoding: 'utf8' };
  if (cwd !== undefined) opts.cwd = cwd;
  return new Promise((resolve) => {
    execFile(file, args, opts, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/** The test process's environment without npm's per-script variables (npm_config_local_prefix would aim npm at this repo). */
const cleanEnv = (): Record<string, string> =>
  Object.fromEntries(
    Object.entries(process.env).filter(
      (e): e is [string, string] => e[1] !== undefined && !/^npm_/i.test(e[0]),
    ),
  );

interface Elf {
  machine: number;
  notes: { name: string; desc: Buffer }[];
}

/** The ELF header's e_machine and the notes of its PT_NOTE segments (64-bit little-endian only). */
function readElf(file: string): Elf {
  const b = readFileSync(file);
  assert.equal(b.readUInt32BE(0), 0x7f454c46, `${file}: no ELF magic`);
  assert.equal(b[4], 2, `${file}: not a 64-bit ELF`);
  assert.equal(b[5], 1, `${file}: not little-endian`);
  const phoff = Number(b.readBigUInt64LE(32));
  const phentsize = b.readUInt16LE(54);
  const notes: Elf['notes'] = [];
  for (let i = 0; i < b.readUInt16LE(56); i++) {
    const ph = phoff + i * phentsize;
    if (b.readUInt32LE(ph) !== 4 /* PT_NOTE */) continue;
    const start = Number(b.readBigUInt64LE(ph + 8));
    const end = start + Number(b.readBigUInt64LE(ph + 32));
    const align = Number(b.readBigUInt64LE(ph + 48)) === 8 ? 8 : 4;
    const pad = (n: number) => Math.ceil(n / align) * align;
    for (let q = start; q + 12 <= end;) {
      const namesz = b.readUInt32LE(q);
      const descsz = b.readUInt32LE(q + 4);
      const name = b.toString('latin1', q + 12, q + 12 + namesz).replace(/\0+$/, '');
      const desc = q + 12 + pad(namesz);
      notes.push({ name, desc: b.subarray(desc, desc + descsz) });
      q = desc + pad(descsz);
    }
  }
  return { machine: b.readUInt16LE(18), notes };
}

const seaBlob = (elf: Elf): Buffer | undefined =>
  elf.notes.find((n) => n.name === 'NODE_SEA_BLOB')?.desc;

let root: string;
let release: string;

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'mvm-dist-'));
  release = join(root, 'release');
  // One build for every test below (a SEA is ~127 MB per arch); npm test has built dist/ already.
  const r = await run(
    process.execPath,
    [join(REPO_ROOT, 'scripts/dist.mjs'), '--out', release],
    cleanEnv(),
    REPO_ROOT,
  );
  assert.equal(r.code, 0, `scripts/dist.mjs failed:\n${r.stdout}\n${r.stderr}`);
});
after(() => rmSync(root, { recursive: true, force: true }));

describe('mvmctl-linux-x86_64, copied alone into a directory, no Node.js on the PATH', () => {
  let dir: string;
  let exe: string;
  let env: Record<string, string>;

  before(() => {
    dir = join(root, 'airgap');
    // The host's PATH: coreutils' cp (the store copies through it), and no node.
    const bin = join(dir, 'bin');
    mkdirSync(bin, { recursive: true });
    symlinkSync(
      realpathSync(execFileSync('sh', ['-c', 'command -v cp'], { encoding: 'utf8' }).trim()),
      join(bin, 'cp'),
    );
    exe = join(dir, 'mvmctl-linux-x86_64');
    copyFileSync(join(release, 'mvmctl-linux-x86_64'), exe);
    env = {
      PATH: bin,
      MVM_DATA_DIR: join(dir, 'data'),
      MVM_CACHE_DIR: join(dir, 'cache'),
      MVM_OFFLINE: '1',
    };
  });
  const mvmctl = (args: string[], extra: Record<string, string> = {}) =>
    run(exe, args, { ...env, ...extra }, dir);

  it('has no node to fall back on', async () => {
    assert.deepEqual(readdirSync(env['PATH']!), ['cp']);
    assert.deepEqual(readdirSync(dir).sort(), ['bin', 'mvmctl-linux-x86_64']);
    // A program with `#!/usr/bin/env node` (the npm package's bin) cannot start here.
    const script = join(root, 'needs-node');
    writeFileSync(script, '#!/usr/bin/env node\n', { mode: 0o755 });
    assert.notEqual((await run(script, [], env)).code, 0);
  });

  it('ignores NODE_OPTIONS: no --require injected into the single executable', async () => {
    const marker = join(root, 'injected');
    const hook = join(root, 'hook.cjs');
    writeFileSync(hook, `require('fs').writeFileSync(${JSON.stringify(marker)}, 'ran');\n`);
    const r = await mvmctl(['--version'], { NODE_OPTIONS: `--require ${hook}` });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), VERSION);
    assert.equal(existsSync(marker), false, 'the --require hook did not run');
  });

  it('--version', async () => {
    const r = await mvmctl(['--version']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), VERSION);
    assert.equal(r.stderr, '', 'no experimental-feature warning from the SEA');
  });

  it('verify-blob of a public-good bundle with the trusted root compiled in', async () => {
    const r = await mvmctl(VERIFY_PUBLIC_GOOD);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout + r.stderr, /Verified OK/);
    assert.match(r.stdout + r.stderr, /Trusted root: +embedded/);
  });

  it('dev import-image of a signed release set, then status, metrics, revocations status, audit tail', async () => {
    const pki = await TestPki.create();
    const trustedRoot = pki.writeTrustedRoot(root);
    const set = await writeReleaseSet(pki, join(root, 'set'), {
      version: VERSION,
      arch: HOST_ARCH,
    });
    const withRoot = { MVM_TRUSTED_ROOT: trustedRoot };

    const imported = await mvmctl(importArgs(set), withRoot);
    assert.equal(imported.code, 0, imported.stderr);

    const status = await mvmctl(['status', '--json'], withRoot);
    assert.equal(status.code, 0, status.stderr);
    const s = JSON.parse(status.stdout);
    assert.equal(s.images.length, 1);
    assert.equal(s.images[0].version, VERSION);
    assert.equal(s.images[0].verification, 'verified');
    assert.equal(s.trustedRoot.source, trustedRoot);

    const metrics = await mvmctl(['metrics', '--json']);
    assert.equal(metrics.code, 0, metrics.stderr);
    assert.equal(JSON.parse(metrics.stdout).dev_image_verify_ok_total, 1);

    const revocations = await mvmctl(['revocations', 'status', '--json']);
    assert.equal(revocations.code, 0, revocations.stderr);
    assert.equal(JSON.parse(revocations.stdout).present, false);

    const audit = await mvmctl(['audit', 'tail', '--json']);
    assert.equal(audit.code, 0, audit.stderr);
    const a = JSON.parse(audit.stdout);
    assert.equal(a.chain.intact, true);
    assert.ok(a.records >= 1);
  });
});

describe('mvmctl-linux-x86_64 on a connected host, no Node.js on the PATH', () => {
  it('dev fetch: the downloads hash and write on a worker thread inside the single executable', async () => {
    const dir = join(root, 'connected');
    mkdirSync(dir, { recursive: true });
    const exe = join(dir, 'mvmctl-linux-x86_64');
    copyFileSync(join(release, 'mvmctl-linux-x86_64'), exe);
    const pki = await TestPki.create();
    const trustedRoot = pki.writeTrustedRoot(dir);
    const releases = join(dir, 'releases');
    const set = await writeReleaseSet(pki, join(releases, `v${VERSION}`), {
      version: VERSION,
      arch: HOST_ARCH,
      // Larger than one 1 MiB batch of the worker, so more than one write crosses threads.
      rootfs: Buffer.alloc(9 * 1024 * 1024 + 5, 0x5a),
    });
    const server = await ReleaseServer.start({ releases: { [VERSION]: set.dir } });
    try {
      const out = join(dir, 'transfer');
      const r = await run(
        exe,
        ['dev', 'fetch', '--out', out],
        {
          PATH: '/nonexistent',
          MVM_DATA_DIR: join(dir, 'data'),
          MVM_CACHE_DIR: join(dir, 'cache'),
          MVM_TRUSTED_ROOT: trustedRoot,
          MVM_RELEASE_BASE_URL: server.baseUrl,
        },
        dir,
      );
      assert.equal(r.code, 0, r.stderr);
      assert.ok(readFileSync(join(out, `dev-rootfs-${HOST_ARCH}.ext4`)).equals(set.rootfsBytes));
      assert.ok(readFileSync(join(out, `dev-vmlinux-${HOST_ARCH}`)).equals(set.kernelBytes));
    } finally {
      await server.close();
    }
  });
});

describe('mvmctl-linux-aarch64 (cannot run on this x86_64 machine: checked as a file)', () => {
  it('is an AArch64 ELF carrying the same SEA blob as the x86_64 executable, fuse flipped', () => {
    const arm = join(release, 'mvmctl-linux-aarch64');
    const elfArm = readElf(arm);
    assert.equal(elfArm.machine, EM_AARCH64);
    const elfX64 = readElf(join(release, 'mvmctl-linux-x86_64'));
    assert.equal(elfX64.machine, EM_X86_64);

    const blob = seaBlob(elfArm);
    assert.ok(blob, 'no NODE_SEA_BLOB note in the aarch64 executable');
    assert.ok(blob.length > 100_000, `SEA blob of ${blob.length} bytes is too small for mvmctl`);
    assert.ok(blob.equals(seaBlob(elfX64)!), 'the two executables carry different blobs');
    assert.ok(blob.includes(`"${VERSION}"`), 'the blob does not carry the version');

    const bytes = readFileSync(arm);
    assert.ok(bytes.includes(`${SEA_FUSE}:1`), 'the SEA fuse is not flipped');
    assert.ok(!bytes.includes(`${SEA_FUSE}:0`));
  });
});

describe(`mvmctl-${VERSION}.tgz installed with the registry unreachable`, () => {
  let project: string;
  let env: Record<string, string>;

  before(async () => {
    project = join(root, 'project');
    mkdirSync(project);
    writeFileSync(
      join(project, 'package.json'),
      JSON.stringify({ name: 'airgapped-host', version: '1.0.0', private: true, type: 'module' }),
    );
    // Node.js 24 first on the PATH: npm and the installed bin run on it.
    env = { ...cleanEnv(), PATH: `${dirname(process.execPath)}:/usr/local/bin:/usr/bin:/bin` };
  });

  it('npm install --offline with an empty cache and a registry nothing listens on', async () => {
    const cache = mkdtempSync(join(root, 'npm-cache-'));
    const r = await run(
      'npm',
      [
        'install',
        join(release, `mvmctl-${VERSION}.tgz`),
        '--offline',
        '--cache',
        cache,
        '--registry',
        'http://127.0.0.1:9/',
        '--no-audit',
        '--no-fund',
      ],
      env,
      project,
    );
    assert.equal(r.code, 0, r.stderr);
    // The dependencies came out of the tarball, not a registry.
    for (const dep of ['@sigstore/verify', '@sigstore/bundle', 'undici']) {
      assert.ok(existsSync(join(project, 'node_modules', 'mvmctl', 'node_modules', dep)), dep);
    }
  });

  it('node_modules/.bin/mvmctl --version and verify-blob', async () => {
    const bin = join(project, 'node_modules', '.bin', 'mvmctl');
    const v = await run(bin, ['--version'], env, project);
    assert.equal(v.code, 0, v.stderr);
    assert.equal(v.stdout.trim(), VERSION);
    const r = await run(
      bin,
      VERIFY_PUBLIC_GOOD,
      { ...env, MVM_DATA_DIR: join(project, 'data') },
      project,
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout + r.stderr, /Verified OK/);
  });

  it("import { verifyBlob } from 'mvmctl', at run time and with its types", async () => {
    writeFileSync(
      join(project, 'check.mjs'),
      `import { verifyBlob } from 'mvmctl';
const r = await verifyBlob({
  artifactPath: ${JSON.stringify(`${FIX}artifact-a.txt`)},
  bundlePath: ${JSON.stringify(`${FIX}artifact-a.v01.sigstore.json`)},
  certificateIdentity: 'appu@google.com',
  certificateOidcIssuer: 'https://accounts.google.com',
});
console.log(JSON.stringify({ verified: r.verified, root: r.trustedRoot.source }));
`,
    );
    const r = await run(process.execPath, ['check.mjs'], env, project);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { verified: true, root: 'embedded' });

    // The declarations resolve from the installed tree (the bundled @sigstore types included,
    // no skipLibCheck); a wrong use must be an error, so the types are not `any`.
    writeFileSync(
      join(project, 'check.ts'),
      `import { verifyBlob, MvmError, type VerifyBlobResult } from 'mvmctl';
export const r: VerifyBlobResult = await verifyBlob({ artifactPath: 'a', bundlePath: 'b' });
export const ok: boolean = r.verified;
export const code: string = new MvmError('usage', 'm').code;
// @ts-expect-error a verdict is not a number
export const bad: number = r.verified;
`,
    );
    const tsc = await run(
      process.execPath,
      [
        join(REPO_ROOT, 'node_modules/typescript/bin/tsc'),
        '--noEmit',
        '--strict',
        '--module',
        'nodenext',
        '--target',
        'es2022',
        '--typeRoots',
        join(REPO_ROOT, 'node_modules/@types'),
        '--types',
        'node',
        'check.ts',
      ],
      env,
      project,
    );
    assert.equal(tsc.code, 0, tsc.stdout + tsc.stderr);
  });
});

describe('SHA256SUMS', () => {
  it('lists every artifact and sha256sum -c passes', async () => {
    const names = readFileSync(join(release, 'SHA256SUMS'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split('  ')[1]);
    assert.deepEqual(names.sort(), [
      `mvmctl-${VERSION}.tgz`,
      'mvmctl-linux-aarch64',
      'mvmctl-linux-x86_64',
    ]);
    const r = await run('sha256sum', ['-c', 'SHA256SUMS'], cleanEnv(), release);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal((r.stdout.match(/: OK$/gm) ?? []).length, 3);
  });
});
