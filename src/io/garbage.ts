/**
 * Garbage collection of what killed runs leave behind, one rule for every
 * directory that publishes by renaming a link (the image store's objects, the
 * revocation cache's generations): an entry is removed only when its creator
 * (the pid in its name) is gone and no link points at it. Creators are
 * checked before the links are read: a process found dead can no longer
 * publish, so an entry it made that is unlinked at the later read stays
 * unlinked.
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { processAlive } from './process.js';

export interface Collectable {
  /** The directory holding the entries. */
  readonly dir: string;
  /** Names of collectable entries; the first group is the creator's pid. Anything else is never touched. */
  readonly pattern: RegExp;
  /** What is linked right now (names in `dir`), read after the creators were checked; throwing collects nothing. */
  readonly linked: () => Promise<ReadonlySet<string>>;
  /** Entries younger than this are kept even when unlinked: a reader may still be inside one. */
  readonly graceMs?: number;
}

/** An entry nothing links to, and whether the process that made it still runs. */
export interface UnlinkedEntry {
  readonly name: string;
  /** The creator's pid, from the name. */
  readonly pid: number;
  /** A live creator may still be building it (an import in progress): never collected. */
  readonly creatorAlive: boolean;
}

/**
 * Every entry matching the pattern that nothing links to, with its creator's
 * liveness (checked before the links are read, as collection requires).
 * Links unreadable: nothing can be known unlinked, so nothing is returned.
 */
export async function findUnlinked(c: Collectable): Promise<UnlinkedEntry[]> {
  const names = await fs.readdir(c.dir).catch(() => [] as string[]);
  const found: UnlinkedEntry[] = [];
  for (const name of names) {
    const m = c.pattern.exec(name);
    if (m === null) continue;
    const pid = Number(m[1]);
    found.push({ name, pid, creatorAlive: processAlive(pid) });
  }
  if (found.length === 0) return [];
  let linked: ReadonlySet<string>;
  try {
    linked = await c.linked();
  } catch {
    return [];
  }
  return found.filter((e) => !linked.has(e.name));
}

/** Removes the unlinked entries of dead creators; returns their names. Errors leave an entry for the next run. */
export async function collectUnlinked(c: Collectable): Promise<string[]> {
  const removed: string[] = [];
  for (const { name, creatorAlive } of await findUnlinked(c)) {
    if (creatorAlive) continue;
    const path = join(c.dir, name);
    if (c.graceMs) {
      const age = await fs.lstat(path).then(
        (s) => Date.now() - s.mtimeMs,
        () => 0,
      );
      if (age <= c.graceMs) continue;
    }
    await fs.rm(path, { recursive: true, force: true }).then(
      () => removed.push(name),
      () => undefined,
    );
  }
  return removed;
}
