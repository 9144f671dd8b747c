/**
 * What `mvmctl dev up` checks before anything boots (SPEC.md section 8, steps
 * 1 to 3): the installed image of this release, its receipt, the recalls in
 * force on this host, and the installed bytes against what was verified at
 * import. No network, no manifest re-verification, nothing written to the
 * image; every failure is a typed MvmError and nothing is started.
 */
import { constants, promises as fs } from 'node:fs';
import { join, resolve } from 'node:path';
import { prebuiltDir, revocationsDir, type Config } from '../config.js';
import { sameDigest } from '../core/manifest.js';
import { MvmError } from '../errors.js';
import { readRegularFile, sha256OfOpened } from '../io/files.js';
import { readCachedRevocations } from '../revocations/cache.js';
import { checkFreshness, recallsInForce, refuseIfRecalled } from '../revocations/in-force.js';
import { ImageStore, type InstalledImage } from '../store/image-store.js';
import {
  INSTALLED_FILES,
  MAX_RECEIPT_BYTES,
  type InstalledArtifact,
  type Receipt,
} from '../store/receipt.js';
import type { LoadedTrustedRoot } from '../trust/trusted-root.js';
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
  await refuseIfRecalledHere(receipt, ctx); //                        2. revocation
  const files = artifactPaths(image, receipt);
  await checkAtRest(files, receipt); //                               3. at-rest integrity
  return {
    version,
    objectDir: image.dir,
    kernel: files.kernel.path,
    rootfs: files.rootfs.path,
    ...(files.initrd ? { initrd: files.initrd.path } : {}),
    receipt,
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
 * Re-hashes each file against the digest it was verified with: the guard for
 * a store changed after import (or a power loss: installs are not fsynced).
 * The first mismatch is the error, in the import's wording (exit 14).
 */
async function checkAtRest(files: ReturnType<typeof artifactPaths>, r: Receipt): Promise<void> {
  for (const f of [files.kernel, files.rootfs, files.initrd]) {
    if (!f) continue;
    const actual = await hashInstalledFile(f, r.version);
    if (!sameDigest(actual, f.sha256)) {
      throw new MvmError(
        'digest',
        `${f.role} SHA-256 mismatch: the verified image records ${f.sha256.toLowerCase()}, ${f.path} has ${actual}`,
        {
          cause: `the installed ${f.role} changed after it was verified and installed (tampering, or a write lost in a power failure); nothing was booted`,
          fix: `Import v${r.version} again (mvmctl dev import-image): the release set is re-verified and the image replaced.`,
        },
      );
    }
  }
}

/**
 * SHA-256 of an installed file, read through a descriptor opened without
 * following a link (only a planted link could be there) and checked to be a
 * regular file before a byte is read.
 */
async function hashInstalledFile(f: ArtifactAtRest, version: string): Promise<string> {
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
    return await sha256OfOpened(handle, st.size);
  } catch (e) {
    if (e instanceof MvmError) throw e;
    throw atRestError(f, version, 'cannot be read', e);
  } finally {
    await handle.close();
  }
}

const atRestError = (
  f: ArtifactAtRest,
  version: string,
  what: string,
  underlying?: unknown,
): MvmError =>
  new MvmError('store', `The installed ${f.role} ${f.path} ${what}`, {
    cause: `${underlying ? `${(underlying as Error).message}; ` : ''}the image of v${version} is not as it was installed, and is not booted`,
    fix: `Import v${version} again (mvmctl dev import-image): the release set is re-verified and the image replaced.`,
    ...(underlying !== undefined ? { underlying } : {}),
  });
