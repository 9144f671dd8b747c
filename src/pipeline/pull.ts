/**
 * `mvmctl dev pull` (and `dev up` with nothing installed): the transfer set of
 * this mvmctl's release, downloaded into a private staging directory, then the
 * import pipeline on it. One verifier: what reaches the store passed exactly
 * the checks an air-gapped import runs. The staging directory is kept when
 * something fails, so the next pull resumes instead of starting over.
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { downloadsDir } from '../config.js';
import { withLock } from '../io/lock.js';
import { ensurePrivateDir } from '../io/secure-dir.js';
import { fetchReleaseSet, type FetchEvent, type TransferSet } from './fetch-release.js';
import {
  importImage,
  releaseSetIn,
  type ImportContext,
  type ImportResult,
} from './import-image.js';
import type { ArtifactRole } from '../core/manifest.js';

export interface PullHooks {
  readonly report: (e: FetchEvent) => void;
  readonly onDownloadProgress?: (
    role: ArtifactRole,
    bytes: number,
    total: number | undefined,
  ) => void;
  /** The download half is over: the import follows. */
  readonly downloaded?: () => void;
}

export async function pullImage(
  ctx: ImportContext,
  hooks: PullHooks,
): Promise<ImportResult & { transfer: TransferSet }> {
  const downloads = downloadsDir(ctx.config);
  const staging = join(downloads, `v${ctx.mvmctlVersion}-${ctx.hostArch}`);
  await ensurePrivateDir(staging, ctx.config.dataDir);
  // Two pulls at once would write the same partial files: the second waits for the first.
  return withLock(
    join(downloads, '.pull.lock'),
    'the dev image download',
    async () => {
      const transfer = await fetchReleaseSet({
        config: { ...ctx.config, offline: ctx.offline || ctx.config.offline },
        trustedRoot: ctx.trustedRoot,
        version: ctx.mvmctlVersion,
        arch: ctx.hostArch,
        dir: staging,
        allowRecalled: false,
        carryTrust: true,
        diskErrorCode: 'store',
        now: ctx.now,
        ...(ctx.signal ? { signal: ctx.signal } : {}),
        report: hooks.report,
        warn: ctx.warn,
        ...(hooks.onDownloadProgress ? { onProgress: hooks.onDownloadProgress } : {}),
      });
      hooks.downloaded?.();
      const result = await importImage(releaseSetIn(staging, ctx.hostArch), ctx);
      await fs.rm(staging, { recursive: true, force: true });
      return { ...result, transfer };
    },
    { timeoutMs: 24 * 3600_000 },
  );
}
