/**
 * Refreshing the revocation list over the network (SPEC.md section 5; issue 4).
 * A fetched list is trusted only after its signature verifies against the
 * revocations workflow identity and it keeps every entry of the verified list
 * already cached (append-only: a replayed older list is refused). Nothing that
 * fails is ever cached; the previous verified list stays in force.
 */
import { printable } from '../core/printable.js';
import { releaseCredential, revocationsDir, revocationsUrl, type Config } from '../config.js';
import { MvmError, ONLINE_FETCH_FAILED } from '../errors.js';
import { droppedEntries } from '../core/revocation.js';
import type { LoadedTrustedRoot } from '../trust/trusted-root.js';
import {
  installRevocationPair,
  MAX_LIST_BYTES,
  readCachedRevocations,
  REVOCATIONS_BUNDLE,
  REVOCATIONS_JSON,
  isRootGap,
  verifyRevocationPair,
  type CachedRevocations,
  type VerifiedList,
} from './cache.js';
import type { Fetcher } from './fetch.js';
import { forgottenRecalls, readRecallMemory, rememberList } from './memory.js';
import { audit } from '../audit/record.js';

export type RefreshOutcome =
  /** The cache is younger than 24 hours: no request made. */
  | { readonly action: 'cache-fresh' }
  /** MVM_OFFLINE / --offline: no request made. */
  | { readonly action: 'offline' }
  /** 404 upstream: "no recalls today"; nothing cached, a cached list still applies. */
  | { readonly action: 'not-found' }
  | { readonly action: 'refreshed'; readonly entries: number; readonly signer: string }
  /** Could not fetch: the error is a network error (counted as such). */
  | { readonly action: 'network-error'; readonly error: MvmError }
  /** Fetched but refused (signature, schema or rollback): never cached. */
  | { readonly action: 'rejected'; readonly error: MvmError };

export interface RefreshContext {
  readonly config: Config;
  readonly trustedRoot: LoadedTrustedRoot;
  readonly now: () => Date;
  readonly fetcher?: Fetcher;
  readonly offline?: boolean;
  /** Where a warning goes (an audit record that could not be written); stderr when absent. */
  readonly warn?: (message: string) => void;
}

/**
 * The cached list as it stands, or undefined when the cached pair does not
 * verify (then it is no baseline for rollback; a verified fetch replaces it).
 */
async function cachedBaseline(ctx: RefreshContext): Promise<CachedRevocations | undefined> {
  try {
    return await readCachedRevocations(
      revocationsDir(ctx.config),
      ctx.config.releaseRepo,
      ctx.trustedRoot,
      ctx.now(),
    );
  } catch (e) {
    if (e instanceof MvmError) return undefined;
    throw e;
  }
}

/** An outcome and, when nothing was installed, the verified cache as it was read (so callers need not read it again). */
export type RefreshResult = RefreshOutcome & { readonly unchanged?: CachedRevocations };

export async function refreshRevocations(
  ctx: RefreshContext,
  opts: { force: boolean },
): Promise<RefreshResult> {
  const cached = await cachedBaseline(ctx);
  const unchanged = cached ? { unchanged: cached } : {};
  if (!opts.force && cached?.state === 'verified' && cached.age === 'fresh')
    return { action: 'cache-fresh', ...unchanged };
  if (ctx.offline || ctx.config.offline) return { action: 'offline', ...unchanged };
  // Loaded only when a request is really made: offline and fresh-cache runs never pay for undici.
  const fetcher =
    ctx.fetcher ??
    (await import('./fetch.js')).httpFetcher({
      timeoutMs: ctx.config.httpTimeoutMs,
      maxBytes: MAX_LIST_BYTES,
      ...(releaseCredential(ctx.config) ? { credential: releaseCredential(ctx.config)! } : {}),
    });

  let json: Buffer;
  let bundle: Buffer;
  try {
    const listUrl = revocationsUrl(ctx.config, REVOCATIONS_JSON);
    const res = await fetcher.get(listUrl);
    if (res.status === 404) return { action: 'not-found', ...unchanged };
    if (res.status !== 200) throw httpStatusError(listUrl, res.status);
    json = res.body;
    const bundleUrl = revocationsUrl(ctx.config, REVOCATIONS_BUNDLE);
    const b = await fetcher.get(bundleUrl);
    if (b.status !== 200) throw httpStatusError(bundleUrl, b.status);
    bundle = b.body;
  } catch (e) {
    if (e instanceof MvmError && e.code === 'network')
      return { action: 'network-error', error: e, ...unchanged };
    throw e;
  }

  let incoming;
  try {
    incoming = verifyRevocationPair(json, bundle, ctx.config.releaseRepo, ctx.trustedRoot);
  } catch (e) {
    if (!(e instanceof MvmError)) throw e;
    return {
      action: 'rejected',
      error: new MvmError(e.code, `The fetched revocation list was refused: ${e.message}`, {
        cause: `${e.cause ? `${e.cause}; ` : ''}a list that does not verify is never cached or trusted`,
        fix: isRootGap(e)
          ? `The cached list stays in force. ${e.fix}`
          : 'The cached list stays in force. Check the mirror (MVM_RELEASE_BASE_URL) serves the pair from the revocations release.',
        ...(e.check ? { check: e.check } : {}),
        underlying: e,
      }),
    };
  }
  try {
    await installRevocationPair(revocationsDir(ctx.config), json, bundle, () =>
      checkNoRollback(ctx.config, ctx.trustedRoot, ctx.now(), incoming),
    );
    await rememberInstalled(ctx.config, incoming);
  } catch (e) {
    if (e instanceof MvmError && e.code === 'rollback') return { action: 'rejected', error: e };
    throw e;
  }
  return {
    action: 'refreshed',
    entries: incoming.list.revocations.length,
    signer: incoming.signer,
  };
}

/**
 * Throws the rollback error when `incoming` drops an entry of the list cached
 * now or of any list verified on this host before, or was signed before the
 * latest list trusted here (a replayed older signing).
 */
export async function checkNoRollback(
  config: Config,
  trustedRoot: LoadedTrustedRoot,
  now: Date,
  incoming: VerifiedList,
): Promise<void> {
  const cached = await readCachedRevocations(
    revocationsDir(config),
    config.releaseRepo,
    trustedRoot,
    now,
  ).catch((e: unknown) => {
    // A cached pair that does not verify is no baseline; the verified incoming list replaces it.
    if (e instanceof MvmError) return undefined;
    throw e;
  });
  const error = rollbackError(cached, incoming.list);
  if (error) throw error;
  const memory = await readRecallMemory(config);
  const forgotten = forgottenRecalls(memory, incoming.list.revocations);
  if (forgotten.length > 0) {
    throw new MvmError(
      'rollback',
      `The revocation list was refused: it drops recalls verified on this host before (${forgotten.map((r) => `${r.version} ${r.variant} ${r.arch}`).join(', ')})`,
      {
        cause: 'the list is append-only; an older list replayed would lift recalls',
      },
    );
  }
  if (incoming.signedAt && memory.latestSignedAt && incoming.signedAt < memory.latestSignedAt) {
    throw new MvmError(
      'rollback',
      `The revocation list was refused: it was signed at ${incoming.signedAt}, before the list already trusted here (${memory.latestSignedAt})`,
      {
        cause: 'a replayed older signing would hide recalls published since',
      },
    );
  }
}

/** Verifies nothing; records a newly installed list in the host's recall memory. */
export async function rememberInstalled(config: Config, incoming: VerifiedList): Promise<void> {
  await rememberList(
    config,
    await readRecallMemory(config),
    incoming.list.revocations,
    incoming.signedAt,
  );
}

/** The list is append-only: one that drops a cached entry is a replayed older list. */
export function rollbackError(
  cached: CachedRevocations | undefined,
  incoming: Parameters<typeof droppedEntries>[1],
): MvmError | undefined {
  if (cached?.state !== 'verified') return undefined;
  const dropped = droppedEntries(cached.list, incoming);
  if (dropped.length === 0) return undefined;
  const names = dropped.map((r) => `${r.version} ${r.variant} ${r.arch}`).join(', ');
  return new MvmError(
    'rollback',
    `The revocation list was refused: it drops recalls the cached list holds (${names})`,
    {
      cause: 'the list is append-only; an older list replayed would lift recalls',
      fix: 'Keep the cached list; fetch the current pair from the revocations release.',
    },
  );
}

function httpStatusError(url: string, status: number): MvmError {
  return new MvmError('network', `${ONLINE_FETCH_FAILED}: GET ${url} answered HTTP ${status}`, {
    cause: 'the release server or mirror did not serve the file',
  });
}

/** refreshRevocations, with every failure written to the audit log (and so counted). */
export async function refreshAndAudit(
  ctx: RefreshContext,
  opts: { force: boolean },
): Promise<RefreshResult> {
  const outcome = await refreshRevocations(ctx, opts);
  if (
    outcome.action === 'network-error' ||
    outcome.action === 'rejected' ||
    outcome.action === 'refreshed'
  ) {
    const failed = outcome.action !== 'refreshed';
    await audit(
      ctx.config,
      {
        event: 'revocations.refresh',
        outcome: failed ? 'failed' : 'ok',
        ...(failed
          ? { code: outcome.error.code, check: outcome.error.check, message: outcome.error.message }
          : {}),
      },
      ctx.now(),
    ).catch((e: unknown) =>
      // The refresh outcome stands; a lost audit record must still be seen.
      (ctx.warn ?? warnOnStderr)(
        `the audit record of this revocation refresh could not be written: ${printable((e as Error)?.message ?? String(e))}`,
      ),
    );
  }
  return outcome;
}

const warnOnStderr = (message: string): void => {
  process.stderr.write(`warning: ${message}\n`);
};
