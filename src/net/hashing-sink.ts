/**
 * Where a download's bytes go: `NAME.partial`, hashed as written. The SHA-256
 * and the writes run on two worker threads (see WORKER), so the thread
 * parsing HTTP waits for neither: bytes are read straight into 1 MiB batches
 * (see `room`) or gathered into them, and each batch moves from thread to
 * thread without a copy (transferred ArrayBuffers: one thread holds it at a
 * time) and comes back to be reused. At most POOL batches of a file are in
 * flight; beyond that the socket is paused (back-pressure), so memory stays
 * bounded whatever the network does.
 *
 * The two workers serve every file of the process. Measured on a two-core
 * host fetching a kernel and a rootfs at once, a worker (or two) per file
 * cost more CPU than it gained: each boots its own Node.js environment, and
 * the machine, not the workers, was the limit. One core hashes at about
 * 1.5 GB/s, more than a release location sends.
 */
import { constants, promises as fs } from 'node:fs';
import { MessageChannel, Worker } from 'node:worker_threads';
import { MvmError } from '../errors.js';

const BATCH = 1024 * 1024;
const POOL = 8;

/**
 * Two workers in a line, shared by every open file (by id): the hasher
 * hashes what a partial already holds, then each batch, and passes it on; the
 * writer writes each batch at its offset and hands it back. A batch is hashed
 * while the one before it is written, so a file streams at the pace of the
 * slower of the two, not of both in turn: when the page cache is slow to
 * take writes (a host short of free memory, a VM whose freed pages went back
 * to the hypervisor), writing alone can take as long as curl's whole run.
 * Requests travel the same line, so each answer comes after every batch sent
 * before it. After a failure a file's later batches are dropped; `close` is
 * always answered. CommonJS text run with `eval`, so the bundled CLI and the
 * single executable carry it without a separate file.
 */
const WORKER = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const fs = require('node:fs');
// write(2) in slices: on these kernels a single large write into the page cache
// is several times slower per byte than the same bytes in 128 KiB writes.
const WRITE = 128 * 1024;
const files = new Map();
let writer;
function fail(m, file, e) {
  if (file) file.failed = true;
  parentPort.postMessage({ id: m.id, op: 'error', message: e.message });
}
function hashExisting(m, file) {
  const buf = Buffer.allocUnsafe(1 << 20);
  for (let pos = 0; pos < m.size; ) {
    const n = fs.readSync(m.fd, buf, 0, Math.min(buf.length, m.size - pos), pos);
    if (n === 0) throw new Error('the partial shrank while it was read: another process changed it');
    file.hash.update(buf.subarray(0, n));
    pos += n;
  }
}
function hasher(m) {
  if (m.op === 'close') {
    files.delete(m.id);
    return writer.postMessage(m);
  }
  if (m.op === 'open') {
    files.set(m.id, { hash: createHash('sha256'), failed: false });
    writer.postMessage(m);
  }
  const file = files.get(m.id);
  if (!file || file.failed) return;
  try {
    if (m.op === 'open') {
      hashExisting(m, file);
    } else if (m.op === 'write') {
      file.hash.update(new Uint8Array(m.buf, 0, m.len));
      writer.postMessage(m, [m.buf]);
    } else if (m.op === 'restart') {
      file.hash = createHash('sha256');
      writer.postMessage(m);
    } else if (m.op === 'finish') {
      writer.postMessage({ id: m.id, op: 'finish', size: m.size, hex: file.hash.digest('hex') });
    }
  } catch (e) { fail(m, file, e); }
}
function write(m) {
  if (m.op === 'open') files.set(m.id, { fd: m.fd, failed: false });
  const file = files.get(m.id);
  if (m.op === 'close') {
    files.delete(m.id);
    return parentPort.postMessage({ id: m.id, op: 'closed' });
  }
  if (!file || file.failed) return;
  try {
    if (m.op === 'write') {
      const b = new Uint8Array(m.buf, 0, m.len);
      for (let off = 0; off < m.len; )
        off += fs.writeSync(file.fd, b, off, Math.min(WRITE, m.len - off), m.pos + off);
      parentPort.postMessage({ id: m.id, op: 'free', buf: m.buf }, [m.buf]);
    } else if (m.op === 'restart') {
      fs.ftruncateSync(file.fd, 0);
    } else if (m.op === 'finish') {
      // The digest describes the file only if the file holds exactly what was hashed.
      const size = fs.fstatSync(file.fd).size;
      if (size !== m.size)
        throw new Error('the partial is ' + size + ' bytes, not the ' + m.size + ' written: another process changed it');
      parentPort.postMessage({ id: m.id, op: 'digest', hex: m.hex });
    }
  } catch (e) { fail(m, file, e); }
}
parentPort.once('message', (setup) => {
  if (setup.role === 'hasher') {
    writer = setup.line;
    parentPort.on('message', hasher);
  } else {
    setup.line.on('message', write);
  }
});
`;

type Reply =
  | { op: 'closed' }
  | { op: 'free'; buf: ArrayBuffer }
  | { op: 'digest'; hex: string }
  | { op: 'error'; message: string };

/** The two workers, started together on demand; they keep the process alive only while a file is open. */
const line = {
  workers: undefined as { hasher: Worker; writer: Worker } | undefined,
  sinks: new Map<number, HashingSink>(),
  nextId: 1,

  /** The worker files are sent to (the hasher); its partner is started with it. */
  get(): Worker {
    if (this.workers) return this.workers.hasher;
    const workers = {
      hasher: new Worker(WORKER, { eval: true }),
      writer: new Worker(WORKER, { eval: true }),
    };
    const { port1, port2 } = new MessageChannel();
    workers.writer.postMessage({ role: 'writer', line: port2 }, [port2]);
    // Each worker's first message is its set-up; what files send next queues behind it.
    workers.hasher.postMessage({ role: 'hasher', line: port1 }, [port1]);
    // A worker that dies takes the open files with it; the next file starts another pair.
    const lost = (message: string): void => {
      if (this.workers !== workers) return;
      this.workers = undefined;
      // Files close their descriptors only once both have stopped (no write in flight).
      const stopped = Promise.all([workers.hasher.terminate(), workers.writer.terminate()]).then(
        () => undefined,
        () => undefined,
      );
      for (const sink of this.sinks.values()) sink.onWorkerLost(workers.hasher, message, stopped);
    };
    for (const w of [workers.hasher, workers.writer]) {
      w.unref();
      w.on('message', (m: Reply & { id: number }) => this.sinks.get(m.id)?.onReply(m));
      w.on('error', (e) => lost(e.message));
      w.on('exit', (code) => lost(`a hashing worker stopped (exit code ${code})`));
    }
    this.workers = workers;
    return workers.hasher;
  },

  /** Registers an open file on the workers (started if need be); returns its id and the worker to send to. */
  add(sink: HashingSink): { id: number; worker: Worker } {
    const worker = this.get();
    const id = this.nextId++;
    this.sinks.set(id, sink);
    this.workers!.hasher.ref();
    this.workers!.writer.ref();
    return { id, worker };
  },

  remove(id: number): void {
    this.sinks.delete(id);
    if (this.sinks.size === 0) {
      this.workers?.hasher.unref();
      this.workers?.writer.unref();
    }
  },
};

export class HashingSink {
  /** Bytes in the file once everything accepted is written (what it held at open, plus writes). */
  size: number;
  private readonly free: ArrayBuffer[] = [];
  private current: Uint8Array | undefined;
  private fill = 0;
  private inFlight = 0;
  private failure: MvmError | undefined;
  /** The one answer awaited (finish's digest, close's acknowledgement). */
  private waiting:
    | { expect: 'digest' | 'closed'; resolve: (r: Reply) => void; reject: (e: Error) => void }
    | undefined;
  private onDrain: (() => void) | undefined;
  private readonly id: number;
  /** The worker this file was opened on; undefined once it is lost. */
  private worker: Worker | undefined;
  /** Once the workers are lost: settles when both have stopped. */
  private stopped: Promise<void> | undefined;

  private constructor(
    private readonly handle: fs.FileHandle,
    readonly path: string,
    size: number,
    private readonly code: 'input' | 'store',
  ) {
    this.size = size;
    ({ id: this.id, worker: this.worker } = line.add(this));
  }

  /**
   * Starts the workers ahead of the downloads that will use them (they take
   * tens of milliseconds to boot; while the signature is being verified that
   * costs nothing). Unused, they do not keep the process alive.
   */
  static prewarm(): void {
    line.get();
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
    let sink: HashingSink;
    try {
      sink = new HashingSink(handle, path, st.size, code);
    } catch (e) {
      await handle.close();
      throw new MvmError(code, `Cannot hash ${path}`, {
        cause: `the hashing workers did not start: ${(e as Error).message}`,
        underlying: e,
      });
    }
    // Not waited for: the download starts at once, its batches queue behind the
    // file's earlier bytes (and behind the worker's start-up, when it is still
    // booting), and a failure to read them surfaces at the next write or at finish.
    sink.send({ op: 'open', fd: handle.fd, size: st.size });
    return sink;
  }

  /**
   * The free end of the current batch, for a source to read straight into
   * (then `write` that piece, in place: nothing is copied); undefined when
   * every batch is in flight. Only the bytes written count: whatever else
   * lands there is overwritten by the next read. Valid for one read only: a
   * full batch goes to the worker (and leaves this thread) inside `write`.
   */
  room(): Uint8Array | undefined {
    if (this.failure) return undefined;
    if (!this.current) {
      const buf = this.free.pop() ?? (this.inFlight < POOL ? new ArrayBuffer(BATCH) : undefined);
      if (!buf) return undefined;
      this.current = new Uint8Array(buf);
      this.fill = 0;
    }
    return this.current.subarray(this.fill);
  }

  /**
   * Takes a chunk: copied into the current batch, or only counted when it was
   * read into the batch's free end (`room`). False when POOL batches are in
   * flight: pause the source until `drain` calls back.
   */
  write(chunk: Uint8Array): boolean {
    if (this.failure) throw this.failure;
    const c = this.current;
    if (c && chunk.buffer === c.buffer && chunk.byteOffset === this.fill) {
      this.fill += chunk.length;
      this.size += chunk.length;
      if (this.fill === BATCH) this.post();
      return this.inFlight < POOL;
    }
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
    this.send({ op: 'restart' });
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
    if (this.failure) throw this.failure;
    this.post();
    const r = await this.request('finish', 'digest', { size: this.size });
    return (r as { hex: string }).hex;
  }

  /** Writes out what was accepted (a resumable partial), then closes the file. */
  async close(): Promise<void> {
    if (!this.failure) this.post();
    // Awaited even after a failure: the descriptor closes only once the worker is
    // done with every batch of this file, or a file opened next could be given
    // the same number and receive them.
    await this.request('close', 'closed').catch(() => undefined);
    await this.stopped;
    line.remove(this.id);
    await this.handle.close().catch(() => undefined);
  }

  private post(): void {
    if (!this.current || this.fill === 0) return;
    const buf = this.current.buffer as ArrayBuffer;
    this.send({ op: 'write', buf, len: this.fill, pos: this.size - this.fill }, [buf]);
    this.inFlight++;
    this.current = undefined;
    this.fill = 0;
  }

  /** A message about this file to its worker, which takes them in order. */
  private send(message: object, transfer: ArrayBuffer[] = []): void {
    this.worker?.postMessage({ ...message, id: this.id }, transfer);
  }

  /** Sends `op`; resolves with the `expect` answer, which comes after every batch sent before. */
  private request(
    op: 'finish' | 'close',
    expect: 'digest' | 'closed',
    fields: object = {},
  ): Promise<Reply> {
    if (!this.worker) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiting = { expect, resolve, reject };
      this.send({ ...fields, op });
    });
  }

  /** An answer from the worker about this file. */
  onReply(m: Reply): void {
    if (m.op === 'free') {
      this.release(m.buf);
    } else if (m.op === 'error') {
      this.fail(m.message);
      // No digest will come; close is still answered (the worker drops the rest first).
      if (this.waiting?.expect === 'digest') this.settle().reject(this.failure!);
    } else if (this.waiting?.expect === m.op) {
      this.settle().resolve(m);
    }
  }

  /** The worker died: nothing more will be written or answered for this file. */
  onWorkerLost(worker: Worker, message: string, stopped: Promise<void>): void {
    if (this.worker !== worker) return;
    this.worker = undefined;
    this.stopped = stopped;
    this.fail(message);
    if (this.waiting) this.settle().reject(this.failure!);
  }

  private settle(): { resolve: (r: Reply) => void; reject: (e: Error) => void } {
    const w = this.waiting!;
    this.waiting = undefined;
    return w;
  }

  /** A batch written: back to the pool, and the source resumed if it was waiting for one. */
  private release(buf: ArrayBuffer): void {
    this.inFlight--;
    this.free.push(buf);
    if (this.inFlight < POOL && this.onDrain) {
      const drain = this.onDrain;
      this.onDrain = undefined;
      drain();
    }
  }

  /** Disk full, quota, a read-only remount: the local side, never a reason to retry the network. */
  private fail(message: string): void {
    this.failure ??= new MvmError(this.code, `Cannot write ${this.path}`, {
      cause: message,
      fix:
        this.code === 'store'
          ? 'Check free space and permissions of the data directory (MVM_DATA_DIR).'
          : 'Check free space and permissions of the output directory (--out).',
    });
    // A source paused for a free batch resumes, to find the failure at its next write.
    const drain = this.onDrain;
    this.onDrain = undefined;
    drain?.();
  }
}
