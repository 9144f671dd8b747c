/**
 * `mvmctl dev import-image`: the air-gapped verification pipeline of SPEC.md
 * section 3, against four local files (five when the manifest lists an
 * initrd), with no network.
 */
import { createHash } from 'node:crypto';
import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { MvmError } from '../errors.js';
import { prebuiltDir, revocationsDir, type Config } from '../config.js';
import {
  artifactFor,
  artifactName,
  listedArtifact,
  MAX_MANIFEST_BYTES,
  parseManifest,
  releaseFileNames,
  sameDigest,
  unknownFieldsOf,
  type Arch,
  type ArtifactRole,
  type Manifest,
} from '../core/manifest.js';
import { releasePolicy, releaseTagVersion } from '../core/release.js';
import type { Revocation } from '../core/revocation.js';
import {
  MAX_BUNDLE_BYTES,
  openRegularFile,
  readRegularFile,
  type OpenedFile,
} from '../io/files.js';
import {
  MAX_LIST_BYTES,
  readCachedRevocations,
  REVOCATIONS_BUNDLE,
  REVOCATIONS_JSON,
  type CachedRevocations,
} from '../revocations/cache.js';
import { installCarriedPair } from '../revocations/install.js';
import { importCarriedTrust, type CarriedTrust } from './carried-trust.js';
import type { Fetcher } from '../revocations/fetch.js';
import {
  checkFreshness,
  hours,
  recallsInForce,
  refuseIfRecalled,
} from '../revocations/in-force.js';
import { refreshAndAudit } from '../revocations/refresh.js';
import { copyAndHash, type CopiedFile } from '../store/copy-hash.js';
import { builtAtOf, INSTALLED_FILES, readReceiptIfAny, type Receipt } from '../store/receipt.js';
import { ImageStore } from '../store/image-store.js';
import { audit, type AuditRecord, type Bypass } from '../audit/record.js';
import { parseBundle, type ParsedBundle } from '../trust/bundle.js';
import {
  checkStoreWritable,
  manifestSignatureFailure,
  refuseMisplacedArtifacts,
  refuseMissingFiles,
  refuseMixedUpDocuments,
  SIGNATURE_FAILED,
} from './import-mistakes.js';
import type { LoadedTrustedRoot } from '../trust/trusted-root.js';
import type { VerifiedSignature } from '../trust/verified.js';
import { verifyArtifact } from '../trust/verify.js';

/** The files of a release (SPEC.md sections 1 and 2), as the operator named them. */
export interface ReleaseSet {
  readonly manifest: string;
  readonly bundle: string;
  readonly vmlinux: string;
  readonly rootfs: string;
  /**
   * The initramfs: named with --initrd (`flag`: the manifest must list one),
   * or its release name in --dir (`dir`: used only when the manifest lists one).
   */
  readonly initrd?: { readonly path: string; readonly from: 'flag' | 'dir' };
  /**
   * A revocation pair carried with the set (`--dir`, as dev fetch writes it):
   * used when present, installed before the recall check.
   */
  readonly revocations?: { readonly json: string; readonly bundle: string };
  /** The directory the files were found in by their release names (--dir), for errors that name it. */
  readonly dir?: string;
}

/** Release file names for `--dir` (SPEC.md section 1). */
export function releaseSetIn(dir: string, arch: Arch): ReleaseSet {
  const names = releaseFileNames(arch);
  return {
    manifest: join(dir, names.manifest),
    bundle: join(dir, names.bundle),
    vmlinux: join(dir, names.vmlinux),
    rootfs: join(dir, names.rootfs),
    initrd: { path: join(dir, names.initrd), from: 'dir' },
    revocations: { json: join(dir, REVOCATIONS_JSON), bundle: join(dir, REVOCATIONS_BUNDLE) },
    dir,
  };
}

/** What the pipeline tells the operator as each step passes. */
export type ImportEvent =
  | { step: 'signature'; identity: string; issuer: string; logIndex: string }
  | { step: 'signature-skipped' }
  | { step: 'version'; version: string }
  | { step: 'arch'; arch: Arch }
  | { step: 'max-age'; notAfter: string; expired: boolean }
  | {
      step: 'revocation';
      state: 'absent' | 'fresh' | 'tolerated' | 'stale';
      ageHours?: number;
      entries?: number;
    }
  | { step: 'carried-list'; installed: boolean; entries: number; reason?: string }
  | { step: 'trust'; carried: Exclude<CarriedTrust, { state: 'none' }> }
  | { step: 'digest'; role: ArtifactRole; sha256: string; bytes: number; skipped: boolean }
  | { step: 'install'; path: string; alreadyInstalled: boolean; replaced?: Replacement };

/** Another build of the same version was installed, and this import replaced it. */
export interface Replacement {
  /** The build replaced: when it was built (null: its receipt and manifest do not say) and installed. */
  readonly previous: {
    readonly builtAt: string | null;
    readonly installedAt: string | null;
    readonly manifestSha256: string | null;
  };
  /** When the build now installed was built (the signed manifest's built_at). */
  readonly builtAt: string;
  /** The new build is older than the one it replaced: warned. */
  readonly older: boolean;
  /** The new build is already past its not_after: warned. */
  readonly expired: boolean;
}

export interface ImportContext {
  readonly config: Config;
  readonly trustedRoot: LoadedTrustedRoot;
  /** `mvmctl --version`: the manifest must be for exactly this release. */
  readonly mvmctlVersion: string;
  readonly hostArch: Arch;
  readonly now: () => Date;
  readonly requireFreshRevocations: boolean;
  /** --offline / MVM_OFFLINE=1: never try the network for the revocation list. */
  readonly offline: boolean;
  /** Injected for tests of the online refresh; the real HTTP client otherwise. */
  readonly fetcher?: Fetcher;
  readonly report: (e: ImportEvent) => void;
  readonly warn: (message: string) => void;
  readonly onProgress?: (role: ArtifactRole, bytes: number, total: number) => void;
  /**
   * Aborted by Ctrl-C or SIGTERM (its reason names the signal): the copy is
   * stopped (its cp children killed), the staging object removed, and the
   * import fails with `interrupted` (exit 130), audited. Once published, the
   * import completes.
   */
  readonly signal?: AbortSignal;
}

export interface ImportResult {
  readonly version: string;
  readonly path: string;
  readonly alreadyInstalled: boolean;
  readonly receipt: Receipt;
  /** Present when another build of this version was installed and is now replaced. */
  readonly replaced?: Replacement;
}

/**
 * The pipeline, in SPEC.md's order; every step throws a typed MvmError, and
 * nothing reaches the installed store unless all of them pass.
 */
export async function importImage(set: ReleaseSet, ctx: ImportContext): Promise<ImportResult> {
  const started = performance.now();
  const bypassed = escapeHatches(ctx);
  if (ctx.config.skipHashVerify) {
    ctx.warn(
      'MVM_SKIP_HASH_VERIFY=1: artifact SHA-256 digests are NOT compared; the image will be marked UNVERIFIED.',
    );
  }
  const facts: { -readonly [K in keyof AuditRecord]?: AuditRecord[K] } = { bypassed };
  try {
    const inputs = await openReleaseSet(set, ctx);
    await checkStoreWritable(ctx.config); //                              (the store can take it, before any work)
    ctx = await withCarriedTrust(set, ctx); //                            0. the set's trust bundle, if newer
    let initrd: OpenedFile | undefined;
    try {
      facts.manifestSha256 = sha256(inputs.manifest);
      const signature = verifySignature(inputs, ctx); //                 1. signature
      const manifest = parseManifest(inputs.manifest); //                2. parse + schema
      Object.assign(facts, {
        version: manifest.version,
        arch: manifest.arch,
        variant: manifest.variant,
      });
      checkReleaseTag(signature, manifest, ctx); //                       1. (the tag is the version)
      checkVariant(manifest); //                                          2. (the dev slot takes the dev variant)
      checkVersionPin(manifest, ctx); //                                  3. version pin
      checkArch(manifest, ctx); //                                        4. arch
      initrd = await openInitrd(set, manifest, ctx); //                    (the set the manifest lists)
      const expired = (facts.expired = checkMaxAge(manifest, ctx)); //    5. max-age (warn)
      const revocation = await checkRevocation(manifest, set, ctx); //   6. revocation
      const result = await withStagedObject(ctx, async (store, staged) => {
        const copied = await copyAndCheckDigests(inputs, initrd, manifest, staged, ctx); // 7. digests
        const receipt = makeReceipt(inputs, manifest, signature, revocation, copied, expired, ctx);
        await writeStagedImage(store, staged, inputs, receipt); //       8. install: the files,
        await refuseIfRecalledNow(manifest, ctx); //                        the recalls once more,
        return publishOnce(store, staged, receipt, ctx); //                 then one atomic publish
      });
      await record(
        ctx,
        {
          ...facts,
          // Counted honestly: a re-import found already installed is not a second install, and an
          // install with an escape hatch is not a verification that passed.
          outcome: result.alreadyInstalled ? 'unchanged' : bypassed.length > 0 ? 'bypassed' : 'ok',
          signer: signature?.signer.kind === 'certificate' ? signature.signer.identity : undefined,
        },
        started,
      ).catch((e: unknown) => {
        // Installed, but not on the record: that must not pass silently on a regulated host.
        throw new MvmError(
          'store',
          `v${result.version} is installed, but its audit record could not be written`,
          {
            cause: (e as Error).message,
            fix: 'Check the data directory (telemetry/audit.jsonl); the installed image is complete.',
            underlying: e,
          },
        );
      });
      return result;
    } finally {
      await Promise.all([
        inputs.vmlinux.handle.close(),
        inputs.rootfs.handle.close(),
        initrd?.handle.close(),
      ]);
    }
  } catch (e) {
    const err =
      e instanceof MvmError
        ? e
        : new MvmError('internal', String((e as Error)?.message ?? e), { underlying: e });
    // Every failure is audited, unreadable input included; a usage error never started an import.
    if (err.code !== 'usage') {
      await record(
        ctx,
        { ...facts, outcome: 'failed', code: err.code, check: err.check, message: err.message },
        started,
      ).catch((auditError: unknown) =>
        ctx.warn(`could not write the audit record: ${(auditError as Error).message}`),
      );
    }
    throw err;
  }
}

interface OpenedSet {
  readonly manifest: Buffer;
  readonly bundle: Buffer;
  readonly vmlinux: OpenedFile;
  readonly rootfs: OpenedFile;
  readonly set: ReleaseSet;
}

/** Reads the small files and opens the large ones; any unusable input is an input error (exit 3). */
async function openReleaseSet(set: ReleaseSet, ctx: ImportContext): Promise<OpenedSet> {
  const config = ctx.config;
  await refuseMissingFiles(set, ctx.hostArch);
  const manifest = await readRegularFile(set.manifest, 'manifest', MAX_MANIFEST_BYTES);
  const bundle = await readRegularFile(set.bundle, 'bundle', MAX_BUNDLE_BYTES);
  refuseMixedUpDocuments(set, manifest, bundle);
  // Bounded before any hashing: a sparse file can claim a terabyte and cost nothing to carry in.
  const vmlinux = await openRegularFile(set.vmlinux, 'kernel', config.maxKernelBytes, {
    limitVariable: 'MVM_MAX_KERNEL_BYTES',
  });
  try {
    const rootfs = await openRegularFile(set.rootfs, 'rootfs', config.maxRootfsBytes, {
      limitVariable: 'MVM_MAX_ROOTFS_BYTES',
    });
    return { manifest, bundle, vmlinux, rootfs, set };
  } catch (e) {
    await vmlinux.handle.close();
    throw e;
  }
}

/**
 * The initrd, opened once its signed manifest is parsed: required when the
 * manifest lists one (an input error naming the file and --initrd when it is
 * not there), refused when --initrd names one the manifest does not list.
 * Bounded like the rootfs (it can be as large as a small root filesystem).
 */
async function openInitrd(
  set: ReleaseSet,
  m: Manifest,
  ctx: ImportContext,
): Promise<OpenedFile | undefined> {
  const name = artifactName(m, 'initrd');
  const listed = listedArtifact(m, 'initrd') !== undefined;
  if (!listed) {
    if (set.initrd?.from === 'flag') {
      // Exit 3, not 2: the flags parse; it is the signed manifest that says this file is no part of the set.
      throw new MvmError(
        'input',
        `--initrd was given, but the manifest lists no initrd (${name}): this release set has no initramfs`,
        {
          cause: `v${m.version}'s signed manifest lists only the kernel and rootfs; an initrd it does not list cannot be verified`,
          fix: 'Drop --initrd, or use the manifest and bundle of the release that ships this initrd.',
        },
      );
    }
    if (set.initrd && (await lstat(set.initrd.path).catch(() => undefined))) {
      ctx.warn(`${set.initrd.path} is not listed by the manifest; it is ignored.`);
    }
    return undefined;
  }
  if (!set.initrd) {
    throw new MvmError(
      'input',
      `The manifest lists an initrd (${name}), but no initrd file was given`,
      {
        cause: `the release set is five files: the manifest requires ${name}, verified like the kernel and rootfs`,
        fix: `Name it with --initrd ${name} (or put it beside the other files and use --dir).`,
      },
    );
  }
  try {
    return await openRegularFile(set.initrd.path, 'initrd', ctx.config.maxRootfsBytes, {
      limitVariable: 'MVM_MAX_ROOTFS_BYTES',
    });
  } catch (e) {
    if (
      set.initrd.from === 'dir' &&
      e instanceof MvmError &&
      (e.underlying as NodeJS.ErrnoException | undefined)?.code === 'ENOENT'
    ) {
      throw new MvmError(
        'input',
        `The manifest lists an initrd (${name}), but ${set.initrd.path} does not exist`,
        {
          cause: `the release set is five files: the manifest requires ${name}, verified like the kernel and rootfs`,
          fix: `Carry ${name} in with the set and put it in the directory (or name it with --initrd).`,
          underlying: e,
        },
      );
    }
    throw e;
  }
}

function verifySignature(inputs: OpenedSet, ctx: ImportContext): VerifiedSignature | undefined {
  if (ctx.config.skipCosignVerify) {
    ctx.warn(
      'MVM_SKIP_COSIGN_VERIFY=1: the manifest signature is NOT verified; the image will be marked UNVERIFIED.',
    );
    ctx.report({ step: 'signature-skipped' });
    return undefined;
  }
  return verifyReleaseManifest(inputs.manifest, inputs.bundle, inputs.set.bundle, ctx);
}

/**
 * A release manifest against its bundle and the release workflow identity:
 * the one verifier behind dev import-image, dev pull and dev fetch. On
 * failure the cause and fix follow the check that failed (a trusted root
 * that lacks the log is no tampering).
 */
export function verifyReleaseManifest(
  manifest: Uint8Array,
  bundle: Uint8Array,
  bundleName: string,
  ctx: Pick<ImportContext, 'config' | 'trustedRoot'> & {
    report: (e: Extract<ImportEvent, { step: 'signature' }>) => void;
  },
): VerifiedSignature {
  let parsed: ParsedBundle | undefined;
  try {
    parsed = parseBundle(bundle);
    const v = verifyArtifact(
      manifest,
      parsed,
      ctx.trustedRoot,
      releasePolicy(ctx.config.releaseRepo),
    );
    if (v.signer.kind === 'certificate') {
      ctx.report({
        step: 'signature',
        identity: v.signer.identity,
        issuer: v.signer.issuer,
        logIndex: v.tlog.logIndex,
      });
    }
    return v;
  } catch (e) {
    if (e instanceof MvmError && e.code === 'signature') {
      throw manifestSignatureFailure(
        e,
        parsed,
        ctx.trustedRoot,
        ctx.config.releaseRepo,
        bundleName,
      );
    }
    throw e;
  }
}

/** A manifest is trusted only under the tag it was released with. */
function checkReleaseTag(
  signature: VerifiedSignature | undefined,
  m: Manifest,
  ctx: ImportContext,
): void {
  if (!signature || signature.signer.kind !== 'certificate') return;
  const tag = releaseTagVersion(signature.signer.identity, ctx.config.releaseRepo);
  if (tag !== m.version) {
    throw new MvmError(
      'signature',
      `${SIGNATURE_FAILED}: it was signed at tag v${tag} but says version ${m.version}`,
      {
        check: 'identity',
        cause: 'a manifest is only trusted under the release tag it was signed at',
        fix: 'Re-export both files together from the same release tag.',
      },
    );
  }
}

/** `dev import-image` fills the dev slot: another variant there would escape the dev variant's recalls. */
function checkVariant(m: Manifest): void {
  if (m.variant !== 'dev') {
    throw new MvmError(
      'manifest',
      `The manifest is for the ${m.variant} variant; dev import-image installs only the dev variant`,
      {
        cause: `dev/prebuilt/v${m.version} holds the dev image, and the dev variant's recalls apply to it`,
        fix: 'Use the release’s dev-image-{arch}.manifest.json with its bundle and the dev kernel and rootfs.',
      },
    );
  }
}

function checkVersionPin(m: Manifest, ctx: ImportContext): void {
  ctx.report({ step: 'version', version: m.version });
  if (m.version !== ctx.mvmctlVersion) {
    throw new MvmError(
      'version',
      `Imported manifest is for a different mvmctl version: manifest ${m.version}, mvmctl ${ctx.mvmctlVersion}`,
      {
        cause: 'manifest.version doesn’t match mvmctl --version exactly',
      },
    );
  }
}

function checkArch(m: Manifest, ctx: ImportContext): void {
  if (m.arch !== ctx.hostArch) {
    throw new MvmError('arch', `Manifest is for arch ${m.arch} but this host is ${ctx.hostArch}`, {
      cause: 'Wrong arch',
    });
  }
  ctx.report({ step: 'arch', arch: m.arch });
}

function checkMaxAge(m: Manifest, ctx: ImportContext): boolean {
  const expired = ctx.now() > m.notAfter;
  ctx.report({ step: 'max-age', notAfter: m.notAfter.toISOString(), expired });
  if (expired) {
    ctx.warn(
      `The manifest is past its max-age (not_after ${m.notAfter.toISOString()}); installing anyway (max-age only warns). Consider a newer release.`,
    );
  }
  return expired;
}

/** Step 6: the list (refreshed when old), the recalls remembered on this host, freshness, then matching. */
async function checkRevocation(
  m: Manifest,
  set: ReleaseSet,
  ctx: ImportContext,
): Promise<CachedRevocations> {
  await installCarriedList(set, ctx);
  // The cache as the refresh step read and verified it, unless it changed or did not verify.
  const cached = (await refreshIfStale(ctx)) ?? (await readCache(ctx));
  const recalls = await recallsInForce(cached, ctx, { warnForgotten: true });
  checkFreshness(cached, ctx);
  refuseIfRecalled(m, recalls);
  reportRevocation(cached, recalls, ctx);
  return cached;
}

/**
 * The list carried with the set, when there is one: verified against the
 * revocations workflow (a pair that fails is a signature error: the set was
 * tampered with), then installed unless it would roll the cached list back
 * (then the newer cached list stays in force, with a warning).
 */
async function installCarriedList(set: ReleaseSet, ctx: ImportContext): Promise<void> {
  if (!set.revocations) return;
  const [json, bundle] = await Promise.all(
    [set.revocations.json, set.revocations.bundle].map(async (path) =>
      (await lstat(path).catch(() => undefined))
        ? readRegularFile(path, 'revocation list', MAX_LIST_BYTES)
        : undefined,
    ),
  );
  if (!json && !bundle) return;
  if (!json || !bundle) {
    const missing = json ? set.revocations.bundle : set.revocations.json;
    throw new MvmError('input', `The set carries half a revocation pair: ${missing} is missing`, {
      cause: 'a revocation list is used only with its bundle, from the same revocations release',
      fix: `Carry both ${REVOCATIONS_JSON} and ${REVOCATIONS_BUNDLE} (dev fetch writes both), or neither.`,
    });
  }
  try {
    const list = await installCarriedPair(ctx.config, ctx.trustedRoot, json, bundle, ctx.now());
    await audit(ctx.config, { event: 'revocations.import', outcome: 'ok' }, ctx.now());
    ctx.report({ step: 'carried-list', installed: true, entries: list.list.revocations.length });
  } catch (e) {
    if (!(e instanceof MvmError && e.code === 'rollback')) throw e;
    ctx.warn(
      `The revocation list in the set is older than the one cached here (${e.message}); the cached list stays in force.`,
    );
    await audit(
      ctx.config,
      { event: 'revocations.import', outcome: 'failed', code: 'rollback', message: e.message },
      ctx.now(),
    );
    ctx.report({ step: 'carried-list', installed: false, entries: 0, reason: e.message });
  }
}

const readCache = (ctx: ImportContext): Promise<CachedRevocations> =>
  readCachedRevocations(
    revocationsDir(ctx.config),
    ctx.config.releaseRepo,
    ctx.trustedRoot,
    ctx.now(),
  );

function reportRevocation(
  cached: CachedRevocations,
  recalls: { forgotten: readonly Revocation[] },
  ctx: ImportContext,
): void {
  if (cached.state === 'absent') {
    ctx.warn(
      `No revocation list is cached in ${cached.dir}; proceeding without a recall check${recalls.forgotten.length ? ' beyond the recalls remembered on this host' : ''}. Carry in a fresh revoked-versions.json + .bundle pair to enable it.`,
    );
    ctx.report({ step: 'revocation', state: 'absent' });
    return;
  }
  ctx.report({
    step: 'revocation',
    state: cached.age,
    ageHours: hours(cached.ageMs),
    entries: cached.list.revocations.length,
  });
}

/**
 * Step 8, just before the publish: a recall installed while the copy ran (a
 * new cached list, or a recall remembered since) stops it. Read from disk
 * again, never from what step 6 saw.
 */
async function refuseIfRecalledNow(m: Manifest, ctx: ImportContext): Promise<void> {
  const cached = await readCache(ctx);
  refuseIfRecalled(m, await recallsInForce(cached, ctx, { warnForgotten: false }));
}

/** Seed policy: a cache older than 24 hours is refreshed when the network is there; a failure never blocks. */
async function refreshIfStale(ctx: ImportContext): Promise<CachedRevocations | undefined> {
  const outcome = await refreshAndAudit(
    {
      config: ctx.config,
      trustedRoot: ctx.trustedRoot,
      now: ctx.now,
      offline: ctx.offline,
      warn: ctx.warn,
      ...(ctx.fetcher ? { fetcher: ctx.fetcher } : {}),
    },
    { force: false },
  );
  switch (outcome.action) {
    case 'network-error':
      ctx.warn(
        `Could not refresh the revocation list (${outcome.error.message}); using the cached list, if any.`,
      );
      break;
    case 'rejected':
      ctx.warn(
        `REVOCATION LIST REFUSED: ${outcome.error.message}. The previously cached list stays in force.`,
      );
      break;
    case 'not-found':
      ctx.warn('The release location publishes no revocation list (404): no recalls today.');
      break;
    default:
      break;
  }
  return outcome.unchanged;
}

/**
 * Runs `build` in a fresh staging object of the store; the object is removed
 * unless it was published. Interrupted (ctx.signal: Ctrl-C, SIGTERM), the
 * copy stops and the object is removed before the import fails with
 * `interrupted` (exit 130): 1.5 GB of half-copied rootfs is never left behind.
 */
async function withStagedObject<T>(
  ctx: ImportContext,
  build: (store: ImageStore, staged: string) => Promise<T>,
): Promise<T> {
  if (ctx.signal?.aborted) throw interrupted(ctx, 'nothing was copied into the store');
  const store = new ImageStore(prebuiltDir(ctx.config), ctx.config.dataDir);
  await store.open();
  const staged = await store.stage();
  try {
    return await build(store, staged);
  } catch (e) {
    // The first failure is the one to report; an object left here is collected by the next run.
    await store
      .discard(staged)
      .catch((d: unknown) => ctx.warn(`could not remove ${staged}: ${(d as Error).message}`));
    if (stoppedBySignal(e, ctx)) {
      const what = 'its partial copy was removed from the store; nothing was installed';
      throw interrupted(ctx, what, e);
    }
    throw e;
  }
}

/**
 * Whether a failure is the interruption's doing: a copy stopped (its cp
 * killed) or any store-side failure once the signal came. A verification
 * verdict (digest, recall) reached meanwhile stays what it is.
 */
function stoppedBySignal(e: unknown, ctx: ImportContext): boolean {
  if (e instanceof MvmError && e.code === 'interrupted') return true;
  if (!ctx.signal?.aborted) return false;
  return !(e instanceof MvmError) || ['store', 'input', 'internal'].includes(e.code);
}

/** The signal's name when mvmctl got it; otherwise (a cp stopped by its own Ctrl-C first) what the copy said. */
function interrupted(ctx: ImportContext, what: string, e?: unknown): MvmError {
  const by = ctx.signal?.aborted ? String(ctx.signal.reason) : undefined;
  return new MvmError('interrupted', `The import was interrupted${by ? ` (${by})` : ''}: ${what}`, {
    cause: by ? `mvmctl received ${by} while importing` : String((e as Error)?.message ?? e),
  });
}

interface CopiedImage {
  readonly kernel: CopiedFile;
  readonly rootfs: CopiedFile;
  readonly initrd: CopiedFile | undefined;
}

/** Step 7: copies kernel, rootfs (and initrd) into the staging object at once, hashing the bytes installed. */
async function copyAndCheckDigests(
  inputs: OpenedSet,
  initrdFile: OpenedFile | undefined,
  m: Manifest,
  staged: string,
  ctx: ImportContext,
): Promise<CopiedImage> {
  ctx.onProgress?.('kernel', 0, inputs.vmlinux.size);
  ctx.onProgress?.('rootfs', 0, inputs.rootfs.size);
  if (initrdFile) ctx.onProgress?.('initrd', 0, initrdFile.size);
  const [kernel, rootfs, initrd] = await Promise.all([
    copyAndHash(
      inputs.vmlinux,
      join(staged, INSTALLED_FILES.kernel),
      (b) => ctx.onProgress?.('kernel', b, inputs.vmlinux.size),
      'auto',
      ctx.signal,
    ),
    copyAndHash(
      inputs.rootfs,
      join(staged, INSTALLED_FILES.rootfs(m.rootfsFormat)),
      (b) => ctx.onProgress?.('rootfs', b, inputs.rootfs.size),
      'auto',
      ctx.signal,
    ),
    initrdFile
      ? copyAndHash(
          initrdFile,
          join(staged, INSTALLED_FILES.initrd),
          (b) => ctx.onProgress?.('initrd', b, initrdFile.size),
          'auto',
          ctx.signal,
        )
      : undefined,
  ]).catch((e: unknown) => {
    if (e instanceof MvmError) throw e;
    // Disk full, quota, permissions, a failing cp: the store, not the release set, is at fault.
    throw new MvmError('store', `Cannot copy the image into ${staged}`, {
      cause: (e as Error).message,
      underlying: e,
    });
  });
  // A file given in another's place is the operator's slip, said as such before any mismatch.
  if (!ctx.config.skipHashVerify) {
    refuseMisplacedArtifacts(
      { ...inputs.set, initrd: initrdFile?.path },
      {
        kernel: kernel.sha256,
        rootfs: rootfs.sha256,
        ...(initrd ? { initrd: initrd.sha256 } : {}),
      },
      m,
    );
  }
  checkDigest('kernel', kernel, inputs.set.vmlinux, m, ctx);
  checkDigest('rootfs', rootfs, inputs.set.rootfs, m, ctx);
  if (initrd && initrdFile) checkDigest('initrd', initrd, initrdFile.path, m, ctx);
  return { kernel, rootfs, initrd };
}

/** What was verified, by whom, when: written beside the image. */
function makeReceipt(
  inputs: OpenedSet,
  m: Manifest,
  signature: VerifiedSignature | undefined,
  revocation: CachedRevocations,
  copied: CopiedImage,
  expired: boolean,
  ctx: ImportContext,
): Receipt {
  const bypassed = escapeHatches(ctx);
  const artifact = (role: ArtifactRole, file: string, c: CopiedFile) => ({
    file,
    name: artifactFor(m, role).name,
    sha256: c.sha256,
    bytes: c.bytes,
  });
  return {
    schema: 1,
    version: m.version,
    arch: m.arch,
    variant: m.variant,
    rootfsFormat: m.rootfsFormat,
    verification: bypassed.length ? 'UNVERIFIED' : 'verified',
    bypassed,
    signer:
      signature?.signer.kind === 'certificate'
        ? {
            identity: signature.signer.identity,
            issuer: signature.signer.issuer,
            logIndex: signature.tlog.logIndex,
            integratedTime: signature.tlog.integratedTime,
            signedTime: signature.signedTime,
          }
        : null,
    manifestSha256: sha256(inputs.manifest),
    bundleSha256: sha256(inputs.bundle),
    artifacts: {
      kernel: artifact('kernel', INSTALLED_FILES.kernel, copied.kernel),
      rootfs: artifact('rootfs', INSTALLED_FILES.rootfs(m.rootfsFormat), copied.rootfs),
      ...(copied.initrd
        ? { initrd: artifact('initrd', INSTALLED_FILES.initrd, copied.initrd) }
        : {}),
    },
    builtAt: m.builtAt.toISOString(),
    notAfter: m.notAfter.toISOString(),
    expiredAtInstall: expired,
    revocation:
      revocation.state === 'absent'
        ? { state: 'absent' }
        : { state: revocation.age, ageHours: hours(revocation.ageMs) },
    installedAt: ctx.now().toISOString(),
    mvmctlVersion: ctx.mvmctlVersion,
    trustedRoot: { source: ctx.trustedRoot.source, sha256: ctx.trustedRoot.sha256 },
    ...(Object.keys(unknownFieldsOf(m)).length
      ? { manifestUnknownFields: unknownFieldsOf(m) }
      : {}),
  };
}

/** The verified manifest and bundle and the receipt, beside the copied artifacts. */
async function writeStagedImage(
  store: ImageStore,
  staged: string,
  inputs: OpenedSet,
  receipt: Receipt,
): Promise<void> {
  await store.writeFile(staged, INSTALLED_FILES.manifest, inputs.manifest);
  await store.writeFile(staged, INSTALLED_FILES.bundle, inputs.bundle);
  await store.writeFile(staged, INSTALLED_FILES.receipt, `${JSON.stringify(receipt, null, 2)}\n`);
}

/**
 * One atomic publish, unless the same verified image is already installed
 * (then it is left as it is). Another build of the version in its place is
 * replaced, and said so: both built_at times, and a warning when the new
 * build is older or already expired. Interrupted before this point, nothing
 * is published.
 */
async function publishOnce(
  store: ImageStore,
  staged: string,
  receipt: Receipt,
  ctx: ImportContext,
): Promise<ImportResult> {
  if (ctx.signal?.aborted) throw new MvmError('interrupted', 'interrupted before the publish');
  const existing = await sameImageInstalled(store, receipt);
  if (existing) {
    await store.discard(staged);
    ctx.report({ step: 'install', path: existing, alreadyInstalled: true });
    return { version: receipt.version, path: existing, alreadyInstalled: true, receipt };
  }
  const previous = await installedBuild(store, receipt.version);
  await store.publish(receipt.version, staged);
  const path = join(store.root, `v${receipt.version}`);
  const replaced = previous ? replacement(previous, receipt, ctx) : undefined;
  ctx.report({ step: 'install', path, alreadyInstalled: false, ...(replaced ? { replaced } : {}) });
  return {
    version: receipt.version,
    path,
    alreadyInstalled: false,
    receipt,
    ...(replaced ? { replaced } : {}),
  };
}

/** The build of `version` installed right now, if any: its receipt (when readable) and built_at. */
async function installedBuild(
  store: ImageStore,
  version: string,
): Promise<{ receipt: Receipt | undefined; builtAt: string | undefined } | undefined> {
  const img = await store.installed(version);
  if (!img) return undefined;
  const receipt = await readReceiptIfAny(img.dir);
  return { receipt, builtAt: await builtAtOf(img.dir, receipt) };
}

/** What replacing `previous` with the build of `receipt` means, warned where it is a step back. */
function replacement(
  previous: { receipt: Receipt | undefined; builtAt: string | undefined },
  receipt: Receipt,
  ctx: ImportContext,
): Replacement {
  const builtAt = receipt.builtAt ?? '';
  const older =
    previous.builtAt !== undefined && Date.parse(builtAt) < Date.parse(previous.builtAt);
  const was = `the build of ${previous.builtAt ?? 'an unknown date'}`;
  if (older) {
    ctx.warn(
      `v${receipt.version}: the build installed now (built ${builtAt}) is OLDER than ${was} it replaced. If that was not intended, import the newer set again.`,
    );
  }
  if (receipt.expiredAtInstall) {
    ctx.warn(
      `v${receipt.version}: the build installed now is already past its not_after (${receipt.notAfter}); it replaced ${was}.`,
    );
  }
  return {
    previous: {
      builtAt: previous.builtAt ?? null,
      installedAt: previous.receipt?.installedAt ?? null,
      manifestSha256: previous.receipt?.manifestSha256 ?? null,
    },
    builtAt,
    older,
    expired: receipt.expiredAtInstall,
  };
}

function checkDigest(
  role: ArtifactRole,
  copied: CopiedFile,
  path: string,
  m: Manifest,
  ctx: ImportContext,
): void {
  const expected = artifactFor(m, role).sha256;
  const ok = sameDigest(copied.sha256, expected);
  if (!ok && !ctx.config.skipHashVerify) {
    throw new MvmError(
      'digest',
      `${role} SHA-256 mismatch: the manifest records ${expected}, ${path} has ${copied.sha256}`,
      {
        cause: 'Artifact tampered or corrupted in transit',
      },
    );
  }
  ctx.report({
    step: 'digest',
    role,
    sha256: copied.sha256,
    bytes: copied.bytes,
    skipped: ctx.config.skipHashVerify,
  });
}

/** Idempotence: the same verified set already installed is left as it is. */
async function sameImageInstalled(
  store: ImageStore,
  receipt: Receipt,
): Promise<string | undefined> {
  const img = await store.installed(receipt.version);
  if (!img) return undefined;
  // Unreadable (undefined): replace it with this verified image.
  const r = await readReceiptIfAny(img.dir);
  const same =
    r !== undefined &&
    r.manifestSha256 === receipt.manifestSha256 &&
    r.verification === receipt.verification &&
    r.artifacts?.kernel?.sha256 === receipt.artifacts.kernel.sha256 &&
    r.artifacts?.rootfs?.sha256 === receipt.artifacts.rootfs.sha256 &&
    r.artifacts?.initrd?.sha256 === receipt.artifacts.initrd?.sha256;
  return same ? join(store.root, `v${receipt.version}`) : undefined;
}

/**
 * A set from `dev fetch` carries the Sigstore trusted root it was verified
 * with (`trust/`, TUF-verified): imported when it is newer than this host's,
 * and the set is then checked with it. A bundle that does not verify stops
 * the import; one older than the installed trust, or past its expiry, is left
 * out with a line saying so.
 */
async function withCarriedTrust(set: ReleaseSet, ctx: ImportContext): Promise<ImportContext> {
  if (set.dir === undefined) return ctx;
  const { carried, trustedRoot } = await importCarriedTrust(
    ctx.config,
    set.dir,
    ctx.trustedRoot,
    ctx.now(),
  );
  if (carried.state === 'none') return ctx;
  ctx.report({ step: 'trust', carried });
  return trustedRoot === ctx.trustedRoot ? ctx : { ...ctx, trustedRoot };
}

function escapeHatches(ctx: ImportContext): Bypass[] {
  const out: Bypass[] = [];
  if (ctx.config.skipCosignVerify) out.push('cosign');
  if (ctx.config.skipHashVerify) out.push('hash');
  return out;
}

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

async function record(
  ctx: ImportContext,
  fields: Partial<AuditRecord>,
  started: number,
): Promise<void> {
  await audit(
    ctx.config,
    {
      event: 'dev.import-image',
      outcome: 'failed',
      ...fields,
      durationSeconds: Math.round(((performance.now() - started) / 1000) * 1e6) / 1e6,
    },
    ctx.now(),
  );
}
