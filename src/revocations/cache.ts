/**
 * The cached revocation list, `~/.cache/mvm/revocations/` (SPEC.md section 5):
 * read, signature-verified against the revocations workflow identity, parsed,
 * and aged by the JSON file's mtime, so the seed's manual workflow (copy the
 * pair in, `touch` the JSON) keeps working.
 *
 * mvmctl itself replaces the pair atomically: both files go into a fresh
 * generation directory `.revocations-<pid>-<random>/`, and `revocations`
 * becomes a symlink to it by one rename. A reader resolves the link once and
 * reads both files from the same generation, so it never sees a new list with
 * an old bundle.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { MvmError } from '../errors.js';
import { withLock } from '../io/lock.js';
import { ownershipProblem } from '../io/ownership.js';
import { revocationsPolicy } from '../core/release.js';
import {
  cacheAge,
  parseRevocationList,
  stalenessReason,
  type CacheAge,
  type RevocationList,
} from '../core/revocation.js';
import { readRegularFile } from '../io/files.js';
import { collectUnlinked } from '../io/garbage.js';
import { ensurePrivateDir } from '../io/secure-dir.js';
import { parseBundle } from '../trust/bundle.js';
import { rootGaps } from '../trust/root-coverage.js';
import type { LoadedTrustedRoot } from '../trust/trusted-root.js';
import { verifyArtifact } from '../trust/verify.js';

export const REVOCATIONS_JSON = 'revoked-versions.json';
export const REVOCATIONS_BUNDLE = 'revoked-versions.json.bundle';
export const MAX_LIST_BYTES = 4 * 1024 * 1024;

export type CachedRevocations =
  | { readonly state: 'absent'; readonly dir: string }
  | {
      readonly state: 'verified';
      readonly dir: string;
      readonly list: RevocationList;
      readonly signer: string;
      readonly signedAt: string | undefined;
      /** Time since the JSON's modification time; 0 when that time is in the future. */
      readonly ageMs: number;
      readonly age: CacheAge;
      /** Why the list is stale (too old, or modified in the future); undefined unless it is. */
      readonly staleReason: string | undefined;
      readonly modifiedAt: string;
    };

export interface VerifiedList {
  readonly list: RevocationList;
  readonly signer: string;
  /** When the transparency log recorded the list's signature (signed entry timestamp). */
  readonly signedAt: string | undefined;
}

/**
 * Verifies a pair against the revocations workflow identity, then parses it.
 * Throws a signature error (the list is never trusted) or a manifest error.
 */
export function verifyRevocationPair(
  json: Uint8Array,
  bundle: Uint8Array,
  repo: string,
  trustedRoot: LoadedTrustedRoot,
): VerifiedList {
  const parsed = parseBundle(bundle);
  let v;
  try {
    v = verifyArtifact(json, parsed, trustedRoot, revocationsPolicy(repo));
  } catch (e) {
    throw rootGapFailure(e, parsed, trustedRoot) ?? e;
  }
  return {
    list: parseRevocationList(json),
    signer: v.signer.kind === 'certificate' ? v.signer.identity : 'key',
    // Rekor v2 entries carry no signed entry timestamp: the verified TSA time is then the signing time.
    signedAt: v.signedTime?.time ?? undefined,
  };
}

/** Refusals that come from a trusted root lacking the list's log or CA: their cause and fix stand as they are. */
const rootGapErrors = new WeakSet<MvmError>();
export const isRootGap = (e: unknown): boolean => e instanceof MvmError && rootGapErrors.has(e);

/**
 * A list logged in a transparency log (or certified by a CA) the trusted root
 * does not list: Sigstore added a key after this root (a new log shard, a
 * rotated CA), and the fix is a newer root, not another copy of the list.
 */
function rootGapFailure(
  e: unknown,
  parsed: ReturnType<typeof parseBundle>,
  trustedRoot: LoadedTrustedRoot,
): MvmError | undefined {
  if (!(e instanceof MvmError) || e.code !== 'signature') return undefined;
  if (e.check !== 'tlog-entry' && e.check !== 'certificate-chain') return undefined;
  const gaps = rootGaps(parsed.bundle, trustedRoot.material);
  const what =
    e.check === 'tlog-entry' && gaps.unknownLogs.length > 0
      ? `the transparency log the list was logged in (log id ${gaps.unknownLogs[0]})`
      : e.check === 'certificate-chain' && gaps.unknownCa
        ? `the certificate authority that issued its signing certificate (issuer ${gaps.unknownCa})`
        : undefined;
  if (what === undefined) return undefined;
  const err = new MvmError('signature', e.message, {
    check: e.check,
    cause: `the trusted root in use (${trustedRoot.source}) does not know ${what}: the list was signed with a Sigstore key newer than this root, or in another Sigstore deployment`,
    fix:
      trustedRoot.origin === 'file'
        ? "Use the trusted root of the Sigstore deployment that signed the list: unset MVM_TRUSTED_ROOT and drop --trusted-root to use the embedded or installed root, or name that deployment's trusted_root.json."
        : 'Bring in a newer trusted root: run `mvmctl trust fetch --out DIR` on a connected host (a transfer set from `mvmctl dev fetch` carries one in trust/), carry DIR, and run `mvmctl trust import DIR` here.',
    underlying: e,
  });
  rootGapErrors.add(err);
  return err;
}

const reimportFix = (dir: string) =>
  `Re-import the pair: copy ${REVOCATIONS_JSON} and ${REVOCATIONS_BUNDLE} from the same revocations release into ${dir} (or use mvmctl revocations import), then retry.`;

/** The directory holding the current pair, resolved once; undefined when there is none. */
async function currentGeneration(dir: string): Promise<string | undefined> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fs.realpath(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new MvmError('store', `Cannot read the revocation cache ${dir}`, {
          cause: (e as Error).message,
          underlying: e,
        });
      }
      // Converting the seed's plain directory to a generation link leaves `dir`
      // absent for an instant: look once more before concluding there is no list.
      if (attempt > 0) return undefined;
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}

export async function readCachedRevocations(
  dir: string,
  repo: string,
  trustedRoot: LoadedTrustedRoot,
  now: Date,
  attempt = 0,
): Promise<CachedRevocations> {
  const gen = await currentGeneration(dir);
  if (gen === undefined) return { state: 'absent', dir };
  // Whoever can write here can delete or swap the list: only this user (or root) may.
  await refuseSharedDir(gen);
  await refuseSharedDir(dirname(gen));
  // A generation of ours is never without its files: if one is missing, the
  // generation was replaced while we read; read the new one.
  const replaced = () => GENERATION.test(basename(gen)) && attempt < 3;
  const jsonPath = join(gen, REVOCATIONS_JSON);
  let st;
  try {
    st = await fs.lstat(jsonPath);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      if (replaced()) return readCachedRevocations(dir, repo, trustedRoot, now, attempt + 1);
      return { state: 'absent', dir };
    }
    throw new MvmError('store', `Cannot read the revocation cache ${dir}`, {
      cause: (e as Error).message,
      underlying: e,
    });
  }
  const failed = (inner: MvmError) =>
    new MvmError(
      'signature',
      `Cosign verification failed for the cached revocation list: ${inner.message}`,
      {
        cause: `${inner.cause ? `${inner.cause}; ` : ''}a revocation list that does not verify is never trusted, and a recall cannot be ruled out`,
        fix: reimportFix(dir),
        ...(inner.check ? { check: inner.check } : {}),
        underlying: inner,
      },
    );
  let verified: VerifiedList;
  try {
    // O_NOFOLLOW: the operator copies real files in; a planted symlink is refused.
    const json = await readRegularFile(jsonPath, 'revocation list', MAX_LIST_BYTES, {
      noFollow: true,
    });
    const bundle = await readRegularFile(
      join(gen, REVOCATIONS_BUNDLE),
      'revocation list bundle',
      MAX_LIST_BYTES,
      {
        noFollow: true,
      },
    );
    verified = verifyRevocationPair(json, bundle, repo, trustedRoot);
  } catch (e) {
    if (
      e instanceof MvmError &&
      e.code === 'input' &&
      errnoOf(e.underlying) === 'ENOENT' &&
      replaced()
    ) {
      return readCachedRevocations(dir, repo, trustedRoot, now, attempt + 1);
    }
    if (e instanceof MvmError && isRootGap(e))
      throw new MvmError(
        'signature',
        `Cosign verification failed for the cached revocation list: ${e.message}`,
        {
          ...(e.cause !== undefined ? { cause: e.cause } : {}),
          fix: e.fix,
          ...(e.check ? { check: e.check } : {}),
          underlying: e,
        },
      );
    if (e instanceof MvmError && (e.code === 'input' || e.code === 'signature')) throw failed(e);
    if (e instanceof MvmError) {
      throw new MvmError(e.code, e.message, {
        ...(e.cause !== undefined ? { cause: e.cause } : {}),
        fix: reimportFix(dir),
        ...(e.check ? { check: e.check } : {}),
        underlying: e,
      });
    }
    throw e;
  }
  // Unclamped: a modification time in the future is judged (stale), not read as "0 h old".
  const sinceModified = now.getTime() - st.mtimeMs;
  return {
    state: 'verified',
    dir,
    ...verified,
    ageMs: Math.max(0, sinceModified),
    age: cacheAge(sinceModified),
    staleReason: stalenessReason(sinceModified),
    modifiedAt: st.mtime.toISOString(),
  };
}

const errnoOf = (e: unknown): string | undefined => (e as NodeJS.ErrnoException | undefined)?.code;

/**
 * Whoever can write a cache directory can delete or swap the list: the same
 * owner/mode rule as the store (ownershipProblem), except that a root-owned
 * cache (provisioned system-wide by an administrator) is accepted.
 */
async function refuseSharedDir(path: string): Promise<void> {
  let st;
  try {
    st = await fs.lstat(path);
  } catch (e) {
    if (errnoOf(e) === 'ENOENT') return;
    throw new MvmError('store', `Cannot inspect the revocation cache ${path}`, {
      cause: (e as Error).message,
      underlying: e,
    });
  }
  const problem = ownershipProblem(st, { uid: process.getuid?.(), rootMayOwn: true });
  if (problem) {
    throw new MvmError('store', `The revocation cache ${path} can be changed by other users`, {
      cause: `it is ${problem}: anyone who can write there can delete or swap the list`,
      fix: `Make ${path} belong to this user and not writable by group or others (chown, chmod go-w), or point MVM_CACHE_DIR at a cache of your own; then re-import the pair (mvmctl revocations import).`,
    });
  }
}

const GENERATION = /^\.revocations-([1-9][0-9]{0,9})-[0-9a-f]{16}$/;

/**
 * Atomically makes (json, bundle) the cached pair; its freshness is now.
 * `check` runs under the cache lock just before the swap, against the list
 * cached at that moment (the rollback check), so two concurrent writers cannot
 * slip an older list in between one's check and its install.
 */
export async function installRevocationPair(
  dir: string,
  json: Uint8Array,
  bundle: Uint8Array,
  check: () => Promise<void> = async () => undefined,
): Promise<void> {
  const parent = dirname(dir);
  await ensurePrivateDir(parent, parent);
  await withLock(join(parent, `.${basename(dir)}.lock`), 'the revocation cache', async () => {
    await check();
    await swapIn(dir, parent, json, bundle);
  });
}

async function swapIn(
  dir: string,
  parent: string,
  json: Uint8Array,
  bundle: Uint8Array,
): Promise<void> {
  const id = `.${basename(dir)}-${process.pid}-${randomBytes(8).toString('hex')}`;
  const gen = join(parent, id);
  const tmpLink = join(parent, `${id}.link`);
  try {
    await fs.mkdir(gen, { mode: 0o700 });
    await fs.writeFile(join(gen, REVOCATIONS_BUNDLE), bundle, { mode: 0o600, flag: 'wx' });
    await fs.writeFile(join(gen, REVOCATIONS_JSON), json, { mode: 0o600, flag: 'wx' });
    await fs.symlink(id, tmpLink);
    const st = await fs.lstat(dir).catch(() => undefined);
    if (st?.isDirectory()) {
      // The seed's plain directory: keep it aside (collected later), then link.
      await fs.rename(
        dir,
        join(parent, `.${basename(dir)}-${process.pid}-${randomBytes(8).toString('hex')}`),
      );
    }
    const previous = await fs.readlink(dir).catch(() => undefined);
    await fs.rename(tmpLink, dir);
    // Readers may still be in the generation just replaced: its grace period starts now.
    if (previous && GENERATION.test(previous)) {
      const t = new Date();
      await fs.utimes(join(parent, previous), t, t).catch(() => undefined);
    }
  } catch (e) {
    await fs.rm(tmpLink, { force: true });
    await fs.rm(gen, { recursive: true, force: true });
    throw new MvmError('store', `Cannot install the revocation list into ${dir}`, {
      cause: (e as Error).message,
      underlying: e,
    });
  }
  await collectGenerations(parent, dir, id);
}

/**
 * Removes generations nothing links to, when their writer is gone: the store's
 * rule (collectUnlinked). Runs under the cache lock, right after the swap, so
 * the link names `current`; a replaced generation is kept a minute (its mtime
 * was set at replacement), since a reader may have resolved it just before.
 */
async function collectGenerations(parent: string, link: string, current: string): Promise<void> {
  await collectUnlinked({
    dir: parent,
    pattern: GENERATION,
    graceMs: 60_000,
    linked: async () => new Set([current, await fs.readlink(link)]),
  });
}

/** What `status` and `revocations status` report about the cache: one shape for both. */
export interface RevocationCacheSummary {
  readonly state: 'verified' | 'absent' | 'invalid';
  readonly path: string;
  readonly present: boolean;
  readonly verified: boolean;
  readonly signer?: string;
  readonly entries?: number;
  readonly ageHours?: number;
  readonly freshness?: CacheAge;
  readonly stale?: boolean;
  /** Why the list is stale, when it is. */
  readonly staleReason?: string;
  readonly modifiedAt?: string;
  readonly error?: string;
}

/** Reads the cache for a report: a cache that does not verify is reported, not thrown. */
export async function summarizeRevocationCache(
  dir: string,
  repo: string,
  trustedRoot: LoadedTrustedRoot,
  now: Date,
): Promise<{ summary: RevocationCacheSummary; cached: CachedRevocations | undefined }> {
  let cached: CachedRevocations;
  try {
    cached = await readCachedRevocations(dir, repo, trustedRoot, now);
  } catch (e) {
    if (!(e instanceof MvmError)) throw e;
    return {
      summary: { state: 'invalid', path: dir, present: true, verified: false, error: e.message },
      cached: undefined,
    };
  }
  if (cached.state === 'absent') {
    return { summary: { state: 'absent', path: dir, present: false, verified: false }, cached };
  }
  return {
    cached,
    summary: {
      state: 'verified',
      path: dir,
      present: true,
      verified: true,
      signer: cached.signer,
      entries: cached.list.revocations.length,
      ageHours: Math.round(cached.ageMs / 360_000) / 10,
      freshness: cached.age,
      stale: cached.age === 'stale',
      ...(cached.staleReason ? { staleReason: cached.staleReason } : {}),
      modifiedAt: cached.modifiedAt,
    },
  };
}
