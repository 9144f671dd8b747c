/**
 * Guest agent benchmark: what `dev exec` and `dev cp` cost over the bare
 * QEMU guest agent protocol they are built on, in the same run, on the real
 * test guest (software emulation), BENCH_AGENT_REPS rounds (default 5) after
 * a warm-up, order alternated:
 *
 * - `mvmctl dev exec -n -- true`, process start to exit 0, beside a bare QGA
 *   round trip on the same socket from this process: guest-sync-delimited,
 *   guest-exec /bin/true, guest-exec-status until it exited;
 * - `mvmctl dev cp` of 100 MB to the guest and back (SHA-256 on both sides,
 *   temporary name, rename), beside the same bytes written and read by hand
 *   through guest-file-open/write/read in 1 MiB chunks (no hashing, no checks).
 *
 * Medians, samples and ratios are printed; nothing asserted.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI } from '../test/support/cli.js';
import { hostWithTestGuest, READY_LINE } from '../test/support/vm.js';
import { median } from './measure.js';
import { BareQga } from './qga.js';

const REPS = Number(process.env['BENCH_AGENT_REPS'] ?? 5);
const COPY_MB = 100;
const CHUNK = 1024 * 1024;
const now = (): bigint => process.hrtime.bigint();
const since = (t0: bigint): number => Number(now() - t0) / 1e9;

const root = mkdtempSync(join(process.env['BENCH_DIR'] ?? tmpdir(), 'mvm-ba-'));
const { host, vmDir } = await hostWithTestGuest(root);
const agentSocket = join(vmDir, 'agent.sock');

function mvm(args: string[]): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: { ...process.env, ...host.env }, maxBuffer: 1 << 20 },
      (err, _out, stderr) => (err ? reject(new Error(`${args.join(' ')}: ${stderr}`)) : resolve()),
    ),
  );
}

async function bareTrue(): Promise<number> {
  const t0 = now();
  const q = await BareQga.open(agentSocket);
  const { pid } = (await q.call('guest-exec', { path: '/bin/true' })) as { pid: number };
  while (!((await q.call('guest-exec-status', { pid })) as { exited: boolean }).exited);
  q.close();
  return since(t0);
}

async function devExecTrue(): Promise<number> {
  const t0 = now();
  await mvm(['dev', 'exec', '-n', '--', 'true']);
  return since(t0);
}

const data = randomBytes(COPY_MB * CHUNK);
const hostFile = join(root, 'payload');
writeFileSync(hostFile, data);

async function bareCopy(): Promise<{ to: number; from: number }> {
  const q = await BareQga.open(agentSocket);
  let t0 = now();
  let h = (await q.call('guest-file-open', { path: '/tmp/bare-copy', mode: 'w' })) as number;
  for (let at = 0; at < data.length; at += CHUNK)
    await q.call('guest-file-write', {
      handle: h,
      'buf-b64': data.subarray(at, at + CHUNK).toString('base64'),
    });
  await q.call('guest-file-close', { handle: h });
  const to = since(t0);
  t0 = now();
  h = (await q.call('guest-file-open', { path: '/tmp/bare-copy', mode: 'r' })) as number;
  for (;;) {
    const r = (await q.call('guest-file-read', { handle: h, count: CHUNK })) as { count: number };
    if (r.count === 0) break;
  }
  await q.call('guest-file-close', { handle: h });
  const from = since(t0);
  q.close();
  return { to, from };
}

async function devCp(): Promise<{ to: number; from: number }> {
  let t0 = now();
  await mvm(['dev', 'cp', hostFile, 'dev:/tmp/dev-copy']);
  const to = since(t0);
  t0 = now();
  await mvm(['dev', 'cp', 'dev:/tmp/dev-copy', join(root, 'back')]);
  const from = since(t0);
  rmSync(join(root, 'back'));
  return { to, from };
}

const s = {
  bareTrue: [] as number[],
  devTrue: [] as number[],
  bareTo: [] as number[],
  bareFrom: [] as number[],
  cpTo: [] as number[],
  cpFrom: [] as number[],
};
try {
  console.log(
    `Guest agent benchmark: node ${process.version}, ${REPS} rounds after a warm-up, the test guest under TCG`,
  );
  await mvm([
    'dev',
    'up',
    '--accel',
    'tcg',
    '--ready-line',
    READY_LINE,
    '--timeout',
    '170',
    '--memory',
    '768M',
  ]);
  const round = async (i: number) => {
    const steps: [() => Promise<void>, () => Promise<void>] = [
      async () => {
        s.bareTrue.push(await bareTrue());
        const b = await bareCopy();
        s.bareTo.push(b.to);
        s.bareFrom.push(b.from);
      },
      async () => {
        s.devTrue.push(await devExecTrue());
        const c = await devCp();
        s.cpTo.push(c.to);
        s.cpFrom.push(c.from);
      },
    ];
    await steps[i % 2]!();
    await steps[(i + 1) % 2]!();
  };
  await round(0);
  for (const xs of Object.values(s)) xs.length = 0;
  for (let i = 0; i < REPS; i++) await round(i);
} finally {
  await mvm(['dev', 'down', '--timeout', '5']).catch(() => undefined);
}
const fmt = (xs: number[]) => xs.map((x) => x.toFixed(3)).join(' ');
const line = (name: string, xs: number[]) =>
  console.log(`${name.padEnd(52)} median ${median(xs).toFixed(3)} s   samples [${fmt(xs)}]`);
line('bare QGA: sync + guest-exec true + status', s.bareTrue);
line('mvmctl dev exec -n -- true (process start -> exit)', s.devTrue);
line(`bare QGA: ${COPY_MB} MB guest-file-write, 1 MiB chunks`, s.bareTo);
line(`mvmctl dev cp ${COPY_MB} MB to the guest (checked)`, s.cpTo);
line(`bare QGA: ${COPY_MB} MB guest-file-read, 1 MiB chunks`, s.bareFrom);
line(`mvmctl dev cp ${COPY_MB} MB from the guest (checked)`, s.cpFrom);
const mbps = (xs: number[]) => (COPY_MB / median(xs)).toFixed(1);
console.log(
  `dev exec -- true / bare QGA round trip: ${(median(s.devTrue) / median(s.bareTrue)).toFixed(2)}x (+${(median(s.devTrue) - median(s.bareTrue)).toFixed(3)} s: mvmctl's start, the output directory, cleanup)`,
);
console.log(
  `dev cp to the guest: ${mbps(s.cpTo)} MB/s vs ${mbps(s.bareTo)} MB/s by hand (${(median(s.cpTo) / median(s.bareTo)).toFixed(2)}x the time)`,
);
console.log(
  `dev cp from the guest: ${mbps(s.cpFrom)} MB/s vs ${mbps(s.bareFrom)} MB/s by hand (${(median(s.cpFrom) / median(s.bareFrom)).toFixed(2)}x the time)`,
);
rmSync(root, { recursive: true, force: true });
