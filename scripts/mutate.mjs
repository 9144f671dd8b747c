// Mutation run over the security-critical code: each listed mutant (a small,
// deliberate bug: a dropped check, a flipped comparison, a missing anchor) is
// applied alone, the project is rebuilt, and the tests that guard that code
// run. A mutant the tests do not notice ("survived") is a check nothing pins.
//
//   npm run mutate                   every mutant in scripts/mutants.mjs
//   npm run mutate -- --only NAME    mutants whose name contains NAME
//   npm run mutate -- --list         list them without running
//
// Mutants marked `equivalent` (with the reason) change no behaviour and are
// left out of the score. The source file is restored after each mutant, and
// at start if an interrupted run left a backup behind.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MUTANTS } from './mutants.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
// The tests run the CLI with this very node: the project's Node.js 24, which npm scripts put first.
if (Number(process.versions.node.split('.')[0]) < 24) {
  console.error(
    `mutate: run it as 'npm run mutate' (Node.js 24), not with Node.js ${process.version}`,
  );
  process.exit(2);
}
const BACKUP_SUFFIX = '.mutate-backup';

const args = process.argv.slice(2);
const only = args.includes('--only') ? args[args.indexOf('--only') + 1] : undefined;
const selected = MUTANTS.filter((m) => !only || m.name.includes(only));

if (args.includes('--list')) {
  for (const m of selected) console.log(`${m.name}  (${m.file}; ${m.tests.join(' ')})`);
  process.exit(0);
}

// A run killed half-way leaves the mutated file and its backup: put the original back first.
for (const m of MUTANTS) {
  const path = join(ROOT, m.file);
  if (existsSync(path + BACKUP_SUFFIX)) renameSync(path + BACKUP_SUFFIX, path);
}

function run(cmd, argv, timeoutMs) {
  return spawnSync(cmd, argv, {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: timeoutMs,
    env: { ...process.env, CI: 'true' },
  });
}

const results = [];
for (const m of selected) {
  const path = join(ROOT, m.file);
  const original = readFileSync(path, 'utf8');
  const at = original.indexOf(m.find);
  if (at < 0 || original.indexOf(m.find, at + 1) >= 0) {
    results.push({
      m,
      outcome: 'stale',
      detail: 'the text to mutate is not in the file exactly once',
    });
    console.log(`STALE     ${m.name}: update scripts/mutants.mjs`);
    continue;
  }
  writeFileSync(path + BACKUP_SUFFIX, original);
  writeFileSync(path, original.slice(0, at) + m.replace + original.slice(at + m.find.length));
  let outcome;
  let detail;
  try {
    const build = run('npm', ['run', '--silent', 'build'], 120_000);
    if (build.status !== 0) {
      outcome = 'killed';
      detail = 'does not compile';
    } else {
      const t = run(
        process.execPath,
        ['--test', '--test-reporter=spec', '--test-concurrency=2', '--import', 'tsx', ...m.tests],
        600_000,
      );
      outcome = t.status === 0 ? 'survived' : 'killed';
      // Failed tests are marked ✖ (suites too, unindented); the summary after "failing tests:" repeats them.
      const report = t.stdout.split('\n✖ failing tests:')[0];
      const failed = [...report.matchAll(/^ +✖ (.*?)(?: \([\d.]+ms\))?$/gm)]
        .map((m) => m[1])
        .slice(0, 2)
        .join('; ');
      detail = outcome === 'killed' ? failed || `exit ${t.status ?? t.signal}` : '';
    }
  } finally {
    writeFileSync(path, original);
    rmSync(path + BACKUP_SUFFIX, { force: true });
  }
  if (outcome === 'survived' && m.equivalent) outcome = 'equivalent';
  results.push({ m, outcome, detail });
  console.log(`${outcome.toUpperCase().padEnd(10)}${m.name}${detail ? `  (${detail})` : ''}`);
}
run('npm', ['run', '--silent', 'build'], 120_000); // leave dist/ built from the real sources

const scored = results.filter((r) => r.outcome === 'killed' || r.outcome === 'survived');
const killed = scored.filter((r) => r.outcome === 'killed').length;
console.log(
  `\nmutation score: ${killed}/${scored.length} killed` +
    (scored.length ? ` (${((100 * killed) / scored.length).toFixed(0)}%)` : '') +
    `; ${results.filter((r) => r.outcome === 'equivalent').length} equivalent; ${results.filter((r) => r.outcome === 'stale').length} stale`,
);
for (const r of results.filter((r) => r.outcome === 'equivalent')) {
  console.log(`  equivalent: ${r.m.name}: ${r.m.equivalent}`);
}
const bad = results.filter((r) => r.outcome === 'survived' || r.outcome === 'stale');
for (const r of bad) console.log(`  ${r.outcome}: ${r.m.name} (${r.m.file})`);
process.exit(bad.length ? 1 : 0);
