import { createHash } from 'node:crypto';
import { constants, existsSync, promises as fs } from 'node:fs';
import type { OpenedFile } from '../io/files.js';

/** 8 MiB reads: large enough to hash at full speed, few enough buffers to keep memory flat. */
const CHUNK = 8 * 1024 * 1024;

export interface CopiedFile {
  readonly sha256: string;
  readonly bytes: number;
}

/**
 * Copies `src` to a new file `dest` (0600, must not exist) and returns the
 * SHA-256 of the bytes in `dest`: the bytes that get installed (SPEC.md
 * section 3, step 7), never a separate read of the source.
 *
 * On Linux the kernel copies (copy_file_range, through fs.copyFile) while this
 * thread hashes the destination right behind it, reading only what the copy
 * has already written (a read never goes past the file's size). That is about
 * one SHA-256 pass over the bytes; a user-space read/write copy costs far more
 * kernel time on these machines. The source is reopened through
 * /proc/self/fd, so it is the very file that was checked, not whatever its path
 * names by now. Elsewhere a user-space pipeline hashes each chunk as it writes it.
 */
export async function copyAndHash(
  src: OpenedFile,
  dest: string,
  onProgress?: (bytes: number) => void,
  /** Tests force the portable path; 'auto' uses the kernel copy where /proc allows it. */
  strategy: 'auto' | 'user-space' = 'auto',
): Promise<CopiedFile> {
  // Created here, exclusively and without following links, before anything copies into it.
  await (
    await fs.open(
      dest,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o600,
    )
  ).close();
  const procPath = `/proc/self/fd/${src.handle.fd}`;
  const result =
    strategy === 'auto' && existsSync(procPath)
      ? await kernelCopyHashBehind(procPath, dest, onProgress)
      : await userSpaceCopyAndHash(src, dest, onProgress);
  // fs.copyFile gives the copy the source's mode; the store's files are 0600.
  await fs.chmod(dest, 0o600);
  return result;
}

async function kernelCopyHashBehind(
  source: string,
  dest: string,
  onProgress?: (bytes: number) => void,
): Promise<CopiedFile> {
  let finished = false;
  let copyError: unknown;
  const copying = fs.copyFile(source, dest).then(
    () => void (finished = true),
    (e: unknown) => {
      copyError = e;
      finished = true;
    },
  );
  const reader = await fs.open(dest, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const hash = createHash('sha256');
    const buf = Buffer.allocUnsafe(CHUNK);
    let pos = 0;
    for (;;) {
      const copyDone = finished; // read after checking: once done, a short read is the end
      const { bytesRead } = await reader.read(buf, 0, CHUNK, pos);
      if (bytesRead > 0) {
        hash.update(buf.subarray(0, bytesRead));
        pos += bytesRead;
        onProgress?.(pos);
        continue;
      }
      if (copyDone) break;
      await new Promise((r) => setTimeout(r, 1)); // the copy is ahead of nothing yet: let it run
    }
    await copying;
    if (copyError) throw copyError;
    return { sha256: hash.digest('hex'), bytes: pos };
  } finally {
    await reader.close();
    await copying;
  }
}

async function userSpaceCopyAndHash(
  src: OpenedFile,
  dest: string,
  onProgress?: (bytes: number) => void,
): Promise<CopiedFile> {
  const out = await fs.open(dest, constants.O_WRONLY | constants.O_NOFOLLOW);
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
