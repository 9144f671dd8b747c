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

/** A manifest is recalled when version, variant and arch all match an entry. */
export function findRecall(
  list: Pick<RevocationList, 'revocations'>,
  m: { readonly version: string; readonly variant: string; readonly arch: string },
): Revocation | undefined {
  return list.revocations.find(
    (r) => r.version === m.version && r.variant === m.variant && r.arch === m.arch,
  );
}

const entryKey = (r: Revocation): string => `${r.version}\u0000${r.variant}\u0000${r.arch}`;

/** Entries of the cached list that the incoming list drops: non-empty means a replayed older list. */
export function droppedEntries(cached: RevocationList, incoming: RevocationList): Revocation[] {
  const kept = new Set(incoming.revocations.map(entryKey));
  return cached.revocations.filter((r) => !kept.has(entryKey(r)));
}

export type CacheAge = 'fresh' | 'tolerated' | 'stale';

/** Seed cache policy: fresh for 24 h; up to 7 days tolerated offline; stale beyond (still enforced, loudly). */
export function cacheAge(ageMs: number): CacheAge {
  if (ageMs < REVOCATION_CACHE_TTL_MS) return 'fresh';
  if (ageMs <= REVOCATION_MAX_STALENESS_MS) return 'tolerated';
  return 'stale';
}
