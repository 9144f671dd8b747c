/**
 * The console log's bound: the keeper process that dev up puts between QEMU's
 * console chardev and console.log (src/vm/console-keeper.ts) keeps console.log
 * and console.log.1 together within MVM_CONSOLE_LOG_MAX_BYTES, newest output
 * kept; and everything that reads the log (dev logs, dev logs -f, dev up's
 * ready-line watch) reads across a rotation in order, losing nothing.
 * The keeper runs as the real process, from the built CLI, fed through a pipe.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  appendFileSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { configFrom } from '../src/config.js';
import { KEEPER_ARG, placeChunk, rotatedLog } from '../src/vm/console-keeper.js';
import { ConsoleWatch, lastConsoleLines, LogCursor } from '../src/vm/console-log.js';
import { followConsoleLog } from '../src/vm/console.js';
import { CLI } from './support/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'mvm-keeper-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the keeper as dev up does (the built CLI, the pipe as its stdin) and feeds it `chunks`. */
async function runKeeper(log: string, max: number, chunks: Buffer[]): Promise<number | null> {
  writeFileSync(log, '', { mode: 0o600 });
  const child = spawn(process.execPath, [CLI, KEEPER_ARG, log, String(max)], {
    stdio: ['pipe', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  for (const c of chunks) {
    if (!child.stdin!.write(c)) await new Promise((r) => child.stdin!.once('drain', r));
  }
  child.stdin!.end();
  const code = await new Promise<number | null>((r) => child.once('close', r));
  assert.equal(stderr, '');
  return code;
}

describe('the rotation rule', () => {
  it('fills a file to exactly half the bound, then rotates; an oversized chunk keeps its newest bytes', () => {
    const w = (rotate: boolean, length: number) => ({ rotate, length });
    assert.deepEqual(placeChunk(0, 10, 100), { skip: 0, writes: [w(false, 10)] });
    assert.deepEqual(placeChunk(90, 10, 100), { skip: 0, writes: [w(false, 10)] }, 'exactly full');
    assert.deepEqual(placeChunk(91, 10, 100), { skip: 0, writes: [w(false, 9), w(true, 1)] });
    assert.deepEqual(placeChunk(100, 1, 100), { skip: 0, writes: [w(true, 1)] });
    assert.deepEqual(placeChunk(0, 250, 100), { skip: 50, writes: [w(false, 100), w(true, 100)] });
    assert.deepEqual(placeChunk(30, 150, 100), { skip: 0, writes: [w(false, 70), w(true, 80)] });
    assert.deepEqual(placeChunk(5, 0, 100), { skip: 0, writes: [] });
  });

  it('MVM_CONSOLE_LOG_MAX_BYTES: default 64 MiB, at least 64 KiB, a number of bytes', () => {
    const env = { HOME: dir };
    assert.equal(configFrom(env, dir).consoleLogMaxBytes, 64 * 1024 * 1024);
    assert.equal(
      configFrom({ ...env, MVM_CONSOLE_LOG_MAX_BYTES: '65536' }, dir).consoleLogMaxBytes,
      65536,
    );
    assert.throws(
      () => configFrom({ ...env, MVM_CONSOLE_LOG_MAX_BYTES: '65535' }, dir),
      /MVM_CONSOLE_LOG_MAX_BYTES 65535 is below its minimum of 65536 bytes/,
    );
    assert.throws(
      () => configFrom({ ...env, MVM_CONSOLE_LOG_MAX_BYTES: '1M' }, dir),
      /MVM_CONSOLE_LOG_MAX_BYTES "1M" is not a number of bytes/,
    );
  });
});

describe('the keeper process', () => {
  it('a runaway guest: 2 MiB through a 64 KiB bound leaves at most 64 KiB, the newest, in order', async () => {
    const log = join(dir, 'runaway.log');
    // Numbered lines, so what is kept can be checked to be one unbroken run ending at the last.
    const lines = Array.from({ length: 40000 }, (_, i) => `line ${i} ${'x'.repeat(40)}\n`);
    const all = Buffer.from(lines.join(''));
    const chunks: Buffer[] = [];
    for (let at = 0; at < all.length; at += 4093) chunks.push(all.subarray(at, at + 4093));
    assert.equal(await runKeeper(log, 65536, chunks), 0);
    const kept = Buffer.concat([readFileSync(rotatedLog(log)), readFileSync(log)]);
    assert.ok(kept.length <= 65536, `${kept.length} bytes kept`);
    assert.ok(kept.length >= 32768, 'the older half is kept too');
    assert.ok(all.subarray(all.length - kept.length).equals(kept), 'the newest bytes, in order');
    for (const f of [log, rotatedLog(log)]) assert.equal(statSync(f).mode & 0o777, 0o600, f);
  });

  it('one write larger than the whole bound keeps its newest bytes, in order', async () => {
    const log = join(dir, 'huge.log');
    const big = Buffer.alloc(300 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = 97 + (i % 26);
    assert.equal(await runKeeper(log, 65536, [Buffer.from('before\n'), big]), 0);
    const kept = Buffer.concat([
      existsSync(rotatedLog(log)) ? readFileSync(rotatedLog(log)) : Buffer.alloc(0),
      readFileSync(log),
    ]);
    // However the pipe splits it: the older file full, the newer one ending at the last byte.
    assert.ok(kept.length > 32768 && kept.length <= 65536, `${kept.length} bytes kept`);
    assert.ok(kept.equals(big.subarray(big.length - kept.length)));
  });

  it('output under the bound is kept whole, and nothing is rotated', async () => {
    const log = join(dir, 'small.log');
    assert.equal(await runKeeper(log, 65536, [Buffer.from('one\n'), Buffer.from('two\n')]), 0);
    assert.equal(readFileSync(log, 'utf8'), 'one\ntwo\n');
    assert.equal(existsSync(rotatedLog(log)), false);
  });

  it('refuses arguments it does not expect (exit 2)', async () => {
    const child = spawn(process.execPath, [CLI, KEEPER_ARG, 'relative.log', '10'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    assert.equal(await new Promise((r) => child.once('close', r)), 2);
    assert.match(stderr, /^usage: mvmctl __console-log-keeper/);
  });
});

describe('reading across a rotation', () => {
  /** Rotates as the keeper does: the current file becomes .1, a new one starts. */
  const rotate = (log: string, next: string) => {
    renameSync(log, rotatedLog(log));
    writeFileSync(log, next);
  };

  it('the cursor finishes the rotated file, then reads the new one from its start', async () => {
    const log = join(dir, 'cursor.log');
    writeFileSync(log, 'a1\n');
    const cursor = new LogCursor(log);
    assert.equal((await cursor.next(1 << 20)).data.toString(), 'a1\n');
    appendFileSync(log, 'a2\n'); // written, not yet read, when the keeper rotates
    rotate(log, 'b1\n');
    assert.equal((await cursor.next(1 << 20)).data.toString(), 'a2\n');
    const next = await cursor.next(1 << 20);
    assert.deepEqual([next.data.toString(), next.restarted], ['b1\n', false]);
    assert.equal((await cursor.next(1 << 20)).data.length, 0);
  });

  it("dev up's watch sees a ready line the rotation moved to console.log.1", async () => {
    const log = join(dir, 'watch.log');
    writeFileSync(log, 'booting\n');
    const watch = new ConsoleWatch(log, ['mvm: ready']);
    assert.deepEqual(await watch.poll(), { output: true, ready: undefined });
    appendFileSync(log, 'mvm: ready\n');
    rotate(log, 'after\n');
    assert.deepEqual(await watch.poll(), { output: true, ready: 'mvm: ready' });
    const again = await watch.poll();
    assert.deepEqual(again, { output: true, ready: 'mvm: ready' }, 'and it stays seen');
  });

  it('dev logs -f shows every line in order across a rotation; dev logs shows both files', async () => {
    const log = join(dir, 'follow.log');
    writeFileSync(log, 'one\n');
    const steps = [
      () => appendFileSync(log, 'two\nthr'),
      () => {
        appendFileSync(log, 'ee\n');
        rotate(log, 'four\n');
      },
      () => appendFileSync(log, 'five\n'),
    ];
    const shown: string[] = [];
    await followConsoleLog(log, {
      lines: 10,
      pollMs: 1,
      signal: new AbortController().signal,
      emit: (l) => shown.push(...l),
      running: async () => {
        const step = steps.shift();
        step?.();
        return step !== undefined;
      },
    });
    assert.deepEqual(shown, ['one', 'two', 'three', 'four', 'five']);
    assert.deepEqual(await lastConsoleLines(log, 10), ['one', 'two', 'three', 'four', 'five']);
    assert.deepEqual(await lastConsoleLines(log, 2), ['four', 'five']);
  });
});
