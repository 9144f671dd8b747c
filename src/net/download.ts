/**
 * One release file onto disk (SPEC.md section 11): streamed to `NAME.partial`
 * while hashed, renamed to `NAME` only when its SHA-256 is the one the signed
 * manifest records. A cut connection is retried and resumed with HTTP Range; a
 * server that ignores Range (200), a 416 or a changed length restarts the file
 * from byte 0. Interrupted, the partial stays for the next run to resume; a
 * mismatch deletes it (it is ours) and is a digest error (exit 14). A half
 * file is never under its final name.
 */
import { constants, promises as fs } from 'node:fs';
import { MvmError, ONLINE_FETCH_FAILED } from '../errors.js';
import { sameDigest } from '../core/manifest.js';
import { sha256OfOpened } from '../io/files.js';
import { HashingSink } from './hashing-sink.js';
import { HttpClient, TransferError, withRetries } from './http.js';

export interface DownloadRequest {
  readonly url: string;
  /** The final path; the partial is `${dest}.partial` beside it. */
  readonly dest: string;
  /** What the signed manifest records for this file. */
  readonly sha256: string;
  /** Refused beyond this many bytes (MVM_MAX_KERNEL_BYTES / MVM_MAX_ROOTFS_BYTES). */
  readonly maxBytes: number;
  readonly limitVariable: string;
  /** The file's role in the operator's words: "kernel", "rootfs", "initrd". */
  readonly role: string;
  /** A local write failure is the operator's output directory (`input`, exit 3) or the store (`store`, exit 17). */
  readonly diskErrorCode: 'input' | 'store';
}

export interface DownloadResult {
  readonly sha256: string;
  readonly bytes: number;
  /** Bytes that were already on disk and not transferred again (a resumed partial or a complete file). */
  readonly reused: number;
  /** True when the final file was already there with the right digest: nothing was requested. */
  readonly alreadyThere: boolean;
}

export interface DownloadHooks {
  readonly signal?: AbortSignal;
  /** Bytes on disk so far and the total once known. */
  readonly onProgress?: (bytes: number, total: number | undefined) => void;
  readonly onRetry?: (e: TransferError, delayMs: number) => void;
}

export const partialPath = (dest: string): string => `${dest}.partial`;

/** Readies what downloads about to start need (the hashing and writing workers), while other work goes on. */
export const prepareDownloads = (): void => HashingSink.prewarm();

export async function download(
  client: HttpClient,
  req: DownloadRequest,
  hooks: DownloadHooks = {},
): Promise<DownloadResult> {
  const existing = await hashIfRegular(req.dest, req.maxBytes);
  if (existing && sameDigest(existing.sha256, req.sha256)) {
    hooks.onProgress?.(existing.bytes, existing.bytes);
    return { ...existing, reused: existing.bytes, alreadyThere: true };
  }
  const partial = partialPath(req.dest);
  const sink = await HashingSink.open(partial, req.diskErrorCode);
  let done: { sha256: string; bytes: number; reused: number };
  try {
    const reused = sink.size;
    let total: number | undefined;
    await withRetries(
      async () => {
        total = await transfer(client, req, sink, total, hooks);
      },
      {
        ...(hooks.signal ? { signal: hooks.signal } : {}),
        ...(hooks.onRetry ? { onRetry: hooks.onRetry } : {}),
      },
    );
    done = { sha256: await sink.finish(), bytes: sink.size, reused };
  } finally {
    await sink.close();
  }
  if (!sameDigest(done.sha256, req.sha256)) {
    await fs.rm(partial, { force: true });
    throw new MvmError(
      'digest',
      `${req.role} SHA-256 mismatch: the manifest records ${req.sha256}, ${req.url} served ${done.sha256}`,
      {
        cause: 'Artifact tampered or corrupted in transit',
        fix: `The partial download was deleted. Fetch again; if it persists, the release location (${new URL(req.url).origin}) serves a file the release did not sign: report it.`,
      },
    );
  }
  await fs.rename(partial, req.dest);
  return { ...done, alreadyThere: false };
}

/**
 * One request, from the partial's end when it has bytes (Range), else from 0.
 * Returns the file's total size as the server states it (kept across
 * attempts: a resumed answer for a file of another size is a changed file).
 */
async function transfer(
  client: HttpClient,
  req: DownloadRequest,
  sink: HashingSink,
  knownTotal: number | undefined,
  hooks: DownloadHooks,
): Promise<number | undefined> {
  const from = sink.size;
  let total = knownTotal;
  // Decided when the response headers arrive; acted on (restarts are asynchronous) after the request.
  let verdict = 'body' as 'body' | 'restart' | 'complete' | { status: number };
  let failure = undefined as unknown;
  const request = client.stream(
    req.url,
    { ...(from > 0 ? { from } : {}), ...(hooks.signal ? { signal: hooks.signal } : {}) },
    {
      response: (status, headers) => {
        if (status === 206 && from > 0) {
          const range = contentRange(headers['content-range']);
          if (!range || range.start !== from || (total !== undefined && range.total !== total)) {
            verdict = 'restart'; // not the continuation of what we hold
            return false;
          }
          total = range.total;
        } else if (status === 200) {
          // A fresh answer, or a server that ignores Range: the whole file follows, so what we hold goes.
          if (from > 0) sink.restart();
          total = contentLength(headers['content-length']);
        } else if (status === 416 && from > 0) {
          verdict = contentRange(headers['content-range'])?.total === from ? 'complete' : 'restart';
          return false;
        } else {
          verdict = { status };
          return false;
        }
        if (total !== undefined && total > req.maxBytes) {
          failure = tooLarge(req, total);
          return false;
        }
        return true;
      },
      // A failure ends the request (thrown, the reader closes the connection):
      // draining instead would never end on a body that does not.
      data: (chunk, resume) => {
        if (failure) throw failure;
        if (sink.size + chunk.length > req.maxBytes) {
          failure = tooLarge(req, sink.size + chunk.length);
          throw failure;
        }
        try {
          if (sink.write(chunk)) {
            hooks.onProgress?.(sink.size, total);
            return true;
          }
        } catch (e) {
          failure = e;
          throw e;
        }
        hooks.onProgress?.(sink.size, total);
        sink.drain(resume);
        return false;
      },
      // Read into the batch the sink hashes and writes next: no copy (its write() sees it in place).
      room: () => (failure ? undefined : sink.room()),
    },
  );
  // Our own failure, not the transport's wrapping of it (which would be retried).
  await request.catch((e: unknown) => {
    throw failure ?? e;
  });
  if (failure) throw failure;
  if (verdict === 'complete') return total;
  if (verdict === 'restart') {
    sink.restart();
    throw new TransferError(
      `GET ${req.url}: the server resumed at another offset or the file changed size; restarting it`,
      true,
      'a resumed download must continue the bytes already held',
      'Nothing to do: the file is downloaded again from its start.',
    );
  }
  if (typeof verdict === 'object') throw client.statusError(req.url, verdict.status, req.role);
  if (total !== undefined && sink.size !== total) {
    throw new TransferError(
      `GET ${req.url}: the connection ended at byte ${sink.size} of ${total}`,
      true,
      'the server closed the connection early',
      'Run the command again: it resumes where it stopped.',
    );
  }
  return total;
}

const tooLarge = (req: DownloadRequest, bytes: number): MvmError =>
  new MvmError(
    'network',
    `${ONLINE_FETCH_FAILED}: GET ${req.url}: the ${req.role} is larger than ${req.maxBytes} bytes (${bytes})`,
    {
      cause: `the server sends more than ${req.limitVariable} allows`,
      fix: `If the release's ${req.role} really is that large, raise ${req.limitVariable}; otherwise the release location is wrong.`,
    },
  );

/** `bytes START-END/TOTAL`; anything else is not a range we asked for. */
function contentRange(
  v: string | string[] | undefined,
): { start: number; total: number } | undefined {
  const m = typeof v === 'string' ? /^bytes (\d{1,15})-(\d{1,15})\/(\d{1,15})$/.exec(v) : null;
  return m ? { start: Number(m[1]), total: Number(m[3]) } : undefined;
}

function contentLength(v: string | string[] | undefined): number | undefined {
  return typeof v === 'string' && /^\d{1,15}$/.test(v) ? Number(v) : undefined;
}

/** The final file, hashed, when it is a regular file (never through a symlink); undefined otherwise. */
async function hashIfRegular(
  path: string,
  maxBytes: number,
): Promise<{ sha256: string; bytes: number } | undefined> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    const st = await handle.stat();
    if (!st.isFile() || st.size > maxBytes) return undefined;
    return { sha256: await sha256OfOpened(handle, st.size), bytes: st.size };
  } finally {
    await handle.close();
  }
}
