/**
 * `mvmctl metrics serve` (issue 12, "Exposition"): a real server on
 * 127.0.0.1, scraped over HTTP, fed by real imports of signed release sets.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  appendFileSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { request, type IncomingHttpHeaders } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { configFrom } from '../src/config.js';
import { audit } from '../src/audit/record.js';
import { HOST_ARCH, startMetricsServe, testHost, VERSION, type TestHost } from './support/host.js';
import { TestPki } from './support/pki.js';
import { writeReleaseSet, type ReleaseFiles } from './support/release.js';

let root: string;
let pki: TestPki;
let trustedRoot: string;
let good: ReleaseFiles;
let tampered: ReleaseFiles;
let n = 0;

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'mvm-metrics-serve-'));
  pki = await TestPki.create();
  trustedRoot = pki.writeTrustedRoot(root);
  good = await writeReleaseSet(pki, join(root, 'good'), { version: VERSION, arch: HOST_ARCH });
  tampered = await writeReleaseSet(pki, join(root, 'tampered'), {
    version: VERSION,
    arch: HOST_ARCH,
  });
  writeFileSync(tampered.rootfs, 'not the rootfs that was signed');
});
after(() => rmSync(root, { recursive: true, force: true }));

const host = () => testHost(join(root, `host${n++}`), trustedRoot);
const logOf = (h: TestHost) => join(h.dir, 'data', 'telemetry', 'audit.jsonl');
const configOf = (h: TestHost) => configFrom(h.env, '/nonexistent');

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** One HTTP request on its own connection. */
function http(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: options.method ?? 'GET', headers: options.headers ?? {}, agent: false },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

/** The value of one sample line (`name{labels} value`), undefined when there is none. */
function sample(body: string, series: string): number | undefined {
  for (const line of body.split('\n')) {
    if (line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    if (line.slice(0, i) === series) return Number(line.slice(i + 1));
  }
  return undefined;
}

const PROMETHEUS_ACCEPT =
  'application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1';

const hasPromtool = spawnSync('promtool', ['--version']).status === 0;

describe('mvmctl metrics serve', () => {
  it('answers GET /metrics with the counters and gauges the imports left (Prometheus text format)', async () => {
    const h = host();
    assert.equal((await h.importSet(good)).code, 0);
    assert.equal((await h.importSet(tampered)).code, 14, 'a tampered rootfs is a digest mismatch');
    const serve = await startMetricsServe(h);
    try {
      let r = await http(serve.url);
      assert.equal(r.status, 200);
      assert.equal(r.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
      assert.equal(sample(r.body, 'mvm_dev_image_verify_ok_total'), 1);
      assert.equal(sample(r.body, 'mvm_dev_image_verify_digest_mismatch_total'), 1);
      assert.equal(sample(r.body, 'mvm_dev_image_verify_unchanged_total'), 0);
      assert.equal(sample(r.body, 'mvm_dev_image_verify_duration_seconds_count'), 2);
      assert.equal(sample(r.body, 'mvm_dev_image_verify_duration_seconds_bucket{le="+Inf"}'), 2);
      assert.equal(sample(r.body, 'mvm_audit_chain_valid'), 1);
      assert.equal(sample(r.body, `mvm_dev_image_verified{version="${VERSION}"}`), 1);
      assert.equal(sample(r.body, `mvm_dev_image_recalled{version="${VERSION}"}`), 0);
      const notAfter = Date.parse(good.manifestJson['not_after'] as string) / 1000;
      assert.equal(
        sample(r.body, `mvm_dev_image_not_after_timestamp_seconds{version="${VERSION}"}`),
        notAfter,
      );
      const ok = JSON.parse(readFileSync(logOf(h), 'utf8').split('\n')[0]!) as { ts: string };
      assert.equal(
        sample(r.body, 'mvm_dev_image_last_verified_timestamp_seconds'),
        Date.parse(ok.ts) / 1000,
      );
      assert.equal(sample(r.body, 'mvm_dev_vm_up'), 0);
      assert.equal(sample(r.body, 'mvm_revocation_list_age_seconds'), undefined, 'no list cached');
      if (hasPromtool) {
        const lint = spawnSync('promtool', ['check', 'metrics'], { input: r.body });
        assert.equal(lint.status, 0, `${lint.stdout}${lint.stderr}`);
      }
      // Imports while it runs are in the next scrape: a re-import is its own outcome, not a second ok.
      assert.equal((await h.importSet(good)).code, 0);
      r = await http(serve.url);
      assert.equal(sample(r.body, 'mvm_dev_image_verify_ok_total'), 1);
      assert.equal(sample(r.body, 'mvm_dev_image_verify_unchanged_total'), 1);
      assert.equal(sample(r.body, 'mvm_dev_image_verify_duration_seconds_count'), 3);
    } finally {
      await serve.stop();
    }
  });

  it('speaks OpenMetrics when the scraper prefers it, as Prometheus does', async () => {
    const h = host();
    assert.equal((await h.importSet(good)).code, 0);
    const serve = await startMetricsServe(h);
    try {
      const om = await http(serve.url, { headers: { Accept: PROMETHEUS_ACCEPT } });
      assert.equal(om.status, 200);
      assert.equal(
        om.headers['content-type'],
        'application/openmetrics-text; version=1.0.0; charset=utf-8',
      );
      assert.match(om.body, /^# TYPE mvm_dev_image_verify_ok counter$/m);
      assert.equal(sample(om.body, 'mvm_dev_image_verify_ok_total'), 1);
      assert.match(om.body, /^# TYPE mvm_dev_image_verify_duration_seconds histogram$/m);
      assert.ok(om.body.endsWith('\n# EOF\n'), 'OpenMetrics ends with # EOF');
      for (const accept of [
        'text/plain;version=0.0.4',
        'application/openmetrics-text;q=0.1, text/plain;q=0.9',
        '*/*',
      ]) {
        const text = await http(serve.url, { headers: { Accept: accept } });
        assert.equal(text.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
        assert.match(text.body, /^# TYPE mvm_dev_image_verify_ok_total counter$/m, accept);
        assert.doesNotMatch(text.body, /# EOF/);
      }
    } finally {
      await serve.stop();
    }
  });

  it('404 for any other path, 405 (with Allow) for any other method, 413 for a body; HEAD works', async () => {
    const serve = await startMetricsServe(host());
    try {
      const base = serve.url.replace(/\/metrics$/, '');
      for (const path of ['/', '/metrics/', '/metricsx', '/debug/pprof', '/../metrics/x'])
        assert.equal((await http(base + path)).status, 404, path);
      assert.equal((await http(`${serve.url}?name[]=x`)).status, 200, 'a query string is ignored');
      for (const method of ['POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH']) {
        const r = await http(serve.url, { method });
        assert.equal(r.status, 405, method);
        assert.equal(r.headers['allow'], 'GET, HEAD');
      }
      const sized = await http(serve.url, {
        headers: { 'Content-Length': '100' },
        body: 'x'.repeat(100),
      });
      assert.equal(sized.status, 413);
      const chunked = await http(serve.url, {
        headers: { 'Transfer-Encoding': 'chunked' },
        body: 'x'.repeat(100),
      });
      assert.equal(chunked.status, 413);
      const head = await http(serve.url, { method: 'HEAD' });
      assert.equal(head.status, 200);
      assert.equal(head.body, '');
      assert.ok(Number(head.headers['content-length']) > 0);
      // Headers larger than the 8 KiB bound (Node's own default is 16 KiB) are refused, not
      // buffered; headers under it are fine.
      const big = await http(serve.url, { headers: { 'X-Big': 'y'.repeat(12 * 1024) } });
      assert.equal(big.status, 431);
      const fits = await http(serve.url, { headers: { 'X-Big': 'y'.repeat(7 * 1024) } });
      assert.equal(fits.status, 200);
    } finally {
      await serve.stop();
    }
  });

  it('a scrape reads only what was appended: bytes already read are not read again', async () => {
    const h = host();
    const config = configOf(h);
    for (let i = 0; i < 3; i++)
      await audit(config, { event: 'dev.import-image', outcome: 'ok', message: `record ${i}` });
    const serve = await startMetricsServe(h);
    try {
      let r = await http(serve.url);
      assert.equal(sample(r.body, 'mvm_dev_image_verify_ok_total'), 3);
      // Edited in place (same length, same file): a whole reading finds the chain broken at line 2.
      const text = readFileSync(logOf(h), 'utf8');
      assert.ok(text.includes('"record 0"'));
      writeFileSync(logOf(h), text.replace('"record 0"', '"record X"'), { flag: 'r+' });
      await audit(config, { event: 'dev.import-image', outcome: 'failed', code: 'digest' });
      r = await http(serve.url);
      assert.equal(sample(r.body, 'mvm_dev_image_verify_digest_mismatch_total'), 1, 'appended');
      assert.equal(sample(r.body, 'mvm_dev_image_verify_ok_total'), 3);
      assert.equal(
        sample(r.body, 'mvm_audit_chain_valid'),
        1,
        'the edited region was read before the edit and was not read again',
      );
      // A whole reading (a cold mvmctl metrics) does see it.
      const cold = await h.run(['metrics']);
      assert.equal(cold.code, 0, cold.stderr);
      assert.equal(sample(cold.stdout, 'mvm_audit_chain_valid'), 0);
      assert.match(cold.stderr, /warning: the audit log's chain is BROKEN at line 2 of /);
    } finally {
      await serve.stop();
    }
  });

  it('a log cut back (shorter than what was read) is read again from its start', async () => {
    const h = host();
    const config = configOf(h);
    for (let i = 0; i < 3; i++)
      await audit(config, { event: 'dev.import-image', outcome: 'failed', code: 'signature' });
    const serve = await startMetricsServe(h);
    try {
      assert.equal(
        sample((await http(serve.url)).body, 'mvm_dev_image_verify_sig_invalid_total'),
        3,
      );
      const lines = readFileSync(logOf(h), 'utf8').split('\n');
      truncateSync(logOf(h), Buffer.byteLength(`${lines[0]}\n`));
      const r = await http(serve.url);
      assert.equal(sample(r.body, 'mvm_dev_image_verify_sig_invalid_total'), 1);
      assert.equal(sample(r.body, 'mvm_audit_chain_valid'), 0, 'the anchor says seq 3');
      assert.match(serve.stderr(), /records were removed from its end/);
    } finally {
      await serve.stop();
    }
  });

  it('a broken chain: the gauge 0 and one warning line on stderr, however many scrapes', async () => {
    const h = host();
    const config = configOf(h);
    for (let i = 0; i < 2; i++)
      await audit(config, { event: 'dev.import-image', outcome: 'ok', message: `r${i}` });
    const lines = readFileSync(logOf(h), 'utf8').split('\n');
    writeFileSync(logOf(h), [lines[0], 'garbage', ...lines.slice(1)].join('\n'));
    const serve = await startMetricsServe(h);
    try {
      for (let i = 0; i < 3; i++) {
        const r = await http(serve.url);
        assert.equal(sample(r.body, 'mvm_audit_chain_valid'), 0);
      }
      const warnings = serve.stderr().match(/^warning: .*$/gm) ?? [];
      assert.equal(warnings.length, 1, serve.stderr());
      assert.match(
        warnings[0]!,
        /the audit log's chain is BROKEN at line 2 of .*audit\.jsonl: the line is not a JSON record/,
      );
    } finally {
      await serve.stop();
    }
  });

  it('200 scrapes at once are all answered, and each sees what was there when it was sent', async () => {
    const h = host();
    await audit(configOf(h), { event: 'dev.import-image', outcome: 'ok' });
    const serve = await startMetricsServe(h);
    try {
      const replies = await Promise.all(Array.from({ length: 200 }, () => http(serve.url)));
      assert.deepEqual(new Set(replies.map((r) => r.status)), new Set([200]));
      assert.ok(replies.every((r) => sample(r.body, 'mvm_dev_image_verify_ok_total') === 1));
      await audit(configOf(h), { event: 'dev.import-image', outcome: 'ok' });
      const later = await Promise.all(Array.from({ length: 50 }, () => http(serve.url)));
      assert.ok(later.every((r) => sample(r.body, 'mvm_dev_image_verify_ok_total') === 2));
    } finally {
      await serve.stop();
    }
  });

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`stops cleanly on ${signal}: exit 0, the port released`, async () => {
      const serve = await startMetricsServe(host());
      assert.equal((await http(serve.url)).status, 200);
      const exit = await serve.stop(signal);
      assert.deepEqual(exit, { code: 0, signal: null });
      assert.match(serve.stderr(), new RegExp(`stopped \\(${signal}\\)`));
      await assert.rejects(http(serve.url), /ECONNREFUSED/);
    });
  }

  it('an address in use: exit 2, naming the address and what to do', async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
    const port = (blocker.address() as AddressInfo).port;
    try {
      const r = await host().run(['metrics', 'serve', '--listen', `127.0.0.1:${port}`]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(
        r.stderr,
        new RegExp(
          `^Error: Cannot listen on 127\\.0\\.0\\.1:${port}: the address is already in use`,
        ),
      );
      assert.match(r.stderr, /--listen 127\.0\.0\.1:9464/);
      assert.match(r.stderr, new RegExp(`ss -ltnp 'sport = :${port}'`));
    } finally {
      blocker.close();
    }
  });

  it('a --listen that is not ADDR:PORT is a usage error (exit 2)', async () => {
    for (const bad of ['9464', 'localhost', '127.0.0.1:99999', '::1:9464', '127.0.0.1:']) {
      const r = await host().run(['metrics', 'serve', '--listen', bad]);
      assert.equal(r.code, 2, `${bad}: ${r.stderr}`);
      assert.match(r.stderr, /is not ADDR:PORT/);
    }
  });

  it('an unreadable audit log is an error before it listens (exit 17)', async () => {
    const h = host();
    await audit(configOf(h), { event: 'dev.import-image', outcome: 'ok' });
    rmSync(logOf(h));
    appendFileSync(join(h.dir, 'target'), '');
    spawnSync('ln', ['-s', join(h.dir, 'target'), logOf(h)]);
    const r = await h.run(['metrics', 'serve', '--listen', '127.0.0.1:0']);
    assert.equal(r.code, 17, r.stderr);
    assert.match(r.stderr, /Cannot read the audit log/);
    assert.doesNotMatch(r.stderr, /listening on/);
  });
});
