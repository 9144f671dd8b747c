/**
 * The fleet side of the tests: the metric names mvmctl exports (the one list the alert rules and
 * the Grafana dashboard are checked against), a PromQL reader that finds the metric names an
 * expression uses, and a real Prometheus (Debian's `prometheus` package) started on loopback.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const RULES = fileURLToPath(
  new URL('../../deploy/prometheus/mvmctl.rules.yml', import.meta.url),
);
export const RULES_TEST = fileURLToPath(
  new URL('../../deploy/prometheus/mvmctl.rules.test.yml', import.meta.url),
);
export const DASHBOARD = fileURLToPath(
  new URL('../../deploy/grafana/mvmctl-dashboard.json', import.meta.url),
);

/** Every series name mvmctl exports (`mvmctl metrics`, `metrics serve`, `metrics --textfile`). */
export const EXPORTED_METRICS: ReadonlySet<string> = new Set([
  'mvm_dev_image_verify_ok_total',
  'mvm_dev_image_verify_sig_invalid_total',
  'mvm_dev_image_verify_digest_mismatch_total',
  'mvm_dev_image_verify_version_skew_total',
  'mvm_dev_image_verify_arch_mismatch_total',
  'mvm_dev_image_verify_revoked_total',
  'mvm_dev_image_verify_expired_total',
  'mvm_dev_image_verify_network_total',
  'mvm_dev_image_verify_bypassed_total',
  'mvm_dev_image_verify_manifest_invalid_total',
  'mvm_dev_image_verify_unchanged_total',
  // The histogram, as the series Prometheus stores.
  'mvm_dev_image_verify_duration_seconds_bucket',
  'mvm_dev_image_verify_duration_seconds_sum',
  'mvm_dev_image_verify_duration_seconds_count',
  'mvm_revocation_list_age_seconds',
  'mvm_dev_image_verified',
  'mvm_dev_image_recalled',
  'mvm_dev_image_not_after_timestamp_seconds',
  'mvm_dev_vm_up',
  'mvm_dev_vm_running_version_info',
  'mvm_dev_image_last_verified_timestamp_seconds',
  'mvm_audit_chain_valid',
  'mvm_trusted_root_age_seconds',
  'mvm_tuf_root_expiry_timestamp_seconds',
]);

const KEYWORDS = new Set([
  'and',
  'or',
  'unless',
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'bool',
  'offset',
  'atan2',
  'inf',
  'nan',
]);

/**
 * The metric names a PromQL expression selects. Strings, label matchers, ranges, the label
 * lists of by/without/on/ignoring/group_*, Grafana variables and numbers are not names; an
 * identifier followed by `(` is a function or an aggregation.
 */
export function metricNames(expr: string): string[] {
  const s = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, ' ')
    .replace(/\$\{[^}]*\}|\$\w+/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = new Set<string>();
  for (const m of s.matchAll(/(\d[\w.]*(?:[eE][+-]?\d+)?)|([A-Za-z_:][\w:]*)/g)) {
    const id = m[2];
    if (id === undefined || KEYWORDS.has(id.toLowerCase())) continue;
    if (/^\s*\(/.test(s.slice(m.index + m[0].length))) continue;
    names.add(id);
  }
  return [...names];
}

/** The names in `exprs` that mvmctl does not export. */
export function unknownMetrics(exprs: readonly string[]): string[] {
  return [...new Set(exprs.flatMap(metricNames))].filter((n) => !EXPORTED_METRICS.has(n));
}

/**
 * The absolute path of a Debian `prometheus` package binary. Missing is a failure, never a skip:
 * CI installs the package (.ci/run), and a developer is told how.
 */
export function requireBinary(name: 'prometheus' | 'promtool'): string {
  try {
    return execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim();
  } catch {
    assert.fail(
      `${name} is not installed: the alert rule tests need Debian's prometheus package ` +
        `(apt-get install prometheus), which provides promtool and prometheus; .ci/run installs it`,
    );
  }
}

/** A TCP port free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      srv.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error()),
      );
    });
  });
}

/** Polls `probe` until it returns a value, or fails naming `what` (and the last probe's state). */
export async function until<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  deadlineMs = 90_000,
  detail: () => string = () => '',
): Promise<T> {
  const end = Date.now() + deadlineMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      // A probe's own assertion (the process died) ends the wait; anything else is retried.
      if (e instanceof assert.AssertionError) throw e;
      last = e;
    }
    if (Date.now() > end)
      assert.fail(
        `timed out after ${deadlineMs / 1000} s waiting for ${what}` +
          (last ? `\nlast error: ${String(last)}` : '') +
          `\n${detail()}`,
      );
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** A child process whose combined output is kept for failure messages. */
export function spawnLogged(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): { child: ChildProcess; output: () => string } {
  const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (b: Buffer) => {
    out = (out + b.toString()).slice(-20_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return { child, output: () => out };
}

/** SIGTERM, then SIGKILL after 5 s; resolves once the process has exited. */
export async function stopProcess(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

export interface PrometheusServer {
  url: string;
  child: ChildProcess;
  output: () => string;
  /** GET `path` (with `params`) and return the API's `data`, failing on any non-success. */
  api<T>(path: string, params?: Record<string, string>): Promise<T>;
  stop(): Promise<void>;
}

/**
 * A real Prometheus on 127.0.0.1 with `config` (YAML) as its configuration and its storage under
 * `dir`; resolves once it reports ready.
 */
export async function startPrometheus(dir: string, config: string): Promise<PrometheusServer> {
  const bin = requireBinary('prometheus');
  mkdirSync(dir, { recursive: true });
  const configFile = join(dir, 'prometheus.yml');
  writeFileSync(configFile, config);
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const { child, output } = spawnLogged(bin, [
    `--config.file=${configFile}`,
    `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
  ]);
  const server: PrometheusServer = {
    url,
    child,
    output,
    async api<T>(path: string, params: Record<string, string> = {}): Promise<T> {
      const res = await fetch(`${url}${path}?${new URLSearchParams(params)}`);
      const body = (await res.json()) as { status: string; data: T; error?: string };
      if (body.status !== 'success') throw new Error(`${path}: ${body.error ?? res.status}`);
      return body.data;
    },
    stop: () => stopProcess(child),
  };
  await until(
    `Prometheus to be ready on ${url}`,
    async () => {
      if (child.exitCode !== null) assert.fail(`prometheus exited (${child.exitCode})`);
      const res = await fetch(`${url}/-/ready`);
      return res.ok ? true : undefined;
    },
    30_000,
    output,
  );
  return server;
}
