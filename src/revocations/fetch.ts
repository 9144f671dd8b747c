/**
 * The revocation refresh's view of the HTTP client (src/net/http.ts): one
 * bounded GET, whole body, within one overall deadline. Every failure is a
 * network error (exit 16), never a signature error.
 */
import { HttpClient } from '../net/http.js';

export interface FetchResult {
  readonly status: number;
  readonly body: Buffer;
}

/** Injected so refresh logic can be driven by tests; the real one talks HTTP. */
export interface Fetcher {
  get(url: string): Promise<FetchResult>;
}

const FIX =
  'Check connectivity and proxy settings (HTTPS_PROXY, NO_PROXY), set MVM_OFFLINE=1 on an air-gapped host, or carry a list in (mvmctl revocations import).';

export function httpFetcher(opts: {
  timeoutMs: number;
  maxBytes: number;
  credential?: { origin: string; token: string };
}): Fetcher {
  const client = new HttpClient({
    timeoutMs: opts.timeoutMs,
    fix: FIX,
    ...(opts.credential ? { credential: opts.credential } : {}),
  });
  return {
    // A list is a few KiB: one deadline for the whole exchange, so a trickling server cannot hold an import.
    get: (url) => client.get(url, opts.maxBytes, { signal: AbortSignal.timeout(opts.timeoutMs) }),
  };
}
