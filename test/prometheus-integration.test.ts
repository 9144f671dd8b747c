/**
 * The fleet path end to end: a real Prometheus (Debian's `prometheus`) on loopback scrapes two
 * `mvmctl metrics serve` processes, each with its own data directory (two hosts), and evaluates
 * the shipped rules (deploy/prometheus/mvmctl.rules.yml). Failing imports on both hosts must
 * reach Prometheus as counters and fire the fleet-wide signature alert; a digest mismatch on one
 * host fires that host's alert. Everything is polled against a generous deadline; nothing is timed.
 */
import assert from 'node:assert/strict';
import { readFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLI } from './support/cli.js';
import { HOST_ARCH, OTHER_ARCH, testHost, VERSION, type TestHost } from './support/host.js';
import { TestPki } from './support/pki.js';
import {
  RULES,
  spawnLogged,
  startPrometheus,
  stopProcess,
  until,
  type PrometheusServer,
} from './support/prometheus.js';
import { writeReleaseSet, type ReleaseFiles } from './support/release.js';

const DEADLINE_MS = 90_000;

interface Exporter {
  name: string;
  host: TestHost;
  address: string;
  stop(): Promise<void>;
  output(): string;
}
interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}
interface Alert {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  state: string;
}
interface LoadedRule {
  name: string;
  query: string;
  health: string;
  lastError?: string;
  lastEvaluation: string;
}

let root: string;
let pki: TestPki;
let good: ReleaseFiles;
/** A genuine manifest with the bundle of another signing (the other arch's set): a signature failure. */
let wrongBundle: ReleaseFiles;
/** A genuine manifest and bundle with one byte of the rootfs changed: a digest mismatch. */
let tamperedRootfs: ReleaseFiles;
const exporters: Exporter[] = [];
let prometheus: PrometheusServer | undefined;

/**
 * `mvmctl metrics serve` for `host` on a port the system picks (`--listen 127.0.0.1:0`), at the
 * address it prints once listening, once it answers GET /metrics.
 */
async function serve(name: string, host: TestHost): Promise<Exporter> {
  const env: NodeJS.ProcessEnv = { ...process.env, ...host.env };
  const { child, output } = spawnLogged(
    process.execPath,
    [CLI, 'metrics', 'serve', '--listen', '127.0.0.1:0'],
    env,
  );
  const exporter: Exporter = { name, host, address: '', stop: () => stopProcess(child), output };
  exporters.push(exporter);
  await until(
    `mvmctl metrics serve (${name}) to listen and answer GET /metrics`,
    async () => {
      if (child.exitCode !== null)
        assert.fail(`mvmctl metrics serve exited with ${child.exitCode}:\n${output()}`);
      const address = /listening on http:\/\/([^/\s]+)\/metrics/.exec(output())?.[1];
      if (!address) return undefined;
      const res = await fetch(`http://${address}/metrics`);
      if (!res.ok) return undefined;
      exporter.address = address;
      return true;
    },
    30_000,
    output,
  );
  return exporter;
}

/** The instant vector of `query`, as Prometheus answers it now. */
async function query(q: string): Promise<Sample[]> {
  assert.ok(prometheus);
  return (await prometheus.api<{ result: Sample[] }>('/api/v1/query', { query: q })).result;
}

/** `metric`'s value per instance (`host-a`, `host-b`). */
async function perInstance(metric: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const s of await query(metric)) out[s.metric['instance'] ?? '?'] = Number(s.value[1]);
  return out;
}

/** Waits until Prometheus holds `metric` at exactly `expected` (per instance). */
async function untilValues(metric: string, expected: Record<string, number>): Promise<void> {
  let last: Record<string, number> = {};
  await until(
    `Prometheus to hold ${metric} = ${JSON.stringify(expected)}`,
    async () => {
      last = await perInstance(metric);
      return Object.entries(expected).every(([i, v]) => last[i] === v) ? true : undefined;
    },
    DEADLINE_MS,
    () => `last seen: ${JSON.stringify(last)}\n${prometheus?.output().slice(-3000) ?? ''}`,
  );
}

async function alerts(): Promise<Alert[]> {
  assert.ok(prometheus);
  return (await prometheus.api<{ alerts: Alert[] }>('/api/v1/alerts')).alerts;
}

/** Waits until `alertname` is firing, and returns its firing alerts. */
async function untilFiring(alertname: string): Promise<Alert[]> {
  let last: Alert[] = [];
  return until(
    `${alertname} to fire`,
    async () => {
      last = await alerts();
      const firing = last.filter(
        (a) => a.labels['alertname'] === alertname && a.state === 'firing',
      );
      return firing.length ? firing : undefined;
    },
    DEADLINE_MS,
    () => `alerts: ${JSON.stringify(last.map((a) => [a.labels, a.state]))}`,
  );
}

async function loadedRules(): Promise<LoadedRule[]> {
  assert.ok(prometheus);
  const data = await prometheus.api<{ groups: { rules: LoadedRule[] }[] }>('/api/v1/rules');
  return data.groups.flatMap((g) => g.rules);
}

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'mvm-prometheus-'));
  pki = await TestPki.create();
  const trustedRoot = pki.writeTrustedRoot(root);
  good = await writeReleaseSet(pki, join(root, 'good'), { version: VERSION, arch: HOST_ARCH });
  const other = await writeReleaseSet(pki, join(root, 'other'), {
    version: VERSION,
    arch: OTHER_ARCH,
  });
  wrongBundle = { ...good, bundle: other.bundle };
  tamperedRootfs = await writeReleaseSet(pki, join(root, 'tampered'), {
    version: VERSION,
    arch: HOST_ARCH,
  });
  const bytes = readFileSync(tamperedRootfs.rootfs);
  bytes[bytes.length - 100]! ^= 0x01;
  writeFileSync(tamperedRootfs.rootfs, bytes);

  const a = await serve('host-a', testHost(join(root, 'host-a'), trustedRoot));
  const b = await serve('host-b', testHost(join(root, 'host-b'), trustedRoot));
  // One job, two targets; `instance` is the host's name, as docs/fleet.md recommends.
  prometheus = await startPrometheus(
    join(root, 'prometheus'),
    [
      'global:',
      '  scrape_interval: 1s',
      '  scrape_timeout: 1s',
      '  evaluation_interval: 1s',
      'rule_files:',
      `  - ${JSON.stringify(RULES)}`,
      'scrape_configs:',
      '  - job_name: mvmctl',
      '    static_configs:',
      ...[a, b].flatMap((e) => [
        `      - targets: [${JSON.stringify(e.address)}]`,
        `        labels: { instance: ${e.name} }`,
      ]),
      '',
    ].join('\n'),
  );
});

after(async () => {
  await Promise.all([prometheus?.stop(), ...exporters.map((e) => e.stop())]);
  rmSync(root, { recursive: true, force: true });
});

describe('Prometheus scraping two hosts running mvmctl metrics serve', () => {
  it('scrapes both hosts, every counter at 0 before anything happened', async () => {
    await untilValues('up{job="mvmctl"}', { 'host-a': 1, 'host-b': 1 });
    // At 0 from the first scrape: the first failure is then an increase Prometheus can see.
    await untilValues('mvm_dev_image_verify_sig_invalid_total', { 'host-a': 0, 'host-b': 0 });
    await untilValues('mvm_dev_image_verify_digest_mismatch_total', { 'host-a': 0, 'host-b': 0 });
    await untilValues('mvm_audit_chain_valid', { 'host-a': 1, 'host-b': 1 });
  });

  it('an install on host-a arrives as the ok counter and the installed image gauges', async () => {
    const [a] = exporters;
    assert.ok(a);
    const r = await a.host.importSet(good);
    assert.equal(r.code, 0, r.stderr);
    await untilValues('mvm_dev_image_verify_ok_total', { 'host-a': 1, 'host-b': 0 });
    await untilValues(`mvm_dev_image_verified{version="${VERSION}"}`, { 'host-a': 1 });
    await untilValues(`mvm_dev_image_recalled{version="${VERSION}"}`, { 'host-a': 0 });
  });

  it('a signature failure on one host is not the fleet shape', async () => {
    const [a] = exporters;
    assert.ok(a);
    const r = await a.host.importSet(wrongBundle);
    assert.equal(r.code, 10, r.stderr);
    await untilValues('mvm_dev_image_verify_sig_invalid_total', { 'host-a': 1, 'host-b': 0 });
    // The fleet rule's own expression, evaluated now that Prometheus holds host-a's failure.
    const fleet = (await loadedRules()).find((x) => x.name === 'MvmSigInvalidFleetWide');
    assert.ok(fleet);
    assert.deepEqual(await query(fleet.query), []);
    assert.deepEqual(
      (await query('count(increase(mvm_dev_image_verify_sig_invalid_total[10m]) > 0)')).map(
        (s) => s.value[1],
      ),
      ['1'],
    );
  });

  it('signature failures on both hosts arrive per host and fire the fleet-wide alert', async () => {
    const [, b] = exporters;
    assert.ok(b);
    const r = await b.host.importSet(wrongBundle);
    assert.equal(r.code, 10, r.stderr);
    await untilValues('mvm_dev_image_verify_sig_invalid_total', { 'host-a': 1, 'host-b': 1 });
    const [fleet, ...more] = await untilFiring('MvmSigInvalidFleetWide');
    assert.equal(more.length, 0);
    assert.equal(fleet?.labels['severity'], 'critical');
    assert.match(fleet?.annotations['summary'] ?? '', /on 2 hosts/);
    assert.match(fleet?.annotations['description'] ?? '', /mvmctl audit tail/);
  });

  it("a digest mismatch on host-b fires that host's alert", async () => {
    const [, b] = exporters;
    assert.ok(b);
    const r = await b.host.importSet(tamperedRootfs);
    assert.equal(r.code, 14, r.stderr);
    await untilValues('mvm_dev_image_verify_digest_mismatch_total', { 'host-a': 0, 'host-b': 1 });
    const firing = await untilFiring('MvmDigestMismatch');
    assert.deepEqual(
      firing.map((a) => [a.labels['instance'], a.labels['severity']]),
      [['host-b', 'critical']],
    );
  });

  it('every rule evaluates without error against the real exposition', async () => {
    let last: LoadedRule[] = [];
    await until(
      'every rule to have been evaluated',
      async () => {
        last = await loadedRules();
        return last.every((x) => !x.lastEvaluation.startsWith('0001-')) ? true : undefined;
      },
      DEADLINE_MS,
    );
    assert.deepEqual(
      last.filter((x) => x.health !== 'ok').map((x) => `${x.name}: ${x.health} ${x.lastError}`),
      [],
    );
  });
});
