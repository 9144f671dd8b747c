import { createHash } from 'node:crypto';
import { constants, promises as fs } from 'node:fs';
import type { OpenedFile } from '../io/files.js';

/** 8 MiB reads: large enough to hash at full speed, three per file keep memory flat. */
const CHUNK = 8 * 1024 * 1024;

export interface CopiedFile {
  readonly sha256: string;
  readonly bytes: number;
}

/**
 * Copies `src` to a new file `dest` (0600, must not exist) and hashes exactly
 * the bytes written, in one pass (SPEC.md section 3, step 7: hash what gets
 * installed, never a second read). Reading the next chunk and writing the
 * last one run in the thread pool while this thread hashes, so the copy costs
 * little more than the hash.
 */
export async function copyAndHash(
  src: OpenedFile,
  dest: string,
  onProgress?: (bytes: number) => void,
): Promise<CopiedFile> {
  const out = await fs.open(
    dest,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o600,
  );
  try {
    const hash = createHash('sha256');
    const bufs = [0, 1, 2].map(() => Buffer.allocUnsafe(Math.min(CHUNK, Math.max(src.size, 1))));
    let pos = 0;
    let reading = src.handle.read(bufs[0]!, 0, bufs[0]!.length, 0);
    let writing: Promise<unknown> = Promise.resolve();
    for (let i = 0; ; i++) {
      const { bytesRead } = await reading;
      if (bytesRead === 0) break;
      const chunk = bufs[i % 3]!.subarray(0, bytesRead);
      pos += bytesRead;
      // The buffer read into next was last written two rounds ago, and that write has finished.
      const next = bufs[(i + 1) % 3]!;
      reading = src.handle.read(next, 0, next.length, pos);
      hash.update(chunk);
      await writing;
      writing = writeAll(out, chunk, pos - bytesRead);
      onProgress?.(pos);
    }
    await writing;
    return { sha256: hash.digest('hex'), bytes: pos };
  } finally {
    await out.close();
  }
}

async function writeAll(out: fs.FileHandle, chunk: Buffer, at: number): Promise<void> {
  let off = 0;
  while (off < chunk.length) {
    const { bytesWritten } = await out.write(chunk, off, chunk.length - off, at + off);
    off += bytesWritten;
  }
}
