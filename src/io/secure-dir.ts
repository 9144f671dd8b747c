import { promises as fs } from 'node:fs';
import { dirname } from 'node:path';
import { MvmError } from '../errors.js';
import { ownershipProblem } from './ownership.js';

const storeError = (message: string, cause: string, fix: string, underlying?: unknown): MvmError =>
  new MvmError('store', message, { cause, fix, underlying });

/**
 * Makes sure `path` is a private directory of this user: created 0700 where
 * missing; refused when it is a symlink, not a directory, owned by someone
 * else, or writable by group or others (anyone who could write there could
 * swap an installed image). Checks every level from `base` down to `path`.
 */
export async function ensurePrivateDir(path: string, base: string): Promise<void> {
  const chain: string[] = [];
  for (let p = path; ; p = dirname(p)) {
    chain.unshift(p);
    if (p === base || dirname(p) === p) break;
  }
  for (const dir of chain) await ensureOne(dir);
}

async function ensureOne(dir: string): Promise<void> {
  let st;
  try {
    st = await fs.lstat(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw storeError(
        `Cannot inspect ${dir}`,
        (e as Error).message,
        'Check the permissions of the data directory.',
        e,
      );
    }
    try {
      // Missing parents of the data directory are created private too.
      await fs.mkdir(dir, { mode: 0o700, recursive: true });
      await fs.chmod(dir, 0o700); // mkdir's mode is filtered by the umask
    } catch (e2) {
      if ((e2 as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw storeError(
          `Cannot create ${dir}`,
          (e2 as Error).message,
          'Check free space and the permissions of the parent directory.',
          e2,
        );
      }
    }
    st = await fs.lstat(dir);
  }
  if (st.isSymbolicLink()) {
    throw storeError(
      `${dir} is a symbolic link`,
      'the store must be a real directory: a symlink could redirect installs elsewhere',
      `Replace ${dir} with a directory, or point MVM_DATA_DIR at one.`,
    );
  }
  if (!st.isDirectory()) {
    throw storeError(
      `${dir} is not a directory`,
      'something else is in the way',
      `Move ${dir} aside.`,
    );
  }
  // The one owner/mode rule (shared with the revocation cache); no root-owned store.
  const uid = process.getuid?.();
  const problem = ownershipProblem(st, { uid, rootMayOwn: false });
  if (problem) {
    throw storeError(
      `${dir} is ${problem}`,
      'another user could change what is installed',
      `chmod go-w ${dir} and chown ${uid} ${dir} (it must belong to this user and be writable by no one else), or use a data directory of your own (MVM_DATA_DIR).`,
    );
  }
}
