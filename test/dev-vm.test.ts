/**
 * The dev VM's lifecycle (SPEC.md section 8) end to end through the built CLI:
 * a release set made from the real test guest (scripts/build-test-image.sh,
 * with its initrd), signed by the test PKI and imported into a test host, then
 * `dev up` / `status` / `logs` / `down` booting it under QEMU with software
 * emulation (TCG: /dev/kvm here cannot run a stock kernel).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  appendFileSync,
  chmodSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLI, type CliResult } from './support/cli.js';
import { VERSION, type TestHost } from './support/host.js';
import {
  hostWithTestGuest,
  freePort,
  GUEST_PAGE_TEXT,
  processesMentioning,
  vmProcessesMentioning,
  READY_LINE,
} from './support/vm.js';

// Bounds on waiting for events on a loaded 2-core host under software emulation, not timing
// assertions: a boot to the ready line takes about 2-4 s here.
const UP_TIMEOUT_S = '120';
const CLI_TIMEOUT_MS = 300_000;
const NOT_READY_TIMEOUT_S = '30';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

let root: string;
let host: TestHost;
let vmDir: string;

before(async () => {
  // Short: the VM's sockets live under it, and a unix socket path is limited to 107 bytes.
  root = mkdtempSync(join(tmpdir(), 'mvm-devvm-'));
  ({ host, vmDir } = await hostWithTestGuest(root));
});

after(async () => {
  // Whatever a failed test left running is stopped (by the CLI, which checks pid + start time).
  if (host) await dev(['down', '--timeout', '5']);
  if (root) rmSync(root, { recursive: true, force: true });
});

/** The built CLI on the test host, with a bound long enough for a boot. */
function dev(args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    const env: NodeJS.ProcessEnv = { ...process.env, ...host.env };
    execFile(
      process.execPath,
      [CLI, 'dev', ...args],
      { env, timeout: CLI_TIMEOUT_MS },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

const installedRootfs = (): string =>
  join(root, 'h', 'data', 'dev', 'prebuilt', `v${VERSION}`, 'rootfs.ext4');
const sha256 = (path: string): string =>
  createHash('sha256').update(readFileSync(path)).digest('hex');
const upRecords = (): Json[] => host.audit().filter((r) => r['event'] === 'dev.up');

describe('dev up / status / logs / down with a real guest', () => {
  it(
    'boots to the ready line, reports status, shows the log, forwards a port, is idempotent, and stops with no QEMU left',
    { timeout: 900_000 },
    async () => {
      const rootfsBefore = sha256(installedRootfs());
      const port = await freePort();

      const down0 = await dev(['down']);
      assert.equal(down0.code, 0, down0.stderr);
      assert.match(down0.stdout, /The dev VM is not running \(stopped\); nothing to do\./);

      const up = await dev([
        'up',
        '--port',
        `127.0.0.1:${port}:80`,
        '--accel',
        'tcg',
        '--ready-line',
        READY_LINE,
        '--timeout',
        UP_TIMEOUT_S,
      ]);
      assert.equal(up.code, 0, up.stderr);
      assert.match(up.stderr, /✓ hypervisor started +QEMU pid \d+, tcg/);
      assert.match(up.stderr, /✓ kernel booted/);
      assert.match(up.stderr, /✓ ready +ready line seen: mvm-dev: ready/);
      assert.match(up.stdout, new RegExp(`The dev VM is ready: v${VERSION}, pid \\d+, tcg`));

      const status = await dev(['status', '--json']);
      assert.equal(status.code, 0, status.stderr);
      const s = JSON.parse(status.stdout) as Json;
      assert.equal(s['state'], 'running');
      assert.equal(s['version'], VERSION);
      assert.equal(s['accel'], 'tcg');
      assert.ok(Number.isSafeInteger(s['pid']) && s['pid'] > 1);
      assert.deepEqual(s['ports'], [{ host: `127.0.0.1:${port}`, guest: 80 }]);
      assert.equal(s['network'], 'user');
      assert.equal(s['console_log'], join(vmDir, 'console.log'));
      assert.equal(s['at_rest'], 'ok');
      assert.equal(s['console'], 'ttyS0');
      assert.equal(s['ready_by'], 'line');
      const stages = s['stages_ms'] as Record<string, number>;
      assert.deepEqual(Object.keys(stages), ['hypervisor started', 'kernel booted', 'ready']);
      assert.ok(stages['kernel booted']! <= stages['ready']!, JSON.stringify(stages));
      assert.match(
        (await dev(['status'])).stdout,
        /^ready: +ready line seen after \d+\.\d s \(console output after \d+\.\d s\)$/m,
      );
      // The QEMU the state names is the one running on this VM's state directory.
      assert.deepEqual(vmProcessesMentioning(vmDir).others, [s['pid']]);
      assert.equal(vmProcessesMentioning(vmDir).keepers.length, 1, 'one keeper of the console log');
      // Private: the guest's console may show anything it printed.
      assert.equal(statSync(join(vmDir, 'console.log')).mode & 0o777, 0o600);
      assert.equal(statSync(vmDir).mode & 0o777, 0o700);

      const logs = await dev(['logs', '-n', '50']);
      assert.equal(logs.code, 0, logs.stderr);
      assert.match(logs.stdout, /^mvm-dev: ready$/m);

      const page = await fetch(`http://127.0.0.1:${port}/`);
      assert.equal(page.status, 200);
      assert.match(await page.text(), new RegExp(GUEST_PAGE_TEXT));

      const again = await dev(['up', '--ready-line', READY_LINE]);
      assert.equal(again.code, 0, again.stderr);
      assert.match(
        again.stdout,
        new RegExp(`The dev VM is already running: v${VERSION}, pid ${s['pid']}, tcg`),
      );

      const records = upRecords();
      assert.equal(records.length, 1, 'one boot, one record; the second up booted nothing');
      assert.equal(records[0]!['outcome'], 'ok');
      assert.equal(records[0]!['version'], VERSION);
      assert.match(
        String(records[0]!['message']),
        /accel tcg; kernel [0-9a-f]{64}, rootfs [0-9a-f]{64}, initrd [0-9a-f]{64}/,
      );

      const down = await dev(['down']);
      assert.equal(down.code, 0, down.stderr);
      assert.match(down.stdout, /^The dev VM shut down \(through its guest agent\)\./);
      assert.deepEqual(processesMentioning(vmDir), []);
      for (const f of ['state.json', 'qemu.pid', 'console.sock', 'qmp.sock'])
        assert.equal(existsSync(join(vmDir, f)), false, `${f} removed`);
      assert.equal(existsSync(join(vmDir, 'overlay.qcow2')), true, 'the overlay is kept');

      const status2 = await dev(['status', '--json']);
      assert.equal((JSON.parse(status2.stdout) as Json)['state'], 'stopped');
      const down2 = await dev(['down']);
      assert.equal(down2.code, 0, down2.stderr);
      assert.match(down2.stdout, /The dev VM is not running \(stopped\); nothing to do\./);

      // The guest wrote to its disk (the overlay); the verified image was never written.
      assert.equal(sha256(installedRootfs()), rootfsBefore);
    },
  );

  it(
    'QEMU killed with kill -9: status says stale, and down cleans it up without signalling anything',
    { timeout: 300_000 },
    async () => {
      const up = await dev(['up', '--accel', 'tcg', '--no-wait']);
      assert.equal(up.code, 0, up.stderr);
      assert.match(up.stdout, /The dev VM is starting \(--no-wait\)/);
      const pid = (JSON.parse((await dev(['status', '--json'])).stdout) as Json)['pid'] as number;
      process.kill(pid, 'SIGKILL');
      // Deterministic: wait until the process is gone (or a zombie), not for a fixed time.
      while (processesMentioning(vmDir).includes(pid)) await new Promise((r) => setTimeout(r, 20));

      const status = await dev(['status', '--json']);
      const s = JSON.parse(status.stdout) as Json;
      assert.equal(s['state'], 'stale');
      assert.equal(s['pid'], pid);
      assert.match(
        String(s['stale_reason']),
        new RegExp(`QEMU \\(pid ${pid}\\) is no longer running`),
      );
      const human = await dev(['status']);
      assert.match(human.stdout, /^state: +stale/m);

      const down = await dev(['down']);
      assert.equal(down.code, 0, down.stderr);
      assert.match(down.stdout, /The dev VM was not running; its stale state was cleaned up/);
      assert.equal(existsSync(join(vmDir, 'state.json')), false);
      assert.equal(
        (JSON.parse((await dev(['status', '--json'])).stdout) as Json)['state'],
        'stopped',
      );
    },
  );

  it(
    'default readiness: the guest agent answering, or upstream\'s "[init] all services started"; neither: the error says what was awaited',
    { timeout: 600_000 },
    async () => {
      // No ready line at all: the agent's answer is what makes it ready.
      const byAgent = await dev([
        'up',
        '--accel',
        'tcg',
        '--append',
        'mvm.noready',
        '--json',
        '--timeout',
        UP_TIMEOUT_S,
      ]);
      assert.equal(byAgent.code, 0, byAgent.stderr);
      assert.match(byAgent.stderr, /✓ ready +the guest agent answered \(\d+\.\d s\)/);
      const j = JSON.parse(byAgent.stdout) as Json;
      assert.equal(j['ready_by'], 'agent');
      assert.equal(j['console'], 'ttyS0');
      const downByAgent = await dev(['down', '--json']);
      assert.equal((JSON.parse(downByAgent.stdout) as Json)['method'], 'agent', downByAgent.stderr);
      // No agent: upstream's ready line, on the serial console.
      const byLine = await dev([
        'up',
        '--accel',
        'tcg',
        '--append',
        'mvm.noagent mvm.upstream',
        '--timeout',
        UP_TIMEOUT_S,
      ]);
      assert.equal(byLine.code, 0, byLine.stderr);
      assert.match(byLine.stderr, /✓ ready +ready line seen: \[init\] all services started/);
      // No agent to ask: ACPI, at once rather than after a wait for the agent.
      const downByAcpi = await dev(['down', '--json']);
      assert.equal(
        (JSON.parse(downByAcpi.stdout) as Json)['method'],
        'powerdown',
        downByAcpi.stderr,
      );
      // Neither: the error names what dev up waited for, and shows the console.
      const neither = await dev([
        'up',
        '--accel',
        'tcg',
        '--append',
        'mvm.noagent mvm.noready',
        '--timeout',
        NOT_READY_TIMEOUT_S,
      ]);
      assert.equal(neither.code, 1, neither.stderr);
      assert.match(
        neither.stderr,
        /dev up waited for the guest agent answering, or the console line "mvm: ready" or "\[init\] all services started" \(console ttyS0\)\./,
      );
      assert.match(neither.stderr, /fix: +Run qemu-guest-agent in the image/);
      assert.match(neither.stderr, /Last console lines/);
      assert.deepEqual(processesMentioning(vmDir), []);
    },
  );

  it(
    'an image whose init never prints the ready line: the timeout names the stage, shows the console, and stops QEMU',
    { timeout: 300_000 },
    async () => {
      const before = upRecords().length;
      const up = await dev([
        'up',
        '--accel',
        'tcg',
        '--append',
        'mvm.noready',
        '--ready-line',
        READY_LINE,
        '--timeout',
        NOT_READY_TIMEOUT_S,
      ]);
      assert.equal(up.code, 1, up.stderr);
      assert.match(
        up.stderr,
        new RegExp(
          `Error: The dev VM did not boot: stage "ready" did not complete within ${NOT_READY_TIMEOUT_S} s`,
        ),
      );
      assert.match(
        up.stderr,
        /cause: the guest console shows output but the VM did not become ready: .* dev up waited for the console line "mvm-dev: ready" \(console ttyS0\)\./,
      );
      // The shell's prompt is the last thing the guest printed, shown escaped (it sends ESC[6n).
      assert.match(
        up.stderr,
        /Last console lines \(.*console\.log\):\n( {2}\| .*\n)* {2}\| .*mvm-dev# /,
      );
      assert.ok(!up.stderr.includes('\u001b'), 'no raw escape character reaches the terminal');
      assert.deepEqual(processesMentioning(vmDir), []);
      assert.equal(existsSync(join(vmDir, 'state.json')), false);
      assert.equal(
        (JSON.parse((await dev(['status', '--json'])).stdout) as Json)['state'],
        'stopped',
      );
      const records = upRecords().slice(before);
      assert.equal(records.length, 1);
      assert.equal(records[0]!['outcome'], 'failed');
      assert.equal(records[0]!['code'], 'internal');
    },
  );

  it(
    'a guest whose init exits: the kernel panics, QEMU ends, and dev up says so at once with the panic shown',
    { timeout: 300_000 },
    async () => {
      // --timeout far beyond the boot: "exited before" (not "did not complete within") shows it did
      // not wait it out.
      const up = await dev(['up', '--accel', 'tcg', '--append', 'mvm.exit', '--timeout', '280']);
      assert.equal(up.code, 1, up.stderr);
      assert.match(
        up.stderr,
        /^Error: The dev VM did not boot: QEMU \(pid \d+\) exited before stage "ready"$/m,
      );
      // The panic's line is in the cause: the console's last lines are its register dump.
      assert.match(
        up.stderr,
        /^ {2}cause: the kernel panicked: "Attempted to kill init! exitcode=0x00000300" \(the image's init exited with status 3\), and a panic ends the VM\. The last console lines are above\.$/m,
      );
      assert.match(up.stderr, /Kernel Offset: disabled/);
      assert.deepEqual(processesMentioning(vmDir), []);
      assert.equal(existsSync(join(vmDir, 'state.json')), false);
    },
  );

  it('an installed initrd changed after import: exit 14, audited and counted once, no QEMU started', async () => {
    const before = upRecords().length;
    const initrd = join(root, 'h', 'data', 'dev', 'prebuilt', `v${VERSION}`, 'initrd');
    chmodSync(initrd, 0o644);
    appendFileSync(initrd, 'x');
    const up = await dev(['up', '--accel', 'tcg', '--ready-line', READY_LINE]);
    assert.equal(up.code, 14, up.stderr);
    assert.match(up.stderr, /Error: initrd SHA-256 mismatch/);
    assert.doesNotMatch(up.stderr, /hypervisor started/);
    assert.deepEqual(processesMentioning(vmDir), []);
    const records = upRecords().slice(before);
    assert.equal(records.length, 1);
    assert.equal(records[0]!['outcome'], 'failed');
    assert.equal(records[0]!['code'], 'digest');
    const m = await host.metrics();
    assert.equal(m['dev_image_verify_digest_mismatch_total'], 1);
  });
});
