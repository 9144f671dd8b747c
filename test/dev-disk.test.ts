/**
 * `dev up --disk` and the remembered settings, end to end: the real test guest
 * under QEMU (software emulation) through the built CLI. A file system made
 * on /dev/vdb in the guest keeps its file across dev down / dev up, --fresh
 * and dev down --reset; a larger --disk grows the disk the guest sees; a
 * smaller one is refused before anything boots; --delete-disk removes it and
 * says so. --cpus, --memory and --disk given once are reused and shown by
 * dev status. A data disk that is not one dev up made (a link, a qcow2
 * naming a backing file) is refused.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { TestHost } from './support/host.js';
import { hostWithTestGuest, READY_LINE } from './support/vm.js';

let root: string;
let host: TestHost;
let vmDir: string;

const up = (...flags: string[]) =>
  host.run([
    'dev',
    'up',
    '--accel',
    'tcg',
    '--timeout',
    '120',
    '--ready-line',
    READY_LINE,
    ...flags,
  ]);
const down = (...flags: string[]) => host.run(['dev', 'down', '--timeout', '5', ...flags]);
async function guest(script: string): Promise<string> {
  const r = await host.run(['dev', 'exec', '-n', '--', 'sh', '-c', script]);
  assert.equal(r.code, 0, `${script}: ${r.stderr}`);
  return r.stdout;
}
async function status(): Promise<Record<string, unknown>> {
  const r = await host.run(['dev', 'status', '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}
/** 512-byte sectors of /dev/vdb as the guest kernel sees them. */
const sectors = async () => Number((await guest('cat /sys/block/vdb/size')).trim());

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'mvm-disk-'));
  ({ host, vmDir } = await hostWithTestGuest(root));
});

after(async () => {
  if (host) await down();
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('dev up --disk: a data disk that outlives the overlay', () => {
  it('is created as /dev/vdb, and --cpus, --memory, --disk are remembered', async () => {
    const r = await up('--disk', '64M', '--cpus', '1', '--memory', '256M');
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      /^note: created the data disk .*data\.qcow2 \(64M\): \/dev\/vdb in the guest/m,
    );
    assert.equal(await sectors(), (64 * 2 ** 20) / 512);
    await guest('mke2fs -q /dev/vdb && mount /dev/vdb /mnt && echo kept > /mnt/f && umount /mnt');
    const s = await status();
    assert.deepEqual(s.settings, { cpus: '1', memory: '256M', disk: '64M' });
    assert.equal((s.data_disk as { size_bytes: number }).size_bytes, 64 * 2 ** 20);
    const human = await host.run(['dev', 'status']);
    assert.match(human.stdout, /^data disk: +.*data\.qcow2 \(\/dev\/vdb, 64 MiB, /m);
    assert.match(
      human.stdout,
      /^settings: +--cpus 1, --memory 256M, --disk 64M \(reused by the next dev up\)$/m,
    );
  });

  it('survives dev down and dev up with no flags, which reuses the settings', async () => {
    assert.equal((await down()).code, 0);
    const r = await up();
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      /^note: using the settings of an earlier dev up: --cpus 1, --memory 256M, --disk 64M/m,
    );
    const s = await status();
    assert.equal(s.cpus, 1);
    assert.equal(s.memory_mib, 256);
    assert.equal(await guest('mount /dev/vdb /mnt && cat /mnt/f; umount /mnt'), 'kept\n');
  });

  it('survives dev down --reset and dev up --fresh, and grows with a larger --disk', async () => {
    await guest('echo on-the-overlay > /root/overlay-file');
    assert.equal((await down('--reset')).code, 0);
    assert.ok(existsSync(join(vmDir, 'data.qcow2')), '--reset leaves the data disk');
    const r = await up('--fresh', '--disk', '128M');
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      /^note: grew the data disk from 64M to 128M: grow its file system in the guest/m,
    );
    assert.equal(await sectors(), (128 * 2 ** 20) / 512);
    assert.equal(await guest('[ -e /root/overlay-file ] && echo there || echo reset'), 'reset\n');
    assert.equal(await guest('mount /dev/vdb /mnt && cat /mnt/f; umount /mnt'), 'kept\n');
    assert.equal(((await status()).settings as { disk: string }).disk, '128M');
  });

  it('refuses to shrink, before anything boots, naming the way to start over', async () => {
    assert.equal((await down()).code, 0);
    const r = await up('--disk', '64M');
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      /^Error: --disk 64M is smaller than the data disk's 128M: a data disk grows, it never shrinks$/m,
    );
    assert.match(r.stderr, /cut off the end of the file system/);
    assert.match(r.stderr, /mvmctl dev down --delete-disk/);
    assert.equal((await status()).state, 'stopped');
    assert.equal(
      ((await status()).settings as { disk: string }).disk,
      '128M',
      'a refused up remembers nothing',
    );
  });

  it('dev down --delete-disk deletes it, says what is lost, and forgets its size', async () => {
    const r = await down('--delete-disk');
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /^Deleted the data disk .*data\.qcow2 \(128 MiB\): everything the guest stored on \/dev\/vdb is gone\.$/m,
    );
    assert.equal(existsSync(join(vmDir, 'data.qcow2')), false);
    const s = await status();
    assert.equal(s.data_disk, undefined);
    assert.deepEqual(s.settings, { cpus: '1', memory: '256M' });
    assert.match((await down('--delete-disk')).stdout, /^There was no data disk to delete\.$/m);
  });

  it('a data disk that is not one dev up made is refused (exit 17): a link, a backing file', async () => {
    const target = join(root, 'elsewhere.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', target, '64M']);
    symlinkSync(target, join(vmDir, 'data.qcow2'));
    const link = await up();
    assert.equal(link.code, 17, link.stderr);
    assert.match(
      link.stderr,
      /^Error: The dev VM's data disk .*data\.qcow2 is not one dev up made$/m,
    );
    assert.match(link.stderr, /it is a symbolic link; nothing was booted/);
    rmSync(join(vmDir, 'data.qcow2'));
    writeFileSync(join(root, 'secret'), 'host file');
    execFileSync('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-F',
      'raw',
      '-b',
      join(root, 'secret'),
      join(vmDir, 'data.qcow2'),
      '64M',
    ]);
    const backed = await up();
    assert.equal(backed.code, 17, backed.stderr);
    assert.match(backed.stderr, /its header names a backing file; nothing was booted/);
    assert.equal((await status()).state, 'stopped');
    assert.equal((await down('--delete-disk')).code, 0);
  });
});
