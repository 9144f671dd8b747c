/**
 * Verifies a carried trust bundle with a real TUF client (tuf-js's Updater),
 * offline: the "repository" is the bundle directory, read by a fetcher that
 * maps each request of the client to a file of the bundle and answers 404
 * for what is not there (which ends the root walk, as on a real mirror).
 *
 * The client starts from the anchor (the newest root installed here, or the
 * one embedded in mvmctl) and from the timestamp, snapshot and targets
 * installed with it, so its own rollback checks refuse metadata older than
 * what this host already trusts. It works in a private staging directory;
 * nothing is installed here (src/trust/installed-trust.ts does that).
 *
 * A bundle directory holds: `N.root.json` for each root version after the
 * one it was fetched against, `timestamp.json`, `snapshot.json`,
 * `targets.json`, and the target `trusted_root.json`.
 */
import { createHash } from 'node:crypto';
import { lstat, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MvmError } from '../errors.js';
import { readRegularFile } from '../io/files.js';
import {
  rootChainProblem,
  TRUST_TOLERANCE_MS,
  trustFreshness,
  tufRefusal,
  type RoleExpiries,
  type TrustFreshness,
} from '../core/trust-policy.js';

/** The file names of a trust bundle. */
export const BUNDLE_FILES = {
  timestamp: 'timestamp.json',
  snapshot: 'snapshot.json',
  targets: 'targets.json',
  trustedRoot: 'trusted_root.json',
} as const;

/** The TUF target that is Sigstore's trusted root. */
export const TRUSTED_ROOT_TARGET = 'trusted_root.json';

/** Most root rotations one bundle may carry (tuf-js's own default bound is 256). */
const MAX_ROOT_ROTATIONS = 64;
/** Most bytes of one metadata file (Sigstore's are a few KiB; tuf-js allows 512000 for a root). */
const MAX_METADATA_BYTES = 512_000;

const ROOT_FILE = /^([1-9][0-9]{0,8})\.root\.json$/;

/** What a host trusts before the bundle: a root, and the rest of the metadata installed with it. */
export interface TrustAnchor {
  readonly root: Buffer;
  readonly timestamp?: Buffer;
  readonly snapshot?: Buffer;
  readonly targets?: Buffer;
}

/** The result of a verified bundle, ready to install. */
export interface VerifiedTrust {
  readonly root: Buffer;
  readonly timestamp: Buffer;
  readonly snapshot: Buffer;
  readonly targets: Buffer;
  readonly trustedRoot: Buffer;
  readonly versions: Readonly<Record<'root' | 'timestamp' | 'snapshot' | 'targets', number>>;
  readonly expires: RoleExpiries;
  /** The root version the bundle was checked from, and the versions it rotated through. */
  readonly anchorRootVersion: number;
  readonly rotations: readonly number[];
  readonly trustedRootSha256: string;
  readonly freshness: TrustFreshness;
}

type TufErrors = typeof import('tuf-js/dist/error.js');

/**
 * tuf-js is CommonJS: Node's loader gives its exports as named ones, a
 * bundle (esbuild) as `default`. Either way, the exports object.
 */
function commonJs<T extends object>(m: T): T {
  const d = (m as { default?: unknown }).default;
  return d !== null && typeof d === 'object' && !('Updater' in m) && !('DownloadHTTPError' in m)
    ? (d as T)
    : m;
}

/** Answers the Updater's requests from the bundle directory. */
class BundleFetcher {
  /** The file last read, named in an error about its length or hash. */
  lastFile: string | undefined;
  constructor(
    private readonly dir: string,
    private readonly staging: string,
    private readonly errors: TufErrors,
  ) {}

  /** The bundle file a request names, or undefined for one the bundle never holds. */
  private fileFor(url: string): string | undefined {
    const name = decodeURIComponent(new URL(url).pathname).replace(/^\//, '');
    if (ROOT_FILE.test(name)) return name;
    if (name === 'timestamp.json') return BUNDLE_FILES.timestamp;
    // Consistent snapshots are asked for by version; the bundle holds one of each, and the
    // client checks that its version is the one asked for.
    if (/^([1-9][0-9]*\.)?snapshot\.json$/.test(name)) return BUNDLE_FILES.snapshot;
    if (/^([1-9][0-9]*\.)?targets\.json$/.test(name)) return BUNDLE_FILES.targets;
    if (/^targets\/([0-9a-f]{64}\.)?trusted_root\.json$/.test(name))
      return BUNDLE_FILES.trustedRoot;
    return undefined;
  }

  async downloadBytes(url: string, maxLength: number): Promise<Buffer> {
    const file = this.fileFor(url);
    if (file === undefined) throw new this.errors.DownloadHTTPError('not in a trust bundle', 404);
    const path = join(this.dir, file);
    const st = await lstat(path).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return undefined;
      throw e;
    });
    if (st === undefined) throw new this.errors.DownloadHTTPError(`${file} is missing`, 404);
    this.lastFile = file;
    if (st.isFile() && st.size > maxLength)
      throw new this.errors.DownloadLengthMismatchError('Max length reached');
    // No symlink, FIFO or device: only a regular file of the bundle is read, and no more than allowed.
    return readRegularFile(path, `trust bundle file`, Math.max(1, maxLength), { noFollow: true });
  }

  async downloadFile<T>(
    url: string,
    maxLength: number,
    handler: (file: string) => Promise<T>,
  ): Promise<T> {
    const bytes = await this.downloadBytes(url, maxLength);
    const tmp = join(this.staging, `download-${process.hrtime.bigint()}`);
    await writeFile(tmp, bytes, { mode: 0o600, flag: 'wx' });
    try {
      return await handler(tmp);
    } finally {
      await rm(tmp, { force: true });
    }
  }
}

const refused = (dir: string, role: string, check: string, underlying?: unknown): MvmError =>
  new MvmError('trusted-root', `The trust bundle ${dir} does not verify: ${role}: ${check}`, {
    cause: `its TUF metadata failed the check of ${role} against the root this host trusts; nothing was installed and the trust in force is unchanged`,
    fix: 'Carry a bundle made by `mvmctl trust fetch` on a connected host, unchanged, and run `mvmctl trust import DIR` with it.',
    ...(underlying !== undefined ? { underlying } : {}),
  });

/** The root versions the bundle directory carries (`N.root.json`). */
async function carriedRootVersions(dir: string): Promise<number[]> {
  const { readdir } = await import('node:fs/promises');
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    throw new MvmError('input', `The trust bundle ${dir} cannot be read`, {
      cause: (e as Error).message,
      fix: 'Name the directory that `mvmctl trust fetch --out DIR` wrote.',
      underlying: e,
    });
  }
  return names.flatMap((n) => {
    const m = ROOT_FILE.exec(n);
    return m ? [Number(m[1])] : [];
  });
}

/**
 * Verifies the bundle in `dir` against `anchor` at `now`: the root walk with
 * each rotation's threshold, then timestamp, snapshot and targets with their
 * signatures, versions (no rollback below the anchor's) and expiry, then the
 * length and hashes of trusted_root.json. Metadata past its expiry by at
 * most TRUST_TOLERANCE_MS is accepted and reported stale.
 */
export async function verifyTrustBundle(
  dir: string,
  anchor: TrustAnchor,
  now: Date,
): Promise<VerifiedTrust> {
  const [{ Updater }, errors] = await Promise.all([
    import('tuf-js').then(commonJs),
    import('tuf-js/dist/error.js').then((m) => commonJs(m as TufErrors)),
  ]);
  const anchorVersion = rootVersionOf(anchor.root);
  const carried = await carriedRootVersions(dir);
  const gap = rootChainProblem(anchorVersion, carried);
  if (gap !== undefined) throw refused(dir, 'the root chain', gap);

  const staging = await mkdtemp(join(tmpdir(), 'mvm-trust-'));
  try {
    await writeFile(join(staging, 'root.json'), anchor.root, { mode: 0o600 });
    // The trusted state before the bundle: the client's rollback checks compare against it.
    for (const [name, bytes] of [
      ['timestamp.json', anchor.timestamp],
      ['snapshot.json', anchor.snapshot],
      ['targets.json', anchor.targets],
    ] as const)
      if (bytes !== undefined) await writeFile(join(staging, name), bytes, { mode: 0o600 });

    const fetcher = new BundleFetcher(dir, staging, errors);
    const updater = new Updater({
      metadataDir: staging,
      metadataBaseUrl: 'https://trust-bundle.invalid/',
      targetDir: staging,
      targetBaseUrl: 'https://trust-bundle.invalid/targets/',
      fetcher,
      config: { maxRootRotations: MAX_ROOT_ROTATIONS, rootMaxLength: MAX_METADATA_BYTES },
    });
    judgeExpiryFrom(updater, new Date(now.getTime() - TRUST_TOLERANCE_MS));
    let target: Buffer;
    try {
      await updater.refresh();
      const info = await updater.getTargetInfo(TRUSTED_ROOT_TARGET);
      if (info === undefined)
        throw refused(dir, 'targets.json', `it lists no ${TRUSTED_ROOT_TARGET} target`);
      const path = await updater.downloadTarget(info, join(staging, 'target-trusted_root.json'));
      target = await readFile(path);
    } catch (e) {
      if (e instanceof MvmError) throw e;
      const { role, check } = tufRefusal((e as Error).message, fetcher.lastFile);
      throw refused(dir, role, check, e);
    }
    const read = (name: string) => readFile(join(staging, name));
    const [root, timestamp, snapshot, targets] = await Promise.all(
      ['root.json', 'timestamp.json', 'snapshot.json', 'targets.json'].map(read),
    );
    const meta = (b: Buffer) => JSON.parse(b.toString('utf8')).signed as Record<string, unknown>;
    const signed = {
      root: meta(root!),
      timestamp: meta(timestamp!),
      snapshot: meta(snapshot!),
      targets: meta(targets!),
    };
    const expires: RoleExpiries = {
      root: String(signed.root['expires']),
      timestamp: String(signed.timestamp['expires']),
      snapshot: String(signed.snapshot['expires']),
      targets: String(signed.targets['expires']),
    };
    const rootVersion = Number(signed.root['version']);
    return {
      root: root!,
      timestamp: timestamp!,
      snapshot: snapshot!,
      targets: targets!,
      trustedRoot: target,
      versions: {
        root: rootVersion,
        timestamp: Number(signed.timestamp['version']),
        snapshot: Number(signed.snapshot['version']),
        targets: Number(signed.targets['version']),
      },
      expires,
      anchorRootVersion: anchorVersion,
      rotations: carried.filter((v) => v > anchorVersion && v <= rootVersion).sort((a, b) => a - b),
      trustedRootSha256: createHash('sha256').update(target).digest('hex'),
      freshness: trustFreshness(expires, now),
    };
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/**
 * tuf-js judges expiry at the instant its Updater is made, with no option to
 * move it; the tolerance needs it 7 days earlier. Its private field is set
 * here (tuf-js is pinned, and a test fails if the field goes away): without
 * it, refuse rather than judge by another rule.
 */
function judgeExpiryFrom(updater: object, at: Date): void {
  const set = (updater as { trustedSet?: { referenceTime?: unknown } }).trustedSet;
  if (set === undefined || !(set.referenceTime instanceof Date))
    throw new MvmError('trusted-root', 'This build of mvmctl cannot judge TUF expiry', {
      cause: 'the TUF client library changed: its reference time is not where mvmctl sets it',
      fix: 'Use an official mvmctl release; report this as a bug.',
    });
  set.referenceTime = at;
}

/** The version of a root.json, read before it is verified only to name the chain's start. */
export function rootVersionOf(root: Buffer): number {
  try {
    const v = JSON.parse(root.toString('utf8'))?.signed?.version;
    if (Number.isSafeInteger(v) && v >= 1) return v;
  } catch {
    // fall through
  }
  throw new MvmError('trusted-root', 'The TUF root this host trusts is unreadable', {
    cause: 'its root.json has no version',
    fix: 'Remove the installed trust (the trust/ directory of the data directory) to return to the root embedded in mvmctl, then import a bundle again.',
  });
}
