/**
 * Recalls once seen are never forgotten. Every verified list's entries are
 * appended to `{data}/revocations/recalls-seen.jsonl` (private, append-only),
 * and the import enforces them even when the cached list is later deleted,
 * replaced by an older genuine list, or rolled back by anyone who can write
 * the cache. The latest signing time seen is kept too, so a refresh cannot
 * install a list signed before the one already trusted.
 */
import { constants, promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config.js';
import type { Revocation } from '../core/revocation.js';
import { ensurePrivateDir } from '../store/secure-dir.js';

export interface RecallMemory {
  readonly recalls: readonly Revocation[];
  /** Latest signing time (ISO) of a list verified on this host, if any. */
  readonly latestSignedAt: string | undefined;
}

const memoryDir = (c: Config) => join(c.dataDir, 'revocations');
const memoryFile = (c: Config) => join(memoryDir(c), 'recalls-seen.jsonl');
const key = (r: Pick<Revocation, 'version' | 'variant' | 'arch'>) =>
  `${r.version}\u0000${r.variant}\u0000${r.arch}`;

export async function readRecallMemory(c: Config): Promise<RecallMemory> {
  let text = '';
  try {
    text = await fs.readFile(memoryFile(c), {
      encoding: 'utf8',
      flag: constants.O_RDONLY | constants.O_NOFOLLOW,
    });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const recalls = new Map<string, Revocation>();
  let latestSignedAt: string | undefined;
  for (const line of text.split('\n')) {
    if (!line) continue;
    try {
      const r = JSON.parse(line) as { recall?: Revocation; signedAt?: string };
      if (r.recall && typeof r.recall.version === 'string') recalls.set(key(r.recall), r.recall);
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
  const known = new Set(memory.recalls.map(key));
  const lines = list.filter((r) => !known.has(key(r))).map((recall) => JSON.stringify({ recall }));
  if (signedAt && (!memory.latestSignedAt || signedAt > memory.latestSignedAt))
    lines.push(JSON.stringify({ signedAt }));
  if (lines.length === 0) return;
  await ensurePrivateDir(memoryDir(c), c.dataDir);
  const fh = await fs.open(
    memoryFile(c),
    constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW,
    0o600,
  );
  try {
    await fh.write(`${lines.join('\n')}\n`);
  } finally {
    await fh.close();
  }
}

/** Remembered recalls the given list no longer holds. */
export function forgottenRecalls(
  memory: RecallMemory,
  list: readonly Revocation[] | undefined,
): Revocation[] {
  const held = new Set((list ?? []).map(key));
  return memory.recalls.filter((r) => !held.has(key(r)));
}
