import { createHash, randomBytes } from 'node:crypto';
import { constants, promises as fs } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { MvmError } from '../errors.js';

/** Upper bounds for the small JSON documents the tool reads; real ones are a few KiB. */
export const MAX_BUNDLE_BYTES = 1024 * 1024;
export const MAX_TRUSTED_ROOT_BYTES = 4 * 1024 * 1024;
export const MAX_KEY_BYTES = 64 * 1024;
/** verify-blob reads the artifact into memory to verify the signature over it. */
export const MAX_BLOB_BYTES = 256 * 1024 * 1024;

const UNITS = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** A size for people: "64 GiB", "1 TiB", "84 KiB". */
const fmtBytes = (n: number): string => {
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${Math.round(value * 10) / 10} ${UNITS[unit]}`;
};

export interface OpenOptions {
  /** Refuse a symlink at the last component (for files in our own directories, where a symlink can only be planted). */
  readonly noFollow?: boolean;
  /** The environment variable that sets maxBytes, named in the error so the operator can raise it. */
  readonly limitVariable?: string;
}

export interface OpenedFile {
  readonly handle: fs.FileHandle;
  readonly size: number;
  readonly path: string;
}

/**
 * Opens a file an operator named, refusing anything but a non-empty regular
 * file of at most maxBytes. The file is checked through its descriptor
 * (fstat), so a path swapped between check and read cannot slip another file
 * in; O_NONBLOCK keeps a FIFO planted in its place from hanging the process.
 * `noFollow` refuses a symlink at the last component (for files in our own
 * directories, where a symlink can only be planted).
 */
export async function openRegularFile(
  path: string,
  what: string,
  maxBytes: number,
  opts: OpenOptions = {},
): Promise<OpenedFile> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(
      path,
      constants.O_RDONLY |
        constants.O_NONBLOCK |
        constants.O_NOCTTY |
        (opts.noFollow ? constants.O_NOFOLLOW : 0),
    );
  } catch (e) {
    throw inputError(path, what, e);
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) {
      throw new MvmError('input', `${what} ${path} is not a regular file`, {
        cause: `it is ${describeKind(st)}`,
        fix: `Pass the path of the ${what} file itself.`,
      });
    }
    // Checked before a byte is read: a sparse 1 TiB file costs nothing on the medium and hours to hash.
    if (st.size > maxBytes) {
      throw tooLarge(path, what, maxBytes, st.size, opts.limitVariable);
    }
    if (st.size === 0) {
      throw new MvmError('input', `${what} ${path} is empty`, {
        cause: 'the file has no content',
        fix: `Re-copy the ${what}; it may have been truncated in transit.`,
      });
    }
    return { handle, size: st.size, path };
  } catch (e) {
    await handle.close();
    throw e;
  }
}

/** Reads a whole small file an operator named (see openRegularFile for what is refused). */
export async function readRegularFile(
  path: string,
  what: string,
  maxBytes: number,
  opts: OpenOptions = {},
): Promise<Buffer> {
  const { handle, size } = await openRegularFile(path, what, maxBytes, opts);
  try {
    // Read at most maxBytes + 1 so a file that grows after fstat is still caught.
    const bytes = await readUpTo(handle, Math.min(size, maxBytes) + 1);
    if (bytes.length > maxBytes)
      throw tooLarge(path, what, maxBytes, undefined, opts.limitVariable);
    return bytes;
  } catch (e) {
    if (e instanceof MvmError) throw e;
    throw inputError(path, what, e);
  } finally {
    await handle.close();
  }
}

/** Reads from the start of an opened file until end of file or `n` bytes, whichever comes first. */
export async function readUpTo(handle: fs.FileHandle, n: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(n);
  let off = 0;
  while (off < n) {
    const { bytesRead } = await handle.read(buf, off, n - off, off);
    if (bytesRead === 0) break;
    off += bytesRead;
  }
  return buf.subarray(0, off);
}

/**
 * Replaces `path` whole: the data is written under a new hidden name beside it
 * (created exclusively, never through a link; readers globbing for the real
 * name never see it), given `mode` whatever the umask, then renamed over
 * `path`. A reader sees the old file or the new one, never part of one.
 * `sync` also flushes the file before the rename and the directory after it,
 * for files that must survive a crash. On failure the temporary file is
 * removed and the error is thrown as it came.
 */
export async function replaceFile(
  path: string,
  data: string | Uint8Array,
  o: { readonly mode: number; readonly sync: boolean },
): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const fh = await fs.open(
      tmp,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      o.mode,
    );
    try {
      await fh.writeFile(data);
      await fh.chmod(o.mode);
      if (o.sync) await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, path);
  } catch (e) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw e;
  }
  if (!o.sync) return;
  const d = await fs.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

// 1 MiB, not more: two buffers of that size stay in the CPU's cache between the
// read and the hash. With 8 MiB reads the at-rest check of an 87 MB image took
// 185 ms instead of 84 ms in a fresh process (measured on a 2-core host);
// above 256 MiB the two sizes hash at the same speed.
const HASH_CHUNK = 1024 * 1024;

/**
 * The SHA-256 of an opened file from its start to its end, in 1 MiB reads
 * with two buffers: the next read runs in the thread pool while this thread
 * hashes. `size` (the file's size when opened) only
 * bounds the buffers.
 */
export async function sha256OfOpened(handle: fs.FileHandle, size: number): Promise<string> {
  const hash = createHash('sha256');
  const len = Math.max(1, Math.min(HASH_CHUNK, size));
  const bufs = [Buffer.allocUnsafe(len), Buffer.allocUnsafe(len)];
  let pos = 0;
  let reading = handle.read(bufs[0]!, 0, len, 0);
  for (let i = 0; ; i++) {
    const { bytesRead } = await reading;
    if (bytesRead === 0) break;
    const chunk = bufs[i % 2]!.subarray(0, bytesRead);
    pos += bytesRead;
    reading = handle.read(bufs[(i + 1) % 2]!, 0, len, pos);
    hash.update(chunk);
  }
  return hash.digest('hex');
}

function tooLarge(
  path: string,
  what: string,
  maxBytes: number,
  size: number | undefined,
  limitVariable: string | undefined,
): MvmError {
  const limit = `${maxBytes} bytes (${fmtBytes(maxBytes)})`;
  return new MvmError(
    'input',
    size === undefined
      ? `${what} ${path} is too large: it grew past the limit of ${limit} while being read`
      : `${what} ${path} is too large: ${size} bytes (${fmtBytes(size)}), the limit is ${limit}`,
    {
      cause: `a ${what} larger than ${fmtBytes(maxBytes)} is refused before it is read`,
      fix: limitVariable
        ? `Check that ${path} really is the ${what}; if it is, raise the limit with ${limitVariable} (bytes).`
        : `Check that ${path} really is the ${what}.`,
    },
  );
}

function describeKind(st: {
  isDirectory(): boolean;
  isFIFO(): boolean;
  isSocket(): boolean;
  isCharacterDevice(): boolean;
  isBlockDevice(): boolean;
}): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a named pipe (FIFO)';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  return 'not a regular file';
}

function inputError(path: string, what: string, e: unknown): MvmError {
  const code = (e as NodeJS.ErrnoException)?.code;
  switch (code) {
    case 'ENOENT':
      return new MvmError('input', `${what} ${path} does not exist`, {
        cause: 'no file at that path (or a symlink pointing nowhere)',
        fix: `Check the path of the ${what}.`,
        underlying: e,
      });
    case 'EACCES':
    case 'EPERM':
      return new MvmError('input', `${what} ${path} is not readable`, {
        cause: 'permission denied',
        fix: `Make ${path} readable by this user.`,
        underlying: e,
      });
    case 'EISDIR':
      return new MvmError('input', `${what} ${path} is not a regular file`, {
        cause: 'it is a directory',
        fix: `Pass the path of the ${what} file itself.`,
        underlying: e,
      });
    case 'ELOOP':
      return new MvmError('input', `${what} ${path} is a symbolic link`, {
        cause: 'a symlink loop, or a symlink where only a regular file is accepted',
        fix: `Pass the path of the ${what} file itself.`,
        underlying: e,
      });
    default:
      return new MvmError('input', `${what} ${path} could not be read`, {
        cause: e instanceof Error ? e.message : String(e),
        underlying: e,
      });
  }
}
