/**
 * The counting of SPEC.md section 6, as a pure fold over audit records: what
 * each record adds to the counters, the duration histogram and the time of
 * the last successful verification. One definition, used by every reader
 * (`metrics`, `metrics serve`, `status`) and by the rotation checkpoint that
 * carries the totals of rotated files forward, so none of them can count
 * differently.
 */
import type { CounterName } from '../errors.js';
import { ERROR_TABLE } from '../errors.js';

/** What an import's audit record says happened (older logs wrote only 'ok' and 'failed'). */
export type Outcome = 'ok' | 'failed' | 'bypassed' | 'unchanged';

/** The record fields the counting reads; anything else in a record is ignored here. */
export interface CountedRecord {
  readonly ts?: unknown;
  readonly event?: unknown;
  readonly outcome?: unknown;
  readonly code?: unknown;
  readonly expired?: unknown;
  readonly bypassed?: unknown;
  readonly durationSeconds?: unknown;
}

/** The counters: SPEC.md's names, plus this issue's `unchanged`. */
export type MetricCounter = CounterName | 'dev_image_verify_unchanged_total';

export const COUNTER_NAMES: readonly MetricCounter[] = [
  'dev_image_verify_ok_total',
  'dev_image_verify_unchanged_total',
  'dev_image_verify_sig_invalid_total',
  'dev_image_verify_digest_mismatch_total',
  'dev_image_verify_version_skew_total',
  'dev_image_verify_arch_mismatch_total',
  'dev_image_verify_revoked_total',
  'dev_image_verify_expired_total',
  'dev_image_verify_network_total',
  'dev_image_verify_bypassed_total',
  'dev_image_verify_manifest_invalid_total',
];

/** Histogram buckets for a verification's wall time, in seconds (ascending). */
export const DURATION_BUCKETS: readonly number[] = [
  0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
];

export interface Tally {
  readonly counters: Record<MetricCounter, number>;
  /** Observations per bucket, not cumulative: one slot per DURATION_BUCKETS entry, then one above the last. */
  readonly buckets: number[];
  durationSum: number;
  durationCount: number;
  /** Time (ms since the epoch) of the last import that verified: installed, or found already installed. */
  lastVerifiedMs: number | undefined;
}

export function emptyTally(): Tally {
  return {
    counters: Object.fromEntries(COUNTER_NAMES.map((n) => [n, 0])) as Record<MetricCounter, number>,
    buckets: new Array<number>(DURATION_BUCKETS.length + 1).fill(0),
    durationSum: 0,
    durationCount: 0,
    lastVerifiedMs: undefined,
  };
}

export function copyTally(t: Tally): Tally {
  return { ...t, counters: { ...t.counters }, buckets: [...t.buckets] };
}

const bypassesOf = (r: CountedRecord): number =>
  Array.isArray(r.bypassed) ? r.bypassed.length : 0;

/**
 * The outcome a record stands for. Logs written before outcomes were split
 * recorded an install with an escape hatch as 'ok' with `bypassed` set: that
 * was never a verification that passed, and is read as 'bypassed'.
 */
export function outcomeOf(r: CountedRecord): Outcome {
  const o = r.outcome;
  if (o === 'ok' && r.event === 'dev.import-image' && bypassesOf(r) > 0) return 'bypassed';
  return o === 'ok' || o === 'bypassed' || o === 'unchanged' ? o : 'failed';
}

/** Adds one record to the tally (in place). */
export function countRecord(t: Tally, r: CountedRecord): void {
  const outcome = outcomeOf(r);
  const c = t.counters;
  // Only image imports are verifications that pass; a refresh or list import counts only its failures.
  if (r.event === 'dev.import-image') {
    if (outcome === 'ok') c.dev_image_verify_ok_total++;
    if (outcome === 'unchanged') c.dev_image_verify_unchanged_total++;
    if (outcome === 'ok' || outcome === 'unchanged') {
      const ms = typeof r.ts === 'string' ? Date.parse(r.ts) : NaN;
      if (Number.isFinite(ms)) t.lastVerifiedMs = ms;
    }
  }
  if (outcome === 'failed' && typeof r.code === 'string') {
    const counter = (ERROR_TABLE as Record<string, { counter?: CounterName }>)[r.code]?.counter;
    if (counter) c[counter]++;
  }
  if (r.expired === true) c.dev_image_verify_expired_total++;
  // Every use of an escape hatch, whatever the import's outcome (SPEC.md section 7: "counted").
  c.dev_image_verify_bypassed_total += Math.max(bypassesOf(r), outcome === 'bypassed' ? 1 : 0);
  const d = r.durationSeconds;
  if (typeof d === 'number' && Number.isFinite(d) && d >= 0) {
    let i = DURATION_BUCKETS.findIndex((le) => d <= le);
    if (i < 0) i = DURATION_BUCKETS.length;
    t.buckets[i]!++;
    t.durationSum += d;
    t.durationCount++;
  }
}

/** Pure: the tally a list of records implies. */
export function tallyOf(records: Iterable<CountedRecord>): Tally {
  const t = emptyTally();
  for (const r of records) countRecord(t, r);
  return t;
}

/** Cumulative bucket counts, `le` ascending, "+Inf" last: the histogram as Prometheus reads it. */
export function cumulativeBuckets(t: Tally): { le: string; count: number }[] {
  let sum = 0;
  const out = DURATION_BUCKETS.map((le, i) => ({ le: String(le), count: (sum += t.buckets[i]!) }));
  out.push({ le: '+Inf', count: t.durationCount });
  return out;
}

/** How a tally is written into a rotation checkpoint (self-describing: the bucket bounds travel with the counts). */
export interface TallyJson {
  readonly counters: Record<string, number>;
  readonly duration: {
    readonly buckets: readonly (readonly [string, number])[];
    readonly sum: number;
    readonly count: number;
  };
  readonly lastVerifiedAt?: string;
}

export function tallyToJson(t: Tally): TallyJson {
  return {
    counters: { ...t.counters },
    duration: {
      buckets: cumulativeBuckets(t).map((b) => [b.le, b.count] as const),
      sum: t.durationSum,
      count: t.durationCount,
    },
    ...(t.lastVerifiedMs === undefined
      ? {}
      : { lastVerifiedAt: new Date(t.lastVerifiedMs).toISOString() }),
  };
}

/** Reads a checkpoint's totals; undefined when they are not a tally (the chain check names that). */
export function tallyFromJson(value: unknown): Tally | undefined {
  const v = value as Partial<TallyJson> | null | undefined;
  if (!v || typeof v !== 'object' || !v.counters || typeof v.counters !== 'object')
    return undefined;
  const d = v.duration;
  if (!d || !Array.isArray(d.buckets) || !count(d.count) || typeof d.sum !== 'number')
    return undefined;
  const t = emptyTally();
  for (const name of COUNTER_NAMES) {
    const n = (v.counters as Record<string, unknown>)[name];
    if (n === undefined) continue; // a counter added after the checkpoint was written starts at 0
    if (!count(n)) return undefined;
    t.counters[name] = n;
  }
  // Cumulative counts by bound; a bound this version does not have falls into the next one up.
  const cumulative = new Map<number, number>();
  for (const pair of d.buckets as unknown[]) {
    if (!Array.isArray(pair) || typeof pair[0] !== 'string' || !count(pair[1])) return undefined;
    cumulative.set(pair[0] === '+Inf' ? Infinity : Number(pair[0]), pair[1]);
  }
  let below = 0;
  DURATION_BUCKETS.forEach((le, i) => {
    let at = below;
    for (const [bound, n] of cumulative) if (bound <= le && n > at) at = n;
    t.buckets[i] = at - below;
    below = at;
  });
  t.buckets[DURATION_BUCKETS.length] = Math.max(0, d.count - below);
  t.durationSum = d.sum;
  t.durationCount = d.count;
  if (typeof v.lastVerifiedAt === 'string' && Number.isFinite(Date.parse(v.lastVerifiedAt)))
    t.lastVerifiedMs = Date.parse(v.lastVerifiedAt);
  return t;
}

/** Whether two tallies agree (the duration sum to rounding). */
export function sameTally(a: Tally, b: Tally): boolean {
  return (
    COUNTER_NAMES.every((n) => a.counters[n] === b.counters[n]) &&
    a.buckets.every((n, i) => n === b.buckets[i]) &&
    a.durationCount === b.durationCount &&
    Math.abs(a.durationSum - b.durationSum) <= 1e-6 * Math.max(1, Math.abs(a.durationSum)) &&
    a.lastVerifiedMs === b.lastVerifiedMs
  );
}

const count = (n: unknown): n is number =>
  typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
