/**
 * Reading an installed image's receipt where a missing or damaged one must not
 * stop the report (status, dev images, metrics): never through a link, bounded,
 * and undefined for anything that is not a JSON object. A light module: the
 * metrics path reads receipts without loading the verification pipeline.
 */
import { join } from 'node:path';
import { readRegularFile } from '../io/files.js';
import type { Receipt } from '../pipeline/import-image.js';

export const RECEIPT_FILE = 'receipt.json';
/** A receipt is a few KiB; the same bound as a manifest. */
const MAX_RECEIPT_BYTES = 1024 * 1024;

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
