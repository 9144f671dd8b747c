/**
 * Whole-process start-up benchmark. Each command runs REPS times, interleaved
 * with the yardstick `node -e 0` in the same loop so machine noise hits all
 * of them alike; medians and ratios to the yardstick are printed. No
 * thresholds are asserted: the ratios are for reading and for the issue notes.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPS = Number(process.env['BENCH_REPS'] ?? 15);
const cli = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
const fix = fileURLToPath(new URL('../test/fixtures/public-good/', import.meta.url));

const data = mkdtempSync(join(tmpdir(), 'mvm-bench-startup-'));
const cases: Record<string, string[]> = {
  'node -e 0 (yardstick)': ['-e', '0'],
  'mvmctl --version': [cli, '--version'],
  'mvmctl metrics (empty data dir)': [cli, 'metrics'],
  'mvmctl status --json (empty data dir)': [cli, 'status', '--json'],
  'mvmctl verify-blob (public-good v0.3, embedded root)': [
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
};

const samples: Record<string, number[]> = Object.fromEntries(
  Object.keys(cases).map((k) => [k, []]),
);
for (let i = 0; i < REPS + 1; i++) {
  for (const [name, args] of Object.entries(cases)) {
    const t0 = process.hrtime.bigint();
    const r = spawnSync(process.execPath, args, {
      stdio: 'ignore',
      env: { ...process.env, MVM_TRUSTED_ROOT: '', MVM_DATA_DIR: data, XDG_CACHE_HOME: data },
    });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (r.status !== 0) throw new Error(`${name} exited ${r.status}`);
    if (i > 0) samples[name]!.push(ms); // the first round warms the page cache
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
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

rmSync(data, { recursive: true, force: true });
