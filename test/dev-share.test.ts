/**
 * `mvmctl dev up --share DIR` (SPEC.md section 8) through the built CLI,
 * booting the real test guest once under QEMU (software emulation): the host
 * directory is served by virtiofsd and mounted by the guest on
 * /mnt/workdir (tag workdir); the guest reads a host file and writes one the
 * host then sees; `dev status` shows the share; `dev down` leaves neither
 * QEMU nor virtiofsd running; a missing directory or a file is refused
 * before anything starts.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLI, type CliResult } from './support/cli.js';
import type { TestHost } from './support/host.js';
import { hostWithTestGuest, processesMentioning, READY_LINE } from './support/vm.js';

// Bounds on waiting for events on a loaded 2-core host under software emulation, not timing
// assertions.
const UP_TIMEOUT_S = '120';
const CLI_TIMEOUT_MS = 300_000;

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

let root: string;
let host: TestHost;
let vmDir: string;
let shared: string;

before(async () => {
  // Short: the VM's sockets live under it, and a unix socket path is limited to 107 bytes.
  root = mkdtempSync(join(tmpdir(), 'mvm-shr-'));
  ({ host, vmDir } = await hostWithTestGuest(root));
  shared = join(root, 'shared');
  mkdirSync(shared);
  writeFileSync(join(shared, 'from-host.txt'), 'host-content-7f3a\n');
});

after(async () => {
  if (host) await dev(['down', '--timeout', '5']);
  if (root) rmSync(root, { recursive: true, force: true });
});

function dev(args: string[], stdin?: string): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [CLI, 'dev', ...args],
      { env: { ...process.env, ...host.env }, timeout: CLI_TIMEOUT_MS },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    child.stdin!.end(stdin ?? '');
  });
}

/** Waits (for the text, not for a time) until console.log contains `text`. */
async function logContains(text: string): Promise<string> {
  for (;;) {
    const log = existsSync(join(vmDir, 'console.log'))
      ? readFileSync(join(vmDir, 'console.log'), 'latin1')
      : '';
    if (log.includes(text)) return log;
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('dev up --share DIR (virtiofs)', () => {
  it('a missing directory: exit 2 naming it, nothing started', async () => {
    const missing = join(root, 'no-such-dir');
    const r = await dev(['up', '--share', missing, '--accel', 'tcg']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--share ".*no-such-dir": no such directory/);
    assert.match(r.stderr, /the directory to share does not exist/);
    assert.deepEqual(processesMentioning(vmDir), []);
    assert.equal(existsSync(join(vmDir, 'state.json')), false);
    assert.equal(existsSync(join(vmDir, 'virtiofsd.sock')), false);
  });

  it('a file, not a directory: exit 2, nothing started', async () => {
    const r = await dev(['up', '--share', join(shared, 'from-host.txt'), '--accel', 'tcg']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--share ".*from-host\.txt" is not a directory/);
    assert.deepEqual(processesMentioning(vmDir), []);
    assert.equal(existsSync(join(vmDir, 'state.json')), false);
  });

  it('the guest reads the host file and writes one the host sees; down stops QEMU and virtiofsd', async () => {
    const up = await dev([
      'up',
      '--share',
      shared,
      '--ready-line',
      READY_LINE,
      '--accel',
      'tcg',
      '--timeout',
      UP_TIMEOUT_S,
      '--json',
    ]);
    assert.equal(up.code, 0, up.stderr);
    const upJson = JSON.parse(up.stdout) as Json;
    assert.deepEqual(upJson.share, { host_path: shared, tag: 'workdir' });

    const state = JSON.parse(readFileSync(join(vmDir, 'state.json'), 'utf8')) as Json;
    assert.equal(state.share.transport, 'virtiofs');
    assert.equal(state.share.socket, join(vmDir, 'virtiofsd.sock'));
    const virtiofsdPid = state.share.virtiofsd.pid as number;
    assert.ok(processesMentioning(vmDir).includes(virtiofsdPid), 'virtiofsd runs');
    assert.ok(processesMentioning(vmDir).includes(state.pid as number), 'QEMU runs');

    const status = await dev(['status', '--json']);
    assert.equal(status.code, 0, status.stderr);
    const s = JSON.parse(status.stdout) as Json;
    assert.equal(s.state, 'running');
    assert.deepEqual(s.share, { host_path: shared, tag: 'workdir', transport: 'virtiofs' });
    const human = await dev(['status']);
    assert.match(human.stdout, new RegExp(`share: +${shared} -> tag workdir \\(virtiofs\\)`));

    // The marker is computed in the guest, so it appears only once the commands before it ran.
    const con = await dev(
      ['console', '--idle', '3'],
      'cat /mnt/workdir/from-host.txt; echo guest-wrote-9c1 > /mnt/workdir/from-guest.txt; sync; echo SHARE-DONE-$((40+2))\n',
    );
    assert.equal(con.code, 0, con.stderr);
    const log = await logContains('SHARE-DONE-42');
    assert.match(log, /host-content-7f3a/);
    assert.equal(readFileSync(join(shared, 'from-guest.txt'), 'utf8'), 'guest-wrote-9c1\n');

    const down = await dev(['down', '--timeout', '30']);
    assert.equal(down.code, 0, down.stderr);
    assert.deepEqual(processesMentioning(vmDir), [], 'no QEMU and no virtiofsd left');
    assert.equal(existsSync(join(vmDir, 'state.json')), false);
    assert.equal(existsSync(join(vmDir, 'virtiofsd.sock')), false);
    // The host's files are untouched by the VM going away.
    assert.equal(readFileSync(join(shared, 'from-host.txt'), 'utf8'), 'host-content-7f3a\n');
  });
});
