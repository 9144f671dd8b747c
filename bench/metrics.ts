/**
 * Metrics benchmark (issue 12): `mvmctl metrics serve` scraped over HTTP with
 * an audit log of 1,000 and of 100,000 records — the whole reading at start,
 * the first scrape, then scrapes that each follow 10 appended records (the
 * cost must be flat after the first read: the same at 100,000 as at 1,000);
 * 200 scrapes held at once (all must be answered); and a cold `mvmctl
 * metrics` (a whole reading per run) against `node -e 0` in the same loop.
 * The reader's own byte counts (library level) show what a scrape reads.
 * Figures and ratios are printed, not asserted.
 *
 * The records are written with the project's own append code
 * (appendAuditRecords: the same chain, anchor and rotation as every command),
 * in batches of 5,000 so a 100,000-record log takes seconds, not a lock and
 * an fsync per record. BENCH_REPS (default 9) sets the repetitions.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { auditLogPath, configFrom, type Config } from '../src/config.js';
import { auditAnchorPath, AuditLogReader } from '../src/audit/log-files.js';
import { appendAuditRecords, audit, type AuditRecord } from '../src/audit/record.js';
import { median } from './measure.js';

const REPS = Number(process.env['BENCH_REPS'] ?? 9);
const SIZES = [1_000, 100_000];
const cli = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
const work = mkdtempSync(join(process.env['BENCH_DIR'] ?? tmpdir(), 'mvm-bench-metrics-'));

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
const ms = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;

/** Import outcomes in roughly a fleet host's mix. */
function record(i: number): AuditRecord {
  const base = {
    ts: new Date(Date.UTC(2026, 0, 1) + i * 60_000).toISOString(),
    event: 'dev.import-image' as const,
    version: '0.14.0',
    arch: 'x86_64',
    variant: 'dev',
    manifestSha256: (i * 2654435761).toString(16).padStart(64, '0').slice(-64),
    durationSeconds: 0.05 + (i % 97) / 40,
    mvmctlVersion: '0.14.0',
    pid: 10_000 + (i % 5000),
    uid: 1000,
  };
  switch (i % 10) {
    case 7:
      return { ...base, outcome: 'failed', code: 'signature', check: 'identity', message: 'x' };
    case 8:
      return { ...base, outcome: 'failed', code: 'digest', message: 'rootfs SHA-256 mismatch' };
    case 9:
      return { ...base, outcome: 'unchanged', bypassed: [] };
    default:
      return {
        ...base,
        outcome: 'ok',
        bypassed: [],
        signer:
          'https://github.com/tinylabscom/mvm/.github/workflows/release.yml@refs/tags/v0.14.0',
      };
  }
}

async function hostWithLog(
  count: number,
): Promise<{ env: Record<string, string>; config: Config }> {
  const data = join(work, `data-${count}`);
  const env = { MVM_DATA_DIR: data, XDG_CACHE_HOME: join(work, `cache-${count}`) };
  const config = configFrom(env, '/nonexistent');
  await audit(config, { event: 'revocations.refresh', outcome: 'ok' }); // the private directories
  const opts = { anchorPath: auditAnchorPath(config), warn: () => undefined };
  for (let i = 1; i < count; i += 5000) {
    const batch = Array.from({ length: Math.min(5000, count - i) }, (_, k) => record(i + k));
    await appendAuditRecords(auditLogPath(config), batch, opts);
  }
  return { env, config };
}

function get(url: string): Promise<{ status: number; ms: number; bytes: number }> {
  const t0 = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false }, (res) => {
      let bytes = 0;
      res.on('data', (d: Buffer) => (bytes += d.length));
      res.on('end', () => resolve({ status: res.statusCode!, ms: ms(t0), bytes }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function startServe(env: Record<string, string>): Promise<{
  child: ChildProcess;
  url: string;
  startMs: number;
}> {
  const t0 = process.hrtime.bigint();
  const child = spawn(process.execPath, [cli, 'metrics', 'serve', '--listen', '127.0.0.1:0'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      err += d;
      const m = /listening on (\S+)/.exec(err);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`metrics serve exited ${code}: ${err}`)));
  });
  return { child, url, startMs: ms(t0) };
}

console.log(
  `Metrics benchmark: node ${process.version}, ${process.platform}/${process.arch}, median of ${REPS}, work dir ${work}`,
);

const hosts: Record<number, { env: Record<string, string>; config: Config }> = {};
for (const count of SIZES) {
  const t0 = process.hrtime.bigint();
  hosts[count] = await hostWithLog(count);
  const dir = join(hosts[count].config.dataDir, 'telemetry');
  const files = readdirSync(dir).filter((f) => /^audit\.jsonl(\.\d+)?$/.test(f));
  const bytes = files.reduce((n, f) => n + statSync(join(dir, f)).size, 0);
  console.log(
    `audit log of ${count.toLocaleString('en')} records: ${(bytes / 1e6).toFixed(1)} MB in ${files.length} file(s) (${files.sort().join(', ')}), written in ${(ms(t0) / 1000).toFixed(1)} s`,
  );
}

// 1. metrics serve: the whole reading at start, the first scrape, then scrapes after appends.
const scrapeMedian: Record<number, number> = {};
let held: { ok: number; wallMs: number; p50: number; p99: number } | undefined;
for (const count of SIZES) {
  const { env, config } = hosts[count]!;
  const starts: number[] = [];
  const firsts: number[] = [];
  const later: number[] = [];
  const idle: number[] = [];
  for (let rep = 0; rep < Math.max(3, Math.ceil(REPS / 3)); rep++) {
    const serve = await startServe(env);
    starts.push(serve.startMs);
    firsts.push((await get(serve.url)).ms);
    for (let i = 0; i < REPS; i++) idle.push((await get(serve.url)).ms);
    for (let i = 0; i < REPS; i++) {
      await appendAuditRecords(
        auditLogPath(config),
        Array.from({ length: 10 }, (_, k) => record(count + rep * 1000 + i * 10 + k)),
        { anchorPath: auditAnchorPath(config), warn: () => undefined },
      );
      const r = await get(serve.url);
      if (r.status !== 200) throw new Error(`scrape answered ${r.status}`);
      later.push(r.ms);
    }
    if (count === SIZES.at(-1) && rep === 0) {
      // 200 scrapes at once, each on its own connection, held open together.
      const t0 = process.hrtime.bigint();
      const replies = await Promise.all(Array.from({ length: 200 }, () => get(serve.url)));
      held = {
        ok: replies.filter((r) => r.status === 200).length,
        wallMs: ms(t0),
        p50: pct(
          replies.map((r) => r.ms),
          50,
        ),
        p99: pct(
          replies.map((r) => r.ms),
          99,
        ),
      };
    }
    serve.child.kill('SIGTERM');
    await new Promise((r) => serve.child.once('exit', r));
  }
  scrapeMedian[count] = median(later);
  console.log(
    `metrics serve, ${count.toLocaleString('en').padStart(7)} records: start (whole reading) ${median(starts).toFixed(0)} ms   first scrape ${median(firsts).toFixed(1)} ms   ` +
      `later scrape: +10 records ${median(later).toFixed(1)} ms (p90 ${pct(later, 90).toFixed(1)}), nothing new ${median(idle).toFixed(1)} ms`,
  );
}
const [small, large] = SIZES as [number, number];
console.log(
  `scrape after the first read: ${large.toLocaleString('en')} records / ${small.toLocaleString('en')} records = ${(scrapeMedian[large]! / scrapeMedian[small]!).toFixed(2)}x (flat = 1.0x)`,
);
if (held)
  console.log(
    `200 concurrent scrapes (100,000 records): ${held.ok}/200 answered${held.ok === 200 ? '' : ' — NOT ALL'} in ${held.wallMs.toFixed(0)} ms (per scrape p50 ${held.p50.toFixed(0)} ms, p99 ${held.p99.toFixed(0)} ms)`,
  );

// 2. The reader, library level: what a scrape reads, in bytes.
for (const count of SIZES) {
  const { config } = hosts[count]!;
  const reader = new AuditLogReader(auditLogPath(config), auditAnchorPath(config));
  let t0 = process.hrtime.bigint();
  await reader.refresh();
  const first = ms(t0);
  const firstBytes = reader.stats.bytesRead;
  await appendAuditRecords(auditLogPath(config), [record(1), record(2)], {
    anchorPath: auditAnchorPath(config),
    warn: () => undefined,
  });
  t0 = process.hrtime.bigint();
  await reader.refresh();
  console.log(
    `reader, ${count.toLocaleString('en').padStart(7)} records: first refresh ${first.toFixed(0)} ms (${(firstBytes / 1e6).toFixed(1)} MB read), next refresh ${ms(t0).toFixed(2)} ms (${reader.stats.bytesRead - firstBytes} bytes read: the 2 appended records)`,
  );
}

// 3. A cold mvmctl metrics (a whole reading each run) against node -e 0, interleaved.
const cases: Record<string, [string[], Record<string, string>]> = {
  'node -e 0 (yardstick)': [['-e', '0'], {}],
  'mvmctl metrics, 1,000 records': [[cli, 'metrics'], hosts[small]!.env],
  'mvmctl metrics, 100,000 records': [[cli, 'metrics'], hosts[large]!.env],
};
const samples: Record<string, number[]> = Object.fromEntries(
  Object.keys(cases).map((k) => [k, []]),
);
for (let i = 0; i < REPS + 1; i++) {
  for (const [name, [args, env]] of Object.entries(cases)) {
    const t0 = process.hrtime.bigint();
    const r = spawnSync(process.execPath, args, {
      stdio: 'ignore',
      env: { ...process.env, MVM_TRUSTED_ROOT: '', ...env },
    });
    const t = ms(t0);
    if (r.status !== 0) throw new Error(`${name} exited ${r.status}`);
    if (i > 0) samples[name]!.push(t); // the first round warms the page cache
  }
}
const base = median(samples['node -e 0 (yardstick)']!);
for (const [name, xs] of Object.entries(samples)) {
  const m = median(xs);
  console.log(
    `${name.padEnd(36)} ${m.toFixed(1).padStart(7)} ms   ${(m / base).toFixed(2)}x yardstick   (+${(m - base).toFixed(1)} ms)   min ${Math.min(...xs).toFixed(1)} ms`,
  );
}

rmSync(work, { recursive: true, force: true });
