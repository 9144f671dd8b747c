/**
 * Where a download's bytes go: `NAME.partial`, hashed as written. The SHA-256
 * and the writes run on a worker thread, so the thread parsing HTTP never
 * waits for them: bytes are gathered into 1 MiB batches that move to the
 * worker without a copy (transferred ArrayBuffers) and come back to be
 * reused. At most POOL batches are in flight; beyond that the socket is
 * paused (back-pressure), so memory stays bounded whatever the network does.
 */
import { constants, promises as fs } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { MvmError } from '../errors.js';

const BATCH = 1024 * 1024;
const POOL = 8;

/**
 * The worker: hashes what the partial already holds, then each batch in
 * order (hash, then pwrite at its offset); answers every request in order.
 * CommonJS text run with `eval`, so the bundled CLI and the single
 * executable carry it without a separate file.
 */
const WORKER = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const fs = require('node:fs');
let fd;
// write(2) in slices: on these kernels a single large write into the page cache
// is several times slower per byte than the same bytes in 128 KiB writes.
const WRITE = 128 * 1024;
let hash = createHash('sha256');
function fail(e) { parentPort.postMessage({ op: 'error', message: e.message, code: e.code }); }
function open(m) {
  fd = m.fd;
  const buf = Buffer.allocUnsafe(1 << 20);
  for (let pos = 0; pos < m.size; ) {
    const n = fs.readSync(fd, buf, 0, Math.min(buf.length, m.size - pos), pos);
    if (n === 0) break;
    hash.update(buf.subarray(0, n));
    pos += n;
  }
  parentPort.postMessage({ op: 'ready' });
}
parentPort.on('message', (m) => {
  try {
    if (m.op === 'open') {
      open(m);
    } else if (m.op === 'write') {
      const b = Buffer.from(m.buf, 0, m.len);
      hash.update(b);
      for (let off = 0; off < m.len; )
        off += fs.writeSync(fd, b, off, Math.min(WRITE, m.len - off), m.pos + off);
      parentPort.postMessage({ op: 'free', buf: m.buf }, [m.buf]);
    } else if (m.op === 'restart') {
      fs.ftruncateSync(fd, 0);
      hash = createHash('sha256');
    } else if (m.op === 'flush') {
      parentPort.postMessage({ op: 'flushed' });
    } else if (m.op === 'finish') {
      parentPort.postMessage({ op: 'digest', hex: hash.digest('hex') });
    }
  } catch (e) { fail(e); }
});
`;

const startWorker = (): Worker => new Worker(WORKER, { eval: true });
const spares: Worker[] = [];

type Reply =
  | { op: 'ready' | 'flushed' }
  | { op: 'free'; buf: ArrayBuffer }
  | { op: 'digest'; hex: string }
  | { op: 'error'; message: string; code?: string };

export class HashingSink {
  /** Bytes in the file once everything accepted is written (what it held at open, plus writes). */
  size: number;
  private readonly free: ArrayBuffer[] = [];
  private current: Uint8Array | undefined;
  private fill = 0;
  private inFlight = 0;
  private failure: MvmError | undefined;
  private waiting: { resolve: (r: Reply) => void; op: string } | undefined;
  private onDrain: (() => void) | undefined;

  private constructor(
    private readonly handle: fs.FileHandle,
    private readonly worker: Worker,
    readonly path: string,
    size: number,
    private readonly code: 'input' | 'store',
  ) {
    this.size = size;
    worker.on('message', (m: Reply) => this.onReply(m));
    worker.on('error', (e) => this.onReply({ op: 'error', message: e.message }));
  }

  /**
   * Starts up to `n` workers ahead of the downloads that will take them (a
   * worker takes tens of milliseconds to boot, while the signature is being
   * verified they cost nothing). Unused ones do not keep the process alive.
   */
  static prewarm(n: number): void {
    while (spares.length < n) {
      const w = startWorker();
      w.unref();
      w.once('error', () => {
        const i = spares.indexOf(w);
        if (i >= 0) spares.splice(i, 1);
      });
      spares.push(w);
    }
  }

  /**
   * Opens (or creates) the partial without following a symlink and refuses
   * anything but a regular file; what it holds is hashed before any append.
   */
  static async open(path: string, code: 'input' | 'store'): Promise<HashingSink> {
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(
        path,
        constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK,
        0o644,
      );
    } catch (e) {
      throw new MvmError(code, `Cannot write ${path}`, {
        cause: (e as Error).message,
        fix: 'The directory must be writable, and NAME.partial must not be a symlink or special file: remove it.',
        underlying: e,
      });
    }
    const st = await handle.stat();
    if (!st.isFile()) {
      await handle.close();
      throw new MvmError(code, `${path} is not a regular file`, {
        fix: 'Remove it: the download writes NAME.partial itself.',
      });
    }
    const worker = spares.pop() ?? startWorker();
    worker.removeAllListeners('error');
    worker.ref();
    const sink = new HashingSink(handle, worker, path, st.size, code);
    try {
      worker.postMessage({ op: 'open', fd: handle.fd, size: st.size });
      await sink.request('ready');
    } catch (e) {
      await sink.close();
      throw e;
    }
    return sink;
  }

  /**
   * Takes a chunk (copied into the current batch). False when POOL batches
   * are in flight: pause the source until `drain` calls back.
   */
  write(chunk: Uint8Array): boolean {
    if (this.failure) throw this.failure;
    for (let off = 0; off < chunk.length;) {
      if (!this.current) {
        this.current = new Uint8Array(this.free.pop() ?? new ArrayBuffer(BATCH));
        this.fill = 0;
      }
      const n = Math.min(BATCH - this.fill, chunk.length - off);
      this.current.set(chunk.subarray(off, off + n), this.fill);
      this.fill += n;
      this.size += n; // before a post: a batch's offset is size - fill
      off += n;
      if (this.fill === BATCH) this.post();
    }
    return this.inFlight < POOL;
  }

  drain(callback: () => void): void {
    this.onDrain = callback;
  }

  /**
   * Drops everything: the file is empty again and the hash starts over. Takes
   * effect in order with the writes (the worker truncates after the batches
   * before it and before the ones after), so it can be called mid-response.
   */
  restart(): void {
    this.post();
    this.worker.postMessage({ op: 'restart' });
    this.size = 0;
  }

  /**
   * Everything written; the SHA-256 of the whole file. Not fsynced, as curl
   * and wget do not: a file torn by a crash after the rename is caught by its
   * digest wherever it is used next (a second fetch re-hashes files already
   * in DIR and downloads again what does not match; import-image refuses it),
   * so durability would cost seconds per gigabyte and buy no safety.
   */
  async finish(): Promise<string> {
    this.post();
    const r = await this.request('finish');
    return (r as { hex: string }).hex;
  }

  /** Writes out what was accepted (a resumable partial), then stops the worker and closes the file. */
  async close(): Promise<void> {
    if (!this.failure) {
      this.post();
      await this.request('flush').catch(() => undefined);
    }
    await this.worker.terminate().catch(() => undefined);
    await this.handle.close().catch(() => undefined);
  }

  private post(): void {
    if (!this.current || this.fill === 0) return;
    const buf = this.current.buffer as ArrayBuffer;
    this.worker.postMessage({ op: 'write', buf, len: this.fill, pos: this.size - this.fill }, [
      buf,
    ]);
    this.inFlight++;
    this.current = undefined;
    this.fill = 0;
  }

  /** Sends `op` and resolves with its answer, which comes after every write sent before it. */
  private request(op: 'ready' | 'flush' | 'finish'): Promise<Reply> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiting = {
        op,
        resolve: (r) => (r.op === 'error' ? reject(this.failure) : resolve(r)),
      };
      if (op !== 'ready') this.worker.postMessage({ op });
    });
  }

  private onReply(m: Reply): void {
    if (m.op === 'free') {
      this.inFlight--;
      this.free.push(m.buf);
      if (this.inFlight < POOL && this.onDrain) {
        const drain = this.onDrain;
        this.onDrain = undefined;
        drain();
      }
      return;
    }
    if (m.op === 'error') {
      // Disk full, quota, a read-only remount: the local side, never a reason to retry the network.
      this.failure ??= new MvmError(this.code, `Cannot write ${this.path}`, {
        cause: m.message,
        fix:
          this.code === 'store'
            ? 'Check free space and permissions of the data directory (MVM_DATA_DIR).'
            : 'Check free space and permissions of the output directory (--out).',
      });
      this.onDrain?.();
    }
    this.answer(m);
  }

  private answer(m: Reply): void {
    const w = this.waiting;
    this.waiting = undefined;
    w?.resolve(m);
  }
}
