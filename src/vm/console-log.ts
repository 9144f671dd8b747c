/**
 * Reading the guest console's log file (QEMU's chardev `logfile=`): its last
 * lines for `dev logs` and for error messages, and watching it grow for the
 * readiness stages. The guest writes what it likes there, so every line
 * leaves here escaped (printable()).
 */
import { constants, promises as fs } from 'node:fs';
import { printable } from '../core/printable.js';

/** How much of the log's end is read to find its last lines. */
const TAIL_BYTES = 256 * 1024;

/** Console text as display lines: CRLF (a tty's line ends) as one break, each line escaped. */
export function consoleLines(text: string): string[] {
  const lines = text.split('\n').map((l) => printable(l.replace(/\r+$/, ''), 4096));
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines;
}

/** The last `n` lines of the log, escaped; none when it does not exist. */
export async function lastConsoleLines(path: string, n: number): Promise<string[]> {
  if (n <= 0) return [];
  let fh;
  try {
    fh = await fs.open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) return [];
    const start = Math.max(0, st.size - TAIL_BYTES);
    const buf = Buffer.alloc(st.size - start);
    const { bytesRead } = await fh.read(buf, 0, buf.length, start);
    let text = buf.subarray(0, bytesRead).toString('utf8');
    // A read that starts mid-file starts mid-line: drop the partial first line.
    if (start > 0) text = text.slice(text.indexOf('\n') + 1);
    return consoleLines(text).slice(-n);
  } finally {
    await fh.close();
  }
}

/**
 * Follows the log from its start: what has been written so far, read
 * incrementally. The ready line is searched for in each read before anything
 * is dropped (with the end of the read before, for a line split across two
 * reads), and once seen it stays seen: a guest that prints a megabyte right
 * after it is still ready.
 */
export class ConsoleWatch {
  private offset = 0;
  /** The end of what was read last, as long as the ready line less one byte. */
  private carry = '';
  private sawOutput = false;
  private sawReady = false;
  private readonly needle: string;

  constructor(
    readonly path: string,
    readyLine: string,
  ) {
    this.needle = Buffer.from(readyLine, 'utf8').toString('latin1');
  }

  /** Reads what is new; returns whether any output was seen yet and whether the ready line was. */
  async poll(): Promise<{ output: boolean; ready: boolean }> {
    let fh;
    try {
      fh = await fs.open(
        this.path,
        constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK,
      );
    } catch {
      return { output: this.sawOutput, ready: this.sawReady };
    }
    try {
      const st = await fh.stat();
      if (st.size < this.offset) {
        // Truncated: a new boot's log.
        this.offset = 0;
        this.carry = '';
        this.sawReady = false;
      }
      const length = st.size - this.offset;
      if (length > 0) {
        const buf = Buffer.alloc(Math.min(length, 1024 * 1024));
        const { bytesRead } = await fh.read(buf, 0, buf.length, this.offset);
        this.offset += bytesRead;
        if (bytesRead > 0) this.sawOutput = true;
        const text = this.carry + buf.subarray(0, bytesRead).toString('latin1');
        if (!this.sawReady && text.includes(this.needle)) this.sawReady = true;
        // slice(-0) would keep everything: a one-byte line needs no carry.
        this.carry = this.needle.length > 1 ? text.slice(-(this.needle.length - 1)) : '';
      }
    } finally {
      await fh.close();
    }
    return { output: this.sawOutput, ready: this.sawReady };
  }
}
