/**
 * `mvmctl dev cp` end to end: the real test guest booted under QEMU (software
 * emulation) through the built CLI, its files moved by Debian's own
 * qemu-guest-agent and checked by the guest's own sha256sum and tar
 * (BusyBox's). Files both ways byte-exact with their modes, 20 MB, stdin and
 * stdout, -r trees both ways (long names, odd names, links, an empty
 * directory, a merge into an existing tree), and an interrupted copy. A
 * compromised guest (hostile archives, wrong hashes) is played in
 * dev-cp-hostile.test.ts: BusyBox's shell runs its own tar and sha256sum
 * whatever PATH says, so this guest cannot be made to lie.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLI } from './support/cli.js';
import type { TestHost } from './support/host.js';
import { hostWithTestGuest, READY_LINE } from './support/vm.js';

// Bounds on waiting on a loaded 2-core host under software emulation, not timing assertions.
const CLI_TIMEOUT_MS = 300_000;

let root: string;
let work: string;
let host: TestHost;

interface Run {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

function mvm(
  args: string[],
  o: { stdin?: Buffer | string; onStarted?: (child: ReturnType<typeof spawn>) => void } = {},
): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, ...host.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), CLI_TIMEOUT_MS);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr });
    });
    o.onStarted?.(child);
    child.stdin.end(o.stdin ?? '');
  });
}
const cp = (args: string[], o: Parameters<typeof mvm>[1] = {}) => mvm(['dev', 'cp', ...args], o);
/** A guest shell command's stdout (it must exit 0). */
async function guest(script: string): Promise<string> {
  const r = await mvm(['dev', 'exec', '--', 'sh', '-c', script]);
  assert.equal(r.code, 0, `${script}: ${r.stderr}`);
  return r.stdout.toString();
}
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
/** Entries a failed copy might leave behind in `dir`: its hidden partials. */
const partials = (dir: string): string[] =>
  readdirSync(dir).filter((n) => n.includes('.mvmctl-part-'));

/** What `dir` holds, as "type mode name [sha]" lines, for comparing trees. */
function treeOf(dir: string, rel = ''): string[] {
  const lines: string[] = [];
  for (const name of readdirSync(join(dir, rel)).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    const s = lstatSync(join(dir, r));
    const mode = (s.mode & 0o777).toString(8);
    if (s.isDirectory()) {
      lines.push(`d ${mode} ${r}`);
      lines.push(...treeOf(dir, r));
    } else if (s.isFile()) lines.push(`f ${mode} ${r} ${sha(readFileSync(join(dir, r)))}`);
    else lines.push(`l ${r}`);
  }
  return lines;
}

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'mvm-cp-'));
  work = join(root, 'w');
  mkdirSync(work);
  ({ host } = await hostWithTestGuest(root));
});

after(async () => {
  if (host) await mvm(['dev', 'down', '--timeout', '5']);
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('dev cp refuses what it cannot mean, before touching the VM', () => {
  it('names the mistake with exit 2; no VM is exit 3 naming dev up', async () => {
    const cases: [string[], RegExp][] = [
      [['a', 'b'], /^Error: neither side of dev cp is in the guest$/m],
      [['dev:/a', 'dev:/b'], /^Error: both sides of dev cp are in the guest$/m],
      [['a', 'dev:root/x'], /^Error: "dev:root\/x" is not an absolute path in the guest$/m],
      [['-r', '-', 'dev:/root/x'], /^Error: -r does not read or write -/m],
      [['-', 'dev:/root/'], /^Error: stdin has no file name to put in "\/root\/"$/m],
      [['only-one'], /^Error: dev cp takes a source and a destination \(1 given\)$/m],
    ];
    for (const [args, message] of cases) {
      const r = await cp(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
    writeFileSync(join(work, 'f'), 'x');
    const none = await cp([join(work, 'f'), 'dev:/tmp/f']);
    assert.equal(none.code, 3, none.stderr);
    assert.match(none.stderr, /^Error: The dev VM is not running \(stopped\)$/m);
    assert.match(none.stderr, /mvmctl dev up/);
  });
});

describe('dev cp against the test guest', () => {
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

  it('a 20 MB file both ways, byte-exact, its mode kept, setuid dropped', async () => {
    const data = randomBytes(20_000_000);
    const src = join(work, 'big.bin');
    writeFileSync(src, data);
    chmodSync(src, 0o4750);
    const to = await cp([src, 'dev:/tmp/', '--json']);
    assert.equal(to.code, 0, to.stderr);
    const report = JSON.parse(to.stdout.toString()) as Record<string, unknown>;
    assert.equal(report.destination, 'dev:/tmp/big.bin');
    assert.equal(report.bytes, 20_000_000);
    assert.equal(report.sha256, sha(data));
    assert.equal(await guest('sha256sum /tmp/big.bin | cut -d" " -f1'), `${sha(data)}\n`);
    assert.equal(await guest('stat -c %a /tmp/big.bin'), '750\n');
    assert.equal(await guest('ls -a /tmp | grep -c mvmctl-part || true'), '0\n');

    await guest('chmod 4711 /tmp/big.bin');
    const back = join(work, 'back');
    mkdirSync(back);
    const from = await cp(['dev:/tmp/big.bin', back]);
    assert.equal(from.code, 0, from.stderr);
    assert.match(
      from.stdout.toString(),
      /^Copied 19 MiB to .*big\.bin \(sha256 [0-9a-f]{16}…, the same on both sides\)\.$/m,
    );
    const got = join(back, 'big.bin');
    assert.ok(readFileSync(got).equals(data), 'the bytes that came back are the bytes sent');
    assert.equal(
      statSync(got).mode & 0o7777,
      0o711,
      'the permission bits only: no setuid on the host',
    );
    assert.deepEqual(partials(back), []);
  });

  it('- is stdin to the guest and stdout from it; the report goes to stderr then', async () => {
    const data = Buffer.concat([Buffer.from('line one\n'), randomBytes(300_000)]);
    const up = await cp(['-', 'dev:/tmp/from-stdin'], { stdin: data });
    assert.equal(up.code, 0, up.stderr);
    assert.equal(await guest('stat -c "%a %s" /tmp/from-stdin'), `644 ${data.length}\n`);
    const down = await cp(['dev:/tmp/from-stdin', '-']);
    assert.equal(down.code, 0, down.stderr);
    assert.ok(down.stdout.equals(data), 'stdout carries the file, and nothing else');
    assert.match(down.stderr, /^Copied .* to - \(sha256/m);
  });

  it('-r carries a tree both ways with cp -r semantics; the guest’s links are skipped and named', async () => {
    const tree = join(work, 'project');
    const long = `${'n'.repeat(120)}.txt`;
    mkdirSync(join(tree, 'src', 'deep', 'er'), { recursive: true });
    mkdirSync(join(tree, 'empty'));
    writeFileSync(join(tree, 'README'), 'readme\n');
    writeFileSync(join(tree, 'src', 'main.c'), randomBytes(70_000));
    writeFileSync(join(tree, 'src', 'deep', 'er', long), 'a long name\n');
    writeFileSync(join(tree, 'it\'s a "name" with spaces'), 'odd\n');
    writeFileSync(join(tree, 'run.sh'), '#!/bin/sh\necho hi\n');
    chmodSync(join(tree, 'run.sh'), 0o755);
    chmodSync(join(tree, 'src', 'deep'), 0o750);
    symlinkSync('README', join(tree, 'link-to-readme'));

    const to = await cp(['-r', tree, 'dev:/tmp/']);
    assert.equal(to.code, 0, to.stderr);
    assert.match(to.stdout.toString(), /^Copied 5 files in 5 directories to dev:\/tmp\/project /m);
    const listing = await guest(
      'cd /tmp/project && find . | sort && readlink link-to-readme && stat -c %a run.sh src/deep',
    );
    assert.match(listing, new RegExp(`\\./src/deep/er/${long}\n`));
    assert.match(listing, /\.\/it's a "name" with spaces\n/);
    assert.match(listing, /\.\/empty\n/);
    assert.match(listing, /\nREADME\n755\n750\n$/, 'the link arrives as a link; modes kept');

    // Back from the guest into a new name: the same tree, except the link.
    const back = join(work, 'project-back');
    const from = await cp(['-r', 'dev:/tmp/project', back, '--json']);
    assert.equal(from.code, 0, from.stderr);
    const report = JSON.parse(from.stdout.toString()) as { skipped: unknown; files: number };
    assert.deepEqual(report.skipped, [{ name: 'link-to-readme', type: 'symbolic link' }]);
    assert.equal(report.files, 5);
    assert.deepEqual(
      treeOf(back),
      treeOf(tree).filter((l) => !l.startsWith('l ')),
    );
    const human = await cp(['-r', 'dev:/tmp/project', join(work, 'project-human')]);
    assert.match(human.stderr, /^Skipped "link-to-readme": a symbolic link is not copied\.$/m);

    // Into an existing directory: it lands under the source's name, and a second copy merges.
    const into = join(work, 'into');
    mkdirSync(into);
    assert.equal((await cp(['-r', 'dev:/tmp/project', into])).code, 0);
    writeFileSync(join(into, 'project', 'README'), 'changed on the host\n');
    writeFileSync(join(into, 'project', 'host-only'), 'kept\n');
    const again = await cp(['-r', 'dev:/tmp/project', into]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(readFileSync(join(into, 'project', 'README'), 'utf8'), 'readme\n');
    assert.equal(readFileSync(join(into, 'project', 'host-only'), 'utf8'), 'kept\n');
    assert.deepEqual(partials(into), []);
    assert.deepEqual(partials(work), []);
  });

  it('a directory without -r, a missing source, a file onto a directory: exit 2 naming the fix', async () => {
    const dir = await cp(['dev:/tmp', work]);
    assert.equal(dir.code, 2);
    assert.match(dir.stderr, /^Error: dev:\/tmp is a directory in the guest$/m);
    assert.match(dir.stderr, /-r/);
    const missing = await cp(['dev:/tmp/no-such', work]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /^Error: dev:\/tmp\/no-such does not exist in the guest$/m);
    const hostMissing = await cp([join(work, 'no-such'), 'dev:/tmp/x']);
    assert.equal(hostMissing.code, 3);
    assert.match(hostMissing.stderr, /^Error: Cannot read ".*no-such": ENOENT$/m);
  });

  it('an interrupted copy exits 130 and leaves no file under the destination name', async () => {
    await guest('head -c 60000000 /dev/urandom > /tmp/huge');
    const dst = join(work, 'huge');
    const r = await cp(['dev:/tmp/huge', dst], {
      onStarted: (child) => {
        // SIGINT once the partial exists: the copy is under way, and far from done.
        const poll = setInterval(() => {
          if (partials(work).length > 0) {
            clearInterval(poll);
            child.kill('SIGINT');
          }
        }, 20);
        child.on('close', () => clearInterval(poll));
      },
    });
    assert.equal(r.code, 130, r.stderr);
    assert.match(r.stderr, /^Error: dev cp was interrupted/m);
    assert.equal(existsSync(dst), false);
    assert.deepEqual(partials(work), []);
  });
});
