/**
 * The cached revocation list, `~/.cache/mvm/revocations/` (SPEC.md section 5):
 * read, signature-verified against the revocations workflow identity, parsed,
 * and aged by the JSON file's mtime, so the seed's manual workflow (copy the
 * pair in, `touch` the JSON) keeps working. No network here.
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { MvmError } from '../errors.js';
import { revocationsPolicy } from '../core/release.js';
import {
  cacheAge,
  parseRevocationList,
  type CacheAge,
  type RevocationList,
} from '../core/revocation.js';
import { readRegularFile } from '../io/files.js';
import { parseBundle } from '../trust/bundle.js';
import type { LoadedTrustedRoot } from '../trust/trusted-root.js';
import { verifyArtifact } from '../trust/verify.js';

export const REVOCATIONS_JSON = 'revoked-versions.json';
export const REVOCATIONS_BUNDLE = 'revoked-versions.json.bundle';
const MAX_LIST_BYTES = 4 * 1024 * 1024;

export type CachedRevocations =
  | { readonly state: 'absent'; readonly dir: string }
  | {
      readonly state: 'verified';
      readonly dir: string;
      readonly list: RevocationList;
      readonly signer: string;
      readonly ageMs: number;
      readonly age: CacheAge;
      readonly modifiedAt: string;
    };

export async function readCachedRevocations(
  dir: string,
  repo: string,
  trustedRoot: LoadedTrustedRoot,
  now: Date,
): Promise<CachedRevocations> {
  const jsonPath = join(dir, REVOCATIONS_JSON);
  const bundlePath = join(dir, REVOCATIONS_BUNDLE);
  let st;
  try {
    st = await fs.lstat(jsonPath);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { state: 'absent', dir };
    throw new MvmError('store', `Cannot read the revocation cache ${dir}`, {
      cause: (e as Error).message,
    });
  }
  const reimport = `Re-import the pair: copy ${REVOCATIONS_JSON} and ${REVOCATIONS_BUNDLE} from the same revocations release into ${dir} (or use mvmctl revocations import), then retry.`;
  const failed = (cause: string, check?: MvmError['check']) =>
    new MvmError(
      'signature',
      `Cosign verification failed for the cached revocation list: ${cause}`,
      {
        cause:
          'a revocation list that does not verify is never trusted, and a recall cannot be ruled out',
        fix: reimport,
        ...(check ? { check } : {}),
      },
    );
  let json: Buffer;
  let bundle: Buffer;
  try {
    // O_NOFOLLOW: the operator copies real files in; a planted symlink is refused.
    json = await readRegularFile(jsonPath, 'revocation list', MAX_LIST_BYTES, { noFollow: true });
    bundle = await readRegularFile(bundlePath, 'revocation list bundle', MAX_LIST_BYTES, {
      noFollow: true,
    });
  } catch (e) {
    if (e instanceof MvmError) throw failed(e.message);
    throw e;
  }
  let signer: string;
  try {
    const v = verifyArtifact(json, parseBundle(bundle), trustedRoot, revocationsPolicy(repo));
    signer = v.signer.kind === 'certificate' ? v.signer.identity : 'key';
  } catch (e) {
    if (e instanceof MvmError && e.code === 'signature') throw failed(e.message, e.check);
    throw e;
  }
  let list: RevocationList;
  try {
    list = parseRevocationList(json);
  } catch (e) {
    if (e instanceof MvmError)
      throw new MvmError(e.code, e.message, { cause: e.cause, fix: reimport });
    throw e;
  }
  const ageMs = Math.max(0, now.getTime() - st.mtimeMs);
  return {
    state: 'verified',
    dir,
    list,
    signer,
    ageMs,
    age: cacheAge(ageMs),
    modifiedAt: st.mtime.toISOString(),
  };
}
