/**
 * The trust installed on this host by `mvmctl trust import`: the newest
 * TUF-verified Sigstore trusted root, with the metadata it was verified by.
 *
 * Layout, in the data directory:
 *   trust/current.json              names the set in force (replaced whole, fsynced)
 *   trust/r{root}-t{timestamp}-{sha}/  root.json, timestamp.json, snapshot.json,
 *                                   targets.json, trusted_root.json, record.json
 * A new set is written and fsynced under a hidden name, renamed into place,
 * and only then named by current.json: a crash at any instant leaves the old
 * trust in force or the new one, never a mix. The set before stays on disk.
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { MvmError } from '../errors.js';
import { parseJsonObject } from '../core/json.js';
import {
  MAX_TUF_METADATA_BYTES,
  type RoleExpiries,
  type TrustFreshness,
} from '../core/trust-policy.js';
import { readRegularFile, replaceFile, MAX_TRUSTED_ROOT_BYTES } from '../io/files.js';
import { ensurePrivateDir } from '../io/secure-dir.js';
import { withLock } from '../io/lock.js';
import { embeddedTufRootBytes } from './embedded.js';
import { readTrustFile } from './trust-file.js';
import type { TrustAnchor, VerifiedTrust } from './tuf-bundle.js';

export const trustDir = (dataDir: string): string => join(dataDir, 'trust');
const CURRENT = 'current.json';
const METADATA = ['root.json', 'timestamp.json', 'snapshot.json', 'targets.json'] as const;
/** Sets kept on disk: the one in force and the one before it. */
const KEEP_SETS = 2;

/**
 * The TUF root a host without installed trust starts from: MVM_TUF_ROOT (a
 * private Sigstore deployment's TUF repository), else the embedded one. Held
 * to the trusted root's owner and mode rule: it decides every rotation after it.
 */
export async function firstTufRoot(config: Pick<TrustPaths, 'tufRootPath'>): Promise<Buffer> {
  if (config.tufRootPath === undefined) return embeddedTufRootBytes();
  return readTrustFile(config.tufRootPath, 'TUF root', MAX_TUF_METADATA_BYTES, 'trusted-root');
}

/**
 * Where the trust in force comes from: the fields of the configuration these
 * functions read (trust/ sits below config.ts, so it takes them, not Config).
 */
export interface TrustPaths {
  readonly dataDir: string;
  readonly trustedRootPath: string | undefined;
  readonly tufRootPath: string | undefined;
}

/** What was recorded when a set was verified and installed. */
export interface TrustRecord {
  readonly schema: 1;
  readonly versions: VerifiedTrust['versions'];
  readonly expires: RoleExpiries;
  readonly trustedRootSha256: string;
  readonly verifiedAt: string;
  readonly importedFrom: string;
  readonly anchorRootVersion: number;
  readonly rotations: readonly number[];
  readonly freshnessAtImport: TrustFreshness['state'];
}

export interface InstalledTrust {
  readonly dir: string;
  readonly record: TrustRecord;
}

const broken = (what: string, cause: string, underlying?: unknown): MvmError =>
  new MvmError('trusted-root', `The installed trust is not usable: ${what}`, {
    cause: `${cause}; mvmctl does not fall back to an older root on its own`,
    fix: 'Import the trust bundle again (mvmctl trust import DIR), or remove the trust/ directory of the data directory to return to the root embedded in mvmctl.',
    ...(underlying !== undefined ? { underlying } : {}),
  });

/** The set in force, or undefined when nothing was ever imported. A damaged installation is an error. */
export async function readInstalledTrust(dataDir: string): Promise<InstalledTrust | undefined> {
  const base = trustDir(dataDir);
  let pointer: Buffer;
  try {
    pointer = await readTrustFile(
      join(base, CURRENT),
      'installed trust pointer',
      4096,
      'trusted-root',
    );
  } catch (e) {
    if (await missing(join(base, CURRENT))) return undefined;
    throw e;
  }
  const parsed = parseJsonObject(pointer);
  const name = parsed.ok ? parsed.value['set'] : undefined;
  if (typeof name !== 'string' || !/^r[0-9]+-t[0-9]+-[0-9a-f]{16}$/.test(name))
    throw broken(`${join(base, CURRENT)} names no set`, 'the file is damaged');
  const dir = join(base, name);
  const raw = await readTrustFile(
    join(dir, 'record.json'),
    'installed trust record',
    65536,
    'trusted-root',
  ).catch((e: unknown) => {
    throw broken(`${dir}/record.json cannot be read`, (e as Error).message, e);
  });
  const rec = parseJsonObject(raw);
  if (!rec.ok || rec.value['schema'] !== 1 || typeof rec.value['trustedRootSha256'] !== 'string')
    throw broken(`${dir}/record.json is damaged`, 'it is not a record this mvmctl wrote');
  return { dir, record: rec.value as unknown as TrustRecord };
}

async function missing(path: string): Promise<boolean> {
  try {
    await fs.lstat(path);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOENT';
  }
}

/**
 * The installed trusted_root.json, checked against the SHA-256 recorded when
 * it was verified (a file changed at rest is refused, as an image is).
 */
export async function installedTrustedRootBytes(t: InstalledTrust): Promise<Buffer> {
  const path = join(t.dir, 'trusted_root.json');
  const bytes = await readTrustFile(
    path,
    'installed trusted root',
    MAX_TRUSTED_ROOT_BYTES,
    'trusted-root',
  );
  const sha = createHash('sha256').update(bytes).digest('hex');
  if (sha !== t.record.trustedRootSha256)
    throw broken(
      `${path} changed after it was verified`,
      `its SHA-256 is ${sha}, the verified one ${t.record.trustedRootSha256}`,
    );
  return bytes;
}

/** The installed metadata as the anchor of the next import (the newest root, and rollback floors). */
export async function installedAnchor(t: InstalledTrust): Promise<TrustAnchor> {
  const [root, timestamp, snapshot, targets] = await Promise.all(
    METADATA.map((n) =>
      readRegularFile(join(t.dir, n), `installed ${n}`, MAX_TUF_METADATA_BYTES, { noFollow: true }),
    ),
  );
  return { root: root!, timestamp: timestamp!, snapshot: snapshot!, targets: targets! };
}

/**
 * Installs a verified set and puts it in force, under the trust lock (two
 * imports at once install one after the other; the second one's rollback
 * check then runs against the first: the caller verifies inside `verify`).
 */
export async function installTrust(
  dataDir: string,
  verify: (anchorFrom: InstalledTrust | undefined) => Promise<VerifiedTrust>,
  importedFrom: string,
  now: () => Date,
): Promise<{ installed: InstalledTrust; verified: VerifiedTrust; unchanged: boolean }> {
  const base = trustDir(dataDir);
  await ensurePrivateDir(base, dataDir);
  return withLock(join(base, 'lock'), 'the installed trust', async () => {
    const before = await readInstalledTrust(dataDir);
    const v = await verify(before);
    const name = `r${v.versions.root}-t${v.versions.timestamp}-${v.trustedRootSha256.slice(0, 16)}`;
    const dir = join(base, name);
    if (before !== undefined && before.dir === dir)
      return { installed: before, verified: v, unchanged: true };
    const record: TrustRecord = {
      schema: 1,
      versions: v.versions,
      expires: v.expires,
      trustedRootSha256: v.trustedRootSha256,
      verifiedAt: now().toISOString(),
      importedFrom,
      anchorRootVersion: v.anchorRootVersion,
      rotations: v.rotations,
      freshnessAtImport: v.freshness.state,
    };
    const tmp = join(base, `.${name}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
    try {
      await fs.mkdir(tmp, { mode: 0o700 });
      const files: [string, Uint8Array | string][] = [
        ['root.json', v.root],
        ['timestamp.json', v.timestamp],
        ['snapshot.json', v.snapshot],
        ['targets.json', v.targets],
        ['trusted_root.json', v.trustedRoot],
        ['record.json', JSON.stringify(record, null, 2) + '\n'],
      ];
      for (const [n, data] of files) await writeSynced(join(tmp, n), data);
      await syncDir(tmp);
      await fs.rm(dir, { recursive: true, force: true });
      await fs.rename(tmp, dir);
    } catch (e) {
      await fs.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
      throw new MvmError('store', `Cannot install the trust set in ${base}`, {
        cause: `${(e as Error).message}; the trust in force is unchanged`,
        underlying: e,
      });
    }
    await replaceFile(join(base, CURRENT), JSON.stringify({ set: name }) + '\n', {
      mode: 0o600,
      sync: true,
    });
    await pruneSets(base, [name, ...(before ? [before.dir.slice(base.length + 1)] : [])]);
    return { installed: { dir, record }, verified: v, unchanged: false };
  });
}

async function writeSynced(path: string, data: Uint8Array | string): Promise<void> {
  const fh = await fs.open(
    path,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o600,
  );
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function syncDir(path: string): Promise<void> {
  const d = await fs.open(path, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

/** Removes the sets other than the newest KEEP_SETS named in `keep`, and leftovers of interrupted installs. */
async function pruneSets(base: string, keep: string[]): Promise<void> {
  const kept = new Set(keep.slice(0, KEEP_SETS));
  for (const n of await fs.readdir(base)) {
    const set = /^r[0-9]+-t[0-9]+-[0-9a-f]{16}$/.test(n);
    const leftover = /^\.r[0-9]+-t[0-9]+-[0-9a-f]{16}\.[0-9]+\.[0-9a-f]+\.tmp$/.test(n);
    if ((set && !kept.has(n)) || leftover)
      await fs.rm(join(base, n), { recursive: true, force: true }).catch(() => undefined);
  }
}
