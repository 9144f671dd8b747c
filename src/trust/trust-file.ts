/**
 * Reading a file that decides what is trusted: a trusted root (--trusted-root,
 * MVM_TRUSTED_ROOT) or a --key. Whoever can write such a file, or replace it
 * in its directory, decides which signatures verify, so it is held to the
 * rule the store and the revocation cache follow (ownershipProblem): owned by
 * this user or root, not writable by group or others, and in a directory
 * nobody else can rewrite.
 *
 * The rule is applied to the file actually opened (fstat on its descriptor,
 * so a path swapped after the check cannot slip another file in) and to the
 * directory that holds it, found from the descriptor (/proc/self/fd); when the
 * path named is a symlink, the directory holding the link is held to the rule
 * too, since whoever can rewrite it can point the link elsewhere.
 *
 * A directory writable by others but with the sticky bit (such as /tmp) is
 * accepted when it belongs to this user or root: others may create files in
 * it but not rename or remove ours, and a file they created instead is
 * refused by the file's own owner check.
 */
import { promises as fs } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { MvmError, type ErrorCode } from '../errors.js';
import { openRegularFile, readUpTo } from '../io/files.js';
import { ownershipProblem, type OwnershipFacts } from '../io/ownership.js';

const STICKY = 0o1000;

/**
 * Reads the whole file (a regular, non-empty file of at most maxBytes) after
 * checking it and its directory against the ownership rule. A file that
 * fails the rule is refused with `code` (exit 3), naming the problem and the
 * command that fixes it; read errors are 'input' errors as readRegularFile's.
 */
export async function readTrustFile(
  path: string,
  what: string,
  maxBytes: number,
  code: Extract<ErrorCode, 'trusted-root' | 'input'>,
): Promise<Buffer> {
  const uid = process.getuid?.();
  const { handle, size } = await openRegularFile(path, what, maxBytes);
  try {
    const st = await handle.stat();
    const fileProblem = ownershipProblem(st, { uid, rootMayOwn: true });
    if (fileProblem !== undefined) {
      const foreign = uid !== undefined && st.uid !== uid && st.uid !== 0;
      throw new MvmError(code, `The ${what} ${path} is not protected from other users`, {
        cause: `the file is ${fileProblem}; whoever can write it decides which signatures verify`,
        fix: foreign
          ? `Copy it to a file you own, or take it over: chown ${uid} ${path} && chmod go-w ${path}`
          : `chmod go-w ${path}`,
      });
    }
    if (uid !== undefined) {
      for (const dir of await holdingDirectories(path, handle.fd)) {
        await checkDirectory(dir, path, what, code, uid);
      }
    }
    return await readAll(handle, size, path, what);
  } finally {
    await handle.close();
  }
}

/** The directory holding the opened file, and the one holding the named link if the path is a symlink. */
async function holdingDirectories(path: string, fd: number): Promise<string[]> {
  let real: string;
  try {
    real = await fs.readlink(`/proc/self/fd/${fd}`);
    if (!real.startsWith('/') || real.endsWith(' (deleted)')) throw new Error('not a path');
  } catch {
    real = await fs.realpath(path);
  }
  const dirs = [dirname(real)];
  const named = await fs.lstat(path).catch(() => undefined);
  if (named?.isSymbolicLink()) {
    const linkDir = await fs.realpath(dirname(resolve(path)));
    if (!dirs.includes(linkDir)) dirs.push(linkDir);
  }
  return dirs;
}

async function checkDirectory(
  dir: string,
  path: string,
  what: string,
  code: Extract<ErrorCode, 'trusted-root' | 'input'>,
  uid: number,
): Promise<void> {
  let st: OwnershipFacts;
  try {
    st = await fs.lstat(dir);
  } catch (e) {
    throw new MvmError(code, `The directory of the ${what} ${path} cannot be checked`, {
      cause: (e as Error).message,
      underlying: e,
    });
  }
  const sticky = (st.mode & STICKY) !== 0;
  // Sticky: others may add files but not replace ours (the owner check covers theirs).
  const judged = { uid: st.uid, mode: sticky ? st.mode & ~0o022 : st.mode };
  const problem = ownershipProblem(judged, { uid, rootMayOwn: true });
  if (problem === undefined) return;
  const foreign = st.uid !== uid && st.uid !== 0;
  throw new MvmError(code, `The ${what} ${path} is in a directory other users can change`, {
    cause: `its directory ${dir} is ${problem}; whoever can write there can replace the file`,
    fix: foreign
      ? `Move the ${what} into a directory you own that only you can write (mode 755 or stricter)`
      : `chmod go-w ${dir}, or move the ${what} into a directory only you can write`,
  });
}

/** Reads the file whole; one that grew past its fstat size while being read is refused. */
async function readAll(
  handle: fs.FileHandle,
  size: number,
  path: string,
  what: string,
): Promise<Buffer> {
  const bytes = await readUpTo(handle, size + 1);
  if (bytes.length > size) {
    throw new MvmError('input', `${what} ${path} changed while being read`, {
      cause: `it grew past the ${size} bytes it had when opened`,
      fix: `Wait until ${path} is completely written, then retry.`,
    });
  }
  return bytes;
}
