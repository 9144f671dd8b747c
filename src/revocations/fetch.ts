/**
 * The one HTTP client (undici): proxies from HTTPS_PROXY / HTTP_PROXY /
 * NO_PROXY, bounded connect and total time, bounded body size, redirects
 * followed (GitHub release downloads redirect to a CDN). Every failure is a
 * network error (exit 16), never a signature error.
 */
import { EnvHttpProxyAgent, request } from 'undici';
import { MvmError } from '../errors.js';

export interface FetchResult {
  readonly status: number;
  readonly body: Buffer;
}

/** Injected so refresh logic can be driven by tests; the real one talks HTTP. */
export interface Fetcher {
  get(url: string): Promise<FetchResult>;
}

const CONNECT_TIMEOUT_MS = 3_000;
/** undici's error codes for its connect, headers and body timeouts. */
const TIMEOUT_CODES = new Set([
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
]);

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

export function httpFetcher(opts: { timeoutMs: number; maxBytes: number }): Fetcher {
  // An unreachable host must be found out within seconds, not the OS's minutes.
  const dispatcher = quietly(
    () =>
      new EnvHttpProxyAgent({ connect: { timeout: Math.min(CONNECT_TIMEOUT_MS, opts.timeoutMs) } }),
  );
  return {
    async get(url: string): Promise<FetchResult> {
      const signal = AbortSignal.timeout(opts.timeoutMs);
      try {
        const res = await request(url, {
          dispatcher,
          signal,
          maxRedirections: 5,
          headersTimeout: opts.timeoutMs,
          bodyTimeout: opts.timeoutMs,
          headers: { 'user-agent': 'mvmctl' },
        });
        const chunks: Buffer[] = [];
        let size = 0;
        for await (const chunk of res.body) {
          size += (chunk as Buffer).length;
          if (size > opts.maxBytes) {
            res.body.destroy();
            throw new MvmError(
              'network',
              `GET ${url}: response larger than ${opts.maxBytes} bytes`,
              {
                cause: 'the server sent more than a revocation list can be',
              },
            );
          }
          chunks.push(chunk as Buffer);
        }
        return { status: res.statusCode, body: Buffer.concat(chunks) };
      } catch (e) {
        if (e instanceof MvmError) throw e;
        const err = e as Error & { code?: string };
        const timedOut =
          signal.aborted || TIMEOUT_CODES.has(err.code ?? '') || err.name === 'TimeoutError';
        throw new MvmError(
          'network',
          `GET ${url} failed: ${timedOut ? `no answer within ${opts.timeoutMs / 1000} s` : (err.code ?? err.message)}`,
          {
            cause: timedOut ? 'the server did not answer in time' : err.message,
            fix: 'Check connectivity and proxy settings (HTTPS_PROXY, NO_PROXY), set MVM_OFFLINE=1 on an air-gapped host, or carry a list in (mvmctl revocations import).',
            underlying: e,
          },
        );
      }
    },
  };
}
