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
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MvmError } from '../errors.js';
import { readRegularFile, replaceFile } from '../io/files.js';
import {
  MAX_TUF_METADATA_BYTES,
  rootChainProblem,
  rootFileVersion,
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

/**
 * The Updater's downloadFile, for either fetcher: the bytes downloadBytes
 * gives, in a file of the private staging directory for `handler`, removed after.
 */
async function throughFile<T>(
  fetcher: Pick<TufFetcher, 'downloadBytes'>,
  staging: string,
  url: string,
  maxLength: number,
  handler: (file: string) => Promise<T>,
): Promise<T> {
  const bytes = await fetcher.downloadBytes(url, maxLength);
  const tmp = join(staging, `download-${process.hrtime.bigint()}`);
  await writeFile(tmp, bytes, { mode: 0o600, flag: 'wx' });
  try {
    return await handler(tmp);
  } finally {
    await rm(tmp, { force: true });
  }
}

/** Answers the Updater's requests from the bundle directory. */
class BundleFetcher implements TufFetcher {
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
    if (rootFileVersion(name) !== undefined) return name;
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

  downloadFile<T>(
    url: string,
    maxLength: number,
    handler: (file: string) => Promise<T>,
  ): Promise<T> {
    return throughFile(this, this.staging, url, maxLength, handler);
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
  return names.flatMap((n) => rootFileVersion(n) ?? []);
}

interface TufFetcher {
  lastFile: string | undefined;
  /** A network failure, kept: tuf-js flattens what it catches into its own message. */
  failure?: unknown;
  downloadBytes(url: string, maxLength: number): Promise<Buffer>;
  downloadFile<T>(
    url: string,
    maxLength: number,
    handler: (file: string) => Promise<T>,
  ): Promise<T>;
}

/** What one TUF update left in force: the four roles' files and the target. */
interface Updated {
  readonly root: Buffer;
  readonly timestamp: Buffer;
  readonly snapshot: Buffer;
  readonly targets: Buffer;
  readonly trustedRoot: Buffer;
}

async function loadTuf(): Promise<{ Updater: typeof import('tuf-js').Updater; errors: TufErrors }> {
  const [{ Updater }, errors] = await Promise.all([
    import('tuf-js').then(commonJs),
    import('tuf-js/dist/error.js').then((m) => commonJs(m as TufErrors)),
  ]);
  return { Updater, errors };
}

/**
 * One TUF update with tuf-js's Updater from `anchor`, through `fetcher`, in
 * the private directory `staging`, judging expiry at `referenceTime`: the
 * root walk, timestamp, snapshot, targets, then the trusted_root.json target.
 * A refusal is `refuse(role, check)`; any other MvmError (the network's) passes.
 */
async function update(
  Updater: typeof import('tuf-js').Updater,
  fetcher: TufFetcher,
  anchor: TrustAnchor,
  staging: string,
  referenceTime: Date,
  baseUrl: string,
  refuse: (role: string, check: string, underlying?: unknown) => MvmError,
): Promise<Updated> {
  await writeFile(join(staging, 'root.json'), anchor.root, { mode: 0o600 });
  // The trusted state before: the client's rollback checks compare against it.
  for (const [name, bytes] of [
    ['timestamp.json', anchor.timestamp],
    ['snapshot.json', anchor.snapshot],
    ['targets.json', anchor.targets],
  ] as const)
    if (bytes !== undefined) await writeFile(join(staging, name), bytes, { mode: 0o600 });
  const updater = new Updater({
    metadataDir: staging,
    metadataBaseUrl: baseUrl,
    targetDir: staging,
    targetBaseUrl: `${baseUrl.replace(/\/$/, '')}/targets/`,
    fetcher,
    config: { maxRootRotations: MAX_ROOT_ROTATIONS, rootMaxLength: MAX_TUF_METADATA_BYTES },
  });
  judgeExpiryFrom(updater, referenceTime);
  let trustedRoot: Buffer;
  try {
    await updater.refresh();
    const info = await updater.getTargetInfo(TRUSTED_ROOT_TARGET);
    if (info === undefined)
      throw refuse('targets.json', `it lists no ${TRUSTED_ROOT_TARGET} target`);
    const path = await updater.downloadTarget(info, join(staging, 'target-trusted_root.json'));
    trustedRoot = await readFile(path);
  } catch (e) {
    if (e instanceof MvmError) throw e;
    // tuf-js wraps what failed under it in its own message; an MvmError from the network stays one.
    if (fetcher.failure !== undefined) throw fetcher.failure;
    const { role, check } = tufRefusal((e as Error).message, fetcher.lastFile);
    throw refuse(role, check, e);
  }
  const read = (name: string) => readFile(join(staging, name));
  const [root, timestamp, snapshot, targets] = await Promise.all(
    ['root.json', 'timestamp.json', 'snapshot.json', 'targets.json'].map(read),
  );
  return {
    root: root!,
    timestamp: timestamp!,
    snapshot: snapshot!,
    targets: targets!,
    trustedRoot,
  };
}

/** The verified result of an update, described. */
function described(u: Updated, anchorVersion: number, carried: number[], now: Date): VerifiedTrust {
  const meta = (b: Buffer) => JSON.parse(b.toString('utf8')).signed as Record<string, unknown>;
  const signed = {
    root: meta(u.root),
    timestamp: meta(u.timestamp),
    snapshot: meta(u.snapshot),
    targets: meta(u.targets),
  };
  const expires: RoleExpiries = {
    root: String(signed.root['expires']),
    timestamp: String(signed.timestamp['expires']),
    snapshot: String(signed.snapshot['expires']),
    targets: String(signed.targets['expires']),
  };
  const rootVersion = Number(signed.root['version']);
  return {
    ...u,
    versions: {
      root: rootVersion,
      timestamp: Number(signed.timestamp['version']),
      snapshot: Number(signed.snapshot['version']),
      targets: Number(signed.targets['version']),
    },
    expires,
    anchorRootVersion: anchorVersion,
    rotations: carried.filter((v) => v > anchorVersion && v <= rootVersion).sort((a, b) => a - b),
    trustedRootSha256: createHash('sha256').update(u.trustedRoot).digest('hex'),
    freshness: trustFreshness(expires, now),
  };
}

/** A private directory for one update, removed afterwards whatever happens. */
async function inStaging<T>(fn: (staging: string) => Promise<T>): Promise<T> {
  const staging = await mkdtemp(join(tmpdir(), 'mvm-trust-'));
  try {
    return await fn(staging);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
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
  const { Updater, errors } = await loadTuf();
  const anchorVersion = rootVersionOf(anchor.root);
  const carried = await carriedRootVersions(dir);
  const gap = rootChainProblem(anchorVersion, carried);
  if (gap !== undefined) throw refused(dir, 'the root chain', gap);
  return inStaging(async (staging) => {
    const fetcher = new BundleFetcher(dir, staging, errors);
    const u = await update(
      Updater,
      fetcher,
      anchor,
      staging,
      new Date(now.getTime() - TRUST_TOLERANCE_MS),
      'https://trust-bundle.invalid/',
      (role, check, underlying) => refused(dir, role, check, underlying),
    );
    return described(u, anchorVersion, carried, now);
  });
}

/** A small GET, as the HTTP client does it for a manifest: bounded, with the configured timeout and proxy. */
export interface TufHttp {
  get(url: string, maxBytes: number): Promise<{ status: number; body: Buffer }>;
  statusError(url: string, status: number, what?: string): Error;
}

/** Answers the Updater's requests from a TUF repository over HTTP, keeping each root it fetched. */
class HttpFetcher implements TufFetcher {
  lastFile: string | undefined;
  failure: unknown;
  readonly roots = new Map<number, Buffer>();
  constructor(
    private readonly http: TufHttp,
    private readonly staging: string,
    private readonly errors: TufErrors,
  ) {}

  async downloadBytes(url: string, maxLength: number): Promise<Buffer> {
    this.lastFile = decodeURIComponent(new URL(url).pathname.split('/').pop() ?? url);
    let r: { status: number; body: Buffer };
    try {
      r = await this.http.get(url, maxLength);
    } catch (e) {
      this.failure = e;
      throw e;
    }
    // A missing next root ends the root walk; any other file missing is the repository's failure.
    const root = rootFileVersion(this.lastFile);
    if ((r.status === 404 || r.status === 403) && root !== undefined)
      throw new this.errors.DownloadHTTPError(`HTTP ${r.status}`, r.status);
    if (r.status !== 200)
      throw (this.failure = this.http.statusError(url, r.status, 'TUF metadata'));
    if (root !== undefined) this.roots.set(root, r.body);
    return r.body;
  }

  downloadFile<T>(
    url: string,
    maxLength: number,
    handler: (file: string) => Promise<T>,
  ): Promise<T> {
    return throughFile(this, this.staging, url, maxLength, handler);
  }
}

/**
 * `trust fetch`: a TUF update from the repository at `repositoryUrl`, from
 * `anchor` (judged at `now`, no tolerance: a connected host gets current
 * metadata), written into `outDir` as a trust bundle: each root after the
 * anchor's version, the other three roles and the target. The bundle is then
 * verified from the directory as `trust import` will, before it is reported.
 */
export async function fetchTrustBundle(
  http: TufHttp,
  repositoryUrl: string,
  anchor: TrustAnchor,
  outDir: string,
  now: Date,
): Promise<VerifiedTrust> {
  const { Updater, errors } = await loadTuf();
  const anchorVersion = rootVersionOf(anchor.root);
  const base = repositoryUrl.endsWith('/') ? repositoryUrl : `${repositoryUrl}/`;
  const { u, roots } = await inStaging(async (staging) => {
    const fetcher = new HttpFetcher(http, staging, errors);
    const u = await update(
      Updater,
      fetcher,
      anchor,
      staging,
      now,
      base,
      (role, check, underlying) =>
        new MvmError(
          'trusted-root',
          `The TUF repository ${repositoryUrl} does not verify: ${role}: ${check}`,
          {
            cause:
              'its metadata failed the check against the TUF root mvmctl starts from; nothing was written',
            fix: 'Check the repository (--repository or MVM_TUF_REPOSITORY): a mirror must serve the repository unchanged. If the repository rotated past what this mvmctl can follow, use a newer mvmctl.',
            ...(underlying !== undefined ? { underlying } : {}),
          },
        ),
    );
    return { u, roots: fetcher.roots };
  });
  const rootVersion = rootVersionOf(u.root);
  const carried: number[] = [];
  await mkdir(outDir, { recursive: true });
  // Roots from an earlier fetch into the same directory are replaced: the bundle is this fetch's.
  for (const name of await readdir(outDir))
    if (rootFileVersion(name) !== undefined) await rm(join(outDir, name), { force: true });
  for (let v = anchorVersion + 1; v <= rootVersion; v++) {
    const bytes = roots.get(v);
    if (bytes === undefined)
      throw new MvmError('internal', `trust fetch verified root version ${v} but did not keep it`);
    await replaceFile(join(outDir, `${v}.root.json`), bytes, { mode: 0o644, sync: true });
    carried.push(v);
  }
  for (const [name, bytes] of [
    [BUNDLE_FILES.timestamp, u.timestamp],
    [BUNDLE_FILES.snapshot, u.snapshot],
    [BUNDLE_FILES.targets, u.targets],
    [BUNDLE_FILES.trustedRoot, u.trustedRoot],
  ] as const)
    await replaceFile(join(outDir, name), bytes, { mode: 0o644, sync: true });
  // What was written is what will be carried: check it as trust import will.
  await verifyTrustBundle(outDir, anchor, now);
  return described(u, anchorVersion, carried, now);
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
