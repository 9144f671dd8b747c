/**
 * The audit log: the hash chain catches an inserted, removed or reordered
 * line; the anchor catches a log shortened, deleted or re-chained; a torn last
 * line is set aside and recorded; untrusted text is stored escaped; every
 * record also reaches the syslog socket when one is configured.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { configFrom } from '../src/config.js';
import { audit, checkChain, readAuditAnchor } from '../src/audit/record.js';
import { testHost, type TestHost } from './support/host.js';
import type { ReleaseFiles } from './support/release.js';
import { suiteWorld } from './support/world.js';

let root: string;
let trustedRoot: string;
let good: ReleaseFiles;
let n = 0;

before(async () => ({ root, trustedRoot, good } = await suiteWorld('mvm-audit-')));
after(() => rmSync(root, { recursive: true, force: true }));

const host = () => testHost(join(root, `host${n++}`), trustedRoot);
const logOf = (h: TestHost) => join(h.dir, 'data', 'telemetry', 'audit.jsonl');
const anchorOf = (h: TestHost) => join(h.dir, 'data', 'revocations', 'audit-anchor.json');
const configOf = (h: TestHost) => configFrom(h.env, '/nonexistent');
const sha = (s: string) => createHash('sha256').update(s).digest('hex');

/** Four records written through the library, as the commands write them. */
async function fourRecords(h: TestHost): Promise<string[]> {
  const config = configOf(h);
  for (const [i, code] of [undefined, 'arch', 'digest', undefined].entries()) {
    await audit(config, {
      event: 'dev.import-image',
      outcome: code ? 'failed' : 'ok',
      ...(code ? { code: code as 'arch' | 'digest' } : {}),
      message: `record ${i + 1}`,
    });
  }
  return readFileSync(logOf(h), 'utf8').trim().split('\n');
}

async function brokenAt(h: TestHost, line: number, reason: RegExp): Promise<void> {
  const r = await h.run(['audit', 'tail']);
  assert.equal(r.code, 10, r.stderr);
  assert.match(r.stderr, new RegExp(`does not chain at line ${line}: ${reason.source}`));
}

describe('the audit chain', () => {
  it('an inserted garbage line is named (exit 10)', async () => {
    const h = host();
    const lines = await fourRecords(h);
    writeFileSync(logOf(h), [lines[0], 'garbage', ...lines.slice(1)].join('\n') + '\n');
    await brokenAt(h, 2, /the line is not (a )?JSON/);
  });

  it('an inserted valid-looking record is named (exit 10)', async () => {
    const h = host();
    const lines = await fourRecords(h);
    // A forged success, with the fields and the seq/prev of the record before it.
    const forged = JSON.stringify({ ...JSON.parse(lines[1]!), outcome: 'ok', code: undefined });
    writeFileSync(logOf(h), [lines[0], lines[1], forged, ...lines.slice(2)].join('\n') + '\n');
    await brokenAt(h, 3, /the line does not follow the one before it/);
  });

  it('a removed middle line is named (exit 10)', async () => {
    const h = host();
    const lines = await fourRecords(h);
    writeFileSync(logOf(h), [lines[0], ...lines.slice(2)].join('\n') + '\n');
    await brokenAt(h, 2, /the line does not follow the one before it/);
  });

  it('two swapped lines are named (exit 10)', async () => {
    const h = host();
    const lines = await fourRecords(h);
    writeFileSync(logOf(h), [lines[0], lines[2], lines[1], lines[3]].join('\n') + '\n');
    await brokenAt(h, 2, /the line does not follow the one before it/);
  });

  it('a last record whose seq was edited is named, also with no anchor to compare', async () => {
    // The hash chain cannot see it (nothing follows the last line); the numbering can.
    const h = host();
    const lines = await fourRecords(h);
    const last = JSON.parse(lines[3]!);
    assert.equal(last.seq, 4);
    const edited = JSON.stringify({ ...last, seq: 9 });
    writeFileSync(logOf(h), [...lines.slice(0, 3), edited].join('\n') + '\n');
    rmSync(anchorOf(h), { force: true });
    await brokenAt(h, 4, /the line does not follow the one before it/);
  });

  it('an untouched log reads intact', async () => {
    const h = host();
    await fourRecords(h);
    const r = await h.run(['audit', 'tail']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /chain: intact \(4 records\)/);
  });
});

describe('the anchor beside the recall memory', () => {
  it('holds the last seq and line hash, private, rewritten on every append', async () => {
    const h = host();
    const lines = await fourRecords(h);
    const anchor = JSON.parse(readFileSync(anchorOf(h), 'utf8'));
    assert.equal(anchor.seq, 4);
    assert.equal(anchor.hash, sha(lines[3]!));
    assert.equal(statSync(anchorOf(h)).mode & 0o777, 0o600);
    assert.deepEqual(readdirSync(join(h.dir, 'data', 'revocations')), ['audit-anchor.json']);
    assert.deepEqual(checkChain(lines.join('\n') + '\n', await readAuditAnchor(configOf(h))), {
      records: 4,
      intact: true,
      lastSeq: 4,
      anchor: { seq: 4, hash: sha(lines[3]!) },
    });
  });

  it('records removed from the end: "the log ends at seq N but the anchor says M"', async () => {
    const h = host();
    const lines = await fourRecords(h);
    const text = lines.slice(0, 2).join('\n') + '\n';
    const c = checkChain(text, await readAuditAnchor(configOf(h)));
    assert.equal(c.intact, false);
    assert.equal(c.brokenAt, 3);
    assert.equal(
      c.reason,
      'the log ends at seq 2 but the anchor says 4: records were removed from its end',
    );
  });

  it('a deleted log with the anchor present is reported', async () => {
    const h = host();
    await fourRecords(h);
    const c = checkChain('', await readAuditAnchor(configOf(h)));
    assert.equal(c.intact, false);
    assert.equal(c.reason, 'the log is missing or empty but the anchor says it ended at seq 4');
  });

  it('an edited log with every hash recomputed (the anchor left alone) is reported', async () => {
    const h = host();
    const lines = await fourRecords(h);
    let prev = '0'.repeat(64);
    const rechained = lines.map((l) => {
      const r = JSON.parse(l);
      const line = JSON.stringify({
        ...r,
        ...(r.code === 'arch' ? { outcome: 'ok', code: undefined } : {}),
        prev,
      });
      prev = sha(line);
      return line;
    });
    const text = rechained.join('\n') + '\n';
    assert.equal(checkChain(text).intact, true, 'the chain alone cannot tell');
    const c = checkChain(text, await readAuditAnchor(configOf(h)));
    assert.equal(c.intact, false);
    assert.equal(c.brokenAt, 4);
    assert.match(c.reason!, /the record at seq 4 is not the one the anchor names/);
  });

  it('a truncated log is recorded by the next import, so audit tail reports it (exit 10)', async () => {
    const h = host();
    const lines = await fourRecords(h);
    writeFileSync(logOf(h), lines.slice(0, 2).join('\n') + '\n');
    const r = await h.importSet(good);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /warning: the audit log ends at seq 2 but the anchor says 4/);
    const records = h.audit();
    assert.deepEqual(
      records.slice(2).map((a) => [a['event'], a['seq'], a['logSeq'], a['anchorSeq']]),
      [
        ['audit.anchor-mismatch', 3, 2, 4],
        ['dev.import-image', 4, undefined, undefined],
      ],
    );
    await brokenAt(h, 3, /the record says the audit log ends at seq 2 but the anchor says 4/);
  });

  it('one record removed from the end is recorded too (the smallest truncation)', async () => {
    const h = host();
    const lines = await fourRecords(h);
    writeFileSync(logOf(h), lines.slice(0, 3).join('\n') + '\n');
    const r = await h.importSet(good);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /warning: the audit log ends at seq 3 but the anchor says 4/);
    assert.deepEqual(
      h
        .audit()
        .slice(3)
        .map((a) => [a['event'], a['seq'], a['logSeq'], a['anchorSeq']]),
      [
        ['audit.anchor-mismatch', 4, 3, 4],
        ['dev.import-image', 5, undefined, undefined],
      ],
    );
  });

  it('a deleted log is recorded by the next import (exit 10 on audit tail)', async () => {
    const h = host();
    await fourRecords(h);
    rmSync(logOf(h));
    const r = await h.importSet(good);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(
      h.audit().map((a) => [a['event'], a['seq']]),
      [
        ['audit.anchor-mismatch', 1],
        ['dev.import-image', 2],
      ],
    );
    await brokenAt(
      h,
      1,
      /the record says the audit log was missing or empty but the anchor says it ended at seq 4/,
    );
  });

  it('a log from before anchors (no anchor yet) chains on and gets one', async () => {
    const h = host();
    await fourRecords(h);
    rmSync(anchorOf(h));
    assert.equal((await h.importSet(good)).code, 0);
    assert.equal(JSON.parse(readFileSync(anchorOf(h), 'utf8')).seq, 5);
    assert.equal((await h.run(['audit', 'tail'])).code, 0);
  });
});

describe('a torn last line', () => {
  it('is set aside with a warning and a record; the import, the chain and the counters work', async () => {
    const h = host();
    assert.equal((await h.importSet(good)).code, 0);
    const torn = '{"ts":"2026-01-01T00:00:00.000Z","event":"dev.imp';
    appendFileSync(logOf(h), torn);
    const r = await h.importSet(good);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /warning: the audit log .* ended in an incomplete line \(49 bytes/);
    const records = h.audit();
    assert.deepEqual(
      records.map((a) => [a['event'], a['outcome']]),
      [
        ['dev.import-image', 'ok'],
        ['audit.torn-tail', 'failed'],
        ['dev.import-image', 'unchanged'],
      ],
    );
    const event = records[1]!;
    assert.equal(event['tornBytes'], 49);
    assert.equal(event['tornSha256'], sha(torn));
    const aside = join(h.dir, 'data', 'telemetry', event['tornFile'] as string);
    assert.match(event['tornFile'] as string, /^audit\.jsonl\.torn-/);
    assert.equal(readFileSync(aside, 'utf8'), torn);
    assert.equal(statSync(aside).mode & 0o777, 0o600);
    const tail = await h.run(['audit', 'tail']);
    assert.equal(tail.code, 0, tail.stderr);
    assert.match(tail.stderr, /chain: intact \(3 records\)/);
    assert.match(tail.stdout, /audit\.torn-tail +failed +store/);
    const m = await h.metrics();
    assert.equal(m['dev_image_verify_ok_total'], 1);
    assert.equal(m['dev_image_verify_unchanged_total'], 1, 'the same set again: a re-import');
  });
});

describe('untrusted text in records', () => {
  it('is stored escaped and bounded', async () => {
    const h = host();
    await audit(configOf(h), {
      event: 'dev.import-image',
      outcome: 'failed',
      code: 'signature',
      message: `\x1b[2J\x1b]0;pwned\x07 ok \u202eko${'x'.repeat(5000)}`,
      signer: 'https://evil\r\n2026 dev.import-image ok',
      version: '1.0.0\x1b[31m',
    });
    const [r] = h.audit();
    assert.ok(
      (r!['message'] as string).startsWith('\\x1b[2J\\x1b]0;pwned\\x07 ok \\u202ekoxxx'),
      r!['message'] as string,
    );
    assert.match(r!['message'] as string, /…\(\d+ more characters\)$/);
    assert.ok((r!['message'] as string).length < 2100);
    assert.equal(r!['signer'], 'https://evil\\r\\n2026 dev.import-image ok');
    assert.equal(r!['version'], '1.0.0\\x1b[31m');
  });
});

describe('the external sink (MVM_AUDIT_SOCKET)', () => {
  // The timeout only bounds a failure (no datagram ever comes): logger has delivered before the import exits.
  it(
    'every record is also sent as a syslog datagram (authpriv, tag mvmctl) to the unix socket',
    { timeout: 30_000 },
    async () => {
      const h = host();
      mkdirSync(h.dir, { recursive: true });
      const socket = join(h.dir, 'log.sock');
      // A unix datagram listener, as /dev/log is: one JSON string per datagram on stdout.
      const listener = spawn(
        'python3',
        [
          '-c',
          [
            'import json, socket, sys',
            's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
            's.bind(sys.argv[1])',
            'print("ready", flush=True)',
            'while True:',
            '    print(json.dumps(s.recv(1 << 17).decode()), flush=True)',
          ].join('\n'),
          socket,
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      try {
        const lines = createInterface({ input: listener.stdout! })[Symbol.asyncIterator]();
        assert.equal((await lines.next()).value, 'ready');
        const r = await h.importSet(good, [], { MVM_AUDIT_SOCKET: socket });
        assert.equal(r.code, 0, r.stderr);
        assert.doesNotMatch(r.stderr, /warning: the audit record/);
        const datagram = JSON.parse((await lines.next()).value as string) as string;
        const logged = readFileSync(logOf(h), 'utf8').trim();
        // <PRI> = authpriv (10) * 8 + notice (5); the tag and the mvmctl pid; the chained line itself.
        assert.match(datagram, /^<85>/);
        const pid = JSON.parse(logged).pid as number;
        assert.ok(datagram.includes(`mvmctl[${pid}]: `), datagram);
        assert.ok(datagram.endsWith(logged), datagram);
      } finally {
        listener.kill();
      }
    },
  );

  it('a sink that cannot be reached never loses the local record: a warning, and the failure recorded', async () => {
    const h = host();
    const socket = join(h.dir, 'nobody-listens.sock');
    const r = await h.importSet(good, [], { MVM_AUDIT_SOCKET: socket });
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`warning: the audit record was written to .* but not sent to ${socket}`),
    );
    assert.deepEqual(
      h.audit().map((a) => [a['event'], a['outcome']]),
      [
        ['dev.import-image', 'ok'],
        ['audit.sink-failed', 'failed'],
      ],
    );
    assert.equal((await h.run(['audit', 'tail'])).code, 0);
    assert.equal(existsSync(anchorOf(h)), true);
    assert.equal(JSON.parse(readFileSync(anchorOf(h), 'utf8')).seq, 2);
  });
});
