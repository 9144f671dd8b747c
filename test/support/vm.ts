// The test guest (scripts/build-test-image.sh) and a bare QEMU around it, for tests that boot a
// real Linux guest: the console on a unix socket (with a log file), QMP on another, user-mode
// networking with port forwards. Software emulation (TCG) only: /dev/kvm on these hosts cannot run
// a stock kernel (see VM-FACTS.md), and a test must not depend on the host's KVM.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { HOST_ARCH, importArgs, testHost, VERSION, type TestHost } from './host.js';
import { TestPki } from './pki.js';
import { writeReleaseSet } from './release.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const BUILD_SCRIPT = join(REPO, 'scripts', 'build-test-image.sh');
export const DEBIAN_BUILD_SCRIPT = join(REPO, 'scripts', 'build-debian-image.sh');
export const READY_LINE = 'mvm-dev: ready';
export const GUEST_PAGE_TEXT = 'mvm test guest';
/** The kernel command line of upstream mvm's dev image, which the test rootfs's /init follows. */
export const BASE_APPEND = ['console=hvc0', 'root=/dev/vda', 'rw', 'init=/init'];

export interface TestImage {
  dir: string;
  vmlinux: string;
  initrd: string;
  rootfs: string;
  /** The build script's report (paths, sizes, SHA-256). */
  report: string;
}

const built = new Map<string, TestImage>();

/** Builds the busybox test image once per process (the script itself caches across runs). */
export function buildTestImage(): TestImage {
  return buildImage(BUILD_SCRIPT, 'MVM_TEST_IMAGE_DIR', 'test-image', 600_000);
}

/**
 * Builds the stock Debian 12 image (debootstrap, systemd, Debian's initramfs-tools initrd,
 * qemu-guest-agent) once per process; the first build on a machine takes minutes.
 */
export function buildDebianImage(): TestImage {
  return buildImage(DEBIAN_BUILD_SCRIPT, 'MVM_DEBIAN_IMAGE_DIR', 'debian-image', 1_800_000);
}

function buildImage(script: string, dirVar: string, name: string, timeout: number): TestImage {
  const cached = built.get(script);
  if (cached) return cached;
  const dir = process.env[dirVar] ?? join(REPO, '.vm-cache', name);
  const r = spawnSync('bash', [script], {
    encoding: 'utf8',
    env: { ...process.env, [dirVar]: dir },
    timeout,
  });
  if (r.status !== 0) {
    throw new Error(`${script} failed (${r.status ?? r.signal}):\n${r.stdout}\n${r.stderr}`);
  }
  const image: TestImage = {
    dir,
    vmlinux: join(dir, 'vmlinux'),
    initrd: join(dir, 'initrd'),
    rootfs: join(dir, 'rootfs.ext4'),
    report: r.stdout,
  };
  built.set(script, image);
  return image;
}

/**
 * A test host under `root` with the real test guest installed: signed by
 * `pki` (a fresh test PKI by default) as a release set with its initrd, and imported. `root` must
 * be short: the VM's sockets live under it (unix socket paths are limited).
 */
export async function hostWithTestGuest(
  root: string,
  image: TestImage = buildTestImage(),
  pki?: TestPki,
): Promise<{
  host: TestHost;
  pki: TestPki;
  trustedRoot: string;
  vmDir: string;
}> {
  pki ??= await TestPki.create();
  const trustedRoot = pki.writeTrustedRoot(root);
  const set = await writeReleaseSet(pki, join(root, 'set'), {
    version: VERSION,
    arch: HOST_ARCH,
    kernel: readFileSync(image.vmlinux),
    rootfs: readFileSync(image.rootfs),
    initrd: readFileSync(image.initrd),
  });
  const host = testHost(join(root, 'h'), trustedRoot);
  const imported = await host.run([...importArgs(set), '--initrd', set.initrd!]);
  if (imported.code !== 0) {
    throw new Error(`importing the test guest exited ${imported.code}: ${imported.stderr}`);
  }
  return { host, pki, trustedRoot, vmDir: join(root, 'h', 'data', 'vms', 'dev') };
}

/**
 * A `state.json` as `dev up` writes it, in the VM state directory `vmDir`,
 * naming process `pid` with `startTime` (field 22 of /proc/PID/stat): for
 * tests of what status, up and down do with a state that is not this VM's.
 */
export function writeVmState(vmDir: string, pid: number, startTime: string): void {
  mkdirSync(vmDir, { recursive: true, mode: 0o700 });
  const zero = '0'.repeat(64);
  writeFileSync(
    join(vmDir, 'state.json'),
    JSON.stringify({
      schema: 1,
      pid,
      pidStartTime: startTime,
      version: VERSION,
      accel: 'tcg',
      cpus: 1,
      memoryMiB: 256,
      cmdline: 'console=hvc0 root=/dev/vda rw init=/init',
      ports: [],
      digests: { kernel: zero, rootfs: zero },
      manifestSha256: zero,
      atRest: 'ok',
      paths: {
        consoleSocket: join(vmDir, 'console.sock'),
        consoleLog: join(vmDir, 'console.log'),
        qmpSocket: join(vmDir, 'qmp.sock'),
        pidFile: join(vmDir, 'qemu.pid'),
        overlay: join(vmDir, 'overlay.qcow2'),
      },
      startedAt: new Date().toISOString(),
      readyLine: READY_LINE,
    }),
    { mode: 0o600 },
  );
}

/** `tsc_early_khz`: without it, about one boot in three hangs in timer calibration under TCG. */
export function hostTscKhz(): number | undefined {
  const m = /^cpu MHz\s*:\s*([\d.]+)/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
  return m ? Math.round(Number(m[1]) * 1000) : undefined;
}

/** A TCP port free on 127.0.0.1 right now. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

export interface QemuOptions {
  image: TestImage;
  /** Holds the console socket and log and the QMP socket; must be short (unix socket paths). */
  stateDir: string;
  /** Forward 127.0.0.1:hostPort to the guest's port 80. */
  hostPort?: number;
  /** Extra kernel arguments (e.g. `mvm.noready`). */
  append?: string[];
  memoryMb?: number;
}

export function consoleSocket(stateDir: string): string {
  return join(stateDir, 'console.sock');
}
export function consoleLog(stateDir: string): string {
  return join(stateDir, 'console.log');
}
export function qmpSocket(stateDir: string): string {
  return join(stateDir, 'qmp.sock');
}

/**
 * The bare QEMU invocation that VM-FACTS.md established: microvm booting the PVH vmlinux with the
 * initrd, virtio-blk on the rootfs with `snapshot=on` (writes go to a throwaway overlay, the cached
 * rootfs is never written), hvc0 console on a unix socket plus a log, QMP, user networking.
 */
export function qemuArgs(o: QemuOptions): string[] {
  const khz = hostTscKhz();
  const append = [
    ...BASE_APPEND,
    'cryptomgr.notests',
    'reboot=t',
    'panic=-1',
    ...(khz ? [`tsc_early_khz=${khz}`] : []),
    'quiet',
    ...(o.append ?? []),
  ];
  const forward = o.hostPort ? `,hostfwd=tcp:127.0.0.1:${o.hostPort}-:80` : '';
  return [
    ...['-M', 'microvm', '-accel', 'tcg', '-m', String(o.memoryMb ?? 256), '-smp', '1'],
    ...['-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot'],
    ...['-kernel', o.image.vmlinux, '-initrd', o.image.initrd, '-append', append.join(' ')],
    ...['-drive', `id=root,file=${o.image.rootfs},format=raw,if=none,snapshot=on`],
    ...['-device', 'virtio-blk-device,drive=root'],
    '-chardev',
    `socket,id=con,path=${consoleSocket(o.stateDir)},server=on,wait=off,logfile=${consoleLog(o.stateDir)}`,
    ...['-device', 'virtio-serial-device', '-device', 'virtconsole,chardev=con'],
    ...['-netdev', `user,id=net${forward}`, '-device', 'virtio-net-device,netdev=net'],
    ...['-qmp', `unix:${qmpSocket(o.stateDir)},server=on,wait=off`],
  ];
}

export interface QemuExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Pids of live processes whose command line mentions `needle` (e.g. a VM's state directory). */
export function processesMentioning(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (/^\d+ \(.*\) Z /s.test(stat)) continue; // a zombie runs nothing
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(needle)) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/**
 * The processes of a running dev VM under `dir`: QEMU (and virtiofsd) apart
 * from the keeper of its console log, so a test can say there is exactly one
 * of each.
 */
export function vmProcessesMentioning(dir: string): { others: number[]; keepers: number[] } {
  const keepers: number[] = [];
  const others: number[] = [];
  for (const pid of processesMentioning(dir)) {
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    (cmdline.split('\0').includes('__console-log-keeper') ? keepers : others).push(pid);
  }
  return { others, keepers };
}

/** One QEMU child running the test guest, with its console and QMP. */
export class QemuGuest {
  private output = '';
  private readonly waiters = new Set<() => void>();
  private exitInfo: QemuExit | undefined;
  private stderr = '';
  readonly exited: Promise<QemuExit>;

  private constructor(
    readonly options: QemuOptions,
    readonly child: ChildProcess,
    private readonly consoleConn: Socket,
  ) {
    this.exited = new Promise((resolve) => {
      const done = (code: number | null, signal: NodeJS.Signals | null) => {
        this.exitInfo = { code, signal };
        for (const wake of this.waiters) wake();
        resolve(this.exitInfo);
      };
      if (child.exitCode !== null || child.signalCode !== null)
        done(child.exitCode, child.signalCode);
      else child.once('exit', done);
    });
    consoleConn.setEncoding('utf8');
    consoleConn.on('data', (chunk: string) => {
      this.output += chunk;
      for (const wake of this.waiters) wake();
    });
  }

  static async launch(options: QemuOptions): Promise<QemuGuest> {
    const child = spawn('qemu-system-x86_64', qemuArgs(options), {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.stdout!.resume();
    let exited = false;
    child.once('exit', () => (exited = true));
    // The console socket exists once QEMU has set up its chardevs, before the guest starts.
    const path = consoleSocket(options.stateDir);
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (exited || child.exitCode !== null) {
        throw new Error(`QEMU exited before its console socket appeared:\n${stderr}`);
      }
      if (existsSync(path)) {
        try {
          const conn = await connectUnix(path);
          const guest = new QemuGuest(options, child, conn);
          child.stderr!.on('data', (c: string) => (guest.stderr += c));
          guest.stderr = stderr;
          return guest;
        } catch {
          // not listening yet
        }
      }
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`QEMU's console socket ${path} did not appear in 30 s:\n${stderr}`);
      }
      await sleep(20);
    }
  }

  /** Everything the console printed since this client connected. */
  get console(): string {
    return this.output;
  }

  get qemuStderr(): string {
    return this.stderr;
  }

  /** Resolves with the console text once `pattern` appears in it; rejects on timeout or exit. */
  async waitForConsole(pattern: string | RegExp, timeoutMs: number, from = 0): Promise<string> {
    const seen = () =>
      typeof pattern === 'string'
        ? this.output.indexOf(pattern, from) >= 0
        : pattern.test(this.output.slice(from));
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined = undefined;
      const check = () => {
        if (seen()) {
          finish();
          resolve(this.output);
        } else if (this.exitInfo) {
          finish();
          reject(
            new Error(`QEMU exited ${JSON.stringify(this.exitInfo)} ${this.describe(pattern)}`),
          );
        }
      };
      const finish = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      timer = setTimeout(() => {
        finish();
        reject(new Error(`no ${this.describe(pattern)} within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  private describe(pattern: string | RegExp): string {
    const tail = this.output.split('\n').slice(-15).join('\n');
    return `${String(pattern)} on the console; last console lines:\n${tail}\nQEMU stderr:\n${this.stderr}`;
  }

  /** Types a line on the console (the guest's shell reads it). */
  type(line: string): void {
    this.consoleConn.write(`${line}\n`);
  }

  /** Runs one QMP command on a fresh QMP connection and returns its `return` value. */
  async qmp(execute: string): Promise<unknown> {
    const conn = await connectUnix(qmpSocket(this.options.stateDir));
    try {
      const lines = lineReader(conn);
      await lines.next(); // greeting
      conn.write(JSON.stringify({ execute: 'qmp_capabilities' }) + '\n');
      await qmpReply(lines);
      conn.write(JSON.stringify({ execute }) + '\n');
      return await qmpReply(lines);
    } finally {
      conn.destroy();
    }
  }

  /** Last resort for a test's cleanup: QEMU is gone when this returns. */
  async kill(): Promise<void> {
    this.consoleConn.destroy();
    if (!this.exitInfo) this.child.kill('SIGKILL');
    await this.exited;
  }
}

function connectUnix(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const conn = createConnection(path);
    conn.once('connect', () => {
      conn.off('error', reject);
      resolve(conn);
    });
    conn.once('error', reject);
  });
}

interface LineReader {
  next(): Promise<string>;
}

function lineReader(conn: Socket): LineReader {
  let buffer = '';
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  conn.setEncoding('utf8');
  conn.on('data', (c: string) => {
    buffer += c;
    wake?.();
  });
  conn.on('close', () => {
    failure = new Error('QMP connection closed');
    wake?.();
  });
  conn.on('error', (e) => {
    failure = e;
    wake?.();
  });
  return {
    async next() {
      for (;;) {
        const nl = buffer.indexOf('\n');
        if (nl >= 0) {
          const line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + 1);
          return line;
        }
        if (failure) throw failure;
        await new Promise<void>((resolve) => (wake = resolve));
      }
    },
  };
}

async function qmpReply(lines: LineReader): Promise<unknown> {
  for (;;) {
    const message = JSON.parse(await lines.next()) as {
      return?: unknown;
      error?: { desc?: string };
    };
    if ('error' in message) throw new Error(`QMP error: ${message.error?.desc}`);
    if ('return' in message) return message.return;
    // an event: skip
  }
}
