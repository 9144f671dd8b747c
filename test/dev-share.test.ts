/**
 * `mvmctl dev up --share DIR` (SPEC.md section 8) through the built CLI,
 * booting the real test guest once under QEMU (software emulation): the host
 * directory is served by virtiofsd and mounted by the guest on
 * /mnt/workdir (tag workdir); the guest reads a host file and writes one the
 * host then sees; `dev status` shows the share; `dev down` leaves neither
 * QEMU nor virtiofsd running; a missing directory or a file is refused
 * before anything starts. virtiofsd runs as the directory's owner, never as
 * root: what guest root makes there belongs to that owner, device nodes and
 * other owners cannot be made, and a directory owned by root, or one its
 * owner cannot reach, is refused.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { virtiofsdSocket } from '../src/core/vm-spec.js';
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
/** The shared directory's owner: an unprivileged uid and gid. */
const OWNER = 1000;

before(async () => {
  // Short: the VM's sockets live under it, and a unix socket path is limited to 107 bytes.
  root = mkdtempSync(join(tmpdir(), 'mvm-shr-'));
  ({ host, vmDir } = await hostWithTestGuest(root));
  shared = join(root, 'shared');
  mkdirSync(shared);
  writeFileSync(join(shared, 'from-host.txt'), 'host-content-7f3a\n');
  // An unprivileged owner (no account needed: virtiofsd runs as the number), and a way through
  // the test's private temporary directory to it.
  chmodSync(root, 0o711);
  chownSync(shared, OWNER, OWNER);
  chownSync(join(shared, 'from-host.txt'), OWNER, OWNER);
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
    assert.equal(existsSync(virtiofsdSocket(vmDir)), false);
  });

  it('a file, not a directory: exit 2, nothing started', async () => {
    const r = await dev(['up', '--share', join(shared, 'from-host.txt'), '--accel', 'tcg']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--share ".*from-host\.txt" is not a directory/);
    assert.deepEqual(processesMentioning(vmDir), []);
    assert.equal(existsSync(join(vmDir, 'state.json')), false);
  });

  it('a directory owned by root: exit 2, nothing started (the guest would be root on the host)', async () => {
    const owned = join(root, 'root-owned');
    mkdirSync(owned);
    const r = await dev(['up', '--share', owned, '--accel', 'tcg']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--share ".*root-owned" is owned by root/);
    assert.match(r.stderr, /the guest would act as root on this host/);
    assert.match(r.stderr, /chown 1000:1000/);
    assert.deepEqual(processesMentioning(root), []);
    assert.equal(existsSync(join(vmDir, 'state.json')), false);
  });

  it('a directory its owner cannot reach: exit 2 naming the parent in the way', async () => {
    const closed = join(root, 'closed');
    const inner = join(closed, 'inner');
    mkdirSync(inner, { recursive: true, mode: 0o700 });
    chmodSync(closed, 0o700);
    chownSync(inner, OWNER, OWNER);
    const r = await dev(['up', '--share', inner, '--accel', 'tcg']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`--share ".*inner": its owner \\(uid ${OWNER}\\) cannot reach it`),
    );
    assert.match(r.stderr, /".*closed" \(mode 0700, owner uid 0\) does not let uid 1000 through/);
    assert.deepEqual(processesMentioning(root), []);
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
    assert.equal(state.share.socket, virtiofsdSocket(vmDir));
    const virtiofsdPid = state.share.virtiofsd.pid as number;
    assert.ok(processesMentioning(root).includes(virtiofsdPid), 'virtiofsd runs');
    // As the directory's owner, never as root; its "root" is that owner in a namespace of its own.
    const ids = readFileSync(`/proc/${virtiofsdPid}/status`, 'utf8');
    assert.match(ids, new RegExp(`^Uid:\\t${OWNER}\\t${OWNER}\\t${OWNER}\\t${OWNER}$`, 'm'));
    assert.match(ids, new RegExp(`^Gid:\\t${OWNER}\\t${OWNER}\\t${OWNER}\\t${OWNER}$`, 'm'));
    assert.match(
      readFileSync(`/proc/${virtiofsdPid}/uid_map`, 'utf8'),
      new RegExp(`^\\s+0\\s+${OWNER}\\s+1\\n$`),
    );
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

    // Guest root tries what made a root virtiofsd dangerous: a setuid and setgid file, another
    // owner, a device node.
    const attempt = await dev(
      ['console', '--idle', '3'],
      'cd /mnt/workdir; cp /bin/busybox suid; chmod 6755 suid; chown 0:0 suid; chown 4321:4321 from-guest.txt; echo chown-rc=$?; mknod mem c 1 1; echo mknod-rc=$?; cd /; echo ATTEMPT-DONE-$((50+1))\n',
    );
    assert.equal(attempt.code, 0, attempt.stderr);
    const after = await logContains('ATTEMPT-DONE-51');
    assert.match(after, /chown-rc=[1-9]/, 'chown to another owner fails');
    assert.match(after, /mknod-rc=[1-9]/, 'mknod of a device fails');
    const suid = statSync(join(shared, 'suid'));
    assert.equal(suid.uid, OWNER, 'the file the guest made as root belongs to the owner');
    assert.equal(suid.gid, OWNER);
    assert.equal(statSync(join(shared, 'from-guest.txt')).uid, OWNER);
    assert.equal(existsSync(join(shared, 'mem')), false, 'no device node on the host');
    for (const name of readdirSync(shared)) {
      const st = statSync(join(shared, name));
      assert.equal(st.uid, OWNER, name);
      assert.ok(st.isFile() || st.isDirectory(), `${name} is a plain file`);
    }

    const down = await dev(['down', '--timeout', '30']);
    assert.equal(down.code, 0, down.stderr);
    assert.deepEqual(processesMentioning(root), [], 'no QEMU and no virtiofsd left');
    assert.equal(existsSync(join(vmDir, 'state.json')), false);
    assert.equal(
      existsSync(dirname(virtiofsdSocket(vmDir))),
      false,
      "virtiofsd's directory is gone",
    );
    // The host's files are untouched by the VM going away.
    assert.equal(readFileSync(join(shared, 'from-host.txt'), 'utf8'), 'host-content-7f3a\n');
  });
});
