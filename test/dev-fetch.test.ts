/**
 * `mvmctl dev fetch` (issue 10, SPEC.md section 11) against a real HTTP server on 127.0.0.1
 * serving test-PKI-signed release sets (test/support/release-server.ts), through the built CLI:
 * the transfer set it leaves, then `dev import-image --dir` of that set with no network at all;
 * resume with Range, servers that ignore Range, 5xx, silence, 404, redirects to another origin
 * (and the credential kept from it), tampering, a signature by another workflow, proxies from the
 * environment, offline refusal, an unusable --out, recalls, Ctrl-C, and the --json document.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { execFile } from 'node:child_process';
import { get as httpGet, type IncomingHttpHeaders } from 'node:http';
import { promisify } from 'node:util';
import { ERROR_TABLE } from '../src/errors.js';
import { CLI } from './support/cli.js';
import { HOST_ARCH, OTHER_ARCH, testHost, VERSION } from './support/host.js';
import { GITHUB_ISSUER, releaseIdentity, TestPki } from './support/pki.js';
import {
  ForwardProxy,
  onlineEnv,
  ReleaseServer,
  runMvm,
  spawnMvm,
  type RecordedRequest,
} from './support/release-server.js';
import {
  REPO,
  writeReleaseSet,
  writeRevocationList,
  type ReleaseFiles,
} from './support/release.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** The release file names of one arch. */
const names = (arch: string) => ({
  manifest: `dev-image-${arch}.manifest.json`,
  bundle: `dev-image-${arch}.manifest.json.bundle`,
  kernel: `dev-vmlinux-${arch}`,
  rootfs: `dev-rootfs-${arch}.ext4`,
  initrd: `dev-initrd-${arch}`,
});
const F = names(HOST_ARCH);
const LIST = 'revoked-versions.json';
const LIST_BUNDLE = 'revoked-versions.json.bundle';
const OLD_VERSION = '0.13.0';
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

let root: string;
let pki: TestPki;
let trustedRoot: string;
/** This version for the host arch, the other arch's set beside it in the same release. */
let set: ReleaseFiles;
let otherArchSet: ReleaseFiles;
/** An older release whose manifest lists an initrd. */
let oldSet: ReleaseFiles;
/** Revocation lists: one recalling nothing served here, one recalling this version. */
let listDir: string;
let recallDir: string;
let server: ReleaseServer;
let n = 0;

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'mvm-fetch-'));
  pki = await TestPki.create();
  trustedRoot = pki.writeTrustedRoot(root);
  const release = join(root, 'release', `v${VERSION}`);
  set = await writeReleaseSet(pki, release, { version: VERSION, arch: HOST_ARCH });
  otherArchSet = await writeReleaseSet(pki, release, { version: VERSION, arch: OTHER_ARCH });
  oldSet = await writeReleaseSet(pki, join(root, 'release', `v${OLD_VERSION}`), {
    version: OLD_VERSION,
    arch: HOST_ARCH,
    initrd: true,
  });
  listDir = join(root, 'lists', 'none');
  await writeRevocationList(pki, listDir, [{ version: '0.1.0' }]);
  recallDir = join(root, 'lists', 'recall');
  await writeRevocationList(pki, recallDir, [
    { version: '0.1.0' },
    { version: VERSION, arch: HOST_ARCH, reason: 'CVE-2026-4242: recalled for the test' },
  ]);
  server = await ReleaseServer.start({
    releases: { [VERSION]: release, [OLD_VERSION]: oldSet.dir },
  });
});

beforeEach(() => {
  server.reset();
  server.serveRevocations(listDir);
});

after(async () => {
  await server?.close();
  if (root) rmSync(root, { recursive: true, force: true });
});

/** A fresh host that may use the network (the loopback release location), and a DIR not yet made. */
function online(extra: Record<string, string> = {}) {
  const h = testHost(join(root, `host${n++}`), trustedRoot);
  const env = { ...h.env, ...onlineEnv(server.baseUrl), ...extra };
  const out = join(h.dir, 'transfer');
  return {
    ...h,
    env,
    out,
    /** `dev fetch --out {out}` plus `args`. */
    fetch: (args: string[] = [], more: Record<string, string> = {}) =>
      runMvm(['dev', 'fetch', '--out', out, ...args], { ...env, ...more }),
  };
}

const execFilePromise = promisify(execFile);
const ls = (dir: string): string[] => (existsSync(dir) ? readdirSync(dir).sort() : []);
const fileSha = (path: string) => sha256(readFileSync(path));
const artifactNames = (arch = HOST_ARCH) => [
  names(arch).kernel,
  names(arch).rootfs,
  names(arch).initrd,
];
const artifactRequests = (): RecordedRequest[] =>
  server.requests.filter((r) => artifactNames().includes(r.name));

/** DIR holds exactly this set (manifest, bundle, artifacts) plus `extra`, byte for byte, and no partial. */
function assertTransferSet(dir: string, s: ReleaseFiles, extra: string[] = [LIST, LIST_BUNDLE]) {
  const arch = String(s.manifestJson['arch']);
  const f = names(arch);
  const expected = [f.manifest, f.bundle, f.kernel, f.rootfs, ...(s.initrd ? [f.initrd] : [])];
  assert.deepEqual(ls(dir), [...expected, ...extra].sort());
  for (const name of expected)
    assert.equal(fileSha(join(dir, name)), fileSha(join(s.dir, name)), `${name} as served`);
}

/** The rootfs was resumed: a request carried `Range: bytes=N-` with 0 < N and the server honoured it or not. */
function rangeRequests(name = F.rootfs): RecordedRequest[] {
  return server.requestsFor(name).filter((r) => /^bytes=[1-9]\d*-$/.test(r.range ?? ''));
}

/** Writes `NAME.partial` in DIR as an earlier, interrupted fetch would have left it. */
function leavePartial(dir: string, name: string, bytes: Uint8Array): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${name}.partial`), bytes);
}

/** `dev import-image --dir` on a fresh host with no network namespace at all (the air-gapped host). */
async function importAirGapped(dir: string) {
  const h = testHost(join(root, `host${n++}`), trustedRoot);
  // Not told it is offline: with no network at all it must still need nothing but DIR.
  const r = await runMvm(
    ['dev', 'import-image', '--dir', dir],
    { ...h.env, ...onlineEnv(server.baseUrl) },
    { wrapper: ['unshare', '-n', '--'] },
  );
  return { ...r, host: h };
}

const flipped = (b: Buffer, at = Math.floor(b.length / 2)): Buffer => {
  const copy = Buffer.from(b);
  copy[at] = copy[at]! ^ 0xff;
  return copy;
};

describe('dev fetch: the transfer set', () => {
  it('happy path: the small signed files first, then the artifacts; the set (with the revocation pair) imports under unshare -n', async () => {
    const h = online();
    const r = await h.fetch();
    assert.equal(r.code, 0, r.stderr);
    assertTransferSet(h.out, set);
    assert.deepEqual(readFileSync(join(h.out, LIST)), readFileSync(join(listDir, LIST)));
    assert.deepEqual(
      readFileSync(join(h.out, LIST_BUNDLE)),
      readFileSync(join(listDir, LIST_BUNDLE)),
    );

    // The four small files are requested together; no artifact before all of them
    // (the manifest's signature is verified before any large request).
    const order = server.requests.map((q) => q.name);
    const firstArtifact = order.findIndex((x) => artifactNames().includes(x));
    assert.deepEqual(
      order.slice(0, 4).sort(),
      [F.manifest, F.bundle, LIST, LIST_BUNDLE].sort(),
      order.join(' '),
    );
    assert.equal(firstArtifact, 4, order.join(' '));
    for (const name of [F.manifest, F.bundle, F.kernel, F.rootfs, LIST, LIST_BUNDLE])
      assert.ok(order.includes(name), `requested ${name}: ${order.join(' ')}`);
    assert.ok(!order.includes(F.initrd), 'no initrd: the manifest does not list one');
    assert.ok(!order.some((x) => x.includes(OTHER_ARCH)), 'nothing of the other arch');
    for (const q of server.requests) assert.equal(q.method, 'GET');

    // The summary: what is in DIR, the signer, and the air-gapped host's commands.
    for (const name of [F.manifest, F.bundle, F.kernel, F.rootfs, LIST, LIST_BUNDLE])
      assert.ok(r.stdout.includes(name), `the summary names ${name}:\n${r.stdout}`);
    assert.ok(r.stdout.includes(releaseIdentity(REPO, `v${VERSION}`)), r.stdout);
    assert.ok(r.stdout.includes(`mvmctl dev import-image --dir ${h.out}`), r.stdout);

    // The air-gapped host: no network at all; the set's pair is installed into its cache.
    const requestsBefore = server.requests.length;
    const imported = await importAirGapped(h.out);
    const airGapped = imported.host;
    assert.equal(imported.code, 0, imported.stderr);
    assert.ok(existsSync(join(airGapped.prebuilt, `v${VERSION}`, 'receipt.json')));
    assert.deepEqual(
      readFileSync(join(airGapped.revocations, LIST)),
      readFileSync(join(listDir, LIST)),
      'the set carried its revocation list into the cache',
    );
    assert.ok(existsSync(join(airGapped.revocations, LIST_BUNDLE)));
    assert.equal(server.requests.length, requestsBefore);
  });

  it('a second fetch into a complete DIR re-verifies and downloads no artifact again', async () => {
    const h = online();
    assert.equal((await h.fetch()).code, 0);
    server.reset();
    const r = await h.fetch();
    assert.equal(r.code, 0, r.stderr);
    assertTransferSet(h.out, set);
    assert.ok(
      server.requestsFor(F.manifest).length > 0,
      'the manifest is fetched and verified again',
    );
    for (const name of artifactNames())
      assert.equal(server.bytesSentFor(name), 0, `${name} was sent again`);
  });

  it('--arch prepares the other arch; --version another release, with the initrd its manifest lists', async () => {
    const h = online();
    const r = await h.fetch(['--arch', OTHER_ARCH]);
    assert.equal(r.code, 0, r.stderr);
    assertTransferSet(h.out, otherArchSet);

    const h2 = online();
    const r2 = await h2.fetch(['--version', OLD_VERSION]);
    assert.equal(r2.code, 0, r2.stderr);
    assertTransferSet(h2.out, oldSet);
    assert.ok(server.requests.some((q) => q.path.endsWith(`/v${OLD_VERSION}/${F.initrd}`)));
  });

  it('no revocation list published (404): noted, not an error; the set carries none', async () => {
    server.serveRevocations(undefined);
    const h = online();
    const r = await h.fetch();
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr + r.stdout, /no revocation list/i);
    assertTransferSet(h.out, set, []);
  });

  it('the revocation list and its bundle are requested together: the bundle while the list is still coming', async () => {
    server.set(LIST, { stallAfter: 10 });
    const h = online();
    const fetching = h.fetch();
    const bundleAsked = async (): Promise<boolean> => {
      for (let i = 0; i < 100; i++) {
        if (server.requests.some((q) => q.name === LIST_BUNDLE)) return true;
        await new Promise((r) => setTimeout(r, 50));
      }
      return false;
    };
    const together = await bundleAsked();
    server.release(LIST);
    const r = await fetching;
    assert.ok(together, 'the bundle was requested while the list was stalled');
    assert.equal(r.code, 0, r.stderr);
    assertTransferSet(h.out, set);
  });

  it('a revocation list published without its bundle: exit 16 naming the bundle URL; nothing large requested', async () => {
    server.set(LIST_BUNDLE, { notFound: true });
    const h = online();
    const r = await h.fetch();
    assert.equal(r.code, 16, r.stderr);
    assert.match(r.stderr, new RegExp(`GET \\S+/${LIST_BUNDLE.replaceAll('.', '\\.')}: HTTP 404`));
    assert.match(r.stderr, /no revocation list bundle at this URL/);
    const names = server.requests.map((q) => q.name);
    assert.ok(!names.some((x) => artifactNames().includes(x)), names.join(' '));
  });
});

describe('dev fetch: transfers that survive real networks', () => {
  it('a connection cut mid-rootfs is resumed with Range in the same run: about one rootfs sent', async () => {
    const size = set.rootfsBytes.length;
    server.set(F.rootfs, { cut: { bytes: Math.floor(size / 2) } });
    const h = online();
    const r = await h.fetch();
    assert.equal(r.code, 0, r.stderr);
    assertTransferSet(h.out, set);
    const resumed = rangeRequests();
    assert.ok(resumed.length > 0, 'a request carried Range: bytes=N-');
    assert.equal(resumed[0]!.status, 206);
    const offset = Number(/^bytes=(\d+)-$/.exec(resumed[0]!.range!)![1]);
    assert.ok(offset <= Math.floor(size / 2), `resumed at ${offset}, past what was sent`);
    const sent = server.bytesSentFor(F.rootfs);
    assert.ok(sent < 1.5 * size, `${sent} rootfs bytes sent for a ${size}-byte rootfs`);
  });

  it('a server that ignores Range after a cut: the rootfs restarts cleanly, no byte duplicated', async () => {
    server.set(F.rootfs, { cut: { bytes: 300_000 }, ignoreRange: true });
    const h = online();
    const r = await h.fetch();
    assert.equal(r.code, 0, r.stderr);
    assertTransferSet(h.out, set);
    assert.equal(statSync(join(h.out, F.rootfs)).size, set.rootfsBytes.length);
    assert.ok(rangeRequests().length > 0, 'the retry asked for a range');
    assert.equal(rangeRequests()[0]!.status, 200, 'and got the whole file');
  });

  it('a rootfs served with chunked transfer coding (no Content-Length) is fetched and its digest verified', async () => {
    server.set(F.rootfs, { chunked: true });
    const h = online();
    const r = await h.fetch();
    assert.equal(r.code, 0, r.stderr);
    assertTransferSet(h.out, set);
    assert.deepEqual(
      server.requestsFor(F.rootfs).map((q) => [q.status, q.bytesSent, q.incomplete]),
      [[200, set.rootfsBytes.length, false]],
      'one whole response, no retry',
    );
    // The server really framed it with chunks: the client had no length to go by.
    const framing = await new Promise<IncomingHttpHeaders>((resolve, reject) =>
      httpGet(server.url(VERSION, F.rootfs), (res) => {
        res.resume();
        res.on('end', () => resolve(res.headers)).on('error', reject);
      }).on('error', reject),
    );
    assert.equal(framing['transfer-encoding'], 'chunked');
    assert.equal(framing['content-length'], undefined);
  });

  for (const c of [
    { what: 'honoured (206): only the rest is sent', knobs: {}, status: 206 },
    { what: 'ignored (200): restarted from 0', knobs: { ignoreRange: true }, status: 200 },
  ]) {
    it(`a .partial left by an earlier run is resumed with Range, ${c.what}`, async () => {
      const h = online();
      const half = Math.floor(set.rootfsBytes.length / 2);
      leavePartial(h.out, F.rootfs, set.rootfsBytes.subarray(0, half));
      server.set(F.rootfs, c.knobs);
      const r = await h.fetch();
      assert.equal(r.code, 0, r.stderr);
      assertTransferSet(h.out, set);
      const [first] = server.requestsFor(F.rootfs);
      assert.equal(first?.range, `bytes=${half}-`);
      assert.equal(first?.status, c.status);
      if (c.status === 206)
        assert.equal(server.bytesSentFor(F.rootfs), set.rootfsBytes.length - half);
    });
  }

  it('a .partial longer than the file (416): restarted from 0, the file right', async () => {
    const h = online();
    leavePartial(h.out, F.rootfs, Buffer.alloc(set.rootfsBytes.length + 10, 0x41));
    const r = await h.fetch();
    assert.equal(r.code, 0, r.stderr);
    assertTransferSet(h.out, set);
    assert.deepEqual(
      server.requestsFor(F.rootfs).map((q) => q.status),
      [416, 200],
    );
  });

  it('5xx twice, then success: retried (manifest and rootfs)', async () => {
    server.set(F.manifest, { fail: { status: 500, times: 2 } });
    server.set(F.rootfs, { fail: { status: 503, times: 2 } });
    const h = online();
    const r = await h.fetch();
    assert.equal(r.code, 0, r.stderr);
    assertTransferSet(h.out, set);
    assert.deepEqual(
      server.requestsFor(F.manifest).map((q) => q.status),
      [500, 500, 200],
    );
    assert.deepEqual(
      server.requestsFor(F.rootfs).map((q) => q.status),
      [503, 503, 200],
    );
  });

  it('a 5xx that persists: exit 16 after 4 attempts, naming the URL and the status', async () => {
    server.set(F.manifest, { fail: { status: 503, times: 1000 } });
    const h = online();
    const r = await h.fetch();
    assert.equal(r.code, 16, r.stderr);
    assert.match(r.stderr, new RegExp(escape(server.url(VERSION, F.manifest))));
    assert.match(r.stderr, /503/);
    assert.equal(server.requestsFor(F.manifest).length, 4);
    assert.equal(artifactRequests().length, 0);
  });

  it('a server that never answers (MVM_HTTP_TIMEOUT_SECONDS=1): exit 16 in bounded time, naming the URL', async () => {
    server.set(F.manifest, { hang: true });
    const h = online({ MVM_HTTP_TIMEOUT_SECONDS: '1' });
    const r = await h.fetch();
    assert.equal(r.code, 16, r.stderr);
    assert.ok(r.ms < 60_000, `ended after ${r.ms} ms`);
    assert.match(r.stderr, new RegExp(escape(server.url(VERSION, F.manifest))));
    assert.equal(artifactRequests().length, 0);
  });

  it('a manifest trickled one byte every 300 ms (MVM_HTTP_TIMEOUT_SECONDS=1): one deadline for the whole document, exit 16', async () => {
    server.set(F.manifest, { trickle: { everyMs: 300 } });
    const h = online({ MVM_HTTP_TIMEOUT_SECONDS: '1' });
    const r = await h.fetch();
    assert.equal(r.code, 16, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `Online fetch failed: GET ${escape(server.url(VERSION, F.manifest))}: no answer within 1 s`,
      ),
    );
    // The idle timeout alone never fires: bytes keep coming. Each attempt ends at its deadline.
    for (const req of server.requestsFor(F.manifest))
      assert.ok(req.bytesSent < 10, `${req.bytesSent} bytes`);
    assert.equal(artifactRequests().length, 0);
  });

  it('a rootfs body that goes silent (MVM_HTTP_TIMEOUT_SECONDS=1): exit 16 in bounded time, no final rootfs', async () => {
    server.set(F.rootfs, { stallAfter: 100_000 });
    const h = online({ MVM_HTTP_TIMEOUT_SECONDS: '1' });
    const r = await h.fetch();
    assert.equal(r.code, 16, r.stderr);
    assert.ok(r.ms < 60_000, `ended after ${r.ms} ms`);
    assert.match(r.stderr, new RegExp(escape(server.url(VERSION, F.rootfs))));
    assert.ok(!ls(h.out).includes(F.rootfs));
  });

  it('a 404 manifest: exit 16 naming the URL tried; DIR holds nothing new', async () => {
    server.set(F.manifest, { notFound: true });
    const h = online();
    mkdirSync(h.out, { recursive: true });
    writeFileSync(join(h.out, 'notes.txt'), 'the operator was here\n');
    const r = await h.fetch();
    assert.equal(r.code, 16, r.stderr);
    // The first line carries the wording every network failure carries, then the URL tried.
    assert.match(r.stderr, /^Error: Online fetch failed: GET \S+: HTTP 404$/m);
    assert.match(r.stderr, new RegExp(escape(server.url(VERSION, F.manifest))));
    assert.deepEqual(ls(h.out), ['notes.txt']);
    // Only small files were asked for (the four are requested together), no artifact.
    const asked = new Set(server.requests.map((q) => q.name));
    assert.ok(asked.has(F.manifest));
    for (const name of asked) {
      assert.ok([F.manifest, F.bundle, LIST, LIST_BUNDLE].includes(name), `requested ${name}`);
    }
  });

  it('a cross-origin redirect is followed; MVM_RELEASE_TOKEN reaches the first origin only', async () => {
    const token = 'tok-4b1d-secret';
    const mirror = await ReleaseServer.start({
      prefix: '/objects/dl',
      releases: { [VERSION]: set.dir },
    });
    try {
      for (const name of [F.manifest, F.bundle, F.kernel, F.rootfs])
        server.set(name, { redirectTo: mirror.baseUrl });
      const h = online({ MVM_RELEASE_TOKEN: token });
      const r = await h.fetch();
      assert.equal(r.code, 0, r.stderr);
      assertTransferSet(h.out, set);

      for (const name of [F.manifest, F.bundle, F.kernel, F.rootfs]) {
        const first = server.requestsFor(name);
        assert.ok(first.length > 0 && first.every((q) => q.status === 302), name);
        for (const q of first)
          assert.equal(q.authorization, `Bearer ${token}`, `${name} at the first origin`);
        assert.ok(
          mirror.requestsFor(name).some((q) => q.status === 200),
          `${name} from the mirror`,
        );
      }
      for (const q of mirror.requests) {
        assert.equal(
          q.authorization,
          undefined,
          `${q.path}: Authorization sent to the other origin`,
        );
        assert.ok(
          !JSON.stringify(q.headers).includes(token),
          `${q.path}: the token in another header`,
        );
      }
    } finally {
      await mirror.close();
    }
  });

  it('MVM_RELEASE_TOKEN with a line break: refused before any request, the value not shown', async () => {
    const h = online({ MVM_RELEASE_TOKEN: 'tok-9c2e\r\nx-injected: 1' });
    const r = await h.fetch();
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /MVM_RELEASE_TOKEN holds a space, a line break/);
    assert.doesNotMatch(r.stderr + r.stdout, /tok-9c2e/);
    assert.deepEqual(server.requests, []);
  });

  it('a redirect loop: exit 16 after a bounded number of redirects', async () => {
    const mirror = await ReleaseServer.start({ prefix: '/loop' });
    try {
      server.set(F.manifest, { redirectTo: mirror.baseUrl });
      mirror.set(F.manifest, { redirectTo: server.baseUrl });
      const r = await online().fetch();
      assert.equal(r.code, 16, r.stderr);
      assert.match(r.stderr, /redirect/i);
      assert.ok(server.requests.length + mirror.requests.length <= 4 * 6);
    } finally {
      await mirror.close();
    }
  });

  it('HTTP_PROXY from the environment carries the requests; NO_PROXY exempts the host', async () => {
    const proxy = await ForwardProxy.start();
    try {
      const via = { HTTP_PROXY: proxy.url, http_proxy: proxy.url, HTTPS_PROXY: proxy.url };
      const h = online(via);
      const r = await h.fetch();
      assert.equal(r.code, 0, r.stderr);
      assertTransferSet(h.out, set);
      assert.ok(proxy.to(server.authority).length > 0, JSON.stringify(proxy.requests));
      // Every request, the large files included, came over the proxy's connections.
      assert.ok(server.requestsFor(F.rootfs).length > 0);
      for (const q of server.requests) assert.ok(proxy.relayed(q), `${q.path} bypassed the proxy`);

      proxy.requests.length = 0;
      const before = server.requests.length;
      const h2 = online({ ...via, NO_PROXY: '127.0.0.1', no_proxy: '127.0.0.1' });
      const r2 = await h2.fetch();
      assert.equal(r2.code, 0, r2.stderr);
      assert.deepEqual(proxy.requests, []);
      assert.ok(server.requests.length > before);
      assert.ok(server.requests.slice(before).every((q) => !proxy.relayed(q)));
    } finally {
      await proxy.close();
    }
  });
});

describe('dev fetch: behind a proxy that refuses, or a server that sends too much', () => {
  /** CONNECTs per refusal status, to compare what is retried with what is not. */
  const tunnels = new Map<number, number>();
  for (const [status, fix] of [
    [407, /credentials: put them in its URL/],
    [403, /does not allow this destination/],
    [503, /Check the proxy/],
  ] as const) {
    it(`a CONNECT answered ${status}: exit 16 naming the proxy's answer, not an interruption`, async () => {
      const proxy = await ForwardProxy.start({ refuseConnect: status });
      try {
        const via = { HTTP_PROXY: proxy.url, http_proxy: proxy.url, HTTPS_PROXY: proxy.url };
        const r = await online(via).fetch();
        assert.equal(r.code, 16, r.stderr);
        assert.match(r.stderr, new RegExp(`the proxy refused the connection \\(HTTP ${status}\\)`));
        assert.doesNotMatch(r.stderr, /interrupted/);
        assert.match(r.stderr, fix);
        tunnels.set(status, proxy.requests.filter((q) => q.method === 'CONNECT').length);
        // 5xx is retried like a server's; 407 and 403 will not change, and are not.
        if (status === 503)
          assert.ok(tunnels.get(503)! > tunnels.get(407)!, JSON.stringify([...tunnels]));
      } finally {
        await proxy.close();
      }
    });
  }

  it('a kernel far over its size, through the proxy: refused at the response head, its body not read', async () => {
    const proxy = await ForwardProxy.start();
    try {
      server.set(F.kernel, { body: Buffer.alloc(256 * 1024 * 1024, 1) });
      const via = { HTTP_PROXY: proxy.url, http_proxy: proxy.url, HTTPS_PROXY: proxy.url };
      const r = await online({ ...via, MVM_MAX_KERNEL_BYTES: String(16 * 1024 * 1024) }).fetch();
      assert.notEqual(r.code, 0, r.stderr);
      assert.match(r.stderr, /larger than/);
      const sent = server.bytesSentFor(F.kernel);
      assert.ok(sent < 32 * 1024 * 1024, `${sent} bytes of the kernel were sent`);
    } finally {
      await proxy.close();
    }
  });
});

describe('dev fetch: refusals and failures', () => {
  it('MVM_OFFLINE=1 or --offline: exit 16 at once, no request made', async () => {
    const h = online();
    for (const [args, env] of [
      [[], { MVM_OFFLINE: '1' }],
      [['--offline'], {}],
    ] as const) {
      const r = await h.fetch([...args], env);
      assert.equal(r.code, 16, r.stderr);
      assert.match(r.stderr, /offline/i);
      assert.deepEqual(server.requests, []);
      assert.deepEqual(ls(h.out), []);
    }
  });

  it('--out naming a regular file: exit 3, the file untouched', async () => {
    const h = online();
    const file = join(h.dir, 'not-a-dir');
    mkdirSync(h.dir, { recursive: true });
    writeFileSync(file, 'precious\n');
    const r = await runMvm(['dev', 'fetch', '--out', file], h.env);
    assert.equal(r.code, 3, r.stderr);
    assert.equal(readFileSync(file, 'utf8'), 'precious\n');
    assert.equal(artifactRequests().length, 0);
  });

  for (const role of ['kernel', 'rootfs'] as const) {
    it(`a tampered ${role} on the server: exit 14, no final-named ${role} and no ${role} .partial`, async () => {
      const name = F[role];
      server.set(name, { body: flipped(role === 'kernel' ? set.kernelBytes : set.rootfsBytes) });
      const h = online();
      const r = await h.fetch();
      assert.equal(r.code, 14, r.stderr);
      assert.match(r.stderr, new RegExp(`${role} SHA-256 mismatch`));
      assert.ok(!ls(h.out).includes(name), ls(h.out).join(' '));
      assert.ok(!ls(h.out).includes(`${name}.partial`), ls(h.out).join(' '));
    });
  }

  it('a .partial from an earlier run that is not a prefix of the file: exit 14, deleted; the next fetch succeeds', async () => {
    const h = online();
    leavePartial(h.out, F.rootfs, Buffer.alloc(200_000, 0x42));
    const r = await h.fetch();
    assert.equal(r.code, 14, r.stderr);
    assert.match(r.stderr, /rootfs SHA-256 mismatch/);
    assert.ok(!ls(h.out).some((f) => f.startsWith(F.rootfs)), ls(h.out).join(' '));
    const again = await h.fetch();
    assert.equal(again.code, 0, again.stderr);
    assertTransferSet(h.out, set);
  });

  it('a revocation list not signed by the revocations workflow: exit 10, no artifact requested', async () => {
    const forged = join(root, `forged${n++}`);
    await writeRevocationList(pki, forged, [], { identity: releaseIdentity(REPO, `v${VERSION}`) });
    server.serveRevocations(forged);
    const h = online();
    const r = await h.fetch();
    assert.equal(r.code, 10, r.stderr);
    assert.deepEqual(artifactRequests(), []);
    assert.ok(!ls(h.out).includes(LIST), 'the forged list is not carried');
  });

  it('a manifest signed by another workflow: exit 10 before any artifact is requested', async () => {
    const other = await pki.signBlob(readFileSync(set.manifest), {
      identity: `https://github.com/${REPO}/.github/workflows/evil.yml@refs/tags/v${VERSION}`,
    });
    server.set(F.bundle, { body: Buffer.from(JSON.stringify(other)) });
    const h = online();
    const r = await h.fetch();
    assert.equal(r.code, 10, r.stderr);
    assert.match(r.stderr, /evil\.yml/);
    assert.deepEqual(artifactRequests(), [], 'no kernel, rootfs or initrd request');
    assert.ok(!ls(h.out).some((f) => artifactNames().some((a) => f.startsWith(a))));
  });

  it('a trusted root that lacks the log: the cause says so (not tampering), no artifact requested', async () => {
    const stranger = await TestPki.create();
    const h = online({ MVM_TRUSTED_ROOT: stranger.writeTrustedRoot(join(root, `stranger${n++}`)) });
    const r = await h.fetch();
    assert.equal(r.code, 10, r.stderr);
    assert.match(
      r.stderr,
      /^Error: Cosign verification failed for the imported manifest: .*\(downloaded from http/m,
    );
    assert.match(r.stderr, /does not know the transparency log/);
    assert.match(r.stderr, /MVM_TRUSTED_ROOT/);
    assert.doesNotMatch(r.stderr, /tampered/);
    assert.deepEqual(artifactRequests(), []);
  });

  it('a manifest signed at another tag: exit 10, no artifact requested', async () => {
    const h = online();
    const wrongTag = await writeReleaseSet(pki, join(h.dir, 'wrong-tag'), {
      version: VERSION,
      arch: HOST_ARCH,
      tag: 'v0.0.1',
    });
    server.set(F.manifest, { body: readFileSync(wrongTag.manifest) });
    server.set(F.bundle, { body: readFileSync(wrongTag.bundle) });
    const r = await h.fetch();
    assert.equal(r.code, 10, r.stderr);
    assert.deepEqual(artifactRequests(), []);
  });

  it("another arch's signed manifest under this arch's name: the arch error, no artifact requested", async () => {
    // Signed by the release workflow at the right tag: only its arch field is wrong.
    server.set(F.manifest, { body: readFileSync(otherArchSet.manifest) });
    server.set(F.bundle, { body: readFileSync(otherArchSet.bundle) });
    const h = online();
    const r = await h.fetch();
    assert.equal(r.code, ERROR_TABLE.arch.exit, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`^Error: The manifest is for arch ${OTHER_ARCH}, not ${HOST_ARCH}$`, 'm'),
    );
    const large = [...artifactNames(), ...artifactNames(OTHER_ARCH)];
    assert.deepEqual(
      server.requests.filter((q) => large.includes(q.name)),
      [],
      'no kernel, rootfs or initrd of either arch',
    );
  });

  it('a recalled version: exit 13 before the artifacts; --allow-recalled fetches with a warning', async () => {
    server.serveRevocations(recallDir);
    const h = online();
    const r = await h.fetch();
    assert.equal(r.code, 13, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `on the project's revocation list: ${escape(VERSION)} dev ${HOST_ARCH} was recalled: CVE-2026-4242: recalled for the test`,
      ),
    );
    assert.doesNotMatch(r.stderr, /not recalled/, 'no line says the opposite');
    assert.deepEqual(artifactRequests(), []);
    assert.ok(!ls(h.out).includes(F.rootfs));

    const allowed = await h.fetch(['--allow-recalled']);
    assert.equal(allowed.code, 0, allowed.stderr);
    assert.match(allowed.stderr, /warning/i);
    assert.match(allowed.stderr, /CVE-2026-4242/);
    assertTransferSet(h.out, set);
    assert.deepEqual(readFileSync(join(h.out, LIST)), readFileSync(join(recallDir, LIST)));

    // The list the set carries is installed before the recall check: the air-gapped import refuses.
    const imported = await importAirGapped(h.out);
    assert.equal(imported.code, 13, imported.stderr);
    assert.match(imported.stderr, /CVE-2026-4242/);
    assert.equal(existsSync(join(imported.host.prebuilt, `v${VERSION}`)), false);
  });

  it('Ctrl-C mid-rootfs: exit 130, a resumable .partial and no final rootfs; the next fetch resumes with Range', async () => {
    server.set(F.rootfs, { stallAfter: 400_000 });
    const h = online();
    const run = spawnMvm(['dev', 'fetch', '--out', h.out], h.env);
    await server.stalled(F.rootfs);
    const partial = join(h.out, `${F.rootfs}.partial`);
    // Interrupted while the server holds the rest: what was received is written out on the way out.
    run.child.kill('SIGINT');
    const ended = await run.result();
    assert.equal(ended.code, 130, `${ended.signal ?? ''} ${ended.stderr}`);
    assert.ok(!ls(h.out).includes(F.rootfs), 'no rootfs under its final name');
    assert.ok(existsSync(partial), ls(h.out).join(' '));
    const kept = statSync(partial).size;
    assert.ok(kept > 0 && kept <= 400_000, `${kept} bytes kept: what the server sent, no more`);
    assert.deepEqual(
      readFileSync(partial),
      set.rootfsBytes.subarray(0, kept),
      'the partial is a prefix of the file',
    );

    server.reset();
    const r = await h.fetch();
    assert.equal(r.code, 0, r.stderr);
    assertTransferSet(h.out, set);
    assert.equal(server.requestsFor(F.rootfs)[0]?.range, `bytes=${kept}-`);
    assert.equal(server.bytesSentFor(F.rootfs), set.rootfsBytes.length - kept);
  });
});

describe('dev fetch on a terminal', () => {
  it('draws a progress bar with bytes, rate and time left on stderr, then the summary', async () => {
    const h = online();
    // script(1) gives the command a pseudo-terminal, as an operator's shell would.
    const cmd = [process.execPath, CLI, 'dev', 'fetch', '--out', h.out]
      .map((w) => `'${w.replace(/'/g, `'\\''`)}'`)
      .join(' ');
    const r = await execFilePromise('script', ['-qefc', cmd, '/dev/null'], {
      env: { ...process.env, ...h.env },
    });
    assert.match(r.stdout, /downloading \[[# ]*\] +\d+%/);
    assert.match(r.stdout, /\d+(\.\d)? [KMG]?i?B\/s +ETA /);
    assert.match(r.stdout, /Transfer set for mvmctl/);
  });

  it('prints no progress when stderr is not a terminal', async () => {
    const r = await online().fetch();
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /downloading \[|ETA/);
  });
});

describe('dev fetch --json', () => {
  it('one object: version, arch, dir, files, signer, revocations, next', async () => {
    const h = online();
    const r = await h.fetch(['--json']);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 1, r.stdout);
    const doc = JSON.parse(lines[0]!) as Json;
    assert.doesNotMatch(r.stderr, /✓|%/, 'no progress or steps with --json');
    assert.equal(doc['version'], VERSION);
    assert.equal(doc['arch'], HOST_ARCH);
    assert.equal(realpathSync(doc['dir']), realpathSync(h.out));
    const files = doc['files'] as { name: string; bytes: number; sha256: string }[];
    for (const name of [F.manifest, F.bundle, F.kernel, F.rootfs])
      assert.ok(
        files.some((f) => f.name === name),
        `${name} listed`,
      );
    for (const f of files) {
      const bytes = readFileSync(join(h.out, f.name));
      assert.equal(f.bytes, bytes.length, f.name);
      assert.equal(f.sha256, sha256(bytes), f.name);
    }
    assert.equal(doc['signer'].identity, releaseIdentity(REPO, `v${VERSION}`));
    assert.equal(doc['signer'].issuer, GITHUB_ISSUER);
    assert.match(String(doc['signer'].logIndex), /^\d+$/);
    assert.deepEqual(doc['revocations'], { state: 'fetched', entries: 1 });
    const next = doc['next'] as string[];
    assert.ok(Array.isArray(next) && next.length > 0);
    assert.ok(next.includes(`mvmctl dev import-image --dir ${h.out}`), next.join('\n'));
  });

  it('no revocation list published: revocations.state "none"', async () => {
    server.serveRevocations(undefined);
    const r = await online().fetch(['--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((JSON.parse(r.stdout) as Json)['revocations'], { state: 'none', entries: 0 });
  });

  it('an error: one object with error {code, message, cause, fix, exitCode}', async () => {
    server.set(F.manifest, { notFound: true });
    const r = await online().fetch(['--json']);
    assert.equal(r.code, 16, r.stderr);
    const doc = JSON.parse(r.stdout) as Json;
    assert.deepEqual(Object.keys(doc), ['error']);
    assert.equal(doc['error'].code, 'network');
    assert.equal(doc['error'].exitCode, 16);
    assert.ok(String(doc['error'].message).includes(server.url(VERSION, F.manifest)));
    assert.equal(typeof doc['error'].fix, 'string');
    assert.ok('cause' in doc['error']);
  });
});
