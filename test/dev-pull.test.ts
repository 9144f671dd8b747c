/**
 * `mvmctl dev pull` and `dev up` online (issue 10, SPEC.md section 11) against a real HTTP
 * server on 127.0.0.1 serving test-PKI-signed release sets: pull fetches into a private staging
 * directory and installs through the import pipeline (receipt, revocation cache, nothing left
 * behind); `dev up` with nothing installed pulls, then boots the real test guest (one boot); with
 * MVM_OFFLINE=1 it never makes a request.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { HOST_ARCH, testHost, VERSION } from './support/host.js';
import { TestPki } from './support/pki.js';
import { onlineEnv, ReleaseServer, runMvm } from './support/release-server.js';
import { writeReleaseSet, writeRevocationList, type ReleaseFiles } from './support/release.js';
import { buildTestImage, processesMentioning, READY_LINE } from './support/vm.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const ROOTFS = `dev-rootfs-${HOST_ARCH}.ext4`;
const KERNEL = `dev-vmlinux-${HOST_ARCH}`;
const INITRD = `dev-initrd-${HOST_ARCH}`;
// Bounds on waiting for a download, an import and a boot under software emulation, not timings.
const BOOT_TIMEOUT_MS = 600_000;

let root: string;
let pki: TestPki;
let trustedRoot: string;
let small: ReleaseFiles;
let listDir: string;
let server: ReleaseServer;
let n = 0;

before(async () => {
  // Short: a booted VM's sockets live under it (unix socket paths are limited to 107 bytes).
  root = mkdtempSync(join(tmpdir(), 'mvm-pull-'));
  pki = await TestPki.create();
  trustedRoot = pki.writeTrustedRoot(root);
  small = await writeReleaseSet(pki, join(root, 'small'), { version: VERSION, arch: HOST_ARCH });
  listDir = join(root, 'list');
  await writeRevocationList(pki, listDir, [{ version: '0.1.0' }]);
  server = await ReleaseServer.start({ releases: { [VERSION]: small.dir }, revocations: listDir });
});

beforeEach(() => server.reset());

after(async () => {
  await server?.close();
  if (root) rmSync(root, { recursive: true, force: true });
});

/** A fresh host under `root` that may use the network (the loopback release location). */
function online(extra: Record<string, string> = {}) {
  const h = testHost(join(root, `h${n++}`), trustedRoot);
  const env = { ...h.env, ...onlineEnv(server.baseUrl), ...extra };
  return {
    ...h,
    env,
    dataDir: h.env.MVM_DATA_DIR,
    receipt: join(h.prebuilt, `v${VERSION}`, 'receipt.json'),
    vmDir: join(h.env.MVM_DATA_DIR, 'vms', 'dev'),
    dev: (args: string[], more: Record<string, string> = {}) =>
      runMvm(['dev', ...args], { ...env, ...more }, { timeoutMs: BOOT_TIMEOUT_MS }),
  };
}
type OnlineHost = ReturnType<typeof online>;

/** Every file below `dir`, relative to it. */
function walk(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)));
}

/** Files in the data dir under a release name (or its .partial) matching `pattern`. */
const downloadsIn = (h: OnlineHost, pattern = /dev-(image|vmlinux|rootfs|initrd)-/): string[] =>
  walk(h.dataDir).filter((f) => pattern.test(f.slice(f.lastIndexOf('/') + 1)));

/** Nothing a download leaves behind (release-named files, partials) anywhere in the data dir. */
function assertNoStaging(h: OnlineHost): void {
  assert.deepEqual(downloadsIn(h), [], 'the staging directory was removed');
}

/** The receipt of the installed image names these digests. */
function assertInstalled(h: OnlineHost, set: ReleaseFiles): void {
  assert.ok(existsSync(h.receipt), `no receipt at ${h.receipt}`);
  const receipt = readFileSync(h.receipt, 'utf8');
  for (const bytes of [set.kernelBytes, set.rootfsBytes])
    assert.ok(receipt.includes(createHash('sha256').update(bytes).digest('hex')), receipt);
}

const installedImages = async (h: OnlineHost): Promise<Json[]> => {
  const r = await runMvm(['status', '--json'], h.env);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as Json)['images'] as Json[];
};

describe('dev pull', () => {
  it('installs this version for the host arch into the store, with the revocation list, and no staging left', async () => {
    const h = online();
    const r = await h.dev(['pull']);
    assert.equal(r.code, 0, r.stderr);
    assertInstalled(h, small);
    const images = await installedImages(h);
    assert.deepEqual(
      images.map((i) => [i['version'], i['current']]),
      [[VERSION, true]],
    );
    assert.deepEqual(
      readFileSync(join(h.revocations, 'revoked-versions.json')),
      readFileSync(join(listDir, 'revoked-versions.json')),
    );
    assertNoStaging(h);
    for (const name of [KERNEL, ROOTFS])
      assert.equal(server.requestsFor(name).filter((q) => q.status === 200).length, 1, name);
  });

  it('--json: one object, no error', async () => {
    const h = online();
    const r = await h.dev(['pull', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 1, r.stdout);
    const doc = JSON.parse(lines[0]!) as Json;
    assert.equal(doc['error'], undefined);
    assertInstalled(h, small);
  });

  it('a tampered rootfs: exit 14, nothing installed, the bad rootfs deleted', async () => {
    const bad = Buffer.from(small.rootfsBytes);
    bad[100] = bad[100]! ^ 0xff;
    server.set(ROOTFS, { body: bad });
    const h = online();
    const r = await h.dev(['pull']);
    assert.equal(r.code, 14, r.stderr);
    assert.match(r.stderr, /rootfs SHA-256 mismatch/);
    assert.equal(existsSync(join(h.prebuilt, `v${VERSION}`)), false);
    // The other downloads may stay for a resume; the bytes that did not match are gone.
    assert.deepEqual(downloadsIn(h, /^dev-rootfs-/), []);

    // What the unfinished pull kept is dev prune's to remove: listed by --dry-run, then gone.
    const kept = join(h.dir, 'data', 'dev', 'downloads', `v${VERSION}-${HOST_ARCH}`);
    assert.ok(existsSync(kept), 'the pull kept its downloads for a resume');
    const dry = await h.dev(['prune', '--dry-run']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /downloads\/v[\d.]+-\w+ \(kept by a dev pull that did not finish\)/);
    assert.ok(existsSync(kept), '--dry-run removes nothing');
    const pruned = await h.dev(['prune', '--json']);
    assert.equal(pruned.code, 0, pruned.stderr);
    const removed = (JSON.parse(pruned.stdout) as { removed: { kind: string }[] }).removed;
    assert.deepEqual(
      removed.map((i) => i.kind),
      ['download'],
    );
    assert.equal(existsSync(kept), false);
  });

  it('a release the signed list recalls: exit 13 before any artifact is requested, nothing installed', async () => {
    const recallDir = join(root, `recall${n++}`);
    await writeRevocationList(pki, recallDir, [
      { version: VERSION, arch: HOST_ARCH, reason: 'CVE-2026-5151: recalled upstream' },
    ]);
    server.serveRevocations(recallDir);
    try {
      const h = online();
      const r = await h.dev(['pull']);
      assert.equal(r.code, 13, r.stderr);
      assert.match(
        r.stderr,
        /^Error: The release is on the project's revocation list: .* was recalled: CVE-2026-5151: recalled upstream$/m,
      );
      assert.doesNotMatch(r.stderr, /fetching anyway/);
      for (const name of [KERNEL, ROOTFS]) assert.deepEqual(server.requestsFor(name), [], name);
      assert.equal(existsSync(join(h.prebuilt, `v${VERSION}`)), false);
    } finally {
      server.serveRevocations(listDir);
    }
  });

  it('offline (MVM_OFFLINE=1 or --offline): exit 16, no request, nothing installed', async () => {
    const h = online();
    for (const [args, env] of [
      [['pull'], { MVM_OFFLINE: '1' }],
      [['pull', '--offline'], {}],
    ] as const) {
      const r = await h.dev([...args], env);
      assert.equal(r.code, 16, r.stderr);
      assert.match(r.stderr, /offline/i);
    }
    assert.deepEqual(server.requests, []);
    assert.equal(existsSync(h.receipt), false);
  });
});

describe('dev up with nothing installed', () => {
  let guest: ReleaseFiles;
  let booted: OnlineHost | undefined;

  before(async () => {
    const image = buildTestImage();
    guest = await writeReleaseSet(pki, join(root, 'guest'), {
      version: VERSION,
      arch: HOST_ARCH,
      kernel: readFileSync(image.vmlinux),
      rootfs: readFileSync(image.rootfs),
      initrd: readFileSync(image.initrd),
    });
  });

  beforeEach(() => server.serveRelease(VERSION, guest.dir));

  after(async () => {
    server.serveRelease(VERSION, small.dir);
    // Whatever a failed test left running is stopped (by the CLI, which checks pid + start time).
    if (booted) await booted.dev(['down', '--timeout', '5']);
  });

  it(
    'network reachable: pulls (kernel, rootfs, initrd), installs, then boots the guest',
    { timeout: BOOT_TIMEOUT_MS },
    async () => {
      const h = (booted = online());
      const up = await h.dev([
        'up',
        '--accel',
        'tcg',
        '--ready-line',
        READY_LINE,
        '--timeout',
        '120',
      ]);
      assert.equal(up.code, 0, up.stderr);
      assert.match(up.stdout, /The dev VM is ready/);
      for (const name of [KERNEL, ROOTFS, INITRD])
        assert.ok(
          server.requestsFor(name).some((q) => q.status === 200),
          `${name} downloaded`,
        );
      assertInstalled(h, guest);
      assertNoStaging(h);
      const status = await h.dev(['status', '--json']);
      assert.equal(status.code, 0, status.stderr);
      assert.equal((JSON.parse(status.stdout) as Json)['state'], 'running');

      const down = await h.dev(['down']);
      assert.equal(down.code, 0, down.stderr);
      assert.deepEqual(processesMentioning(h.vmDir), []);
    },
  );

  it('MVM_OFFLINE=1: no request, exit 3 with a clear message, nothing started', async () => {
    const h = online({ MVM_OFFLINE: '1' });
    const r = await h.dev(['up', '--accel', 'tcg']);
    assert.equal(r.code, 3, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`^Error: No dev image is installed for v${VERSION.replace(/\./g, '\\.')}$`, 'm'),
    );
    assert.deepEqual(server.requests, []);
    assert.deepEqual(processesMentioning(h.dir), []);
    assert.equal(existsSync(h.prebuilt), false);
  });
});
