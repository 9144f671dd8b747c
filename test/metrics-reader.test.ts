/**
 * The incremental reader behind `metrics serve` (src/audit/log-files.ts),
 * library-level: what each refresh reads (its byte count), what makes it start
 * over, and that what it counts always equals a whole reading of the log.
 */
import assert from 'node:assert/strict';
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
  appendFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { appendAuditRecords, type AuditRecord } from '../src/audit/record.js';
import { AuditLogReader, readAuditLog, type AuditView } from '../src/audit/log-files.js';

let root: string;
let n = 0;
before(() => {
  root = mkdtempSync(join(tmpdir(), 'mvm-metrics-reader-'));
});
after(() => rmSync(root, { recursive: true, force: true }));

function logDir() {
  const dir = join(root, `log${n++}`);
  mkdirSync(dir, { recursive: true });
  return { path: join(dir, 'audit.jsonl'), anchor: join(dir, 'anchor.json') };
}

const rec = (outcome: AuditRecord['outcome'], extra: Partial<AuditRecord> = {}): AuditRecord => ({
  ts: new Date().toISOString(),
  event: 'dev.import-image',
  outcome,
  mvmctlVersion: '0.0.0-test',
  pid: process.pid,
  uid: 1000,
  durationSeconds: 0.2,
  ...extra,
});

const failed = (code: AuditRecord['code']) => rec('failed', { code });
const quiet = { warn: () => undefined };

/** What the reader says equals what a whole reading says (counters, histogram, chain). */
async function assertSameAsWhole(view: AuditView, path: string, anchor: string): Promise<void> {
  const whole = await readAuditLog(path, anchor);
  assert.deepEqual(view.tally, whole.tally);
  assert.deepEqual(view.check, whole.check);
}

describe('the incremental audit reader', () => {
  it('reads the whole log once, then only the bytes appended since', async () => {
    const { path, anchor } = logDir();
    const opts = { anchorPath: anchor, ...quiet };
    await appendAuditRecords(
      path,
      Array.from({ length: 500 }, () => rec('ok')),
      opts,
    );
    const reader = new AuditLogReader(path, anchor);
    let v = await reader.refresh();
    assert.equal(v.tally.counters.dev_image_verify_ok_total, 500);
    assert.equal(reader.stats.fullReads, 1);
    assert.equal(reader.stats.bytesRead, statSync(path).size);

    const before = statSync(path).size;
    await appendAuditRecords(path, [failed('signature'), failed('digest')], opts);
    const appended = statSync(path).size - before;
    v = await reader.refresh();
    assert.equal(reader.stats.fullReads, 1, 'no second whole reading');
    assert.equal(reader.stats.incrementalReads, 1);
    assert.equal(reader.stats.bytesRead, before + appended, 'exactly the appended bytes');
    assert.equal(v.tally.counters.dev_image_verify_sig_invalid_total, 1);
    assert.equal(v.tally.counters.dev_image_verify_digest_mismatch_total, 1);
    assert.equal(v.tally.durationCount, 502);
    assert.equal(v.check.intact, true);
    assert.equal(v.check.lastSeq, 502);
    await assertSameAsWhole(v, path, anchor);

    // Nothing appended: nothing read.
    const read = reader.stats.bytesRead;
    await reader.refresh();
    assert.equal(reader.stats.bytesRead, read);
  });

  it('leaves a line still being written for the next refresh', async () => {
    const { path, anchor } = logDir();
    await appendAuditRecords(path, [rec('ok')], { anchorPath: anchor, ...quiet });
    const reader = new AuditLogReader(path, anchor);
    await reader.refresh();
    // The next record, written by hand in two halves (as a reader may see an append in flight).
    const other = join(root, `other${n++}`);
    mkdirSync(other);
    copyFileSync(path, join(other, 'audit.jsonl'));
    await appendAuditRecords(join(other, 'audit.jsonl'), [failed('arch')], quiet);
    const next = readFileSync(join(other, 'audit.jsonl'), 'utf8').split('\n')[1]!;
    appendFileSync(path, next.slice(0, 40));
    let v = await reader.refresh();
    assert.equal(v.tally.counters.dev_image_verify_arch_mismatch_total, 0);
    assert.equal(v.check.intact, true, 'a line in flight is not a broken chain');
    appendFileSync(path, `${next.slice(40)}\n`);
    v = await reader.refresh();
    assert.equal(v.tally.counters.dev_image_verify_arch_mismatch_total, 1);
    assert.equal(v.check.lastSeq, 2);
    assert.equal(reader.stats.fullReads, 1);
  });

  it('starts over when the log shrank, was replaced, or what was appended does not follow', async () => {
    const { path, anchor } = logDir();
    const opts = { anchorPath: anchor, ...quiet };
    await appendAuditRecords(path, [rec('ok'), rec('ok'), rec('ok')], opts);
    const reader = new AuditLogReader(path, anchor);
    await reader.refresh();

    // Shrank: cut back to its first line.
    const lines = readFileSync(path, 'utf8').split('\n');
    truncateSync(path, Buffer.byteLength(`${lines[0]}\n`));
    let v = await reader.refresh();
    assert.equal(reader.stats.fullReads, 2);
    assert.equal(v.tally.counters.dev_image_verify_ok_total, 1);
    assert.equal(v.check.intact, false);
    assert.match(v.check.reason!, /the log ends at seq 1 but the anchor says 3/);

    // Replaced by another file (a new inode) holding the original three lines.
    const copy = `${path}.copy`;
    writeFileSync(copy, lines.join('\n'));
    renameSync(copy, path);
    v = await reader.refresh();
    assert.equal(reader.stats.fullReads, 3);
    assert.equal(v.tally.counters.dev_image_verify_ok_total, 3);
    assert.equal(v.check.intact, true);

    // The last line read, rewritten in place (same length, same file), and a record appended after
    // it: the new line does not follow what was read, so the reader reads everything again rather
    // than trusting its position, and the whole reading finds the edit (the anchor names the original).
    const now = readFileSync(path, 'utf8').split('\n');
    now[2] = now[2]!.replace('"uid":1000', '"uid":1001');
    writeFileSync(path, now.join('\n'), { flag: 'r+' });
    await appendAuditRecords(path, [failed('digest')], quiet);
    v = await reader.refresh();
    assert.equal(reader.stats.fullReads, 4);
    assert.equal(v.tally.counters.dev_image_verify_digest_mismatch_total, 1);
    assert.equal(v.check.intact, false);
    assert.equal(v.check.brokenAt, 3);
    assert.match(v.check.reason!, /the record at seq 3 is not the one the anchor names/);
  });

  it('follows a rotation without reading the rotated file again', async () => {
    const { path, anchor } = logDir();
    const opts = { anchorPath: anchor, maxBytes: 4096, ...quiet };
    await appendAuditRecords(
      path,
      Array.from({ length: 20 }, (_, i) => (i % 4 ? rec('ok') : failed('signature'))),
      opts,
    );
    assert.ok(statSync(path).size >= 4096, 'big enough to rotate at the next append');
    const reader = new AuditLogReader(path, anchor);
    await reader.refresh();
    const firstFile = statSync(path).size;
    await appendAuditRecords(path, [failed('revoked')], opts);
    assert.ok(
      statSync(`${path}.1`).size === firstFile,
      'rotated: the file read is now audit.jsonl.1',
    );
    const v = await reader.refresh();
    assert.equal(reader.stats.fullReads, 1);
    assert.equal(reader.stats.bytesRead, firstFile + statSync(path).size);
    assert.equal(v.tally.counters.dev_image_verify_ok_total, 15);
    assert.equal(v.tally.counters.dev_image_verify_sig_invalid_total, 5);
    assert.equal(v.tally.counters.dev_image_verify_revoked_total, 1);
    assert.equal(v.check.intact, true, JSON.stringify(v.check));
    await assertSameAsWhole(v, path, anchor);
  });

  it('several rotations between two refreshes: one whole reading, the counts exact', async () => {
    const { path, anchor } = logDir();
    const opts = { anchorPath: anchor, maxBytes: 2048, ...quiet };
    const reader = new AuditLogReader(path, anchor);
    await appendAuditRecords(path, [rec('ok')], opts);
    await reader.refresh();
    for (let i = 0; i < 30; i++) await appendAuditRecords(path, [rec('ok'), failed('arch')], opts);
    const v = await reader.refresh();
    assert.equal(reader.stats.fullReads, 2);
    assert.equal(v.tally.counters.dev_image_verify_ok_total, 31);
    assert.equal(v.tally.counters.dev_image_verify_arch_mismatch_total, 30);
    assert.equal(v.check.intact, true, JSON.stringify(v.check));
    await assertSameAsWhole(v, path, anchor);
  });
});
