/**
 * Ctrl-C (SIGINT) and SIGTERM in the middle of `mvmctl dev import-image`,
 * from the CLI as a subprocess with its copies held at a gate (test/support
 * host.ts gatedCp): the CLI exits 130, its staging object is gone from the
 * store, its `cp` children are gone too, the interruption is on the audit
 * record (failed, code interrupted), and status / dev images / dev prune
 * --dry-run find no leftover. Both ways a signal arrives: sent to mvmctl
 * alone (kill, a supervisor's SIGTERM), and to the whole process group (a
 * terminal's Ctrl-C, which kills the cp children by itself).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLI } from './support/cli.js';
import {
  gatedCp,
  HOST_ARCH,
  importArgs,
  testHost,
  VERSION,
  type TestHost,
} from './support/host.js';
import { TestPki } from './support/pki.js';
import { writeReleaseSet, type ReleaseFiles } from './support/release.js';

let root: string;
let trustedRoot: string;
let set: ReleaseFiles;
let n = 0;

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'mvm-interrupt-'));
  const pki = await TestPki.create();
  trustedRoot = pki.writeTrustedRoot(root);
  set = await writeReleaseSet(pki, join(root, 'set'), { version: VERSION, arch: HOST_ARCH });
});
after(() => rmSync(root, { recursive: true, force: true }));

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The import as a subprocess we can signal; `group`: in its own process group, as a shell job is. */
function startImport(h: TestHost, env: Record<string, string>, group: boolean) {
  const child = spawn(process.execPath, [CLI, ...importArgs(set)], {
    env: { ...process.env, ...h.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: group,
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<Exit>((resolve) =>
    child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr })),
  );
  return { child, exited };
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** The pids of the gated cp stand-ins that started (each writes started.<pid>). */
const cpPids = (h: TestHost): number[] =>
  readdirSync(join(h.dir, 'gated-bin'))
    .filter((f) => f.startsWith('started.'))
    .map((f) => Number(f.slice('started.'.length)));

async function allGone(pids: number[], ms = 5000): Promise<number[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const left = pids.filter(alive);
    if (left.length === 0 || Date.now() > deadline) return left;
    await new Promise((r) => setTimeout(r, 20));
  }
}

const cases = [
  { signal: 'SIGINT', group: false, how: 'SIGINT sent to mvmctl' },
  { signal: 'SIGTERM', group: false, how: 'SIGTERM sent to mvmctl' },
  { signal: 'SIGINT', group: true, how: 'Ctrl-C at a terminal (SIGINT to the process group)' },
] as const;

describe('dev import-image interrupted mid-copy', () => {
  for (const c of cases) {
    it(
      `${c.how}: exit 130, no staging object or cp left, audited, no leftover reported`,
      { timeout: 60_000 },
      async () => {
        const h = testHost(join(root, `h${n++}`), trustedRoot);
        const gate = gatedCp(h.dir);
        const objects = join(h.prebuilt, '.objects');
        const { child, exited } = startImport(h, gate.env, c.group);
        try {
          await gate.started(2, exited); // kernel and rootfs copies running, held at the gate
          assert.equal(readdirSync(objects).length, 1, 'the staging object exists mid-copy');
          const copies = cpPids(h);
          assert.equal(copies.length, 2);
          if (c.group) process.kill(-child.pid!, c.signal);
          else child.kill(c.signal);
          const r = await exited;
          assert.deepEqual(
            { code: r.code, signal: r.signal },
            { code: 130, signal: null },
            `stderr: ${r.stderr}`,
          );
          assert.match(
            r.stderr,
            new RegExp(
              // A terminal's Ctrl-C may stop cp before mvmctl's own handler runs: then cp says it.
              `^Error: The import was interrupted${c.group ? '( \\(SIGINT\\))?' : ` \\(${c.signal}\\)`}: its partial copy was removed from the store; nothing was installed$`,
              'm',
            ),
          );
          assert.deepEqual(readdirSync(objects), [], 'no staging object is left in the store');
          assert.deepEqual(
            readdirSync(h.prebuilt).filter((f) => f !== '.objects'),
            [],
            'no version link, no temporary link',
          );
          assert.deepEqual(await allGone(copies), [], 'the cp children were killed with it');

          const rec = h.audit().at(-1)!;
          assert.equal(rec['event'], 'dev.import-image');
          assert.equal(rec['outcome'], 'failed');
          assert.equal(rec['code'], 'interrupted');
          assert.equal(rec['version'], VERSION);

          const status = await h.run(['status', '--json']);
          assert.equal(status.code, 0, status.stderr);
          assert.deepEqual(JSON.parse(status.stdout).images, []);
          const images = await h.run(['dev', 'images']);
          assert.equal(images.code, 0, images.stderr);
          assert.doesNotMatch(images.stdout, /Leftovers|in progress/);
          assert.match(images.stdout, /No dev images are installed/);
          const dry = await h.run(['dev', 'prune', '--dry-run', '--json']);
          assert.equal(dry.code, 0, dry.stderr);
          assert.deepEqual(JSON.parse(dry.stdout).removed, []);
        } finally {
          gate.release();
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        }
        // The store is as good as new: the next import installs.
        const again = await h.importSet(set);
        assert.equal(again.code, 0, again.stderr);
      },
    );
  }
});
