/**
 * The pure revocation policy (src/core/revocation.ts): the cache-age
 * boundaries, including a freshness time in the future, and the recall key.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  cacheAge,
  droppedEntries,
  recallInForce,
  recallKey,
  REVOCATION_CACHE_TTL_MS,
  REVOCATION_CLOCK_SKEW_MS,
  REVOCATION_MAX_STALENESS_MS,
  stalenessReason,
  type Revocation,
} from '../src/core/revocation.js';

const HOUR = 3600_000;

describe('revocation cache age', () => {
  it('follows the seed: fresh under 24 h, tolerated to 7 days, stale beyond', () => {
    assert.equal(REVOCATION_CACHE_TTL_MS, 24 * HOUR);
    assert.equal(REVOCATION_MAX_STALENESS_MS, 7 * 24 * HOUR);
    assert.equal(cacheAge(0), 'fresh');
    assert.equal(cacheAge(REVOCATION_CACHE_TTL_MS - 1), 'fresh');
    assert.equal(cacheAge(REVOCATION_CACHE_TTL_MS), 'tolerated');
    assert.equal(cacheAge(REVOCATION_MAX_STALENESS_MS), 'tolerated');
    assert.equal(cacheAge(REVOCATION_MAX_STALENESS_MS + 1), 'stale');
  });

  it('a freshness time in the future beyond the 5-minute skew allowance is stale', () => {
    assert.equal(REVOCATION_CLOCK_SKEW_MS, 5 * 60_000);
    assert.equal(cacheAge(-REVOCATION_CLOCK_SKEW_MS), 'fresh');
    assert.equal(cacheAge(-REVOCATION_CLOCK_SKEW_MS - 1), 'stale');
    assert.equal(cacheAge(-365 * 24 * HOUR), 'stale');
  });

  it('says why a list is stale, and nothing when it is not', () => {
    assert.equal(stalenessReason(0), undefined);
    assert.equal(stalenessReason(-60_000), undefined);
    assert.equal(stalenessReason(3 * 24 * HOUR), undefined);
    assert.equal(stalenessReason(200 * HOUR), 'it is 200 hours old (more than 7 days)');
    assert.equal(
      stalenessReason(-48 * HOUR),
      "its modification time is in the future (48 h ahead of this host's clock): copied with cp -p/rsync -a/tar or a clock that was ahead; run mvmctl revocations import or touch it",
    );
  });
});

describe('the recall key (version, variant, arch)', () => {
  const r = (version: string, variant: string, arch: string): Revocation => ({
    version,
    variant,
    arch,
    reason: `recall of ${version} ${variant} ${arch}`,
    revokedAt: '2026-11-01T00:00:00Z',
  });
  const recall = r('0.14.0', 'dev', 'x86_64');

  it('differs when any one part differs', () => {
    const key = recallKey(recall);
    assert.equal(recallKey({ ...recall, reason: 'another reason' } as Revocation), key);
    for (const other of [
      r('0.14.1', 'dev', 'x86_64'),
      r('0.14.0', 'builder', 'x86_64'),
      r('0.14.0', 'dev', 'aarch64'),
    ])
      assert.notEqual(recallKey(other), key);
    // Parts cannot run into each other.
    assert.notEqual(recallKey(r('0.1.0', 'dev', 'x86_64')), recallKey(r('0.1.0d', 'ev', 'x86_64')));
  });

  it('moving an entry to another variant or arch drops it (a rollback)', () => {
    const cached = { revocations: [recall] };
    assert.deepEqual(droppedEntries(cached, { revocations: [r('0.14.0', 'builder', 'x86_64')] }), [
      recall,
    ]);
    assert.deepEqual(droppedEntries(cached, { revocations: [r('0.14.0', 'dev', 'aarch64')] }), [
      recall,
    ]);
    assert.deepEqual(droppedEntries(cached, { revocations: [{ ...recall, reason: 'x' }] }), []);
  });

  it('an image is recalled by the cached list or by a recall remembered on this host', () => {
    const image = { version: '0.14.0', variant: 'dev', arch: 'x86_64' };
    assert.equal(recallInForce(image, { listed: [recall], remembered: [] }), recall);
    assert.equal(recallInForce(image, { listed: undefined, remembered: [recall] }), recall);
    assert.equal(recallInForce(image, { listed: [], remembered: [recall] }), recall);
    assert.equal(
      recallInForce({ ...image, variant: 'builder' }, { listed: [recall], remembered: [recall] }),
      undefined,
    );
    assert.equal(recallInForce(image, { listed: undefined, remembered: [] }), undefined);
  });
});
