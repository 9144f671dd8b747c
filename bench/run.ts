/**
 * Whole-process start-up benchmark. Each command runs REPS times, interleaved
 * with the yardstick `node -e 0` in the same loop so machine noise hits all
 * of them alike; medians and ratios to the yardstick are printed. No
 * thresholds are asserted: the ratios are for reading and for the issue notes.
 * The single executable (release/mvmctl-linux-x86_64, built first if missing)
 * is measured against `node -e 0` of the same Node.js it carries: target 1.3x.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { median } from './measure.js';

const REPS = Number(process.env['BENCH_REPS'] ?? 15);
const cli = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
const fix = fileURLToPath(new URL('../test/fixtures/public-good/', import.meta.url));

const sea = fileURLToPath(new URL('../release/mvmctl-linux-x86_64', import.meta.url));
const SEA_CASE = 'mvmctl-linux-x86_64 --version (single executable)';
const SEA_TARGET = 1.3;

// The executable carries the Node.js this bench runs on (the node@24 dev dependency), so `node -e 0`
// below is the same binary without mvmctl in it.
if (process.arch === 'x64' && !existsSync(sea)) {
  console.log(
    'release/mvmctl-linux-x86_64 is missing: building it (node scripts/dist.mjs --arch x86_64)',
  );
  const b = spawnSync(
    process.execPath,
    [fileURLToPath(new URL('../scripts/dist.mjs', import.meta.url)), '--arch', 'x86_64'],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  if (b.status !== 0) throw new Error(`scripts/dist.mjs exited ${b.status}`);
}

const data = mkdtempSync(join(tmpdir(), 'mvm-bench-startup-'));
const cases: Record<string, [file: string, args: string[]]> = {
  'node -e 0 (yardstick)': [process.execPath, ['-e', '0']],
  'mvmctl --version': [process.execPath, [cli, '--version']],
  'mvmctl metrics (empty data dir)': [process.execPath, [cli, 'metrics']],
  'mvmctl status --json (empty data dir)': [process.execPath, [cli, 'status', '--json']],
  'mvmctl verify-blob (public-good v0.3, embedded root)': [
    process.execPath,
    [
      cli,
      'verify-blob',
      '--bundle',
      `${fix}artifact-a.v03.sigstore.json`,
      '--certificate-identity',
      'appu@google.com',
      '--certificate-oidc-issuer',
      'https://accounts.google.com',
      `${fix}artifact-a.txt`,
    ],
  ],
};
if (existsSync(sea)) cases[SEA_CASE] = [sea, ['--version']];
else console.log(`${SEA_CASE}: skipped on ${process.arch} (build it with: npm run dist)`);

const samples: Record<string, number[]> = Object.fromEntries(
  Object.keys(cases).map((k) => [k, []]),
);
for (let i = 0; i < REPS + 1; i++) {
  for (const [name, [file, args]] of Object.entries(cases)) {
    const t0 = process.hrtime.bigint();
    const r = spawnSync(file, args, {
      stdio: 'ignore',
      env: { ...process.env, MVM_TRUSTED_ROOT: '', MVM_DATA_DIR: data, XDG_CACHE_HOME: data },
    });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (r.status !== 0) throw new Error(`${name} exited ${r.status}`);
    if (i > 0) samples[name]!.push(ms); // the first round warms the page cache
  }
}

const base = median(samples['node -e 0 (yardstick)']!);
console.log(
  `Whole-process wall time, median of ${REPS} runs (node ${process.version}, ${process.platform}/${process.arch})`,
);
for (const [name, xs] of Object.entries(samples)) {
  const m = median(xs);
  console.log(
    `${name.padEnd(56)} ${m.toFixed(1).padStart(7)} ms   ${(m / base).toFixed(2)}x yardstick   (+${(m - base).toFixed(1)} ms)   min ${Math.min(...xs).toFixed(1)} ms`,
  );
}

if (samples[SEA_CASE]) {
  const ratio = median(samples[SEA_CASE]) / base;
  console.log(
    `single executable start-up: ${ratio.toFixed(2)}x node -e 0 of the same Node.js (target <= ${SEA_TARGET}x: ${ratio <= SEA_TARGET ? 'met' : 'MISSED'})`,
  );
}

rmSync(data, { recursive: true, force: true });
