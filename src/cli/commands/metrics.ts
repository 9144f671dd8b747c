import { homedir } from 'node:os';
import { configFrom, type Config } from '../../config.js';
import { MvmError } from '../../errors.js';
import { metricsJson, renderExposition } from '../../telemetry/exposition.js';
import { MetricsSource, type MetricsSnapshot } from '../../telemetry/snapshot.js';
import type { LoadedTrustedRoot } from '../../trust/trusted-root.js';
import { parseFlags } from '../args.js';
import { jsonLine, type Output } from '../render.js';

export { metricsJson } from '../../telemetry/exposition.js';

export const METRICS_HELP = `Usage: mvmctl metrics [--json] [--textfile DIR]
       mvmctl metrics serve [--listen ADDR:PORT]

This host's dev-image verification metrics. The counters persist across
invocations: they are computed from the audit log (~/.mvm/telemetry/audit.jsonl
and its rotated files), not kept beside it.

  mvmctl metrics              Prometheus text exposition (format 0.0.4) on stdout
  mvmctl metrics --json       the same values keyed by name without the mvm_ prefix
                              (the histogram's buckets a list, le ascending, "+Inf" last)
  mvmctl metrics --textfile DIR
                              writes DIR/mvmctl.prom atomically (temp file, fsync, rename;
                              mode 0644) for node_exporter's textfile collector
  mvmctl metrics serve        serves GET /metrics over HTTP for Prometheus (see below)

Counters (mvm_ prefix): dev_image_verify_ok_total (verified and installed),
dev_image_verify_unchanged_total (verified, already installed: nothing written),
dev_image_verify_bypassed_total (each escape hatch used; such an install is
UNVERIFIED, never ok), and dev_image_verify_{sig_invalid, digest_mismatch,
version_skew, arch_mismatch, revoked, expired, network, manifest_invalid}_total.
Histogram: mvm_dev_image_verify_duration_seconds. Gauges:
  mvm_revocation_list_age_seconds                 absent when no usable list is cached
  mvm_dev_image_verified{version}                 1 verified, 0 UNVERIFIED
  mvm_dev_image_recalled{version}                 1 when recalled (cached list or remembered recall)
  mvm_dev_image_not_after_timestamp_seconds{version}
  mvm_dev_vm_up                                   1 while the dev VM runs
  mvm_dev_vm_running_version_info{version}        1, present only while it runs
  mvm_dev_image_last_verified_timestamp_seconds   absent until an import verified
  mvm_audit_chain_valid                           0 when the audit log does not chain
A broken audit chain also prints a warning on stderr (exit status stays 0).

metrics serve:
  --listen ADDR:PORT   where to listen (default 127.0.0.1:9464; [::1]:9464 for IPv6;
                       port 0 takes a free one). Prints "listening on http://ADDR:PORT/metrics"
                       on stderr once listening.
  GET /metrics answers in the Prometheus text format, or OpenMetrics 1.0.0 when the
  Accept header prefers application/openmetrics-text (as Prometheus sends); any other
  path is 404, any other method 405 (HEAD works), a request body 413. At most 256
  connections, 8 KiB of headers, 5 s to send them and 10 s per request. The audit log
  is read incrementally: each scrape reads only what was appended since the last one
  (a rotation is followed; a log shrunk or replaced is read again from its start).
  SIGTERM or SIGINT stops it cleanly (exit 0). An address in use exits 2.

A systemd timer for the textfile collector (as the user whose ~/.mvm holds the
images; give it write access to the collector's directory, e.g.
setfacl -m u:USER:rwx /var/lib/prometheus/node-exporter). The same units are in
deploy/systemd/:

  # /etc/systemd/system/mvmctl-metrics.service
  [Unit]
  Description=Export mvmctl metrics for node_exporter's textfile collector
  [Service]
  Type=oneshot
  User=USER
  ExecStart=/usr/local/bin/mvmctl metrics --textfile /var/lib/prometheus/node-exporter

  # /etc/systemd/system/mvmctl-metrics.timer
  [Unit]
  Description=Export mvmctl metrics every minute
  [Timer]
  OnBootSec=30s
  OnUnitActiveSec=60s
  AccuracySec=5s
  [Install]
  WantedBy=timers.target

  systemctl daemon-reload && systemctl enable --now mvmctl-metrics.timer
`;

/** Everything the metrics say, read once (status shows it too, with the trusted root it loaded). */
export async function currentMetrics(
  config: Config,
  trustedRoot?: LoadedTrustedRoot,
): Promise<MetricsSnapshot> {
  return new MetricsSource(config, trustedRoot).collect();
}

export async function metricsCommand(args: string[], io: Output): Promise<number> {
  if (args[0] === 'serve') return serveCommand(args.slice(1), io);
  const { values, positionals } = parseFlags('metrics', args, {
    textfile: { type: 'string' },
  });
  if (values.help) {
    io.out(METRICS_HELP);
    return 0;
  }
  if (positionals.length)
    throw new MvmError(
      'usage',
      `metrics takes no arguments (got ${JSON.stringify(positionals[0])})`,
      {
        fix: "Run 'mvmctl metrics --help' (the server is 'mvmctl metrics serve').",
      },
    );
  if (values.textfile !== undefined && values.json)
    throw new MvmError('usage', '--textfile and --json do not go together', {
      fix: 'The textfile is always the Prometheus text format; drop --json.',
    });
  const snapshot = await currentMetrics(configFrom(process.env, homedir()));
  for (const w of snapshot.warnings) io.err(`warning: ${w}`);
  if (values.textfile !== undefined) {
    if (values.textfile === '')
      throw new MvmError('usage', '--textfile needs a directory', {
        fix: "Name node_exporter's --collector.textfile.directory.",
      });
    const { writeTextfile } = await import('../../telemetry/textfile.js');
    await writeTextfile(values.textfile, renderExposition(snapshot, 'prometheus'));
    return 0;
  }
  io.out(values.json ? jsonLine(metricsJson(snapshot)) : renderExposition(snapshot, 'prometheus'));
  return 0;
}

async function serveCommand(args: string[], io: Output): Promise<number> {
  const { values, positionals } = parseFlags('metrics serve', args, {
    listen: { type: 'string' },
  });
  if (values.help) {
    io.out(METRICS_HELP);
    return 0;
  }
  if (positionals.length)
    throw new MvmError('usage', 'metrics serve takes no arguments', {
      fix: "Run 'mvmctl metrics --help'.",
    });
  if (values.json)
    throw new MvmError('usage', 'metrics serve has no --json', {
      fix: "GET /metrics serves the exposition formats; 'mvmctl metrics --json' prints JSON.",
    });
  const { DEFAULT_LISTEN, parseListen, startMetricsServer, urlOf } =
    await import('../../telemetry/server.js');
  const listen = parseListen(values.listen ?? DEFAULT_LISTEN);
  const source = new MetricsSource(configFrom(process.env, homedir()));
  // The log is read once before listening: a log that cannot be read at all is an error now, not per scrape.
  const first = await source.collect();
  const server = await startMetricsServer({
    listen,
    source,
    warn: (m) => io.err(`warning: ${m}`),
    warned: first.warnings,
  });
  for (const w of first.warnings) io.err(`warning: ${w}`);
  io.err(`listening on ${urlOf(server.address)}`);
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    for (const s of ['SIGTERM', 'SIGINT'] as const) process.once(s, () => resolve(s));
  });
  await server.close();
  io.err(`stopped (${signal})`);
  return 0;
}
