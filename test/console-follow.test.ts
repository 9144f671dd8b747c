/**
 * `dev logs -f` and dev up's ready-line watch read what an untrusted guest
 * prints: a line of any length, in bursts of any size. The follower keeps a
 * bounded part of a partial line and says how long the line was; the watch
 * finds a ready line however much follows it in the same read.
 */
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { followConsoleLog } from '../src/vm/console.js';
import { ConsoleWatch } from '../src/vm/console-log.js';

const dir = mkdtempSync(join(tmpdir(), 'mvm-follow-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const MiB = 1024 * 1024;

describe('dev logs -f on an endless line', () => {
  it('shows the line cut to 4,096 characters with its real length, and the lines around it', async () => {
    const log = join(dir, 'long.log');
    writeFileSync(log, '');
    // Each poll of "is the VM running" lets the guest print its next burst.
    const bursts = ['start\n' + 'x'.repeat(3 * MiB), 'x'.repeat(3 * MiB), 'y\nend\n'];
    const shown: string[] = [];
    const end = await followConsoleLog(log, {
      lines: 10,
      pollMs: 1,
      signal: new AbortController().signal,
      emit: (lines) => shown.push(...lines),
      running: async () => {
        const next = bursts.shift();
        if (next === undefined) return false;
        appendFileSync(log, next);
        return true;
      },
    });
    assert.equal(end, 'stopped');
    assert.deepEqual(shown, [
      'start',
      `${'x'.repeat(4096)}…(a line of ${6 * MiB + 1} bytes, cut)`,
      'end',
    ]);
  });

  it('a line of ordinary length is shown whole, as before', async () => {
    const log = join(dir, 'short.log');
    writeFileSync(log, '');
    const bursts = ['one\ntw', 'o\nthr', 'ee\n'];
    const shown: string[] = [];
    await followConsoleLog(log, {
      lines: 10,
      pollMs: 1,
      signal: new AbortController().signal,
      emit: (lines) => shown.push(...lines),
      running: async () => {
        const next = bursts.shift();
        if (next === undefined) return false;
        appendFileSync(log, next);
        return true;
      },
    });
    assert.deepEqual(shown, ['one', 'two', 'three']);
  });
});

describe("dev up's ready-line watch", () => {
  const READY = 'mvm: ready';

  it('sees a ready line followed by 2 MiB in the same read, and it stays seen', async () => {
    const log = join(dir, 'burst.log');
    writeFileSync(log, `booting\n${READY}\n${'z'.repeat(2 * MiB)}\n`);
    const watch = new ConsoleWatch(log, [READY]);
    let ready: string | undefined;
    // One read takes at most 1 MiB: the line is in the first; later reads must not forget it.
    for (let i = 0; i < 4; i++) ready = (await watch.poll()).ready;
    assert.equal(ready, READY);
  });

  it('sees a ready line split across two reads', async () => {
    const log = join(dir, 'split.log');
    writeFileSync(log, `booting\nmvm: re`);
    const watch = new ConsoleWatch(log, [READY]);
    assert.deepEqual(await watch.poll(), { output: true, ready: undefined });
    appendFileSync(log, `ady\n${'z'.repeat(200 * 1024)}`);
    assert.deepEqual(await watch.poll(), { output: true, ready: READY });
  });

  it('with several ready lines, any one of them, split across reads, is the one reported', async () => {
    const log = join(dir, 'either.log');
    const upstream = '[init] all services started';
    writeFileSync(log, `[init] mounting\n[init] all serv`);
    const watch = new ConsoleWatch(log, [READY, upstream]);
    assert.deepEqual(await watch.poll(), { output: true, ready: undefined });
    // The longer line's tail is kept though the shorter one is the first needle.
    appendFileSync(log, `ices started\n`);
    assert.deepEqual(await watch.poll(), { output: true, ready: upstream });
    const other = join(dir, 'other.log');
    writeFileSync(other, `${READY}\n`);
    assert.equal((await new ConsoleWatch(other, [upstream]).poll()).ready, undefined);
  });

  it('a log truncated by a new boot starts over', async () => {
    const log = join(dir, 'again.log');
    writeFileSync(log, `${READY}\n${'z'.repeat(1000)}`);
    const watch = new ConsoleWatch(log, [READY]);
    assert.equal((await watch.poll()).ready, READY);
    writeFileSync(log, 'new boot\n');
    assert.equal((await watch.poll()).ready, undefined);
  });
});
