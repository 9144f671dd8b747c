/**
 * A metrics snapshot as the Prometheus text format (0.0.4), as OpenMetrics
 * 1.0.0 (what a Prometheus server asks for first), and as the JSON of
 * `mvmctl metrics --json` (names without the `mvm_` prefix, SPEC.md section
 * 6). Pure. Written here rather than through a metrics library: the values
 * are totals read from the audit log (a histogram arrives as bucket counts,
 * not as observations), and both formats are a few lines each.
 */
import type { MetricsSnapshot } from './snapshot.js';
import { COUNTER_NAMES, cumulativeBuckets, type MetricCounter } from '../audit/tally.js';

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
export const OPENMETRICS_CONTENT_TYPE =
  'application/openmetrics-text; version=1.0.0; charset=utf-8';

export type ExpositionFormat = 'prometheus' | 'openmetrics';

export const COUNTER_HELP: Readonly<Record<MetricCounter, string>> = {
  dev_image_verify_ok_total: 'Dev image imports that verified and installed.',
  dev_image_verify_unchanged_total:
    'Dev image imports that verified an image already installed (nothing written).',
  dev_image_verify_sig_invalid_total: 'Manifest signature verification failures.',
  dev_image_verify_digest_mismatch_total: 'Kernel, rootfs or initrd SHA-256 mismatches.',
  dev_image_verify_version_skew_total: 'Manifests for a different mvmctl version.',
  dev_image_verify_arch_mismatch_total: 'Manifests for another architecture.',
  dev_image_verify_revoked_total: 'Imports or boots refused because the release is recalled.',
  dev_image_verify_expired_total: 'Manifests past their max-age (warned, installed).',
  dev_image_verify_network_total: 'Network failures (and refused stale revocation lists).',
  dev_image_verify_bypassed_total:
    'Uses of MVM_SKIP_COSIGN_VERIFY or MVM_SKIP_HASH_VERIFY (such installs are UNVERIFIED, not ok).',
  dev_image_verify_manifest_invalid_total: 'Signed manifests that are not valid schema v1.',
};

const GAUGE_HELP = {
  revocation_list_age_seconds:
    "Age of the cached revocation list (its file's modification time); absent when none is cached.",
  dev_image_verified: 'Per installed version: 1 when its receipt says verified, 0 when UNVERIFIED.',
  dev_image_recalled:
    'Per installed version: 1 when recalled by the cached list or a recall remembered on this host.',
  dev_image_not_after_timestamp_seconds: "Per installed version: its manifest's not_after.",
  dev_vm_up: '1 while the dev VM runs.',
  dev_vm_running_version_info:
    'The version the running dev VM booted (present only while it runs).',
  dev_image_last_verified_timestamp_seconds:
    'Time of the last import that verified (installed or unchanged); absent if none.',
  audit_chain_valid: '1 when the audit log chains and agrees with its anchor, 0 when it does not.',
  trusted_root_age_seconds:
    'Age of the Sigstore trusted root in force (label origin): since this host verified it (installed by trust import), else since the newest authority it lists started (embedded, or a file).',
  tuf_root_expiry_timestamp_seconds:
    'When the TUF root in force expires (installed, else the embedded or MVM_TUF_ROOT one); absent for a trusted root named by MVM_TRUSTED_ROOT.',
} as const;

const HISTOGRAM = 'dev_image_verify_duration_seconds';
const HISTOGRAM_HELP = 'Wall time of a dev image verification, success or failure.';

interface Sample {
  readonly labels?: Readonly<Record<string, string>>;
  readonly value: number;
}

interface Family {
  readonly name: string;
  readonly type: 'counter' | 'gauge';
  readonly help: string;
  readonly samples: readonly Sample[];
}

/** The gauge families of a snapshot, in exposition order (an absent gauge has no family). */
function gauges(s: MetricsSnapshot): Family[] {
  const g = (name: keyof typeof GAUGE_HELP, samples: Sample[]): Family => ({
    name,
    type: 'gauge',
    help: GAUGE_HELP[name],
    samples,
  });
  const perVersion = (f: (i: MetricsSnapshot['images'][number]) => number | undefined) =>
    s.images.flatMap((i) => {
      const value = f(i);
      return value === undefined ? [] : [{ labels: { version: i.version }, value }];
    });
  const out: Family[] = [];
  if (s.revocationListAgeSeconds !== undefined)
    out.push(g('revocation_list_age_seconds', [{ value: s.revocationListAgeSeconds }]));
  out.push(
    g(
      'dev_image_verified',
      perVersion((i) => (i.verified ? 1 : 0)),
    ),
    g(
      'dev_image_recalled',
      perVersion((i) => (i.recalled ? 1 : 0)),
    ),
    g(
      'dev_image_not_after_timestamp_seconds',
      perVersion((i) => i.notAfterSeconds),
    ),
    g('dev_vm_up', [{ value: s.vm.up ? 1 : 0 }]),
  );
  if (s.vm.up && s.vm.version !== undefined)
    out.push(g('dev_vm_running_version_info', [{ labels: { version: s.vm.version }, value: 1 }]));
  if (s.tally.lastVerifiedMs !== undefined)
    out.push(
      g('dev_image_last_verified_timestamp_seconds', [{ value: s.tally.lastVerifiedMs / 1000 }]),
    );
  if (s.trust?.ageSeconds !== undefined)
    out.push(
      g('trusted_root_age_seconds', [
        { labels: { origin: s.trust.origin }, value: s.trust.ageSeconds },
      ]),
    );
  if (s.trust?.tufRootExpiresSeconds !== undefined)
    out.push(g('tuf_root_expiry_timestamp_seconds', [{ value: s.trust.tufRootExpiresSeconds }]));
  out.push(g('audit_chain_valid', [{ value: s.chain.intact ? 1 : 0 }]));
  return out;
}

const value = (v: number): string =>
  Number.isNaN(v) ? 'NaN' : v === Infinity ? '+Inf' : v === -Infinity ? '-Inf' : String(v);
const escapeHelp = (t: string): string => t.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
const escapeLabel = (t: string): string =>
  t.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
const labelText = (labels: Readonly<Record<string, string>> | undefined): string =>
  labels && Object.keys(labels).length
    ? `{${Object.entries(labels)
        .map(([k, v]) => `${k}="${escapeLabel(v)}"`)
        .join(',')}}`
    : '';

/** The snapshot in the Prometheus text format, or OpenMetrics (counters' families named without `_total`, `# EOF`). */
export function renderExposition(s: MetricsSnapshot, format: ExpositionFormat): string {
  const om = format === 'openmetrics';
  const lines: string[] = [];
  const family = (name: string, type: string, help: string) => {
    lines.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`);
  };
  for (const c of COUNTER_NAMES) {
    const full = `mvm_${c}`;
    family(om ? full.replace(/_total$/, '') : full, 'counter', COUNTER_HELP[c]);
    lines.push(`${full} ${value(s.counters[c])}`);
  }
  const h = `mvm_${HISTOGRAM}`;
  family(h, 'histogram', HISTOGRAM_HELP);
  for (const b of cumulativeBuckets(s.tally))
    lines.push(`${h}_bucket{le="${b.le}"} ${value(b.count)}`);
  lines.push(
    `${h}_sum ${value(s.tally.durationSum)}`,
    `${h}_count ${value(s.tally.durationCount)}`,
  );
  for (const g of gauges(s)) {
    family(`mvm_${g.name}`, g.type, g.help);
    for (const x of g.samples) lines.push(`mvm_${g.name}${labelText(x.labels)} ${value(x.value)}`);
  }
  if (om) lines.push('# EOF');
  return `${lines.join('\n')}\n`;
}

/**
 * Values keyed without the mvm_ prefix (SPEC.md section 6). The histogram's
 * buckets are a list in ascending `le` order, "+Inf" last (an object keyed by
 * bound would be reordered: JavaScript puts integer-like keys first).
 * Per-version gauges are objects keyed by version; an absent gauge is absent.
 */
export function metricsJson(s: MetricsSnapshot): Record<string, unknown> {
  const out: Record<string, unknown> = { ...s.counters };
  out[HISTOGRAM] = {
    count: s.tally.durationCount,
    sum: s.tally.durationSum,
    buckets: cumulativeBuckets(s.tally),
  };
  for (const g of gauges(s)) {
    out[g.name] = LABELLED.has(g.name)
      ? Object.fromEntries(g.samples.map((x) => [x.labels?.['version'] ?? '', x.value]))
      : g.samples[0]!.value;
  }
  if (s.trust) out['trusted_root_origin'] = s.trust.origin;
  return out;
}

/** Gauges with a `version` label: objects keyed by version in the JSON. */
const LABELLED: ReadonlySet<string> = new Set([
  'dev_image_verified',
  'dev_image_recalled',
  'dev_image_not_after_timestamp_seconds',
  'dev_vm_running_version_info',
]);
