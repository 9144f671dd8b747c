/**
 * `mvmctl dev console` (alias `dev shell`) and `mvmctl dev logs -f` (SPEC.md
 * section 8) through the built CLI, against the real test guest booted once
 * under QEMU (software emulation): a command piped through the console runs in
 * the guest, a terminal session detaches on Ctrl-] and restores the terminal,
 * and a follower of the console log sees lines written after it started and
 * stops when the VM does.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLI } from './support/cli.js';
import type { TestHost } from './support/host.js';
import { hostWithTestGuest, READY_LINE } from './support/vm.js';

// Bounds on waiting for events on a loaded 2-core host under software emulation, not timing
// assertions.
const UP_TIMEOUT_S = '120';
/** Generous: the guest only has to echo a line; the console exits this long after it is quiet. */
const IDLE_S = '5';

let root: string;
let host: TestHost;
let vmDir: string;

before(async () => {
  // Short: the VM's sockets live under it, and a unix socket path is limited to 107 bytes.
  root = mkdtempSync(join(tmpdir(), 'mvm-con-'));
  ({ host, vmDir } = await hostWithTestGuest(root));
});

after(async () => {
  if (host) await dev(['down', '--timeout', '5']).done;
  if (root) rmSync(root, { recursive: true, force: true });
});

interface Run {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves once stdout matches `pattern`; rejects if the process exits first. */
  waitFor: (pattern: RegExp) => Promise<void>;
}

/** The built CLI on the test host as a child process with its stdin a pipe. */
function dev(args: string[], stdin?: string): Run {
  return track(
    spawn(process.execPath, [CLI, 'dev', ...args], {
      env: { ...process.env, ...host.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    }),
    stdin,
  );
}

function track(child: ChildProcess, stdin?: string): Run {
  let out = '';
  let err = '';
  const wakers = new Set<() => void>();
  let exited = false;
  child.stdout!.setEncoding('latin1').on('data', (c: string) => {
    out += c;
    for (const w of wakers) w();
  });
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('close', (code, signal) => {
      exited = true;
      for (const w of wakers) w();
      resolve({ code, signal });
    }),
  );
  if (stdin !== undefined) child.stdin!.end(stdin);
  const waitFor = (pattern: RegExp) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (pattern.test(out)) {
          wakers.delete(check);
          resolve();
        } else if (exited) {
          wakers.delete(check);
          reject(new Error(`exited before ${pattern}:\nstdout: ${out}\nstderr: ${err}`));
        }
      };
      wakers.add(check);
      check();
    });
  return { child, stdout: () => out, stderr: () => err, done, waitFor };
}

/** Waits (deterministically: for the text, not for a time) until console.log contains `text`. */
async function logContains(text: string): Promise<void> {
  for (;;) {
    let log = '';
    try {
      log = readFileSync(join(vmDir, 'console.log'), 'latin1');
    } catch {
      // not yet
    }
    if (log.includes(text)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('dev console and dev logs -f', () => {
  it('with no VM running: dev console and dev shell fail with exit 3 naming dev up', async () => {
    for (const sub of ['console', 'shell']) {
      const r = dev([sub], '');
      const { code } = await r.done;
      assert.equal(code, 3, r.stderr());
      assert.match(
        r.stderr(),
        /^Error: The dev VM is not running \(stopped\): nothing to attach to$/m,
      );
      assert.match(
        r.stderr(),
        new RegExp(`Start it with 'mvmctl dev up', then run 'mvmctl dev ${sub}' again\\.`),
      );
      assert.equal(r.stdout(), '');
    }
  });

  it('a stale state (its pid now another process): refused with exit 3, nothing attached', async () => {
    // This test process's own pid with a start time that is not its own: a reused pid.
    rmSync(vmDir, { recursive: true, force: true });
    const { mkdirSync } = await import('node:fs');
    mkdirSync(vmDir, { recursive: true, mode: 0o700 });
    writeFileSync(
      join(vmDir, 'state.json'),
      JSON.stringify({ schema: 1, pid: process.pid, pidStartTime: '1' }),
    );
    try {
      const r = dev(['console'], '');
      const { code } = await r.done;
      assert.equal(code, 3, r.stderr());
      assert.match(
        r.stderr(),
        new RegExp(
          `Error: The dev VM is not running \\(its state is stale: pid ${process.pid} now belongs to another process`,
        ),
      );
    } finally {
      rmSync(join(vmDir, 'state.json'), { force: true });
    }
  });

  it('with no VM running, dev logs -f prints the log and exits 0 saying there is nothing to follow', async () => {
    writeFileSync(join(vmDir, 'console.log'), 'old line\n', { mode: 0o600 });
    const r = dev(['logs', '-f']);
    const { code } = await r.done;
    assert.equal(code, 0, r.stderr());
    assert.equal(r.stdout(), 'old line\n');
    assert.match(r.stderr(), /The dev VM is not running: nothing to follow/);
  });

  it(
    'a piped command runs in the guest; dev logs -f sees it, escaped, stops on SIGINT and when the VM goes down',
    { timeout: 900_000 },
    async () => {
      const up = dev([
        'up',
        '--accel',
        'tcg',
        '--ready-line',
        READY_LINE,
        '--timeout',
        UP_TIMEOUT_S,
      ]);
      const upEnd = await up.done;
      assert.equal(upEnd.code, 0, up.stderr());
      // The guest's shell is up once its prompt is on the console.
      await logContains('mvm-dev# ');

      // Follower A: has read the log once the ready line (an old line) is on its stdout.
      const a = dev(['logs', '-f']);
      await a.waitFor(/^mvm-dev: ready$/m);
      assert.doesNotMatch(a.stdout(), /hi-42/);

      const con = dev(
        ['console', '--idle', IDLE_S],
        "echo hi-$((6*7))\nprintf 'esc-\\033[7mred\\n'\n",
      );
      const conEnd = await con.done;
      assert.equal(conEnd.code, 0, con.stderr());
      assert.match(con.stdout(), /^hi-42\r?$/m);
      // Passed through: the guest's escape sequence reaches the pipe as it was printed.
      assert.ok(con.stdout().includes('esc-\x1b[7mred'), con.stdout());
      assert.equal(con.stderr(), '', 'no notes on stderr without a terminal');

      // The follower shows the new lines, escaped: no raw ESC reaches its output.
      await a.waitFor(/^hi-42$/m);
      await a.waitFor(/^esc-\\x1b\[7mred$/m);
      assert.ok(!a.stdout().includes('\x1b'));

      // Follower B, stopped with SIGINT: exit 0.
      const b = dev(['logs', '-f', '-n', '5']);
      await b.waitFor(/^esc-\\x1b\[7mred$/m);
      b.child.kill('SIGINT');
      const bEnd = await b.done;
      assert.deepEqual(bEnd, { code: 0, signal: null }, b.stderr());

      // A terminal session (a pty from script(1)): Ctrl-] detaches, and the terminal is restored.
      const tty = track(
        spawn(
          'script',
          ['-q', '-e', '-c', `'${process.execPath}' '${CLI}' dev console; stty -a`, '/dev/null'],
          {
            env: { ...process.env, ...host.env, SHELL: '/bin/sh' },
            stdio: ['pipe', 'pipe', 'pipe'],
          },
        ),
      );
      await tty.waitFor(/Escape character is '\^\]' \(Ctrl-\]\)/);
      tty.child.stdin!.write('echo tty-$((6*7))\r');
      await tty.waitFor(/^tty-42\r?$/m);
      tty.child.stdin!.write('\x1d');
      await tty.waitFor(/Detached from the dev VM console; the VM keeps running\./);
      await tty.waitFor(/\bicanon\b/);
      tty.child.stdin!.end();
      const ttyEnd = await tty.done;
      assert.equal(ttyEnd.code, 0, tty.stdout());
      const after = tty.stdout().slice(tty.stdout().indexOf('Detached'));
      // stty -a after the session: canonical mode and echo are back on (raw mode is off).
      assert.match(after, /(^|\s)icanon(\s|$)/m);
      assert.match(after, /(^|\s)echo(\s|$)/m);
      assert.doesNotMatch(after, /-icanon/);

      // dev down: follower A sees the VM stop and exits 0.
      const down = dev(['down']);
      assert.equal((await down.done).code, 0, down.stderr());
      const aEnd = await a.done;
      assert.deepEqual(aEnd, { code: 0, signal: null }, a.stderr());
      assert.match(a.stderr(), /The dev VM stopped: nothing more to follow\./);

      // The console of a stopped VM: the clear error.
      const late = dev(['console'], '');
      assert.equal((await late.done).code, 3, late.stderr());
    },
  );
});
