/**
 * How old the trust in force is, for the metrics (mvm_trusted_root_age_seconds,
 * mvm_tuf_root_expiry_timestamp_seconds), read without loading a Sigstore
 * library: a scrape reads the installed record, or parses the embedded or
 * named root's JSON, and verifies nothing. `trust status` and `status --check`
 * load and check the root itself.
 */
import { parseJsonObject } from '../core/json.js';
import { newestStartMs } from '../core/trust-policy.js';
import { MAX_TRUSTED_ROOT_BYTES } from '../io/files.js';
import { embeddedTrustedRootBytes } from './embedded.js';
import { firstTufRoot, readInstalledTrust, type TrustPaths } from './installed-trust.js';
import { readTrustFile } from './trust-file.js';

export interface TrustAge {
  readonly origin: 'embedded' | 'installed' | 'file';
  /**
   * Since when the trust in force is known current: when this host verified
   * an installed root (trust import), else the start of the newest authority
   * the root lists. Undefined when the root lists no readable start.
   */
  readonly asOfMs: number | undefined;
  /** The TUF root's expiry (installed, else the first root); none for a named file. */
  readonly tufRootExpiresMs?: number;
}

/** The embedded root's newest start, parsed once per process (a scrape asks again and again). */
let embeddedAsOfMs: { value: number | undefined } | undefined;

/** The trust in force as `loadTrustedRoot` chooses it: a named file, else installed, else embedded. */
export async function trustAge(paths: TrustPaths): Promise<TrustAge> {
  if (paths.trustedRootPath) {
    const bytes = await readTrustFile(
      paths.trustedRootPath,
      'trusted root',
      MAX_TRUSTED_ROOT_BYTES,
      'trusted-root',
    );
    return { origin: 'file', asOfMs: startOf(bytes) };
  }
  const installed = await readInstalledTrust(paths.dataDir);
  if (installed)
    return {
      origin: 'installed',
      asOfMs: Date.parse(installed.record.verifiedAt),
      tufRootExpiresMs: Date.parse(installed.record.expires.root),
    };
  embeddedAsOfMs ??= { value: startOf(embeddedTrustedRootBytes()) };
  return {
    origin: 'embedded',
    asOfMs: embeddedAsOfMs.value,
    tufRootExpiresMs: Date.parse(String(signedOf(await firstTufRoot(paths))?.['expires'])),
  };
}

function startOf(bytes: Uint8Array): number | undefined {
  const parsed = parseJsonObject(bytes);
  return parsed.ok ? newestStartMs(parsed.value) : undefined;
}

function signedOf(bytes: Uint8Array): Record<string, unknown> | undefined {
  const parsed = parseJsonObject(bytes);
  const signed = parsed.ok ? parsed.value['signed'] : undefined;
  return signed !== null && typeof signed === 'object'
    ? (signed as Record<string, unknown>)
    : undefined;
}
