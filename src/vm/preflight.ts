/**
 * What `mvmctl dev up` checks before anything boots (SPEC.md section 8, steps
 * 1 to 3): the installed image of this release, its receipt, the signed
 * manifest beside it (its signature verified again, offline), the recalls in
 * force on this host, and the installed bytes against the digests that
 * manifest signs. No network, nothing written to the image; every failure is
 * a typed MvmError and nothing is started.
 *
 * The receipt is written by mvmctl and signed by nobody: anyone who can write
 * the store can edit it. So it is never the reference for a digest: the signed
 * manifest is, and the receipt must agree with it.
 *
 * What is hashed is what boots: each artifact is opened once, without
 * following a link, hashed through that descriptor, and the same descriptor
 * is handed to QEMU (`BootableImage.opened`), which reads it through
 * /proc/self/fd. A file renamed or replaced in the store after the hash is
 * not the one QEMU gets. What a descriptor cannot stop is a write into the
 * same file by someone who can write the store (its owner, or root), who
 * could as well change mvmctl itself.
 */
import { createHash } from 'node:crypto';
import { constants, promises as fs } from 'node:fs';
import { join, resolve } from 'node:path';
import { prebuiltDir, revocationsDir, type Config } from '../config.js';
import {
  listedArtifact,
  MAX_MANIFEST_BYTES,
  parseManifest,
  sameDigest,
  type Manifest,
} from '../core/manifest.js';
import { releasePolicy, releaseTagVersion } from '../core/release.js';
import { MvmError } from '../errors.js';
import { MAX_BUNDLE_BYTES, readRegularFile, sha256OfOpened } from '../io/files.js';
import { readCachedRevocations } from '../revocations/cache.js';
import { checkFreshness, recallsInForce, refuseIfRecalled } from '../revocations/in-force.js';
import { ImageStore, type InstalledImage } from '../store/image-store.js';
import {
  INSTALLED_FILES,
  MAX_RECEIPT_BYTES,
  type InstalledArtifact,
  type Receipt,
} from '../store/receipt.js';
import { parseBundle } from '../trust/bundle.js';
import type { LoadedTrustedRoot } from '../trust/trusted-root.js';
import { verifyArtifact } from '../trust/verify.js';
import { MVMCTL_VERSION } from '../version.js';

export interface BootableImage {
  readonly version: string;
  /** The store object the version link points at. */
  readonly objectDir: string;
  /** Absolute paths inside the object. */
  readonly kernel: string;
  readonly rootfs: string;
  readonly initrd?: string;
  readonly receipt: Receipt;
  /**
   * The descriptors the artifacts were hashed through, still open: QEMU boots
   * these, never a path looked up again. The caller closes them (`close`).
   */
  readonly opened: OpenedArtifacts;
}

export interface OpenedArtifacts {
  readonly kernel: fs.FileHandle;
  readonly rootfs: fs.FileHandle;
  readonly initrd?: fs.FileHandle;
  readonly close: () => Promise<void>;
}

export interface PreflightContext {
  readonly config: Config;
  readonly trustedRoot: LoadedTrustedRoot;
  readonly now: () => Date;
  readonly warn: (message: string) => void;
  /** Default: this mvmctl's version (`mvmctl --version`). */
  readonly version?: string;
}

/** The checks in SPEC.md's order; the image is bootable only when every one passes. */
export async function preflightDevImage(ctx: PreflightContext): Promise<BootableImage> {
  const version = ctx.version ?? MVMCTL_VERSION;
  const image = await findInstalledImage(ctx.config, version); //  1. image
  const receipt = await readReceipt(image); //
  warnIfUnverified(receipt, ctx); //                                   (escape hatch used at import)
  await checkSignedManifest(image, receipt, ctx); //                     (the receipt agrees with what was signed)
  await refuseIfRecalledHere(receipt, ctx); //                        2. revocation
  const files = artifactPaths(image, receipt);
  const opened = await checkAtRest(files, receipt); //                3. at-rest integrity
  return {
    version,
    objectDir: image.dir,
    kernel: files.kernel.path,
    rootfs: files.rootfs.path,
    ...(files.initrd ? { initrd: files.initrd.path } : {}),
    receipt,
    opened,
  };
}

/** Whether `version` is installed, without creating anything (dev up pulls when it is not and the network is allowed). */
export async function imageInstalled(
  config: Config,
  version: string = MVMCTL_VERSION,
): Promise<boolean> {
  const store = new ImageStore(resolve(prebuiltDir(config)), config.dataDir);
  return (await store.installed(version)) !== undefined;
}

/** Nothing installed and nothing pulled (offline): the clear error of SPEC.md section 8. */
async function findInstalledImage(config: Config, version: string): Promise<InstalledImage> {
  const store = new ImageStore(resolve(prebuiltDir(config)), config.dataDir);
  // Looked up first, so asking on an empty host creates nothing.
  if (!(await store.installed(version))) {
    throw new MvmError('input', `No dev image is installed for v${version}`, {
      cause: `${join(store.root, `v${version}`)} does not exist, and dev up downloads one only when the network is allowed (not with MVM_OFFLINE=1 or --offline)`,
      fix: `On an air-gapped host: prepare a transfer set on a connected host (mvmctl dev fetch --version ${version} --out DIR), carry DIR in, install it with mvmctl dev import-image --dir DIR, then run mvmctl dev up again. On a connected host: mvmctl dev pull.`,
    });
  }
  // The store's owner/mode rule on every level, and what killed imports left behind.
  await store.open();
  const image = await store.installed(version);
  if (!image) {
    throw new MvmError('store', `v${version} was removed from ${store.root} while dev up read it`, {
      cause: 'another process changed the store',
      fix: 'Run mvmctl dev up again.',
    });
  }
  return image;
}

const HEX64 = /^[0-9a-fA-F]{64}$/;

const receiptError = (path: string, cause: string, underlying?: unknown): MvmError =>
  new MvmError('store', `The receipt of the installed image (${path}) is not usable`, {
    cause: `${cause}; what was verified at import cannot be known without it`,
    fix: 'Import the image again (mvmctl dev import-image): it is re-verified and replaced.',
    ...(underlying !== undefined ? { underlying } : {}),
  });

/**
 * The receipt written at import: the digests each file was verified against.
 * Read without following a link; anything not shaped as mvmctl writes it
 * (an unknown verification state, a file name outside the object) is refused.
 */
async function readReceipt(image: InstalledImage): Promise<Receipt> {
  const path = join(image.dir, INSTALLED_FILES.receipt);
  let r: Receipt;
  try {
    const bytes = await readRegularFile(path, 'receipt', MAX_RECEIPT_BYTES, { noFollow: true });
    r = JSON.parse(bytes.toString('utf8')) as Receipt;
  } catch (e) {
    throw receiptError(path, (e as Error).message, e);
  }
  if (r === null || typeof r !== 'object') throw receiptError(path, 'it is not a JSON object');
  if (r.schema !== 1) throw receiptError(path, `its schema ${String(r.schema)} is not 1`);
  if (r.version !== image.version)
    throw receiptError(path, `it is for version ${String(r.version)}, not v${image.version}`);
  if (r.verification !== 'verified' && r.verification !== 'UNVERIFIED')
    throw receiptError(path, `its verification state ${JSON.stringify(r.verification)} is unknown`);
  if (typeof r.variant !== 'string' || typeof r.arch !== 'string')
    throw receiptError(path, 'it does not name the variant and arch');
  const expectFile = (role: 'kernel' | 'rootfs' | 'initrd', name: string): void => {
    const a = r.artifacts?.[role] as InstalledArtifact | undefined;
    if (!a || a.file !== name || typeof a.sha256 !== 'string' || !HEX64.test(a.sha256))
      throw receiptError(path, `its ${role} entry is missing or malformed`);
  };
  if (r.rootfsFormat !== 'ext4' && r.rootfsFormat !== 'squashfs')
    throw receiptError(path, `its rootfs format ${JSON.stringify(r.rootfsFormat)} is unknown`);
  expectFile('kernel', INSTALLED_FILES.kernel);
  expectFile('rootfs', INSTALLED_FILES.rootfs(r.rootfsFormat));
  if (r.artifacts.initrd !== undefined) expectFile('initrd', INSTALLED_FILES.initrd);
  return r;
}

/** An image installed through an escape hatch (SPEC.md section 7) boots, but never quietly. */
function warnIfUnverified(r: Receipt, ctx: PreflightContext): void {
  if (r.verification === 'verified') return;
  const bypassed: readonly unknown[] = Array.isArray(r.bypassed) ? r.bypassed : [];
  const cosign = bypassed.includes('cosign');
  const hash = bypassed.includes('hash');
  const hatches = [
    ...(cosign ? ['MVM_SKIP_COSIGN_VERIFY=1'] : []),
    ...(hash ? ['MVM_SKIP_HASH_VERIFY=1'] : []),
  ].join(' and ');
  const skipped =
    cosign && hash
      ? 'its signature and SHA-256 digests were'
      : hash
        ? 'its SHA-256 digests were'
        : cosign
          ? 'its signature was'
          : 'it was';
  ctx.warn(
    `BOOTING AN UNVERIFIED IMAGE: v${r.version} was installed with ${hatches || 'an escape hatch'}, so ${skipped} NOT verified. Import the release set again without the escape hatch to clear this.`,
  );
}

const manifestError = (
  code: 'signature' | 'digest' | 'manifest',
  version: string,
  message: string,
  cause: string,
  underlying?: unknown,
): MvmError =>
  new MvmError(code, message, {
    cause: `${cause}; nothing was booted`,
    fix: `Import v${version} again (mvmctl dev import-image): the release set is re-verified and the image replaced.`,
    ...(underlying !== undefined ? { underlying } : {}),
  });

/**
 * The signed manifest installed beside the image, read again before every
 * boot: its bytes are the ones the receipt names, its signature verifies
 * against the release workflow at the tag of its version (offline, as at
 * import; skipped only for an image imported with MVM_SKIP_COSIGN_VERIFY,
 * which boots UNVERIFIED and says so), it is for this version, arch, variant
 * and rootfs format, and the receipt's digests are the ones it signs (unless
 * the image was imported with MVM_SKIP_HASH_VERIFY: then the receipt records
 * the bytes copied, which the manifest never vouched for). Any disagreement
 * refuses the boot: the receipt is the one file here nobody signed.
 */
async function checkSignedManifest(
  image: InstalledImage,
  r: Receipt,
  ctx: PreflightContext,
): Promise<void> {
  const path = join(image.dir, INSTALLED_FILES.manifest);
  const bundlePath = join(image.dir, INSTALLED_FILES.bundle);
  let bytes: Buffer;
  try {
    bytes = await readRegularFile(path, 'manifest', MAX_MANIFEST_BYTES, { noFollow: true });
  } catch (e) {
    throw atRestError({ role: 'manifest', path }, r.version, 'cannot be read', e);
  }
  const actual = createHash('sha256').update(bytes).digest('hex');
  if (typeof r.manifestSha256 !== 'string' || !sameDigest(actual, r.manifestSha256)) {
    throw manifestError(
      'digest',
      r.version,
      `manifest SHA-256 mismatch: the receipt of v${r.version} records ${String(r.manifestSha256)}, ${path} has ${actual}`,
      'the installed manifest or its receipt changed after import',
    );
  }
  const bypassed: readonly unknown[] = Array.isArray(r.bypassed) ? r.bypassed : [];
  if (!bypassed.includes('cosign')) {
    let bundle: Buffer;
    try {
      bundle = await readRegularFile(bundlePath, 'bundle', MAX_BUNDLE_BYTES, { noFollow: true });
    } catch (e) {
      throw atRestError({ role: 'bundle', path: bundlePath }, r.version, 'cannot be read', e);
    }
    try {
      const signature = verifyArtifact(
        bytes,
        parseBundle(bundle),
        ctx.trustedRoot,
        releasePolicy(ctx.config.releaseRepo),
      );
      const tag =
        signature.signer.kind === 'certificate'
          ? releaseTagVersion(signature.signer.identity, ctx.config.releaseRepo)
          : undefined;
      if (tag !== r.version)
        throw new MvmError('signature', `it was signed at tag v${String(tag)}, not v${r.version}`);
    } catch (e) {
      if (!(e instanceof MvmError)) throw e;
      throw manifestError(
        'signature',
        r.version,
        `The installed manifest of v${r.version} does not verify: ${e.message}`,
        `${path} and ${bundlePath} are checked before every boot against the trusted root in use (${ctx.trustedRoot.source}); the store changed after import, or this trusted root is not the one the image was imported with`,
        e,
      );
    }
  }
  let m: Manifest;
  try {
    m = parseManifest(bytes);
  } catch (e) {
    throw manifestError(
      'manifest',
      r.version,
      `The installed manifest of v${r.version} is not a valid manifest`,
      (e as Error).message,
      e,
    );
  }
  const fields: [string, unknown, unknown][] = [
    ['version', m.version, r.version],
    ['arch', m.arch, r.arch],
    ['variant', m.variant, r.variant],
    ['rootfs format', m.rootfsFormat, r.rootfsFormat],
  ];
  for (const [what, signed, recorded] of fields) {
    if (signed !== recorded)
      throw manifestError(
        'digest',
        r.version,
        `The receipt of v${r.version} does not agree with its signed manifest: ${what} ${JSON.stringify(recorded)}, signed ${JSON.stringify(signed)}`,
        'the receipt changed after import',
      );
  }
  if (bypassed.includes('hash')) return;
  for (const role of ['kernel', 'rootfs', 'initrd'] as const) {
    const recorded = r.artifacts[role];
    const listed = listedArtifact(m, role);
    if (recorded === undefined && listed === undefined) continue;
    if (
      recorded === undefined ||
      listed === undefined ||
      !sameDigest(recorded.sha256, listed.sha256)
    )
      throw manifestError(
        'digest',
        r.version,
        `${role} SHA-256 mismatch: the receipt of v${r.version} records ${recorded?.sha256 ?? 'no ' + role}, its signed manifest ${listed?.sha256 ?? 'lists none'}`,
        'the receipt changed after import: its digests are checked against the signed manifest before every boot',
      );
  }
}

/**
 * The cached list (verified against the revocations identity, read now; a
 * pair that does not verify throws and fails closed) and the recalls this host
 * verified before: the import's own rules (src/revocations/in-force.ts).
 */
async function refuseIfRecalledHere(r: Receipt, ctx: PreflightContext): Promise<void> {
  const cached = await readCachedRevocations(
    revocationsDir(ctx.config),
    ctx.config.releaseRepo,
    ctx.trustedRoot,
    ctx.now(),
  );
  const recalls = await recallsInForce(cached, ctx, { warnForgotten: true });
  checkFreshness(cached, { ...ctx, requireFreshRevocations: false });
  refuseIfRecalled(r, recalls);
  if (cached.state === 'absent') {
    ctx.warn(
      `No revocation list is cached in ${cached.dir}; booting without a recall check${recalls.forgotten.length ? ' beyond the recalls remembered on this host' : ''}. Carry in a fresh revoked-versions.json + .bundle pair to enable it.`,
    );
  }
}

type Role = 'kernel' | 'rootfs' | 'initrd';

interface ArtifactAtRest {
  readonly role: Role;
  readonly path: string;
  readonly sha256: string;
}

function artifactPaths(
  image: InstalledImage,
  r: Receipt,
): Record<'kernel' | 'rootfs', ArtifactAtRest> & { initrd?: ArtifactAtRest } {
  const at = (role: Role, a: InstalledArtifact): ArtifactAtRest => ({
    role,
    path: resolve(image.dir, a.file),
    sha256: a.sha256,
  });
  return {
    kernel: at('kernel', r.artifacts.kernel),
    rootfs: at('rootfs', r.artifacts.rootfs),
    ...(r.artifacts.initrd ? { initrd: at('initrd', r.artifacts.initrd) } : {}),
  };
}

/**
 * Re-hashes each file against the digest it was verified with (the signed
 * manifest's, which the receipt was checked to agree with): the guard for a
 * store changed after import (or a power loss: installs are not fsynced).
 * The first mismatch is the error, in the import's wording (exit 14). The
 * descriptors hashed stay open for QEMU; on any failure all are closed.
 */
async function checkAtRest(
  files: ReturnType<typeof artifactPaths>,
  r: Receipt,
): Promise<OpenedArtifacts> {
  const handles: fs.FileHandle[] = [];
  const closeAll = async (): Promise<void> => {
    await Promise.all(handles.splice(0).map((h) => h.close().catch(() => undefined)));
  };
  try {
    const open = async (f: ArtifactAtRest): Promise<fs.FileHandle> => {
      const { handle, sha256 } = await hashInstalledFile(f, r.version);
      handles.push(handle);
      if (!sameDigest(sha256, f.sha256)) {
        throw new MvmError(
          'digest',
          `${f.role} SHA-256 mismatch: the verified image records ${f.sha256.toLowerCase()}, ${f.path} has ${sha256}`,
          {
            cause: `the installed ${f.role} changed after it was verified and installed (tampering, or a write lost in a power failure); nothing was booted`,
            fix: `Import v${r.version} again (mvmctl dev import-image): the release set is re-verified and the image replaced.`,
          },
        );
      }
      return handle;
    };
    const kernel = await open(files.kernel);
    const rootfs = await open(files.rootfs);
    const initrd = files.initrd ? await open(files.initrd) : undefined;
    return { kernel, rootfs, ...(initrd ? { initrd } : {}), close: closeAll };
  } catch (e) {
    await closeAll();
    throw e;
  }
}

/**
 * SHA-256 of an installed file, read through a descriptor opened without
 * following a link (only a planted link could be there) and checked to be a
 * regular file before a byte is read (a FIFO would block, a directory has no
 * bytes). The descriptor is returned open: it is what boots.
 */
async function hashInstalledFile(
  f: ArtifactAtRest,
  version: string,
): Promise<{ handle: fs.FileHandle; sha256: string }> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(
      f.path,
      constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY,
    );
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const what =
      code === 'ENOENT'
        ? 'is missing'
        : code === 'ELOOP'
          ? 'is a symbolic link'
          : 'cannot be opened';
    throw atRestError(f, version, what, e);
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw atRestError(f, version, 'is not a regular file');
    return { handle, sha256: await sha256OfOpened(handle, st.size) };
  } catch (e) {
    await handle.close();
    if (e instanceof MvmError) throw e;
    throw atRestError(f, version, 'cannot be read', e);
  }
}

const atRestError = (
  f: { readonly role: string; readonly path: string },
  version: string,
  what: string,
  underlying?: unknown,
): MvmError =>
  new MvmError('store', `The installed ${f.role} ${f.path} ${what}`, {
    cause: `${underlying ? `${(underlying as Error).message}; ` : ''}the image of v${version} is not as it was installed, and is not booted`,
    fix: `Import v${version} again (mvmctl dev import-image): the release set is re-verified and the image replaced.`,
    ...(underlying !== undefined ? { underlying } : {}),
  });
