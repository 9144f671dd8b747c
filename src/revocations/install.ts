/**
 * Installing a revocation pair carried in by hand (`revocations import`, or the
 * pair inside a transfer set given to `dev import-image --dir`): verified
 * against the revocations workflow, refused when it would roll the cached list
 * back, then swapped in atomically and remembered on this host.
 */
import { revocationsDir, type Config } from '../config.js';
import { MvmError } from '../errors.js';
import type { LoadedTrustedRoot } from '../trust/trusted-root.js';
import {
  installRevocationPair,
  isRootGap,
  verifyRevocationPair,
  type VerifiedList,
} from './cache.js';
import { checkNoRollback, rememberInstalled } from './refresh.js';

export async function installCarriedPair(
  config: Config,
  trustedRoot: LoadedTrustedRoot,
  json: Buffer,
  bundle: Buffer,
  now: Date,
): Promise<VerifiedList> {
  let incoming: VerifiedList;
  try {
    incoming = verifyRevocationPair(json, bundle, config.releaseRepo, trustedRoot);
  } catch (e) {
    if (e instanceof MvmError && e.code === 'signature') {
      throw new MvmError(
        'signature',
        `Cosign verification failed for the revocation list: ${e.message}`,
        {
          cause: isRootGap(e)
            ? `${e.cause}; nothing was installed`
            : `${e.cause ? `${e.cause}; ` : ''}the list and bundle do not match, or the list was not signed by the revocations workflow`,
          fix: isRootGap(e)
            ? e.fix
            : 'Copy both files together from the revocations release; nothing was installed.',
          ...(e.check ? { check: e.check } : {}),
          underlying: e,
        },
      );
    }
    throw e;
  }
  await installRevocationPair(revocationsDir(config), json, bundle, () =>
    checkNoRollback(config, trustedRoot, now, incoming),
  );
  await rememberInstalled(config, incoming);
  return incoming;
}
