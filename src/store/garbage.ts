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
import { processAlive } from '../io/process.js';

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

/** Removes the unlinked entries of dead creators; returns their names. Errors leave an entry for the next run. */
export async function collectUnlinked(c: Collectable): Promise<string[]> {
  const names = await fs.readdir(c.dir).catch(() => [] as string[]);
  const orphans = names.filter((name) => {
    const m = c.pattern.exec(name);
    return m !== null && !processAlive(Number(m[1]));
  });
  if (orphans.length === 0) return [];
  let linked: ReadonlySet<string>;
  try {
    linked = await c.linked();
  } catch {
    return []; // links unreadable: nothing can be known unlinked
  }
  const removed: string[] = [];
  for (const name of orphans) {
    if (linked.has(name)) continue;
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
