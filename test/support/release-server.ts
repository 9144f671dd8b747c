/**
 * A release location on 127.0.0.1 (node:http, no mocks): `GET {prefix}/v{version}/{file}`
 * from a release-set directory per version and `GET {prefix}/revocations/{file}` from a
 * revocation directory (404 when a file or directory is absent), files read from disk at each
 * request. It records every request (method, path, headers, status and body bytes sent) and
 * misbehaves on demand, per file name, the way real networks and servers do: see `Knobs`.
 *
 * Also a forward proxy (CONNECT tunnels and absolute-form requests) that records what it carried,
 * for the proxy-from-the-environment tests, and the built CLI run against them (with a wrapper such
 * as `unshare -n`, or as a child to interrupt).
 */
import { execFile, spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import {
  createServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import { CLI } from './cli.js';

/** How the server misbehaves for one file name; every knob is off by default. */
export interface Knobs {
  /** Answer 404 whatever is on disk. */
  notFound?: boolean;
  /** Accept the request and never answer (not even headers). */
  hang?: boolean;
  /** Answer `status` (5xx) to the next `times` requests, then serve normally. */
  fail?: { status: number; times: number };
  /** Answer 302 with `Location: {to}{the path below this server's prefix}` (another server's base URL). */
  redirectTo?: string;
  /** Always answer 200 with the whole file, whatever Range says. */
  ignoreRange?: boolean;
  /** Send `bytes` of the body, then destroy the connection; `times` responses (default 1; Infinity: always). */
  cut?: { bytes: number; times?: number };
  /** Send `bytes` of the body, then send nothing more until `release(name)` (every response meanwhile). */
  stallAfter?: number;
  /** Send the body one byte every `everyMs` milliseconds (a server that never goes quite silent). */
  trickle?: { everyMs: number };
  /** Serve these bytes instead of the file on disk (a tampered mirror). */
  body?: Buffer;
  /**
   * Send the body with chunked transfer coding, no Content-Length (as a server that streams
   * what it does not know the size of); Range is honoured as usual (206 with Content-Range).
   */
  chunked?: boolean;
}

export interface RecordedRequest {
  method: string;
  /** The request path as sent (with this server's prefix). */
  path: string;
  /** The last path component: the release file name. */
  name: string;
  headers: IncomingHttpHeaders;
  range: string | undefined;
  authorization: string | undefined;
  /** The status sent; 0 while nothing was answered (a hang, or not yet). */
  status: number;
  /** Body bytes handed to the socket so far. */
  bytesSent: number;
  /** The client's port: tells a request a proxy relayed from a direct one (ForwardProxy.relayedFrom). */
  remotePort: number | undefined;
  /** The connection ended before the whole body went out (a cut, a stall, or the client left). */
  incomplete: boolean;
}

export interface ReleaseServerOptions {
  /** Path prefix of the base URL (as GitHub's `/{repo}/releases/download`); default `/releases/download`. */
  prefix?: string;
  /** Release-set directory per version, e.g. `{ '0.14.0': dir }`. */
  releases?: Record<string, string>;
  /** Directory holding revoked-versions.json and its .bundle; absent: 404 for both. */
  revocations?: string;
}

const CHUNK = 64 * 1024;
const listen = (server: Server): Promise<number> =>
  new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });

/** Tracks a server's sockets so that close() ends the hung and stalled ones too. */
function trackSockets(server: Server): Set<Socket> {
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  return sockets;
}

async function closeServer(server: Server, sockets: Set<Socket>): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  for (const s of sockets) s.destroy();
  server.closeAllConnections();
  await closed;
}

export class ReleaseServer {
  /** Every request, oldest first (entries are updated as their responses proceed). */
  readonly requests: RecordedRequest[] = [];
  private readonly knobs = new Map<string, Knobs>();
  private readonly stalls = new Map<string, Array<() => void>>();
  private readonly releases = new Map<string, string>();
  private revocationsDir: string | undefined;
  private readonly events = new EventEmitter();

  private constructor(
    private readonly server: Server,
    private readonly sockets: Set<Socket>,
    readonly origin: string,
    readonly prefix: string,
  ) {}

  static async start(o: ReleaseServerOptions = {}): Promise<ReleaseServer> {
    const server = createServer();
    const sockets = trackSockets(server);
    const port = await listen(server);
    const rs = new ReleaseServer(
      server,
      sockets,
      `http://127.0.0.1:${port}`,
      o.prefix ?? '/releases/download',
    );
    for (const [version, dir] of Object.entries(o.releases ?? {})) rs.serveRelease(version, dir);
    rs.serveRevocations(o.revocations);
    server.on('request', (req, res) => rs.handle(req, res));
    return rs;
  }

  /** What MVM_RELEASE_BASE_URL names: origin and prefix. */
  get baseUrl(): string {
    return `${this.origin}${this.prefix}`;
  }

  /** `host:port`, as a CONNECT request names this server. */
  get authority(): string {
    return new URL(this.origin).host;
  }

  /** The URL of a release file, as mvmctl should request it. */
  url(version: string, name: string): string {
    return `${this.baseUrl}/v${version}/${name}`;
  }

  serveRelease(version: string, dir: string | undefined): void {
    if (dir === undefined) this.releases.delete(version);
    else this.releases.set(version, dir);
  }

  serveRevocations(dir: string | undefined): void {
    this.revocationsDir = dir;
  }

  /** Sets the knobs for one file name (replacing its previous ones). */
  set(name: string, knobs: Knobs): void {
    // Copied, counters too: the server counts them down.
    this.knobs.set(name, {
      ...knobs,
      ...(knobs.fail ? { fail: { ...knobs.fail } } : {}),
      ...(knobs.cut ? { cut: { ...knobs.cut } } : {}),
    });
  }

  /** Back to a well-behaved server with no request recorded; stalled responses are released. */
  reset(): void {
    this.knobs.clear();
    this.requests.length = 0;
    for (const name of [...this.stalls.keys()]) this.release(name);
  }

  /** Lets the responses stalled on `name` go on, and stops stalling later ones. */
  release(name: string): void {
    const k = this.knobs.get(name);
    if (k) delete k.stallAfter;
    for (const go of this.stalls.get(name) ?? []) go();
    this.stalls.delete(name);
  }

  /** The requests for one file name. */
  requestsFor(name: string): RecordedRequest[] {
    return this.requests.filter((r) => r.name === name);
  }

  /** Body bytes sent for one file name, over every request. */
  bytesSentFor(name: string): number {
    return this.requestsFor(name).reduce((n, r) => n + r.bytesSent, 0);
  }

  /** Resolves once a response for `name` has sent its `stallAfter` bytes and is held. */
  stalled(name: string, timeoutMs = 60_000): Promise<RecordedRequest> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.events.off('stalled', on);
        reject(new Error(`no response for ${name} stalled within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      const on = (n: string, r: RecordedRequest) => {
        if (n !== name) return;
        clearTimeout(timer);
        this.events.off('stalled', on);
        resolve(r);
      };
      this.events.on('stalled', on);
    });
  }

  async close(): Promise<void> {
    for (const name of [...this.stalls.keys()]) this.release(name);
    await closeServer(this.server, this.sockets);
  }

  /** The file on disk a path names (below the prefix), or undefined. */
  private fileFor(relative: string): string | undefined {
    const m = /^\/v([^/]+)\/([^/]+)$/.exec(relative);
    if (m) {
      const dir = this.releases.get(m[1]!);
      return dir === undefined ? undefined : join(dir, m[2]!);
    }
    const r = /^\/revocations\/(revoked-versions\.json(?:\.bundle)?)$/.exec(relative);
    if (r && this.revocationsDir !== undefined) return join(this.revocationsDir, r[1]!);
    return undefined;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '').split('?')[0]!;
    const name = path.slice(path.lastIndexOf('/') + 1);
    const header = (h: string | string[] | undefined) => (Array.isArray(h) ? h.join(', ') : h);
    const rec: RecordedRequest = {
      method: req.method ?? '',
      path,
      name,
      headers: req.headers,
      range: header(req.headers.range),
      authorization: header(req.headers.authorization),
      status: 0,
      bytesSent: 0,
      incomplete: false,
      remotePort: req.socket.remotePort,
    };
    this.requests.push(rec);
    const k = this.knobs.get(name) ?? {};
    const answer = (status: number, headers: Record<string, string> = {}, text = '') => {
      rec.status = status;
      res.writeHead(status, headers).end(text);
    };

    if (k.hang) return; // accepted, never answered
    if (k.fail && k.fail.times > 0) {
      k.fail.times--;
      return answer(k.fail.status, { 'content-type': 'text/plain' }, 'server trouble\n');
    }
    if (k.notFound) return answer(404, {}, 'Not Found\n');
    const relative = path.startsWith(this.prefix) ? path.slice(this.prefix.length) : undefined;
    if (k.redirectTo && relative !== undefined)
      return answer(302, { location: `${k.redirectTo}${relative}` });
    if (req.method !== 'GET' && req.method !== 'HEAD') return answer(405);
    const file = relative === undefined ? undefined : this.fileFor(relative);
    let bytes: Buffer;
    try {
      if (file === undefined) throw new Error('not served');
      bytes = k.body ?? readFileSync(file);
    } catch {
      return answer(404, {}, 'Not Found\n');
    }

    let start = 0;
    const range = /^bytes=(\d+)-$/.exec(rec.range ?? '');
    if (range && !k.ignoreRange) {
      start = Number(range[1]);
      if (start >= bytes.length) return answer(416, { 'content-range': `bytes */${bytes.length}` });
    }
    const body = bytes.subarray(start);
    rec.status = start > 0 ? 206 : 200;
    res.writeHead(rec.status, {
      'content-type': 'application/octet-stream',
      // Without a length, node:http frames an HTTP/1.1 response with chunked coding.
      ...(k.chunked ? {} : { 'content-length': String(body.length) }),
      'accept-ranges': 'bytes',
      ...(start > 0
        ? { 'content-range': `bytes ${start}-${bytes.length - 1}/${bytes.length}` }
        : {}),
    });
    if (req.method === 'HEAD') return void res.end();

    let cutAt: number | undefined;
    if (k.cut && (k.cut.times ?? 1) > 0) {
      cutAt = k.cut.bytes;
      k.cut.times = (k.cut.times ?? 1) - 1;
    }
    void this.send(res, rec, body, { cutAt, stallAt: k.stallAfter, trickleMs: k.trickle?.everyMs });
  }

  /** Writes `body` in chunks (respecting backpressure), cutting or stalling where told. */
  private async send(
    res: ServerResponse,
    rec: RecordedRequest,
    body: Buffer,
    o: { cutAt: number | undefined; stallAt: number | undefined; trickleMs?: number | undefined },
  ): Promise<void> {
    let gone = false;
    res.on('close', () => {
      gone = true;
      if (!res.writableFinished) rec.incomplete = true;
    });
    let stalled = o.stallAt === undefined;
    const limit = Math.min(body.length, o.cutAt ?? Infinity);
    let offset = 0;
    while (offset < limit && !gone) {
      if (!stalled && offset >= o.stallAt!) {
        stalled = true;
        await new Promise<void>((resolve) => {
          const list = this.stalls.get(rec.name) ?? [];
          list.push(resolve);
          this.stalls.set(rec.name, list);
          this.events.emit('stalled', rec.name, rec);
        });
        continue;
      }
      if (o.trickleMs !== undefined) await new Promise((r) => setTimeout(r, o.trickleMs));
      if (gone) break;
      const end = Math.min(
        limit,
        offset + (o.trickleMs !== undefined ? 1 : CHUNK),
        stalled ? Infinity : o.stallAt!,
      );
      const chunk = body.subarray(offset, end);
      offset = end;
      rec.bytesSent += chunk.length;
      if (!res.write(chunk)) {
        await new Promise<void>((resolve) => {
          const done = () => {
            res.off('drain', done);
            res.off('close', done);
            resolve();
          };
          res.on('drain', done);
          res.on('close', done);
        });
      }
    }
    if (gone) return;
    if (offset < body.length) {
      // Cut: let what was written reach the client, then drop the connection mid-body.
      rec.incomplete = true;
      await new Promise<void>((resolve) => res.write('', () => resolve()));
      res.socket?.destroy();
      return;
    }
    res.end();
  }
}

/** What the proxy carried: a CONNECT tunnel's target, or an absolute-form request's URL. */
export interface ProxiedRequest {
  method: string;
  /** `host:port` for CONNECT, the absolute URL otherwise. */
  target: string;
  headers: IncomingHttpHeaders;
}

/**
 * The environment of a host that may use the network: the release location is `baseUrl`, and no
 * proxy from the test runner's own environment applies (a test that wants one sets it).
 */
export const onlineEnv = (baseUrl: string): Record<string, string> => ({
  MVM_OFFLINE: '',
  MVM_RELEASE_BASE_URL: baseUrl,
  MVM_HTTP_TIMEOUT_SECONDS: '5',
  HTTP_PROXY: '',
  HTTPS_PROXY: '',
  http_proxy: '',
  https_proxy: '',
  NO_PROXY: '',
  no_proxy: '',
});

/** A forward proxy on 127.0.0.1 that records what it carried; HTTP_PROXY / HTTPS_PROXY name `url`. */
export class ForwardProxy {
  readonly requests: ProxiedRequest[] = [];
  /** The local ports of the proxy's own connections to servers. */
  private readonly upstreamPorts = new Set<number>();

  private constructor(
    private readonly server: Server,
    private readonly sockets: Set<Socket>,
    readonly url: string,
  ) {}

  /** `refuseConnect`: answer every CONNECT with this status (407, 403, 503…) instead of tunnelling. */
  static async start(o: { refuseConnect?: number } = {}): Promise<ForwardProxy> {
    const server = createServer();
    const sockets = trackSockets(server);
    const port = await listen(server);
    const proxy = new ForwardProxy(server, sockets, `http://127.0.0.1:${port}`);
    server.on('connect', (req: IncomingMessage, client: Socket, head: Buffer) => {
      proxy.requests.push({ method: 'CONNECT', target: req.url ?? '', headers: req.headers });
      if (o.refuseConnect !== undefined) {
        client.end(`HTTP/1.1 ${o.refuseConnect} Refused\r\nContent-Length: 0\r\n\r\n`);
        return;
      }
      const target = new URL(`http://${req.url ?? ''}`);
      const upstream = connect(Number(target.port || 80), target.hostname, () => {
        if (upstream.localPort) proxy.upstreamPorts.add(upstream.localPort);
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        upstream.write(head);
        upstream.pipe(client).pipe(upstream);
      });
      sockets.add(upstream);
      upstream.on('close', () => sockets.delete(upstream));
      upstream.on('error', () => client.destroy());
      client.on('error', () => upstream.destroy());
      client.on('close', () => upstream.destroy());
    });
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      const target = req.url ?? '';
      proxy.requests.push({ method: req.method ?? '', target, headers: req.headers });
      if (!/^https?:\/\//.test(target)) return void res.writeHead(400).end('absolute-form only\n');
      const headers = { ...req.headers };
      delete headers['proxy-authorization'];
      delete headers['proxy-connection'];
      const upstream = httpRequest(
        target,
        { method: req.method, headers, agent: false },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
          answer.on('error', () => res.destroy());
        },
      );
      upstream.on('socket', (sock: Socket) =>
        sock.on('connect', () => sock.localPort && proxy.upstreamPorts.add(sock.localPort)),
      );
      upstream.on('error', () => (res.headersSent ? res.destroy() : res.writeHead(502).end()));
      res.on('close', () => upstream.destroy());
      req.pipe(upstream);
    });
    return proxy;
  }

  /** Whether a request a server recorded came over one of this proxy's connections. */
  relayed(rec: RecordedRequest): boolean {
    return rec.remotePort !== undefined && this.upstreamPorts.has(rec.remotePort);
  }

  /** The requests that went to `authority` (`host:port`), tunnelled or forwarded. */
  to(authority: string): ProxiedRequest[] {
    return this.requests.filter((r) =>
      r.method === 'CONNECT' ? r.target === authority : URL.parse(r.target)?.host === authority,
    );
  }

  async close(): Promise<void> {
    await closeServer(this.server, this.sockets);
  }
}

export interface MvmRun {
  code: number;
  stdout: string;
  stderr: string;
  /** Wall time of the run, for generous outer bounds only. */
  ms: number;
}

/**
 * The built CLI with the runner's environment plus `env` (as runCli does), optionally under a
 * wrapper such as `unshare -n --`, and with a longer bound than runCli's for downloads and boots.
 */
export function runMvm(
  args: string[],
  env: Record<string, string>,
  o: { wrapper?: string[]; timeoutMs?: number } = {},
): Promise<MvmRun> {
  const started = Date.now();
  const childEnv: NodeJS.ProcessEnv = { ...process.env, MVM_TRUSTED_ROOT: undefined, ...env };
  for (const k of Object.keys(childEnv)) if (childEnv[k] === undefined) delete childEnv[k];
  const [file, ...rest] = [...(o.wrapper ?? []), process.execPath, CLI, ...args];
  return new Promise((resolve) => {
    execFile(
      file!,
      rest,
      { env: childEnv, timeout: o.timeoutMs ?? 120_000, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr, ms: Date.now() - started });
      },
    );
  });
}

/** The built CLI as a child the test can signal (Ctrl-C is SIGINT to the process). */
export function spawnMvm(args: string[], env: Record<string, string>) {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, MVM_TRUSTED_ROOT: undefined, ...env };
  for (const k of Object.keys(childEnv)) if (childEnv[k] === undefined) delete childEnv[k];
  const child = spawn(process.execPath, [CLI, ...args], {
    env: childEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const ended = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('close', (code, signal) => resolve({ code, signal })),
  );
  return {
    child,
    async result(): Promise<{
      code: number | null;
      signal: NodeJS.Signals | null;
      stdout: string;
      stderr: string;
    }> {
      return { ...(await ended), stdout, stderr };
    },
  };
}
