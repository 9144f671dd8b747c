/**
 * The revocation list lifecycle (issue 4) against a real HTTP server on
 * 127.0.0.1 serving test-PKI-signed lists, driven through the CLI: what is
 * enforced, what is cached, the counters and the message, for each way the
 * network can behave.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  statSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  utimesSync,
  existsSync,
} from 'node:fs';
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { HOST_ARCH, OTHER_ARCH, testHost, VERSION } from './support/host.js';
import { ForwardProxy } from './support/release-server.js';
import { selfSignedTlsCertificate, TestPki } from './support/pki.js';
import {
  REPO,
  writeReleaseSet,
  writeRevocationList,
  type ReleaseFiles,
  type RevocationEntry,
} from './support/release.js';

let root: string;
let pki: TestPki;
let trustedRoot: string;
let good: ReleaseFiles;
let n = 0;

/** What the release server serves, and how. */
const served: {
  json?: Buffer;
  bundle?: Buffer;
  mode: 'ok' | '404' | '500' | 'hang' | 'short-body' | 'oversized' | 'redirect';
  requests: string[];
  /** Called with each request's number (1-based) before it is answered: a test's signal. */
  onRequest?: (count: number) => void;
} = {
  mode: 'ok',
  requests: [],
};
let server: Server;
let baseUrl: string;
/** Another origin (another port), where 'redirect' mode sends every request. */
let otherOrigin: Server;
let otherOriginUrl: string;
const otherOriginRequests: { url: string; headers: IncomingHttpHeaders }[] = [];
/** The same release server over TLS (a certificate for 127.0.0.1 made by openssl), for HTTPS_PROXY. */
let tlsServer: Server;
let tlsBaseUrl: string;
let tlsCa: string;
let proxy: ForwardProxy;
let proxyUrl: string;
/** Requests the proxy carried (tunnelled or forwarded), across the suite. */
const proxied = (): number => proxy.requests.length;

function release(req: IncomingMessage, res: ServerResponse): void {
  served.requests.push(req.url ?? '');
  served.onRequest?.(served.requests.length);
  const body = req.url?.endsWith('/revocations/revoked-versions.json')
    ? served.json
    : req.url?.endsWith('/revocations/revoked-versions.json.bundle')
      ? served.bundle
      : undefined;
  if (served.mode === 'hang') return; // never answer
  if (served.mode === '500') return void res.writeHead(500).end('oops');
  if (served.mode === 'redirect')
    return void res.writeHead(302, { location: `${otherOriginUrl}${req.url}` }).end();
  if (served.mode === 'oversized') {
    // One byte more than a revocation list may be (MAX_LIST_BYTES, 4 MiB), no length announced.
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    return void res.end(Buffer.alloc(4 * 1024 * 1024 + 1, 0x20));
  }
  if (served.mode === '404' || !body) return void res.writeHead(404).end('not found');
  if (served.mode === 'short-body') {
    res.writeHead(200, { 'content-length': String(body.length) });
    res.write(body.subarray(0, body.length / 2));
    return void res.destroy(); // the connection drops mid-body
  }
  res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(body);
}

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'mvm-revocations-'));
  pki = await TestPki.create();
  trustedRoot = pki.writeTrustedRoot(root);
  good = await writeReleaseSet(pki, join(root, 'good'), { version: VERSION, arch: HOST_ARCH });
  server = createServer(release);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/releases/download`;
  otherOrigin = createServer((req, res) => {
    otherOriginRequests.push({ url: req.url ?? '', headers: req.headers });
    const body = req.url?.endsWith('.json')
      ? served.json
      : req.url?.endsWith('.bundle')
        ? served.bundle
        : undefined;
    if (!body) return void res.writeHead(404).end('not found');
    res.writeHead(200).end(body);
  });
  await new Promise<void>((r) => otherOrigin.listen(0, '127.0.0.1', r));
  otherOriginUrl = `http://127.0.0.1:${(otherOrigin.address() as AddressInfo).port}`;
  const tlsFiles = selfSignedTlsCertificate(root, '127.0.0.1', ['IP:127.0.0.1']);
  const key = tlsFiles.key;
  tlsCa = tlsFiles.cert;
  tlsServer = createHttpsServer({ key: readFileSync(key), cert: readFileSync(tlsCa) }, release);
  await new Promise<void>((r) => tlsServer.listen(0, '127.0.0.1', r));
  tlsBaseUrl = `https://127.0.0.1:${(tlsServer.address() as AddressInfo).port}/releases/download`;
  // A forward proxy, to check HTTP(S)_PROXY is honoured.
  proxy = await ForwardProxy.start();
  proxyUrl = proxy.url;
});
after(async () => {
  for (const s of [server, otherOrigin, tlsServer]) {
    s.closeAllConnections();
    s.close();
  }
  await proxy.close();
  rmSync(root, { recursive: true, force: true });
});
beforeEach(() => {
  served.mode = 'ok';
  served.requests = [];
  otherOriginRequests.length = 0;
  delete served.onRequest;
  delete served.json;
  delete served.bundle;
});

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** A host that may use the network: the loopback release server, a short timeout, no proxy. */
function host(extra: Record<string, string> = {}) {
  const h = testHost(join(root, `host${n++}`), trustedRoot);
  const env = {
    MVM_OFFLINE: '',
    MVM_RELEASE_BASE_URL: baseUrl,
    MVM_HTTP_TIMEOUT_SECONDS: '2',
    HTTP_PROXY: '',
    HTTPS_PROXY: '',
    http_proxy: '',
    https_proxy: '',
    NO_PROXY: '',
    no_proxy: '',
    ...extra,
  };
  return {
    ...h,
    run: (args: string[], more: Record<string, string> = {}) => h.run(args, { ...env, ...more }),
    importSet: (set: ReleaseFiles, flags: string[] = []) => h.importSet(set, flags, env),
    async status(): Promise<Json> {
      const r = await h.run(['revocations', 'status', '--json'], env);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout);
    },
  };
}
type Host = ReturnType<typeof host>;

/** A signed pair in a transfer folder, its bytes ready to serve. */
async function signedList(
  entries: RevocationEntry[],
  o: { identity?: string; certTime?: Date; rekorV2?: boolean } = {},
) {
  const pair = await writeRevocationList(pki, join(root, `list${n++}`), entries, o);
  return { ...pair, jsonBytes: readFileSync(pair.json), bundleBytes: readFileSync(pair.bundle) };
}

function serve(list: { jsonBytes: Buffer; bundleBytes: Buffer }): void {
  served.json = list.jsonBytes;
  served.bundle = list.bundleBytes;
}

/** Puts a verified pair in the cache with `revocations import`, then ages it. */
async function cache(
  h: Host,
  entries: RevocationEntry[],
  ageHours = 0,
  o: { certTime?: Date; rekorV2?: boolean } = {},
): Promise<void> {
  const list = await signedList(entries, o);
  const r = await h.run(['revocations', 'import', '--list', list.json, '--bundle', list.bundle], {
    MVM_OFFLINE: '1',
  });
  assert.equal(r.code, 0, r.stderr);
  if (ageHours) {
    const t = new Date(Date.now() - ageHours * 3600_000);
    utimesSync(join(h.revocations, 'revoked-versions.json'), t, t);
  }
}

const RECALL = { version: VERSION, arch: HOST_ARCH, reason: 'CVE-2026-7777: recalled upstream' };
const OLD = { version: '0.1.0' };

describe('revocations: refresh during dev import-image', () => {
  it('a fresh cache (under 24 h) makes no request', async () => {
    const h = host();
    await cache(h, [OLD]);
    serve(await signedList([OLD, RECALL]));
    const r = await h.importSet(good);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(served.requests, []);
  });

  it('a stale cache is refreshed, and the fetched recall is enforced', async () => {
    const h = host();
    await cache(h, [OLD], 30);
    serve(await signedList([OLD, RECALL]));
    const r = await h.importSet(good);
    assert.equal(r.code, 13, r.stderr);
    assert.match(
      r.stderr,
      /Imported manifest is on the project's revocation list: .*CVE-2026-7777/,
    );
    assert.equal(served.requests.length, 2);
    const s = await h.status();
    assert.equal(s.entries, 2);
    assert.equal(s.freshness, 'fresh');
  });

  it('HTTP(S)_PROXY is honoured', async () => {
    const h = host({ HTTP_PROXY: proxyUrl, http_proxy: proxyUrl });
    await cache(h, [OLD], 30);
    serve(await signedList([OLD]));
    const before = proxied();
    const r = await h.importSet(good);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(proxied() > before, 'the requests went through the proxy');
    assert.equal((await h.status()).freshness, 'fresh');
  });

  it('404: "no recalls today", nothing cached, the import proceeds', async () => {
    const h = host();
    served.mode = '404';
    const r = await h.importSet(good);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /no revocation list \(404\): no recalls today/);
    assert.equal((await h.status()).present, false);
    assert.equal((await h.metrics())['dev_image_verify_network_total'], 0);
  });

  it('404 while a cached list is held: the cached list is still enforced', async () => {
    const h = host();
    await cache(h, [OLD, RECALL], 30);
    served.mode = '404';
    const r = await h.importSet(good);
    assert.equal(r.code, 13, r.stderr);
    assert.equal(served.requests.length, 1);
  });

  it('500: a network failure, counted as such, and the cached list (under 7 days) is used with a note', async () => {
    const h = host();
    await cache(h, [OLD, RECALL], 30);
    served.mode = '500';
    const r = await h.importSet(good);
    assert.equal(r.code, 13, r.stderr);
    assert.match(
      r.stderr,
      /Could not refresh the revocation list \(Online fetch failed: GET .* answered HTTP 500\)/,
    );
    const m = await h.metrics();
    assert.equal(m['dev_image_verify_network_total'], 1);
    assert.equal(m['dev_image_verify_sig_invalid_total'], 0);
  });

  it('connection refused: counted, and with no list at all the import proceeds with a warning', async () => {
    const h = host({ MVM_RELEASE_BASE_URL: 'http://127.0.0.1:9/releases/download' });
    const r = await h.importSet(good);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      /Could not refresh the revocation list \(Online fetch failed: GET \S+: ECONNREFUSED\)/,
    );
    assert.match(r.stderr, /No revocation list is cached/);
    assert.equal((await h.metrics())['dev_image_verify_network_total'], 1);
  });

  it('a server that never answers costs a bounded time', async () => {
    // The bound is MVM_HTTP_TIMEOUT_SECONDS (2 s here): the error names it, so no clock is read.
    const h = host();
    await cache(h, [OLD], 30);
    served.mode = 'hang';
    const r = await h.importSet(good);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      /Could not refresh the revocation list \(Online fetch failed: GET \S+: no answer within 2 s\)/,
    );
    assert.equal(served.requests.length, 1);
    assert.equal((await h.metrics())['dev_image_verify_network_total'], 1);
  });

  it('a body cut short is a network failure; nothing is cached', async () => {
    const h = host();
    await cache(h, [OLD], 30);
    serve(await signedList([OLD, RECALL]));
    served.mode = 'short-body';
    const r = await h.importSet(good);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await h.status()).entries, 1);
    assert.equal((await h.metrics())['dev_image_verify_network_total'], 1);
  });

  it('MVM_OFFLINE=1 never makes a request, even with a stale cache', async () => {
    const h = host({ MVM_OFFLINE: '1' });
    await cache(h, [OLD], 30);
    serve(await signedList([OLD]));
    assert.equal((await h.importSet(good)).code, 0);
    assert.equal((await h.importSet(good, ['--offline'])).code, 0);
    assert.deepEqual(served.requests, []);
  });
});

describe('revocations: generations left behind', () => {
  it('are collected only when their writer is gone, nothing links them and a minute has passed', async () => {
    const h = host();
    await cache(h, [OLD]);
    const parent = join(h.revocations, '..');
    const gen = (pid: number) => join(parent, `.revocations-${pid}-${'0123456789abcdef'}`);
    const dead = 2147483646; // no such process
    const oldDead = gen(dead);
    const youngDead = join(parent, `.revocations-${dead}-fedcba9876543210`);
    const oldLive = gen(process.pid);
    for (const d of [oldDead, youngDead, oldLive]) mkdirSync(d);
    const old = new Date(Date.now() - 120_000);
    utimesSync(oldDead, old, old);
    utimesSync(oldLive, old, old);
    await cache(h, [OLD, RECALL]);
    assert.equal(
      existsSync(oldDead),
      false,
      'a dead writer, unlinked, over a minute old: collected',
    );
    assert.equal(existsSync(youngDead), true, 'a reader may still be inside a young one');
    assert.equal(existsSync(oldLive), true, 'its writer is alive');
    assert.equal((await h.status()).entries, 2, 'the linked generation is the new list');
  });
});

describe('revocations: the generation just replaced', () => {
  it('has its grace period restarted at the swap: a collection right after keeps it for readers inside it', async () => {
    const h = host();
    await cache(h, [OLD]);
    const first = realpathSync(h.revocations);
    // Written long ago by a writer that is gone: only the swap's fresh mtime protects it now.
    const old = new Date(Date.now() - 3600_000);
    utimesSync(first, old, old);
    await cache(h, [OLD, RECALL]);
    assert.notEqual(realpathSync(h.revocations), first);
    assert.equal(
      existsSync(first),
      true,
      'a reader that resolved the link just before may be inside it',
    );
    assert.ok(Date.now() - statSync(first).mtimeMs < 60_000, 'its mtime is the time of the swap');
    // Once its minute is over, the next swap collects it.
    utimesSync(first, old, old);
    await cache(h, [OLD, RECALL, { version: '0.2.0' }]);
    assert.equal(existsSync(first), false);
  });
});

describe('revocations: an audit record that cannot be written is never silent', () => {
  it('refresh still reports its outcome, and warns that the record was lost', async () => {
    const h = host();
    serve(await signedList([OLD]));
    // The audit log's path is taken by a directory: every append fails.
    mkdirSync(join(h.dir, 'data', 'telemetry', 'audit.jsonl'), { recursive: true });
    const r = await h.run(['revocations', 'refresh']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Refreshed the revocation list/);
    assert.match(
      r.stderr,
      /^warning: the audit record of this revocation refresh could not be written: /m,
    );
  });

  it('a failed revocations import warns too, and keeps its own error', async () => {
    const h = host();
    const wrong = await signedList([OLD], {
      identity: `https://github.com/${REPO}/.github/workflows/release.yml@refs/tags/v${VERSION}`,
    });
    mkdirSync(join(h.dir, 'data', 'telemetry', 'audit.jsonl'), { recursive: true });
    const r = await h.run([
      'revocations',
      'import',
      '--list',
      wrong.json,
      '--bundle',
      wrong.bundle,
    ]);
    assert.equal(r.code, 10, r.stderr);
    assert.match(
      r.stderr,
      /^warning: the audit record of this failed import could not be written: /m,
    );
  });
});

describe('revocations: a fetched list that fails is never cached or trusted', () => {
  async function refused(h: Host, expectWording: RegExp, counter?: string) {
    const before = await h.status();
    const r = await h.run(['revocations', 'refresh']);
    assert.equal(r.code, 10, r.stderr);
    assert.match(r.stderr, expectWording);
    const after = await h.status();
    assert.equal(after.entries, before.entries, 'the cached list is unchanged');
    assert.equal(after.modifiedAt, before.modifiedAt);
    if (counter) assert.equal((await h.metrics())[counter], 1);
    const audit = h.audit().filter((a) => a['event'] === 'revocations.refresh');
    assert.equal(audit.at(-1)!['outcome'], 'failed');
  }

  it('a list signed by the release identity instead of the revocations identity', async () => {
    const h = host();
    await cache(h, [OLD]);
    serve(
      await signedList([OLD], {
        identity: `https://github.com/${REPO}/.github/workflows/release.yml@refs/tags/v${VERSION}`,
      }),
    );
    await refused(
      h,
      /The fetched revocation list was refused: certificate identity/,
      'dev_image_verify_sig_invalid_total',
    );
  });

  it('a bundle for another list', async () => {
    const h = host();
    await cache(h, [OLD]);
    const a = await signedList([OLD, RECALL]);
    const b = await signedList([OLD, { version: '0.2.0' }]);
    serve({ jsonBytes: a.jsonBytes, bundleBytes: b.bundleBytes });
    await refused(
      h,
      /The fetched revocation list was refused/,
      'dev_image_verify_sig_invalid_total',
    );
  });

  it('a rollback: a genuine older list that drops a recall', async () => {
    const h = host();
    await cache(h, [OLD, RECALL]);
    serve(await signedList([OLD]));
    await refused(h, /refused: it drops recalls the cached list holds \(0\.\d+\.\d+ dev/);
    // The recall still applies.
    assert.equal((await h.importSet(good, ['--offline'])).code, 13);
  });

  it('a replayed older signing (same entries, signed earlier) is refused', async () => {
    const h = host();
    await cache(h, [OLD], 30, { certTime: new Date(pki.start.getTime() + 120_000) });
    serve(await signedList([OLD], { certTime: new Date(pki.start.getTime() + 1000) }));
    await refused(h, /it was signed at .*, before the list already trusted here/);
  });

  it('the signing time remembered is the latest seen: after t1 < t2, a list signed between them is refused', async () => {
    const h = host();
    const at = (s: number) => ({ certTime: new Date(pki.start.getTime() + s * 1000) });
    await cache(h, [OLD], 0, at(60));
    await cache(h, [OLD], 0, at(180));
    const between = await signedList([OLD], at(120));
    const r = await h.run([
      'revocations',
      'import',
      '--list',
      between.json,
      '--bundle',
      between.bundle,
    ]);
    assert.equal(r.code, 10, r.stderr);
    assert.match(
      r.stderr,
      /it was signed at (\S+), before the list already trusted here \((\S+)\)/,
    );
    const [, incoming, trusted] = /signed at (\S+), before .* here \((\S+)\)/.exec(r.stderr)!;
    assert.ok(incoming! < trusted!, `${incoming} < ${trusted}`);
    assert.equal(
      Date.parse(trusted!) - Date.parse(incoming!) >= 50_000,
      true,
      'trusted is t2, not t1',
    );
  });

  it('a replayed older Rekor v2 signing is refused by its timestamp-authority time', async () => {
    // Rekor v2 entries carry no signed entry timestamp: the verified RFC 3161 time is the signing time.
    const h = host();
    await cache(h, [OLD], 30, { certTime: new Date(pki.start.getTime() + 120_000), rekorV2: true });
    const bundle = JSON.parse(
      readFileSync(join(h.revocations, 'revoked-versions.json.bundle'), 'utf8'),
    );
    assert.equal(bundle.verificationMaterial.tlogEntries[0].integratedTime, '0');
    assert.equal(bundle.verificationMaterial.tlogEntries[0].kindVersion.version, '0.0.2');
    serve(
      await signedList([OLD], { certTime: new Date(pki.start.getTime() + 1000), rekorV2: true }),
    );
    await refused(h, /it was signed at .*, before the list already trusted here/);
  });

  it('a rollback through revocations import is refused too', async () => {
    const h = host();
    await cache(h, [OLD, RECALL]);
    const older = await signedList([OLD]);
    const r = await h.run([
      'revocations',
      'import',
      '--list',
      older.json,
      '--bundle',
      older.bundle,
    ]);
    assert.equal(r.code, 10, r.stderr);
    assert.match(r.stderr, /drops recalls/);
    assert.equal((await h.status()).entries, 2);
  });

  for (const [what, moved] of [
    ['variant', { ...RECALL, variant: 'builder' }],
    ['arch', { ...RECALL, arch: OTHER_ARCH }],
  ] as const) {
    it(`a list that moves a recall to another ${what} is a rollback`, async () => {
      // The recall key is (version, variant, arch): changing one part drops the recall.
      const h = host();
      await cache(h, [OLD, RECALL]);
      serve(await signedList([OLD, moved]));
      await refused(
        h,
        new RegExp(
          `refused: it drops recalls the cached list holds \\(${VERSION.replace(/\./g, '\\.')} dev ${HOST_ARCH}\\)`,
        ),
      );
      assert.equal((await h.importSet(good, ['--offline'])).code, 13);
    });
  }

  it('a list refused only because of the recalls remembered on this host', async () => {
    // The cache itself is gone: only recalls-seen.jsonl still knows the recall.
    const h = host();
    await cache(h, [OLD, RECALL]);
    rmSync(join(h.dir, 'cache'), { recursive: true, force: true });
    assert.equal((await h.status()).present, false);
    const older = await signedList([OLD]);
    serve(older);
    const want = new RegExp(
      `refused: it drops recalls verified on this host before \\(${VERSION.replace(/\./g, '\\.')} dev ${HOST_ARCH}\\)`,
    );
    await refused(h, want);
    const r = await h.run([
      'revocations',
      'import',
      '--list',
      older.json,
      '--bundle',
      older.bundle,
    ]);
    assert.equal(r.code, 10, r.stderr);
    assert.match(r.stderr, want);
    assert.equal((await h.status()).present, false, 'nothing was cached');
  });

  it('an unknown schema_version fails closed', async () => {
    const h = host();
    const dir = join(root, `schema${n++}`);
    mkdirSync(dir);
    const bytes = Buffer.from(JSON.stringify({ schema_version: 2, revocations: [] }));
    const bundle = await pki.signBlob(bytes, {
      identity: `https://github.com/${REPO}/.github/workflows/revocations.yml@refs/tags/revocations`,
    });
    served.json = bytes;
    served.bundle = Buffer.from(JSON.stringify(bundle));
    const r = await h.run(['revocations', 'refresh']);
    assert.equal(r.code, 15, r.stderr);
    assert.match(r.stderr, /schema_version 2 is newer than this mvmctl reads/);
    assert.equal((await h.status()).present, false);
  });
});

describe('revocations: commands', () => {
  it('refresh installs the fetched pair; status reports it; --json works', async () => {
    const h = host();
    serve(await signedList([OLD, RECALL]));
    const r = await h.run(['revocations', 'refresh', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).action, 'refreshed');
    const s = await h.status();
    assert.equal(s.verified, true);
    assert.equal(s.entries, 2);
    assert.equal(
      s.signer,
      `https://github.com/${REPO}/.github/workflows/revocations.yml@refs/tags/revocations`,
    );
    assert.equal(s.stale, false);
  });

  it('refresh over the network fails with exit 16 when the server is down', async () => {
    const h = host({ MVM_RELEASE_BASE_URL: 'http://127.0.0.1:9/releases/download' });
    const r = await h.run(['revocations', 'refresh']);
    assert.equal(r.code, 16, r.stderr);
    assert.match(r.stderr, /ECONNREFUSED/);
  });

  it('import verifies, installs and records freshness without a manual touch', async () => {
    const h = host();
    const list = await signedList([OLD]);
    const old = new Date(Date.now() - 30 * 86_400_000);
    utimesSync(list.json, old, old);
    const r = await h.run(['revocations', 'import', '--list', list.json, '--bundle', list.bundle]);
    assert.equal(r.code, 0, r.stderr);
    const s = await h.status();
    assert.equal(s.freshness, 'fresh');
    assert.ok(s.ageHours < 1);
  });

  it('import refuses a pair that does not verify, and installs nothing', async () => {
    const h = host();
    const a = await signedList([OLD]);
    const b = await signedList([RECALL]);
    const r = await h.run(['revocations', 'import', '--list', a.json, '--bundle', b.bundle]);
    assert.equal(r.code, 10, r.stderr);
    assert.match(r.stderr, /Cosign verification failed for the revocation list/);
    assert.equal((await h.status()).present, false);
  });

  it("status shows stale lists and recalled installed images; the seed's copy-and-touch works", async () => {
    const h = host();
    assert.equal((await h.importSet(good, ['--offline'])).code, 0);
    const carried = await signedList([RECALL]);
    mkdirSync(h.revocations, { recursive: true });
    execFileSync('cp', [carried.json, carried.bundle, h.revocations]);
    const t = new Date(Date.now() - 9 * 86_400_000);
    utimesSync(join(h.revocations, 'revoked-versions.json'), t, t);
    let s = await h.status();
    assert.equal(s.stale, true);
    assert.deepEqual(s.images, [{ version: VERSION, recalled: RECALL.reason }]);
    execFileSync('touch', [join(h.revocations, 'revoked-versions.json')]);
    s = await h.status();
    assert.equal(s.stale, false);
    assert.equal(s.freshness, 'fresh');
  });

  it('replacing the seed-style plain directory keeps the pair consistent', async () => {
    const h = host();
    const carried = await signedList([OLD]);
    mkdirSync(h.revocations, { recursive: true });
    execFileSync('cp', [carried.json, carried.bundle, h.revocations]);
    serve(await signedList([OLD, RECALL]));
    assert.equal((await h.run(['revocations', 'refresh'])).code, 0);
    assert.equal((await h.status()).entries, 2);
  });

  it('concurrent refreshes from several processes leave one consistent, verified pair', async () => {
    const h = host();
    await cache(h, [OLD]);
    const lists = [
      await signedList([OLD, RECALL]),
      await signedList([OLD, RECALL, { version: '0.2.0' }]),
    ];
    serve(lists[0]!);
    // Halfway through (when the 6th of the 12 requests arrives), the server starts serving the next list.
    served.onRequest = (count) => {
      if (count === 6) serve(lists[1]!);
    };
    const runs = Array.from({ length: 6 }, () => h.run(['revocations', 'refresh']));
    const results = await Promise.all(runs);
    assert.equal(served.requests.length, 12, 'every refresh fetched the list and its bundle');
    for (const r of results) assert.ok(r.code === 0 || r.code === 10, r.stderr); // 10: a late writer's list may lag
    const s = await h.status();
    assert.equal(s.verified, true, 'the cached pair verifies: never a new list with an old bundle');
    assert.ok(s.entries === 2 || s.entries === 3);
    for (let i = 0; i < 20; i++) assert.equal((await h.status()).verified, true);
  });
});

describe('revocations: a cached list modified in the future', () => {
  /** Sets the cached JSON's modification time `ms` from now. */
  const shiftMtime = (h: Host, ms: number) => {
    const t = new Date(Date.now() + ms);
    utimesSync(join(h.revocations, 'revoked-versions.json'), t, t);
  };

  it('is not fresh: a refresh is attempted, and the fetched recall is enforced', async () => {
    const h = host();
    await cache(h, [OLD]);
    shiftMtime(h, 2 * 86_400_000); // copied with cp -p from a host whose clock was ahead
    serve(await signedList([OLD, RECALL]));
    const r = await h.importSet(good);
    assert.equal(r.code, 13, r.stderr);
    assert.equal(served.requests.length, 2);
  });

  it('--require-fresh-revocations refuses it (exit 18, not the network code 16)', async () => {
    const h = host({ MVM_OFFLINE: '1' });
    await cache(h, [OLD]);
    shiftMtime(h, 2 * 86_400_000);
    const r = await h.importSet(good, ['--require-fresh-revocations']);
    assert.equal(r.code, 18, r.stderr);
    assert.match(r.stderr, /--require-fresh-revocations is set/);
    assert.equal(h.audit().at(-1)!['outcome'], 'failed');
  });

  it('status reports it stale and says why', async () => {
    const h = host({ MVM_OFFLINE: '1' });
    await cache(h, [OLD]);
    shiftMtime(h, 2 * 86_400_000);
    const s = await h.status();
    assert.equal(s.freshness, 'stale');
    assert.equal(s.stale, true);
    assert.match(
      s.staleReason,
      /its modification time is in the future \(48(\.\d)? h ahead of this host's clock\): copied with cp -p\/rsync -a\/tar or a clock that was ahead; run mvmctl revocations import or touch it/,
    );
    const human = await h.run(['revocations', 'status']);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /STALE, still enforced: its modification time is in the future/);
    const all = await h.run(['status']);
    assert.match(all.stdout, /\(stale: its modification time is in the future/);
  });

  it('within the clock-skew allowance (5 minutes) it is fresh', async () => {
    const h = host();
    await cache(h, [OLD]);
    shiftMtime(h, 2 * 60_000);
    serve(await signedList([OLD, RECALL]));
    assert.equal((await h.importSet(good)).code, 0);
    assert.deepEqual(served.requests, []);
    const s = await h.status();
    assert.equal(s.freshness, 'fresh');
    assert.equal(s.staleReason, undefined);
  });
});

describe('revocations: the cache directory and its files', () => {
  /** The generation directory the cache link points at, and the cache root holding it. */
  const generation = (h: Host) => realpathSync(h.revocations);
  const cacheRoot = (h: Host) => join(h.dir, 'cache', 'mvm');

  async function refusedAsShared(h: Host, path: string, why: RegExp) {
    const s = await h.status();
    assert.equal(s.state, 'invalid');
    assert.match(s.error, new RegExp(`The revocation cache ${path} can be changed by other users`));
    const r = await h.importSet(good);
    assert.equal(r.code, 17, r.stderr);
    assert.match(r.stderr, why);
  }

  for (const mode of [0o775, 0o770]) {
    it(`a cache directory writable by its group (mode ${mode.toString(8)}) is refused`, async () => {
      const h = host({ MVM_OFFLINE: '1' });
      await cache(h, [OLD]);
      chmodSync(generation(h), mode);
      await refusedAsShared(
        h,
        generation(h),
        new RegExp(`writable by group or others \\(mode ${mode.toString(8)}\\)`),
      );
    });
  }

  it('a cache root writable by its group (mode 770) is refused', async () => {
    const h = host({ MVM_OFFLINE: '1' });
    await cache(h, [OLD]);
    chmodSync(cacheRoot(h), 0o770);
    await refusedAsShared(h, cacheRoot(h), /writable by group or others \(mode 770\)/);
  });

  it('a cache directory owned by another user is refused', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('chown to another user needs root');
    const h = host({ MVM_OFFLINE: '1' });
    await cache(h, [OLD]);
    chownSync(generation(h), 65534, 65534);
    await refusedAsShared(h, generation(h), /owned by uid 65534, not by this user \(uid 0\)/);
  });

  for (const file of ['revoked-versions.json', 'revoked-versions.json.bundle']) {
    it(`a symlink planted as the cached ${file} is refused, never followed`, async () => {
      const h = host({ MVM_OFFLINE: '1' });
      await cache(h, [OLD, RECALL]);
      // A genuine pair elsewhere that lifts the recall: followed, it would verify.
      const other = await signedList([OLD]);
      const planted = join(generation(h), file);
      unlinkSync(planted);
      symlinkSync(file.endsWith('.bundle') ? other.bundle : other.json, planted);
      const r = await h.importSet(good);
      assert.equal(r.code, 10, r.stderr);
      assert.match(
        r.stderr,
        new RegExp(
          `Cosign verification failed for the cached revocation list: .*${file.replace(/\./g, '\\.')} is a symbolic link`,
        ),
      );
      const s = await h.status();
      assert.equal(s.state, 'invalid');
      assert.match(s.error, /is a symbolic link/);
    });
  }
});

describe('revocations: the recall memory file', () => {
  const memoryFile = (h: Host) => join(h.env.MVM_DATA_DIR, 'revocations', 'recalls-seen.jsonl');

  async function refusedAsStore(h: Host, kind: RegExp) {
    for (const r of [await h.importSet(good), await h.run(['revocations', 'status'])]) {
      assert.equal(r.code, 17, r.stderr);
      assert.match(r.stderr, /recalls-seen\.jsonl/);
      assert.match(r.stderr, kind);
      assert.match(r.stderr, /Replace .*recalls-seen\.jsonl with a regular file/);
      assert.doesNotMatch(r.stderr, /internal|\n\s+at /);
    }
  }

  it('a symlink there is refused as a store error (exit 17), not followed', async () => {
    const h = host({ MVM_OFFLINE: '1' });
    await cache(h, [OLD, RECALL]);
    const real = join(h.dir, 'elsewhere.jsonl');
    execFileSync('cp', [memoryFile(h), real]);
    unlinkSync(memoryFile(h));
    symlinkSync(real, memoryFile(h));
    await refusedAsStore(h, /is a symbolic link/);
  });

  it('a directory there is refused as a store error', async () => {
    const h = host({ MVM_OFFLINE: '1' });
    await cache(h, [OLD, RECALL]);
    unlinkSync(memoryFile(h));
    mkdirSync(memoryFile(h));
    await refusedAsStore(h, /is a directory/);
  });

  it('a named pipe there is refused as a store error, without hanging', async () => {
    const h = host({ MVM_OFFLINE: '1' });
    await cache(h, [OLD, RECALL]);
    unlinkSync(memoryFile(h));
    execFileSync('mkfifo', [memoryFile(h)]);
    await refusedAsStore(h, /is a named pipe/);
  });
});

describe('revocations: the recall memory directory follows the store rule', () => {
  const memoryDir = (h: Host) => join(h.env.MVM_DATA_DIR, 'revocations');

  async function importRefused(h: Host, message: RegExp) {
    const list = await signedList([OLD, RECALL]);
    const r = await h.run(['revocations', 'import', '--list', list.json, '--bundle', list.bundle]);
    assert.equal(r.code, 17, r.stderr);
    assert.match(r.stderr, message);
    assert.match(r.stderr, /cause: another user could change what is installed/);
    assert.match(r.stderr, /fix: +chmod go-w .* and chown 0 /);
  }

  it('a group-writable recall memory directory is refused (exit 17)', async () => {
    const h = host({ MVM_OFFLINE: '1' });
    await cache(h, [OLD]);
    chmodSync(memoryDir(h), 0o770);
    await importRefused(h, /revocations is writable by group or others \(mode 770\)/);
  });

  it('a recall memory directory owned by another user is refused (exit 17)', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('chown to another user needs root');
    const h = host({ MVM_OFFLINE: '1' });
    await cache(h, [OLD]);
    chownSync(memoryDir(h), 65534, 65534);
    // The store accepts no root-owned directory either: the message offers no "or root".
    await importRefused(h, /revocations is owned by uid 65534, not by this user \(uid 0\)\n/);
  });
});

describe('revocations: HTTP', () => {
  it('HTTPS_PROXY is honoured for an https release location', async () => {
    const h = host({
      MVM_RELEASE_BASE_URL: tlsBaseUrl,
      HTTPS_PROXY: proxyUrl,
      https_proxy: proxyUrl,
      NODE_EXTRA_CA_CERTS: tlsCa,
    });
    serve(await signedList([OLD, RECALL]));
    const before = proxied();
    const r = await h.run(['revocations', 'refresh']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(proxied() > before, 'the requests were tunnelled through the proxy (CONNECT)');
    assert.equal(served.requests.length, 2);
    assert.equal((await h.status()).entries, 2);
  });

  it('NO_PROXY bypasses the proxy for a listed host', async () => {
    const h = host({
      HTTP_PROXY: proxyUrl,
      http_proxy: proxyUrl,
      HTTPS_PROXY: proxyUrl,
      https_proxy: proxyUrl,
      NO_PROXY: 'example.invalid,127.0.0.1',
      no_proxy: 'example.invalid,127.0.0.1',
    });
    serve(await signedList([OLD, RECALL]));
    const before = proxied();
    const r = await h.run(['revocations', 'refresh']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(proxied(), before, 'no request went through the proxy');
    assert.equal(served.requests.length, 2);
    assert.equal((await h.status()).entries, 2);
  });

  it('a redirect to another origin is followed, and carries no credentials there', async () => {
    const h = host();
    serve(await signedList([OLD, RECALL]));
    served.mode = 'redirect';
    const r = await h.run(['revocations', 'refresh']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(served.requests.length, 2);
    assert.deepEqual(
      otherOriginRequests.map((q) => q.url),
      served.requests,
      'both files were fetched from where the redirect pointed',
    );
    for (const q of otherOriginRequests) {
      assert.equal(q.headers['authorization'], undefined);
      assert.equal(q.headers['proxy-authorization'], undefined);
      assert.equal(q.headers['cookie'], undefined);
    }
    assert.equal((await h.status()).entries, 2);
  });

  for (const via of ['directly', 'through HTTP_PROXY'] as const) {
    it(`an oversized response (${via}) is refused with exit 16, and nothing is cached`, async () => {
      const h = host(via === 'directly' ? {} : { HTTP_PROXY: proxyUrl, http_proxy: proxyUrl });
      await cache(h, [OLD], 30);
      const before = await h.status();
      served.mode = 'oversized';
      const tunnelled = proxied();
      const r = await h.run(['revocations', 'refresh']);
      assert.equal(r.code, 16, r.stderr);
      assert.equal(proxied() > tunnelled, via !== 'directly', 'the proxy carried it, or did not');
      assert.match(
        r.stderr,
        /Online fetch failed: GET .*revoked-versions\.json: response larger than 4194304 bytes/,
      );
      const after = await h.status();
      assert.equal(after.entries, 1);
      assert.equal(after.modifiedAt, before.modifiedAt);
      assert.equal((await h.metrics())['dev_image_verify_network_total'], 1);
    });
  }
});

describe('revocations: untrusted text in status output', () => {
  it('a recall reason with terminal escape sequences is shown escaped', async () => {
    const h = host({ MVM_OFFLINE: '1' });
    assert.equal((await h.importSet(good)).code, 0);
    const reason = 'CVE-2026-8888 \x1b[2J\x1b]0;all ok\x07\u202e done';
    await cache(h, [{ ...RECALL, reason }]);
    const escaped = 'CVE-2026-8888 \\x1b[2J\\x1b]0;all ok\\x07\\u202e done';
    for (const args of [['revocations', 'status'], ['status']]) {
      const r = await h.run(args);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.includes(escaped), r.stdout);
      for (const raw of ['\x1b', '\x07', '\u202e']) assert.ok(!r.stdout.includes(raw), r.stdout);
    }
    // JSON keeps the exact text (JSON.stringify escapes control characters itself).
    assert.deepEqual((await h.status()).images, [{ version: VERSION, recalled: reason }]);
  });
});
