/**
 * A lock around a short critical section (swapping the revocation pair,
 * chaining an audit record), held by the kernel on our behalf: SQLite's
 * exclusive transaction on an empty lock database is a POSIX record lock
 * (fcntl), which the kernel drops the moment its holder exits, kill -9
 * included. So there is nothing to take over and no pid to trust: when a
 * holder dies, exactly one waiter gets the lock next. Node has no flock(2);
 * `node:sqlite` is built in (also in the single executable) and needs no
 * native addon.
 */
import { constants, promises as fs } from 'node:fs';
import { resolve } from 'node:path';
import type { DatabaseSync } from 'node:sqlite';
import { MvmError } from '../errors.js';

const DEFAULT_TIMEOUT_MS = 10_000;
const SQLITE_BUSY = 5;

export interface LockOptions {
  /** How long to wait for a live holder before giving up (default 10 s). */
  readonly timeoutMs?: number;
}

/**
 * Runs `fn` while holding the lock at `path` (a file that stays empty). A
 * holder still alive after the timeout is a store error naming its pid.
 */
export async function withLock<T>(
  path: string,
  what: string,
  fn: () => Promise<T>,
  options: LockOptions = {},
): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  // POSIX locks belong to the process, not to a connection, and closing any
  // descriptor of the file drops them all: callers in this process queue here.
  const key = resolve(path);
  const before = queues.get(key) ?? Promise.resolve();
  let release!: () => void;
  const mine = new Promise<void>((r) => (release = r));
  const tail = before.then(() => mine);
  queues.set(key, tail);
  try {
    await before;
    const db = await acquire(path, what, deadline);
    try {
      return await fn();
    } finally {
      try {
        db.exec('ROLLBACK');
      } finally {
        db.close();
      }
    }
  } finally {
    release();
    if (queues.get(key) === tail) queues.delete(key);
  }
}

const queues = new Map<string, Promise<void>>();

async function acquire(path: string, what: string, deadline: number): Promise<DatabaseSync> {
  await emptyLockFile(path);
  const { DatabaseSync } = sqlite();
  let db: DatabaseSync;
  try {
    // timeout 0: a busy lock returns at once; the wait below does not block the event loop.
    db = new DatabaseSync(path, { timeout: 0 });
  } catch (e) {
    throw lockError(path, e);
  }
  for (;;) {
    try {
      db.exec('BEGIN EXCLUSIVE');
      return db;
    } catch (e) {
      if ((e as { errcode?: number }).errcode !== SQLITE_BUSY) {
        db.close();
        throw lockError(path, e);
      }
    }
    if (Date.now() > deadline) {
      db.close();
      const holder = await lockHolder(path);
      throw new MvmError(
        'store',
        `${what} is locked by ${holder ? `process ${holder}` : 'another process'}`,
        {
          cause: 'another mvmctl is updating it, or hung while doing so',
          fix: `Retry; the lock is released when ${holder ? `process ${holder}` : 'its holder'} exits (the lock file ${path} can stay).`,
        },
      );
    }
    await new Promise((r) => setTimeout(r, 5 + Math.random() * 15));
  }
}

/**
 * The lock database is always empty: SQLite locks it without writing. A file
 * with content is a leftover (the pid file of an older mvmctl, or garbage) and
 * is emptied, which cannot disturb a holder: the lock is not in the content.
 */
async function emptyLockFile(path: string): Promise<void> {
  let fh;
  try {
    fh = await fs.open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
  } catch (e) {
    throw lockError(path, e);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw lockError(path, new Error('not a regular file'));
    if (st.size > 0) await fh.truncate(0);
  } finally {
    await fh.close();
  }
}

function lockError(path: string, e: unknown): MvmError {
  return new MvmError('store', `Cannot lock ${path}`, {
    cause: (e as Error).message,
    fix: `Check the permissions of ${path} and its directory; move aside anything there that is not a regular file.`,
    underlying: e,
  });
}

/** The pid holding a POSIX lock on the file, from /proc/locks (Linux), if it can be told. */
async function lockHolder(path: string): Promise<number | undefined> {
  try {
    const st = await fs.stat(path);
    const dev = st.dev;
    const major = Math.floor(dev / 256) & 0xfff;
    const minor = (dev & 0xff) | (Math.floor(dev / 4096) & ~0xff);
    const id = `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${st.ino}`;
    for (const line of (await fs.readFile('/proc/locks', 'utf8')).split('\n')) {
      const f = line.trim().split(/\s+/);
      // "1: POSIX  ADVISORY  WRITE 14181 fe:00:2154661 1073741824 1073742335"
      if (f[1] === 'POSIX' && f[5] === id) {
        const pid = Number(f[4]);
        if (Number.isSafeInteger(pid) && pid > 0) return pid;
      }
    }
  } catch {
    // not Linux, or /proc not mounted: the holder is not named
  }
  return undefined;
}

let loaded: typeof import('node:sqlite') | undefined;

/**
 * `node:sqlite`, loaded once (getBuiltinModule: also inside the single
 * executable, with no module loader involved). Node.js 22 flags it
 * experimental with a process warning on load; operators should not see that
 * on stderr. Other warnings pass.
 */
function sqlite(): typeof import('node:sqlite') {
  if (loaded) return loaded;
  const emit = process.emitWarning;
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    const text = typeof warning === 'string' ? warning : warning.message;
    const type = typeof rest[0] === 'string' ? rest[0] : (rest[0] as { type?: string })?.type;
    if (type === 'ExperimentalWarning' && /SQLite/i.test(text)) return;
    (emit as (...a: unknown[]) => void).call(process, warning, ...rest);
  }) as typeof process.emitWarning;
  try {
    loaded = process.getBuiltinModule('node:sqlite');
  } finally {
    process.emitWarning = emit;
  }
  return loaded;
}
