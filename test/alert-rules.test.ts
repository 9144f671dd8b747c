/**
 * The shipped Prometheus alert rules (deploy/prometheus/mvmctl.rules.yml): promtool accepts them,
 * their unit tests pass (and fail when a rule is broken), every alert has a firing and a quiet
 * case, and each alert as Prometheus itself loads it has a severity, a summary and a description
 * that names a host command, over metrics mvmctl exports.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  metricNames,
  requireBinary,
  RULES,
  RULES_TEST,
  startPrometheus,
  unknownMetrics,
  type PrometheusServer,
} from './support/prometheus.js';

interface LoadedRule {
  type: string;
  name: string;
  query: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

let root: string;
let prometheus: PrometheusServer | undefined;
let loaded: LoadedRule[];

function promtool(...args: string[]): { status: number | null; output: string } {
  const r = spawnSync(requireBinary('promtool'), args, { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

/** What is wrong with an alert as Prometheus loaded it (empty: nothing). */
function ruleProblems(rule: LoadedRule): string[] {
  const problems: string[] = [];
  if (rule.type !== 'alerting') problems.push(`${rule.name} is not an alerting rule`);
  const severity = rule.labels?.['severity'];
  if (severity !== 'critical' && severity !== 'warning')
    problems.push(`${rule.name}: severity label is ${severity ?? 'missing'}`);
  const summary = rule.annotations?.['summary'] ?? '';
  const description = rule.annotations?.['description'] ?? '';
  if (!summary.trim()) problems.push(`${rule.name}: no summary`);
  if (description.trim().length < 80) problems.push(`${rule.name}: no useful description`);
  // The on-call operator is told what to run on the host.
  else if (!/`mvmctl [a-z]/.test(description))
    problems.push(`${rule.name}: the description names no mvmctl command to run`);
  const names = metricNames(rule.query);
  if (!names.some((n) => n.startsWith('mvm_')))
    problems.push(`${rule.name}: the expression uses no mvmctl metric`);
  // Names in the expression, and mvm_ names in the text (queries the operator will copy).
  const mentioned = [...`${summary} ${description}`.matchAll(/\bmvm_[a-z_]+/g)].map((m) => m[0]);
  for (const n of unknownMetrics([rule.query, ...mentioned]))
    problems.push(`${rule.name}: ${n} is not a metric mvmctl exports`);
  return problems;
}

/** Per alert name, whether the promtool tests hold a case where it fires and one where it does not. */
function unitTestCases(text: string): Map<string, { fires: boolean; quiet: boolean }> {
  const cases = new Map<string, { fires: boolean; quiet: boolean }>();
  for (const chunk of text.split(/^\s*- eval_time:/m).slice(1)) {
    const name = /^\s*alertname:\s*(\S+)/m.exec(chunk)?.[1];
    assert.ok(name, `an eval_time without alertname: ${chunk.slice(0, 200)}`);
    const c = cases.get(name) ?? { fires: false, quiet: false };
    if (/^\s*exp_alerts:\s*\[\]\s*$/m.test(chunk)) c.quiet = true;
    else if (/^\s*exp_alerts:\s*$/m.test(chunk)) c.fires = true;
    cases.set(name, c);
  }
  return cases;
}

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'mvm-alert-rules-'));
  prometheus = await startPrometheus(
    join(root, 'prometheus'),
    `global:\n  evaluation_interval: 1s\nrule_files:\n  - ${JSON.stringify(RULES)}\n`,
  );
  const data = await prometheus.api<{ groups: { rules: LoadedRule[] }[] }>('/api/v1/rules');
  loaded = data.groups.flatMap((g) => g.rules);
});
after(async () => {
  await prometheus?.stop();
  rmSync(root, { recursive: true, force: true });
});

describe('alert rules: promtool', () => {
  it('promtool check rules accepts the shipped rules, all of which Prometheus loads', () => {
    const r = promtool('check', 'rules', RULES);
    assert.equal(r.status, 0, r.output);
    const found = /SUCCESS: (\d+) rules found/.exec(r.output);
    assert.ok(found, r.output);
    assert.equal(loaded.length, Number(found[1]), 'Prometheus loaded a different number of rules');
    assert.ok(loaded.length >= 9, `only ${loaded.length} rules`);
  });

  it('promtool test rules: the unit tests pass', () => {
    const r = promtool('test', 'rules', RULES_TEST);
    assert.equal(r.status, 0, r.output);
    assert.match(r.output, /SUCCESS/);
  });

  it('every alert has a firing case and a not-firing case, and every case names a shipped alert', () => {
    const cases = unitTestCases(readFileSync(RULES_TEST, 'utf8'));
    const names = loaded.map((r) => r.name);
    for (const name of names) {
      assert.ok(cases.get(name)?.fires, `${name} has no unit test where it fires`);
      assert.ok(cases.get(name)?.quiet, `${name} has no unit test where it stays quiet`);
    }
    for (const name of cases.keys()) assert.ok(names.includes(name), `${name} is not a rule`);
    // The reader of the test file can itself tell a missing case.
    const lone = unitTestCases(
      '  - eval_time: 1m\n    alertname: A\n    exp_alerts: []\n  - eval_time: 2m\n    alertname: B\n    exp_alerts:\n      - exp_labels: {}\n',
    );
    assert.deepEqual(Object.fromEntries(lone), {
      A: { fires: false, quiet: true },
      B: { fires: true, quiet: false },
    });
  });

  // One deliberate break per alert: each must make `promtool test rules` fail on that alert while
  // `promtool check rules` still accepts the file, so the unit tests catch wrong logic, not only syntax.
  const breaks: [alert: string, from: string, to: string][] = [
    [
      'MvmSigInvalidFleetWide',
      'count(count by (instance) (increase(mvm_dev_image_verify_sig_invalid_total[10m]) > 0)) >= 2',
      'count(increase(mvm_dev_image_verify_sig_invalid_total[10m]) > 0) >= 2',
    ],
    ['MvmSigInvalidFleetWide', '[10m]) > 0)) >= 2', '[10m]) > 0)) >= 3'],
    [
      'MvmSigInvalidBurst',
      'increase(mvm_dev_image_verify_sig_invalid_total[5m]) >= 3',
      'increase(mvm_dev_image_verify_sig_invalid_total[5m]) >= 2',
    ],
    [
      'MvmDigestMismatch',
      'increase(mvm_dev_image_verify_digest_mismatch_total[15m]) > 0',
      'increase(mvm_dev_image_verify_digest_mismatch_total[15m]) > 1',
    ],
    [
      'MvmRecalledImageInstalled',
      'expr: mvm_dev_image_recalled == 1',
      'expr: mvm_dev_image_recalled >= 0',
    ],
    ['MvmRecalledImageRunning', 'and on (instance, job, version)', 'and on (job, version)'],
    [
      'MvmEscapeHatchUsed',
      'increase(mvm_dev_image_verify_bypassed_total[1h]) > 0',
      'increase(mvm_dev_image_verify_bypassed_total[1m]) > 0',
    ],
    ['MvmUnverifiedImageInstalled', 'mvm_dev_image_verified == 0', 'mvm_dev_image_verified < 2'],
    [
      'MvmRevocationListStale',
      'mvm_revocation_list_age_seconds > 7 * 86400',
      'mvm_revocation_list_age_seconds > 8 * 86400',
    ],
    ['MvmRevocationListMissing', 'unless on (instance, job)', 'unless on (job)'],
    [
      'MvmImagePastNotAfter',
      'mvm_dev_image_not_after_timestamp_seconds < time()',
      'mvm_dev_image_not_after_timestamp_seconds > time()',
    ],
    [
      'MvmAuditChainBroken',
      'mvm_audit_chain_valid == 0',
      'mvm_audit_chain_valid != 1 or mvm_audit_chain_valid == 1',
    ],
    [
      'MvmTrustedRootOld',
      'mvm_trusted_root_age_seconds > 180 * 86400',
      'mvm_trusted_root_age_seconds > 365 * 86400',
    ],
    [
      'MvmTufRootExpired',
      'mvm_tuf_root_expiry_timestamp_seconds < time()',
      'mvm_tuf_root_expiry_timestamp_seconds < 0',
    ],
  ];
  it('breaks cover every shipped alert', () => {
    assert.deepEqual(
      [...new Set(breaks.map((b) => b[0]))].sort(),
      loaded.map((r) => r.name).sort(),
    );
  });
  for (const [alert, from, to] of breaks) {
    it(`a broken ${alert} fails the unit tests`, () => {
      const rules = readFileSync(RULES, 'utf8');
      assert.equal(rules.split(from).length, 2, `"${from}" is not in the rules exactly once`);
      const dir = mkdtempSync(join(root, 'broken-'));
      writeFileSync(join(dir, basename(RULES)), rules.replace(from, to));
      writeFileSync(join(dir, basename(RULES_TEST)), readFileSync(RULES_TEST));
      const check = promtool('check', 'rules', join(dir, basename(RULES)));
      assert.equal(check.status, 0, check.output);
      const r = promtool('test', 'rules', join(dir, basename(RULES_TEST)));
      assert.notEqual(r.status, 0, `promtool test rules passed with ${alert} broken:\n${r.output}`);
      assert.match(r.output, new RegExp(`alertname: ${alert}\\b`));
    });
  }
});

describe('alert rules: what each alert carries', () => {
  it('each alert has a severity, a summary, a description naming a host command, and only exported metrics', () => {
    assert.deepEqual(loaded.flatMap(ruleProblems), []);
  });

  it('the rules cover the fleet signals: sig_invalid across hosts and per host, digests, recalls, escape hatches, revocation age, not_after, the audit chain, the trust root', () => {
    const uses = (metric: string) => loaded.filter((r) => metricNames(r.query).includes(metric));
    assert.ok(
      uses('mvm_dev_image_verify_sig_invalid_total').some((r) => /^count\(/.test(r.query)),
      'no alert counts sig_invalid over hosts',
    );
    for (const m of [
      'mvm_dev_image_verify_digest_mismatch_total',
      'mvm_dev_image_recalled',
      'mvm_dev_vm_running_version_info',
      'mvm_dev_image_verify_bypassed_total',
      'mvm_revocation_list_age_seconds',
      'mvm_dev_image_not_after_timestamp_seconds',
      'mvm_audit_chain_valid',
      'mvm_trusted_root_age_seconds',
      'mvm_tuf_root_expiry_timestamp_seconds',
    ])
      assert.ok(uses(m).length > 0, `no alert uses ${m}`);
  });

  it('the checks find a missing severity, a missing description, and a metric mvmctl does not export', () => {
    const good = loaded[0];
    assert.ok(good);
    assert.deepEqual(ruleProblems(good), []);
    const broken: LoadedRule = {
      ...good,
      labels: {},
      annotations: { summary: good.annotations?.['summary'] ?? '' },
      query: `${good.query} or mvm_dev_image_verify_sig_invalid_totl > 0`,
    };
    assert.deepEqual(ruleProblems(broken), [
      `${good.name}: severity label is missing`,
      `${good.name}: no useful description`,
      `${good.name}: mvm_dev_image_verify_sig_invalid_totl is not a metric mvmctl exports`,
    ]);
    assert.match(
      ruleProblems({
        ...good,
        annotations: { ...good.annotations, description: 'x'.repeat(100) },
      }).join(),
      /names no mvmctl command/,
    );
  });

  it('the PromQL reader finds the metric names and nothing else', () => {
    assert.deepEqual(
      metricNames(
        'count by (instance) (increase(mvm_a_total{job="x", le="+Inf"}[5m] offset 1m) > 1e3) ' +
          'and on (instance, job) group_left(version) mvm_b == bool 0 unless mvm_c[$__rate_interval] * time()',
      ),
      ['mvm_a_total', 'mvm_b', 'mvm_c'],
    );
  });
});
