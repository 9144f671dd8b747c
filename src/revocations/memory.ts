/**
 * Recalls once seen are never forgotten. Every verified list's entries are
 * appended to `{data}/revocations/recalls-seen.jsonl` (private, append-only),
 * and the import enforces them even when the cached list is later deleted,
 * replaced by an older genuine list, or rolled back by anyone who can write
 * the cache. The latest signing time seen is kept too, so a refresh cannot
 * install a list signed before the one already trusted.
 */
import { constants, promises as fs, type Stats } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config.js';
import { recallKey, type Revocation } from '../core/revocation.js';
import { MvmError } from '../errors.js';
import { ownershipProblem } from '../io/ownership.js';
import { ensurePrivateDir } from '../io/secure-dir.js';

export interface RecallMemory {
  readonly recalls: readonly Revocation[];
  /** Latest signing time (ISO) of a list verified on this host, if any. */
  readonly latestSignedAt: string | undefined;
}

const memoryDir = (c: Config) => join(c.dataDir, 'revocations');
const memoryFile = (c: Config) => join(memoryDir(c), 'recalls-seen.jsonl');

/**
 * mvmctl only ever writes a private regular file here: a symlink (which could
 * point the memory at a file an attacker controls or empties), a directory, a
 * pipe or a device was put there by someone else. It is refused, never
 * followed or read, since the recalls it should hold cannot be ruled out.
 */
function memoryError(path: string, what: string, cause: string, underlying?: unknown): MvmError {
  return new MvmError('store', `The recall memory ${path} ${what}`, {
    cause: `${cause}; mvmctl keeps the recalls verified on this host in a private regular file there and cannot rule them out without it`,
    fix: `Replace ${path} with a regular file of this user: move it aside and find out who put it there (mvmctl re-creates the file and re-learns recalls from the next verified list; the cached list still applies).`,
    ...(underlying !== undefined ? { underlying } : {}),
  });
}

function openError(path: string, e: unknown): MvmError {
  const code = (e as NodeJS.ErrnoException).code;
  switch (code) {
    case 'ELOOP':
      return memoryError(path, 'is a symbolic link', 'a link there is never followed', e);
    case 'EISDIR':
      return memoryError(path, 'is a directory', 'something else is in the way', e);
    case 'ENXIO':
      // O_WRONLY | O_NONBLOCK on a FIFO without a reader.
      return memoryError(path, 'is a named pipe', 'something else is in the way', e);
    default:
      return memoryError(path, 'cannot be opened', (e as Error).message, e);
  }
}

function kindOf(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a named pipe';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  return 'not a regular file';
}

/**
 * Opens the memory file without following a link and without blocking on a
 * pipe, and accepts only a regular file under the store's owner/mode rule;
 * undefined when there is none yet (and `flags` does not create it).
 */
async function openMemory(path: string, flags: number): Promise<fs.FileHandle | undefined> {
  let fh: fs.FileHandle;
  try {
    fh = await fs.open(path, flags | constants.O_NOFOLLOW | constants.O_NONBLOCK, 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw openError(path, e);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) {
      throw memoryError(path, `is ${kindOf(st)}`, 'something else is in the way');
    }
    const problem = ownershipProblem(st, { uid: process.getuid?.(), rootMayOwn: false });
    if (problem) {
      throw memoryError(
        path,
        `can be changed by other users`,
        `it is ${problem}: whoever can write it can make this host forget recalls`,
      );
    }
    return fh;
  } catch (e) {
    await fh.close();
    throw e;
  }
}

export async function readRecallMemory(c: Config): Promise<RecallMemory> {
  const path = memoryFile(c);
  let text = '';
  const fh = await openMemory(path, constants.O_RDONLY);
  if (fh) {
    try {
      text = await fh.readFile({ encoding: 'utf8' });
    } catch (e) {
      throw memoryError(path, 'cannot be read', (e as Error).message, e);
    } finally {
      await fh.close();
    }
  }
  const recalls = new Map<string, Revocation>();
  let latestSignedAt: string | undefined;
  for (const line of text.split('\n')) {
    if (!line) continue;
    try {
      const r = JSON.parse(line) as { recall?: Revocation; signedAt?: string };
      if (r.recall && typeof r.recall.version === 'string')
        recalls.set(recallKey(r.recall), r.recall);
      if (typeof r.signedAt === 'string' && (!latestSignedAt || r.signedAt > latestSignedAt))
        latestSignedAt = r.signedAt;
    } catch {
      // A torn last line from a crash: the lines before it still count.
    }
  }
  return { recalls: [...recalls.values()], latestSignedAt };
}

/** Appends what a verified list adds to the memory (one O_APPEND write; concurrent writers only duplicate). */
export async function rememberList(
  c: Config,
  memory: RecallMemory,
  list: readonly Revocation[],
  signedAt: string | undefined,
): Promise<void> {
  const known = new Set(memory.recalls.map(recallKey));
  const lines = list
    .filter((r) => !known.has(recallKey(r)))
    .map((recall) => JSON.stringify({ recall }));
  if (signedAt && (!memory.latestSignedAt || signedAt > memory.latestSignedAt))
    lines.push(JSON.stringify({ signedAt }));
  if (lines.length === 0) return;
  await ensurePrivateDir(memoryDir(c), c.dataDir);
  const path = memoryFile(c);
  const fh = (await openMemory(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT))!;
  try {
    // writeFile loops until every byte is written: a short write never leaves half a line.
    await fh.writeFile(`${lines.join('\n')}\n`);
  } catch (e) {
    throw memoryError(path, 'cannot be written', (e as Error).message, e);
  } finally {
    await fh.close();
  }
}

/** Remembered recalls the given list no longer holds. */
export function forgottenRecalls(
  memory: RecallMemory,
  list: readonly Revocation[] | undefined,
): Revocation[] {
  const held = new Set((list ?? []).map(recallKey));
  return memory.recalls.filter((r) => !held.has(recallKey(r)));
}
