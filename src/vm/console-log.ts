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

/** Follows the log from its start: what has been written so far, read incrementally. */
export class ConsoleWatch {
  private offset = 0;
  private window = '';
  private sawOutput = false;

  constructor(
    readonly path: string,
    private readonly readyLine: string,
  ) {}

  /** Reads what is new; returns whether any output was seen yet and whether the ready line was. */
  async poll(): Promise<{ output: boolean; ready: boolean }> {
    let fh;
    try {
      fh = await fs.open(
        this.path,
        constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK,
      );
    } catch {
      return { output: this.sawOutput, ready: false };
    }
    try {
      const st = await fh.stat();
      if (st.size < this.offset) this.offset = 0; // truncated: a new boot's log
      const length = st.size - this.offset;
      if (length > 0) {
        const buf = Buffer.alloc(Math.min(length, 1024 * 1024));
        const { bytesRead } = await fh.read(buf, 0, buf.length, this.offset);
        this.offset += bytesRead;
        if (bytesRead > 0) this.sawOutput = true;
        // Keep enough of the end to find a ready line split across two reads.
        this.window = (this.window + buf.subarray(0, bytesRead).toString('latin1')).slice(
          -(Buffer.byteLength(this.readyLine) + 64 * 1024),
        );
      }
    } finally {
      await fh.close();
    }
    const needle = Buffer.from(this.readyLine, 'utf8').toString('latin1');
    return { output: this.sawOutput, ready: this.window.includes(needle) };
  }
}
