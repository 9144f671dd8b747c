/**
 * A stock Debian 12 image that nobody here wrote a line of: debootstrap's
 * bookworm with systemd as init, Debian's cloud kernel, an initrd made by
 * Debian's initramfs-tools, and Debian's qemu-guest-agent started by its own
 * udev rule (scripts/build-debian-image.sh). Signed by a test Sigstore PKI
 * and imported like any release, then booted once under QEMU (software
 * emulation) with dev up's default flags, and worked with as a user would:
 * dev exec, dev cp both ways (GNU tar and dash in the guest), dev down.
 *
 * Its first build needs root, debootstrap and Debian's mirror (.ci/run
 * installs debootstrap); later runs use the cache in .vm-cache/debian-image.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCliSlow } from './support/cli.js';
import type { TestHost } from './support/host.js';
import { buildDebianImage, hostWithTestGuest } from './support/vm.js';

let root: string;
let host: TestHost;
/** The CLI against this host, with room for emulation's pace. */
const mvm = (args: string[]) => runCliSlow(args, host.env);

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
async function guest(script: string): Promise<string> {
  const r = await mvm(['dev', 'exec', '-n', '--', 'sh', '-c', script]);
  assert.equal(r.code, 0, `${script}: ${r.stderr}`);
  return r.stdout;
}

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'mvm-deb-'));
  ({ host } = await hostWithTestGuest(root, buildDebianImage()));
});

after(async () => {
  if (host) await mvm(['dev', 'down', '--timeout', '10']);
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('a stock Debian 12 systemd image', () => {
  it('dev up with default flags: ready when its guest agent answers, on ttyS0', async () => {
    // --accel tcg only because this host's KVM cannot run it; --timeout for emulation's pace.
    const up = await mvm(['dev', 'up', '--accel', 'tcg', '--timeout', '300']);
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stderr, /^✓ ready +the guest agent answered \(\d+\.\d s\)$/m);
    const s = JSON.parse((await mvm(['dev', 'status', '--json'])).stdout) as Record<
      string,
      unknown
    >;
    assert.equal(s.ready_by, 'agent');
    assert.equal(s.console, 'ttyS0');
    // dev up boots with `quiet`: the stock kernel and systemd print little, but on ttyS0 it arrives.
    assert.notEqual(readFileSync(s.console_log as string, 'utf8').trim(), '');
    const stages = s.stages_ms as Record<string, number>;
    assert.ok(stages['kernel booted']! <= stages.ready!, JSON.stringify(stages));
  });

  it('dev exec: systemd is pid 1, exit codes and output come back', async () => {
    assert.equal(await guest('cat /proc/1/comm'), 'systemd\n');
    assert.match(
      await guest('cat /etc/os-release'),
      /^PRETTY_NAME="Debian GNU\/Linux 12 \(bookworm\)"$/m,
    );
    const r = await mvm(['dev', 'exec', '-n', '--', 'sh', '-c', 'echo out; echo err >&2; exit 7']);
    assert.equal(r.code, 7);
    assert.equal(r.stdout, 'out\n');
    assert.equal(r.stderr, 'err\n');
  });

  it('dev cp: a file and a tree both ways, byte-exact', async () => {
    const work = join(root, 'w');
    mkdirSync(join(work, 'tree', 'sub'), { recursive: true });
    const data = randomBytes(5_000_000);
    writeFileSync(join(work, 'blob'), data);
    writeFileSync(join(work, 'tree', 'sub', 'f'), 'in a tree\n');
    assert.equal((await mvm(['dev', 'cp', join(work, 'blob'), 'dev:/root/'])).code, 0);
    assert.equal(await guest('sha256sum /root/blob | cut -d" " -f1'), `${sha(data)}\n`);
    const back = await mvm(['dev', 'cp', 'dev:/root/blob', join(work, 'blob-back')]);
    assert.equal(back.code, 0, back.stderr);
    assert.ok(readFileSync(join(work, 'blob-back')).equals(data));
    assert.equal((await mvm(['dev', 'cp', '-r', join(work, 'tree'), 'dev:/root/tree'])).code, 0);
    await guest('echo made in the guest > /root/tree/new');
    const tree = await mvm(['dev', 'cp', '-r', 'dev:/root/tree', join(work, 'tree-back')]);
    assert.equal(tree.code, 0, tree.stderr);
    assert.equal(readFileSync(join(work, 'tree-back', 'sub', 'f'), 'utf8'), 'in a tree\n');
    assert.equal(readFileSync(join(work, 'tree-back', 'new'), 'utf8'), 'made in the guest\n');
  });

  it('dev cp from a guest whose tar lies: the archive is refused, nothing lands', async () => {
    // Debian's sh (dash) finds tar on PATH, so this guest can be compromised for real: a tar in
    // /usr/local/bin that answers every archive request with an absolute name.
    await guest(
      'mkdir -p /root/evil && cd /root/evil && echo x > escape && /usr/bin/tar -cPf /root/evil.tar /root/evil/escape && printf \'#!/bin/sh\\nfor a; do case "$a" in *.tar) cp /root/evil.tar "$a";; esac; done\\n\' > /usr/local/bin/tar && chmod 755 /usr/local/bin/tar',
    );
    try {
      const dst = join(root, 'w', 'evil-copy');
      const r = await mvm(['dev', 'cp', '-r', 'dev:/root/evil', dst]);
      assert.equal(r.code, 255, r.stderr);
      assert.match(
        r.stderr,
        /^Error: The guest's archive was refused: the name "\/root\/evil\/escape" is absolute$/m,
      );
      assert.equal(existsSync(dst), false);
      assert.equal(
        existsSync('/root/evil/escape'),
        false,
        'nothing written at the absolute name on the host',
      );
    } finally {
      await guest('rm -f /usr/local/bin/tar');
    }
  });

  it('dev down shuts it down through its guest agent', async () => {
    const r = await mvm(['dev', 'down', '--timeout', '60']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^The dev VM shut down \(through its guest agent\)\./m);
    const s = JSON.parse((await mvm(['dev', 'status', '--json'])).stdout) as { state: string };
    assert.equal(s.state, 'stopped');
  });

  it('dev up --console hvc0: its initrd has no virtio_console, and dev up says so once the guest stops', async () => {
    // Debian's initramfs init mounts the root disk, cannot open /dev/console and exits: the
    // kernel panics (panic=-1 reboots, -no-reboot ends QEMU). Measured: about 3 s of guest time.
    const up = await mvm(['dev', 'up', '--accel', 'tcg', '--console', 'hvc0', '--timeout', '280']);
    assert.equal(up.code, 1, up.stderr);
    assert.match(
      up.stderr,
      /^Error: The dev VM did not boot: QEMU \(pid \d+\) exited before stage "kernel booted"$/m,
    );
    assert.match(
      up.stderr,
      /Nothing reached hvc0: the virtio console needs virtio_console in the kernel or its initrd\. Stock initrds \(Debian's, Ubuntu's\) lack it, and their init exits when it cannot open \/dev\/console\. The console printed nothing\./,
    );
    assert.match(up.stderr, /fix: +Boot with --console ttyS0 \(the default\)/);
    const s = JSON.parse((await mvm(['dev', 'status', '--json'])).stdout) as { state: string };
    assert.equal(s.state, 'stopped');
  });
});
