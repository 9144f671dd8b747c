/**
 * The recalls in force on this host (SPEC.md sections 5 and 8): the verified
 * cached list plus the recalls verified here before, the seed's staleness
 * policy, and the refusal of a recalled release. One definition, used by
 * `dev import-image` (at step 6 and again just before the publish) and by
 * `dev up` (before every boot), so the two cannot drift apart.
 */
import type { Config } from '../config.js';
import { recallInForce, type RecallKey, type Revocation } from '../core/revocation.js';
import { MvmError } from '../errors.js';
import type { CachedRevocations } from './cache.js';
import { forgottenRecalls, readRecallMemory, rememberList } from './memory.js';

export interface RecallsInForce {
  /** The verified cached list's recalls; undefined when no list is cached. */
  readonly list: readonly Revocation[] | undefined;
  /** Recalls verified on this host before that the cached list no longer holds. */
  readonly forgotten: readonly Revocation[];
}

export const hours = (ms: number): number => Math.round((ms / 3600_000) * 10) / 10;

/**
 * The cached list's recalls plus those verified on this host before (which
 * stay enforced whatever happened to the cache since); a verified list is
 * remembered in turn.
 */
export async function recallsInForce(
  cached: CachedRevocations,
  ctx: { readonly config: Config; readonly warn: (message: string) => void },
  opts: { warnForgotten: boolean },
): Promise<RecallsInForce> {
  const memory = await readRecallMemory(ctx.config);
  const list = cached.state === 'verified' ? cached.list.revocations : undefined;
  if (cached.state === 'verified')
    await rememberList(ctx.config, memory, cached.list.revocations, cached.signedAt);
  const forgotten = forgottenRecalls(memory, list);
  if (opts.warnForgotten && forgotten.length > 0) {
    ctx.warn(
      `REVOCATION LIST ROLLED BACK OR REMOVED: ${forgotten.length} recall(s) verified on this host before are missing from ${cached.dir}; they are still enforced. Carry in the current pair.`,
    );
  }
  return { list, forgotten };
}

/**
 * Seed policy: a list older than 24 h is tolerated for 7 days, with a
 * warning; a stale list is still enforced, loudly; no list, or a stale
 * one, is fatal when fresh revocations are required (by the command's flag,
 * `requireFreshRevocations`, or by MVM_REQUIRE_FRESH_REVOCATIONS=1): code
 * stale-revocations (exit 18): not a network failure, even where a failed refresh led to it.
 */
export function checkFreshness(
  cached: CachedRevocations,
  ctx: {
    readonly config: Config;
    readonly requireFreshRevocations: boolean;
    readonly warn: (message: string) => void;
  },
): void {
  const byFlag = ctx.requireFreshRevocations;
  const required = byFlag || ctx.config.requireFreshRevocations;
  const fix = `Import a current pair with mvmctl revocations import --list revoked-versions.json --bundle revoked-versions.json.bundle (or copy it into ${cached.dir}), then retry.`;
  if (cached.state === 'absent') {
    if (required) {
      throw new MvmError(
        'stale-revocations',
        `No revocation list is cached in ${cached.dir} and fresh revocations are required (${byFlag ? '--require-fresh-revocations' : 'MVM_REQUIRE_FRESH_REVOCATIONS=1'})`,
        { cause: 'with no list, a recall of this release cannot be ruled out', fix },
      );
    }
    return;
  }
  if (cached.age === 'fresh') return;
  // Seed policy: up to 7 days is tolerated, even where fresh lists are required; said, not fatal.
  if (cached.age === 'tolerated') {
    ctx.warn(
      `The cached revocation list is ${hours(cached.ageMs)} hours old (refreshed after 24 h; tolerated up to 7 days). Recalls issued since may be missing: run mvmctl revocations refresh, or carry in a fresh pair.`,
    );
    return;
  }
  // Too old, or modified in the future (cp -p, rsync -a, a clock that was ahead): either way not fresh.
  const why = cached.staleReason ?? `it is ${hours(cached.ageMs)} hours old (more than 7 days)`;
  if (required) {
    throw new MvmError(
      'stale-revocations',
      `The cached revocation list is stale (${why}) and ${byFlag ? '--require-fresh-revocations is set' : 'fresh revocations are required (MVM_REQUIRE_FRESH_REVOCATIONS=1)'}`,
      { cause: 'no fresh revocation list is available on this host', fix },
    );
  }
  ctx.warn(
    `STALE REVOCATION LIST: ${why}. It is still enforced, but recalls issued since may be missing. Carry in a fresh revoked-versions.json + .bundle pair.`,
  );
}

/** A release recalled by the list or by a remembered recall is refused, in the seed's wording (exit 13). */
export function refuseIfRecalled(image: RecallKey, recalls: RecallsInForce): void {
  const recall = recallInForce(image, { listed: recalls.list, remembered: recalls.forgotten });
  if (recall) {
    throw new MvmError(
      'revoked',
      `Imported manifest is on the project's revocation list: ${image.version} ${image.variant} ${image.arch} was recalled: ${recall.reason}`,
      { cause: `The release was recalled (${recall.revokedAt})` },
    );
  }
}
