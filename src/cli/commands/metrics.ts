import { homedir } from 'node:os';
import { auditLogPath, configFrom, type Config } from '../../config.js';
import { isMvmError, MvmError } from '../../errors.js';
import { DURATION_BUCKETS, metricsFrom, readAudit, type Metrics } from '../../telemetry/audit.js';
import { parseFlags } from '../args.js';
import type { Output } from '../render.js';

export const METRICS_HELP = `Usage: mvmctl metrics [--json]

Print the dev-image verification counters of this host, which persist across
invocations (they are computed from the audit log), in Prometheus text
exposition format: for a node_exporter textfile collector, e.g.
  mvmctl metrics > /var/lib/node_exporter/textfile/mvm.prom
--json prints the same values keyed by name without the mvm_ prefix.
`;

const HELP_TEXT: Record<string, string> = {
  dev_image_verify_ok_total: 'Dev image verifications that passed and installed.',
  dev_image_verify_sig_invalid_total: 'Manifest signature verification failures.',
  dev_image_verify_digest_mismatch_total: 'Kernel, rootfs or initrd SHA-256 mismatches.',
  dev_image_verify_version_skew_total: 'Manifests for a different mvmctl version.',
  dev_image_verify_arch_mismatch_total: 'Manifests for another architecture.',
  dev_image_verify_revoked_total: 'Imports refused because the release is recalled.',
  dev_image_verify_expired_total: 'Manifests past their max-age (warned, installed).',
  dev_image_verify_network_total: 'Network failures (and refused stale revocation lists).',
  dev_image_verify_bypassed_total: 'Uses of MVM_SKIP_COSIGN_VERIFY or MVM_SKIP_HASH_VERIFY.',
  dev_image_verify_manifest_invalid_total: 'Signed manifests that are not valid schema v1.',
};

export async function currentMetrics(config: Config): Promise<Metrics & { unreadable: number }> {
  const path = auditLogPath(config);
  const { records, unreadable } = await readAudit(path).catch((e: unknown) => {
    // An unreadable log (a directory, a symlink, no permission) is a store problem, not a crash.
    if (isMvmError(e)) throw e;
    throw new MvmError('store', `Cannot read the audit log ${path}`, {
      cause: (e as Error)?.message ?? String(e),
      fix: 'The audit log must be a regular file owned by you; check the data directory (telemetry/audit.jsonl).',
      underlying: e,
    });
  });
  return { ...metricsFrom(records), unreadable };
}

export async function metricsCommand(args: string[], io: Output): Promise<number> {
  const { values, positionals } = parseFlags('metrics', args, {});
  if (values.help) {
    io.out(METRICS_HELP);
    return 0;
  }
  if (positionals.length)
    throw new MvmError('usage', 'metrics takes no arguments', {
      fix: "Run 'mvmctl metrics --help'.",
    });
  const m = await currentMetrics(configFrom(process.env, homedir()));
  io.out(values.json ? JSON.stringify(metricsJson(m)) : await prometheusText(m));
  return 0;
}

/** Values keyed without the mvm_ prefix (SPEC.md section 6). */
export function metricsJson(m: Metrics): Record<string, unknown> {
  const buckets: Record<string, number> = {};
  for (const le of DURATION_BUCKETS)
    buckets[String(le)] = m.durations.filter((d) => d <= le).length;
  buckets['+Inf'] = m.durations.length;
  return {
    ...m.counters,
    dev_image_verify_duration_seconds: {
      count: m.durations.length,
      sum: m.durations.reduce((a, b) => a + b, 0),
      buckets,
    },
  };
}

/** Prometheus text exposition, formatted by prom-client. */
export async function prometheusText(m: Metrics): Promise<string> {
  const mod = await import('prom-client');
  // A CommonJS package: Node's loader exposes named exports, the CLI bundle only `default`.
  const { Registry, Counter, Histogram } =
    typeof mod.Registry === 'function' ? mod : (mod as unknown as { default: typeof mod }).default;
  const registry = new Registry();
  for (const [name, value] of Object.entries(m.counters)) {
    new Counter({ name: `mvm_${name}`, help: HELP_TEXT[name] ?? name, registers: [registry] }).inc(
      value,
    );
  }
  const h = new Histogram({
    name: 'mvm_dev_image_verify_duration_seconds',
    help: 'Wall time of a dev image verification, success or failure.',
    buckets: DURATION_BUCKETS,
    registers: [registry],
  });
  for (const d of m.durations) h.observe(d);
  return registry.metrics();
}
