/**
 * The tally behind `metrics` and `metrics serve` (src/audit/tally.ts), pure:
 * where a verification's duration is counted in the histogram.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cumulativeBuckets, DURATION_BUCKETS, tallyOf } from '../src/audit/tally.js';

const took = (durationSeconds: number) => ({
  event: 'dev.import-image',
  outcome: 'ok',
  durationSeconds,
});

describe('the duration histogram', () => {
  it('a duration exactly on a bound counts in that bucket: le is inclusive, as in Prometheus', () => {
    const at = (le: string, t: ReturnType<typeof tallyOf>) =>
      cumulativeBuckets(t).find((b) => b.le === le)!.count;
    for (const bound of DURATION_BUCKETS) {
      const t = tallyOf([took(bound)]);
      assert.equal(at(String(bound), t), 1, `${bound} s counts under le="${bound}"`);
      const below = DURATION_BUCKETS[DURATION_BUCKETS.indexOf(bound) - 1];
      if (below !== undefined) assert.equal(at(String(below), t), 0, `not under le="${below}"`);
    }
    // Just past the last bound: only +Inf holds it.
    const last = DURATION_BUCKETS[DURATION_BUCKETS.length - 1]!;
    const over = tallyOf([took(last + 0.001)]);
    assert.equal(at(String(last), over), 0);
    assert.equal(at('+Inf', over), 1);
    assert.equal(over.durationCount, 1);
  });

  it('a negative or non-finite duration is not observed', () => {
    const t = tallyOf([took(-1), took(Number.NaN), took(Number.POSITIVE_INFINITY)]);
    assert.equal(t.durationCount, 0);
    assert.deepEqual(
      cumulativeBuckets(t).map((b) => b.count),
      new Array(DURATION_BUCKETS.length + 1).fill(0),
    );
  });
});
