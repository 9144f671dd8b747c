/**
 * `mvmctl dev images`, `dev rm` and `dev prune` from the CLI as a subprocess,
 * against a real store: images imported through the real pipeline (signed by
 * the test PKI), older versions installed as an older mvmctl would have left
 * them (this version's object, relabelled: an import only ever installs this
 * mvmctl's version), a revocation list signed by the test PKI in the cache,
 * and a "running dev VM" that is a real live process whose command line
 * names the VM's pid file, as QEMU's does (dev status treats it as running).
 * Also: an import that replaces another build of its version says so.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { HOST_ARCH, testHost, VERSION, type TestHost } from './support/host.js';
import { releaseIdentity, TestPki } from './support/pki.js';
import {
  REPO,
  writeReleaseSet,
  writeRevocationList,
  type ReleaseFiles,
} from './support/release.js';
import { writeVmState } from './support/vm.js';
import { suiteWorld } from './support/world.js';

let root: string;
let pki: TestPki;
let trustedRoot: string;
let good: ReleaseFiles;
let n = 0;
const children: ChildProcess[] = [];

before(async () => ({ root, pki, trustedRoot, good } = await suiteWorld('mvm-images-')));
after(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
});

/** Beyond any pid_max: the process that made an object is certainly gone. */
const DEAD_PID = 4_194_399;

const host = () => testHost(join(root, `h${n++}`), trustedRoot);
const objectsDir = (h: TestHost) => join(h.prebuilt, '.objects');
const vmDir = (h: TestHost) => join(h.dir, 'data', 'vms', 'dev');

async function installed(h: TestHost, extra: Record<string, string> = {}): Promise<void> {
  const r = await h.importSet(good, [], extra);
  assert.equal(r.code, 0, r.stderr);
}

/**
 * `v{version}` as an older mvmctl left it: a copy of this version's object
 * under an object id of a process that is gone, its receipt relabelled (and
 * edited), linked as the store links.
 */
function installAs(h: TestHost, version: string, edit?: (r: Record<string, unknown>) => void) {
  const from = join(h.prebuilt, readlinkSync(join(h.prebuilt, `v${VERSION}`)));
  const id = `${DEAD_PID}-${(n++).toString(16).padStart(16, '0')}`;
  const to = join(objectsDir(h), id);
  mkdirSync(to, { mode: 0o700 });
  for (const f of readdirSync(from)) {
    copyFileSync(join(from, f), join(to, f));
    chmodSync(join(to, f), 0o600);
  }
  const receipt = JSON.parse(readFileSync(join(to, 'receipt.json'), 'utf8'));
  receipt.version = version;
  edit?.(receipt);
  writeFileSync(join(to, 'receipt.json'), JSON.stringify(receipt, null, 2));
  symlinkSync(`.objects/${id}`, join(h.prebuilt, `v${version}`));
  return { id, dir: to };
}

/** Field 22 of /proc/PID/stat, as src/vm/state.ts reads it. */
function startTime(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!;
}

/**
 * A running dev VM that booted `version`: a live process whose command line
 * names the state directory's pid file (as QEMU's -pidfile does), and the
 * state.json dev up would have written for it.
 */
function runningVm(h: TestHost, version: string): ChildProcess {
  const pidFile = join(vmDir(h), 'qemu.pid');
  const child = spawn(
    process.execPath,
    ['-e', 'setInterval(() => {}, 1e9)', '--', '-pidfile', pidFile],
    {
      stdio: 'ignore',
    },
  );
  children.push(child);
  const pid = child.pid!;
  writeVmState(vmDir(h), pid, startTime(pid));
  const statePath = join(vmDir(h), 'state.json');
  const state = JSON.parse(readFileSync(statePath, 'utf8'));
  state.version = version;
  writeFileSync(statePath, JSON.stringify(state));
  return child;
}

async function vmRunning(h: TestHost): Promise<void> {
  const s = await h.run(['dev', 'status', '--json']);
  assert.equal(JSON.parse(s.stdout)['state'], 'running', 'dev status sees the fake VM as running');
}

type Image = Record<string, unknown> & { version: string };

async function images(h: TestHost): Promise<Image[]> {
  const r = await h.run(['dev', 'images', '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}
const byVersion = (list: Image[], v: string): Image => {
  const i = list.find((x) => x.version === v);
  assert.ok(i, `v${v} is listed`);
  return i;
};

/** Every name under the prebuilt directory (recursively), with link targets. */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = lstatSync(p);
      out.push(`${rel}${name}${st.isSymbolicLink() ? ` -> ${readlinkSync(p)}` : ` ${st.size}`}`);
      if (st.isDirectory()) walk(p, `${rel}${name}/`);
    }
  };
  walk(dir, '');
  return out;
}

const lastRecord = (h: TestHost, event: string) =>
  h
    .audit()
    .filter((r) => r['event'] === event)
    .at(-1);

/**
 * Holds the dev VM's lock from another process, as a `dev up` picking and booting an image
 * does, until `release()`: the lock mvmctl itself takes (src/io/lock.ts), on the real file.
 * Released by ending the holder: the kernel drops its lock as it exits, as for any holder.
 */
async function holdVmLock(h: TestHost): Promise<{ release: () => Promise<void> }> {
  mkdirSync(vmDir(h), { recursive: true, mode: 0o700 });
  const lock = new URL('../src/io/lock.ts', import.meta.url).href;
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      '--input-type=module',
      '-e',
      `const { withLock } = await import(${JSON.stringify(lock)});
       await withLock(${JSON.stringify(join(vmDir(h), 'lock'))}, 'the dev VM', () =>
         new Promise(() => { process.stdout.write('held\\n'); setInterval(() => {}, 1e9); }));`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  children.push(child);
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (c) => reject(new Error(`the lock holder exited (${c})`)));
    child.stdout!.once('data', () => resolve());
  });
  return {
    release: async () => {
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await gone;
    },
  };
}

/** Whether `p` has settled within `ms`. */
const settledWithin = (p: Promise<unknown>, ms: number): Promise<boolean> =>
  Promise.race([p.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);

describe('dev images', () => {
  it('lists every version with its state (verified, UNVERIFIED, recalled by the list or by memory, expired), size, times, signer, dev up’s and the running VM’s', async () => {
    const h = host();
    // UNVERIFIED: installed with an escape hatch, kept as 0.11.0; then this version verified over it.
    await installed(h, { MVM_SKIP_HASH_VERIFY: '1' });
    installAs(h, '0.11.0');
    await installed(h);
    installAs(h, '0.13.0');
    installAs(h, '0.12.0', (r) => (r['notAfter'] = '2020-01-01T00:00:00.000Z'));
    installAs(h, '0.10.0');
    await writeRevocationList(pki, h.revocations, [
      { version: '0.13.0', arch: HOST_ARCH, reason: 'CVE-2026-1313: listed' },
    ]);
    // Remembered from a list verified here before, no longer in the cached one.
    mkdirSync(join(h.dir, 'data', 'revocations'), { recursive: true, mode: 0o700 });
    writeFileSync(
      join(h.dir, 'data', 'revocations', 'recalls-seen.jsonl'),
      `${JSON.stringify({ recall: { version: '0.10.0', variant: 'dev', arch: HOST_ARCH, reason: 'CVE-2026-1010: remembered', revokedAt: '2026-11-01T00:00:00Z' } })}\n`,
      { mode: 0o600 },
    );
    const vm = runningVm(h, '0.12.0');
    await vmRunning(h);

    const list = await images(h);
    assert.deepEqual(
      list.map((i) => i.version),
      ['0.10.0', '0.11.0', '0.12.0', '0.13.0', VERSION],
    );
    assert.deepEqual(Object.fromEntries(list.map((i) => [i.version, i['states']])), {
      '0.10.0': ['verified', 'recalled'],
      '0.11.0': ['UNVERIFIED'],
      '0.12.0': ['verified', 'expired'],
      '0.13.0': ['verified', 'recalled'],
      [VERSION]: ['verified'],
    });
    assert.equal(byVersion(list, '0.13.0')['recalled'], 'CVE-2026-1313: listed');
    assert.equal(byVersion(list, '0.10.0')['recalled'], 'CVE-2026-1010: remembered');
    assert.equal(byVersion(list, VERSION)['recalled'], false);
    assert.deepEqual(byVersion(list, '0.11.0')['bypassed'], ['hash']);
    assert.equal(byVersion(list, '0.12.0')['expired'], true);
    assert.equal(byVersion(list, '0.12.0')['expiredAtInstall'], false);
    assert.equal(byVersion(list, VERSION)['expired'], false);
    // dev up's and the running VM's.
    assert.deepEqual(
      list.filter((i) => i['current']).map((i) => i.version),
      [VERSION],
    );
    assert.deepEqual(
      list.filter((i) => i['running']).map((i) => i.version),
      ['0.12.0'],
    );
    const cur = byVersion(list, VERSION);
    assert.equal(cur['signer'], releaseIdentity(REPO, `v${VERSION}`));
    assert.equal(cur['builtAt'], new Date(String(good.manifestJson['built_at'])).toISOString());
    assert.ok(Date.now() - Date.parse(String(cur['installedAt'])) < 600_000, 'installed just now');
    assert.equal(cur['installedBy'], VERSION);
    assert.equal(cur['path'], join(h.prebuilt, `v${VERSION}`));
    assert.ok(
      Number(cur['bytes']) >= good.rootfsBytes.length + good.kernelBytes.length,
      `size on disk ${String(cur['bytes'])} counts the kernel and rootfs`,
    );

    const human = await h.run(['dev', 'images']);
    assert.equal(human.code, 0, human.stderr);
    const lines = human.stdout.split('\n');
    const header = lines[0]!;
    assert.match(header, /^VERSION +STATE +SIZE +BUILT +INSTALLED +USED BY +SIGNED BY$/);
    const row = (v: string) => lines.find((l) => l.startsWith(`v${v} `))!;
    // Aligned: every row's SIZE column starts where the header's does.
    for (const v of ['0.10.0', '0.11.0', '0.12.0', '0.13.0', VERSION]) {
      assert.ok(row(v), `a row for v${v}`);
      assert.match(
        row(v).slice(header.indexOf('SIZE')),
        /^[\d.]+ MiB +\d{4}-\d\d-\d\d \d\d:\d\dZ /,
      );
      assert.match(row(v).slice(header.indexOf('SIGNED BY')), /^https:\/\//);
    }
    assert.match(row('0.13.0'), /verified, RECALLED/);
    assert.match(row('0.11.0'), /UNVERIFIED/);
    assert.match(row('0.12.0'), /verified, EXPIRED .*running VM/);
    assert.match(row(VERSION), / dev up +https:\/\/github\.com\/tinylabscom\/mvm\//);
    assert.match(human.stdout, /v0\.13\.0 is RECALLED: CVE-2026-1313: listed/);
    assert.match(
      human.stdout,
      new RegExp(`dev up boots v${VERSION.replace(/\./g, '\\.')} \\(this mvmctl's version\\)\\.`),
    );
    assert.match(
      human.stdout,
      new RegExp(`The running dev VM \\(pid ${vm.pid}\\) booted v0\\.12\\.0\\.`),
    );
    assert.doesNotMatch(human.stdout, /Leftovers/);
    vm.kill('SIGKILL');
  });

  it('an empty store says so and how to install; nothing is created', async () => {
    const h = host();
    const r = await h.run(['dev', 'images']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^No dev images are installed \(in .*prebuilt\)\./);
    assert.match(r.stdout, /mvmctl dev import-image --dir DIR .* or mvmctl dev pull \(online\)/);
    assert.match(r.stdout, /which is not installed/);
    assert.deepEqual(await images(h), []);
    assert.equal(existsSync(join(h.dir, 'data')), false, 'the data directory was not created');
  });

  it('counts the leftover of an interrupted import, which prune then removes', async () => {
    const h = host();
    await installed(h);
    const leftover = join(objectsDir(h), `${DEAD_PID}-00000000000000aa`);
    mkdirSync(leftover, { mode: 0o700 });
    writeFileSync(join(leftover, 'rootfs.ext4'), Buffer.alloc(3 * 1024 * 1024, 1));
    const r = await h.run(['dev', 'images']);
    assert.match(
      r.stdout,
      /Leftovers of interrupted imports: 1 \(3\.0 MiB\); mvmctl dev prune removes them\./,
    );
    const pruned = await h.run(['dev', 'prune']);
    assert.equal(pruned.code, 0, pruned.stderr);
    assert.equal(existsSync(leftover), false);
    assert.doesNotMatch((await h.run(['dev', 'images'])).stdout, /Leftovers/);
  });
});

describe('dev rm', () => {
  it('removes an installed version: gone from the store and from dev images, the object deleted, audited', async () => {
    const h = host();
    await installed(h);
    const old = installAs(h, '0.13.0');
    const r = await h.run(['dev', 'rm', '0.13.0']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Removed dev image v0\.13\.0 \([\d.]+ MiB freed\)\.$/m);
    assert.equal(existsSync(join(h.prebuilt, 'v0.13.0')), false);
    assert.equal(existsSync(old.dir), false, 'its object is deleted');
    assert.deepEqual(
      (await images(h)).map((i) => i.version),
      [VERSION],
    );
    // Nothing of the removal is left in the store: one object (this version's), its link, the lock.
    assert.deepEqual(readdirSync(objectsDir(h)).length, 1);
    assert.deepEqual(
      readdirSync(h.prebuilt).filter((f) => f.startsWith('.link-')),
      [],
    );
    const rec = lastRecord(h, 'dev.rm')!;
    assert.equal(rec['outcome'], 'ok');
    assert.equal(rec['version'], '0.13.0');
    assert.match(String(rec['message']), /^removed v0\.13\.0 \(\d+ bytes\)$/);
    assert.match(String(rec['manifestSha256']), /^[0-9a-f]{64}$/);
  });

  it('--json, and v-prefixed versions as the store names them; removing this mvmctl’s version says dev up has nothing to boot', async () => {
    const h = host();
    await installed(h);
    const r = await h.run(['dev', 'rm', `v${VERSION}`, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.removed, true);
    assert.equal(out.version, VERSION);
    assert.equal(out.current, true);
    assert.ok(out.bytes >= good.rootfsBytes.length);
    assert.deepEqual(readdirSync(objectsDir(h)), []);
    const human = host();
    await installed(human);
    const t = await human.run(['dev', 'rm', VERSION]);
    assert.match(t.stdout, /dev up has nothing to boot until v.* is installed again/);
  });

  it('a version that is not installed: exit 3 naming what is installed; nothing created or recorded', async () => {
    const empty = host();
    const r = await empty.run(['dev', 'rm', '0.9.0']);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /^Error: v0\.9\.0 is not installed$/m);
    assert.match(r.stderr, /installed: none/);
    assert.equal(existsSync(join(empty.dir, 'data')), false);

    const h = host();
    await installed(h);
    const before = h.audit().length;
    const j = await h.run(['dev', 'rm', '0.9.0', '--json']);
    assert.equal(j.code, 3);
    const err = JSON.parse(j.stdout).error;
    assert.equal(err.code, 'input');
    assert.match(err.cause, new RegExp(`installed: v${VERSION.replace(/\./g, '\\.')}`));
    assert.equal(h.audit().length, before, 'nothing recorded');
  });

  it('the image the running dev VM booted is refused (exit 17), naming mvmctl dev down; audited; it stays', async () => {
    const h = host();
    await installed(h);
    installAs(h, '0.13.0');
    const vm = runningVm(h, '0.13.0');
    await vmRunning(h);
    const r = await h.run(['dev', 'rm', '0.13.0']);
    assert.equal(r.code, 17, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `^Error: v0\\.13\\.0 is the image the running dev VM booted \\(QEMU pid ${vm.pid}\\)`,
        'm',
      ),
    );
    assert.match(
      r.stderr,
      /fix: +Stop the VM with 'mvmctl dev down', then run 'mvmctl dev rm 0\.13\.0' again\./,
    );
    assert.ok(existsSync(join(h.prebuilt, 'v0.13.0')));
    assert.equal(byVersion(await images(h), '0.13.0')['states']!.toString(), 'verified');
    const rec = lastRecord(h, 'dev.rm')!;
    assert.equal(rec['outcome'], 'failed');
    assert.equal(rec['code'], 'store');
    assert.equal(rec['version'], '0.13.0');
    // Another version can go while the VM runs; once it is down, its own can too.
    assert.equal((await h.run(['dev', 'rm', VERSION])).code, 0);
    vm.kill('SIGKILL');
    await new Promise((resolve) => vm.once('exit', resolve));
    const again = await h.run(['dev', 'rm', '0.13.0']);
    assert.equal(again.code, 0, again.stderr);
  });

  it("waits for the dev VM's lock (a dev up booting), so it never removes what is being booted", async () => {
    const h = host();
    await installed(h);
    installAs(h, '0.13.0');
    const held = await holdVmLock(h);
    const rm = h.run(['dev', 'rm', '0.13.0']);
    assert.equal(await settledWithin(rm, 2000), false, 'dev rm went ahead under a dev up');
    assert.equal(existsSync(join(h.prebuilt, 'v0.13.0')), true);
    await held.release();
    const r = await rm;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(existsSync(join(h.prebuilt, 'v0.13.0')), false);
  });

  it('refuses path-like and malformed versions (exit 2) and never follows a link out of the store', async () => {
    const h = host();
    await installed(h);
    const outside = join(h.dir, 'outside');
    mkdirSync(outside);
    writeFileSync(join(outside, 'keep.txt'), 'the operator keeps this');
    const before = snapshot(h.prebuilt);
    for (const bad of ['../x', '../../data', `v${VERSION}/..`, '0.14', '.objects', '', '-1.0.0']) {
      const r = await h.run(['dev', 'rm', '--', bad]);
      assert.equal(r.code, 2, `${bad}: ${r.stderr}`);
      assert.match(r.stderr, /is not a version such as 0\.14\.0/);
    }
    const none = await h.run(['dev', 'rm']);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /dev rm needs the VERSION to remove/);
    assert.deepEqual(snapshot(h.prebuilt), before, 'nothing in the store changed');
    // A version link someone pointed outside the store is refused and left as it is.
    symlinkSync(outside, join(h.prebuilt, 'v0.9.0'));
    const r = await h.run(['dev', 'rm', '0.9.0']);
    assert.equal(r.code, 17, r.stderr);
    assert.match(r.stderr, /v0\.9\.0 points outside the store/);
    assert.equal(readlinkSync(join(h.prebuilt, 'v0.9.0')), outside);
    assert.equal(readFileSync(join(outside, 'keep.txt'), 'utf8'), 'the operator keeps this');
  });
});

describe('dev prune', () => {
  it('keeps this mvmctl’s version and the running VM’s, removes the others and staging leftovers; --dry-run removes nothing; audited', async () => {
    const h = host();
    await installed(h);
    installAs(h, '0.13.0');
    installAs(h, '0.11.0');
    installAs(h, '0.12.0');
    const vm = runningVm(h, '0.12.0');
    await vmRunning(h);
    const dead = `${DEAD_PID}-00000000000000bb`;
    mkdirSync(join(objectsDir(h), dead), { mode: 0o700 });
    writeFileSync(join(objectsDir(h), dead, 'rootfs.ext4'), Buffer.alloc(1024 * 1024, 7));
    // An import still running (its creator is alive): never touched.
    const live = `${vm.pid}-00000000000000cc`;
    mkdirSync(join(objectsDir(h), live), { mode: 0o700 });

    const before = snapshot(h.prebuilt);
    const dry = await h.run(['dev', 'prune', '--dry-run', '--json']);
    assert.equal(dry.code, 0, dry.stderr);
    const plan = JSON.parse(dry.stdout);
    assert.equal(plan.dryRun, true);
    assert.deepEqual(
      plan.removed.map((i: { name: string }) => i.name).sort(),
      [`.objects/${dead}`, 'v0.11.0', 'v0.13.0'].sort(),
    );
    assert.equal(
      plan.freedBytes,
      plan.removed.reduce((s: number, i: { bytes: number }) => s + i.bytes, 0),
    );
    assert.ok(plan.freedBytes >= 2 * good.rootfsBytes.length + 1024 * 1024);
    assert.deepEqual(
      plan.kept.map((k: { version: string }) => k.version).sort(),
      ['0.12.0', VERSION].sort(),
    );
    assert.match(
      plan.kept.find((k: { version: string }) => k.version === '0.12.0').reason,
      /running dev VM/,
    );
    assert.deepEqual(
      plan.inProgress.map((i: { name: string }) => i.name),
      [`.objects/${live}`],
    );
    assert.deepEqual(snapshot(h.prebuilt), before, '--dry-run changed nothing');
    const dryHuman = await h.run(['dev', 'prune', '--dry-run']);
    assert.match(dryHuman.stdout, /^Would remove +v0\.11\.0 +[\d.]+ MiB$/m);
    assert.match(
      dryHuman.stdout,
      new RegExp(
        `^Would remove +\\.objects/${dead} \\(left by an interrupted import, pid ${DEAD_PID}\\) +1\\.0 MiB$`,
        'm',
      ),
    );
    assert.match(dryHuman.stdout, /^Kept v0\.12\.0: the running dev VM \(pid \d+\) booted it$/m);
    assert.match(dryHuman.stdout, /Would free [\d.]+ MiB \(dry run: nothing was removed\)\./);
    assert.deepEqual(snapshot(h.prebuilt), before, '--dry-run changed nothing');
    assert.equal(lastRecord(h, 'dev.prune'), undefined, 'a dry run is not recorded');

    const r = await h.run(['dev', 'prune']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Removed +v0\.13\.0 +[\d.]+ MiB$/m);
    assert.match(r.stdout, /^Freed [\d.]+ MiB\.$/m);
    assert.deepEqual(
      (await images(h)).map((i) => i.version),
      ['0.12.0', VERSION],
    );
    assert.deepEqual(
      readdirSync(objectsDir(h)).filter((o) => o === dead || o === live),
      [live],
      'the leftover is gone, the import in progress is not',
    );
    assert.equal(
      readdirSync(objectsDir(h)).length,
      3,
      "this version's, the VM's, the live import's",
    );
    const rec = lastRecord(h, 'dev.prune')!;
    assert.equal(rec['outcome'], 'ok');
    assert.match(String(rec['message']), /removed .*v0\.11\.0 \(\d+ bytes\)/);
    assert.match(String(rec['message']), /v0\.13\.0 \(\d+ bytes\)/);
    assert.match(String(rec['message']), new RegExp(`\\.objects/${dead} \\(\\d+ bytes\\)`));
    assert.match(String(rec['message']), /freed \d+ bytes; kept v0\.12\.0, v/);

    const nothing = await h.run(['dev', 'prune', '--dry-run']);
    assert.match(nothing.stdout, /Nothing to prune\./);
    vm.kill('SIGKILL');
  });

  it("waits for the dev VM's lock too, and removes nothing until it has it", async () => {
    const h = host();
    await installed(h);
    installAs(h, '0.13.0');
    const held = await holdVmLock(h);
    const prune = h.run(['dev', 'prune']);
    assert.equal(await settledWithin(prune, 2000), false, 'dev prune went ahead under a dev up');
    assert.equal(existsSync(join(h.prebuilt, 'v0.13.0')), true);
    await held.release();
    const r = await prune;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(existsSync(join(h.prebuilt, 'v0.13.0')), false);
  });

  it('a downloads directory that is a symlink is refused (as dev pull refuses it), its target untouched', async () => {
    const h = host();
    await installed(h);
    const elsewhere = join(h.dir, 'elsewhere');
    mkdirSync(join(elsewhere, 'precious'), { recursive: true });
    writeFileSync(join(elsewhere, 'precious', 'keep.txt'), 'keep');
    symlinkSync(elsewhere, join(h.dir, 'data', 'dev', 'downloads'));
    for (const args of [
      ['dev', 'prune'],
      ['dev', 'prune', '--dry-run'],
    ]) {
      const r = await h.run(args);
      assert.equal(r.code, 17, r.stderr);
      assert.match(r.stderr, /downloads is a symbolic link/);
    }
    assert.equal(readFileSync(join(elsewhere, 'precious', 'keep.txt'), 'utf8'), 'keep');
  });

  it('on an empty host: nothing to prune, nothing created', async () => {
    const h = host();
    const r = await h.run(['dev', 'prune', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).removed, []);
    assert.equal(existsSync(join(h.dir, 'data')), false);
  });
});

describe('dev import-image: replacing another build of the same version', () => {
  const day = 86_400_000;
  const build = (name: string, builtAgoDays: number, notAfter?: Date) =>
    writeReleaseSet(pki, join(root, `${name}${n++}`), {
      version: VERSION,
      arch: HOST_ARCH,
      rootfs: Buffer.from(`rootfs ${name} `.repeat(4096)),
      builtAt: new Date(Date.now() - builtAgoDays * day),
      ...(notAfter ? { notAfter } : {}),
    });
  const iso = (s: ReleaseFiles) => new Date(String(s.manifestJson['built_at'])).toISOString();

  it('names both built_at times (human and --json) and warns when the new build is older or already expired', async () => {
    const newer = await build('newer', 2);
    const older = await build('older', 10);
    const newest = await build('newest', 1);
    const expired = await build('expired', 200, new Date(Date.now() - 100 * day));
    const h = host();
    assert.equal((await h.importSet(newer)).code, 0);

    const r = await h.importSet(older);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      new RegExp(
        `It replaced another build of v.*: built ${iso(newer)}, now built ${iso(older)} \\(OLDER\\)\\.`,
      ),
    );
    assert.match(
      r.stderr,
      new RegExp(`replaced the build of ${iso(newer)} with the build of ${iso(older)}`),
    );
    assert.match(
      r.stderr,
      /warning: v.*: the build installed now \(built .*\) is OLDER than the build of .* it replaced/,
    );

    const j = await h.importSet(newest, ['--json']);
    assert.equal(j.code, 0, j.stderr);
    const out = JSON.parse(j.stdout);
    assert.deepEqual(
      {
        previous: out.replaced.previous.builtAt,
        now: out.replaced.builtAt,
        older: out.replaced.older,
      },
      { previous: iso(older), now: iso(newest), older: false },
    );
    assert.equal(out.receipt.builtAt, iso(newest));
    assert.doesNotMatch(j.stderr, /OLDER|past its not_after/, 'a newer build is no step back');

    const e = await h.importSet(expired);
    assert.equal(e.code, 0, e.stderr);
    assert.match(e.stderr, /warning: v.*: the build installed now is already past its not_after/);
    assert.match(e.stderr, /OLDER/);

    // The same build again replaces nothing.
    const same = await h.importSet(expired, ['--json']);
    assert.equal(JSON.parse(same.stdout).replaced, undefined);
  });

  it('a receipt written before builtAt was recorded: the installed manifest says when it was built', async () => {
    const first = await build('first', 5);
    const second = await build('second', 3);
    const h = host();
    assert.equal((await h.importSet(first)).code, 0);
    const obj = join(h.prebuilt, readlinkSync(join(h.prebuilt, `v${VERSION}`)));
    const receipt = JSON.parse(readFileSync(join(obj, 'receipt.json'), 'utf8'));
    delete receipt.builtAt;
    writeFileSync(join(obj, 'receipt.json'), JSON.stringify(receipt));
    assert.equal(byVersion(await images(h), VERSION)['builtAt'], iso(first));
    const r = await h.importSet(second, ['--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).replaced.previous.builtAt, iso(first));
  });
});
