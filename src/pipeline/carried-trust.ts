/**
 * Trust bundles on their way in: `mvmctl trust import DIR`, and the `trust/`
 * directory that `dev fetch` puts in a transfer set, imported by
 * `dev import-image --dir` (and `dev pull`) before the manifest's signature
 * is checked, so that a release signed with a Sigstore key newer than this
 * host's root verifies with the root that came with it.
 */
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../config.js';
import { isMvmError, MvmError } from '../errors.js';
import { parseJsonObject } from '../core/json.js';
import { printable } from '../core/printable.js';
import { importDeadlineMs, MAX_TUF_METADATA_BYTES, rootFileVersion } from '../core/trust-policy.js';
import { readRegularFile } from '../io/files.js';
import { audit } from '../audit/record.js';
import {
  firstTufRoot,
  installedAnchor,
  installTrust,
  readInstalledTrust,
  type InstalledTrust,
} from '../trust/installed-trust.js';
import {
  loadTrustedRoot,
  parseTrustedRoot,
  type LoadedTrustedRoot,
} from '../trust/trusted-root.js';
import type { VerifiedTrust } from '../trust/tuf-bundle.js';

/** The directory of a transfer set that holds its trust bundle. */
export const TRUST_BUNDLE_DIR = 'trust';

export interface ImportedTrust {
  readonly verified: VerifiedTrust;
  readonly installed: InstalledTrust;
  readonly unchanged: boolean;
}

/**
 * Verifies the bundle in `dir` (anchored on the newest installed root, else
 * the first one: embedded or MVM_TUF_ROOT) and installs it; on the record
 * either way.
 */
export async function importTrustBundle(
  config: Config,
  dir: string,
  now: Date,
): Promise<ImportedTrust> {
  const { verifyTrustBundle } = await import('../trust/tuf-bundle.js');
  let result: ImportedTrust;
  try {
    result = await installTrust(
      config.dataDir,
      async (before) =>
        verifyTrustBundle(
          dir,
          before ? await installedAnchor(before) : { root: await firstTufRoot(config) },
          now,
        ),
      dir,
      () => now,
    );
  } catch (e) {
    if (isMvmError(e))
      await audit(
        config,
        { event: 'trust.import', outcome: 'failed', code: e.code, message: e.message },
        now,
      ).catch(() => undefined);
    throw e;
  }
  const v = result.verified;
  await audit(
    config,
    {
      event: 'trust.import',
      outcome: result.unchanged ? 'unchanged' : 'ok',
      trust: {
        ...v.versions,
        trustedRootSha256: v.trustedRootSha256,
        freshness: v.freshness.state,
      },
    },
    now,
  );
  return result;
}

/** What became of a transfer set's trust bundle. */
export type CarriedTrust =
  | { readonly state: 'none' }
  | {
      readonly state: 'installed' | 'unchanged';
      readonly source: string;
      readonly versions: VerifiedTrust['versions'];
    }
  | {
      readonly state: 'skipped';
      readonly reason: 'file' | 'older' | 'expired';
      readonly detail: string;
    };

/**
 * A transfer set's `trust/`: imported when it is newer than the trust in
 * force, and the trusted root to verify the set with returned. Deciding to
 * leave a bundle out reads its versions and expiry before they are verified;
 * that is safe in one direction only, and only that one is taken: leaving it
 * out keeps the trust this host already had. Whatever is imported is fully
 * verified, and a bundle that does not verify stops the import (the set was
 * changed since `dev fetch` wrote it).
 */
export async function importCarriedTrust(
  config: Config,
  setDir: string,
  inForce: LoadedTrustedRoot,
  now: Date,
): Promise<{ carried: CarriedTrust; trustedRoot: LoadedTrustedRoot }> {
  const dir = join(setDir, TRUST_BUNDLE_DIR);
  const st = await lstat(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  });
  const keep = (carried: CarriedTrust) => ({ carried, trustedRoot: inForce });
  if (st === undefined) return keep({ state: 'none' });
  if (!st.isDirectory())
    throw new MvmError(
      'input',
      `${dir} is not a directory (a ${st.isSymbolicLink() ? 'symbolic link' : 'special file'})`,
      {
        cause:
          'a transfer set carries its trust bundle as a plain directory; mvmctl follows no link',
        fix: `Carry the set as dev fetch wrote it, or remove ${dir} to import with the trust in force.`,
      },
    );
  if (inForce.origin === 'file')
    return keep({
      state: 'skipped',
      reason: 'file',
      detail: `the trusted root is the file ${inForce.source} (--trusted-root or MVM_TRUSTED_ROOT)`,
    });
  const claimed = await claimedVersions(dir);
  const installed = await readInstalledTrust(config.dataDir);
  if (claimed && installed) {
    const have = installed.record.versions;
    // Timestamp versions only grow in a repository, across root rotations too.
    if (
      claimed.timestamp < have.timestamp ||
      (claimed.root !== undefined && claimed.root < have.root)
    )
      return keep({
        state: 'skipped',
        reason: 'older',
        detail: `it is older (timestamp v${claimed.timestamp}) than the trust installed here (root v${have.root}, timestamp v${have.timestamp})`,
      });
  }
  if (claimed && importDeadlineMs(claimed.expiresMs) < now.getTime())
    return keep({
      state: 'skipped',
      reason: 'expired',
      detail: `its timestamp.json expired ${new Date(claimed.expiresMs).toISOString()}, more than 7 days ago: carry a newer set (or run mvmctl trust fetch) to bring newer trust in`,
    });
  const r = await importTrustBundle(config, dir, now);
  const trustedRoot = await loadTrustedRoot(undefined, { dataDir: config.dataDir });
  return {
    carried: {
      state: r.unchanged ? 'unchanged' : 'installed',
      source: trustedRoot.source,
      versions: r.verified.versions,
    },
    trustedRoot,
  };
}

/**
 * The root version (the highest N.root.json; none when it carries no rotation) and the timestamp
 * version and expiry the bundle claims, unverified; undefined when they
 * cannot be read (the verification then says why).
 */
async function claimedVersions(
  dir: string,
): Promise<{ root: number | undefined; timestamp: number; expiresMs: number } | undefined> {
  try {
    const roots = (await readdir(dir)).flatMap((n) => rootFileVersion(n) ?? []);
    const ts = parseJsonObject(
      await readRegularFile(join(dir, 'timestamp.json'), 'timestamp.json', MAX_TUF_METADATA_BYTES, {
        noFollow: true,
      }),
    );
    const signed = ts.ok ? (ts.value['signed'] as Record<string, unknown> | undefined) : undefined;
    const version = signed?.['version'];
    const expiresMs = Date.parse(String(signed?.['expires']));
    if (!Number.isSafeInteger(version) || Number.isNaN(expiresMs)) return undefined;
    return {
      root: roots.length ? Math.max(...roots) : undefined,
      timestamp: version as number,
      expiresMs,
    };
  } catch {
    return undefined;
  }
}

/** Sigstore's public-good TUF repository, the one the embedded root belongs to. */
export const PUBLIC_GOOD_TUF_REPOSITORY = 'https://tuf-repo-cdn.sigstore.dev';

/** The TUF repository to fetch from: `flag` (--repository), else MVM_TUF_REPOSITORY, else public-good. */
export function tufRepository(config: Config, flag?: string): string {
  if (flag !== undefined) return repositoryUrl(flag, '--repository');
  if (config.tufRepository) return repositoryUrl(config.tufRepository, 'MVM_TUF_REPOSITORY');
  return PUBLIC_GOOD_TUF_REPOSITORY;
}

function repositoryUrl(value: string, from: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new MvmError('usage', `${from} ${JSON.stringify(printable(value, 200))} is not a URL`, {
      fix: `Name the TUF repository's base URL, e.g. ${PUBLIC_GOOD_TUF_REPOSITORY} or a mirror of it.`,
    });
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw new MvmError('usage', `${from} must be http(s), not ${url.protocol}`, {
      fix: 'Every file is verified by TUF, so a plain http mirror is allowed.',
    });
  return value.replace(/\/+$/, '');
}

/** A trust bundle fetched into a transfer set, and the trusted root it holds, to check the set with. */
export interface FetchedTrust {
  readonly repository: string;
  readonly verified: VerifiedTrust;
  readonly trustedRoot: LoadedTrustedRoot;
}

/**
 * `trust fetch` into `outDir`: a TUF update from the first root (embedded or
 * MVM_TUF_ROOT: the oldest a host of this mvmctl starts from, so the bundle
 * carries every rotation after it), the bundle written and verified as
 * `trust import` will verify it.
 */
export async function fetchTrust(
  config: Config,
  repository: string,
  outDir: string,
  now: Date,
  fix = 'Check connectivity and proxy settings (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) and the TUF repository (--repository, MVM_TUF_REPOSITORY).',
): Promise<FetchedTrust> {
  const [{ fetchTrustBundle }, { HttpClient }] = await Promise.all([
    import('../trust/tuf-bundle.js'),
    import('../net/http.js'),
  ]);
  const http = new HttpClient({ timeoutMs: config.httpTimeoutMs, fix });
  let verified: VerifiedTrust;
  try {
    verified = await fetchTrustBundle(
      http,
      repository,
      { root: await firstTufRoot(config) },
      outDir,
      now,
    );
  } finally {
    await http.close();
  }
  const trustedRoot = parseTrustedRoot(
    verified.trustedRoot,
    `fetched from ${repository} (TUF root v${verified.versions.root}, timestamp v${verified.versions.timestamp})`,
    'fetched',
  );
  return { repository, verified, trustedRoot };
}
