/**
 * `mvmctl metrics` (issue 12): counting honestly (bypassed, unchanged, expired
 * installs are what they are), the gauges, the textfile for node_exporter, a
 * broken chain loud in `status` and `metrics`, and the audit records (the uid,
 * the columns of `audit tail`).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import {
  closeSync,
  fstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  openSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { configFrom } from '../src/config.js';
import { appendAuditRecords, audit } from '../src/audit/record.js';
import { HOST_ARCH, testHost, VERSION, type TestHost } from './support/host.js';
import { TestPki } from './support/pki.js';
import { EXPORTED_METRICS } from './support/prometheus.js';
import { writeReleaseSet, writeRevocationList, type ReleaseFiles } from './support/release.js';
import { writeVmState } from './support/vm.js';
import { suiteWorld } from './support/world.js';

let root: string;
let pki: TestPki;
let trustedRoot: string;
let good: ReleaseFiles;
let n = 0;

before(async () => ({ root, pki, trustedRoot, good } = await suiteWorld('mvm-metrics-cli-')));
after(() => rmSync(root, { recursive: true, force: true }));

const host = () => testHost(join(root, `host${n++}`), trustedRoot);
const logOf = (h: TestHost) => join(h.dir, 'data', 'telemetry', 'audit.jsonl');
const configOf = (h: TestHost) => configFrom(h.env, '/nonexistent');

function sample(body: string, series: string): number | undefined {
  for (const line of body.split('\n')) {
    if (line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    if (line.slice(0, i) === series) return Number(line.slice(i + 1));
  }
  return undefined;
}

/** `audit tail` rows as cells, checked to start where the header's columns start. */
async function tailRows(h: TestHost): Promise<Record<string, string>[]> {
  const r = await h.run(['audit', 'tail', '-n', '50']);
  assert.equal(r.code, 0, r.stderr);
  const [header, ...rows] = r.stdout.trimEnd().split('\n');
  const names = header!.split(/ {2,}/);
  assert.deepEqual(names, [
    'TIME',
    'SEQ',
    'UID',
    'EVENT',
    'OUTCOME',
    'CODE',
    'WHAT',
    'VERSION',
    'MESSAGE',
  ]);
  const starts = names.map((c) => header!.indexOf(c));
  return rows.map((row) => {
    const cells: Record<string, string> = {};
    names.forEach((name, i) => {
      // Aligned: every cell starts at its column and the one before it ends in spaces.
      if (i > 0 && row.length > starts[i]!)
        assert.equal(row[starts[i]! - 1], ' ', `column ${name} in: ${row}`);
      const end = i + 1 < names.length ? starts[i + 1]! : row.length;
      cells[name] = row.slice(starts[i]!, end).trim();
    });
    return cells;
  });
}

describe('counting honestly', () => {
  it('an install with an escape hatch counts as bypassed, not ok; audit tail says UNVERIFIED', async () => {
    const h = host();
    const r = await h.importSet(good, [], { MVM_SKIP_COSIGN_VERIFY: '1' });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(h.audit().at(-1)!['outcome'], 'bypassed');
    const m = await h.metrics();
    assert.equal(m['dev_image_verify_ok_total'], 0);
    assert.equal(m['dev_image_verify_bypassed_total'], 1);
    assert.equal((m['dev_image_verified'] as unknown as Record<string, number>)[VERSION], 0);
    assert.equal(m['dev_image_last_verified_timestamp_seconds'], undefined, 'not a verification');
    const [row] = await tailRows(h);
    assert.equal(row!['OUTCOME'], 'bypassed');
    assert.equal(row!['WHAT'], 'UNVERIFIED-install(skip:cosign)');
  });

  it('a re-import of the installed image is its own outcome (unchanged), not a second ok', async () => {
    const h = host();
    assert.equal((await h.importSet(good)).code, 0);
    assert.equal((await h.importSet(good)).code, 0);
    const records = h.audit();
    assert.deepEqual(
      records.map((r) => r['outcome']),
      ['ok', 'unchanged'],
    );
    const m = await h.metrics();
    assert.equal(m['dev_image_verify_ok_total'], 1);
    assert.equal(m['dev_image_verify_unchanged_total'], 1);
    // The unchanged re-import verified too: it is the last successful verification.
    assert.equal(
      m['dev_image_last_verified_timestamp_seconds'],
      Date.parse(records[1]!['ts'] as string) / 1000,
    );
    const rows = await tailRows(h);
    assert.deepEqual(
      rows.map((r) => [r['OUTCOME'], r['WHAT'], r['VERSION']]),
      [
        ['ok', 'install', `v${VERSION}`],
        ['unchanged', 'unchanged-re-import', `v${VERSION}`],
      ],
    );
  });

  it('an expired install is an ok that audit tail marks EXPIRED', async () => {
    const h = host();
    const old = await writeReleaseSet(pki, join(root, `expired${n}`), {
      version: VERSION,
      arch: HOST_ARCH,
      builtAt: new Date(Date.now() - 100 * 86_400_000),
    });
    assert.equal((await h.importSet(old)).code, 0);
    const m = await h.metrics();
    assert.equal(m['dev_image_verify_ok_total'], 1);
    assert.equal(m['dev_image_verify_expired_total'], 1);
    const [row] = await tailRows(h);
    assert.equal(row!['WHAT'], 'install,EXPIRED');
  });

  it('records written before outcomes were split: an ok with an escape hatch reads as bypassed', async () => {
    const h = host();
    mkdirSync(join(h.dir, 'data', 'telemetry'), { recursive: true });
    const base = { ts: new Date().toISOString(), mvmctlVersion: '0.13.0', pid: 1 } as const;
    await appendAuditRecords(logOf(h), [
      { ...base, event: 'dev.import-image', outcome: 'ok', bypassed: ['hash'] },
      { ...base, event: 'dev.import-image', outcome: 'ok', bypassed: [] },
      { ...base, event: 'dev.import-image', outcome: 'ok' },
    ]);
    const m = await h.metrics();
    assert.equal(m['dev_image_verify_ok_total'], 2);
    assert.equal(m['dev_image_verify_bypassed_total'], 1);
    assert.equal(m['audit_chain_valid'], 1);
    const rows = await tailRows(h);
    assert.deepEqual(
      rows.map((r) => [r['OUTCOME'], r['WHAT'], r['UID']]),
      [
        ['bypassed', 'UNVERIFIED-install(skip:hash)', '-'],
        ['ok', 'install', '-'],
        ['ok', 'install', '-'],
      ],
    );
  });
});

describe('the audit records', () => {
  it('carry the uid that ran the command, and audit tail shows it in its column', async () => {
    const h = host();
    assert.equal((await h.importSet(good)).code, 0);
    await audit(configOf(h), { event: 'dev.import-image', outcome: 'failed', code: 'digest' });
    for (const r of h.audit()) assert.equal(r['uid'], process.getuid!());
    const rows = await tailRows(h);
    assert.deepEqual(
      rows.map((r) => [r['SEQ'], r['UID'], r['EVENT'], r['OUTCOME'], r['CODE']]),
      [
        ['1', String(process.getuid!()), 'dev.import-image', 'ok', '-'],
        ['2', String(process.getuid!()), 'dev.import-image', 'failed', 'digest'],
      ],
    );
  });
});

describe('a broken audit chain is loud wherever the log is read', () => {
  async function brokenHost(): Promise<TestHost> {
    const h = host();
    for (let i = 0; i < 3; i++)
      await audit(configOf(h), { event: 'dev.import-image', outcome: 'ok', message: `r${i}` });
    const lines = readFileSync(logOf(h), 'utf8').split('\n');
    lines[1] = lines[1]!.replace('"r1"', '"r9"');
    writeFileSync(logOf(h), lines.join('\n'));
    return h;
  }

  it('metrics: the gauge 0, one warning line on stderr, exit 0 (text and JSON)', async () => {
    const h = await brokenHost();
    const r = await h.run(['metrics']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sample(r.stdout, 'mvm_audit_chain_valid'), 0);
    assert.equal(sample(r.stdout, 'mvm_dev_image_verify_ok_total'), 3, 'still counted');
    const warnings = r.stderr.trim().split('\n');
    assert.equal(warnings.length, 1, r.stderr);
    assert.match(
      warnings[0]!,
      /^warning: the audit log's chain is BROKEN at line 3 of .*audit\.jsonl: the line does not follow the one before it/,
    );
    const j = await h.run(['metrics', '--json']);
    assert.equal(JSON.parse(j.stdout)['audit_chain_valid'], 0);
    assert.match(j.stderr, /BROKEN/);
    const intact = host();
    await audit(configOf(intact), { event: 'dev.import-image', outcome: 'ok' });
    const ok = await intact.run(['metrics']);
    assert.equal(sample(ok.stdout, 'mvm_audit_chain_valid'), 1);
    assert.equal(ok.stderr, '');
  });

  it('status: a line in the report, a warning, and the JSON says where', async () => {
    const h = await brokenHost();
    const human = await h.run(['status']);
    assert.equal(human.code, 0, human.stderr);
    assert.match(
      human.stdout,
      /^Audit log: CHAIN BROKEN at line 3 of .*audit\.jsonl: the line does not follow/m,
    );
    assert.match(human.stderr, /^warning: the audit log's chain is BROKEN at line 3/m);
    const json = await h.run(['status', '--json']);
    const s = JSON.parse(json.stdout);
    assert.equal(s.auditChain.intact, false);
    assert.equal(s.auditChain.brokenAt, 3);
    assert.match(s.auditChain.path, /audit\.jsonl$/);
    assert.equal(s.metrics.audit_chain_valid, 0);
    const fine = host();
    await audit(configOf(fine), { event: 'dev.import-image', outcome: 'ok' });
    const f = await fine.run(['status', '--json']);
    assert.deepEqual(JSON.parse(f.stdout).auditChain, { intact: true, records: 1 });
    assert.match((await fine.run(['status'])).stdout, /^Audit log: chain intact \(1 record\)$/m);
  });
});

describe('metrics --textfile DIR', () => {
  it('writes DIR/mvmctl.prom (mode 0644) equal to the exposition, leaving nothing else', async () => {
    const h = host();
    assert.equal((await h.importSet(good)).code, 0);
    const dir = join(h.dir, 'textfile');
    mkdirSync(dir);
    const r = await h.run(['metrics', '--textfile', dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '');
    assert.deepEqual(readdirSync(dir), ['mvmctl.prom']);
    const file = join(dir, 'mvmctl.prom');
    assert.equal(statSync(file).mode & 0o777, 0o644);
    // The trusted root's age moves on between the two runs; the rest is the same exposition.
    const ageless = (t: string) =>
      t.replace(/^(mvm_trusted_root_age_seconds\{origin="file"\}) [0-9.e+]+$/m, '$1 AGE');
    assert.match(readFileSync(file, 'utf8'), /^mvm_trusted_root_age_seconds\{origin="file"\} /m);
    assert.equal(ageless(readFileSync(file, 'utf8')), ageless((await h.run(['metrics'])).stdout));
    assert.equal(sample(readFileSync(file, 'utf8'), 'mvm_dev_image_verify_ok_total'), 1);
  });

  it('replaces the file whole: a reader never sees it partly written', async () => {
    const h = host();
    for (let i = 0; i < 50; i++)
      await audit(configOf(h), { event: 'dev.import-image', outcome: 'failed', code: 'digest' });
    const dir = join(h.dir, 'textfile');
    mkdirSync(dir);
    assert.equal((await h.run(['metrics', '--textfile', dir])).code, 0);
    const file = join(dir, 'mvmctl.prom');
    // Held open, the first file's inode cannot be reused by the files that replace it.
    const held = openSync(file, 'r');
    const inode = fstatSync(held).ino;
    let reads = 0;
    let stop = false;
    const reader = (async () => {
      while (!stop) {
        const text = readFileSync(file, 'utf8');
        assert.ok(
          text.endsWith('mvm_audit_chain_valid 1\n'),
          `a partial file: ${text.length} bytes`,
        );
        reads++;
        await new Promise((r) => setImmediate(r));
      }
    })();
    const writers = await Promise.all(
      Array.from({ length: 6 }, () => h.run(['metrics', '--textfile', dir])),
    );
    stop = true;
    await reader;
    for (const w of writers) assert.equal(w.code, 0, w.stderr);
    assert.ok(reads > 10, `the reader read ${reads} times`);
    assert.notEqual(statSync(file).ino, inode, 'renamed into place, not rewritten');
    closeSync(held);
    assert.deepEqual(readdirSync(dir), ['mvmctl.prom'], 'no temporary file left');
  });

  it('a directory that is not there: exit 3; --json with --textfile: exit 2', async () => {
    const h = host();
    const r = await h.run(['metrics', '--textfile', join(h.dir, 'nope')]);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /The textfile directory .*nope cannot be used/);
    assert.equal((await h.run(['metrics', '--textfile', h.dir, '--json'])).code, 2);
  });

  it('metrics --help documents the systemd timer, and deploy/systemd ships the same units', async () => {
    const r = await host().run(['metrics', '--help']);
    assert.equal(r.code, 0);
    for (const unit of ['mvmctl-metrics.service', 'mvmctl-metrics.timer']) {
      assert.match(r.stdout, new RegExp(`/etc/systemd/system/${unit.replace('.', '\\.')}`));
      const text = readFileSync(new URL(`../deploy/systemd/${unit}`, import.meta.url), 'utf8');
      // Every directive in the help is in the shipped unit.
      const section = r.stdout.split(`# /etc/systemd/system/${unit}`)[1]!.split('\n\n')[0]!;
      for (const line of section
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => /^[A-Z[]/.test(l)))
        assert.ok(text.includes(line), `${unit}: ${line}`);
    }
    assert.match(r.stdout, /ExecStart=\/usr\/local\/bin\/mvmctl metrics --textfile /);
  });
});

describe('the gauges', () => {
  let fakeQemu: ChildProcess | undefined;
  after(() => fakeQemu?.kill('SIGKILL'));

  it('installed images, the revocation list, the dev VM: each gauge, and every name the rules use', async () => {
    const h = host();
    assert.equal((await h.importSet(good)).code, 0);
    let r = await h.run(['metrics']);
    assert.equal(sample(r.stdout, 'mvm_revocation_list_age_seconds'), undefined, 'no list');
    assert.equal(sample(r.stdout, 'mvm_dev_vm_up'), 0);
    assert.doesNotMatch(r.stdout, /^mvm_dev_vm_running_version_info/m);

    // The installed version is recalled by a cached list two hours old.
    await writeRevocationList(pki, h.revocations, [{ version: VERSION, arch: HOST_ARCH }]);
    const twoHoursAgo = (Date.now() - 2 * 3600_000) / 1000;
    utimesSync(join(h.revocations, 'revoked-versions.json'), twoHoursAgo, twoHoursAgo);
    // A process that passes for the dev VM's QEMU: its command line names the state directory's pid file.
    const vmDir = join(h.dir, 'data', 'vms', 'dev');
    fakeQemu = spawn(
      process.execPath,
      ['-e', 'setInterval(() => {}, 1e6)', '--', '-pidfile', join(vmDir, 'qemu.pid')],
      { stdio: 'ignore' },
    );
    await new Promise((res) => fakeQemu!.once('spawn', res));
    const startTime = readFileSync(`/proc/${fakeQemu.pid}/stat`, 'utf8')
      .split(') ')[1]!
      .split(' ')[19]!;
    writeVmState(vmDir, fakeQemu.pid!, startTime);

    r = await h.run(['metrics']);
    assert.equal(r.code, 0, r.stderr);
    const age = sample(r.stdout, 'mvm_revocation_list_age_seconds')!;
    assert.ok(age >= 7200 && age < 7300, `age ${age}`);
    assert.equal(sample(r.stdout, `mvm_dev_image_recalled{version="${VERSION}"}`), 1);
    assert.equal(sample(r.stdout, `mvm_dev_image_verified{version="${VERSION}"}`), 1);
    assert.equal(sample(r.stdout, 'mvm_dev_vm_up'), 1);
    assert.equal(sample(r.stdout, `mvm_dev_vm_running_version_info{version="${VERSION}"}`), 1);
    const names = new Set(
      r.stdout
        .split('\n')
        .filter((l) => l && !l.startsWith('#'))
        .map((l) => l.split(/[{ ]/)[0]!),
    );
    // A trusted root named by a file has no TUF root behind it: that gauge only is absent.
    assert.deepEqual(
      [...names].sort(),
      [...EXPORTED_METRICS].filter((m) => m !== 'mvm_tuf_root_expiry_timestamp_seconds').sort(),
    );
    const embedded = await h.run(['metrics'], { MVM_TRUSTED_ROOT: '' });
    const tufRoot = JSON.parse(readFileSync(join('assets', 'tuf-root.json'), 'utf8')).signed;
    assert.equal(
      sample(embedded.stdout, 'mvm_tuf_root_expiry_timestamp_seconds'),
      Date.parse(tufRoot.expires) / 1000,
    );
    assert.ok(sample(embedded.stdout, 'mvm_trusted_root_age_seconds{origin="embedded"}')! > 0);
    const j = JSON.parse((await h.run(['metrics', '--json'])).stdout);
    assert.deepEqual(j['dev_vm_running_version_info'], { [VERSION]: 1 });
    assert.deepEqual(j['dev_image_recalled'], { [VERSION]: 1 });

    fakeQemu.kill('SIGKILL');
    await new Promise((res) => fakeQemu!.once('exit', res));
    r = await h.run(['metrics']);
    assert.equal(sample(r.stdout, 'mvm_dev_vm_up'), 0);
    assert.doesNotMatch(r.stdout, /^mvm_dev_vm_running_version_info/m);
  });

  it('a cached list that does not verify: no age, and a warning that says why', async () => {
    const h = host();
    await writeRevocationList(pki, h.revocations, [{ version: '0.0.1' }]);
    writeFileSync(
      join(h.revocations, 'revoked-versions.json'),
      readFileSync(join(h.revocations, 'revoked-versions.json'), 'utf8').replace('0.0.1', '0.0.2'),
    );
    const r = await h.run(['metrics']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sample(r.stdout, 'mvm_revocation_list_age_seconds'), undefined);
    assert.match(r.stderr, /warning: the cached revocation list in .* is not usable/);
  });
});
