/**
 * The lock around the audit chain and the revocation swap: a holder killed
 * with SIGKILL hands it to exactly one waiter, a live holder times out as a
 * store error naming it, a leftover lock file (empty, garbage, an old pid)
 * blocks nobody, and many writers killed at random leave a log that chains
 * and counters that equal what was recorded.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { MvmError } from '../src/errors.js';
import { withLock } from '../src/io/lock.js';
import { HOST_ARCH, testHost, VERSION } from './support/host.js';
import { TestPki } from './support/pki.js';
import { writeReleaseSet, type ReleaseFiles } from './support/release.js';

const DIST = (p: string) => pathToFileURL(join(import.meta.dirname, '..', 'dist', p)).href;

let root: string;
let pki: TestPki;
let trustedRoot: string;
let good: ReleaseFiles;
let n = 0;

/** Holds the lock until killed; says "locked" once it has it. */
const HOLDER = `
import { withLock } from ${JSON.stringify(DIST('io/lock.js'))};
const [lock] = process.argv.slice(2);
await withLock(lock, 'the test lock', async () => {
  process.stdout.write('locked\\n');
  await new Promise(() => setInterval(() => undefined, 1000));
});
`;

/** Says "waiting", then takes the lock and logs its stay in the critical section. */
const WAITER = `
import { appendFileSync } from 'node:fs';
import { withLock } from ${JSON.stringify(DIST('io/lock.js'))};
const [lock, trace] = process.argv.slice(2);
process.stdout.write('waiting\\n');
await withLock(lock, 'the test lock', async () => {
  appendFileSync(trace, 'enter ' + process.pid + '\\n');
  await new Promise((r) => setTimeout(r, 40));
  appendFileSync(trace, 'exit ' + process.pid + '\\n');
});
`;

/** Appends COUNT audit records through the library, acknowledging each on stdout. */
const WRITER = `
import { configFrom } from ${JSON.stringify(DIST('config.js'))};
import { audit } from ${JSON.stringify(DIST('audit/record.js'))};
const [data, id, count] = process.argv.slice(2);
const config = configFrom({ MVM_DATA_DIR: data }, '/nonexistent');
const kinds = [
  { outcome: 'ok' },
  { outcome: 'failed', code: 'arch' },
  { outcome: 'failed', code: 'digest' },
];
for (let i = 0; i < Number(count); i++) {
  const kind = kinds[(i + Number(id)) % kinds.length];
  await audit(config, { event: 'dev.import-image', ...kind, message: id + '-' + i });
  process.stdout.write('ack ' + id + '-' + i + '\\n');
}
`;

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'mvm-lock-'));
  writeFileSync(join(root, 'holder.mjs'), HOLDER);
  writeFileSync(join(root, 'waiter.mjs'), WAITER);
  writeFileSync(join(root, 'writer.mjs'), WRITER);
  pki = await TestPki.create();
  trustedRoot = pki.writeTrustedRoot(root);
  good = await writeReleaseSet(pki, join(root, 'good'), { version: VERSION, arch: HOST_ARCH });
});
after(() => rmSync(root, { recursive: true, force: true }));

const host = () => testHost(join(root, `host${n++}`), trustedRoot);

interface Child {
  readonly proc: ChildProcess;
  /** Resolves when the child has printed this line. */
  line(text: string): Promise<void>;
  readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
}

function node(script: string, args: string[], onLine?: (l: string) => void): Child {
  const proc = spawn(process.execPath, [join(root, script), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const seen = new Set<string>();
  const waiting = new Map<string, () => void>();
  createInterface({ input: proc.stdout! }).on('line', (l) => {
    seen.add(l);
    waiting.get(l)?.();
    onLine?.(l);
  });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exit = new Promise<{
    code: number | null;
    signal: NodeJS.Signals | null;
    stderr: string;
  }>((resolve) => proc.on('close', (code, signal) => resolve({ code, signal, stderr })));
  return {
    proc,
    exit,
    line: (text) =>
      seen.has(text)
        ? Promise.resolve()
        : new Promise<void>((resolve, reject) => {
            waiting.set(text, resolve);
            void exit.then((e) =>
              reject(new Error(`exited (${e.code ?? e.signal}) before "${text}": ${e.stderr}`)),
            );
          }),
  };
}

describe('withLock', () => {
  it('a holder killed with SIGKILL while holding: the waiters take the lock one at a time', async () => {
    // Three deaths, each with six waiters at the door.
    for (let round = 0; round < 3; round++) {
      const dir = mkdtempSync(join(root, 'takeover-'));
      const lock = join(dir, 'x.lock');
      const trace = join(dir, 'trace');
      writeFileSync(trace, '');
      const holder = node('holder.mjs', [lock]);
      await holder.line('locked');
      const waiters = Array.from({ length: 6 }, () => node('waiter.mjs', [lock, trace]));
      await Promise.all(waiters.map((w) => w.line('waiting')));
      // All waiters find the holder gone at the same moment: stopped while it dies, continued together.
      for (const w of waiters) w.proc.kill('SIGSTOP');
      holder.proc.kill('SIGKILL');
      assert.equal((await holder.exit).signal, 'SIGKILL');
      for (const w of waiters) w.proc.kill('SIGCONT');
      for (const w of waiters) {
        const e = await w.exit;
        assert.equal(e.code, 0, e.stderr);
      }
      const events = readFileSync(trace, 'utf8').trim().split('\n');
      const shown = `two in the critical section at once:\n${events.join('\n')}`;
      assert.equal(events.length, 12, shown);
      for (let i = 0; i < events.length; i += 2) {
        const pid = events[i]!.replace('enter ', '');
        assert.equal(events[i], `enter ${pid}`, shown);
        assert.equal(events[i + 1], `exit ${pid}`, shown);
      }
    }
  });

  it('a live holder: the wait ends as a store error (exit 17) naming the holder', async () => {
    const dir = mkdtempSync(join(root, 'timeout-'));
    const lock = join(dir, 'x.lock');
    const holder = node('holder.mjs', [lock]);
    try {
      await holder.line('locked');
      let ran = false;
      await assert.rejects(
        withLock(lock, 'the test lock', async () => void (ran = true), { timeoutMs: 300 }),
        (e: unknown) => {
          assert.ok(e instanceof MvmError);
          assert.equal(e.code, 'store');
          assert.equal(e.exitCode, 17);
          assert.equal(e.message, `the test lock is locked by process ${holder.proc.pid}`);
          assert.match(e.fix, new RegExp(`released when process ${holder.proc.pid} exits`));
          return true;
        },
      );
      assert.equal(ran, false);
    } finally {
      holder.proc.kill('SIGKILL');
      await holder.exit;
    }
    // Once the holder is gone, the lock is free at once.
    assert.equal(
      await withLock(lock, 'the test lock', async () => 'mine', { timeoutMs: 300 }),
      'mine',
    );
  });

  it('callers in one process queue (closing a descriptor cannot drop another caller’s lock)', async () => {
    const lock = join(mkdtempSync(join(root, 'inproc-')), 'x.lock');
    const trace: string[] = [];
    await Promise.all(
      [1, 2, 3].map((i) =>
        withLock(lock, 'the test lock', async () => {
          trace.push(`enter ${i}`);
          await new Promise((r) => setTimeout(r, 10));
          trace.push(`exit ${i}`);
        }),
      ),
    );
    assert.deepEqual(trace, ['enter 1', 'exit 1', 'enter 2', 'exit 2', 'enter 3', 'exit 3']);
  });

  for (const [name, content] of [
    ['an empty lock file (a crash between open and write)', ''],
    ['a lock file holding garbage', 'garbage\n'],
    ['a lock file naming a live process that does not hold it', String(process.pid)],
  ] as const) {
    it(`${name} left beside the audit log does not block the next import`, async () => {
      const h = host();
      const telemetry = join(h.dir, 'data', 'telemetry');
      mkdirSync(telemetry, { recursive: true, mode: 0o700 });
      writeFileSync(join(telemetry, 'audit.jsonl.lock'), content);
      const r = await h.importSet(good);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(
        h.audit().map((a) => [a['event'], a['outcome']]),
        [['dev.import-image', 'ok']],
      );
    });
  }
});

describe('the audit log under writers killed at random', () => {
  it('the chain verifies, no seq repeats, every acknowledged record is there once, counters equal the records', async (t) => {
    const h = host();
    const data = h.env.MVM_DATA_DIR;
    const ROUNDS = 3;
    const WRITERS = 4;
    const COUNT = 12;
    const acked = new Set<string>();
    let kills = 0;
    let seed = 0x2545f491;
    const random = () => {
      seed = (seed * 1103515245 + 12345) >>> 0; // deterministic: a failure reproduces
      return seed / 2 ** 32;
    };
    for (let round = 0; round < ROUNDS; round++) {
      const writers = Array.from({ length: WRITERS }, (_, w) => {
        const id = `r${round}w${w}`;
        // Most writers are killed: right after a random acknowledgement, at a random moment.
        const killAfter = random() < 0.75 ? Math.floor(random() * COUNT) : -1;
        const delayMs = random() * 4;
        const child: Child = node(
          'writer.mjs',
          [data, String(round * WRITERS + w), String(COUNT)],
          (l) => {
            const ack = l.replace(/^ack /, '');
            acked.add(ack);
            if (ack === `${round * WRITERS + w}-${killAfter}`) {
              setTimeout(() => {
                if (child.proc.exitCode === null && child.proc.kill('SIGKILL')) kills++;
              }, delayMs);
            }
          },
        );
        return { id, child };
      });
      for (const { id, child } of writers) {
        const e = await child.exit;
        assert.ok(
          e.code === 0 || e.signal === 'SIGKILL',
          `${id}: ${e.code ?? e.signal} ${e.stderr}`,
        );
      }
    }
    assert.ok(kills > 0);
    t.diagnostic(`${kills} writers killed, ${acked.size} records acknowledged`);

    const tail = await h.run(['audit', 'tail', '-n', '0']);
    assert.equal(tail.code, 0, tail.stderr);
    const records = h.audit();
    assert.match(tail.stderr, new RegExp(`chain: intact \\(${records.length} records\\)`));
    assert.deepEqual(
      records.map((r) => r['seq']),
      records.map((_, i) => i + 1),
    );
    // A kill can tear a line mid-write (a write is cut between pages): set aside and recorded.
    const imports = records.filter((r) => r['event'] === 'dev.import-image');
    const torn = records.filter((r) => r['event'] === 'audit.torn-tail');
    assert.equal(imports.length + torn.length, records.length);
    assert.ok(torn.length <= kills);
    const ids = imports.map((r) => r['message'] as string);
    assert.equal(new Set(ids).size, ids.length, 'a record was written twice');
    for (const a of acked) assert.ok(ids.includes(a), `acknowledged record ${a} is missing`);
    // Killed writers may have written a record they could not acknowledge: at most one each.
    assert.ok(
      ids.length - acked.size <= kills,
      `${ids.length} records, ${acked.size} acked, ${kills} kills`,
    );

    const m = await h.metrics();
    const count = (f: (r: Record<string, unknown>) => boolean) => records.filter(f).length;
    assert.equal(
      m['dev_image_verify_ok_total'],
      count((r) => r['outcome'] === 'ok'),
    );
    assert.equal(
      m['dev_image_verify_arch_mismatch_total'],
      count((r) => r['code'] === 'arch'),
    );
    assert.equal(
      m['dev_image_verify_digest_mismatch_total'],
      count((r) => r['code'] === 'digest'),
    );
    assert.equal(
      m['dev_image_verify_ok_total']! +
        m['dev_image_verify_arch_mismatch_total']! +
        m['dev_image_verify_digest_mismatch_total']!,
      imports.length,
    );
  });
});
