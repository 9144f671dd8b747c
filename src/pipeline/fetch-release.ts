/**
 * `mvmctl dev fetch`: a transfer set for an air-gapped host, from the release
 * location (SPEC.md section 11). The small signed files come first and their
 * signature is verified before any large download (a wrong signer costs
 * seconds, not the rootfs); the artifacts follow concurrently, each renamed
 * into place only when its digest is the signed one. Nothing here installs:
 * `dev import-image --dir` (or `dev pull`, which runs the import pipeline on
 * this directory) is the one verifier that decides what reaches the store.
 */
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { releaseCredential, releaseFileUrl, revocationsUrl, type Config } from '../config.js';
import {
  artifactName,
  listedArtifact,
  MAX_MANIFEST_BYTES,
  parseManifest,
  releaseFileNames,
  type Arch,
  type ArtifactRole,
  type Manifest,
} from '../core/manifest.js';
import { findRecall } from '../core/revocation.js';
import { releaseTagVersion } from '../core/release.js';
import { MvmError, ONLINE_FETCH_FAILED } from '../errors.js';
import { MAX_BUNDLE_BYTES, replaceFile } from '../io/files.js';
import { download, prepareDownloads, type DownloadResult } from '../net/download.js';
import { HttpClient, isInterruption, withRetries, type TransferError } from '../net/http.js';
import {
  MAX_LIST_BYTES,
  REVOCATIONS_BUNDLE,
  REVOCATIONS_JSON,
  isRootGap,
  verifyRevocationPair,
  type VerifiedList,
} from '../revocations/cache.js';
import { audit, type AuditRecord } from '../audit/record.js';
import { verifyReleaseManifest } from './import-image.js';
import { fetchTrust, TRUST_BUNDLE_DIR, tufRepository, type FetchedTrust } from './carried-trust.js';
import { importDeadlineMs } from '../core/trust-policy.js';
import type { LoadedTrustedRoot } from '../trust/trusted-root.js';
import type { VerifiedSignature } from '../trust/verified.js';

export type FetchEvent =
  | { step: 'signature'; identity: string; issuer: string; logIndex: string }
  | { step: 'revocations'; state: 'fetched' | 'none'; entries: number }
  | { step: 'recalled-kept'; reason: string }
  | {
      step: 'download';
      role: ArtifactRole;
      name: string;
      bytes: number;
      sha256: string;
      reused: number;
      alreadyThere: boolean;
    }
  | { step: 'retry'; message: string; delayMs: number }
  | {
      step: 'trust';
      repository: string;
      versions: FetchedTrust['verified']['versions'];
      expires: string;
    };

export interface FetchContext {
  readonly config: Config;
  readonly trustedRoot: LoadedTrustedRoot;
  readonly version: string;
  readonly arch: Arch;
  /** The transfer set's directory: created when missing. */
  readonly dir: string;
  /** Carry a trust bundle in the set (`trust/`); false with --no-trust-bundle. */
  readonly carryTrust: boolean;
  /** Keep going when the release is recalled (for investigation); warned, never silent. */
  readonly allowRecalled: boolean;
  /** `input` for the operator's --out (exit 3), `store` for dev pull's private staging (exit 17). */
  readonly diskErrorCode: 'input' | 'store';
  readonly now: () => Date;
  readonly signal?: AbortSignal;
  readonly report: (e: FetchEvent) => void;
  readonly warn: (message: string) => void;
  readonly onProgress?: (role: ArtifactRole, bytes: number, total: number | undefined) => void;
}

export interface TransferSet {
  readonly version: string;
  readonly arch: Arch;
  readonly dir: string;
  readonly files: readonly { name: string; bytes: number; sha256: string }[];
  readonly signer: { identity: string; issuer: string; logIndex: string } | null;
  readonly revocations: { state: 'fetched' | 'none'; entries: number };
  /** Bytes actually transferred for the artifacts (less than their size when resumed or already there). */
  readonly transferred: number;
  /** The trust bundle in `trust/`: what it holds and when it must be imported by, or why there is none. */
  readonly trust:
    | {
        readonly state: 'carried';
        readonly dir: string;
        readonly repository: string;
        readonly versions: FetchedTrust['verified']['versions'];
        readonly expires: FetchedTrust['verified']['expires'];
        readonly importBy: string;
        readonly trustedRootSha256: string;
      }
    | { readonly state: 'not-carried'; readonly reason: string };
}

export async function fetchReleaseSet(ctx: FetchContext): Promise<TransferSet> {
  refuseOffline(ctx.config);
  const client = new HttpClient({
    timeoutMs: ctx.config.httpTimeoutMs,
    ...(releaseCredential(ctx.config) ? { credential: releaseCredential(ctx.config)! } : {}),
  });
  const facts = { version: ctx.version, arch: ctx.arch };
  // Ends what was started alongside (small requests, their retries) once the pipeline stops.
  const stop = new AbortController();
  const run: FetchContext & { trustedRoot: LoadedTrustedRoot } = {
    ...ctx,
    signal: ctx.signal ? AbortSignal.any([ctx.signal, stop.signal]) : stop.signal,
  };
  try {
    await prepareDir(run);
    prepareDownloads(); //                                               the workers boot meanwhile
    const trust = await carryTrust(run); //                             the trust bundle, small; the set is checked with its root
    if (trust.state === 'carried') run.trustedRoot = trust.fetched.trustedRoot;
    const pair = alongside(fetchRevocations(client, run)); //           the revocation pair (404: none), small
    const signed = await fetchSigned(client, run); //                  manifest + bundle
    const signature = verifySignature(signed, run); //                  the signature, before any large download
    const manifest = checkManifest(signed.manifest, signature, run); // the set asked for
    const list = await pair;
    checkRecall(manifest, list, run); //                                a recalled release stops here
    const downloaded = await downloadArtifacts(client, manifest, run); // kernel, rootfs, initrd at once
    await writeSmallFiles(signed, list, run); //                        the set is complete
    await record(ctx, { ...facts, outcome: 'ok' });
    return summary(manifest, signed, signature, list, downloaded, trust, run);
  } catch (e) {
    const err = asFetchError(e, ctx);
    if (err.code !== 'usage') {
      await record(ctx, {
        ...facts,
        outcome: 'failed',
        code: err.code,
        ...(err.check ? { check: err.check } : {}),
        message: err.message,
      }).catch((auditError: unknown) =>
        ctx.warn(`could not write the audit record: ${(auditError as Error).message}`),
      );
    }
    throw err;
  } finally {
    stop.abort();
    await client.close();
  }
}

/**
 * Starts `work` now, for its result to be awaited later: a failure counts only
 * where (and if) it is awaited, so errors are reported in the pipeline's order
 * (a bad manifest before a bad revocation list), whichever finished first.
 */
function alongside<T>(work: Promise<T>): Promise<T> {
  work.catch(() => undefined);
  return work;
}

function refuseOffline(config: Config): void {
  if (!config.offline) return;
  throw new MvmError(
    'network',
    `${ONLINE_FETCH_FAILED}: offline (MVM_OFFLINE=1 or --offline), nothing was requested`,
    {
      cause: 'this command downloads from the release location, and the network is off by request',
      fix: 'On an air-gapped host, carry a transfer set in and run mvmctl dev import-image --dir DIR; on a connected host, unset MVM_OFFLINE.',
    },
  );
}

/** An interruption is the operator's, not the network's: exit 130, partials kept for the next run. */
function asFetchError(e: unknown, ctx: FetchContext): MvmError {
  if (ctx.signal?.aborted) {
    return new MvmError('interrupted', `Interrupted: the download into ${ctx.dir} stopped`, {
      cause: 'SIGINT or SIGTERM',
      fix: 'Run the same command again: the partial downloads (NAME.partial) are resumed, not started over.',
    });
  }
  if (e instanceof MvmError) return e;
  return new MvmError('internal', String((e as Error)?.message ?? e), { underlying: e });
}

/** The output directory: created when missing, refused (exit 3) when it cannot hold the set. */
async function prepareDir(ctx: FetchContext): Promise<void> {
  try {
    await fs.mkdir(ctx.dir, { recursive: true, mode: 0o755 });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new MvmError(ctx.diskErrorCode, `Cannot use ${ctx.dir} for the transfer set`, {
      cause:
        code === 'EEXIST' || code === 'ENOTDIR'
          ? 'it (or a parent) exists and is not a directory'
          : (e as Error).message,
      fix: 'Name a directory you can write with --out (it is created when missing).',
      underlying: e,
    });
  }
  const st = await fs.stat(ctx.dir);
  if (!st.isDirectory()) {
    throw new MvmError(ctx.diskErrorCode, `Cannot use ${ctx.dir} for the transfer set`, {
      cause: 'it is not a directory',
      fix: 'Name a directory you can write with --out (it is created when missing).',
    });
  }
  // Found before any download, not after the rootfs: a read-only or foreign directory.
  await fs.access(ctx.dir, fs.constants.W_OK).catch((e: unknown) => {
    throw new MvmError(ctx.diskErrorCode, `Cannot write in ${ctx.dir}`, {
      cause: (e as Error).message,
      fix: 'Name a directory you can write with --out.',
      underlying: e,
    });
  });
}

interface SignedFiles {
  readonly manifest: Buffer;
  readonly bundle: Buffer;
  readonly manifestUrl: string;
  readonly bundleUrl: string;
}

/** A small file, retried like any transfer; a 404 names the URL (no unsigned fallback, ever). */
async function getSmall(
  client: HttpClient,
  url: string,
  maxBytes: number,
  what: string,
  ctx: FetchContext,
): Promise<Buffer | undefined> {
  return withRetries(
    async () => {
      // A small document has one deadline for the whole exchange (as the revocation refresh
      // has): a server trickling a byte now and then never lets the idle timeout fire, and would
      // hold dev fetch, dev pull and dev up (and the pull lock) as long as it liked.
      const deadline = AbortSignal.timeout(ctx.config.httpTimeoutMs);
      const signal = ctx.signal ? AbortSignal.any([ctx.signal, deadline]) : deadline;
      const res = await client.get(url, maxBytes, { signal });
      if (res.status === 200) return res.body;
      if (res.status === 404 && what === 'revocation list') return undefined;
      throw client.statusError(url, res.status, what);
    },
    { ...(ctx.signal ? { signal: ctx.signal } : {}), onRetry: retryReporter(ctx) },
  );
}

const retryReporter =
  (ctx: FetchContext) =>
  (e: TransferError, delayMs: number): void =>
    ctx.report({ step: 'retry', message: e.message, delayMs });

async function fetchSigned(client: HttpClient, ctx: FetchContext): Promise<SignedFiles> {
  const names = releaseFileNames(ctx.arch);
  const manifestUrl = releaseFileUrl(ctx.config, ctx.version, names.manifest);
  const bundleUrl = releaseFileUrl(ctx.config, ctx.version, names.bundle);
  const manifest = alongside(getSmall(client, manifestUrl, MAX_MANIFEST_BYTES, 'manifest', ctx));
  const bundle = alongside(getSmall(client, bundleUrl, MAX_BUNDLE_BYTES, 'manifest bundle', ctx));
  return { manifest: (await manifest)!, bundle: (await bundle)!, manifestUrl, bundleUrl };
}

/**
 * The import's own verifier (one verifier for every path in), before anything
 * large is requested; its cause and fix follow the failed check, and the URL
 * the manifest came from is named.
 */
function verifySignature(signed: SignedFiles, ctx: FetchContext): VerifiedSignature {
  try {
    return verifyReleaseManifest(signed.manifest, signed.bundle, signed.bundleUrl, ctx);
  } catch (e) {
    if (!(e instanceof MvmError && e.code === 'signature')) throw e;
    throw new MvmError('signature', `${e.message} (downloaded from ${signed.manifestUrl})`, {
      cause: `${e.cause ?? 'the manifest and its bundle do not verify'}; nothing large was downloaded`,
      fix: e.fix,
      ...(e.check ? { check: e.check } : {}),
      underlying: e,
    });
  }
}

/** After the signature: the manifest is for the version, arch and variant asked for, under its own tag. */
function checkManifest(bytes: Buffer, signature: VerifiedSignature, ctx: FetchContext): Manifest {
  const m = parseManifest(bytes);
  if (signature.signer.kind === 'certificate') {
    const tag = releaseTagVersion(signature.signer.identity, ctx.config.releaseRepo);
    if (tag !== m.version) {
      throw new MvmError(
        'signature',
        `Cosign verification failed for the imported manifest: it was signed at tag v${tag} but says version ${m.version}`,
        {
          check: 'identity',
          cause: 'a manifest is only trusted under the release tag it was signed at',
        },
      );
    }
  }
  if (m.version !== ctx.version) {
    throw new MvmError(
      'version',
      `The release location serves a manifest for ${m.version} under v${ctx.version}`,
      {
        cause: 'manifest.version is not the version asked for',
        fix: 'Check MVM_RELEASE_BASE_URL.',
      },
    );
  }
  if (m.arch !== ctx.arch) {
    throw new MvmError('arch', `The manifest is for arch ${m.arch}, not ${ctx.arch}`, {
      cause: 'the release location serves another arch’s manifest under this name',
      fix: 'Check MVM_RELEASE_BASE_URL.',
    });
  }
  if (m.variant !== 'dev') {
    throw new MvmError('manifest', `The manifest is for the ${m.variant} variant, not dev`, {
      fix: 'Check MVM_RELEASE_BASE_URL: dev fetch takes the dev image.',
    });
  }
  return m;
}

interface FetchedList {
  readonly json: Buffer;
  readonly bundle: Buffer;
  readonly verified: VerifiedList;
}

/** The revocation pair, verified against the revocations workflow; a 404 is "no recalls today". */
async function fetchRevocations(
  client: HttpClient,
  ctx: FetchContext,
): Promise<FetchedList | undefined> {
  // Both at once, as the manifest and its bundle are: one round trip (two with a
  // redirect) instead of two. With no list published, the bundle's 404 is not awaited.
  const pending = alongside(
    getSmall(
      client,
      revocationsUrl(ctx.config, REVOCATIONS_BUNDLE),
      MAX_LIST_BYTES,
      'revocation list bundle',
      ctx,
    ),
  );
  const json = await getSmall(
    client,
    revocationsUrl(ctx.config, REVOCATIONS_JSON),
    MAX_LIST_BYTES,
    'revocation list',
    ctx,
  );
  if (!json) return undefined;
  const bundle = (await pending)!; // only the list's own 404 means "none"; the bundle's throws
  let verified: VerifiedList;
  try {
    verified = verifyRevocationPair(json, bundle, ctx.config.releaseRepo, ctx.trustedRoot);
  } catch (e) {
    if (e instanceof MvmError && e.code === 'signature') {
      throw new MvmError(
        'signature',
        `Cosign verification failed for the revocation list at ${revocationsUrl(ctx.config, REVOCATIONS_JSON)}: ${e.message}`,
        {
          cause: `${e.cause ? `${e.cause}; ` : ''}a list that does not verify is never carried or trusted`,
          fix: isRootGap(e)
            ? e.fix
            : 'Check the release location (MVM_RELEASE_BASE_URL) serves the pair from the revocations release.',
          ...(e.check ? { check: e.check } : {}),
          underlying: e,
        },
      );
    }
    throw e;
  }
  return { json, bundle, verified };
}

/** Reported only after the match: the step line says whether this release is recalled. */
function checkRecall(m: Manifest, list: FetchedList | undefined, ctx: FetchContext): void {
  const recall = list && findRecall(list.verified.list, m);
  if (!recall) {
    ctx.report(
      list
        ? { step: 'revocations', state: 'fetched', entries: list.verified.list.revocations.length }
        : { step: 'revocations', state: 'none', entries: 0 },
    );
    return;
  }
  if (ctx.allowRecalled) {
    ctx.warn(
      `v${m.version} ${m.variant} ${m.arch} is RECALLED (${recall.reason}); fetching anyway (--allow-recalled). dev import-image will refuse it.`,
    );
    ctx.report({ step: 'recalled-kept', reason: recall.reason });
    return;
  }
  throw new MvmError(
    'revoked',
    `The release is on the project's revocation list: ${m.version} ${m.variant} ${m.arch} was recalled: ${recall.reason}`,
    {
      cause: `The release was recalled (${recall.revokedAt}); nothing large was downloaded`,
      fix: 'Fetch another release (--version), or pass --allow-recalled to fetch this one for investigation (dev import-image refuses it).',
    },
  );
}

interface Downloaded {
  readonly role: ArtifactRole;
  readonly name: string;
  readonly result: DownloadResult;
}

/** Kernel, rootfs (and the initrd when listed), at once; each checked against the signed digest. */
async function downloadArtifacts(
  client: HttpClient,
  m: Manifest,
  ctx: FetchContext,
): Promise<Downloaded[]> {
  const roles = (['kernel', 'rootfs', 'initrd'] as const).filter((r) => listedArtifact(m, r));
  const limits = {
    kernel: [ctx.config.maxKernelBytes, 'MVM_MAX_KERNEL_BYTES'],
    rootfs: [ctx.config.maxRootfsBytes, 'MVM_MAX_ROOTFS_BYTES'],
    initrd: [ctx.config.maxRootfsBytes, 'MVM_MAX_ROOTFS_BYTES'],
  } as const;
  // One failure stops the others (their partials stay for the next run).
  const stop = new AbortController();
  const signal = ctx.signal ? AbortSignal.any([ctx.signal, stop.signal]) : stop.signal;
  const results = await Promise.allSettled(
    roles.map(async (role): Promise<Downloaded> => {
      const entry = listedArtifact(m, role)!;
      const name = artifactName(m, role);
      try {
        const result = await download(
          client,
          {
            url: releaseFileUrl(ctx.config, m.version, name),
            dest: join(ctx.dir, name),
            sha256: entry.sha256,
            maxBytes: limits[role][0],
            limitVariable: limits[role][1],
            role,
            diskErrorCode: ctx.diskErrorCode,
          },
          {
            signal,
            onProgress: (bytes, total) => ctx.onProgress?.(role, bytes, total),
            onRetry: retryReporter(ctx),
          },
        );
        ctx.report({ step: 'download', role, name, ...result });
        return { role, name, result };
      } catch (e) {
        stop.abort();
        throw e;
      }
    }),
  );
  // The failure that stopped the others, not the interruptions it caused in them.
  const reasons = results
    .filter((r): r is PromiseRejectedResult => r.status === 'rejected')
    .map((r) => r.reason as unknown);
  if (reasons.length) throw reasons.find((e) => !isInterruption(e)) ?? reasons[0];
  return results.map((r) => (r as PromiseFulfilledResult<Downloaded>).value);
}

/** Manifest, bundle and revocation pair into the set, at once, each written whole then renamed. */
async function writeSmallFiles(
  signed: SignedFiles,
  list: FetchedList | undefined,
  ctx: FetchContext,
): Promise<void> {
  const names = releaseFileNames(ctx.arch);
  const files: [string, Buffer][] = [
    [names.manifest, signed.manifest],
    [names.bundle, signed.bundle],
    ...(list
      ? ([
          [REVOCATIONS_BUNDLE, list.bundle],
          [REVOCATIONS_JSON, list.json],
        ] as [string, Buffer][])
      : []),
  ];
  await Promise.all(
    files.map(async ([name, bytes]) => {
      try {
        // Not synced, as the downloads are not: a torn file fails its check wherever it is used.
        await replaceFile(join(ctx.dir, name), bytes, { mode: 0o644, sync: false });
      } catch (e) {
        throw new MvmError(ctx.diskErrorCode, `Cannot write ${join(ctx.dir, name)}`, {
          cause: (e as Error).message,
          underlying: e,
        });
      }
    }),
  );
}

const small = (name: string, bytes: Buffer) => ({
  name,
  bytes: bytes.length,
  sha256: createHash('sha256').update(bytes).digest('hex'),
});

function summary(
  m: Manifest,
  signed: SignedFiles,
  signature: VerifiedSignature,
  list: FetchedList | undefined,
  downloaded: Downloaded[],
  trust: CarriedBundle,
  ctx: FetchContext,
): TransferSet {
  return {
    version: m.version,
    arch: m.arch,
    dir: ctx.dir,
    files: [
      small(releaseFileNames(ctx.arch).manifest, signed.manifest),
      small(releaseFileNames(ctx.arch).bundle, signed.bundle),
      ...downloaded.map((d) => ({ name: d.name, bytes: d.result.bytes, sha256: d.result.sha256 })),
      ...(list ? [small(REVOCATIONS_JSON, list.json), small(REVOCATIONS_BUNDLE, list.bundle)] : []),
    ],
    signer:
      signature.signer.kind === 'certificate'
        ? {
            identity: signature.signer.identity,
            issuer: signature.signer.issuer,
            logIndex: signature.tlog.logIndex,
          }
        : null,
    revocations: list
      ? { state: 'fetched', entries: list.verified.list.revocations.length }
      : { state: 'none', entries: 0 },
    transferred: downloaded.reduce((n, d) => n + d.result.bytes - d.result.reused, 0),
    trust:
      trust.state === 'carried'
        ? {
            state: 'carried',
            dir: join(ctx.dir, TRUST_BUNDLE_DIR),
            repository: trust.fetched.repository,
            versions: trust.fetched.verified.versions,
            expires: trust.fetched.verified.expires,
            importBy: new Date(
              importDeadlineMs(Date.parse(trust.fetched.verified.expires.timestamp)),
            ).toISOString(),
            trustedRootSha256: trust.fetched.verified.trustedRootSha256,
          }
        : { state: 'not-carried', reason: trust.reason },
  };
}

type CarriedBundle =
  | { readonly state: 'carried'; readonly fetched: FetchedTrust }
  | { readonly state: 'not-carried'; readonly reason: string };

/**
 * The set's trust bundle (`trust/`): the Sigstore trusted root from a TUF
 * update, so that the air-gapped host verifies the set, and what comes after
 * it, with the keys Sigstore uses today. The set is checked here with that
 * root too, as it will be there. Not carried when asked (--no-trust-bundle)
 * or when the trusted root here is a named file (no TUF repository behind it).
 */
async function carryTrust(ctx: FetchContext): Promise<CarriedBundle> {
  if (!ctx.carryTrust) return { state: 'not-carried', reason: '--no-trust-bundle' };
  if (ctx.trustedRoot.origin === 'file')
    return {
      state: 'not-carried',
      reason: `the trusted root is the file ${ctx.trustedRoot.source} (--trusted-root or MVM_TRUSTED_ROOT)`,
    };
  const repository = tufRepository(ctx.config);
  const dir = join(ctx.dir, TRUST_BUNDLE_DIR);
  const fetched = await fetchTrust(
    ctx.config,
    repository,
    dir,
    ctx.now(),
    `Check connectivity and proxy settings (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) and the TUF repository (MVM_TUF_REPOSITORY, now ${repository}); or leave the trust bundle out with --no-trust-bundle.`,
  ).catch((e: unknown) => {
    if (e instanceof MvmError && e.code === 'input')
      throw new MvmError(ctx.diskErrorCode, e.message, {
        ...(e.cause !== undefined ? { cause: e.cause } : {}),
        fix: e.fix,
        underlying: e,
      });
    throw e;
  });
  ctx.report({
    step: 'trust',
    repository,
    versions: fetched.verified.versions,
    expires: fetched.verified.expires.timestamp,
  });
  return { state: 'carried', fetched };
}

/** Audited like an import: a wrong signer seen while fetching is the same signal to a fleet. */
async function record(ctx: FetchContext, fields: Partial<AuditRecord>): Promise<void> {
  // No duration: the verification histogram is the import's wall time, not a download's.
  await audit(ctx.config, { event: 'dev.fetch', outcome: 'failed', ...fields }, ctx.now());
}
