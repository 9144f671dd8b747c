/**
 * Reading the guest console's log file (QEMU's chardev `logfile=`): its last
 * lines for `dev logs` and for error messages, and watching it grow for the
 * readiness stages. The guest writes what it likes there, so every line
 * leaves here escaped (printable()).
 */
import { constants, promises as fs } from 'node:fs';
import { printable } from '../core/printable.js';
import { rotatedLog } from './console-keeper.js';

/** How much of the log's end is read to find its last lines. */
export const TAIL_BYTES = 256 * 1024;

/** Console text as display lines: CRLF (a tty's line ends) as one break, each line escaped. */
export function consoleLines(text: string): string[] {
  const lines = text.split('\n').map((l) => printable(l.replace(/\r+$/, ''), 4096));
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines;
}

type Opened = { fh: fs.FileHandle; size: number; ino: number };

/** The log (or its rotated part) if it is a regular file; nothing if it does not exist. */
async function openLog(path: string): Promise<Opened | undefined> {
  let fh;
  try {
    fh = await fs.open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ELOOP') return undefined;
    throw e;
  }
  const st = await fh.stat();
  if (!st.isFile()) {
    await fh.close();
    return undefined;
  }
  return { fh, size: st.size, ino: st.ino };
}

async function readAt(fh: fs.FileHandle, at: number, length: number): Promise<Buffer> {
  if (length <= 0) return Buffer.alloc(0);
  const buf = Buffer.alloc(length);
  const { bytesRead } = await fh.read(buf, 0, length, at);
  return buf.subarray(0, bytesRead);
}

/**
 * Reads the console log in order across the keeper's rotations
 * (console-keeper.ts): when console.log is a new file, the rest of the one it
 * replaced is read from console.log.1 first. A log that shrank in place is a
 * new boot's (dev up truncates it).
 */
export class LogCursor {
  private ino: number | undefined;
  private offset = 0;

  constructor(readonly path: string) {}

  /**
   * Moves to the end and returns up to `back` bytes before it, the rotated
   * part's end included when the current file is shorter; `whole` when that is
   * the log from its first byte (no partial first line).
   */
  async tail(back: number): Promise<{ data: Buffer; whole: boolean }> {
    const cur = await openLog(this.path);
    if (!cur) return { data: Buffer.alloc(0), whole: true };
    try {
      const start = Math.max(0, cur.size - back);
      const data = await readAt(cur.fh, start, cur.size - start);
      this.ino = cur.ino;
      this.offset = start + data.length;
      if (start > 0) return { data, whole: false };
      const old = await openLog(rotatedLog(this.path));
      if (!old) return { data, whole: true };
      try {
        const from = Math.max(0, old.size - (back - data.length));
        const before = await readAt(old.fh, from, old.size - from);
        return { data: Buffer.concat([before, data]), whole: from === 0 };
      } finally {
        await old.fh.close();
      }
    } finally {
      await cur.fh.close();
    }
  }

  /** Up to `limit` bytes written since the last call; `restarted` when the log began again. */
  async next(limit: number): Promise<{ data: Buffer; restarted: boolean }> {
    const none = { data: Buffer.alloc(0), restarted: false };
    const cur = await openLog(this.path);
    if (!cur) return none;
    try {
      if (this.ino !== undefined && cur.ino !== this.ino) {
        // Rotated: the file read so far is console.log.1 now; finish it first.
        const old = await openLog(rotatedLog(this.path));
        if (old) {
          try {
            if (old.ino === this.ino && old.size > this.offset) {
              const data = await readAt(
                old.fh,
                this.offset,
                Math.min(limit, old.size - this.offset),
              );
              this.offset += data.length;
              if (data.length > 0) return { data, restarted: false };
            }
          } finally {
            await old.fh.close();
          }
        }
        this.offset = 0;
      }
      this.ino = cur.ino;
      let restarted = false;
      if (cur.size < this.offset) {
        this.offset = 0;
        restarted = true;
      }
      const data = await readAt(cur.fh, this.offset, Math.min(limit, cur.size - this.offset));
      this.offset += data.length;
      return { data, restarted };
    } finally {
      await cur.fh.close();
    }
  }
}

/** The last `n` lines of the log (its rotated part included), escaped; none when it does not exist. */
export async function lastConsoleLines(path: string, n: number): Promise<string[]> {
  if (n <= 0) return [];
  const { data, whole } = await new LogCursor(path).tail(TAIL_BYTES);
  // A read that starts mid-file starts mid-line: drop the partial first line.
  const text = whole ? data : data.subarray(data.indexOf(0x0a) + 1);
  return consoleLines(text.toString('utf8')).slice(-n);
}

/**
 * Follows the log from its start: what has been written so far, read
 * incrementally. The ready lines are searched for in each read before
 * anything is dropped (with the end of the read before, for a line split
 * across two reads), and once one is seen it stays seen: a guest that prints
 * a megabyte right after it is still ready.
 */
export class ConsoleWatch {
  private readonly cursor: LogCursor;
  /** The end of what was read last, as long as the longest ready line less one byte. */
  private carry = '';
  private sawOutput = false;
  private sawReady: string | undefined;
  private readonly needles: readonly { line: string; bytes: string }[];
  private readonly keep: number;

  constructor(
    readonly path: string,
    readyLines: readonly string[],
  ) {
    this.cursor = new LogCursor(path);
    this.needles = readyLines.map((line) => ({
      line,
      bytes: Buffer.from(line, 'utf8').toString('latin1'),
    }));
    this.keep = Math.max(0, ...this.needles.map((n) => n.bytes.length - 1));
  }

  /** Reads what is new; returns whether any output was seen yet, and which ready line was. */
  async poll(): Promise<{ output: boolean; ready: string | undefined }> {
    const { data, restarted } = await this.cursor.next(1024 * 1024);
    if (restarted) {
      // A new boot's log.
      this.carry = '';
      this.sawReady = undefined;
    }
    if (data.length > 0) {
      this.sawOutput = true;
      const text = this.carry + data.toString('latin1');
      this.sawReady ??= this.needles.find((n) => text.includes(n.bytes))?.line;
      // slice(-0) would keep everything: one-byte lines need no carry.
      this.carry = this.keep > 0 ? text.slice(-this.keep) : '';
    }
    return { output: this.sawOutput, ready: this.sawReady };
  }
}

/**
 * What a kernel panic on the console says, from its escaped lines: the text
 * after "Kernel panic - not syncing: " on the first panic line, and, when
 * the panic is init exiting, init's exit status. Under `panic=-1` a panic
 * ends the VM at once, and the register dump after it is what the console's
 * last lines show, so the cause is looked for here.
 */
export function kernelPanic(
  lines: readonly string[],
): { message: string; initExit?: number } | undefined {
  const marker = 'Kernel panic - not syncing: ';
  for (const line of lines) {
    const at = line.indexOf(marker);
    if (at < 0) continue;
    const message = line
      .slice(at + marker.length)
      .replace(/ \]---$/, '')
      .slice(0, 200);
    // `exitcode=` is init's wait status: the exit status is its second byte when no signal ended it.
    const m = /^Attempted to kill init! exitcode=0x([0-9a-f]{8})$/.exec(message);
    const status = m ? parseInt(m[1]!, 16) : undefined;
    return status !== undefined && (status & 0x7f) === 0
      ? { message, initExit: (status >> 8) & 0xff }
      : { message };
  }
  return undefined;
}
