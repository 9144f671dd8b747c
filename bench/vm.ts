/**
 * Dev VM benchmark (issue 9). In the same run, BENCH_VM_REPS rounds (default
 * 5) after one warm-up round, the order rotated each round:
 *
 * - bare QEMU: the very argv `mvmctl dev up` ran (read from the running VM's
 *   /proc/PID/cmdline in the warm-up: same machine, accel tcg, vCPUs, memory,
 *   kernel command line, qcow2 overlay backed by the installed rootfs, console
 *   socket + log, QMP, user networking, -daemonize), pointed at a state
 *   directory of its own, timed from launch to the ready line in its console
 *   log; then powered off over QMP (system_powerdown) as dev down does, with
 *   that time printed beside dev down's;
 * - `mvmctl dev up --accel tcg --ready-line 'mvm-dev: ready'`, process start to
 *   exit 0 (ready), and `mvmctl dev down`, process start to exit 0;
 * - the at-rest re-hash: `preflightDevImage` (in this process) on an installed
 *   image whose rootfs is 256 MB (it need not boot), beside `openssl dgst
 *   -sha256` over the same installed files (process spawn included).
 *
 * Both VMs keep their overlay between boots (dev up without --fresh does), so
 * every measured boot starts from a disk that was cleanly powered off.
 * Medians, all samples and ratios are printed; targets beside them, nothing
 * asserted. No QEMU is left running: whatever a failure leaves is stopped.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import {
  closeSync,
  constants,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { configFrom } from '../src/config.js';
import { preflightDevImage } from '../src/vm/preflight.js';
import { qmpExecute } from '../src/vm/qmp.js';
import { probeProcess } from '../src/vm/state.js';
import { loadTrustedRoot } from '../src/trust/trusted-root.js';
import { CLI } from '../test/support/cli.js';
import { HOST_ARCH, testHost, VERSION } from '../test/support/host.js';
import { writeReleaseSet } from '../test/support/release.js';
import {
  buildTestImage,
  hostWithTestGuest,
  processesMentioning,
  READY_LINE,
} from '../test/support/vm.js';
import { bigFile } from './files.js';
import { median } from './measure.js';

const REPS = Number(process.env['BENCH_VM_REPS'] ?? 5);
const RATIO_TARGET = 1.15;
const DOWN_TARGET_S = 1;
const HASH_MB = 256;
const MB = 1024 * 1024;
/** Bounds on waiting, not measurements: a TCG boot takes a few seconds here. */
const BOOT_BOUND_MS = 180_000;
const POLL_MS = 5;

const now = (): bigint => process.hrtime.bigint();
const secondsSince = (t0: bigint): number => Number(now() - t0) / 1e9;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// Short: the VMs' unix sockets live under it (107 bytes at most).
const root = mkdtempSync(join(process.env['BENCH_DIR'] ?? tmpdir(), 'mvm-bv-'));
let barePid: number | undefined;

function run(
  file: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string; seconds: number }> {
  const t0 = now();
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      { env: { ...process.env, ...env }, timeout: BOOT_BOUND_MS, maxBuffer: 16 * MB },
      (err, stdout, stderr) => {
        const seconds = secondsSince(t0);
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr, seconds });
      },
    );
  });
}

async function mustRun(file: string, args: string[], env: Record<string, string> = {}) {
  const r = await run(file, args, env);
  if (r.code !== 0)
    throw new Error(`${file} ${args.join(' ')} exited ${r.code}:\n${r.stdout}\n${r.stderr}`);
  return r;
}

const dev = (args: string[]) => mustRun(process.execPath, [CLI, 'dev', ...args], devHost.env);

/** Waits until `pid` (started at `startTime`) has exited; SIGKILL after `boundMs`. */
async function waitGone(pid: number, startTime: string, boundMs: number): Promise<void> {
  const deadline = Date.now() + boundMs;
  let killed = false;
  for (;;) {
    const p = await probeProcess(pid);
    if (p.state !== 'alive' || p.startTime !== startTime) return;
    if (!killed && Date.now() > deadline) {
      process.kill(pid, 'SIGKILL');
      killed = true;
    }
    await sleep(POLL_MS);
  }
}

// --- the dev VM's host: the real test guest, imported with its initrd ----------------------------

const image = buildTestImage();
const guest = await hostWithTestGuest(root);
const { host: devHost, pki, trustedRoot, vmDir } = guest;
rmSync(join(root, 'set'), { recursive: true, force: true });
const bareDir = join(root, 'bare');
mkdirSync(bareDir, { mode: 0o700 });

// --- the 256 MB image for the at-rest re-hash (installed, never booted) ----------------------------

const hashHost = testHost(join(root, 'x'), trustedRoot);
{
  const dir = join(root, 'set256');
  mkdirSync(dir);
  const kernel = join(dir, `dev-vmlinux-${HOST_ARCH}`);
  const rootfs = join(dir, `dev-rootfs-${HOST_ARCH}.ext4`);
  writeFileSync(kernel, readFileSync(image.vmlinux).subarray(0, 4096));
  bigFile(rootfs, HASH_MB);
  const digest = (p: string) =>
    execFileSync('openssl', ['dgst', '-sha256', '-r', p]).toString().split(' ')[0]!;
  const set = await writeReleaseSet(pki, dir, {
    version: VERSION,
    arch: HOST_ARCH,
    artifactsInPlace: { kernelSha256: digest(kernel), rootfsSha256: digest(rootfs) },
  });
  const imported = await hashHost.importSet(set);
  if (imported.code !== 0) throw new Error(`import exited ${imported.code}: ${imported.stderr}`);
  rmSync(dir, { recursive: true, force: true });
}
const hashConfig = configFrom(hashHost.env, homedir());
const hashTrustedRoot = await loadTrustedRoot(hashConfig.trustedRootPath);
const installed256 = join(hashHost.prebuilt, `v${VERSION}`);
const hashFiles = [join(installed256, 'vmlinux'), join(installed256, 'rootfs.ext4')];

// --- the measured operations --------------------------------------------------------------------

const UP_ARGS = ['up', '--accel', 'tcg', '--ready-line', READY_LINE, '--timeout', '170'];
let bareArgv: string[] = [];

async function devUpDown(): Promise<{ up: number; down: number }> {
  const up = await dev(UP_ARGS);
  if (!/The dev VM is ready/.test(up.stdout)) throw new Error(`dev up did not boot:\n${up.stdout}`);
  const down = await dev(['down']);
  return { up: up.seconds, down: down.seconds };
}

/** The argv of the dev VM's QEMU, as the kernel holds it (read while it runs). */
async function captureArgv(): Promise<string[]> {
  await dev(UP_ARGS);
  const pid = Number(readFileSync(join(vmDir, 'qemu.pid'), 'utf8').trim());
  const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, -1);
  await dev(['down']);
  return argv;
}

async function bareBoot(): Promise<{ boot: number; powerdown: number }> {
  const log = join(bareDir, 'console.log');
  for (const f of ['qemu.pid', 'console.sock', 'qmp.sock'])
    rmSync(join(bareDir, f), { force: true });
  // As dev up does before each boot: the log starts empty, private.
  closeSync(openSync(log, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600));
  const t0 = now();
  const child = spawn(bareArgv[0]!, bareArgv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  if (code !== 0) throw new Error(`bare QEMU exited ${code}: ${stderr}`);
  barePid = Number(readFileSync(join(bareDir, 'qemu.pid'), 'utf8').trim());
  const started = await probeProcess(barePid);
  if (started.state !== 'alive') throw new Error('bare QEMU exited right after it started');
  const deadline = Date.now() + BOOT_BOUND_MS;
  while (!readFileSync(log, 'utf8').includes(READY_LINE)) {
    if ((await probeProcess(barePid)).state !== 'alive') throw new Error('bare QEMU exited early');
    if (Date.now() > deadline) throw new Error(`bare boot: no ready line in ${log}`);
    await sleep(POLL_MS);
  }
  const boot = secondsSince(t0);
  const t1 = now();
  await qmpExecute(join(bareDir, 'qmp.sock'), 'system_powerdown');
  await waitGone(barePid, started.startTime, 30_000);
  barePid = undefined;
  return { boot, powerdown: secondsSince(t1) };
}

async function preflight256(): Promise<number> {
  const t0 = now();
  await preflightDevImage({
    config: hashConfig,
    trustedRoot: hashTrustedRoot,
    now: () => new Date(),
    warn: () => undefined,
    version: VERSION,
  });
  return secondsSince(t0);
}

const openssl256 = async (): Promise<number> =>
  (await mustRun('openssl', ['dgst', '-sha256', ...hashFiles])).seconds;

// --- the run ------------------------------------------------------------------------------------

async function cleanup(): Promise<void> {
  await run(process.execPath, [CLI, 'dev', 'down', '--timeout', '5'], devHost.env);
  if (barePid !== undefined) {
    const p = await probeProcess(barePid);
    if (p.state === 'alive') {
      await qmpExecute(join(bareDir, 'qmp.sock'), 'quit').catch(() => undefined);
      await waitGone(barePid, p.startTime, 5_000);
    }
  }
}
for (const signal of ['SIGINT', 'SIGTERM'] as const)
  process.once(signal, () => {
    void cleanup().finally(() => process.exit(130));
  });

const samples = {
  bare: [] as number[],
  up: [] as number[],
  down: [] as number[],
  barePowerdown: [] as number[],
  preflight: [] as number[],
  openssl: [] as number[],
};
try {
  console.log(
    `Dev VM benchmark: node ${process.version}, ${process.platform}/${process.arch}, ${REPS} rounds after a warm-up, order rotated, work dir ${root}`,
  );
  const argv = await captureArgv();
  // The same command line, on a state directory of its own.
  bareArgv = argv.map((a) => a.replaceAll(`${vmDir}/`, `${bareDir}/`));
  if (bareArgv.some((a) => a.includes(vmDir))) throw new Error('the argv still names the dev VM');
  execFileSync('qemu-img', [
    'create',
    '-q',
    '-f',
    'qcow2',
    '-F',
    'raw',
    '-b',
    join(devHost.prebuilt, `v${VERSION}`, 'rootfs.ext4'),
    join(bareDir, 'overlay.qcow2'),
  ]);
  console.log(`QEMU argv (dev up's, state dir replaced): ${bareArgv.join(' ')}`);

  const runs: [string, () => Promise<void>][] = [
    [
      'bare',
      async () => {
        const r = await bareBoot();
        samples.bare.push(r.boot);
        samples.barePowerdown.push(r.powerdown);
      },
    ],
    [
      'dev',
      async () => {
        const r = await devUpDown();
        samples.up.push(r.up);
        samples.down.push(r.down);
      },
    ],
    ['preflight', async () => void samples.preflight.push(await preflight256())],
    ['openssl', async () => void samples.openssl.push(await openssl256())],
  ];
  // Warm-up: page cache, both overlays created and cleanly powered off once.
  for (const [, fn] of runs) await fn();
  for (const xs of Object.values(samples)) xs.length = 0;
  for (let i = 0; i < REPS; i++)
    for (let k = 0; k < runs.length; k++) await runs[(i + k) % runs.length]![1]();
} finally {
  await cleanup();
}

const fmt = (xs: number[]) => xs.map((x) => x.toFixed(3)).join(' ');
const line = (name: string, xs: number[]) =>
  console.log(`${name.padEnd(48)} median ${median(xs).toFixed(3)} s   samples [${fmt(xs)}]`);
line('bare QEMU launch -> ready line in console.log', samples.bare);
line('mvmctl dev up --accel tcg (start -> exit 0, ready)', samples.up);
line('mvmctl dev down (start -> exit 0)', samples.down);
line('bare QEMU system_powerdown -> process gone', samples.barePowerdown);
line(`preflightDevImage, ${HASH_MB} MB rootfs (in process)`, samples.preflight);
line(`openssl dgst -sha256, same files (process)`, samples.openssl);
const signed = (x: number) => `${x >= 0 ? '+' : ''}${x.toFixed(3)}`;
const ratios = samples.up.map((u, i) => u / samples.bare[i]!);
const ratio = median(samples.up) / median(samples.bare);
console.log(
  `dev up / bare boot: ${ratio.toFixed(2)}x of medians (${signed(median(samples.up) - median(samples.bare))} s), median of per-round ratios ${median(ratios).toFixed(2)}x, per-round [${ratios.map((r) => r.toFixed(2)).join(' ')}] (target <= ${RATIO_TARGET}x: ${ratio <= RATIO_TARGET ? 'met' : 'MISSED'})`,
);
console.log(
  `dev down: ${median(samples.down).toFixed(3)} s median (target about ${DOWN_TARGET_S} s); bare ACPI power-down ${median(samples.barePowerdown).toFixed(3)} s`,
);
console.log(
  `at-rest re-hash of ${HASH_MB} MB: ${median(samples.preflight).toFixed(3)} s, ${(median(samples.preflight) / median(samples.openssl)).toFixed(2)}x openssl dgst (${median(samples.openssl).toFixed(3)} s)`,
);
const left = processesMentioning(root);
console.log(
  left.length === 0 ? 'no QEMU left running' : `STILL RUNNING under ${root}: ${left.join(' ')}`,
);
rmSync(root, { recursive: true, force: true });
