/**
 * The keeper of the guest console's log: a small process of its own that
 * reads what QEMU's console chardev logs (through a pipe handed to both at
 * `dev up`) and writes it to `console.log`, rotating to `console.log.1` so the
 * two together never pass the configured bound. QEMU's own `logfile=` has no
 * size limit, and a runaway guest (about 8 MB/s under TCG) would fill the
 * host's disk; the newest output is what matters, so the oldest goes.
 *
 * It outlives `dev up` (the VM does) and ends on its own when the last writer,
 * QEMU, exits and the pipe reaches its end. It loads nothing but Node's own
 * modules: it runs for the whole life of the VM.
 */
import { execFile, spawn } from 'node:child_process';
import {
  closeSync,
  constants,
  existsSync,
  fstatSync,
  openSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { isSea } from 'node:sea';
import { fileURLToPath } from 'node:url';

/** Where the rotated part goes: one older file, so the bound is two halves. */
export const rotatedLog = (log: string): string => `${log}.1`;

/** The hidden argument that starts the keeper instead of a command (never shown in help). */
export const KEEPER_ARG = '__console-log-keeper';

/**
 * The rotation rule, without I/O: how a chunk of `length` bytes lands in a
 * log whose current file holds `size` bytes, each file at most `half` bytes.
 * The current file is filled to exactly `half`, then rotated, so console.log.1
 * followed by console.log is always one unbroken run of the newest output. Of
 * a chunk larger than both files only its newest `2 * half` bytes are written.
 */
export function placeChunk(
  size: number,
  length: number,
  half: number,
): { skip: number; writes: { rotate: boolean; length: number }[] } {
  const skip = Math.max(0, length - 2 * half);
  const writes: { rotate: boolean; length: number }[] = [];
  for (let left = length - skip; left > 0;) {
    const rotate = size >= half;
    if (rotate) size = 0;
    const n = Math.min(left, half - size);
    writes.push({ rotate, length: n });
    size += n;
    left -= n;
  }
  return { skip, writes };
}

const openLog = (path: string, truncate: boolean): number =>
  openSync(
    path,
    constants.O_WRONLY |
      constants.O_CREAT |
      constants.O_NOFOLLOW |
      (truncate ? constants.O_TRUNC : constants.O_APPEND),
    0o600,
  );

/**
 * Copies `input` (the read end of the pipe QEMU writes) into `log` until it
 * ends. `maxBytes` bounds console.log and console.log.1 together.
 */
export async function keepConsoleLog(
  input: NodeJS.ReadableStream,
  log: string,
  maxBytes: number,
): Promise<void> {
  const half = Math.max(1, Math.floor(maxBytes / 2));
  // dev up created the file (0600) for this boot; append to what is there.
  let fd = openLog(log, false);
  let size = fstatSync(fd).size;
  try {
    for await (const chunk of input) {
      const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
      const { skip, writes } = placeChunk(size, bytes.length, half);
      let at = skip;
      for (const w of writes) {
        if (w.rotate) {
          closeSync(fd);
          fd = -1;
          renameSync(log, rotatedLog(log));
          fd = openLog(log, true);
          size = 0;
        }
        for (const end = at + w.length; at < end;) at += writeSync(fd, bytes, at, end - at);
        size += w.length;
      }
    }
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

/** The keeper's entry: `mvmctl __console-log-keeper LOG MAX_BYTES`, with the pipe as stdin. */
export async function keeperMain(args: string[]): Promise<number> {
  const [log, max] = args;
  if (args.length !== 2 || !log?.startsWith('/') || !/^[1-9][0-9]*$/.test(max ?? '')) {
    process.stderr.write('usage: mvmctl __console-log-keeper /path/console.log MAX_BYTES\n');
    return 2;
  }
  await keepConsoleLog(process.stdin, log, Number(max));
  return 0;
}

/**
 * How to run mvmctl itself: the single executable runs its own blob; from
 * dist/, the CLI entry beside this module's directory (dist/cli/main.js; the
 * bundle's chunks sit in dist/cli/ too, so `../cli/` reaches it from either).
 */
export function selfCommand(): { file: string; args: string[] } {
  if (isSea()) return { file: process.execPath, args: [] };
  const js = fileURLToPath(new URL('../cli/main.js', import.meta.url));
  if (existsSync(js)) return { file: process.execPath, args: [js] };
  // Run from the TypeScript sources (a loader such as tsx is in execArgv).
  const ts = fileURLToPath(new URL('../cli/main.ts', import.meta.url));
  return { file: process.execPath, args: [...process.execArgv, ts] };
}

/**
 * Starts the keeper for a boot and returns the descriptor QEMU's console
 * chardev logs into (the write end of a pipe whose read end only the keeper
 * holds). The pipe is a FIFO made in the private state directory and removed
 * at once: Node.js has no pipe(2), and a FIFO opened read-write first opens
 * both ends without blocking. The caller closes the descriptor once QEMU has
 * it; the keeper then ends with the last QEMU process.
 */
export async function startConsoleKeeper(
  stateDir: string,
  log: string,
  maxBytes: number,
): Promise<{ fd: number; close: () => void; pid: number }> {
  const fifo = join(stateDir, 'console.pipe');
  rmSync(fifo, { force: true });
  await new Promise<void>((resolve, reject) => {
    execFile('mkfifo', ['-m', '600', fifo], (error) =>
      error ? reject(new Error(`mkfifo ${fifo} failed: ${error.message}`)) : resolve(),
    );
  });
  let both = -1;
  let read = -1;
  let write = -1;
  try {
    both = openSync(fifo, constants.O_RDWR | constants.O_NOFOLLOW);
    if (!fstatSync(both).isFIFO()) throw new Error(`${fifo} is not the FIFO mvmctl made`);
    read = openSync(fifo, constants.O_RDONLY | constants.O_NOFOLLOW);
    write = openSync(fifo, constants.O_WRONLY | constants.O_NOFOLLOW);
  } catch (e) {
    for (const fd of [both, read, write]) if (fd >= 0) closeSync(fd);
    throw e;
  } finally {
    rmSync(fifo, { force: true });
  }
  closeSync(both);
  const self = selfCommand();
  const child = spawn(self.file, [...self.args, KEEPER_ARG, log, String(maxBytes)], {
    // Its own session: Ctrl-C on the terminal of dev up does not end it, the VM's end does.
    detached: true,
    stdio: [read, 'ignore', 'ignore'],
    cwd: '/',
  });
  try {
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
  } catch (e) {
    closeSync(write);
    throw e;
  } finally {
    closeSync(read);
  }
  child.unref();
  let closed = false;
  return {
    fd: write,
    pid: child.pid ?? -1,
    close: () => {
      if (!closed) closeSync(write);
      closed = true;
    },
  };
}
