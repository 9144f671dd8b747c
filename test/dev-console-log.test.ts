/**
 * The console log's bound, end to end: the real test guest booted under QEMU
 * (software emulation) through the built CLI with MVM_CONSOLE_LOG_MAX_BYTES
 * at its 64 KiB minimum prints far more than that. console.log and
 * console.log.1 stay within the bound and hold the newest output, `dev logs`
 * shows it, and `dev down` leaves neither QEMU nor the log's keeper behind.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLI, type CliResult } from './support/cli.js';
import type { TestHost } from './support/host.js';
import {
  hostWithTestGuest,
  processesMentioning,
  READY_LINE,
  vmProcessesMentioning,
} from './support/vm.js';

// Bounds on waiting for events on a loaded 2-core host under software emulation, not timing
// assertions.
const UP_TIMEOUT_S = '120';
const CLI_TIMEOUT_MS = 300_000;
const BOUND = 64 * 1024;

let root: string;
let host: TestHost;
let vmDir: string;

before(async () => {
  // Short: the VM's sockets live under it, and a unix socket path is limited to 107 bytes.
  root = mkdtempSync(join(tmpdir(), 'mvm-clog-'));
  ({ host, vmDir } = await hostWithTestGuest(root));
});

after(async () => {
  if (host) await dev(['down', '--timeout', '5']);
  if (root) rmSync(root, { recursive: true, force: true });
});

function dev(args: string[], stdin?: string, env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [CLI, 'dev', ...args],
      { env: { ...process.env, ...host.env, ...env }, timeout: CLI_TIMEOUT_MS },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    child.stdin!.end(stdin ?? '');
  });
}

const log = () => join(vmDir, 'console.log');
const kept = () =>
  (existsSync(`${log()}.1`) ? readFileSync(`${log()}.1`, 'latin1') : '') +
  (existsSync(log()) ? readFileSync(log(), 'latin1') : '');

describe('the console log is bounded (MVM_CONSOLE_LOG_MAX_BYTES)', () => {
  it('below its 64 KiB minimum it is refused before anything starts (exit 2)', async () => {
    const r = await dev(['up', '--accel', 'tcg'], undefined, { MVM_CONSOLE_LOG_MAX_BYTES: '4096' });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /MVM_CONSOLE_LOG_MAX_BYTES 4096 is below its minimum of 65536 bytes/);
    assert.deepEqual(processesMentioning(vmDir), []);
  });

  it('a guest printing 1 MB leaves at most 64 KiB, the newest, and dev logs shows its end', async () => {
    const up = await dev(
      ['up', '--accel', 'tcg', '--timeout', UP_TIMEOUT_S, '--ready-line', READY_LINE],
      undefined,
      { MVM_CONSOLE_LOG_MAX_BYTES: String(BOUND) },
    );
    assert.equal(up.code, 0, up.stderr);
    const running = vmProcessesMentioning(vmDir);
    assert.equal(running.others.length, 1, 'QEMU');
    assert.equal(running.keepers.length, 1, 'the keeper of the console log');

    // The marker is computed in the guest, so only the guest's output shows it, after the flood.
    const con = await dev(
      ['console', '--idle', '3'],
      'yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 1000000; echo; echo FLOOD-$((40+2))\n',
    );
    assert.equal(con.code, 0, con.stderr);
    for (;;) {
      if (kept().includes('FLOOD-42')) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const size = statSync(log()).size + statSync(`${log()}.1`).size;
    assert.ok(size <= BOUND, `console.log and console.log.1 hold ${size} bytes`);
    assert.ok(size > BOUND / 2, 'the older half is kept as well');
    assert.equal(statSync(`${log()}.1`).mode & 0o777, 0o600, 'the rotated part is private too');
    // Only the flood's tail is left: the boot's first lines went first.
    assert.equal(kept().includes(READY_LINE), false);
    assert.match(kept(), /(0123456789abcdefghijklmnopqrstuvwxyz\r?\n)+/);

    const logs = await dev(['logs', '-n', '3']);
    assert.equal(logs.code, 0, logs.stderr);
    assert.match(logs.stdout, /^FLOOD-42$/m);

    const down = await dev(['down']);
    assert.equal(down.code, 0, down.stderr);
    assert.deepEqual(processesMentioning(vmDir), [], 'no QEMU and no keeper left');
    // What the last boot printed stays readable after down.
    assert.match((await dev(['logs', '-n', '3'])).stdout, /^FLOOD-42$/m);
  });
});
