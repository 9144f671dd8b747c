/**
 * The signed revocation list (SPEC.md section 5): schema, recall matching,
 * append-only (rollback) check and the seed's cache-age policy. Pure.
 */
import { MvmError } from '../errors.js';
import { parseJsonObject, schemaVersionOf } from './json.js';
import { isSemver } from './manifest.js';

export const SUPPORTED_REVOCATION_SCHEMA = 1;
/** Seed: "Cache valid for 24 hours before refresh." */
export const REVOCATION_CACHE_TTL_MS = 24 * 3600_000;
/** Seed: "7 days of cached staleness tolerated when the network is unavailable." */
export const REVOCATION_MAX_STALENESS_MS = 7 * 24 * 3600_000;
/**
 * How far ahead of this host's clock a cached list's modification time may be
 * and still count as "just written" (clocks of hosts that copy files between
 * them disagree a little).
 */
export const REVOCATION_CLOCK_SKEW_MS = 5 * 60_000;

export interface Revocation {
  readonly version: string;
  readonly variant: string;
  readonly arch: string;
  readonly reason: string;
  readonly revokedAt: string;
}

export interface RevocationList {
  readonly schemaVersion: number;
  readonly revocations: readonly Revocation[];
}

const invalid = (cause: string): MvmError =>
  new MvmError('manifest', `The revocation list is not valid: ${cause}`, {
    cause,
    fix: 'Re-fetch revoked-versions.json and its .bundle together from the revocations release.',
  });

export function parseRevocationList(bytes: Uint8Array): RevocationList {
  const parsed = parseJsonObject(bytes);
  if (!parsed.ok) throw invalid(`it is ${parsed.reason}`);
  const o = parsed.value;
  const schema = schemaVersionOf(o);
  if (schema === undefined) throw invalid('schema_version is missing or not a positive integer');
  // A list this mvmctl cannot read might hold a recall it would miss: fail closed.
  if (schema > SUPPORTED_REVOCATION_SCHEMA) {
    throw invalid(
      `schema_version ${schema} is newer than this mvmctl reads (${SUPPORTED_REVOCATION_SCHEMA}); upgrade mvmctl`,
    );
  }
  const raw = o['revocations'];
  if (!Array.isArray(raw)) throw invalid('revocations is missing or not an array');
  const revocations = raw.map((r, i): Revocation => {
    if (r === null || typeof r !== 'object' || Array.isArray(r))
      throw invalid(`revocations[${i}] is not an object`);
    const e = r as Record<string, unknown>;
    const field = (k: string): string => {
      const v = e[k];
      if (typeof v !== 'string' || v === '' || v.length > 4096)
        throw invalid(`revocations[${i}].${k} is missing or not a string`);
      return v;
    };
    const version = field('version');
    if (!isSemver(version)) throw invalid(`revocations[${i}].version is not strict semver`);
    const revokedAt = field('revoked_at');
    if (Number.isNaN(Date.parse(revokedAt)))
      throw invalid(`revocations[${i}].revoked_at is not a time`);
    return {
      version,
      variant: field('variant'),
      arch: field('arch'),
      reason: field('reason'),
      revokedAt,
    };
  });
  return { schemaVersion: schema, revocations };
}

/** What a recall names: a release is recalled per version, variant and arch. */
export interface RecallKey {
  readonly version: string;
  readonly variant: string;
  readonly arch: string;
}

/**
 * The identity of a recall, the one definition used for matching, rollback
 * checks and the host's recall memory: two entries are the same recall exactly
 * when version, variant and arch are all equal.
 */
export const recallKey = (r: RecallKey): string => `${r.version}\u0000${r.variant}\u0000${r.arch}`;

/** A manifest is recalled when version, variant and arch all match an entry. */
export function findRecall(
  list: Pick<RevocationList, 'revocations'>,
  m: RecallKey,
): Revocation | undefined {
  const wanted = recallKey(m);
  return list.revocations.find((r) => recallKey(r) === wanted);
}

/**
 * Whether an image is recalled by the recalls in force on this host: the
 * verified cached list (undefined when there is none) and the recalls this host
 * verified before (enforced whatever happened to the cache since).
 */
export function recallInForce(
  image: RecallKey,
  inForce: {
    readonly listed: readonly Revocation[] | undefined;
    readonly remembered: readonly Revocation[];
  },
): Revocation | undefined {
  return findRecall({ revocations: [...(inForce.listed ?? []), ...inForce.remembered] }, image);
}

/** Entries of the cached list that the incoming list drops: non-empty means a replayed older list. */
export function droppedEntries(
  cached: Pick<RevocationList, 'revocations'>,
  incoming: Pick<RevocationList, 'revocations'>,
): Revocation[] {
  const kept = new Set(incoming.revocations.map(recallKey));
  return cached.revocations.filter((r) => !kept.has(recallKey(r)));
}

export type CacheAge = 'fresh' | 'tolerated' | 'stale';

/**
 * Seed cache policy: fresh for 24 h; up to 7 days tolerated offline; stale
 * beyond (still enforced, loudly). `ageMs` is now minus the list's freshness
 * time: a time in the future beyond the clock-skew allowance says nothing about
 * when the list was fetched (cp -p, rsync -a and tar carry the source's time;
 * a clock that was ahead writes one), and would otherwise read "fresh" forever
 * and hide every recall published since. It is stale.
 */
export function cacheAge(ageMs: number): CacheAge {
  if (ageMs < -REVOCATION_CLOCK_SKEW_MS) return 'stale';
  if (ageMs < REVOCATION_CACHE_TTL_MS) return 'fresh';
  if (ageMs <= REVOCATION_MAX_STALENESS_MS) return 'tolerated';
  return 'stale';
}

const hours = (ms: number): number => Math.round((ms / 3600_000) * 10) / 10;

/** Why a cache of this age is stale, in the operator's terms; undefined when it is not stale. */
export function stalenessReason(ageMs: number): string | undefined {
  if (cacheAge(ageMs) !== 'stale') return undefined;
  if (ageMs < 0) {
    return `its modification time is in the future (${hours(-ageMs)} h ahead of this host's clock): copied with cp -p/rsync -a/tar or a clock that was ahead; run mvmctl revocations import or touch it`;
  }
  return `it is ${hours(ageMs)} hours old (more than 7 days)`;
}
