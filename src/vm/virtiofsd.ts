/**
 * The host side of `dev up --share DIR` (SPEC.md section 8): QEMU 7.2's C
 * virtiofsd serving DIR on a vhost-user socket in the VM's state directory,
 * which QEMU's vhost-user-fs-device connects to (VM-FACTS.md section 5). It
 * must run as root (as any other user it cannot create its pid file under
 * /var/run/virtiofsd), so that is checked before anything starts.
 *
 * Like QEMU, virtiofsd is recorded by pid and process start time and
 * signalled only after both, and its command line naming this VM's socket,
 * are confirmed.
 */
import { spawn } from 'node:child_process';
import { constants, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { printable } from '../core/printable.js';
import { MvmError } from '../errors.js';
import { isSameProcess, probeProcess } from './state.js';

/** Where Debian (qemu-system-common), Fedora and others install virtiofsd. */
export const VIRTIOFSD_CANDIDATES = [
  '/usr/lib/qemu/virtiofsd',
  '/usr/libexec/virtiofsd',
  '/usr/lib/virtiofsd',
] as const;
export const VIRTIOFSD_LOG = 'virtiofsd.log';

export interface VirtiofsdProcess {
  readonly pid: number;
  readonly startTime: string;
}

const show = (value: string): string => JSON.stringify(printable(value, 200));

/**
 * The shared directory as virtiofsd will serve it: it must exist and be a
 * directory (symlinks resolved). Checked before anything is started.
 */
export async function shareDirectory(hostPath: string): Promise<string> {
  const fix = 'Give --share an existing directory (mkdir it first), or run dev up without --share.';
  let real: string;
  try {
    real = await fs.realpath(hostPath);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new MvmError('usage', `--share ${show(hostPath)}: no such directory`, {
      cause:
        code === 'ENOENT'
          ? 'the directory to share does not exist'
          : `it cannot be resolved (${code ?? (e as Error).message})`,
      fix,
    });
  }
  const st = await fs.stat(real);
  if (!st.isDirectory())
    throw new MvmError('usage', `--share ${show(hostPath)} is not a directory`, {
      cause: 'only a directory can be shared with the guest (mounted on the tag workdir)',
      fix,
    });
  // virtiofsd's -o splits its value on commas (and reads backslashes as escapes): refuse rather
  // than serve another directory than the one named.
  if (/[,\\]/.test(real))
    throw new MvmError(
      'usage',
      `--share ${show(hostPath)}: the path contains a comma or a backslash`,
      {
        cause: `virtiofsd would split ${show(real)} at that character and serve another path`,
        fix: 'Share a directory whose path has no comma or backslash (a symlink to it does not help: the real path is served).',
      },
    );
  return real;
}

/** The virtiofsd binary, or a clear error saying what is missing and how to fix it. */
export async function findVirtiofsd(
  candidates: readonly string[] = VIRTIOFSD_CANDIDATES,
  uid: number | undefined = process.getuid?.(),
): Promise<string> {
  let found: string | undefined;
  for (const c of candidates) {
    if (
      await fs
        .access(c, constants.X_OK)
        .then(() => true)
        .catch(() => false)
    ) {
      found = c;
      break;
    }
  }
  if (found === undefined)
    throw new MvmError('internal', '--share needs virtiofsd, and it was not found', {
      cause: `dev up serves the shared directory with virtiofsd; none of ${candidates.join(', ')} is an executable`,
      fix: 'Install it (Debian 12: apt-get install qemu-system-common, which provides /usr/lib/qemu/virtiofsd), or run dev up without --share.',
    });
  if (uid !== 0)
    throw new MvmError('internal', '--share needs root: virtiofsd must run as root', {
      cause: `${found} (QEMU 7.2's virtiofsd) runs only as root: as another user it cannot create its pid file under /var/run/virtiofsd, and it needs root for its sandbox; this mvmctl runs as uid ${uid ?? 'unknown'}`,
      fix: 'Run mvmctl dev up --share as root (sudo), or run dev up without --share.',
    });
  return found;
}

/**
 * Starts virtiofsd serving `dir` on `socket` and waits until the socket
 * exists (QEMU connects to it at start-up). Its output goes to
 * virtiofsd.log in the state directory. On failure nothing is left running.
 */
export async function startVirtiofsd(
  binary: string,
  dir: string,
  socket: string,
  stateDir: string,
  deadline: number,
): Promise<VirtiofsdProcess> {
  await fs.rm(socket, { force: true });
  const logPath = join(stateDir, VIRTIOFSD_LOG);
  const log = await fs.open(
    logPath,
    constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW,
    0o600,
  );
  let child;
  let spawned: Promise<Error | undefined>;
  try {
    await log.chmod(0o600);
    child = spawn(binary, [`--socket-path=${socket}`, '-o', `source=${dir}`, '-o', 'cache=auto'], {
      detached: true,
      stdio: ['ignore', log.fd, log.fd],
    });
    const c = child;
    // Listened for at once: 'spawn' is emitted on the next tick, before the log is closed.
    spawned = new Promise<Error | undefined>((resolve) => {
      c.once('spawn', () => resolve(undefined));
      c.once('error', resolve);
    });
  } finally {
    await log.close();
  }
  const failure = async (why: string): Promise<MvmError> => {
    const text = await fs.readFile(logPath, 'utf8').catch(() => '');
    const tail = text
      .trim()
      .split('\n')
      .slice(-5)
      .map((l) => printable(l, 300));
    return new MvmError('internal', `virtiofsd did not start: ${why}`, {
      cause: tail.length > 0 && tail[0] !== '' ? `virtiofsd said: ${tail.join(' | ')}` : why,
      fix: `Check ${logPath}; or run dev up without --share.`,
    });
  };
  const spawnError = await spawned;
  if (spawnError !== undefined || child.pid === undefined)
    throw await failure(spawnError?.message ?? 'no process');
  const pid = child.pid;
  let exited = false;
  child.once('exit', () => (exited = true));
  child.unref();
  const probe = await probeProcess(pid);
  if (probe.state !== 'alive') throw await failure('it exited right after it started');
  const me = { pid, startTime: probe.startTime };
  for (;;) {
    const st = await fs.lstat(socket).catch(() => undefined);
    if (st?.isSocket()) return me;
    if (exited || !(await isSameProcess(pid, probe.startTime)))
      throw await failure('it exited before its socket appeared');
    if (Date.now() > deadline) {
      await stopVirtiofsd(me, socket);
      throw await failure(`its socket ${socket} did not appear in time`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Stops the recorded virtiofsd: only when the pid is still the process
 * started (same start time) and its command line names this VM's socket.
 * SIGTERM, then SIGKILL. True when it is gone (or was not ours to stop).
 */
export async function stopVirtiofsd(p: VirtiofsdProcess, socket: string): Promise<void> {
  const ours = async () =>
    (await isSameProcess(p.pid, p.startTime)) &&
    (await fs
      .readFile(`/proc/${p.pid}/cmdline`, 'utf8')
      .then((t) => t.split('\0').includes(`--socket-path=${socket}`))
      .catch(() => false));
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    if (!(await ours())) return;
    try {
      process.kill(p.pid, signal);
    } catch {
      return;
    }
    const deadline = Date.now() + 5_000;
    while (Date.now() < deadline) {
      if (!(await isSameProcess(p.pid, p.startTime))) return;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  throw new MvmError('internal', `virtiofsd (pid ${p.pid}) did not exit, even after SIGKILL`, {
    cause: 'the process may be stuck in the kernel (uninterruptible I/O)',
    fix: `Check the process with ps -p ${p.pid}; run mvmctl dev down again once it is gone.`,
  });
}
