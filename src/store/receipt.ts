/**
 * What an installed image is: the files in its store object, and the receipt
 * written beside them at import (what was verified, by whom, when). The
 * pipeline builds receipts; this module defines them and reads them back.
 *
 * Reading where a missing or damaged receipt must not stop the report
 * (status, dev images, metrics): never through a link, bounded, and undefined
 * for anything that is not a JSON object. A light module: the metrics path
 * reads receipts without loading the verification pipeline.
 */
import { join } from 'node:path';
import type { Bypass } from '../audit/record.js';
import { MAX_MANIFEST_BYTES, type Arch } from '../core/manifest.js';
import { readRegularFile } from '../io/files.js';
import type { ImageStore } from './image-store.js';

export const RECEIPT_FILE = 'receipt.json';
/** A receipt is a few KiB; the same bound as a manifest. */
export const MAX_RECEIPT_BYTES = MAX_MANIFEST_BYTES;

/** One verified file of an installed image: its name in the object, its release name, digest and size. */
export interface InstalledArtifact {
  readonly file: string;
  readonly name: string;
  readonly sha256: string;
  readonly bytes: number;
}

/** Written beside the image: what was verified, by whom, when, by which mvmctl. */
export interface Receipt {
  readonly schema: 1;
  readonly version: string;
  readonly arch: Arch;
  readonly variant: string;
  readonly rootfsFormat: string;
  readonly verification: 'verified' | 'UNVERIFIED';
  readonly bypassed: readonly Bypass[];
  readonly signer: {
    identity: string;
    issuer: string;
    logIndex: string;
    integratedTime: string | null;
    /** The verified signing time and who vouches for it (the log, or an RFC 3161 timestamp authority). */
    signedTime: { source: string; time: string } | null;
  } | null;
  readonly manifestSha256: string;
  readonly bundleSha256: string;
  readonly artifacts: {
    readonly kernel: InstalledArtifact;
    readonly rootfs: InstalledArtifact;
    /** Present only when the manifest lists an initrd. */
    readonly initrd?: InstalledArtifact;
  };
  /** The manifest's built_at (receipts written before it was recorded lack it: see builtAtOf). */
  readonly builtAt?: string;
  readonly notAfter: string;
  readonly expiredAtInstall: boolean;
  readonly revocation: { state: string; ageHours?: number };
  readonly installedAt: string;
  readonly mvmctlVersion: string;
  readonly trustedRoot: { source: string; sha256: string };
  /**
   * Signed manifest fields this mvmctl does not know (unknownFieldsOf: top-level by name,
   * an artifact's as `artifacts[<name>].<field>`), recorded as they were, never acted on.
   * Absent when the manifest has none.
   */
  readonly manifestUnknownFields?: Readonly<Record<string, unknown>>;
}

export const INSTALLED_FILES = {
  kernel: 'vmlinux',
  rootfs: (format: string) => `rootfs.${format}`,
  initrd: 'initrd',
  manifest: 'manifest.json',
  bundle: 'manifest.json.bundle',
  receipt: RECEIPT_FILE,
};

/** Every installed image with its receipt (undefined when unreadable), for status reports. */
export async function installedImages(
  store: ImageStore,
): Promise<{ version: string; path: string; receipt: Receipt | undefined }[]> {
  const out = [];
  for (const img of await store.list()) {
    const receipt = await readReceiptIfAny(img.dir);
    out.push({ version: img.version, path: join(store.root, `v${img.version}`), receipt });
  }
  return out;
}

/**
 * When an installed build was built: its receipt says, or (a receipt written
 * before builtAt was recorded) the verified manifest beside it.
 */
export async function builtAtOf(
  dir: string,
  receipt: Pick<Receipt, 'builtAt'> | undefined,
): Promise<string | undefined> {
  if (typeof receipt?.builtAt === 'string') return receipt.builtAt;
  try {
    const bytes = await readRegularFile(
      join(dir, INSTALLED_FILES.manifest),
      'manifest',
      MAX_MANIFEST_BYTES,
      { noFollow: true },
    );
    const parsed = JSON.parse(bytes.toString('utf8')) as { built_at?: unknown } | null;
    const builtAt = parsed?.built_at;
    return typeof builtAt === 'string' && !Number.isNaN(Date.parse(builtAt))
      ? new Date(builtAt).toISOString()
      : undefined;
  } catch {
    return undefined;
  }
}

export async function readReceiptIfAny(imageDir: string): Promise<Receipt | undefined> {
  try {
    const bytes = await readRegularFile(
      join(imageDir, RECEIPT_FILE),
      'receipt',
      MAX_RECEIPT_BYTES,
      {
        noFollow: true,
      },
    );
    const r = JSON.parse(bytes.toString('utf8')) as unknown;
    return r !== null && typeof r === 'object' ? (r as Receipt) : undefined;
  } catch {
    return undefined;
  }
}
