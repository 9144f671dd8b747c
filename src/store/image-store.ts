/**
 * The installed-image store, `~/.mvm/dev/prebuilt/` (SPEC.md sections 3 and 9).
 *
 * Each image is built complete in its own object directory,
 * `.objects/<pid>-<random>/`, and published by atomically renaming a symlink
 * `v{version}` -> `.objects/<id>` into place. So at every instant, through
 * kill -9 and concurrent imports, `v{version}` is absent, the previous complete
 * image or the new complete image: rename(2) of a symlink over a symlink is
 * atomic, and nothing is ever written into a published object. No lock is
 * needed; the last publisher wins with an image as verified as the first's.
 * Objects nothing links to, left by a process that is gone, are removed by the
 * next run. Whatever mvmctl did not make (a real directory or file where a
 * version link belongs, a link pointing anywhere but one of our objects) is
 * refused and left exactly as it is: the store never moves or deletes it.
 *
 * Removal (`dev rm`, `dev prune`) is publishing in reverse, under the store's
 * lock so two removals never work on the same image: the version link is
 * renamed out first (readers see the version absent from then on, never half
 * an image), then the object is renamed to a name of this process and only
 * then deleted, without following links. A removal killed halfway leaves an
 * object of a dead creator that nothing links to: the next run collects it.
 */
import { randomBytes } from 'node:crypto';
import { constants, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { MvmError } from '../errors.js';
import { isSemver } from '../core/manifest.js';
import { withLock } from '../io/lock.js';
import { collectUnlinked, findUnlinked, type Collectable } from '../io/garbage.js';
import { ensurePrivateDir } from '../io/secure-dir.js';

const OBJECTS = '.objects';
const OBJECT_ID = /^([1-9][0-9]{0,9})-[0-9a-f]{16}$/;
const LINK_TMP = /^\.link-([1-9][0-9]{0,9})-[0-9a-f]{16}$/;
const VERSION_LINK = /^v(.+)$/;
/** The store's lock file (src/io/lock.ts), held by removals. */
const LOCK = '.lock';

/** What an interrupted import (or removal) left in the store, found by `leftovers()`. */
export interface Leftover {
  /** Relative to the store: `.objects/<pid>-<random>` or `.link-<pid>-<random>`. */
  readonly name: string;
  readonly path: string;
  /** The process that made it. */
  readonly pid: number;
  /** Its creator still runs (an import in progress): it is never removed. */
  readonly creatorAlive: boolean;
  /** Space it takes on disk. */
  readonly bytes: number;
}

/** An image taken out of the store by `remove()`. */
export interface RemovedImage {
  readonly version: string;
  /** The object directory it was in (gone now). */
  readonly dir: string;
  /** Space it took on disk. */
  readonly bytes: number;
}

export interface InstalledImage {
  readonly version: string;
  /** The object directory holding the image's files. */
  readonly dir: string;
}

const storeError = (
  message: string,
  e: unknown,
  fix = 'Check free space and the permissions of the data directory.',
): MvmError =>
  new MvmError('store', message, { cause: (e as Error)?.message ?? String(e), fix, underlying: e });

/** Something at a version link that mvmctl did not put there: refused, never removed. */
const notOurs = (link: string, what: string, cause: string, e?: unknown): MvmError =>
  new MvmError('store', `${link} ${what}`, {
    cause,
    fix: `Move ${link} aside (mvmctl never moves or deletes what it did not install), then import the image again.`,
    underlying: e,
  });

export class ImageStore {
  constructor(
    /** The prebuilt directory. */
    readonly root: string,
    /** The data directory it lives in: every level from here down is checked. */
    private readonly base: string,
  ) {}

  private get objects(): string {
    return join(this.root, OBJECTS);
  }

  /** Checks (or creates) the store's directories and removes what killed runs left behind. */
  async open(): Promise<void> {
    await ensurePrivateDir(this.objects, this.base);
    await this.collectGarbage();
  }

  /** A fresh, empty, private object directory to build an image in. */
  async stage(): Promise<string> {
    const dir = join(this.objects, `${process.pid}-${randomBytes(8).toString('hex')}`);
    try {
      await fs.mkdir(dir, { mode: 0o700 });
      await fs.chmod(dir, 0o700);
    } catch (e) {
      throw storeError(`Cannot create a staging directory in ${this.objects}`, e);
    }
    return dir;
  }

  async discard(dir: string): Promise<void> {
    // Retried: a copy being killed (an interrupted import) can still be closing its file in there.
    await fs.rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
  }

  /** Writes a new file (0600) into a staging directory. */
  async writeFile(dir: string, name: string, data: Uint8Array | string): Promise<void> {
    try {
      await fs.writeFile(join(dir, name), data, {
        mode: 0o600,
        flag: constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      });
    } catch (e) {
      throw storeError(`Cannot write ${name} into the store`, e);
    }
  }

  /** Atomically makes the staged object the installed image of `version`. */
  async publish(version: string, staged: string): Promise<InstalledImage> {
    if (!isSemver(version))
      throw new MvmError('internal', `refusing to publish a non-semver version ${version}`);
    const id = staged.slice(this.objects.length + 1);
    if (!OBJECT_ID.test(id))
      throw new MvmError('internal', `refusing to publish ${staged}: not a staged object`);
    const link = join(this.root, `v${version}`);
    const tmp = join(this.root, `.link-${process.pid}-${randomBytes(8).toString('hex')}`);
    try {
      await fs.symlink(join(OBJECTS, id), tmp);
      await fs.rename(tmp, link);
    } catch (e) {
      await fs.rm(tmp, { force: true });
      const code = (e as NodeJS.ErrnoException).code;
      // rename(2) replaces a link or a file, never a directory: one is in the way.
      if (code === 'EISDIR' || code === 'ENOTEMPTY' || code === 'EEXIST') {
        throw notOurs(
          link,
          'is a directory, not an image installed by mvmctl',
          'a real directory is where the version link belongs',
          e,
        );
      }
      throw storeError(`Cannot publish v${version} in ${this.root}`, e);
    }
    await this.collectGarbage();
    return { version, dir: staged };
  }

  /** The installed image of `version`, if any; the link must point at one of our objects. */
  async installed(version: string): Promise<InstalledImage | undefined> {
    const link = join(this.root, `v${version}`);
    let target: string;
    try {
      target = await fs.readlink(link);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return undefined;
      if (code === 'EINVAL') {
        const st = await fs.lstat(link).catch(() => undefined);
        const kind = st?.isDirectory() ? 'a directory' : 'not a link';
        throw notOurs(
          link,
          `is ${kind}, not an image installed by mvmctl`,
          'mvmctl installs each version as a link to one of its own objects',
          e,
        );
      }
      throw storeError(`Cannot read ${link}`, e);
    }
    const m = /^\.objects\/(.+)$/.exec(target);
    if (!m || !OBJECT_ID.test(m[1]!)) {
      throw notOurs(
        link,
        `points outside the store (${target})`,
        `a version link of mvmctl points at ${OBJECTS}/<id> in ${this.root}, nowhere else`,
      );
    }
    const dir = join(this.objects, m[1]!);
    const st = await fs.lstat(dir).catch(() => undefined);
    if (!st?.isDirectory()) {
      throw storeError(
        `${link} points at a missing image`,
        new Error(`${dir} is not a directory`),
        `Import the image again.`,
      );
    }
    return { version, dir };
  }

  /** Every installed version, newest name last. */
  async list(): Promise<InstalledImage[]> {
    let names: string[];
    try {
      names = await fs.readdir(this.root);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw storeError(`Cannot read ${this.root}`, e);
    }
    const out: InstalledImage[] = [];
    for (const name of names.sort()) {
      const v = VERSION_LINK.exec(name)?.[1];
      if (v === undefined || !isSemver(v)) continue;
      const img = await this.installed(v).catch(() => undefined);
      if (img) out.push(img);
    }
    return out;
  }

  /**
   * Runs `fn` holding the store's lock. Removals take it; imports need none
   * (each builds its own object and publishes with one rename).
   */
  async withLock<T>(fn: () => Promise<T>): Promise<T> {
    return withLock(join(this.root, LOCK), 'the image store', fn);
  }

  /** Checks the store's directories (owner, mode, no symlinks) without creating or collecting anything. */
  async check(): Promise<void> {
    await ensurePrivateDir(this.objects, this.base);
  }

  /**
   * What interrupted imports left: objects no version links to and temporary
   * links, each with its creator's liveness (a live creator is an import in
   * progress) and its size. Reads only.
   */
  async leftovers(): Promise<Leftover[]> {
    const unlinked = this.unlinked();
    const objects = await findUnlinked(unlinked.objects);
    const links = await findUnlinked(unlinked.links);
    const out: Leftover[] = [];
    for (const [dir, rel, entries] of [
      [this.objects, `${OBJECTS}/`, objects],
      [this.root, '', links],
    ] as const) {
      for (const e of entries) {
        const path = join(dir, e.name);
        out.push({ ...e, name: `${rel}${e.name}`, path, bytes: await diskUsage(path) });
      }
    }
    return out;
  }

  /** Removes the leftovers of processes that are gone; returns their names (as `leftovers()` names them). */
  async collectLeftovers(): Promise<string[]> {
    return this.collectGarbage();
  }

  /**
   * Takes `version` out of the store: its link renamed out (the version is
   * absent from that instant), its object renamed to a name of this process,
   * then deleted; links are never followed. Undefined when it is not
   * installed. A link or directory mvmctl did not make is refused, never
   * touched. Callers hold the store's lock.
   */
  async remove(version: string): Promise<RemovedImage | undefined> {
    if (!isSemver(version))
      throw new MvmError('internal', `refusing to remove a non-semver version ${version}`);
    if (!(await this.installed(version))) return undefined; // refuses what is not ours
    const link = join(this.root, `v${version}`);
    const out = join(this.root, `.link-${process.pid}-${randomBytes(8).toString('hex')}`);
    try {
      await fs.rename(link, out);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw storeError(`Cannot remove v${version} from ${this.root}`, e);
    }
    // The link taken out is the one that counts: an import may have replaced it since it was read.
    const target = await fs.readlink(out).catch(() => '');
    const m = /^\.objects\/(.+)$/.exec(target);
    if (!m || !OBJECT_ID.test(m[1]!)) {
      await fs.rename(out, link).catch(() => undefined);
      throw notOurs(
        link,
        `points outside the store (${target})`,
        `a version link of mvmctl points at ${OBJECTS}/<id> in ${this.root}, nowhere else`,
      );
    }
    const id = m[1]!;
    const dir = join(this.objects, id);
    let bytes = 0;
    // Each publish has an object of its own; one another version links to all the same is left alone.
    if (!(await this.linkedObjects()).has(id)) {
      const doomed = join(this.objects, `${process.pid}-${randomBytes(8).toString('hex')}`);
      try {
        await fs.rename(dir, doomed);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
          throw storeError(
            `v${version} was unlinked, but its files in ${dir} cannot be removed`,
            e,
            'Run mvmctl dev prune to remove them.',
          );
        }
      }
      bytes = await diskUsage(doomed);
      try {
        await fs.rm(doomed, { recursive: true, force: true, maxRetries: 3 });
      } catch (e) {
        throw storeError(
          `v${version} was removed, but deleting its files (${doomed}) failed`,
          e,
          'Run mvmctl dev prune once this process is gone: it removes what is left.',
        );
      }
    }
    await fs.rm(out, { force: true });
    return { version, dir, bytes };
  }

  /** The object ids the version links point at right now. */
  private async linkedObjects(): Promise<ReadonlySet<string>> {
    const out = new Set<string>();
    for (const name of await fs.readdir(this.root)) {
      if (!VERSION_LINK.test(name)) continue;
      const target = await fs.readlink(join(this.root, name)).catch(() => '');
      const m = /^\.objects\/(.+)$/.exec(target);
      if (m) out.add(m[1]!);
    }
    return out;
  }

  /** Removes objects no version links to, and temporary links, when their creator is gone. */
  private async collectGarbage(): Promise<string[]> {
    const unlinked = this.unlinked();
    const objects = await collectUnlinked(unlinked.objects);
    const links = await collectUnlinked(unlinked.links);
    return [...objects.map((id) => `${OBJECTS}/${id}`), ...links];
  }

  /** What can be left unlinked: objects no version links to, and temporary links (nothing ever links to one). */
  private unlinked(): { objects: Collectable; links: Collectable } {
    return {
      objects: { dir: this.objects, pattern: OBJECT_ID, linked: () => this.linkedObjects() },
      links: { dir: this.root, pattern: LINK_TMP, linked: async () => new Set() },
    };
  }
}

/**
 * Space a file or directory takes on disk (allocated blocks, so a sparse
 * rootfs counts what it really uses), walked without following links;
 * 0 when it is gone.
 */
export async function diskUsage(path: string): Promise<number> {
  let st;
  try {
    st = await fs.lstat(path);
  } catch {
    return 0;
  }
  let bytes = st.blocks * 512;
  if (st.isDirectory()) {
    const names = await fs.readdir(path).catch(() => [] as string[]);
    for (const name of names) bytes += await diskUsage(join(path, name));
  }
  return bytes;
}
