/**
 * The dev VM's state directory (SPEC.md section 8, Lima's shape): one private
 * directory holds everything about the VM — `state.json`, the QEMU pid file,
 * the QMP and console sockets, `console.log` and the copy-on-write overlay —
 * so `status` and `down` are reads of that directory, never guesses.
 *
 * A pid alone names a process only until it exits: the kernel hands the
 * number to the next process. So `state.json` keeps the process start time
 * (field 22 of /proc/PID/stat) beside the pid, and a process is the VM's only
 * when both match. Nothing is ever signalled without that check (upstream's
 * stale-VM cleanup SIGTERMed whatever process had inherited the pid).
 */
import { constants, promises as fs } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Config } from '../config.js';
import {
  stateDirPaths,
  virtiofsdSocket,
  type Accel,
  type ConsoleDevice,
  type NetworkMode,
  type PortForward,
  type VmStatePaths,
} from '../core/vm-spec.js';
import { MvmError } from '../errors.js';
import { replaceFile } from '../io/files.js';

/** `~/.mvm/vms/dev/` (SPEC.md sections 8 and 9). */
export const devVmDir = (c: Config): string => join(c.dataDir, 'vms', 'dev');
export const vmsDir = (c: Config): string => join(c.dataDir, 'vms');

export const STATE_FILE = 'state.json';
export const LOCK_FILE = 'lock';
/** Which rootfs the overlay is backed by: an overlay on another image is replaced. */
export const OVERLAY_INFO_FILE = 'overlay.json';
/** The vhost-user socket of `--share`'s virtiofsd (the name src/core/vm-spec.ts gives it). */
export const VIRTIOFSD_SOCKET = 'virtiofsd.sock';

export interface VmState {
  readonly schema: 1;
  readonly pid: number;
  /** /proc/PID/stat field 22 (clock ticks after boot): with the pid, the process's identity. */
  readonly pidStartTime: string;
  readonly version: string;
  readonly accel: Accel;
  readonly cpus: number;
  readonly memoryMiB: number;
  readonly cmdline: string;
  readonly ports: readonly PortForward[];
  /** Absent in a state written before --network existed: that VM had `user`. */
  readonly network?: NetworkMode;
  readonly digests: {
    readonly kernel: string;
    readonly rootfs: string;
    readonly initrd?: string;
  };
  readonly manifestSha256: string;
  /** Result of the at-rest re-hash run before this boot. */
  readonly atRest: 'ok' | 'skipped';
  readonly paths: {
    readonly consoleSocket: string;
    readonly consoleLog: string;
    readonly qmpSocket: string;
    /** Absent in the state of a VM booted by an mvmctl without the agent channel. */
    readonly agentSocket?: string;
    readonly pidFile: string;
    readonly overlay: string;
  };
  /** `dev up --share`: the directory served by virtiofsd, which is stopped with the VM. */
  readonly share?: {
    readonly transport: 'virtiofs';
    /** As given to --share (absolute). */
    readonly hostPath: string;
    /** What virtiofsd serves (symlinks resolved). */
    readonly realPath: string;
    readonly tag: string;
    readonly socket: string;
    readonly virtiofsd: { readonly pid: number; readonly startTime: string };
  };
  /** The process that bounds console.log (console-keeper.ts); it ends with QEMU, and down waits for it. */
  readonly consoleKeeper?: { readonly pid: number; readonly startTime: string };
  /** Absent in a state written before --console existed: that VM had hvc0. */
  readonly console?: ConsoleDevice;
  readonly startedAt: string;
  /** What dev up waited for (absent in an older state). */
  readonly readiness?: { readonly agent: boolean; readonly lines: readonly string[] };
  /** Set once the VM was ready (absent with --no-wait). */
  readonly readyAt?: string;
  /** What made it ready: the guest agent answered, or a ready line appeared. */
  readonly readyBy?: 'agent' | 'line';
  /** When each stage of the boot completed, in ms after QEMU started. */
  readonly stages?: Readonly<Record<string, number>>;
}

export const statePaths = (c: Config): VmStatePaths => stateDirPaths(devVmDir(c));

/** What /proc says about a pid: gone, a zombie (exited, not yet reaped) or alive with its start time. */
export type ProcessProbe =
  | { readonly state: 'gone' }
  | { readonly state: 'zombie' }
  | { readonly state: 'alive'; readonly startTime: string };

export async function probeProcess(pid: number): Promise<ProcessProbe> {
  let stat: string;
  try {
    stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return { state: 'gone' };
  }
  // The command name (field 2) is in parentheses and may itself hold spaces and parentheses.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (rest[0] === 'Z' || rest[0] === 'X') return { state: 'zombie' };
  const startTime = rest[19];
  if (startTime === undefined || !/^[0-9]+$/.test(startTime)) return { state: 'gone' };
  return { state: 'alive', startTime };
}

/** Whether `pid` is the very process that was recorded (same pid, same start time, not exited). */
export async function isSameProcess(pid: number, startTime: string): Promise<boolean> {
  const p = await probeProcess(pid);
  return p.state === 'alive' && p.startTime === startTime;
}

export type VmLiveness = 'stopped' | 'running' | 'stale';

export interface VmStateRead {
  readonly liveness: VmLiveness;
  readonly state?: VmState;
  /** Why a state directory was judged stale. */
  readonly staleReason?: string;
}

/** Reads state.json and decides whether the VM it describes is still running. */
export async function readVmState(c: Config): Promise<VmStateRead> {
  const path = join(devVmDir(c), STATE_FILE);
  let text: string;
  try {
    const fh = await fs.open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      text = await fh.readFile('utf8');
    } finally {
      await fh.close();
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { liveness: 'stopped' };
    throw new MvmError('store', `Cannot read the dev VM's state ${path}`, {
      cause: (e as Error).message,
      fix: `Check ${path}; it must be a regular file of this user.`,
      underlying: e,
    });
  }
  let state: VmState;
  try {
    state = JSON.parse(text) as VmState;
    if (
      typeof state !== 'object' ||
      state === null ||
      !Number.isSafeInteger(state.pid) ||
      state.pid <= 1 ||
      typeof state.pidStartTime !== 'string'
    )
      throw new Error('no pid and start time');
  } catch (e) {
    // Unreadable state names no process: nothing can be signalled from it, so it is stale.
    return { liveness: 'stale', staleReason: `state.json is unreadable (${(e as Error).message})` };
  }
  const p = await probeProcess(state.pid);
  if (p.state === 'alive' && p.startTime === state.pidStartTime) {
    // Pid and start time say "the process recorded"; the command line says it is this VM's QEMU
    // (started with -pidfile in this state directory), so a state.json naming any other process
    // never gets it signalled.
    const pidFile = statePaths(c).pidFile;
    if (await runsWithPidFile(state.pid, pidFile)) return { liveness: 'running', state };
    return {
      liveness: 'stale',
      state,
      staleReason: `pid ${state.pid} is not this VM's QEMU (its command line does not name ${pidFile})`,
    };
  }
  const staleReason =
    p.state === 'alive'
      ? `pid ${state.pid} now belongs to another process (start time ${p.startTime}, not ${state.pidStartTime})`
      : `QEMU (pid ${state.pid}) is no longer running`;
  return { liveness: 'stale', state, staleReason };
}

/** Whether the process's command line has `-pidfile FILE` (read from /proc; false when unreadable). */
async function runsWithPidFile(pid: number, pidFile: string): Promise<boolean> {
  const argv = await fs
    .readFile(`/proc/${pid}/cmdline`, 'utf8')
    .then((t) => t.split('\0'))
    .catch(() => [] as string[]);
  return argv.some((a, i) => a === '-pidfile' && argv[i + 1] === pidFile);
}

/** Written whole and renamed into place: a reader never sees half a state. */
export async function writeVmState(c: Config, state: VmState): Promise<void> {
  await writePrivateJson(join(devVmDir(c), STATE_FILE), state);
}

export async function writePrivateJson(path: string, value: unknown): Promise<void> {
  try {
    await replaceFile(path, JSON.stringify(value, null, 2) + '\n', { mode: 0o600, sync: false });
  } catch (e) {
    throw new MvmError('store', `Cannot write ${path}`, {
      cause: (e as Error).message,
      underlying: e,
    });
  }
}

/**
 * Removes what a running VM leaves in the state directory (state, pid file,
 * sockets, virtiofsd's included). The overlay stays (guest writes persist) unless `overlay` is set;
 * console.log stays so `dev logs` shows the last boot.
 */
export async function cleanVmState(c: Config, opts: { overlay?: boolean } = {}): Promise<void> {
  const p = statePaths(c);
  const files = [
    join(p.dir, STATE_FILE),
    p.pidFile,
    p.consoleSocket,
    p.qmpSocket,
    p.agentSocket,
    join(p.dir, VIRTIOFSD_SOCKET),
  ];
  if (opts.overlay) files.push(p.overlay, join(p.dir, OVERLAY_INFO_FILE));
  for (const f of files) await fs.rm(f, { force: true });
  // virtiofsd's own directory under /run/mvmctl (owned by the share's owner; rm follows no link).
  await fs.rm(dirname(virtiofsdSocket(p.dir)), { recursive: true, force: true });
}

/** The --cpus, --memory and --disk a dev up was given, kept for the next one (raw, checked again then). */
export interface RememberedSettings {
  readonly cpus?: string;
  readonly memory?: string;
  readonly disk?: string;
}
const SETTING_KEYS = ['cpus', 'memory', 'disk'] as const;

/**
 * The remembered settings; none when the file is absent. A file that is not
 * what dev up writes is ignored with `warn` (these are preferences: a boot
 * with the defaults is the safe reading, and the next dev up rewrites it).
 */
export async function readSettings(
  c: Config,
  warn: (m: string) => void = () => undefined,
): Promise<RememberedSettings> {
  const path = statePaths(c).settings;
  let text: string;
  try {
    const handle = await fs.open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      text = (await handle.readFile({ encoding: 'utf8' })).slice(0, 4096);
    } finally {
      await handle.close();
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
      warn(`ignored the remembered dev up settings ${path}: ${(e as Error).message}`);
    return {};
  }
  try {
    const v = JSON.parse(text) as Record<string, unknown>;
    const out: Record<string, string> = {};
    for (const k of SETTING_KEYS) {
      const x = v?.[k];
      if (x === undefined) continue;
      if (typeof x !== 'string' || x.length > 32 || !/^[0-9A-Za-z.]+$/.test(x))
        throw new Error(`its ${k} is not a size or count`);
      out[k] = x;
    }
    return out;
  } catch (e) {
    warn(`ignored the remembered dev up settings ${path}: ${(e as Error).message}`);
    return {};
  }
}

export async function writeSettings(c: Config, s: RememberedSettings): Promise<void> {
  const clean = Object.fromEntries(
    SETTING_KEYS.flatMap((k) => (s[k] !== undefined ? [[k, s[k]]] : [])),
  );
  await writePrivateJson(statePaths(c).settings, clean);
}
