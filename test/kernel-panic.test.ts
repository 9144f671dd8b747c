/** What dev up reads from a kernel panic on the guest console (kernelPanic, console-log.ts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { consoleLines, kernelPanic } from '../src/vm/console-log.js';

describe('kernelPanic', () => {
  it('init exiting: the message and init’s exit status, from the first panic line', () => {
    const lines = consoleLines(
      [
        '[    1.89] Run /init as init process',
        '[    2.99] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000200',
        '[    2.99] CPU: 1 PID: 1 Comm: init Not tainted 6.1.0-50-cloud-amd64 #1',
        '[    2.99] ---[ end Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000200 ]---',
      ].join('\n'),
    );
    assert.deepEqual(kernelPanic(lines), {
      message: 'Attempted to kill init! exitcode=0x00000200',
      initExit: 2,
    });
  });

  it('init killed by a signal: no exit status is made up', () => {
    assert.deepEqual(
      kernelPanic(['Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b']),
      { message: 'Attempted to kill init! exitcode=0x0000000b' },
    );
  });

  it('another panic: its message; the end marker alone is read without its brackets', () => {
    assert.deepEqual(
      kernelPanic([
        '---[ end Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0) ]---',
      ]),
      { message: 'VFS: Unable to mount root fs on unknown-block(0,0)' },
    );
  });

  it('no panic: nothing; a guest’s long or hostile line stays escaped and bounded', () => {
    assert.equal(kernelPanic(consoleLines('booting\nKernel panic soon\n')), undefined);
    const hostile = kernelPanic(
      consoleLines(`Kernel panic - not syncing: \u001b[2J${'x'.repeat(5000)}\n`),
    );
    assert.ok(hostile);
    assert.ok(!hostile.message.includes('\u001b'), hostile.message.slice(0, 40));
    assert.equal(hostile.message.length, 200);
    assert.equal(hostile.initExit, undefined);
  });
});
