/**
 * The module compile cache (src/cli/compile-cache.ts) never changes a result:
 * the built CLI, run as a subprocess, gives the same output and exit code with
 * no cache, a cache it fills, a warm cache, a cache whose every entry was
 * corrupted, and a cache directory it must not use (writable by others, or a
 * file). Verification is real: bundles signed by the test PKI.
 */
import assert from 'node:assert/strict';
import {
  chmodSync,
  mkdirSync,
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
import { compileCacheDir, COMPILE_CACHE_SUBDIR } from '../src/cli/compile-cache.js';
import { runCli, type CliResult } from './support/cli.js';
import { GITHUB_ISSUER, releaseIdentity, TestPki } from './support/pki.js';

const IDENTITY = releaseIdentity('tinylabscom/mvm', 'v0.14.0');
const ARTIFACT = Buffer.from('{"schema_version":1,"version":"0.14.0"}\n');

let dir: string;
let rootPath: string;
let artifact: string;
let good: string;
let forged: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mvm-ccache-'));
  const pki = await TestPki.create();
  rootPath = pki.writeTrustedRoot(dir);
  artifact = join(dir, 'artifact.json');
  writeFileSync(artifact, ARTIFACT);
  good = join(dir, 'good.bundle');
  writeFileSync(good, JSON.stringify(await pki.signBlob(ARTIFACT)));
  forged = join(dir, 'forged.bundle');
  writeFileSync(forged, JSON.stringify(await pki.signBlob(Buffer.from('other bytes\n'))));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** Every file under `d`, recursively. */
function filesUnder(d: string): string[] {
  try {
    return readdirSync(d, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => join(e.parentPath, e.name));
  } catch {
    return [];
  }
}

/** One verification that passes and one that fails, and `--version`, as this cache setup gives them. */
async function results(env: Record<string, string>): Promise<CliResult[]> {
  const verify = (bundle: string) =>
    runCli(
      [
        'verify-blob',
        '--trusted-root',
        rootPath,
        '--bundle',
        bundle,
        '--certificate-identity',
        IDENTITY,
        '--certificate-oidc-issuer',
        GITHUB_ISSUER,
        '--json',
        artifact,
      ],
      env,
    );
  const out = [await verify(good), await verify(forged), await runCli(['--version'], env)];
  // Times and log indexes are the same across runs (one bundle file each); nothing to normalise.
  return out;
}

describe('compile cache', () => {
  let baseline: CliResult[];
  before(async () => {
    baseline = await results({
      MVM_COMPILE_CACHE: '0',
      MVM_CACHE_DIR: join(dir, 'unused-cache'),
    });
    assert.equal(baseline[0]!.code, 0, baseline[0]!.stderr);
    assert.equal(JSON.parse(baseline[0]!.stdout).verified, true);
    assert.equal(baseline[1]!.code, 10, 'the forged bundle fails verification');
    assert.equal(baseline[2]!.code, 0);
    assert.deepEqual(filesUnder(join(dir, 'unused-cache')), [], 'MVM_COMPILE_CACHE=0 writes none');
  });

  it('is filled on first use and gives the same results cold, warm and corrupted', async () => {
    const cacheDir = join(dir, 'c1');
    const env = { MVM_CACHE_DIR: cacheDir };
    const cache = join(cacheDir, COMPILE_CACHE_SUBDIR);
    assert.deepEqual(await results(env), baseline, 'cold cache');
    const entries = filesUnder(cache);
    assert.ok(entries.length > 0, 'the first runs wrote compiled code into the cache');
    assert.equal(statSync(cache).mode & 0o777, 0o700, 'the cache directory is private');
    assert.deepEqual(await results(env), baseline, 'warm cache');

    // Every entry corrupted: its body flipped and, for some, cut short.
    entries.forEach((f, i) => {
      const b = readFileSync(f);
      for (let at = 0; at < b.length; at += 64) b[at] = b[at]! ^ 0xff;
      writeFileSync(f, i % 2 === 0 ? b : b.subarray(0, Math.floor(b.length / 2)));
    });
    assert.deepEqual(await results(env), baseline, 'corrupted cache');
    // Entries made for other source (another mvmctl build) are the same case as a corrupt one: junk files.
    for (const f of filesUnder(cache)) writeFileSync(f, 'not a code cache');
    assert.deepEqual(await results(env), baseline, 'junk in every entry');
  });

  it('is not used from a directory that others can write, or from a file', async () => {
    const open = join(dir, 'c2');
    mkdirSync(join(open, COMPILE_CACHE_SUBDIR), { recursive: true });
    chmodSync(join(open, COMPILE_CACHE_SUBDIR), 0o777);
    assert.deepEqual(await results({ MVM_CACHE_DIR: open }), baseline);
    assert.deepEqual(filesUnder(open), [], 'nothing was cached in a world-writable directory');

    const parentOpen = join(dir, 'c3');
    mkdirSync(parentOpen, { mode: 0o700 });
    chmodSync(parentOpen, 0o777);
    assert.deepEqual(await results({ MVM_CACHE_DIR: parentOpen }), baseline);
    assert.deepEqual(filesUnder(parentOpen), [], 'nor under a parent others could swap it out of');

    const file = join(dir, 'c4');
    mkdirSync(file);
    writeFileSync(join(file, COMPILE_CACHE_SUBDIR), 'a file where the directory would be');
    assert.deepEqual(await results({ MVM_CACHE_DIR: file }), baseline);
  });

  it('runs with no cache where the directory cannot be created', async () => {
    // A path below a regular file can never be created, whoever runs the test (root included).
    const blocked = join(dir, 'artifact.json', 'cache');
    assert.deepEqual(await results({ MVM_CACHE_DIR: blocked }), baseline);
  });

  it('finds its directory as the cache directory is configured', () => {
    assert.equal(
      compileCacheDir({ MVM_CACHE_DIR: '/srv/c', XDG_CACHE_HOME: '/x', HOME: '/h' }),
      `/srv/c/${COMPILE_CACHE_SUBDIR}`,
    );
    assert.equal(
      compileCacheDir({ XDG_CACHE_HOME: '/x', HOME: '/h' }),
      `/x/mvm/${COMPILE_CACHE_SUBDIR}`,
    );
    assert.equal(
      compileCacheDir({ XDG_CACHE_HOME: 'relative', HOME: '/h' }),
      `/h/.cache/mvm/${COMPILE_CACHE_SUBDIR}`,
    );
    assert.equal(compileCacheDir({ MVM_CACHE_DIR: 'relative', HOME: '/h' }), undefined);
    assert.equal(compileCacheDir({}), undefined);
  });
});
