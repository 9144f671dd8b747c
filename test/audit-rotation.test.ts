/**
 * Size-based rotation of the audit log (issue 12, "The audit log"): the chain
 * runs on across files, `audit tail` and the counters read across them, the
 * counts stay exact after files are dropped (the checkpoint carries them), and
 * tampering with a rotated file, or removing one, is reported.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { configFrom } from '../src/config.js';
import { audit, type AuditRecord } from '../src/audit/record.js';
import { HOST_ARCH, testHost, VERSION, type TestHost } from './support/host.js';
import { TestPki } from './support/pki.js';
import { writeReleaseSet, type ReleaseFiles } from './support/release.js';

let root: string;
let trustedRoot: string;
let good: ReleaseFiles;
let tampered: ReleaseFiles;
let n = 0;

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'mvm-audit-rotation-'));
  const pki = await TestPki.create();
  trustedRoot = pki.writeTrustedRoot(root);
  good = await writeReleaseSet(pki, join(root, 'good'), { version: VERSION, arch: HOST_ARCH });
  tampered = await writeReleaseSet(pki, join(root, 'bad'), { version: VERSION, arch: HOST_ARCH });
  writeFileSync(tampered.rootfs, 'tampered');
});
after(() => {
  delete process.env['MVM_AUDIT_MAX_BYTES'];
  rmSync(root, { recursive: true, force: true });
});

const host = () => testHost(join(root, `host${n++}`), trustedRoot);
const logOf = (h: TestHost, k = 0) =>
  join(h.dir, 'data', 'telemetry', k === 0 ? 'audit.jsonl' : `audit.jsonl.${k}`);
const anchorOf = (h: TestHost) => join(h.dir, 'data', 'revocations', 'audit-anchor.json');
const linesOf = (path: string) => readFileSync(path, 'utf8').trim().split('\n');
const sha = (s: string) => createHash('sha256').update(s).digest('hex');

/**
 * Appends through the library, as the commands do (audit() reads MVM_AUDIT_MAX_BYTES from the
 * environment), one record per call: `kinds` cycles through the outcomes.
 */
async function appendMany(h: TestHost, count: number, maxBytes: number): Promise<void> {
  const config = configFrom(h.env, '/nonexistent');
  const kinds: Omit<AuditRecord, 'ts' | 'mvmctlVersion' | 'pid' | 'uid'>[] = [
    { event: 'dev.import-image', outcome: 'ok', durationSeconds: 0.3 },
    { event: 'dev.import-image', outcome: 'failed', code: 'signature', durationSeconds: 0.07 },
    { event: 'dev.import-image', outcome: 'unchanged', durationSeconds: 3 },
    { event: 'dev.import-image', outcome: 'bypassed', bypassed: ['hash'], durationSeconds: 0.4 },
    { event: 'dev.import-image', outcome: 'failed', code: 'digest', expired: true },
  ];
  process.env['MVM_AUDIT_MAX_BYTES'] = String(maxBytes);
  try {
    for (let i = 0; i < count; i++) await audit(config, { ...kinds[i % kinds.length]! });
  } finally {
    delete process.env['MVM_AUDIT_MAX_BYTES'];
  }
}

/** What appendMany(count) must count, whatever was rotated away. */
function expected(count: number): Record<string, number> {
  const per = (k: number) => Math.floor(count / 5) + (count % 5 > k ? 1 : 0);
  return {
    dev_image_verify_ok_total: per(0),
    dev_image_verify_sig_invalid_total: per(1),
    dev_image_verify_unchanged_total: per(2),
    dev_image_verify_bypassed_total: per(3),
    dev_image_verify_digest_mismatch_total: per(4),
    dev_image_verify_expired_total: per(4),
  };
}

describe('audit log rotation', () => {
  it("a new file's first record is a checkpoint chained to the previous file's last line", async () => {
    const h = host();
    await appendMany(h, 12, 2000);
    assert.ok(existsSync(logOf(h, 1)), 'rotated');
    const previous = linesOf(logOf(h, 1));
    const [first] = linesOf(logOf(h));
    const checkpoint = JSON.parse(first!);
    const last = JSON.parse(previous.at(-1)!);
    assert.equal(checkpoint.event, 'audit.rotated');
    assert.equal(checkpoint.outcome, 'ok');
    assert.equal(checkpoint.prev, sha(previous.at(-1)!), 'chained to the last line before it');
    assert.equal(checkpoint.seq, last.seq + 1);
    assert.equal(checkpoint.uid, process.getuid!());
    assert.equal(checkpoint.previous.file, 'audit.jsonl.1');
    assert.equal(checkpoint.previous.lastSeq, last.seq);
    assert.equal(checkpoint.rotation, 1, 'one rotation in twelve records of 2000 bytes');
    // The totals of everything before it, in the counters' own names.
    const before = checkpoint.seq - 1;
    assert.equal(before, previous.length);
    for (const [k, v] of Object.entries(expected(before)))
      assert.equal(checkpoint.totals.counters[k], v, k);
    assert.equal(checkpoint.totals.duration.count, before - Math.floor(before / 5));
    const tail = await h.run(['audit', 'tail']);
    assert.equal(tail.code, 0, tail.stderr);
    assert.match(
      tail.stderr,
      new RegExp(`chain: intact \\(${previous.length + 12 - before + 1} records\\)`),
    );
  });

  it('counters stay exact across rotations, also once files are dropped past the five kept', async () => {
    const h = host();
    await appendMany(h, 90, 1500);
    assert.ok(existsSync(logOf(h, 5)), 'five rotated files kept');
    assert.ok(!existsSync(logOf(h, 6)), 'and no sixth');
    const first = JSON.parse(linesOf(logOf(h, 5))[0]!);
    assert.equal(first.event, 'audit.rotated', 'the oldest kept file starts after dropped ones');
    assert.ok(first.rotation > 1);
    const m = await h.metrics();
    for (const [k, v] of Object.entries(expected(90))) assert.equal(m[k], v, k);
    const hist = m['dev_image_verify_duration_seconds'] as unknown as {
      count: number;
      buckets: { le: string; count: number }[];
    };
    assert.equal(hist.count, 72, 'every record with a duration, dropped files included');
    assert.deepEqual(
      hist.buckets.map((b) => b.le),
      ['0.05', '0.1', '0.25', '0.5', '1', '2.5', '5', '10', '30', '60', '120', '+Inf'],
      'le in numeric order, +Inf last',
    );
    assert.equal(hist.buckets.find((b) => b.le === '0.1')!.count, 18);
    assert.equal(hist.buckets.find((b) => b.le === '0.5')!.count, 54);
    assert.equal(hist.buckets.find((b) => b.le === '5')!.count, 72);
    assert.equal(m['audit_chain_valid'], 1);
    const tail = await h.run(['audit', 'tail']);
    assert.equal(tail.code, 0, tail.stderr);
  });

  it('audit tail reads across rotated files, in order', async () => {
    const h = host();
    await appendMany(h, 14, 2500);
    const r = await h.run(['audit', 'tail', '-n', '200', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    const files = [5, 4, 3, 2, 1, 0].filter((k) => existsSync(logOf(h, k)));
    assert.ok(files.length >= 2, 'rotated at least once');
    const all = files.flatMap((k) => linesOf(logOf(h, k)));
    assert.equal(doc.records, all.length);
    assert.deepEqual(
      doc.tail.map((t: { seq: number }) => t.seq),
      all.map((l) => JSON.parse(l).seq),
    );
    const seqs = doc.tail.map((t: { seq: number }) => t.seq);
    assert.deepEqual(
      seqs,
      seqs.map((_: number, i: number) => seqs[0] + i),
      'consecutive',
    );
    const human = await h.run(['audit', 'tail', '-n', '200']);
    assert.match(human.stdout, /audit\.rotated +ok +- +rotation-\d/m);
  });

  it('imports rotate the log too (MVM_AUDIT_MAX_BYTES), and the counts hold', async () => {
    const h = host();
    const env = { MVM_AUDIT_MAX_BYTES: '400' };
    assert.equal((await h.importSet(good, [], env)).code, 0);
    assert.equal((await h.importSet(tampered, [], env)).code, 14);
    assert.equal((await h.importSet(good, [], env)).code, 0);
    assert.ok(existsSync(logOf(h, 2)), 'each import rotated the log');
    const m = await h.metrics();
    assert.equal(m['dev_image_verify_ok_total'], 1);
    assert.equal(m['dev_image_verify_unchanged_total'], 1);
    assert.equal(m['dev_image_verify_digest_mismatch_total'], 1);
    assert.equal(m['audit_chain_valid'], 1);
    assert.equal((await h.run(['audit', 'tail'])).code, 0);
  });

  it('a record edited in a rotated file breaks the chain there, and the file is named', async () => {
    const h = host();
    await appendMany(h, 30, 2000);
    const lines = readFileSync(logOf(h, 2), 'utf8').split('\n');
    lines[2] = lines[2]!.replace('"uid":', '"uid":1');
    writeFileSync(logOf(h, 2), lines.join('\n'));
    const r = await h.run(['audit', 'tail']);
    assert.equal(r.code, 10, r.stderr);
    assert.match(
      r.stderr,
      /Error: The audit log .*audit\.jsonl\.2 does not chain at line 4: the line does not follow/,
    );
    const m = await h.run(['metrics']);
    assert.match(m.stdout, /^mvm_audit_chain_valid 0$/m);
    assert.match(
      m.stderr,
      /warning: the audit log's chain is BROKEN at line 4 of .*audit\.jsonl\.2/,
    );
    const status = JSON.parse((await h.run(['status', '--json'])).stdout);
    assert.equal(status.auditChain.intact, false);
    assert.match(status.auditChain.path, /audit\.jsonl\.2$/);
  });

  it('a rotated file removed is reported', async () => {
    const h = host();
    await appendMany(h, 30, 2000);
    rmSync(logOf(h, 3));
    const r = await h.run(['audit', 'tail', '--json']);
    assert.equal(r.code, 10, r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.equal(doc.chain.intact, false);
    assert.equal(doc.chain.file, 'audit.jsonl.3');
    assert.match(doc.chain.reason, /the rotated file is missing/);
  });

  it('the oldest kept rotation removed (audit.jsonl.5, past files dropped) is a break too', async () => {
    // Once files have been dropped, the oldest file present may start mid-chain; only the
    // rotation count in the checkpoints says audit.jsonl.5 must still be there.
    const h = host();
    await appendMany(h, 90, 1500);
    assert.ok(existsSync(logOf(h, 5)));
    rmSync(logOf(h, 5));
    const r = await h.run(['audit', 'tail', '--json']);
    assert.equal(r.code, 10, r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.equal(doc.chain.intact, false);
    assert.equal(doc.chain.file, 'audit.jsonl.5');
    assert.match(
      doc.chain.reason,
      /the rotated file is missing \(the log was rotated \d+ time\(s\) and keeps 5 rotated files\)/,
    );
    assert.equal((await h.metrics())['audit_chain_valid'], 0);
  });

  it('a checkpoint whose totals were changed is caught against the file before it', async () => {
    const h = host();
    await appendMany(h, 20, 2000);
    // Lower a count in the newest checkpoint and re-chain the file and the anchor after it: the
    // chain and the anchor agree, but the totals no longer add up to the records of audit.jsonl.1.
    const lines = linesOf(logOf(h));
    const cp = JSON.parse(lines[0]!);
    cp.totals.counters.dev_image_verify_sig_invalid_total -= 1;
    let prev = cp.prev as string;
    const rechained = [JSON.stringify(cp), ...lines.slice(1)].map((l) => {
      const line = JSON.stringify({ ...JSON.parse(l), prev });
      prev = sha(line);
      return line;
    });
    writeFileSync(logOf(h), `${rechained.join('\n')}\n`);
    const a = JSON.parse(readFileSync(anchorOf(h), 'utf8'));
    writeFileSync(anchorOf(h), JSON.stringify({ ...a, hash: prev }));
    const r = await h.run(['audit', 'tail']);
    assert.equal(r.code, 10, r.stderr);
    assert.match(
      r.stderr,
      /audit\.jsonl does not chain at line 1: the rotation checkpoint does not add up/,
    );
  });

  it('a break recorded before rotation stays reported after its file is dropped', async () => {
    const h = host();
    await appendMany(h, 4, 1_000_000);
    // Records removed from the end: the next append records the anchor mismatch.
    const lines = linesOf(logOf(h));
    writeFileSync(logOf(h), `${lines.slice(0, 2).join('\n')}\n`);
    await appendMany(h, 1, 1_000_000);
    assert.equal((await h.run(['audit', 'tail'])).code, 10);
    // Enough appends that the file holding the mismatch record is rotated past the five kept.
    await appendMany(h, 60, 1200);
    assert.ok(!readFileSync(logOf(h, 5), 'utf8').includes('audit.anchor-mismatch'));
    const r = await h.run(['audit', 'tail', '--json']);
    assert.equal(r.code, 10, r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.match(
      doc.chain.reason,
      /before an earlier rotation \(at seq \d+\): the record says the audit log ends at seq 2 but the anchor says 4/,
    );
    const m = await h.metrics();
    assert.equal(m['audit_chain_valid'], 0);
  });
});
