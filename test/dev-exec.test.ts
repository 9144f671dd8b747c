/**
 * `mvmctl dev exec` end to end: the real test guest booted under QEMU (software
 * emulation) through the built CLI, running Debian's own qemu-guest-agent on
 * the virtio-serial port org.qemu.guest_agent.0. The command's exit status,
 * stdout and stderr apart and streamed, stdin, 8 MB of output intact, --env,
 * --workdir, --timeout, --json, Ctrl-C stopping the guest command, and exit
 * 255 for everything that is mvmctl's failure rather than the command's.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLI } from './support/cli.js';
import type { TestHost } from './support/host.js';
import { hostWithTestGuest, READY_LINE } from './support/vm.js';

// Bounds on waiting on a loaded 2-core host under software emulation, not timing assertions.
const CLI_TIMEOUT_MS = 300_000;

let root: string;
let host: TestHost;

interface Run {
  code: number | null;
  stdout: Buffer;
  stderr: string;
  /** When each stdout chunk arrived (ms since the start), for the streaming test. */
  arrivals: { at: number; text: string }[];
}

/** The built CLI with `args` and `stdin` (undefined: an empty pipe), its output as bytes. */
function mvm(
  args: string[],
  o: { stdin?: Buffer | string; onStarted?: (child: ReturnType<typeof spawn>) => void } = {},
): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, ...host.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const start = Date.now();
    const out: Buffer[] = [];
    const arrivals: Run['arrivals'] = [];
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => {
      out.push(b);
      arrivals.push({ at: Date.now() - start, text: b.toString('latin1') });
    });
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), CLI_TIMEOUT_MS);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr, arrivals });
    });
    o.onStarted?.(child);
    child.stdin.end(o.stdin ?? '');
  });
}
const exec = (args: string[], o: Parameters<typeof mvm>[1] = {}) =>
  mvm(['dev', 'exec', ...args], o);

before(async () => {
  // Short: the VM's sockets live under it, and a unix socket path is limited to 107 bytes.
  root = mkdtempSync(join(tmpdir(), 'mvm-exec-'));
  ({ host } = await hostWithTestGuest(root));
});

after(async () => {
  if (host) await mvm(['dev', 'down', '--timeout', '5']);
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('dev exec with no dev VM', () => {
  it('exits 255 naming dev up; a usage mistake is 255 too (as ssh)', async () => {
    const r = await exec(['--', 'true']);
    assert.equal(r.code, 255, r.stderr);
    assert.match(r.stderr, /^Error: The dev VM is not running \(stopped\)/m);
    assert.match(r.stderr, /mvmctl dev up/);
    const none = await exec([]);
    assert.equal(none.code, 255);
    assert.match(none.stderr, /^Error: dev exec needs a command to run$/m);
    const json = await exec(['--json', '--', 'true']);
    assert.equal(json.code, 255);
    assert.equal(JSON.parse(json.stdout.toString()).error.exitCode, 255);
  });
});

describe('dev exec against the test guest and its qemu-guest-agent', () => {
  before(async () => {
    const up = await mvm([
      'dev',
      'up',
      '--accel',
      'tcg',
      '--timeout',
      '120',
      '--ready-line',
      READY_LINE,
    ]);
    assert.equal(up.code, 0, up.stderr);
  });

  it("the command's exit status is mvmctl's; stdout and stderr stay apart", async () => {
    const r = await exec(['--', 'sh', '-c', 'echo to-out; echo to-err >&2; exit 7']);
    assert.equal(r.code, 7, r.stderr);
    assert.equal(r.stdout.toString(), 'to-out\n');
    assert.equal(r.stderr, 'to-err\n');
    assert.equal((await exec(['--', 'true'])).code, 0);
    // No shell reads the arguments: they arrive as given, quotes and all.
    const args = await exec(['--', 'printf', '%s|', "it's", '$HOME', 'a b', '*']);
    assert.equal(args.stdout.toString(), "it's|$HOME|a b|*|");
  });

  it('a signal that ends the command is 128+N', async () => {
    const r = await exec(['--', 'sh', '-c', 'kill -9 $$']);
    assert.equal(r.code, 137, r.stderr);
  });

  it('stdin is passed through; -n gives none', async () => {
    const data = Buffer.from(Array.from({ length: 300_000 }, (_, i) => i & 0xff));
    const r = await exec(['--', 'sha256sum'], { stdin: data });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      r.stdout.toString().split(' ')[0],
      createHash('sha256').update(data).digest('hex'),
    );
    const n = await exec(['-n', '--', 'wc', '-c'], { stdin: 'ignored' });
    assert.equal(n.stdout.toString().trim(), '0');
  });

  it('8 MB of output arrives intact', async () => {
    const r = await exec([
      '--',
      'sh',
      '-c',
      'head -c 8000000 /dev/urandom | tee /tmp/big | sha256sum >&2; cat /tmp/big',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.length, 8_000_000);
    assert.equal(r.stderr.split(' ')[0], createHash('sha256').update(r.stdout).digest('hex'));
  });

  it('output streams while the command runs', async () => {
    const r = await exec(['--', 'sh', '-c', 'echo first; sleep 4; echo second']);
    assert.equal(r.code, 0, r.stderr);
    const first = r.arrivals.find((a) => a.text.includes('first'));
    const second = r.arrivals.find((a) => a.text.includes('second'));
    assert.ok(first && second, JSON.stringify(r.arrivals));
    // Ordering of events, not a timing bound: first arrived in a chunk of its own, before second.
    assert.ok(!first.text.includes('second'), 'first was delivered before the command ended');
    assert.ok(second.at - first.at >= 2000, JSON.stringify(r.arrivals));
  });

  it('--env and --workdir', async () => {
    const r = await exec([
      '--env',
      'GREETING=hi there',
      '--env',
      'HOME=/srv',
      '--workdir',
      '/srv/www',
      '--',
      'sh',
      '-c',
      'echo "$GREETING|$HOME|$(pwd)"',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), 'hi there|/srv|/srv/www\n');
    const bad = await exec(['--workdir', '/no/such/dir', '--', 'true']);
    assert.equal(bad.code, 255);
    assert.match(bad.stderr, /--workdir "\/no\/such\/dir" is not a directory in the guest/);
    const rel = await exec(['--workdir', 'relative', '--', 'true']);
    assert.equal(rel.code, 255);
    assert.match(rel.stderr, /is not an absolute path/);
    const env = await exec(['--env', '1X=y', '--', 'true']);
    assert.equal(env.code, 255);
  });

  it('--json: one object with the exit status and both streams', async () => {
    const r = await exec(['--json', '--', 'sh', '-c', 'echo o; echo e >&2; exit 3']);
    assert.equal(r.code, 3, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout.toString()), {
      exitCode: 3,
      stdout: 'o\n',
      stderr: 'e\n',
    });
  });

  it('--timeout stops the command and its process group: exit 255', async () => {
    const r = await exec(['--timeout', '2', '--', 'sh', '-c', 'sleep 300 & sleep 301; echo never']);
    assert.equal(r.code, 255, r.stderr);
    assert.match(r.stderr, /ran longer than --timeout 2 s and was stopped/);
    // Control: the same check counts a sleep that is running.
    const control = await exec([
      '--',
      'sh',
      '-c',
      // Until the child has exec'd, ps shows it as sh: wait for it (bounded), then count.
      'sleep 302 & for i in $(seq 100); do ps -o args | grep -q "^sleep 302" && break; sleep 0.1; done; ps -o args | grep -c "^sleep 30[012]"; kill $!',
    ]);
    assert.equal(control.stdout.toString().trim(), '1', control.stderr);
    const ps = await exec(['--', 'sh', '-c', 'ps -o args | grep -c "^sleep 30[01]"']);
    assert.equal(ps.stdout.toString().trim(), '0', 'both sleeps were killed');
  });

  it('Ctrl-C stops the guest command, then exits 130', async () => {
    let child!: ReturnType<typeof spawn>;
    const running = exec(['--', 'sh', '-c', 'echo started; sleep 300; echo never'], {
      onStarted: (c) => (child = c),
    });
    // Once the guest command has printed, it is running: interrupt mvmctl.
    await new Promise<void>((resolve) => {
      child.stdout!.on('data', (b: Buffer) => {
        if (b.toString().includes('started')) resolve();
      });
    });
    // Control: the check below sees the guest command while it runs.
    const seen = await exec(['--', 'sh', '-c', 'ps -o args | grep -c "^sleep 300"']);
    assert.equal(seen.stdout.toString().trim(), '1', seen.stderr);
    child.kill('SIGINT');
    const r = await running;
    assert.equal(r.code, 130, r.stderr);
    assert.doesNotMatch(r.stdout.toString(), /never/);
    const ps = await exec(['--', 'sh', '-c', 'ps -o args | grep -c "^sleep 300"']);
    assert.equal(ps.stdout.toString().trim(), '0', 'the guest command was stopped');
  });
});
