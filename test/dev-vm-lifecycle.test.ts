/**
 * The rest of the dev VM's lifecycle (SPEC.md section 8, issue 9's "tests that
 * must exist") through the built CLI, booting the real test guest
 * (scripts/build-test-image.sh) under QEMU with software emulation: guest
 * writes that persist across down/up (and --fresh discarding them) while the
 * installed rootfs is never written; a state.json naming another live process
 * (never signalled); two `dev up` at once (one VM); recalls and a missing
 * image refused before anything boots; `--accel kvm` on a host whose KVM
 * cannot run a stock kernel; and the whole cycle with no network at all.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
  statSync,
} from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLI, type CliResult } from './support/cli.js';
import { HOST_ARCH, testHost, VERSION, type TestHost } from './support/host.js';
import { TestPki } from './support/pki.js';
import { writeReleaseSet, writeRevocationList, type ReleaseFiles } from './support/release.js';
import {
  hostWithTestGuest,
  processesMentioning,
  READY_LINE,
  vmProcessesMentioning,
  writeVmState,
} from './support/vm.js';

// Bounds on waiting for events on a loaded 2-core host under software emulation, not timing
// assertions: a boot to the ready line takes about 2-4 s here.
const UP_TIMEOUT_S = '120';
const CLI_TIMEOUT_MS = 300_000;
const CONSOLE_TIMEOUT_MS = 120_000;

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

let root: string;
let pki: TestPki;
let trustedRoot: string;
let host: TestHost;
let vmDir: string;
const bystanders: ChildProcess[] = [];

before(async () => {
  // Short: the VM's sockets live under it, and a unix socket path is limited to 107 bytes.
  root = mkdtempSync(join(tmpdir(), 'mvm-life-'));
  ({ host, pki, trustedRoot, vmDir } = await hostWithTestGuest(root));
});

after(async () => {
  for (const p of bystanders) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  // Whatever a failed test left running is stopped (by the CLI, which checks pid + start time).
  if (host) await dev(['down', '--timeout', '5']);
  if (root) rmSync(root, { recursive: true, force: true });
});

/** The built CLI on `on` (the shared host by default), optionally under a wrapper like `unshare -n`. */
function dev(args: string[], o: { on?: TestHost; wrapper?: string[] } = {}): Promise<CliResult> {
  const env: NodeJS.ProcessEnv = { ...process.env, ...(o.on ?? host).env };
  const argv = [process.execPath, CLI, 'dev', ...args];
  const [file, ...rest] = [...(o.wrapper ?? []), ...argv];
  return new Promise((resolve) => {
    execFile(file!, rest, { env, timeout: CLI_TIMEOUT_MS }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const up = (extra: string[] = [], o: { on?: TestHost; wrapper?: string[] } = {}) =>
  dev(['up', '--ready-line', READY_LINE, '--timeout', UP_TIMEOUT_S, ...extra], o);

const statusJson = async (): Promise<Json> => {
  const r = await dev(['status', '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Json;
};

/** The rootfs inside the installed store object (the version link resolved). */
const installedRootfs = (): string =>
  realpathSync(join(root, 'h', 'data', 'dev', 'prebuilt', `v${VERSION}`, 'rootfs.ext4'));
const sha256 = (path: string): string =>
  createHash('sha256').update(readFileSync(path)).digest('hex');
const upRecords = (): Json[] => host.audit().filter((r) => r['event'] === 'dev.up');

/** A client of the VM's console socket: types lines to the guest's shell and waits for output. */
async function openConsole(path: string) {
  const conn: Socket = await new Promise((resolve, reject) => {
    const c = createConnection(path);
    c.once('connect', () => {
      c.off('error', reject);
      resolve(c);
    });
    c.once('error', reject);
  });
  let output = '';
  let closed = false;
  const waiters = new Set<() => void>();
  conn.setEncoding('utf8');
  conn.on('data', (chunk: string) => {
    output += chunk;
    for (const w of waiters) w();
  });
  conn.on('close', () => {
    closed = true;
    for (const w of waiters) w();
  });
  return {
    get output() {
      return output;
    },
    type(line: string): void {
      conn.write(`${line}\n`);
    },
    /** The console text from `from` once `pattern` shows in it; fails on timeout or a closed socket. */
    waitFor(pattern: RegExp, from: number): Promise<string> {
      return new Promise((resolve, reject) => {
        const check = () => {
          const text = output.slice(from);
          if (pattern.test(text)) {
            done();
            resolve(text);
          } else if (closed) {
            done();
            reject(new Error(`console closed before ${String(pattern)}:\n${text}`));
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`no ${String(pattern)} on the console:\n${output.slice(from)}`));
        }, CONSOLE_TIMEOUT_MS);
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
    close(): void {
      conn.destroy();
    },
  };
}

/** Types `command` on the guest's shell, then a marker computed by the shell (its echo differs). */
async function inGuest(command: string, marker: number): Promise<string> {
  const con = await openConsole(join(vmDir, 'console.sock'));
  try {
    const from = con.output.length;
    con.type(`${command}; echo MARK-$((${marker} + 1000))`);
    const text = await con.waitFor(new RegExp(`MARK-${marker + 1000}`), from);
    return text;
  } finally {
    con.close();
  }
}

/** A live process that is not the VM's: it must outlive every command below. */
function bystander(): { pid: number; startTime: string; child: ChildProcess } {
  const child = spawn('sleep', ['600'], { stdio: 'ignore' });
  bystanders.push(child);
  const pid = child.pid!;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const startTime = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!;
  return { pid, startTime, child };
}

function assertAlive(b: { pid: number; child: ChildProcess }, after: string): void {
  assert.equal(b.child.exitCode, null, `${after}: the bystander exited`);
  assert.equal(b.child.signalCode, null, `${after}: the bystander was signalled`);
  const stat = readFileSync(`/proc/${b.pid}/stat`, 'utf8');
  assert.match(stat.slice(stat.lastIndexOf(')') + 2), /^[RS] /, `${after}: bystander state`);
}

describe('dev VM lifecycle with a real guest', () => {
  it(
    'a file the guest writes survives down and up, the installed rootfs is never written, and --fresh discards the write',
    { timeout: 900_000 },
    async () => {
      const rootfs = installedRootfs();
      const rootfsSha = sha256(rootfs);

      const up1 = await up(['--accel', 'tcg', '--fresh']);
      assert.equal(up1.code, 0, up1.stderr);
      assert.match(up1.stdout, /The dev VM is ready/);
      await inGuest('echo persisted-$((40 + 2)) > /mvm-persist.txt; sync', 1);
      assert.equal(sha256(rootfs), rootfsSha, 'the guest wrote to its overlay only');
      const down1 = await dev(['down']);
      assert.equal(down1.code, 0, down1.stderr);
      assert.deepEqual(processesMentioning(vmDir), []);
      assert.equal(sha256(rootfs), rootfsSha);

      const up2 = await up(['--accel', 'tcg']);
      assert.equal(up2.code, 0, up2.stderr);
      const kept = await inGuest('cat /mvm-persist.txt', 2);
      assert.match(kept, /^persisted-42\r?$/m);
      const down2 = await dev(['down']);
      assert.equal(down2.code, 0, down2.stderr);
      assert.equal(sha256(rootfs), rootfsSha);

      const up3 = await up(['--accel', 'tcg', '--fresh']);
      assert.equal(up3.code, 0, up3.stderr);
      const gone = await inGuest('cat /mvm-persist.txt 2>&1', 3);
      assert.doesNotMatch(gone, /persisted-42/);
      assert.match(gone, /can't open '\/mvm-persist\.txt': No such file or directory/);
      const down3 = await dev(['down']);
      assert.equal(down3.code, 0, down3.stderr);
      assert.deepEqual(processesMentioning(vmDir), []);
      assert.equal(sha256(rootfs), rootfsSha, 'the installed rootfs is unchanged throughout');
    },
  );

  it(
    "the overlay's header cannot choose the disk: rebased onto another file it still boots the verified rootfs; an external data file is refused",
    { timeout: 900_000 },
    async () => {
      const overlay = join(vmDir, 'overlay.qcow2');
      const up1 = await up(['--accel', 'tcg', '--fresh']);
      assert.equal(up1.code, 0, up1.stderr);
      await inGuest('echo kept-$((50 + 5)) > /mvm-rebase.txt; sync', 11);
      assert.equal((await dev(['down'])).code, 0);

      // What `qemu-img rebase -u` does: the header now names a file of zeros, no root file system.
      const decoy = join(root, 'decoy.raw');
      execFileSync('truncate', ['-s', String(statSync(installedRootfs()).size), decoy]);
      execFileSync('qemu-img', ['rebase', '-q', '-u', '-F', 'raw', '-b', decoy, overlay]);
      const up2 = await up(['--accel', 'tcg']);
      assert.equal(up2.code, 0, up2.stderr);
      assert.match(await inGuest('cat /mvm-rebase.txt', 12), /^kept-55\r?$/m);
      const pid = (await statusJson())['pid'] as number;
      const open = readdirSync(`/proc/${pid}/fd`).map((fd) => {
        try {
          return readlinkSync(`/proc/${pid}/fd/${fd}`);
        } catch {
          return '';
        }
      });
      assert.ok(open.includes(installedRootfs()), 'QEMU reads the verified rootfs');
      assert.ok(!open.includes(decoy), 'and never the file the header names');
      assert.equal((await dev(['down'])).code, 0);

      // An external data file: another file the header would have QEMU open and write.
      rmSync(overlay);
      execFileSync('qemu-img', [
        'create',
        '-q',
        '-f',
        'qcow2',
        '-o',
        `data_file=${join(root, 'data.raw')}`,
        '-F',
        'raw',
        '-b',
        installedRootfs(),
        overlay,
      ]);
      const refused = await up(['--accel', 'tcg']);
      assert.equal(refused.code, 17, refused.stderr);
      assert.match(
        refused.stderr,
        /The dev VM's disk overlay .*overlay\.qcow2 is not one dev up made/,
      );
      assert.match(refused.stderr, /external data file/);
      assert.match(refused.stderr, /mvmctl dev up --fresh/);
      assert.deepEqual(processesMentioning(vmDir), []);

      const fresh = await up(['--accel', 'tcg', '--fresh']);
      assert.equal(fresh.code, 0, fresh.stderr);
      assert.equal((await dev(['down'])).code, 0);
    },
  );

  it(
    'a state.json naming another live process (wrong start time): status says stale; down and up (--accel auto) never signal it',
    { timeout: 300_000 },
    async () => {
      const b = bystander();
      writeVmState(vmDir, b.pid, String(Number(b.startTime) + 1));
      const s = await statusJson();
      assert.equal(s['state'], 'stale');
      assert.equal(s['pid'], b.pid);
      assert.match(
        String(s['stale_reason']),
        new RegExp(`pid ${b.pid} now belongs to another process`),
      );
      assertAlive(b, 'dev status');

      const down = await dev(['down']);
      assert.equal(down.code, 0, down.stderr);
      assert.match(down.stdout, /The dev VM was not running; its stale state was cleaned up/);
      assertAlive(b, 'dev down');
      assert.equal(existsSync(join(vmDir, 'state.json')), false);

      writeVmState(vmDir, b.pid, String(Number(b.startTime) + 1));
      const booted = await up(['--accel', 'auto']);
      assert.equal(booted.code, 0, booted.stderr);
      assertAlive(b, 'dev up');
      assert.match(
        booted.stderr,
        new RegExp(
          `warning: cleaned up a stale dev VM state: pid ${b.pid} now belongs to another process`,
        ),
      );
      // This host's /dev/kvm exists but cannot run a stock kernel: auto falls back, saying why.
      assert.match(
        booted.stderr,
        /warning: KVM is not usable \(.+\): booting with software emulation \(TCG\), several times slower\. .*--accel tcg chooses emulation without this warning\./,
      );
      if (existsSync('/sys/module/kvm_pvm'))
        assert.match(booted.stderr, /KVM is not usable \(this host's KVM is kvm_pvm/);
      const s2 = await statusJson();
      assert.equal(s2['state'], 'running');
      assert.equal(s2['accel'], 'tcg');
      assert.notEqual(s2['pid'], b.pid);
      assert.deepEqual(vmProcessesMentioning(vmDir).others, [s2['pid']]);
      assert.equal(vmProcessesMentioning(vmDir).keepers.length, 1, 'one keeper of the console log');
      const down2 = await dev(['down']);
      assert.equal(down2.code, 0, down2.stderr);
      assertAlive(b, 'the second dev down');
      assert.deepEqual(processesMentioning(vmDir), []);
      b.child.kill('SIGKILL');
    },
  );

  it(
    'a state.json naming another live process with its right start time, but not QEMU: stale, and never signalled',
    { timeout: 300_000 },
    async () => {
      const b = bystander();
      writeVmState(vmDir, b.pid, b.startTime);
      const s = await statusJson();
      assert.equal(s['state'], 'stale');
      assert.match(String(s['stale_reason']), new RegExp(`pid ${b.pid} is not this VM's QEMU`));
      const down = await dev(['down', '--timeout', '2']);
      assert.equal(down.code, 0, down.stderr);
      assert.match(down.stdout, /The dev VM was not running; its stale state was cleaned up/);
      assertAlive(b, 'dev down');
      assert.equal(existsSync(join(vmDir, 'state.json')), false);
      b.child.kill('SIGKILL');
    },
  );

  it(
    "a live process started with -pidfile naming another data directory's pid file: stale, and never signalled",
    { timeout: 300_000 },
    async () => {
      // Another data directory's QEMU, or a reused pid: -pidfile alone does not make it this VM's.
      const other = join(dirname(vmDir), 'elsewhere', 'qemu.pid');
      const child = spawn(
        process.execPath,
        ['-e', 'setInterval(() => {}, 1e9)', '--', '-pidfile', other],
        { stdio: 'ignore' },
      );
      bystanders.push(child);
      const pid = child.pid!;
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const b = { pid, child, startTime: stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]! };
      writeVmState(vmDir, b.pid, b.startTime);
      const s = await statusJson();
      assert.equal(s['state'], 'stale');
      assert.match(
        String(s['stale_reason']),
        new RegExp(
          `pid ${b.pid} is not this VM's QEMU \\(its command line does not name .*qemu\\.pid\\)`,
        ),
      );
      const down = await dev(['down', '--timeout', '2']);
      assert.equal(down.code, 0, down.stderr);
      assert.match(down.stdout, /The dev VM was not running; its stale state was cleaned up/);
      assertAlive(b, 'dev down');
      child.kill('SIGKILL');
    },
  );

  it(
    'two dev up at once: one VM; one boots it, the other reports it running',
    { timeout: 600_000 },
    async () => {
      const before = upRecords().length;
      const [a, b] = await Promise.all([up(['--accel', 'tcg']), up(['--accel', 'tcg'])]);
      assert.equal(a.code, 0, a.stderr);
      assert.equal(b.code, 0, b.stderr);
      const outs = [a.stdout, b.stdout];
      assert.equal(outs.filter((o) => /The dev VM is ready: /.test(o)).length, 1, outs.join('\n'));
      assert.equal(
        outs.filter((o) => /The dev VM is already running: /.test(o)).length,
        1,
        outs.join('\n'),
      );
      const s = await statusJson();
      assert.equal(s['state'], 'running');
      assert.deepEqual(vmProcessesMentioning(vmDir).others, [s['pid']]);
      assert.equal(vmProcessesMentioning(vmDir).keepers.length, 1, 'one keeper of the console log');
      assert.equal(upRecords().length - before, 1, 'one boot, one dev.up record');
      const down = await dev(['down']);
      assert.equal(down.code, 0, down.stderr);
      assert.deepEqual(processesMentioning(vmDir), []);
    },
  );

  it('--accel kvm on this host (its KVM cannot run a stock kernel): exit 2, a clear error, no QEMU', async () => {
    const before = upRecords().length;
    const r = await up(['--accel', 'kvm']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^Error: --accel kvm: KVM is not usable on this host$/m);
    if (existsSync('/sys/module/kvm_pvm'))
      assert.match(
        r.stderr,
        /this host's KVM is kvm_pvm \(paravirtual nested KVM\), which cannot run a stock kernel/,
      );
    assert.match(r.stderr, /Or use --accel auto \(or tcg\) to boot with software emulation/);
    assert.doesNotMatch(r.stderr, /hypervisor started|\n\s+at /);
    assert.deepEqual(processesMentioning(vmDir), []);
    assert.equal(existsSync(join(vmDir, 'state.json')), false);
    assert.equal(upRecords().length, before, 'refused before any boot attempt');
  });

  it(
    'up / status / down inside unshare -n (no network at all): works, no QEMU left',
    { timeout: 300_000 },
    async () => {
      const netns = ['unshare', '-n'];
      const r = await up(['--accel', 'tcg'], { wrapper: netns });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /The dev VM is ready: /);
      const status = await dev(['status', '--json'], { wrapper: netns });
      assert.equal(status.code, 0, status.stderr);
      const s = JSON.parse(status.stdout) as Json;
      assert.equal(s['state'], 'running');
      assert.deepEqual(vmProcessesMentioning(vmDir).others, [s['pid']]);
      assert.equal(vmProcessesMentioning(vmDir).keepers.length, 1, 'one keeper of the console log');
      // QEMU runs in the empty network namespace, not this one.
      assert.notEqual(readlinkSync(`/proc/${s['pid']}/ns/net`), readlinkSync('/proc/self/ns/net'));
      const down = await dev(['down'], { wrapper: netns });
      assert.equal(down.code, 0, down.stderr);
      assert.match(down.stdout, /^The dev VM shut down \(through its guest agent\)\./);
      assert.deepEqual(processesMentioning(vmDir), []);
      assert.equal(existsSync(join(vmDir, 'state.json')), false);
    },
  );
});

describe('dev up refused before anything boots', () => {
  let set: ReleaseFiles;
  before(async () => {
    set = await writeReleaseSet(pki, join(root, 'small-set'), {
      version: VERSION,
      arch: HOST_ARCH,
    });
  });

  it('a recall in the cached list: exit 13; remembered with the list deleted: still 13; no QEMU', async () => {
    const h = testHost(join(root, 'r'), trustedRoot);
    const before = h.audit().length;
    const imported = await h.importSet(set);
    assert.equal(imported.code, 0, imported.stderr);
    await writeRevocationList(pki, h.revocations, [
      { version: VERSION, arch: HOST_ARCH, reason: 'CVE-2026-7777: bad image' },
    ]);
    const escaped = VERSION.replace(/\./g, '\\.');
    const r = await up(['--accel', 'tcg'], { on: h });
    assert.equal(r.code, 13, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `^Error: Imported manifest is on the project's revocation list: ${escaped} dev ${HOST_ARCH} was recalled: CVE-2026-7777: bad image$`,
        'm',
      ),
    );
    assert.doesNotMatch(r.stderr, /hypervisor started/);
    assert.deepEqual(processesMentioning(h.dir), []);

    // The refused up verified the list, so this host now remembers the recall: deleting the list
    // (a rollback) does not lift it.
    rmSync(join(h.dir, 'cache'), { recursive: true, force: true });
    const r2 = await up(['--accel', 'tcg'], { on: h });
    assert.equal(r2.code, 13, r2.stderr);
    assert.match(r2.stderr, /^warning: REVOCATION LIST ROLLED BACK OR REMOVED: 1 recall/m);
    assert.match(
      r2.stderr,
      new RegExp(
        `^Error: Imported manifest is on the project's revocation list: ${escaped} dev ${HOST_ARCH} was recalled: CVE-2026-7777: bad image$`,
        'm',
      ),
    );
    assert.deepEqual(processesMentioning(h.dir), []);
    assert.equal(existsSync(join(h.dir, 'data', 'vms', 'dev', 'state.json')), false);
    const refusals = h
      .audit()
      .slice(before)
      .filter((e) => e['event'] === 'dev.up');
    assert.deepEqual(
      refusals.map((e) => [e['outcome'], e['code']]),
      [
        ['failed', 'revoked'],
        ['failed', 'revoked'],
      ],
    );
  });

  it('nothing installed, offline: exit 3 naming dev import-image, nothing started', async () => {
    const h = testHost(join(root, 'e'), trustedRoot);
    assert.equal(h.env.MVM_OFFLINE, '1');
    const r = await up(['--accel', 'tcg'], { on: h });
    assert.equal(r.code, 3, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`^Error: No dev image is installed for v${VERSION.replace(/\./g, '\\.')}$`, 'm'),
    );
    assert.match(r.stderr, /mvmctl dev import-image/);
    assert.doesNotMatch(r.stderr, /hypervisor started|\n\s+at /);
    assert.deepEqual(processesMentioning(h.dir), []);
    assert.equal(existsSync(h.prebuilt), false);
  });
});
