import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  BUILD_SCRIPT,
  GUEST_PAGE_TEXT,
  READY_LINE,
  QemuGuest,
  buildTestImage,
  consoleLog,
  freePort,
  processesMentioning,
} from './support/vm.js';

// Generous bounds for a loaded 2-core host under software emulation; these are limits on waiting
// for an event, not timing assertions (a boot takes about 2-4 s here).
const BOOT_WAIT_MS = 120_000;
const STEP_WAIT_MS = 30_000;

function sha256(path: string): string {
  const r = spawnSync('sha256sum', [path], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.split(' ')[0]!;
}

describe('the test guest image (scripts/build-test-image.sh) under bare QEMU', () => {
  it('a second build with nothing changed does nothing and reports the same files', () => {
    const image = buildTestImage();
    assert.match(image.report, /vmlinux +\d+ bytes +sha256 [0-9a-f]{64}/);
    const again = spawnSync('bash', [BUILD_SCRIPT], {
      encoding: 'utf8',
      env: { ...process.env, MVM_TEST_IMAGE_DIR: image.dir },
    });
    assert.equal(again.status, 0, again.stderr);
    assert.match(again.stdout, /^up to date \(nothing to build\)$/m);
    for (const f of ['vmlinux', 'initrd', 'rootfs.ext4']) {
      const line = new RegExp(
        `^ +${f.replace('.', '\\.')} +\\d+ bytes +sha256 ([0-9a-f]{64})$`,
        'm',
      );
      assert.equal(line.exec(again.stdout)?.[1], sha256(join(image.dir, f)), f);
    }
  });

  it(
    'boots to the ready line, runs a command typed on the console, serves its page through a port forward, powers off on the ACPI button',
    { timeout: 600_000 },
    async () => {
      const image = buildTestImage();
      const rootfsBefore = sha256(image.rootfs);
      const stateDir = mkdtempSync(join(tmpdir(), 'mvm-vm-'));
      const hostPort = await freePort();
      const guest = await QemuGuest.launch({ image, stateDir, hostPort });
      try {
        await guest.waitForConsole(READY_LINE, BOOT_WAIT_MS);
        await guest.waitForConsole('mvm-dev# ', STEP_WAIT_MS);

        // The shell evaluates what is typed: the echoed input shows $((40+2)), the output 42.
        const token = randomBytes(6).toString('hex');
        const from = guest.console.length;
        guest.type(`echo hello-$((40+2))-${token} | tee /written-by-guest; sync`);
        await guest.waitForConsole(`hello-42-${token}`, STEP_WAIT_MS, from);

        const page = await fetch(`http://127.0.0.1:${hostPort}/`);
        assert.equal(page.status, 200);
        assert.match(await page.text(), new RegExp(GUEST_PAGE_TEXT));

        // The console log file records the same session.
        assert.match(readFileSync(consoleLog(stateDir), 'utf8'), new RegExp(`hello-42-${token}`));

        assert.deepEqual(await guest.qmp('system_powerdown'), {});
        const exit = await Promise.race([
          guest.exited,
          new Promise<'still running'>((resolve) =>
            setTimeout(() => resolve('still running'), STEP_WAIT_MS).unref(),
          ),
        ]);
        assert.deepEqual(exit, { code: 0, signal: null }, guest.qemuStderr);
        assert.deepEqual(processesMentioning(stateDir), []);
        // snapshot=on: the guest's writes never reach the cached rootfs.
        assert.equal(sha256(image.rootfs), rootfsBefore);
      } finally {
        await guest.kill();
        rmSync(stateDir, { recursive: true, force: true });
      }
    },
  );
});
