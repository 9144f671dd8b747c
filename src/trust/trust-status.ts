/**
 * The trust in force, as `trust status`, `status` and the metrics report it:
 * which root, its TUF versions and expiry, and how old it is.
 */
import { trustFreshness, type RoleExpiries, type TrustFreshness } from '../core/trust-policy.js';
import {
  firstTufRoot,
  readInstalledTrust,
  type TrustPaths,
  type TrustRecord,
} from './installed-trust.js';
import { loadTrustedRoot, type LoadedTrustedRoot, type TrustedRootOrigin } from './trusted-root.js';

/** What `trust status` and `status` report about the trust in force. */
export interface TrustStatus {
  readonly origin: TrustedRootOrigin;
  readonly source: string;
  readonly sha256: string;
  readonly tufRootVersion: number;
  readonly installed?: TrustRecord;
  /** Installed only: the freshness of its metadata now. */
  readonly freshness?: TrustFreshness;
  /** The TUF root's own expiry: past it, the trust in force is out of date (status --check). */
  readonly rootExpires: string;
  readonly rootExpired: boolean;
  /**
   * Since when the trust in force is known current: installed, when this host
   * verified it (trust import); embedded or a file, the start of the newest
   * authority it lists (the last key Sigstore added that it knows of).
   */
  readonly asOf: string;
  /** now - asOf, in seconds: mvm_trusted_root_age_seconds. */
  readonly ageSeconds: number;
}

export async function trustStatus(
  config: TrustPaths,
  now: Date,
  loaded?: LoadedTrustedRoot,
): Promise<TrustStatus> {
  loaded ??= await loadTrustedRoot(config.trustedRootPath, { dataDir: config.dataDir });
  // An installed root brings its record; otherwise a set may still be installed (a file overrides it).
  const record = loaded.installed ?? (await readInstalledTrust(config.dataDir))?.record;
  const first = record
    ? undefined
    : (JSON.parse((await firstTufRoot(config)).toString('utf8')).signed as {
        version: number;
        expires: string;
      });
  const rootExpires: string = record ? record.expires.root : first!.expires;
  const asOf =
    loaded.origin === 'installed' && record
      ? record.verifiedAt
      : new Date(loaded.newestAuthorityStartMs ?? 0).toISOString();
  return {
    origin: loaded.origin,
    source: loaded.source,
    sha256: loaded.sha256,
    tufRootVersion: record ? record.versions.root : first!.version,
    ...(record
      ? { installed: record, freshness: trustFreshness(record.expires as RoleExpiries, now) }
      : {}),
    rootExpires,
    rootExpired: Date.parse(rootExpires) < now.getTime(),
    asOf,
    ageSeconds: Math.max(0, (now.getTime() - Date.parse(asOf)) / 1000),
  };
}
