/**
 * The audit log as files: `audit.jsonl` and up to AUDIT_KEEP rotated files
 * (`audit.jsonl.1` the newest … `audit.jsonl.5` the oldest), their anchor,
 * and the two ways of reading them: whole (`readAuditLog`: `audit tail`,
 * `status`, a cold `metrics`) and incrementally (`AuditLogReader`: `metrics
 * serve`, which must not read 100,000 records on every scrape).
 *
 * Rotation (done by the appender, src/audit/record.ts): when audit.jsonl
 * has grown past MVM_AUDIT_MAX_BYTES (default 16 MiB), the next append shifts
 * the files up by one (the oldest beyond AUDIT_KEEP is dropped) and starts a
 * new audit.jsonl whose first record is a rotation checkpoint: chained to the
 * previous file's last line like any record, and carrying the totals (the
 * counters, the duration histogram, the last successful verification) of
 * every record before it. Why totals in a chained record and not in the
 * anchor: the anchor is rewritten on every append and is not itself chained,
 * while a checkpoint is part of the chain (an edit breaks it), is sent to the
 * external sink with every other record, and is checked by every reader
 * against the records of the rotated file before it while that file is
 * kept. The counts of a dropped file therefore survive exactly; what can no
 * longer be re-checked is the breakdown behind them, and the chain from a
 * dropped file into the oldest kept one (the oldest checkpoint is taken as
 * the starting point). A chain broken before a rotation is carried forward in
 * the checkpoint (`brokenBefore`), so rotation never launders a break.
 */
import { constants, promises as fs, type Stats } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { auditLogPath, type Config } from '../config.js';
import { MvmError } from '../errors.js';
import {
  CHECKPOINT_EVENT,
  ChainFold,
  splitLines,
  type AnchorState,
  type ChainCheck,
} from './chain.js';
import type { Tally } from './tally.js';

/** Rotated files kept beside audit.jsonl (audit.jsonl.1 … audit.jsonl.5). */
export const AUDIT_KEEP = 5;
export const DEFAULT_AUDIT_MAX_BYTES = 16 * 1024 * 1024;

export const rotatedPath = (path: string, n: number): string => `${path}.${n}`;

/** MVM_AUDIT_MAX_BYTES; an unusable value falls back to the default (an audit record is never refused over it). */
export function auditMaxBytes(env: Readonly<Record<string, string | undefined>>): number {
  const v = env['MVM_AUDIT_MAX_BYTES'];
  if (v === undefined || !/^[1-9][0-9]*$/.test(v) || !Number.isSafeInteger(Number(v)))
    return DEFAULT_AUDIT_MAX_BYTES;
  return Number(v);
}

/** Where the anchor lives: beside the recall memory, outside the telemetry directory. */
export const auditAnchorDir = (c: Config): string => join(c.dataDir, 'revocations');
export const auditAnchorPath = (c: Config): string => join(auditAnchorDir(c), 'audit-anchor.json');

/** The file's text, never through a symlink; undefined when it does not exist. */
async function readIfPresent(path: string): Promise<string | undefined> {
  try {
    return await fs.readFile(path, {
      encoding: 'utf8',
      flag: constants.O_RDONLY | constants.O_NOFOLLOW,
    });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** Reads the anchor; a missing one is undefined, anything else that is not an anchor is unreadable. */
export async function readAnchor(path: string): Promise<AnchorState> {
  let text: string | undefined;
  try {
    text = await readIfPresent(path);
  } catch (e) {
    return { unreadable: (e as Error).message };
  }
  if (text === undefined) return undefined;
  try {
    const a = JSON.parse(text) as { seq?: unknown; hash?: unknown } | null;
    if (
      typeof a?.seq === 'number' &&
      Number.isSafeInteger(a.seq) &&
      a.seq > 0 &&
      typeof a.hash === 'string' &&
      /^[0-9a-f]{64}$/.test(a.hash)
    )
      return { seq: a.seq, hash: a.hash };
  } catch {
    // falls through
  }
  return { unreadable: `${path} is not an audit anchor` };
}

/** This host's anchor, for whatever verifies the chain. */
export const readAuditAnchor = (c: Config): Promise<AnchorState> => readAnchor(auditAnchorPath(c));

/** What one reading of the log found. */
export interface AuditView {
  readonly check: ChainCheck;
  readonly tally: Tally;
  /** Lines that are not JSON records. */
  readonly unreadable: number;
  /** The file the verdict names: where the chain broke, or audit.jsonl. */
  readonly brokenPath?: string;
}

function readError(path: string, e: unknown): MvmError {
  return new MvmError('store', `Cannot read the audit log ${path}`, {
    cause: (e as Error)?.message ?? String(e),
    fix: 'The audit log must be a regular file owned by you; check the data directory (telemetry/audit.jsonl and its rotated files audit.jsonl.1 …).',
    underlying: e,
  });
}

async function openIfPresent(path: string): Promise<fs.FileHandle | undefined> {
  try {
    return await fs.open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw readError(path, e);
  }
}

async function statOf(fh: fs.FileHandle, path: string): Promise<Stats> {
  const st = await fh.stat();
  if (!st.isFile()) throw readError(path, new Error('not a regular file'));
  return st;
}

/** Reads [from, size) of an open file. */
async function readRange(fh: fs.FileHandle, from: number, size: number): Promise<Buffer> {
  const buf = Buffer.alloc(Math.max(0, size - from));
  let off = 0;
  while (off < buf.length) {
    const { bytesRead } = await fh.read(buf, off, buf.length - off, from + off);
    if (bytesRead === 0) break; // shrank while read: what was there is what is folded
    off += bytesRead;
  }
  return buf.subarray(0, off);
}

interface OpenedFile {
  readonly name: string;
  readonly path: string;
  readonly fh: fs.FileHandle;
  readonly st: Stats;
}

/**
 * audit.jsonl and its rotated files, all opened before any is read (newest
 * first) so a rotation meanwhile cannot show one file twice or skip one: a
 * snapshot in which audit.jsonl is no longer the file opened is taken again.
 */
async function openAll(path: string): Promise<{ files: OpenedFile[]; missing: number[] }> {
  for (let attempt = 0; ; attempt++) {
    const files: OpenedFile[] = [];
    const missing: number[] = [];
    try {
      for (let n = 0; n <= AUDIT_KEEP; n++) {
        const p = n === 0 ? path : rotatedPath(path, n);
        const fh = await openIfPresent(p);
        if (!fh) {
          if (n > 0) missing.push(n);
          continue;
        }
        files.push({ name: basename(p), path: p, fh, st: await statOf(fh, p) });
      }
      const inodes = new Set(files.map((f) => `${f.st.dev}:${f.st.ino}`));
      const now = await fs.lstat(path).catch(() => undefined);
      const current = files.find((f) => f.path === path);
      const stable =
        inodes.size === files.length &&
        (now === undefined
          ? current === undefined
          : current !== undefined && now.ino === current.st.ino && now.dev === current.st.dev);
      if (stable || attempt >= 5) return { files, missing };
    } catch (e) {
      await Promise.all(files.map((f) => f.fh.close()));
      throw e;
    }
    await Promise.all(files.map((f) => f.fh.close()));
    await new Promise((r) => setTimeout(r, 5));
  }
}

const firstLineOf = (buf: Buffer): Record<string, unknown> | undefined => {
  const nl = buf.indexOf(0x0a);
  try {
    const r = JSON.parse(buf.subarray(0, nl < 0 ? buf.length : nl).toString('utf8')) as unknown;
    return r && typeof r === 'object' ? (r as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
};

const rotationOf = (r: Record<string, unknown> | undefined): number | undefined =>
  r?.['event'] === CHECKPOINT_EVENT && typeof r['rotation'] === 'number'
    ? r['rotation']
    : undefined;

export interface ReadOptions {
  /** Keep the last N lines as read (for `audit tail`). */
  readonly tail?: number;
  /**
   * An incomplete last line of audit.jsonl: 'pending' (not yet read: a write
   * in flight, or a crash the next append sets aside) or 'consume' (read, and
   * reported as a break, as `audit tail` does).
   */
  readonly partial?: 'pending' | 'consume';
}

/** Where a whole reading left off in audit.jsonl, for the incremental reader. */
interface Position {
  readonly dev: number;
  readonly ino: number;
  /** Bytes of audit.jsonl read: just past its last complete line. */
  readonly offset: number;
}

interface FullRead {
  readonly fold: ChainFold;
  readonly view: AuditView;
  readonly position: Position | undefined;
  readonly tail: string[];
  readonly bytes: number;
  readonly linesInCurrent: number;
}

async function readAll(
  path: string,
  anchor: AnchorState,
  options: ReadOptions = {},
): Promise<FullRead> {
  const { files, missing } = await openAll(path);
  const fold = new ChainFold(anchor && 'seq' in anchor ? anchor.seq : undefined);
  const keep = options.tail ?? 0;
  const tail: string[] = [];
  const remember = (l: string) => {
    if (keep === 0) return;
    tail.push(l);
    if (tail.length > keep) tail.shift();
  };
  let bytes: number | undefined;
  let position: Position | undefined;
  let linesInCurrent = 0;
  try {
    const contents = await Promise.all(files.map((f) => readRange(f.fh, 0, f.st.size)));
    bytes = contents.reduce((n, b) => n + b.length, 0);
    // How many rotations the newest checkpoint counts, and so which rotated files must be there.
    const current = files[0]?.path === path ? contents[0] : undefined;
    const r1 = files.find((f) => f.path === rotatedPath(path, 1));
    let rotations = current && current.length > 0 ? (rotationOf(firstLineOf(current)) ?? 0) : 0;
    if ((!current || current.length === 0) && r1)
      rotations = (rotationOf(firstLineOf(contents[files.indexOf(r1)]!)) ?? 0) + 1;
    for (const n of missing)
      if (n <= Math.min(rotations, AUDIT_KEEP))
        fold.markBroken(
          basename(rotatedPath(path, n)),
          1,
          `the rotated file is missing (the log was rotated ${rotations} time(s) and keeps ${AUDIT_KEEP} rotated files)`,
        );
    // Oldest first.
    for (let i = files.length - 1; i >= 0; i--) {
      const f = files[i]!;
      const buf = contents[i]!;
      fold.beginFile(f.name, i === files.length - 1);
      const isCurrent = f.path === path;
      const end = buf.lastIndexOf(0x0a) + 1;
      const { lines, rest } = splitLines(buf.toString('utf8'));
      for (const l of lines) {
        if (l === '') continue;
        fold.consume(l);
        remember(l);
        if (isCurrent) linesInCurrent++;
      }
      if (rest !== '' && (!isCurrent || options.partial === 'consume')) {
        fold.consume(rest, true);
        remember(rest);
        if (isCurrent) linesInCurrent++;
      }
      if (isCurrent) position = { dev: f.st.dev, ino: f.st.ino, offset: end };
    }
  } finally {
    await Promise.all(files.map((f) => f.fh.close()));
  }
  const check = fold.verdict(anchor, basename(path), linesInCurrent);
  return {
    fold,
    view: viewOf(path, fold, check),
    position,
    tail,
    bytes: bytes ?? 0,
    linesInCurrent,
  };
}

function viewOf(path: string, fold: ChainFold, check: ChainCheck): AuditView {
  return {
    check,
    tally: fold.tallySnapshot(),
    unreadable: fold.unreadable,
    ...(check.file ? { brokenPath: join(dirname(path), check.file) } : {}),
  };
}

/** The whole log read once, every kept file, with the chain checked against the anchor. */
export async function readAuditLog(
  path: string,
  anchorPath: string | undefined,
  options: ReadOptions = {},
): Promise<AuditView & { readonly tail: string[] }> {
  // The anchor first: it is written after the log, so read in this order a
  // concurrent append can only make the log look longer than the anchor, never shorter.
  const anchor = anchorPath ? await readAnchor(anchorPath) : undefined;
  const r = await readAll(path, anchor, options);
  return { ...r.view, tail: r.tail };
}

/** This host's log. */
export const readHostAuditLog = (c: Config, options: ReadOptions = {}) =>
  readAuditLog(auditLogPath(c), auditAnchorPath(c), options);

/** What an incremental reader has done, for tests and the benchmark. */
export interface ReaderStats {
  /** Whole readings (the first, and each start-over). */
  fullReads: number;
  /** Readings of only what was appended (including following a rotation). */
  incrementalReads: number;
  /** Bytes read from the log files, in total. */
  bytesRead: number;
}

/**
 * Reads the log incrementally: the first refresh reads every file; later ones
 * read only what was appended to audit.jsonl since (its byte offset and the
 * chain position are kept), follow a rotation (the file read so far became
 * audit.jsonl.1: its remainder, then the new audit.jsonl from its start), and
 * start over when the file shrank, was replaced, or what was appended does
 * not follow the chain as read so far. A region already read is not read
 * again: an edit there is caught by the next whole reading (a restart, or
 * `mvmctl audit tail` / `status` / `metrics`), not by this reader.
 */
export class AuditLogReader {
  readonly stats: ReaderStats = { fullReads: 0, incrementalReads: 0, bytesRead: 0 };
  private fold: ChainFold | undefined;
  private position: Position | undefined;
  private linesInCurrent = 0;

  constructor(
    readonly path: string,
    readonly anchorPath: string | undefined,
  ) {}

  async refresh(): Promise<AuditView> {
    const anchor = this.anchorPath ? await readAnchor(this.anchorPath) : undefined;
    if (this.fold && (await this.readAppended())) {
      this.stats.incrementalReads++;
      const check = this.fold.verdict(anchor, basename(this.path), this.linesInCurrent);
      return viewOf(this.path, this.fold, check);
    }
    const r = await readAll(this.path, anchor);
    this.stats.fullReads++;
    this.stats.bytesRead += r.bytes;
    this.fold = r.fold;
    this.position = r.position;
    this.linesInCurrent = r.linesInCurrent;
    return r.view;
  }

  /** Reads what was appended; false when only a whole reading can tell (then nothing was consumed). */
  private async readAppended(): Promise<boolean> {
    const fold = this.fold!;
    const pos = this.position;
    const fh = await openIfPresent(this.path);
    try {
      const st = fh ? await statOf(fh, this.path) : undefined;
      if (pos && st && st.ino === pos.ino && st.dev === pos.dev) {
        if (st.size < pos.offset) return false; // shrank: cut back or rewritten
        const chunk = await this.completeLines(fh!, pos.offset, st.size);
        if (!chunk) return true;
        if (!fold.follows(chunk.lines[0]!)) return false;
        for (const l of chunk.lines) fold.consume(l);
        this.linesInCurrent += chunk.lines.length;
        this.position = { ...pos, offset: pos.offset + chunk.bytes };
        return true;
      }
      if (!pos || !st) return false;
      // A new audit.jsonl: follow a rotation only when the file read so far is now audit.jsonl.1.
      const r1Path = rotatedPath(this.path, 1);
      const r1 = await openIfPresent(r1Path);
      if (!r1) return false;
      try {
        const st1 = await statOf(r1, r1Path);
        if (st1.ino !== pos.ino || st1.dev !== pos.dev || st1.size < pos.offset) return false;
        const rest = await readRange(r1, pos.offset, st1.size);
        const fresh = await readRange(fh!, 0, st.size);
        this.stats.bytesRead += rest.length + fresh.length;
        const restLines = splitLines(rest.toString('utf8'));
        if (restLines.rest !== '') return false; // a rotated file always ends with a complete line
        const freshEnd = fresh.lastIndexOf(0x0a) + 1;
        const freshLines = splitLines(fresh.subarray(0, freshEnd).toString('utf8')).lines;
        const first = restLines.lines[0] ?? freshLines[0];
        if (first !== undefined && !fold.follows(first)) return false;
        for (const l of restLines.lines) fold.consume(l);
        fold.beginFile(basename(this.path), false);
        for (const l of freshLines) fold.consume(l);
        this.linesInCurrent = freshLines.length;
        this.position = { dev: st.dev, ino: st.ino, offset: freshEnd };
        return true;
      } finally {
        await r1.close();
      }
    } finally {
      await fh?.close();
    }
  }

  /** The complete lines in [from, size), and their length in bytes; undefined when there are none yet. */
  private async completeLines(
    fh: fs.FileHandle,
    from: number,
    size: number,
  ): Promise<{ lines: string[]; bytes: number } | undefined> {
    if (size === from) return undefined;
    const buf = await readRange(fh, from, size);
    this.stats.bytesRead += buf.length;
    const end = buf.lastIndexOf(0x0a) + 1;
    if (end === 0) return undefined;
    const lines = splitLines(buf.subarray(0, end).toString('utf8')).lines.filter((l) => l !== '');
    return lines.length ? { lines, bytes: end } : undefined;
  }
}

/** The last complete line of a file (undefined: none, or no file), read from its end. */
export async function lastLineOf(path: string): Promise<string | undefined> {
  const fh = await openIfPresent(path);
  if (!fh) return undefined;
  try {
    const { size } = await statOf(fh, path);
    for (let window = 64 * 1024; ; window *= 4) {
      const start = Math.max(0, size - window);
      const buf = await readRange(fh, start, size);
      const end = buf.lastIndexOf(0x0a);
      if (end < 0) {
        if (start === 0) return undefined;
        continue;
      }
      const before = end === 0 ? -1 : buf.lastIndexOf(0x0a, end - 1);
      if (before < 0 && start > 0) continue;
      return buf.subarray(before + 1, end).toString('utf8');
    }
  } finally {
    await fh.close();
  }
}

/**
 * What a new file's rotation checkpoint carries, computed from the file just
 * rotated (audit.jsonl.1): the totals so far, the rotation's number, and a
 * break found in it or carried by its own checkpoint.
 */
export async function checkpointFrom(rotated: string): Promise<{
  totals: Tally;
  rotation: number;
  brokenBefore?: { seq: number; reason: string };
  previous: { file: string; firstSeq: number; lastSeq: number; records: number };
}> {
  const fh = await openIfPresent(rotated);
  if (!fh) throw readError(rotated, new Error('it vanished while being rotated'));
  const fold = new ChainFold();
  let firstSeq = 0;
  try {
    const buf = await readRange(fh, 0, (await statOf(fh, rotated)).size);
    fold.beginFile(basename(rotated), true);
    const { lines, rest } = splitLines(buf.toString('utf8'));
    for (const l of lines) {
      if (l === '') continue;
      fold.consume(l);
      if (firstSeq === 0) firstSeq = fold.seq;
    }
    if (rest !== '') fold.consume(rest, true);
  } finally {
    await fh.close();
  }
  const broken = fold.firstBreak();
  return {
    totals: fold.tallySnapshot(),
    rotation: fold.rotation + 1,
    ...(broken ? { brokenBefore: broken } : {}),
    previous: {
      file: basename(rotated),
      firstSeq,
      lastSeq: fold.seq,
      records: fold.records,
    },
  };
}

/**
 * Shifts audit.jsonl.N up by one (the oldest kept is replaced, so dropped)
 * and makes audit.jsonl audit.jsonl.1; the directory is synced so the new
 * names survive a crash. Runs under the log's lock.
 */
export async function shiftRotated(path: string): Promise<void> {
  try {
    for (let n = AUDIT_KEEP - 1; n >= 1; n--) {
      await fs.rename(rotatedPath(path, n), rotatedPath(path, n + 1)).catch((e: unknown) => {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      });
    }
    await fs.rename(path, rotatedPath(path, 1));
    const dir = await fs.open(dirname(path), constants.O_RDONLY | constants.O_DIRECTORY);
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  } catch (e) {
    throw new MvmError('store', `Cannot rotate the audit log ${path}`, {
      cause: (e as Error).message,
      underlying: e,
    });
  }
}
