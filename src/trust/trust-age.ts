/**
 * How old the trust in force is, for the metrics: read from raw JSON only
 * (the installed record, the embedded root, or the named file), so that a
 * scrape loads no Sigstore library. What verifies signatures reads the same
 * files through loadTrustedRoot, with every check.
 */
import type { Config } from '../config.js';
import { parseJsonObject } from '../core/json.js';
import { newestStartMs } from '../core/trust-policy.js';
import { MAX_TRUSTED_ROOT_BYTES } from '../io/files.js';
import { embeddedTrustedRootBytes, embeddedTufRootBytes } from './embedded.js';
import { readInstalledTrust } from './installed-trust.js';
import { readTrustFile } from './trust-file.js';

export interface TrustAge {
  readonly origin: 'embedded' | 'installed' | 'file';
  /** Since when the trust is known current (see TrustStatus.asOf). */
  readonly asOfMs: number;
  /** The TUF root's expiry; absent for a named file, which has none. */
  readonly rootExpiresMs?: number;
}

const objectOf = (bytes: Uint8Array): Record<string, unknown> => {
  const p = parseJsonObject(bytes);
  return p.ok ? p.value : {};
};

/** The trust in force's age facts, as every command would pick the root (file, installed, embedded). */
export async function trustAge(config: Config): Promise<TrustAge | undefined> {
  if (config.trustedRootPath) {
    const bytes = await readTrustFile(
      config.trustedRootPath,
      'trusted root',
      MAX_TRUSTED_ROOT_BYTES,
      'trusted-root',
    );
    const start = newestStartMs(objectOf(bytes));
    return start === undefined ? undefined : { origin: 'file', asOfMs: start };
  }
  const installed = await readInstalledTrust(config.dataDir);
  if (installed) {
    return {
      origin: 'installed',
      asOfMs: Date.parse(installed.record.verifiedAt),
      rootExpiresMs: Date.parse(installed.record.expires.root),
    };
  }
  const start = newestStartMs(objectOf(embeddedTrustedRootBytes()));
  const tufRoot = objectOf(embeddedTufRootBytes())['signed'] as Record<string, unknown> | undefined;
  return start === undefined
    ? undefined
    : {
        origin: 'embedded',
        asOfMs: start,
        ...(typeof tufRoot?.['expires'] === 'string'
          ? { rootExpiresMs: Date.parse(tufRoot['expires']) }
          : {}),
      };
}
