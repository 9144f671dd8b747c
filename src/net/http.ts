/**
 * The one HTTP client (undici) for everything the tool fetches: release files
 * and the revocation list (SPEC.md section 11).
 *
 * - Proxies from HTTPS_PROXY / HTTP_PROXY / NO_PROXY.
 * - Bounded connect, response-header and body-idle time: an unreachable host
 *   is found out in seconds, and a stalled body is a failure, not a hang.
 * - Redirects are followed here, not by undici, so that the credential
 *   (MVM_RELEASE_TOKEN) goes to the release location's own origin and never to
 *   the host a redirect names (GitHub sends downloads to another host).
 * - Every failure is a network error (exit 16) naming the URL and the cause,
 *   marked retryable or not; nothing here decides whether bytes are good
 *   (every byte is verified after, which is why http: mirrors are allowed).
 */
import type { Dispatcher } from 'undici';
import { MvmError, ONLINE_FETCH_FAILED } from '../errors.js';
import { abortError, getDirect, ProtocolError } from './http1.js';

export interface HttpOptions {
  /** Upper bound for connecting, for the response headers, and for silence inside a body. */
  readonly timeoutMs: number;
  /** A bearer token and the one origin it may be sent to. */
  readonly credential?: { readonly origin: string; readonly token: string };
  /** Where the failure's fix points (the revocation refresh and a release download differ). */
  readonly fix?: string;
}

/** What a streamed GET does with the response: the body goes to `data` without a stream in between. */
export interface StreamHandler {
  /** The final (not a redirect) response's status and headers; false discards its body. */
  response(
    status: number,
    headers: Readonly<Record<string, string | string[] | undefined>>,
  ): boolean;
  /** A body chunk (only valid during the call); false pauses the socket until `resume()`. */
  data(chunk: Uint8Array, resume: () => void): boolean;
  /** Space to read the body straight into, on a direct connection (see BodySink.room in http1.ts). */
  room?(): Uint8Array | undefined;
}

const MAX_REDIRECTS = 5;
const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const CONNECT_TIMEOUT_MS = 3_000;
/** undici's error codes for its connect, headers and body timeouts. */
const TIMEOUT_CODES = new Set([
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
]);

const DEFAULT_FIX =
  'Check connectivity and proxy settings (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) and the release location (MVM_RELEASE_BASE_URL); on an air-gapped host, carry the files in and use dev import-image.';

/** A network error that says whether trying again could help (connection trouble and 5xx can; a 404 cannot). */
export class TransferError extends MvmError {
  readonly retryable: boolean;
  /** `detail` follows "Online fetch failed: ", the wording the first line of every network failure carries. */
  constructor(
    detail: string,
    retryable: boolean,
    cause: string,
    fix: string,
    underlying?: unknown,
  ) {
    super('network', `${ONLINE_FETCH_FAILED}: ${detail}`, { cause, fix, underlying });
    this.retryable = retryable;
  }
}

export const isRetryable = (e: unknown): boolean => e instanceof TransferError && e.retryable;

const INTERRUPTED = 'interrupted';
/** A request stopped by its abort signal (Ctrl-C, or a sibling download's failure). */
export const isInterruption = (e: unknown): boolean =>
  e instanceof TransferError && e.cause === INTERRUPTED;

/**
 * undici 6 flags EnvHttpProxyAgent as experimental with a process warning on
 * every run; operators should not see that on stderr. Other warnings pass.
 */
function quietly<T>(make: () => T): T {
  const emit = process.emitWarning;
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    const code = (rest[0] as { code?: string } | undefined)?.code ?? rest[1];
    if (code === 'UNDICI-EHPA') return;
    (emit as (...a: unknown[]) => void).call(process, warning, ...rest);
  }) as typeof process.emitWarning;
  try {
    return make();
  } finally {
    process.emitWarning = emit;
  }
}

export class HttpClient {
  /** undici, loaded and built on first use: only when the environment names a proxy. */
  private undiciAgent: Promise<Undici> | undefined;
  private readonly fix: string;

  constructor(private readonly opts: HttpOptions) {
    this.fix = opts.fix ?? DEFAULT_FIX;
  }

  private undici(): Promise<Undici> {
    this.undiciAgent ??= import('undici').then((m) => {
      // Bundled, a CommonJS package's dynamic import may put its exports under `default`.
      const { EnvHttpProxyAgent, util } =
        'EnvHttpProxyAgent' in m ? m : (m as unknown as { default: typeof m }).default;
      return {
        dispatcher: quietly(
          () =>
            new EnvHttpProxyAgent({
              connect: { timeout: Math.min(CONNECT_TIMEOUT_MS, this.opts.timeoutMs) },
              headersTimeout: this.opts.timeoutMs,
              bodyTimeout: this.opts.timeoutMs,
            }),
        ),
        parseHeaders: util.parseHeaders,
      };
    });
    return this.undiciAgent;
  }

  /**
   * Requests `url`, then each redirect's target (at most MAX_REDIRECTS): `once`
   * makes one request and says where it redirects, or what it answered. One
   * place for the rule that the credential goes only to its own origin (in
   * headersFor, per target) and only http(s) is ever requested.
   */
  private async followRedirects<T>(
    url: string,
    once: (target: URL, current: string) => Promise<{ location: string } | { value: T }>,
  ): Promise<T> {
    let current = url;
    for (let hop = 0; ; hop++) {
      const target = parseHttpUrl(current, url, this.fix);
      const step = await once(target, current).catch((e: unknown) => {
        throw this.failure(current, e);
      });
      if ('value' in step) return step.value;
      if (hop >= MAX_REDIRECTS) {
        throw new TransferError(
          `GET ${url}: more than ${MAX_REDIRECTS} redirects (last to ${current})`,
          false,
          'the release location redirects in a loop or too deep',
          this.fix,
        );
      }
      current = new URL(step.location, current).toString();
    }
  }

  /**
   * GET `url` (from byte `from` with a Range request), following redirects,
   * handing the body straight to `handler`: the large-file path, where a
   * Readable stream per chunk would cost more than the hashing does. Resolves
   * once the body is complete; rejects with a TransferError.
   */
  stream(
    url: string,
    o: { from?: number; signal?: AbortSignal },
    handler: StreamHandler,
  ): Promise<void> {
    return this.followRedirects<void>(url, async (target) => {
      const location = await this.streamOnce(target, o, handler);
      return location === undefined ? { value: undefined } : { location };
    });
  }

  /**
   * One request; resolves to the redirect's location, or undefined when the
   * body was delivered. Direct connections use the lean reader (http1.ts);
   * when the environment names a proxy, undici carries the request (and
   * applies NO_PROXY), so a configured proxy is never bypassed.
   */
  private async streamOnce(
    target: URL,
    o: { from?: number; signal?: AbortSignal },
    handler: StreamHandler,
  ): Promise<string | undefined> {
    if (proxyConfigured()) return this.streamThroughUndici(target, o, handler);
    let location: string | undefined;
    await getDirect(
      {
        target,
        headers: this.headersFor(target, o.from),
        connectTimeoutMs: CONNECT_TIMEOUT_MS,
        timeoutMs: this.opts.timeoutMs,
        ...(o.signal ? { signal: o.signal } : {}),
      },
      {
        head: ({ status, headers }) => {
          location = redirectTarget(status, headers);
          return location === undefined && handler.response(status, headers);
        },
        data: (chunk, resume) => handler.data(chunk, resume),
        ...(handler.room ? { room: () => handler.room!() } : {}),
      },
    );
    return location;
  }

  private async streamThroughUndici(
    target: URL,
    o: { from?: number; signal?: AbortSignal },
    handler: StreamHandler,
  ): Promise<string | undefined> {
    const { dispatcher, parseHeaders } = await this.undici();
    return new Promise((resolve, reject) => {
      let location: string | undefined;
      let accepted = false;
      let settled = false;
      let abortRequest: ((e?: Error) => void) | undefined;
      let resumeSocket: () => void = () => undefined;
      // A deadline (AbortSignal.timeout) is a timeout, as on the direct path; any other abort an interruption.
      const aborted = (): Error => {
        const reason: unknown = o.signal?.reason;
        return reason instanceof Error && reason.name === 'TimeoutError' ? reason : abortError();
      };
      const onAbort = (): void => abortRequest?.(aborted());
      const stopAtHead = (f: () => void): false => {
        settle(f);
        abortRequest?.(Object.assign(new Error('answer refused at its head'), { name: 'Refused' }));
        return false;
      };
      const settle = (f: () => void): void => {
        if (settled) return;
        settled = true;
        o.signal?.removeEventListener('abort', onAbort);
        f();
      };
      if (o.signal?.aborted) {
        reject(aborted());
        return;
      }
      o.signal?.addEventListener('abort', onAbort, { once: true });
      dispatcher.dispatch(
        {
          origin: target.origin,
          path: `${target.pathname}${target.search}`,
          method: 'GET',
          headers: this.headersFor(target, o.from),
        },
        {
          onConnect: (abort) => {
            abortRequest = abort;
            if (o.signal?.aborted) onAbort();
          },
          onHeaders: (status, raw, resume) => {
            if (status < 200) return true; // 1xx: the real answer follows
            const headers = parseHeaders(raw) as Record<string, string | string[] | undefined>;
            location = redirectTarget(status, headers);
            // A redirect or a refused answer ends at its head, as on the direct path: its body
            // (which may be endless, or far over the size limit) is never read.
            if (location !== undefined) return stopAtHead(() => resolve(location));
            try {
              accepted = handler.response(status, headers);
            } catch (e) {
              return stopAtHead(() => reject(e));
            }
            if (!accepted) return stopAtHead(() => resolve(undefined));
            resumeSocket = resume;
            return true;
          },
          onData: (chunk) => (accepted ? handler.data(chunk, resumeSocket) : false),
          onComplete: () => settle(() => resolve(location)),
          onError: (e) => settle(() => reject(proxyRefusal(e, o.signal, target.href) ?? e)),
        },
      );
    });
  }

  private headersFor(target: URL, from: number | undefined): Record<string, string> {
    const headers: Record<string, string> = { 'user-agent': 'mvmctl' };
    if (from) headers['range'] = `bytes=${from}-`;
    if (this.opts.credential && target.origin === this.opts.credential.origin) {
      headers['authorization'] = `Bearer ${this.opts.credential.token}`;
    }
    return headers;
  }

  /**
   * A small document (manifest, bundle, revocation list), read whole and
   * bounded, through the same request path as the large files.
   */
  get(
    url: string,
    maxBytes: number,
    o: { signal?: AbortSignal } = {},
  ): Promise<{ status: number; body: Buffer; url: string }> {
    const tooLarge = (): TransferError =>
      new TransferError(
        `GET ${url}: response larger than ${maxBytes} bytes`,
        false,
        'the server sent more than this document can be',
        this.fix,
      );
    return this.followRedirects<{ status: number; body: Buffer; url: string }>(
      url,
      async (target, current) => {
        const chunks: Buffer[] = [];
        let size = 0;
        let status = 0;
        const location = await this.streamOnce(target, o, {
          response: (s, headers) => {
            status = s;
            const length = Number(headers['content-length']);
            if (length > maxBytes) throw tooLarge(); // refused before any body byte
            return true;
          },
          data: (chunk) => {
            size += chunk.length;
            if (size > maxBytes) throw tooLarge();
            chunks.push(Buffer.from(chunk)); // only valid during the call
            return true;
          },
        });
        return location !== undefined
          ? { location }
          : { value: { status, body: Buffer.concat(chunks), url: current } };
      },
    );
  }

  /** An error for an HTTP status that is not the one wanted: 5xx and 429 may pass, the rest will not. */
  statusError(url: string, status: number, what = 'the file'): TransferError {
    const retryable = status >= 500 || status === 429 || status === 408;
    return new TransferError(
      `GET ${url}: HTTP ${status}`,
      retryable,
      status === 404
        ? `the release location has no ${what} at this URL`
        : `the server answered HTTP ${status}`,
      status === 404
        ? 'Check the version and arch (--version, --arch) and the release location (MVM_RELEASE_BASE_URL): no unsigned fallback is ever used.'
        : status === 401 || status === 403
          ? 'The release location refused access: set MVM_RELEASE_TOKEN for a private mirror, or check the URL.'
          : this.fix,
    );
  }

  /**
   * A transport failure: retryable (a reset, a refusal, a timeout can pass),
   * but for an interruption and an answer that is not HTTP (it will not change).
   */
  failure(url: string, e: unknown): TransferError {
    if (e instanceof TransferError) return e;
    const err = e as Error & { code?: string };
    if (err?.name === 'AbortError') {
      return new TransferError(`GET ${url} was interrupted`, false, INTERRUPTED, this.fix, e);
    }
    if (e instanceof ProtocolError) {
      return new TransferError(
        `GET ${url}: the server's answer is not valid HTTP/1.1 (${e.message})`,
        false,
        'the release location or a device on the way sent a malformed response',
        `${this.fix} If a proxy or mirror sits in between, try without it, or report it to whoever runs it.`,
        e,
      );
    }
    const timedOut = TIMEOUT_CODES.has(err?.code ?? '') || err?.name === 'TimeoutError';
    return new TransferError(
      `GET ${url}: ${timedOut ? `no answer within ${this.opts.timeoutMs / 1000} s` : (err?.code ?? err?.message ?? String(e))}`,
      true,
      timedOut ? 'the server did not answer in time' : (err?.message ?? String(e)),
      this.fix,
      e,
    );
  }

  async close(): Promise<void> {
    const agent = await this.undiciAgent?.catch(() => undefined);
    await agent?.dispatcher.close().catch(() => undefined);
  }
}

interface Undici {
  readonly dispatcher: Dispatcher;
  readonly parseHeaders: typeof import('undici').util.parseHeaders;
}

/**
 * undici reports a proxy that refuses a CONNECT (407, 403, 5xx) as an abort
 * of its own ("Proxy response (407) !== 200 when HTTP Tunneling"). The
 * operator did not interrupt anything: said as the proxy's answer, 5xx
 * retried like a server's, a 407 explained. Undefined for any other error.
 */
function proxyRefusal(
  e: unknown,
  signal: AbortSignal | undefined,
  url: string,
): TransferError | undefined {
  if (signal?.aborted) return undefined;
  const status = /Proxy response \((\d{3})\)/.exec((e as Error | undefined)?.message ?? '')?.[1];
  if (status === undefined) return undefined;
  const code = Number(status);
  return new TransferError(
    `GET ${url}: the proxy refused the connection (HTTP ${code})`,
    code >= 500,
    `the proxy named by HTTPS_PROXY / HTTP_PROXY answered ${code} to the tunnel request`,
    code === 407
      ? 'The proxy wants credentials: put them in its URL (HTTPS_PROXY=http://USER:PASSWORD@HOST:PORT), or exempt the release location with NO_PROXY.'
      : code === 403
        ? 'The proxy does not allow this destination: ask its operator to allow the release location, exempt it with NO_PROXY, or use the air-gapped path (dev fetch on another host, dev import-image here).'
        : 'Check the proxy (HTTPS_PROXY, HTTP_PROXY), exempt the release location with NO_PROXY, or retry later.',
    e,
  );
}

/** The Location of a redirect answer; undefined for any other answer. */
function redirectTarget(
  status: number,
  headers: Readonly<Record<string, string | string[] | undefined>>,
): string | undefined {
  const location = headers['location'];
  return REDIRECTS.has(status) && typeof location === 'string' ? location : undefined;
}

/** Whether the environment names a proxy for any scheme (undici's EnvHttpProxyAgent reads the same variables). */
const proxyConfigured = (env: NodeJS.ProcessEnv = process.env): boolean =>
  ['http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY'].some((v) => Boolean(env[v]));

/** Only http: and https: are ever requested, whatever a redirect names. */
function parseHttpUrl(current: string, first: string, fix: string): URL {
  let u: URL;
  try {
    u = new URL(current);
  } catch {
    throw new TransferError(`GET ${first}: bad URL ${current}`, false, 'not a URL', fix);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new TransferError(
      `GET ${first}: redirected to ${u.protocol} (${current})`,
      false,
      'only http and https are fetched',
      fix,
    );
  }
  return u;
}

/** Backoff before attempt `n` (1-based retries): 250 ms, 500 ms, 1 s. */
export const RETRY_DELAYS_MS = [250, 500, 1000] as const;

/**
 * Runs `attempt` up to 1 + RETRY_DELAYS_MS.length times while it fails with a
 * retryable transfer error; `onRetry` hears of each failure that is retried.
 */
export async function withRetries<T>(
  attempt: (n: number) => Promise<T>,
  o: { signal?: AbortSignal; onRetry?: (e: TransferError, delayMs: number) => void } = {},
): Promise<T> {
  for (let n = 0; ; n++) {
    try {
      return await attempt(n);
    } catch (e) {
      const delay = RETRY_DELAYS_MS[n];
      if (!isRetryable(e) || delay === undefined || o.signal?.aborted) throw e;
      o.onRetry?.(e as TransferError, delay);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}
