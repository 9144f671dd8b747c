/**
 * Dev VM benchmark. In the same run, for each boot (a guest with a console),
 * BENCH_VM_REPS rounds (default 5; the Debian guest BENCH_VM_DEBIAN_REPS,
 * default 3, for it boots for half a minute under emulation) after one
 * warm-up round, the order rotated each round:
 *
 * - bare QEMU: the very argv `mvmctl dev up` ran (read from the running VM's
 *   /proc/PID/cmdline in the warm-up: same machine, accel tcg, vCPUs, memory,
 *   kernel command line, console, qcow2 overlay backed by the installed rootfs,
 *   agent, QMP, user networking, -daemonize, -runas), with the descriptors dev
 *   up passes (/proc/self/fd/N) replaced by the installed files' paths and its
 *   console log, pointed at a state directory of its own. It is timed from
 *   launch to what that boot's dev up waits for: the ready line in its console
 *   log (the busybox guest, --ready-line), or its guest agent answering a
 *   guest-sync on the agent socket (the Debian guest, default readiness). Then
 *   it is shut down as dev down does it: system_powerdown over QMP, or
 *   guest-shutdown through the agent; that time is printed beside dev down's.
 * - `mvmctl dev up --accel tcg ...`, process start to exit 0 (ready), with
 *   its stages from `dev status --json` (QEMU started, kernel output, ready;
 *   the time before QEMU started is the rest: node's start, verification,
 *   the rootfs's re-hash), and `mvmctl dev down`, process start to exit 0.
 * - the at-rest re-hash: `preflightDevImage` (in this process) on an installed
 *   image whose rootfs is 256 MB (it need not boot), beside `openssl dgst
 *   -sha256` over the same installed files (process spawn included).
 *
 * The boots:
 * - busybox ttyS0 / hvc0: the fast test guest (our initrd and init), on the
 *   serial port (the default) and on the virtio console;
 * - debian ttyS0 / hvc0: the stock Debian 12 image (Debian's kernel,
 *   initramfs-tools initrd, systemd, qemu-guest-agent), with dev up's default
 *   readiness. Skipped, and said so, when it cannot be built on this machine.
 * What the serial console costs is the ttyS0 boot beside the hvc0 one.
 *
 * Every VM keeps its overlay between boots (dev up without --fresh does), so
 * every measured boot starts from a disk that was cleanly shut down.
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
import { configFrom, type Config } from '../src/config.js';
import { preflightDevImage } from '../src/vm/preflight.js';
import { IMAGE_FDS, CONSOLE_LOG_FD } from '../src/vm/qemu-args.js';
import { qmpExecute } from '../src/vm/qmp.js';
import { probeProcess } from '../src/vm/state.js';
import { loadTrustedRoot } from '../src/trust/trusted-root.js';
import { CLI } from '../test/support/cli.js';
import { HOST_ARCH, testHost, VERSION, type TestHost } from '../test/support/host.js';
import { writeReleaseSet } from '../test/support/release.js';
import type { TestPki } from '../test/support/pki.js';
import {
  buildDebianImage,
  buildTestImage,
  hostWithTestGuest,
  processesMentioning,
  READY_LINE,
  type TestImage,
} from '../test/support/vm.js';
import { bigFile } from './files.js';
import { median } from './measure.js';
import { BareQga } from './qga.js';

const REPS = Number(process.env['BENCH_VM_REPS'] ?? 5);
const DEBIAN_REPS = Number(process.env['BENCH_VM_DEBIAN_REPS'] ?? 3);
const RATIO_TARGET = 1.15;
const DOWN_TARGET_S = 1;
const HASH_MB = 256;
const MB = 1024 * 1024;
/** Bounds on waiting, not measurements: a TCG boot takes seconds to half a minute here. */
const BOOT_BOUND_MS = 300_000;
const POLL_MS = 5;
const STAGES = ['kernel booted', 'ready'] as const;

const now = (): bigint => process.hrtime.bigint();
const secondsSince = (t0: bigint): number => Number(now() - t0) / 1e9;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// Short: the VMs' unix sockets live under it (107 bytes at most).
const root = mkdtempSync(join(process.env['BENCH_DIR'] ?? tmpdir(), 'mvm-bv-'));
/** Every bare QEMU running now, by state directory: stopped by cleanup whatever happens. */
const bareRunning = new Map<string, number>();

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

// --- the guests: each imported on a host of its own -------------------------------------------

interface Guest {
  readonly name: string;
  readonly host: TestHost;
  readonly vmDir: string;
  readonly installed: string;
  /** dev up's readiness flags for it: a ready line (busybox) or the default (Debian). */
  readonly readyArgs: string[];
  readonly readyBy: 'line' | 'agent';
  readonly reps: number;
  readonly config: Config;
}

/** The first guest's test PKI signs the others' sets and the 256 MB one. */
let pki: TestPki | undefined;
async function guestHost(
  name: string,
  image: TestImage,
  g: Omit<Guest, 'name' | 'host' | 'vmDir' | 'installed' | 'config'>,
): Promise<Guest> {
  const dir = join(root, name.slice(0, 3));
  mkdirSync(dir);
  const made = await hostWithTestGuest(dir, image, pki);
  pki ??= made.pki;
  rmSync(join(dir, 'set'), { recursive: true, force: true });
  return {
    name,
    host: made.host,
    vmDir: made.vmDir,
    installed: join(made.host.prebuilt, `v${VERSION}`),
    config: configFrom(made.host.env, homedir()),
    ...g,
  };
}

const busybox = await guestHost('busybox', buildTestImage(), {
  readyArgs: ['--ready-line', READY_LINE],
  readyBy: 'line',
  reps: REPS,
});
let debianSkipped: string | undefined;
let debian: Guest | undefined;
try {
  debian = await guestHost('debian', buildDebianImage(), {
    readyArgs: [],
    readyBy: 'agent',
    reps: Math.min(DEBIAN_REPS, REPS),
  });
} catch (e) {
  debianSkipped = (e as Error).message.split('\n')[0];
}
const guests = [busybox, ...(debian ? [debian] : [])];

// --- the 256 MB image for the at-rest re-hash (installed, never booted) ----------------------------

const hashHost = testHost(join(root, 'x'), pki!.writeTrustedRoot(root));
{
  const dir = join(root, 'set256');
  mkdirSync(dir);
  const kernel = join(dir, `dev-vmlinux-${HOST_ARCH}`);
  const rootfs = join(dir, `dev-rootfs-${HOST_ARCH}.ext4`);
  writeFileSync(kernel, readFileSync(buildTestImage().vmlinux).subarray(0, 4096));
  bigFile(rootfs, HASH_MB);
  const digest = (p: string) =>
    execFileSync('openssl', ['dgst', '-sha256', '-r', p]).toString().split(' ')[0]!;
  const set = await writeReleaseSet(pki!, dir, {
    version: VERSION,
    arch: HOST_ARCH,
    artifactsInPlace: { kernelSha256: digest(kernel), rootfsSha256: digest(rootfs) },
  });
  const imported = await hashHost.importSet(set);
  if (imported.code !== 0) throw new Error(`import exited ${imported.code}: ${imported.stderr}`);
  rmSync(dir, { recursive: true, force: true });
}
const hashConfig = configFrom(hashHost.env, homedir());
const installed256 = join(hashHost.prebuilt, `v${VERSION}`);
const hashFiles = [join(installed256, 'vmlinux'), join(installed256, 'rootfs.ext4')];

// --- one boot: a guest on a console, dev up beside bare QEMU --------------------------------------

interface Samples {
  bare: number[];
  up: number[];
  down: number[];
  bareDown: number[];
  /** dev up's process time before QEMU started (node, verification, re-hash, spawn). */
  beforeQemu: number[];
  /** Its parts: `mvmctl --version` (node, the bundle), and verification + re-hash in process. */
  cliStart: number[];
  verify: number[];
  stages: Record<(typeof STAGES)[number], number[]>;
}

const noSamples = (): Samples => ({
  bare: [],
  up: [],
  down: [],
  bareDown: [],
  beforeQemu: [],
  cliStart: [],
  verify: [],
  stages: { 'kernel booted': [], ready: [] },
});

class Boot {
  readonly name: string;
  s: Samples = noSamples();
  /** Set when dev up could not boot it: dev up's error, shown instead of samples. */
  failed: string | undefined;
  private readonly bareDir: string;
  private bareArgv: string[] = [];

  constructor(
    readonly guest: Guest,
    readonly console: 'ttyS0' | 'hvc0',
  ) {
    this.name = `${guest.name} ${console}`;
    this.bareDir = join(root, `b-${guest.name.slice(0, 3)}-${console}`);
    mkdirSync(this.bareDir, { mode: 0o700 });
  }

  private get upArgs(): string[] {
    return [
      'up',
      '--accel',
      'tcg',
      '--console',
      this.console,
      ...this.guest.readyArgs,
      '--timeout',
      '290',
    ];
  }
  private dev(args: string[]) {
    return mustRun(process.execPath, [CLI, 'dev', ...args], this.guest.host.env);
  }

  /** dev up's QEMU argv, as the kernel holds it (read while it runs), made runnable by hand. */
  async prepare(): Promise<void> {
    await this.dev(this.upArgs);
    const vmDir = this.guest.vmDir;
    const pid = Number(readFileSync(join(vmDir, 'qemu.pid'), 'utf8').trim());
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, -1);
    await this.dev(['down']);
    const fd = (n: number) => `/proc/self/fd/${n}`;
    const paths: [string, string][] = [
      [fd(IMAGE_FDS.kernel), join(this.guest.installed, 'vmlinux')],
      [fd(IMAGE_FDS.rootfs), join(this.guest.installed, 'rootfs.ext4')],
      [fd(IMAGE_FDS.initrd), join(this.guest.installed, 'initrd')],
      [fd(CONSOLE_LOG_FD), join(this.bareDir, 'console.log')],
      [`${vmDir}/`, `${this.bareDir}/`],
    ];
    this.bareArgv = argv.map((a) => paths.reduce((x, [from, to]) => x.replaceAll(from, to), a));
    if (this.bareArgv.some((a) => a.includes(vmDir) || a.includes('/proc/self/fd/')))
      throw new Error(`the argv still names the dev VM: ${this.bareArgv.join(' ')}`);
    execFileSync('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-F',
      'raw',
      '-b',
      join(this.guest.installed, 'rootfs.ext4'),
      join(this.bareDir, 'overlay.qcow2'),
    ]);
  }

  get argvShown(): string {
    return this.bareArgv.join(' ');
  }

  async devUpDown(): Promise<void> {
    const up = await this.dev(this.upArgs);
    if (!/The dev VM is ready/.test(up.stdout))
      throw new Error(`dev up did not boot:\n${up.stdout}`);
    const status = JSON.parse((await this.dev(['status', '--json'])).stdout) as {
      ready_by?: string;
      stages_ms?: Record<string, number>;
    };
    if (status.ready_by !== this.guest.readyBy)
      throw new Error(`${this.name}: ready by ${status.ready_by}, expected ${this.guest.readyBy}`);
    const stages = status.stages_ms ?? {};
    for (const st of STAGES) this.s.stages[st].push((stages[st] ?? NaN) / 1000);
    this.s.beforeQemu.push(up.seconds - (stages.ready ?? NaN) / 1000);
    const down = await this.dev(['down']);
    this.s.up.push(up.seconds);
    this.s.down.push(down.seconds);
    // The parts of the time before QEMU, each on its own, with the VM down.
    this.s.cliStart.push((await mustRun(process.execPath, [CLI, '--version'])).seconds);
    this.s.verify.push(await preflightSeconds(this.guest.config));
  }

  async bareBoot(): Promise<void> {
    const dir = this.bareDir;
    const log = join(dir, 'console.log');
    for (const f of ['qemu.pid', 'console.sock', 'qmp.sock', 'agent.sock'])
      rmSync(join(dir, f), { force: true });
    // As dev up does before each boot: the log starts empty, private.
    closeSync(openSync(log, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600));
    const t0 = now();
    const child = spawn(this.bareArgv[0]!, this.bareArgv.slice(1), {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
    if (code !== 0) throw new Error(`bare QEMU (${this.name}) exited ${code}: ${stderr}`);
    const pid = Number(readFileSync(join(dir, 'qemu.pid'), 'utf8').trim());
    bareRunning.set(dir, pid);
    const started = await probeProcess(pid);
    if (started.state !== 'alive') throw new Error('bare QEMU exited right after it started');
    const alive = async () => (await probeProcess(pid)).state === 'alive';
    if (this.guest.readyBy === 'agent') {
      await BareQga.waitAnswering(join(dir, 'agent.sock'), {
        everyMs: 200,
        boundMs: BOOT_BOUND_MS,
        alive,
      });
    } else {
      const deadline = Date.now() + BOOT_BOUND_MS;
      while (!readFileSync(log, 'utf8').includes(READY_LINE)) {
        if (!(await alive())) throw new Error('bare QEMU exited early');
        if (Date.now() > deadline) throw new Error(`bare boot: no ready line in ${log}`);
        await sleep(POLL_MS);
      }
    }
    this.s.bare.push(secondsSince(t0));
    const t1 = now();
    // Held open until QEMU is gone: destroying the socket at once would drop the unsent request.
    let q: BareQga | undefined;
    if (this.guest.readyBy === 'agent') {
      q = await BareQga.open(join(dir, 'agent.sock'));
      q.send('guest-shutdown', { mode: 'powerdown' });
    } else {
      await qmpExecute(join(dir, 'qmp.sock'), 'system_powerdown');
    }
    await waitGone(pid, started.startTime, 60_000);
    q?.close();
    bareRunning.delete(dir);
    this.s.bareDown.push(secondsSince(t1));
  }

  async cleanup(): Promise<void> {
    await run(process.execPath, [CLI, 'dev', 'down', '--timeout', '5'], this.guest.host.env);
    const pid = bareRunning.get(this.bareDir);
    if (pid === undefined) return;
    const p = await probeProcess(pid);
    if (p.state === 'alive') {
      await qmpExecute(join(this.bareDir, 'qmp.sock'), 'quit').catch(() => undefined);
      await waitGone(pid, p.startTime, 5_000);
    }
  }
}

/** dev up's verification of an installed image (receipt, signature, recalls, re-hash), in process. */
async function preflightSeconds(config: Config): Promise<number> {
  const t0 = now();
  const image = await preflightDevImage({
    config,
    trustedRoot: await loadTrustedRoot(config.trustedRootPath),
    now: () => new Date(),
    warn: () => undefined,
    version: VERSION,
  });
  const seconds = secondsSince(t0);
  // The hashed descriptors dev up would hand to QEMU: closed here, after the clock stopped.
  await image.opened.close();
  return seconds;
}
const preflight256 = () => preflightSeconds(hashConfig);

const openssl256 = async (): Promise<number> =>
  (await mustRun('openssl', ['dgst', '-sha256', ...hashFiles])).seconds;

// --- the run ------------------------------------------------------------------------------------

const boots = guests.flatMap((g) => [new Boot(g, 'ttyS0'), new Boot(g, 'hvc0')]);
const booting = () => boots.filter((b) => b.failed === undefined);
const cleanup = () => Promise.all(boots.map((b) => b.cleanup()));
for (const signal of ['SIGINT', 'SIGTERM'] as const)
  process.once(signal, () => {
    void cleanup().finally(() => process.exit(130));
  });

const hash = { preflight: [] as number[], openssl: [] as number[] };
try {
  console.log(
    `Dev VM benchmark: node ${process.version}, ${process.platform}/${process.arch}, ${REPS} rounds (Debian ${debian?.reps ?? 0}) after a warm-up, order rotated, work dir ${root}`,
  );
  if (debianSkipped)
    console.log(`Debian guest SKIPPED: it could not be built here: ${debianSkipped}`);
  for (const b of boots) {
    try {
      await b.prepare();
      console.log(`QEMU argv (${b.name}, dev up's, files for descriptors): ${b.argvShown}`);
    } catch (e) {
      // A boot that does not come up is reported with dev up's own words, not measured.
      b.failed = /^Error: .*$/m.exec((e as Error).message)?.[0] ?? (e as Error).message;
      const cause = /^ {2}cause: (.*)$/m.exec((e as Error).message)?.[1];
      if (cause) b.failed += `: ${cause}`;
      await b.cleanup();
    }
  }
  const runs: [Guest | undefined, () => Promise<void>][] = [
    ...booting().flatMap((b): [Guest, () => Promise<void>][] => [
      [b.guest, () => b.bareBoot()],
      [b.guest, () => b.devUpDown()],
    ]),
    [undefined, async () => void hash.preflight.push(await preflight256())],
    [undefined, async () => void hash.openssl.push(await openssl256())],
  ];
  // Warm-up: page cache, every overlay created and cleanly shut down once.
  for (const [, fn] of runs) await fn();
  // Every series starts over after it: none can be forgotten and keep a warm-up sample.
  for (const b of boots) b.s = noSamples();
  hash.preflight.length = hash.openssl.length = 0;
  for (let i = 0; i < REPS; i++)
    for (let k = 0; k < runs.length; k++) {
      const [guest, fn] = runs[(i + k) % runs.length]!;
      if (guest === undefined || i < guest.reps) await fn();
    }
} finally {
  await cleanup();
}

const fmt = (xs: number[]) => xs.map((x) => x.toFixed(3)).join(' ');
const line = (name: string, xs: number[]) =>
  console.log(`  ${name.padEnd(50)} median ${median(xs).toFixed(3)} s   samples [${fmt(xs)}]`);
const signed = (x: number) => `${x >= 0 ? '+' : ''}${x.toFixed(3)}`;
for (const b of boots) {
  if (b.failed !== undefined) {
    console.log(`${b.name}: does not boot, not measured. dev up: ${b.failed}`);
    continue;
  }
  const what = b.guest.readyBy === 'agent' ? 'its guest agent answering' : 'the ready line';
  console.log(`${b.name} (ready on ${what}):`);
  line('bare QEMU launch -> ready', b.s.bare);
  line('mvmctl dev up (start -> exit 0, ready)', b.s.up);
  line('  of which before QEMU started', b.s.beforeQemu);
  line('    mvmctl --version (node start, the bundle loaded)', b.s.cliStart);
  line('    verification + at-rest re-hash (in process)', b.s.verify);
  console.log(
    `      the rest (QEMU's own start, console log keeper, state): ${(median(b.s.beforeQemu) - median(b.s.cliStart) - median(b.s.verify)).toFixed(3)} s of medians`,
  );
  line('  stage "kernel booted" (QEMU started -> console)', b.s.stages['kernel booted']);
  line('  stage "ready" (QEMU started -> ready)', b.s.stages.ready);
  line('mvmctl dev down (start -> exit 0)', b.s.down);
  line(
    b.guest.readyBy === 'agent'
      ? 'bare guest-shutdown -> process gone'
      : 'bare system_powerdown -> process gone',
    b.s.bareDown,
  );
  const ratios = b.s.up.map((u, i) => u / b.s.bare[i]!);
  const ratio = median(b.s.up) / median(b.s.bare);
  console.log(
    `  dev up / bare boot: ${ratio.toFixed(2)}x of medians (${signed(median(b.s.up) - median(b.s.bare))} s), median of per-round ratios ${median(ratios).toFixed(2)}x, per-round [${ratios.map((r) => r.toFixed(2)).join(' ')}] (target <= ${RATIO_TARGET}x: ${ratio <= RATIO_TARGET ? 'met' : 'MISSED'})`,
  );
  console.log(
    `  dev down: ${median(b.s.down).toFixed(3)} s median (target about ${DOWN_TARGET_S} s); bare ${median(b.s.bareDown).toFixed(3)} s`,
  );
}
for (const g of guests) {
  const [serial, virtio] = boots.filter((b) => b.guest === g);
  if (serial!.failed !== undefined || virtio!.failed !== undefined) {
    console.log(
      `${g.name}: the serial console (ttyS0) vs the virtio console (hvc0): no comparison, only ${serial!.failed === undefined ? 'ttyS0' : virtio!.failed === undefined ? 'hvc0' : 'neither'} boots`,
    );
    continue;
  }
  const d = median(serial!.s.bare) - median(virtio!.s.bare);
  const u = median(serial!.s.up) - median(virtio!.s.up);
  console.log(
    `${g.name}: the serial console (ttyS0) vs the virtio console (hvc0): bare boot ${signed(d)} s (${(median(serial!.s.bare) / median(virtio!.s.bare)).toFixed(2)}x), dev up ${signed(u)} s`,
  );
}
console.log(
  `at-rest re-hash of ${HASH_MB} MB: ${median(hash.preflight).toFixed(3)} s, ${(median(hash.preflight) / median(hash.openssl)).toFixed(2)}x openssl dgst (${median(hash.openssl).toFixed(3)} s)`,
);
const left = processesMentioning(root);
console.log(
  left.length === 0 ? 'no QEMU left running' : `STILL RUNNING under ${root}: ${left.join(' ')}`,
);
rmSync(root, { recursive: true, force: true });
