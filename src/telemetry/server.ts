/**
 * `mvmctl metrics serve`: the metrics over HTTP for a Prometheus server to
 * scrape (SPEC.md section 6). `GET /metrics` only (HEAD too): 404 for any
 * other path, 405 for any other method, no request body, bounded
 * connections, header size and timeouts. A scrape reads only what was
 * appended to the audit log since the one before (src/audit/log-files.ts),
 * and scrapes that arrive together share one reading: a hundred scrapers
 * cost one read, and none is answered with data older than its request.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { MvmError } from '../errors.js';
import {
  OPENMETRICS_CONTENT_TYPE,
  PROMETHEUS_CONTENT_TYPE,
  renderExposition,
  type ExpositionFormat,
} from './exposition.js';
import type { MetricsSnapshot, MetricsSource } from './snapshot.js';

export const DEFAULT_LISTEN = '127.0.0.1:9464';
/**
 * Connections held at once. At the cap a new connection takes the slot of the one that has
 * waited longest without a request being answered on it (an idle keep-alive, a peer that sent
 * nothing or only part of its headers); only when every connection has a request in progress is
 * the new one closed. A peer hogging slots cannot lock a scraper out: its connections are the
 * ones given up.
 */
export const MAX_CONNECTIONS = 256;
export const MAX_HEADER_BYTES = 8 * 1024;
export const HEADERS_TIMEOUT_MS = 5_000;
export const REQUEST_TIMEOUT_MS = 10_000;

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

/** ADDR:PORT, [IPv6]:PORT; port 0 takes any free port (the one taken is printed). */
export function parseListen(text: string): ListenAddress {
  const m =
    /^\[([0-9A-Fa-f:.]+)\]:([0-9]{1,5})$/.exec(text) ?? /^([^:\s[\]]+):([0-9]{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535)
    throw new MvmError('usage', `--listen ${JSON.stringify(text)} is not ADDR:PORT`, {
      fix: `Give an address and a port, e.g. --listen ${DEFAULT_LISTEN} (loopback), --listen 0.0.0.0:9464 (every interface) or --listen [::1]:9464.`,
    });
  return { host: m[1]!, port };
}

export const urlOf = (a: ListenAddress): string =>
  `http://${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}/metrics`;

/** Which format the scraper asked for: OpenMetrics when it prefers it (Accept, by q-value). */
export function negotiate(accept: string | undefined): ExpositionFormat {
  if (!accept) return 'prometheus';
  let om = 0;
  let text = 0;
  for (const item of accept.split(',')) {
    const [type = '', ...params] = item.split(';').map((p) => p.trim().toLowerCase());
    const qParam = params.find((p) => p.startsWith('q='));
    const q = qParam === undefined ? 1 : Number(qParam.slice(2));
    if (!Number.isFinite(q)) continue;
    if (type === 'application/openmetrics-text') om = Math.max(om, q);
    else if (type === 'text/plain' || type === 'text/*' || type === '*/*') text = Math.max(text, q);
  }
  return om > 0 && om >= text ? 'openmetrics' : 'prometheus';
}

export interface MetricsServer {
  readonly address: ListenAddress;
  readonly server: Server;
  /** Stops accepting, lets requests in progress finish (briefly), then closes every connection. */
  close(): Promise<void>;
}

export interface ServeOptions {
  readonly listen: ListenAddress;
  readonly source: MetricsSource;
  /** One line to stderr: a warning first seen (a broken chain), or a scrape that failed. */
  readonly warn: (message: string) => void;
  readonly maxConnections?: number;
  /** Warnings already given (by a collection before listening): not repeated while they last. */
  readonly warned?: readonly string[];
}

export async function startMetricsServer(options: ServeOptions): Promise<MetricsServer> {
  const scrapes = new SharedScrape(options.source);
  const warned = new Set<string>(options.warned);
  const report = (snapshot: MetricsSnapshot) => {
    // Each warning once while it lasts: a broken chain is loud, not a line per scrape.
    const now = new Set(snapshot.warnings);
    for (const w of now) if (!warned.has(w)) options.warn(w);
    warned.clear();
    for (const w of now) warned.add(w);
  };
  const server = createServer(
    {
      maxHeaderSize: MAX_HEADER_BYTES,
      headersTimeout: HEADERS_TIMEOUT_MS,
      requestTimeout: REQUEST_TIMEOUT_MS,
      keepAliveTimeout: 5_000,
      connectionsCheckingInterval: 1_000,
    },
    (req, res) => void handle(req, res, scrapes, report, options.warn),
  );
  // Not server.maxConnections: Node closes whatever arrives at the cap, the scraper included.
  const slots = new ConnectionSlots(options.maxConnections ?? MAX_CONNECTIONS);
  server.on('connection', (socket: Socket) => slots.admit(socket));
  server.on('request', (req: IncomingMessage, res: ServerResponse) =>
    slots.serving(req.socket, res),
  );
  server.maxHeadersCount = 64;
  server.maxRequestsPerSocket = 1000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(listenError(e, options.listen)));
    server.listen({ host: options.listen.host, port: options.listen.port, exclusive: true }, () =>
      resolve(),
    );
  });
  const bound = server.address() as AddressInfo;
  return {
    server,
    address: { host: options.listen.host, port: bound.port },
    close: () =>
      new Promise<void>((resolve) => {
        const force = setTimeout(() => server.closeAllConnections(), 2_000);
        force.unref();
        server.close(() => {
          clearTimeout(force);
          resolve();
        });
        server.closeIdleConnections();
      }),
  };
}

async function handle(
  req: IncomingMessage,
  res: ServerResponse,
  scrapes: SharedScrape,
  report: (s: MetricsSnapshot) => void,
  warn: (m: string) => void,
): Promise<void> {
  const reply = (status: number, body: string, headers: Record<string, string> = {}) => {
    res.writeHead(status, {
      'Content-Type': 'text/plain; charset=utf-8',
      'Content-Length': String(Buffer.byteLength(body)),
      'Cache-Control': 'no-store',
      ...headers,
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
  let path: string;
  try {
    path = new URL(req.url ?? '/', 'http://metrics.invalid').pathname;
  } catch {
    return reply(400, 'Bad request\n', { Connection: 'close' });
  }
  if (path !== '/metrics') return reply(404, 'Not found: the metrics are at /metrics\n');
  if (req.method !== 'GET' && req.method !== 'HEAD')
    return reply(405, 'Method not allowed: GET /metrics\n', { Allow: 'GET, HEAD' });
  // A scrape carries no body; one that does is refused without reading it.
  const length = req.headers['content-length'];
  if (req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0'))
    return reply(413, 'A request body is not accepted\n', { Connection: 'close' });
  let snapshot: MetricsSnapshot;
  try {
    snapshot = await scrapes.next();
  } catch (e) {
    const message = (e as Error)?.message ?? String(e);
    warn(`a scrape failed: ${message}`);
    return reply(500, `The metrics could not be read: ${message}\n`);
  }
  report(snapshot);
  const format = negotiate(req.headers.accept);
  const body = renderExposition(snapshot, format);
  reply(200, body, {
    'Content-Type': format === 'openmetrics' ? OPENMETRICS_CONTENT_TYPE : PROMETHEUS_CONTENT_TYPE,
  });
}

/**
 * Who holds a connection slot, and since when each has waited: a connection is busy from a
 * request's head to the end of its answer, and waiting otherwise.
 */
class ConnectionSlots {
  /** In order of the time each started waiting: the first is the one to give up. */
  private readonly waiting = new Set<Socket>();
  /** Requests in progress on each busy connection (pipelined requests overlap). */
  private readonly busy = new Map<Socket, number>();

  constructor(private readonly max: number) {}

  admit(socket: Socket): void {
    if (this.waiting.size + this.busy.size >= this.max) {
      const longest = this.waiting.values().next();
      if (longest.done) {
        socket.destroy();
        return;
      }
      this.waiting.delete(longest.value);
      longest.value.destroy();
    }
    this.waiting.add(socket);
    socket.once('close', () => {
      this.waiting.delete(socket);
      this.busy.delete(socket);
    });
  }

  serving(socket: Socket, res: ServerResponse): void {
    if (socket.destroyed) return;
    this.waiting.delete(socket);
    this.busy.set(socket, (this.busy.get(socket) ?? 0) + 1);
    res.once('close', () => {
      const left = (this.busy.get(socket) ?? 0) - 1;
      if (left > 0) return void this.busy.set(socket, left);
      this.busy.delete(socket);
      if (!socket.destroyed) this.waiting.add(socket); // at the end: it has waited least
    });
  }
}

/**
 * One collection at a time. A request arriving while one runs waits for the
 * next, which it shares with every request that arrived meanwhile: never
 * more than two collections queued, and every answer reads the log after
 * its request arrived.
 */
class SharedScrape {
  private running: Promise<MetricsSnapshot> | undefined;
  private queued: Promise<MetricsSnapshot> | undefined;

  constructor(private readonly source: MetricsSource) {}

  next(): Promise<MetricsSnapshot> {
    if (!this.running) return this.start();
    this.queued ??= this.running
      .catch(() => undefined)
      .then(() => {
        this.queued = undefined;
        return this.start();
      });
    return this.queued;
  }

  private start(): Promise<MetricsSnapshot> {
    const run = this.source.collect();
    this.running = run;
    void run
      .catch(() => undefined)
      .finally(() => {
        if (this.running === run) this.running = undefined;
      });
    return run;
  }
}

function listenError(e: NodeJS.ErrnoException, a: ListenAddress): MvmError {
  const where = `${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`;
  const other = `--listen ${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port === 9464 ? 9465 : 9464}`;
  if (e.code === 'EADDRINUSE')
    return new MvmError('usage', `Cannot listen on ${where}: the address is already in use`, {
      cause: 'another process (perhaps another mvmctl metrics serve) listens there',
      fix: `Stop it (ss -ltnp 'sport = :${a.port}' names it), or choose another port, e.g. ${other}.`,
    });
  if (e.code === 'EACCES')
    return new MvmError('usage', `Cannot listen on ${where}: permission denied`, {
      cause: 'ports below 1024 need privileges',
      fix: `Choose a port above 1023, e.g. --listen ${DEFAULT_LISTEN}.`,
    });
  if (e.code === 'EADDRNOTAVAIL' || e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN')
    return new MvmError('usage', `Cannot listen on ${where}: no such address on this host`, {
      fix: `Give an address of this host, e.g. --listen ${DEFAULT_LISTEN}.`,
    });
  return new MvmError('store', `Cannot listen on ${where}: ${e.message}`, { underlying: e });
}
