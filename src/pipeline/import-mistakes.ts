/**
 * The refusals of `dev import-image` that name the operator's actual mistake
 * (issue 11): files missing from a set or a `--dir`, another arch's set, the
 * manifest and bundle or the artifacts given the wrong way round, a data
 * directory that cannot take the image, and signature failures worded after
 * the check that failed rather than after the exit code. Each is found as
 * early as it can be, before the work it would waste.
 */
import { constants, promises as fs } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { prebuiltDir, type Config } from '../config.js';
import {
  documentMixUp,
  misplacedArtifacts,
  type MisplacedArtifact,
} from '../core/release-mistakes.js';
import {
  artifactName,
  releaseFileNames,
  type Arch,
  type ArtifactRole,
  type Manifest,
} from '../core/manifest.js';
import { CHECK_FIX, MvmError } from '../errors.js';
import { ImageStore } from '../store/image-store.js';
import type { ParsedBundle } from '../trust/bundle.js';
import { certificateSigner, rootGaps } from '../trust/root-coverage.js';
import type { LoadedTrustedRoot } from '../trust/trusted-root.js';

/** The files of a set, as the pipeline was given them (see ReleaseSet). */
export interface SetPaths {
  readonly manifest: string;
  readonly bundle: string;
  readonly vmlinux: string;
  readonly rootfs: string;
  /** Set when the files were found by their release names in this directory (--dir). */
  readonly dir?: string;
}

const errnoOf = (e: unknown): string | undefined => (e as NodeJS.ErrnoException)?.code;

async function statOrCode(path: string) {
  try {
    return await fs.stat(path);
  } catch (e) {
    return errnoOf(e) ?? 'error';
  }
}

/**
 * Every file of the set that is not there, named at once (an operator should
 * not discover them one run at a time). A `--dir` that does not exist, that
 * is not a directory, or that holds another arch's set says that instead.
 * One missing named file is left to the reader, whose error names it alone.
 */
export async function refuseMissingFiles(set: SetPaths, hostArch: Arch): Promise<void> {
  if (set.dir !== undefined) await checkSetDirectory(set.dir, hostArch);
  const files: [string, string][] = [
    ['manifest', set.manifest],
    ['bundle', set.bundle],
    ['kernel', set.vmlinux],
    ['rootfs', set.rootfs],
  ];
  const missing: [string, string][] = [];
  for (const [what, path] of files)
    if ((await statOrCode(path)) === 'ENOENT') missing.push([what, path]);
  if (missing.length === 0) return;
  if (set.dir !== undefined) {
    const dir = set.dir;
    const names = missing.map(([, p]) => basename(p));
    throw new MvmError(
      'input',
      `${dir} does not hold this host's (${hostArch}) release set: ${names.join(', ')} ${names.length === 1 ? 'is' : 'are'} missing`,
      {
        cause: `--dir finds the files of a release set by their release names; ${missing.length} of the 4 are not in ${dir}`,
        fix: `Copy ${names.length === 1 ? 'it' : 'them'} into ${dir} under ${names.length === 1 ? 'that name' : 'those names'} (they are published together with the manifest), or name each file with its flag (--manifest, --bundle, --vmlinux, --rootfs).`,
      },
    );
  }
  if (missing.length === 1) return;
  throw new MvmError(
    'input',
    `${missing.length} files of the release set do not exist: ${missing.map(([w, p]) => `${w} ${p}`).join(', ')}`,
    {
      cause: 'no file at those paths (or symlinks pointing nowhere)',
      fix: 'Check the paths: all four files of the release set are needed (or put them in one directory under their release names and use --dir).',
    },
  );
}

async function checkSetDirectory(dir: string, hostArch: Arch): Promise<void> {
  const st = await statOrCode(dir);
  if (st === 'ENOENT') {
    throw new MvmError('input', `--dir ${dir} does not exist`, {
      cause:
        'no directory at that path: the transfer medium may not be mounted, or the path is mistyped',
      fix: 'Check the path (ls it), and mount the medium holding the release set first.',
    });
  }
  if (st === 'ENOTDIR' || (typeof st !== 'string' && !st.isDirectory())) {
    throw new MvmError('input', `--dir ${dir} is not a directory`, {
      cause: '--dir names the directory holding the release files',
      fix: 'Give --dir the directory that holds the set, or name each file with --manifest, --bundle, --vmlinux and --rootfs.',
    });
  }
  if (typeof st === 'string') return; // unreadable: the reader names it
  const other: Arch = hostArch === 'x86_64' ? 'aarch64' : 'x86_64';
  const own = join(dir, releaseFileNames(hostArch).manifest);
  const theirs = join(dir, releaseFileNames(other).manifest);
  if ((await statOrCode(own)) === 'ENOENT' && typeof (await statOrCode(theirs)) !== 'string') {
    throw new MvmError(
      'input',
      `${dir} holds the ${other} release set (dev-image-${other}.manifest.json), not this host's ${hostArch} set`,
      {
        cause: `this host is ${hostArch}, and an image runs only on the arch it was built for; --dir looks for dev-image-${hostArch}.manifest.json, its .bundle, dev-vmlinux-${hostArch} and dev-rootfs-${hostArch}.ext4`,
        fix: `Import this set on an ${other} host, or carry in the ${hostArch} set of the release (on a connected host: mvmctl dev fetch --arch ${hostArch}, or download the release's *-${hostArch} files).`,
      },
    );
  }
}

const FLAG: Record<ArtifactRole, string> = {
  kernel: '--vmlinux',
  rootfs: '--rootfs',
  initrd: '--initrd',
};

/** The manifest and bundle given the wrong way round, or one given twice: said before any signature work. */
export function refuseMixedUpDocuments(
  set: SetPaths,
  manifest: Uint8Array,
  bundle: Uint8Array,
): void {
  const mixUp = documentMixUp(manifest, bundle);
  if (!mixUp) return;
  const inDir = set.dir !== undefined;
  const nothing = 'nothing was verified or installed';
  switch (mixUp) {
    case 'swapped':
      throw new MvmError(
        'input',
        `The manifest and bundle look swapped: ${set.manifest} is a Sigstore bundle and ${set.bundle} is a release manifest`,
        {
          cause: `the file given as the manifest is the signature bundle, and the one given as the bundle is the manifest: they were given the wrong way round (${nothing})`,
          fix: inDir
            ? `Swap the two files' names in ${set.dir}: the manifest is ${basename(set.manifest)}, its bundle ${basename(set.bundle)}.`
            : `Run the import again with --manifest ${set.bundle} --bundle ${set.manifest}.`,
        },
      );
    case 'manifest-twice':
      throw new MvmError(
        'input',
        `The same release manifest was given as the manifest and as the bundle (${set.bundle})`,
        {
          cause: `the bundle is the Sigstore signature published beside the manifest (${basename(set.manifest)}.bundle, or .sigstore.json), a different file (${nothing})`,
          fix: `Give the manifest's bundle with ${inDir ? `the name ${basename(set.bundle)}` : '--bundle'}.`,
        },
      );
    case 'bundle-is-manifest':
      throw new MvmError(
        'input',
        `The file given as the bundle (${set.bundle}) is a release manifest, not a Sigstore bundle`,
        {
          cause: `a manifest was given where its signature bundle belongs (${nothing})`,
          fix: `Give the bundle published beside the manifest (dev-image-{arch}.manifest.json.bundle) ${inDir ? `as ${basename(set.bundle)}` : 'with --bundle'}.`,
        },
      );
    case 'manifest-is-bundle':
      throw new MvmError(
        'input',
        `The file given as the manifest (${set.manifest}) is a Sigstore bundle, not a release manifest`,
        {
          cause: `a signature bundle was given where the manifest belongs (${nothing})`,
          fix: `Give the release manifest (dev-image-{arch}.manifest.json) ${inDir ? `as ${basename(set.manifest)}` : 'with --manifest'}, and its bundle with --bundle.`,
        },
      );
  }
}

/**
 * A file given in another's place (kernel and rootfs swapped, an initrd given
 * as the kernel): an input mistake (exit 3), not tampering. Checked on the
 * digests computed while copying, before any mismatch is declared.
 */
export function refuseMisplacedArtifacts(
  set: SetPaths & { readonly initrd: string | undefined },
  actual: Partial<Record<ArtifactRole, string>>,
  m: Manifest,
): void {
  const misplaced = misplacedArtifacts(actual, m);
  if (misplaced.length === 0) return;
  const pathOf = (role: ArtifactRole): string =>
    role === 'kernel' ? set.vmlinux : role === 'rootfs' ? set.rootfs : (set.initrd ?? 'the initrd');
  const swapped = (a: MisplacedArtifact) =>
    misplaced.some((b) => b.given === a.is && b.is === a.given);
  const pair = misplaced.length === 2 && swapped(misplaced[0]!) ? misplaced[0]! : undefined;
  const inDir = set.dir !== undefined;
  const cause =
    'each file named here has the SHA-256 the signed manifest records for another part of the set: the files were given in the wrong places (not tampering; nothing was installed)';
  if (pair) {
    const [a, b] = [pair.given, pair.is];
    throw new MvmError(
      'input',
      `The ${a} and ${b} look swapped: the file given as the ${a} (${pathOf(a)}) is the release's ${b} (${artifactName(m, b)}), and the file given as the ${b} (${pathOf(b)}) its ${a} (${artifactName(m, a)})`,
      {
        cause,
        fix: inDir
          ? `Swap the two files' names in ${set.dir}: ${basename(pathOf(a))} holds the ${b}, ${basename(pathOf(b))} the ${a}.`
          : `Run the import again with ${FLAG[a]} ${pathOf(b)} ${FLAG[b]} ${pathOf(a)}.`,
      },
    );
  }
  const lines = misplaced.map(
    (x) =>
      `${pathOf(x.given)}, given as the ${x.given}, is the release's ${x.is} (${artifactName(m, x.is)})`,
  );
  throw new MvmError(
    'input',
    `A file of the set was given in the wrong place: ${lines.join('; ')}`,
    {
      cause,
      fix: `Give each file with its own flag: ${misplaced.map((x) => `${pathOf(x.given)} is the ${x.is} (${FLAG[x.is]})`).join(', ')}; each part of the set is a different file.`,
    },
  );
}

/**
 * The data directory can take an image. Found before the signature work, so
 * a read-only file system or an impossible MVM_DATA_DIR does not cost a
 * verification and a full copy first. An existing store is probed with its
 * own first step (a staging object, made and removed at once); where there is
 * no store yet, nothing is created before the checks pass: the nearest
 * existing directory must be a directory this user can write.
 */
export async function checkStoreWritable(config: Config): Promise<void> {
  const root = prebuiltDir(config);
  const store = new ImageStore(root, config.dataDir);
  try {
    const st = await statOrCode(root);
    if (typeof st !== 'string' && st.isDirectory()) {
      await store.open();
      await store.discard(await store.stage());
    } else if (st === 'ENOENT' || st === 'ENOTDIR') {
      await canCreate(root);
    } else if (typeof st === 'string') {
      throw Object.assign(new Error(`${st}: cannot reach ${root}`), { code: st });
    } // a file in the store's place is the store's own error, when it opens
  } catch (e) {
    throw await storeUnusable(e, config);
  }
}

/** Throws the errno creating `path` (and its missing parents) would meet, without creating anything. */
async function canCreate(path: string): Promise<void> {
  let dir = dirname(path);
  for (;;) {
    const st = await statOrCode(dir);
    if (typeof st !== 'string') {
      if (!st.isDirectory())
        throw Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${path}'`), {
          code: 'ENOTDIR',
        });
      break;
    }
    if (dirname(dir) === dir) return;
    dir = dirname(dir);
  }
  await fs.access(dir, constants.W_OK | constants.X_OK);
}

async function storeUnusable(e: unknown, config: Config): Promise<unknown> {
  const underlying = e instanceof MvmError ? e.underlying : e;
  const detail = (underlying as Error | undefined)?.message ?? String(e);
  const data = config.dataDir;
  const where = `MVM_DATA_DIR (default ~/.mvm)`;
  switch (await realErrno(underlying, join(prebuiltDir(config), 'x'))) {
    case 'EROFS':
      return new MvmError(
        'store',
        `The data directory ${data} is on a read-only file system: the image cannot be installed`,
        {
          cause: detail,
          fix: `Point ${where} at a directory on a writable file system (the store, receipts and audit log live there), or remount that file system read-write; then run the import again.`,
          underlying,
        },
      );
    case 'ENOTDIR': {
      const file = await firstFileOnPath(data);
      return new MvmError(
        'store',
        `The data directory ${data} cannot be created: ${file ? `${file} is a file, not a directory` : 'a part of its path is not a directory'}`,
        {
          cause: detail,
          fix: `Set ${where} to a directory path whose parents are directories${file ? `, or move ${file} aside` : ''}.`,
          underlying,
        },
      );
    }
    case 'EACCES':
    case 'EPERM':
      return new MvmError(
        'store',
        `The data directory ${data} cannot be written: permission denied`,
        {
          cause: detail,
          fix: `Point ${where} at a directory this user (uid ${process.getuid?.() ?? '?'}) can write, or fix the permissions along ${data}.`,
          underlying,
        },
      );
    case 'ENOSPC':
    case 'EDQUOT':
      return new MvmError('store', `No space is left in the data directory ${data}`, {
        cause: detail,
        fix: `Free space on that file system, or point ${where} at one with room for the image.`,
        underlying,
      });
    default:
      return e;
  }
}

/**
 * The errno that stopped the store, as the file system would give it: Node's
 * recursive mkdir reports ENOENT where a directory cannot be created on a
 * read-only file system, so an ENOENT is asked again of the deepest existing
 * directory above `path` (access(2) for writing says EROFS or EACCES).
 */
async function realErrno(e: unknown, path: string): Promise<string | undefined> {
  const code = errnoOf(e);
  if (code !== 'ENOENT') return code;
  let dir = dirname(path);
  for (;;) {
    const st = await statOrCode(dir);
    if (typeof st !== 'string') {
      if (!st.isDirectory()) return 'ENOTDIR';
      break;
    }
    if (dirname(dir) === dir) return code;
    dir = dirname(dir);
  }
  try {
    await fs.access(dir, constants.W_OK);
    return code;
  } catch (accessError) {
    return errnoOf(accessError) ?? code;
  }
}

/** The first existing path component of `path` that is not a directory, if any. */
async function firstFileOnPath(path: string): Promise<string | undefined> {
  const chain: string[] = [];
  for (let p = path; ; p = dirname(p)) {
    chain.unshift(p);
    if (dirname(p) === p) break;
  }
  for (const p of chain) {
    const st = await statOrCode(p);
    if (typeof st === 'string') return undefined;
    if (!st.isDirectory()) return p;
  }
  return undefined;
}

export const SIGNATURE_FAILED = 'Cosign verification failed for the imported manifest';

const DONT_MATCH = 'Manifest + bundle don’t match, or manifest was tampered with after signing';

/**
 * A failed manifest signature, with the cause and fix of the check that
 * failed: a trusted root that lacks the bundle's log or CA is a configuration
 * mistake, another signer says who signed, and only the checks that compare
 * the bytes keep the seed's "don't match, or tampered" wording. The seed's
 * first-line wording stays for every one of them.
 */
export function manifestSignatureFailure(
  e: MvmError,
  parsed: ParsedBundle | undefined,
  trustedRoot: LoadedTrustedRoot,
  releaseRepo: string,
  bundlePath: string,
): MvmError {
  const base = { ...(e.check ? { check: e.check } : {}), underlying: e };
  const message = `${SIGNATURE_FAILED}: ${e.message}`;
  const root =
    trustedRoot.origin === 'embedded'
      ? 'the embedded public-good trusted root'
      : trustedRoot.origin === 'installed'
        ? `the installed trusted root, ${trustedRoot.source},`
        : trustedRoot.origin === 'fetched'
          ? `the trusted root ${trustedRoot.source},`
          : `the trusted root in use, ${trustedRoot.source} (--trusted-root or MVM_TRUSTED_ROOT),`;
  // Sigstore adds keys (a new Rekor shard, a rotated CA or TSA): a root older than the signature lacks them.
  const newerRoot =
    'If the set was signed with a Sigstore key newer than this root (a new transparency-log shard, a rotated CA), bring in a newer trusted root: run `mvmctl trust fetch --out DIR` on a connected host, carry DIR, and run `mvmctl trust import DIR` here.';
  const rootFix =
    trustedRoot.origin === 'file'
      ? "Use the trusted root of the Sigstore deployment that signed the set: for the project's releases (public-good instance) unset MVM_TRUSTED_ROOT and drop --trusted-root to use the embedded or installed root; for a private deployment, point MVM_TRUSTED_ROOT (or --trusted-root) at its trusted_root.json."
      : trustedRoot.origin === 'fetched'
        ? "The root is the TUF repository's current one, so the set was signed in another Sigstore deployment: name that deployment's TUF repository (MVM_TUF_REPOSITORY, with MVM_TUF_ROOT), or its trusted_root.json with MVM_TRUSTED_ROOT (or --trusted-root)."
        : `${newerRoot} If the set comes from a private Sigstore deployment, point MVM_TRUSTED_ROOT (or --trusted-root) at that deployment's trusted_root.json.`;
  const gaps = parsed ? rootGaps(parsed.bundle, trustedRoot.material) : undefined;
  const mayBeIntact = 'The manifest itself may be intact.';
  if (e.check === 'tlog-entry' && gaps && gaps.unknownLogs.length > 0) {
    return new MvmError('signature', message, {
      ...base,
      cause: `${root} does not know the transparency log the manifest's signature was logged in (log id ${gaps.unknownLogs[0]}): the set was signed in another Sigstore deployment than the root describes, such as a test or private root left in MVM_TRUSTED_ROOT, or a private deployment's set checked against the public-good root. ${mayBeIntact}`,
      fix: rootFix,
    });
  }
  if (e.check === 'certificate-chain' && gaps?.unknownCa) {
    return new MvmError('signature', message, {
      ...base,
      cause: `${root} does not know the certificate authority that issued the signing certificate (issuer ${gaps.unknownCa}): the set was signed in another Sigstore deployment than the root describes. ${mayBeIntact}`,
      fix: rootFix,
    });
  }
  switch (e.check) {
    case 'identity':
    case 'issuer': {
      const signer = parsed ? certificateSigner(parsed.bundle) : undefined;
      const who = signer?.identity
        ? `${signer.identity} (OIDC issuer ${signer.issuer ?? 'not named'})`
        : 'an identity that is not a single readable name';
      return new MvmError('signature', message, {
        ...base,
        cause: `the manifest was signed by ${who}, not by the release workflow of ${releaseRepo} (https://github.com/${releaseRepo}/.github/workflows/release.yml@refs/tags/v{version}, issuer https://token.actions.githubusercontent.com)`,
        fix: `Use the manifest and bundle the release published, both from the same release tag. If your releases come from a fork's workflow, set MVM_RELEASE_REPO to that repository (owner/name).`,
      });
    }
    case 'bundle-format':
    case 'media-type':
      return new MvmError('signature', message, {
        ...base,
        cause: `${bundlePath} is not a usable Sigstore bundle${e.cause ? ` (${e.cause})` : ''}`,
        fix: `Use the bundle published beside the manifest (dev-image-{arch}.manifest.json.bundle), unmodified. ${CHECK_FIX[e.check]}`,
      });
    case 'key':
      return new MvmError('signature', message, {
        ...base,
        cause:
          'the bundle is signed with a key, not by the release workflow’s keyless (Fulcio) certificate',
        fix: 'Use the bundle the release published: release manifests are signed keyless by the release workflow.',
      });
    case 'certificate-chain':
    case 'certificate-validity':
    case 'sct':
    case 'timestamp':
      return new MvmError('signature', message, {
        ...base,
        cause: e.cause ?? 'the signing certificate or the times vouching for it do not verify',
        fix: CHECK_FIX[e.check] ?? 'Re-export both files together from the same release tag.',
      });
    default:
      // The checks that compare bytes: the signature, the digest, what the log recorded.
      return new MvmError('signature', message, {
        ...base,
        cause: `${DONT_MATCH}${e.cause ? ` (${e.cause})` : ''}`,
        fix: 'Re-export both files together from the same release tag.',
      });
  }
}
