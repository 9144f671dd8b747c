/**
 * Import benchmark (issue 3): `mvmctl dev import-image` at two rootfs sizes,
 * each with a 32 MB kernel, files in page cache, beside `openssl dgst -sha256`
 * over the same files and beside hash-then-copy (openssl dgst, then cp), all in
 * this run, and beside `cp` alone. Hashing and copying can at best overlap
 * completely, so max(openssl dgst, cp) over the same files, measured in the
 * same round, is this machine's physical bound for an import; the import's
 * ratio to it (median over rounds) is the figure that does not depend on how
 * slow the kernel's copy happens to be today. Also prints the import's
 * marginal throughput (extra bytes over extra time between the two sizes) as
 * a ratio to OpenSSL's, its fixed
 * overhead (time extrapolated to zero bytes) and peak RSS; then peak RSS for a
 * 4 GB sparse rootfs. Targets are printed beside the figures, not asserted.
 *
 * BENCH_SIZES_MB="256,2048" and BENCH_SPARSE_MB=4096 set the sizes; BENCH_REPS (default 5) the
 * repetitions, each round in a rotated order; medians are reported.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TestPki } from '../test/support/pki.js';
import { bigFile } from './files.js';
import { importArgs } from '../test/support/host.js';
import { writeReleaseSet, type ReleaseFiles } from '../test/support/release.js';
import { median, timed } from './measure.js';

const MB = 1024 * 1024;
const sizes = (process.env['BENCH_SIZES_MB'] ?? '256,2048').split(',').map(Number) as [
  number,
  number,
];
const sparseMb = Number(process.env['BENCH_SPARSE_MB'] ?? 4096);
const reps = Number(process.env['BENCH_REPS'] ?? 5);
const cli = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
const probe = fileURLToPath(new URL('./rss-probe.mjs', import.meta.url));
const arch = process.arch === 'arm64' ? 'aarch64' : 'x86_64';
const version = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'))
  .version as string;

const work = mkdtempSync(join(process.env['BENCH_DIR'] ?? tmpdir(), 'mvm-bench-'));
const pki = await TestPki.create();
const trustedRoot = pki.writeTrustedRoot(work);

/** A release set whose manifest records the digests of big files written at their release names. */
async function bigSet(name: string, rootfsMb: number, sparse = false): Promise<ReleaseFiles> {
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  const kernel = join(dir, `dev-vmlinux-${arch}`);
  const rootfs = join(dir, `dev-rootfs-${arch}.ext4`);
  bigFile(kernel, 32);
  bigFile(rootfs, rootfsMb, sparse);
  const digest = (p: string) =>
    execFileSync('openssl', ['dgst', '-sha256', '-r', p]).toString().split(' ')[0]!;
  return writeReleaseSet(pki, dir, {
    version,
    arch,
    artifactsInPlace: { kernelSha256: digest(kernel), rootfsSha256: digest(rootfs) },
  });
}

function importOnce(set: ReleaseFiles, tag: string): { seconds: number; rssMb: number } {
  const data = join(work, `data-${tag}`);
  rmSync(data, { recursive: true, force: true });
  const rssFile = join(work, `rss-${tag}`);
  const seconds = timed(process.execPath, ['--import', probe, cli, ...importArgs(set)], {
    MVM_DATA_DIR: data,
    XDG_CACHE_HOME: join(work, 'cache'),
    MVM_TRUSTED_ROOT: trustedRoot,
    MVM_BENCH_RSS_FILE: rssFile,
    MVM_OFFLINE: '1', // the air-gapped path: no revocation refresh attempt
  });
  const rssMb = Number(readFileSync(rssFile, 'utf8')) / 1024;
  rmSync(data, { recursive: true, force: true }); // keep the disk and page cache for the inputs
  return { seconds, rssMb };
}

function measure(set: ReleaseFiles, tag: string) {
  const files = [set.vmlinux, set.rootfs];
  const dest = join(work, `cp-${tag}`);
  timed('cat', files); // warm the page cache
  const imp: number[] = [];
  const rss: number[] = [];
  const ossl: number[] = [];
  const twoPass: number[] = [];
  const copy: number[] = [];
  const runs: (() => void)[] = [
    () => {
      const r = importOnce(set, tag);
      imp.push(r.seconds);
      rss.push(r.rssMb);
    },
    () => ossl.push(timed('openssl', ['dgst', '-sha256', ...files])),
    () => {
      twoPass.push(
        timed('sh', [
          '-c',
          'openssl dgst -sha256 "$1" "$2" >/dev/null && mkdir -p "$3" && cp "$1" "$2" "$3"/',
          'sh',
          ...files,
          dest,
        ]),
      );
      rmSync(dest, { recursive: true, force: true });
    },
    () => {
      copy.push(timed('sh', ['-c', 'mkdir -p "$3" && cp "$1" "$2" "$3"/', 'sh', ...files, dest]));
      rmSync(dest, { recursive: true, force: true });
    },
  ];
  // Rotate the order each round: on this machine the cost of allocating page
  // cache depends on what ran just before, so no command always goes first.
  for (let i = 0; i < reps; i++)
    for (let k = 0; k < runs.length; k++) runs[(i + k) % runs.length]!();
  const fmt = (xs: number[]) => xs.map((x) => x.toFixed(2)).join(' ');
  // The bound of each round, from that round's own openssl and cp.
  const bound = ossl.map((o, i) => Math.max(o, copy[i]!));
  const toBound = imp.map((t, i) => t / bound[i]!);
  console.log(
    `  samples (s) import [${fmt(imp)}]  openssl [${fmt(ossl)}]  cp [${fmt(copy)}]  hash-then-copy [${fmt(twoPass)}]  import/bound [${fmt(toBound)}]`,
  );
  return {
    import: median(imp),
    openssl: median(ossl),
    cp: median(copy),
    bound: median(bound),
    importToBound: median(toBound),
    hashThenCopy: median(twoPass),
    rssMb: Math.max(...rss),
  };
}

console.log(
  `Import benchmark: node ${process.version}, ${process.platform}/${process.arch}, median of ${reps}, files in page cache, work dir ${work}`,
);
const results: Record<number, ReturnType<typeof measure>> = {};
for (const mb of sizes) {
  const set = await bigSet(`set-${mb}`, mb);
  results[mb] = measure(set, String(mb));
  const r = results[mb]!;
  console.log(
    `rootfs ${String(mb).padStart(5)} MB + kernel 32 MB: import ${r.import.toFixed(3)} s   openssl dgst ${r.openssl.toFixed(3)} s   cp ${r.cp.toFixed(3)} s   hash-then-copy ${r.hashThenCopy.toFixed(3)} s   ` +
      `import/openssl ${(r.import / r.openssl).toFixed(2)}x   import/hash-then-copy ${(r.import / r.hashThenCopy).toFixed(2)}x   peak RSS ${r.rssMb.toFixed(0)} MB`,
  );
  console.log(
    `  physical bound max(openssl dgst, cp) ${r.bound.toFixed(3)} s   import/bound ${r.importToBound.toFixed(2)}x (median of per-round ratios${mb === sizes[1] ? '; target <= 1.15x' : ''})`,
  );
  rmSync(join(work, `set-${mb}`), { recursive: true, force: true });
}
const [a, b] = sizes;
const ra = results[a]!;
const rb = results[b]!;
const bytes = (b - a) * MB;
const importTput = bytes / (rb.import - ra.import);
const osslTput = bytes / (rb.openssl - ra.openssl);
const overhead = ra.import - ((a + 32) * MB) / importTput;
console.log(
  `marginal throughput: import ${(importTput / 1e9).toFixed(2)} GB/s, openssl ${(osslTput / 1e9).toFixed(2)} GB/s, ratio ${(importTput / osslTput).toFixed(2)}x (target >= 0.80x)`,
);
console.log(
  `fixed overhead (import time extrapolated to 0 bytes): ${(overhead * 1000).toFixed(0)} ms (target < 250 ms)`,
);
console.log(
  `at ${b} MB: import ${rb.import < rb.hashThenCopy ? 'faster' : 'SLOWER'} than hash-then-copy (${rb.import.toFixed(2)} s vs ${rb.hashThenCopy.toFixed(2)} s)`,
);

if (sparseMb > 0) {
  const set = await bigSet('sparse', sparseMb, true);
  const r = importOnce(set, 'sparse');
  console.log(
    `sparse rootfs ${sparseMb} MB: import ${r.seconds.toFixed(2)} s, peak RSS ${r.rssMb.toFixed(0)} MB (target < 150 MB)`,
  );
}
rmSync(work, { recursive: true, force: true });
