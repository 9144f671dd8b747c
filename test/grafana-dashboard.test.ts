/**
 * The shipped Grafana dashboard (deploy/grafana/mvmctl-dashboard.json): valid JSON, every query
 * over metrics mvmctl exports (and every exported metric on some panel), and every query one a
 * real Prometheus accepts.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  DASHBOARD,
  EXPORTED_METRICS,
  metricNames,
  startPrometheus,
  unknownMetrics,
  type PrometheusServer,
} from './support/prometheus.js';

interface Panel {
  id?: number;
  type?: string;
  title?: string;
  datasource?: { type?: string; uid?: string };
  targets?: { expr?: string }[];
  panels?: Panel[];
}
interface Dashboard {
  title?: string;
  uid?: string;
  panels?: Panel[];
  templating?: { list?: { name?: string; type?: string; query?: unknown }[] };
}

/** Every PromQL query in the dashboard: the panels' `expr`s and the variables' label_values(). */
function queries(dashboard: Dashboard): string[] {
  const out: string[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object')
      for (const [k, x] of Object.entries(v)) {
        if (k === 'expr' && typeof x === 'string') out.push(x);
        else walk(x);
      }
  };
  walk(dashboard.panels);
  for (const variable of dashboard.templating?.list ?? []) {
    if (variable.type !== 'query') continue;
    const q = variable.query;
    const text = typeof q === 'string' ? q : (q as { query?: string } | undefined)?.query;
    const selector = text && /^label_values\((.+),\s*\w+\)$/.exec(text.trim())?.[1];
    assert.ok(selector, `variable ${variable.name}: not a label_values() query: ${String(text)}`);
    out.push(selector);
  }
  return out;
}

const allPanels = (panels: Panel[] = []): Panel[] =>
  panels.flatMap((p) => [p, ...allPanels(p.panels)]);

let text: string;
let dashboard: Dashboard;
let root: string;
let prometheus: PrometheusServer | undefined;

before(async () => {
  text = readFileSync(DASHBOARD, 'utf8');
  dashboard = JSON.parse(text) as Dashboard;
  root = mkdtempSync(join(tmpdir(), 'mvm-grafana-'));
  prometheus = await startPrometheus(join(root, 'prometheus'), 'global:\n  scrape_interval: 1m\n');
});
after(async () => {
  await prometheus?.stop();
  rmSync(root, { recursive: true, force: true });
});

describe('Grafana dashboard', () => {
  it('is valid JSON with a title, a uid, a Prometheus data source variable and panels', () => {
    assert.doesNotThrow(() => JSON.parse(text));
    assert.ok(dashboard.title && dashboard.uid);
    assert.ok(
      dashboard.templating?.list?.some((v) => v.type === 'datasource' && v.query === 'prometheus'),
    );
    const panels = allPanels(dashboard.panels);
    const ids = panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, 'panel ids are not unique');
    const graphs = panels.filter((p) => p.type !== 'row');
    assert.ok(graphs.length >= 10, `only ${graphs.length} panels`);
    for (const p of graphs) {
      assert.ok(p.targets?.length && p.targets.every((t) => t.expr), `${p.title}: no query`);
      assert.equal(p.datasource?.uid, '${datasource}', `${p.title}: not on the chosen data source`);
    }
  });

  it('every mvm_ metric a query uses is one mvmctl exports', () => {
    const all = queries(dashboard);
    assert.ok(all.length >= 20);
    assert.deepEqual(unknownMetrics(all), []);
    for (const q of all) assert.ok(metricNames(q).length > 0, `a query with no metric: ${q}`);
  });

  it('every exported metric is on some panel: counters, the histogram, the gauges', () => {
    const used = new Set(queries(dashboard).flatMap(metricNames));
    assert.deepEqual(
      [...EXPORTED_METRICS].filter((m) => !used.has(m)),
      [],
    );
  });

  it('the name check reports a name mvmctl does not export (a copy changed in memory)', () => {
    const copy = JSON.parse(text) as Dashboard;
    const target = allPanels(copy.panels).find((p) => p.targets?.length)?.targets?.[0];
    assert.ok(target);
    target.expr = 'sum(rate(mvm_dev_image_verify_sig_invalid_totl{instance=~"$instance"}[5m]))';
    assert.deepEqual(unknownMetrics(queries(copy)), ['mvm_dev_image_verify_sig_invalid_totl']);
    const variable = copy.templating?.list?.find((v) => v.type === 'query');
    assert.ok(variable);
    variable.query = { query: 'label_values(node_uname_info, instance)' };
    assert.deepEqual(unknownMetrics(queries(copy)), [
      'mvm_dev_image_verify_sig_invalid_totl',
      'node_uname_info',
    ]);
  });

  it('Prometheus accepts every query (the variables filled in as Grafana does)', async () => {
    assert.ok(prometheus);
    const server = prometheus;
    const failures: string[] = [];
    for (const q of queries(dashboard)) {
      const filled = q.replaceAll('$__rate_interval', '1m').replaceAll('$instance', '.*');
      await server
        .api('/api/v1/query', { query: filled })
        .catch((e: unknown) => failures.push(`${q}: ${String(e)}`));
    }
    assert.deepEqual(failures, []);
    // ...and rejects a broken one, so the check can fail.
    await assert.rejects(server.api('/api/v1/query', { query: 'sum(rate(mvm_x[1m])' }), /parse/);
  });
});
