import { createHash } from 'node:crypto';
import { constants, existsSync, promises as fs } from 'node:fs';
import { MvmError } from '../errors.js';
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
 * On Linux the kernel copies (copy_file_range, through cp) while this thread
 * hashes the destination right behind it, reading only what the copy has
 * already written (a read never goes past the file's size). That is about one
 * SHA-256 pass over the bytes; a user-space read/write copy costs far more
 * kernel time on these machines. Elsewhere a user-space pipeline hashes each
 * chunk as it writes it. A source that changes size while being copied is
 * refused.
 *
 * `signal` stops the copy (Ctrl-C): the cp child is killed at once and an
 * `interrupted` error is thrown; so is a cp killed by SIGINT or SIGTERM (a
 * terminal's Ctrl-C reaches the whole process group). What was copied stays
 * in `dest` for the caller to remove.
 */
export async function copyAndHash(
  src: OpenedFile,
  dest: string,
  onProgress?: (bytes: number) => void,
  /** Tests force the portable path; 'auto' uses the kernel copy where /proc allows it. */
  strategy: 'auto' | 'user-space' = 'auto',
  signal?: AbortSignal,
): Promise<CopiedFile> {
  throwIfInterrupted(signal);
  // Created here, exclusively and without following links, before anything copies into it.
  await (
    await fs.open(
      dest,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o600,
    )
  ).close();
  throwIfInterrupted(signal);
  const result =
    strategy === 'auto' && existsSync('/dev/stdin') && process.platform === 'linux'
      ? await kernelCopyHashBehind(src, dest, onProgress, signal)
      : await userSpaceCopyAndHash(src, dest, onProgress, signal);
  await fs.chmod(dest, 0o600); // whatever the copy did, the store's files are 0600
  if (result.bytes !== src.size) {
    throw new MvmError(
      'input',
      `${src.path} changed size while it was being copied (${src.size} bytes when opened, ${result.bytes} copied)`,
      {
        cause: 'something is writing to the file',
        fix: 'Make sure nothing writes to the release files during the import, then retry.',
      },
    );
  }
  return result;
}

/** The copy was stopped by a signal: the caller removes what it copied and says so. */
function interruptedCopy(signal: AbortSignal | undefined, why?: string): MvmError {
  const by = why ?? (typeof signal?.reason === 'string' ? signal.reason : 'a signal');
  return new MvmError('interrupted', `The copy into the store was interrupted (${by})`);
}

function throwIfInterrupted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw interruptedCopy(signal);
}

async function kernelCopyHashBehind(
  src: OpenedFile,
  dest: string,
  onProgress?: (bytes: number) => void,
  signal?: AbortSignal,
): Promise<CopiedFile> {
  // coreutils cp copies in the kernel (copy_file_range) and stops at end of
  // file, even if the source shrinks meanwhile; fs.copyFile would loop forever
  // waiting for bytes that no longer exist. The child reads the very file that
  // was checked: our descriptor, passed as its stdin.
  // node:child_process is loaded on first use, as in src/io/process.ts.
  const { spawn } = process.getBuiltinModule('node:child_process');
  const child = spawn('cp', ['--', '/dev/stdin', dest], {
    stdio: [src.handle.fd, 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  let exit: { code: number | null; signal?: NodeJS.Signals | null; error?: Error } | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('error', (error) => ((exit = { code: null, error }), resolve()));
    child.once('exit', (code, how) => ((exit ??= { code, signal: how }), resolve()));
  });
  // Killed from the abort itself, synchronously: no cp outlives an interrupted import.
  const stop = (): void => void (exit === undefined && child.kill('SIGKILL'));
  signal?.addEventListener('abort', stop, { once: true });
  const reader = await fs.open(dest, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const hash = createHash('sha256');
    const bufs = [Buffer.allocUnsafe(CHUNK), Buffer.allocUnsafe(CHUNK)];
    // Whether the copy had finished is noted when a read is issued: once it
    // had, a short read is the end of the file, not a copy that is behind.
    const issue = (i: number, at: number) => {
      const copyDone = exit !== undefined;
      return { copyDone, read: reader.read(bufs[i % 2]!, 0, CHUNK, at) };
    };
    let pos = 0;
    let i = 0;
    let pending = issue(i, pos);
    for (;;) {
      const { bytesRead } = await pending.read;
      if (bytesRead > 0) {
        const chunk = bufs[i % 2]!.subarray(0, bytesRead);
        pos += bytesRead;
        // The next read runs in the thread pool while this thread hashes.
        pending = issue(++i, pos);
        hash.update(chunk);
        onProgress?.(pos);
        continue;
      }
      if (pending.copyDone) break;
      await new Promise((r) => setTimeout(r, 1)); // the copy is not ahead yet: let it run
      pending = issue(i, pos);
    }
    throwIfInterrupted(signal);
    if (exit?.signal === 'SIGINT' || exit?.signal === 'SIGTERM') {
      throw interruptedCopy(signal, `cp was stopped by ${exit.signal}`);
    }
    if (exit?.error || exit?.code !== 0) {
      throw new Error(`copying into the store failed: ${copyFailure(exit, stderr)}`);
    }
    return { sha256: hash.digest('hex'), bytes: pos };
  } finally {
    signal?.removeEventListener('abort', stop);
    if (exit === undefined) child.kill('SIGKILL');
    await exited;
    await reader.close();
  }
}

/** How cp failed, in words: its own message when it printed one, and always how it exited. */
function copyFailure(
  exit: { code: number | null; signal?: NodeJS.Signals | null; error?: Error } | undefined,
  stderr: string,
): string {
  if (exit?.error) return `cannot run cp: ${exit.error.message}`;
  const how = exit?.signal
    ? `cp was killed by ${exit.signal}`
    : `cp exited with status ${exit?.code}`;
  const said = stderr.trim();
  return said ? `${said} (${how})` : `${how}, printing nothing`;
}

async function userSpaceCopyAndHash(
  src: OpenedFile,
  dest: string,
  onProgress?: (bytes: number) => void,
  signal?: AbortSignal,
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
      if (signal?.aborted) {
        await Promise.allSettled([writing]);
        throw interruptedCopy(signal);
      }
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
