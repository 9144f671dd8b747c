/**
 * The host side of `dev up --share DIR` (SPEC.md section 8): QEMU 7.2's C
 * virtiofsd serving DIR on a vhost-user socket, which QEMU's
 * vhost-user-fs-device connects to (VM-FACTS.md section 5).
 *
 * The guest is untrusted, and virtiofsd does what the guest asks with its own
 * rights: run as root, guest root could create setuid-root files, device
 * nodes and root-owned files in a directory every host user can reach. So
 * virtiofsd never runs as root. It runs as the shared directory's owner
 * (setpriv), inside a user namespace where that owner is its "root"
 * (unshare --map-root-user): whatever the guest creates belongs to the owner,
 * a setuid bit gives only the owner's rights, device nodes cannot be made at
 * all (the kernel refuses mknod of a device inside a user namespace), and no
 * other owner can be set (no other uid exists there). A directory owned by
 * root (uid or gid 0) is refused: its "root" would be host root. A private
 * mount namespace gives virtiofsd its own /run/virtiofsd for its pid file.
 * Starting it that way needs root (mvmctl sets the uid), so that is checked
 * before anything starts.
 *
 * Like QEMU, virtiofsd is recorded by pid and process start time and
 * signalled only after both, and its command line naming this VM's socket,
 * are confirmed.
 */
import { spawn } from 'node:child_process';
import { constants, promises as fs } from 'node:fs';
import { dirname, join } from 'node:path';
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

/** Who virtiofsd runs as: the shared directory's owner. */
export interface ShareOwner {
  readonly uid: number;
  readonly gid: number;
}

/**
 * The owner of the shared directory, as whom the guest works in it: refused
 * when it is root (uid or gid 0), and when that owner could not reach the
 * directory (a parent it may not enter), which virtiofsd would only report
 * after the boot started.
 */
export async function shareOwner(realPath: string): Promise<ShareOwner> {
  const st = await fs.stat(realPath);
  if (st.uid === 0 || st.gid === 0)
    throw new MvmError(
      'usage',
      `--share ${show(realPath)} is owned by ${st.uid === 0 ? 'root' : 'the root group'}`,
      {
        cause:
          'the guest works in a shared directory as its owner (files it creates belong to the owner), so in a directory owned by root the guest would act as root on this host',
        fix: `Share a directory owned by an unprivileged user and group (for example chown 1000:1000 ${show(realPath)}), or run dev up without --share.`,
      },
    );
  for (let dir = dirname(realPath); ; dir = dirname(dir)) {
    const d = await fs.stat(dir);
    const bit = d.uid === st.uid ? 0o100 : d.gid === st.gid ? 0o010 : 0o001;
    if ((d.mode & bit) === 0)
      throw new MvmError(
        'usage',
        `--share ${show(realPath)}: its owner (uid ${st.uid}) cannot reach it`,
        {
          cause: `the guest's files are served as the directory's owner, and ${show(dir)} (mode ${(d.mode & 0o7777).toString(8).padStart(4, '0')}, owner uid ${d.uid}) does not let uid ${st.uid} through`,
          fix: `Share a directory its owner can reach (chmod o+x ${show(dir)} lets everyone through without listing it), or run dev up without --share.`,
        },
      );
    if (dir === dirname(dir)) break;
  }
  return { uid: st.uid, gid: st.gid };
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
    throw new MvmError(
      'internal',
      "--share needs root: mvmctl must start virtiofsd as the share's owner",
      {
        cause: `${found} (QEMU 7.2's virtiofsd) is started as the shared directory's owner in a user namespace of its own, which takes root to set up (its pid file goes under /var/run/virtiofsd); this mvmctl runs as uid ${uid ?? 'unknown'}`,
        fix: 'Run mvmctl dev up --share as root (sudo), or run dev up without --share.',
      },
    );
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
  owner: ShareOwner,
): Promise<VirtiofsdProcess> {
  await prepareSocketDir(socket, owner);
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
    // One pid from setpriv to virtiofsd: each step execs the next (unshare without --fork).
    child = spawn('setpriv', virtiofsdCommand(binary, dir, socket, owner), {
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
 * The command that starts virtiofsd as `owner`: setpriv sets the uid and gid
 * (and drops every capability and supplementary group with them), unshare
 * makes a user namespace in which that uid is root (the rights virtiofsd
 * needs for its sandbox, over nothing but what the owner has) and a mount
 * namespace, where a tmpfs on /run/virtiofsd takes its pid file.
 */
export function virtiofsdCommand(
  binary: string,
  dir: string,
  socket: string,
  owner: ShareOwner,
): string[] {
  return [
    `--reuid=${owner.uid}`,
    `--regid=${owner.gid}`,
    '--clear-groups',
    '--',
    'unshare',
    '--user',
    '--map-root-user',
    '--mount',
    '--',
    'sh',
    '-c',
    // The paths are arguments ("$@"), never part of the script.
    'mount -t tmpfs -o mode=0700,size=1m mvmctl-virtiofsd /run/virtiofsd && exec "$@"',
    'sh',
    binary,
    `--socket-path=${socket}`,
    '-o',
    `source=${dir}`,
    '-o',
    'cache=auto',
  ];
}

/**
 * virtiofsd's socket directory, made fresh: /run/mvmctl (root's, 0711: others
 * may pass through, not list or create) and the VM's own directory in it,
 * owned by the share's owner, 0700. Also makes sure /run/virtiofsd exists,
 * the mount point of virtiofsd's private pid file directory.
 */
async function prepareSocketDir(socket: string, owner: ShareOwner): Promise<void> {
  const dir = dirname(socket);
  const top = dirname(dir);
  await fs.mkdir(top, { recursive: true, mode: 0o711 });
  const st = await fs.lstat(top);
  if (!st.isDirectory() || st.uid !== 0 || (st.mode & 0o022) !== 0)
    throw new MvmError('store', `${top} is not a directory only root can write`, {
      cause: 'virtiofsd sockets are kept there, and anyone who could write it could swap one',
      fix: `Remove ${top} (mvmctl recreates it, owned by root, mode 0711).`,
    });
  await fs.chmod(top, 0o711);
  await fs.rm(dir, { recursive: true, force: true });
  await fs.mkdir(dir, { mode: 0o700 });
  await fs.chown(dir, owner.uid, owner.gid);
  await fs.mkdir('/run/virtiofsd', { recursive: true, mode: 0o700 });
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
