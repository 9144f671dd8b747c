/**
 * The audit chain, checked line by line as it is read (pure: text in, verdict
 * out). One fold serves every reader: `audit tail` and `status` over the
 * whole log, `metrics serve` over the lines appended since its last scrape,
 * and the appender when it rotates a file. It follows the chain across
 * rotated files (a file's first record is a rotation checkpoint that chains to
 * the previous file's last line and carries the totals so far), checks each
 * checkpoint against the records before it, and counts as it goes.
 */
import { hash } from 'node:crypto';
import { printable } from '../core/printable.js';
import {
  copyTally,
  countRecord,
  emptyTally,
  sameTally,
  tallyFromJson,
  type Tally,
} from './tally.js';

export const GENESIS = '0'.repeat(64);
// One-shot hashing (crypto.hash): a whole reading hashes every line, and this is most of its cost.
export const sha256 = (data: string | Uint8Array): string => hash('sha256', data, 'hex');

/** The event of a rotation checkpoint: the first record of every file after the first. */
export const CHECKPOINT_EVENT = 'audit.rotated';

/** The last record's position and line hash, kept outside the log. */
export interface AuditAnchor {
  readonly seq: number;
  readonly hash: string;
}
/** What was found where the anchor belongs: none yet (a log from before anchors), one, or something unreadable. */
export type AnchorState = AuditAnchor | { readonly unreadable: string } | undefined;

export interface ChainCheck {
  readonly records: number;
  /** 1-based line number (in `file`) of the first line that does not chain to the one before, if any. */
  readonly brokenAt?: number;
  /** The file of the log that `brokenAt` counts lines in (broken chains only). */
  readonly file?: string;
  readonly reason?: string;
  /** Whether the log chains and agrees with its anchor. */
  readonly intact: boolean;
  /** The seq of the log's last record (0 for an empty log). */
  readonly lastSeq: number;
  /** The anchor it was checked against, if there was one. */
  readonly anchor?: AuditAnchor;
}

interface Break {
  readonly file: string;
  readonly line: number;
  readonly reason: string;
  readonly seq: number;
  /** A break carried by a checkpoint: its reason as first recorded (so it is not prefixed again at the next rotation). */
  readonly carried?: string;
}

interface Parsed {
  seq?: unknown;
  prev?: unknown;
  event?: unknown;
  message?: unknown;
  rotation?: unknown;
  totals?: unknown;
  brokenBefore?: unknown;
}

/** Where a seq was read, for an anchor check that comes after the reading. */
interface Seen {
  readonly hash: string;
  readonly file: string;
  readonly line: number;
}

const RECENT = 4096;

/**
 * Consumes the lines of the log, oldest file first, and keeps what a verdict
 * needs: the chain position, the first break, the tally, and the hashes of
 * the most recent records (and of the one the anchor named when the fold
 * started), so the anchor can be checked later without reading again.
 */
export class ChainFold {
  records = 0;
  unreadable = 0;
  /** The seq and line hash the next record must follow. */
  seq = 0;
  prev = GENESIS;
  tally: Tally = emptyTally();
  /** The newest checkpoint's rotation number (0: the log was never rotated). */
  rotation = 0;
  private broken: Break | undefined;
  private file = 'audit.jsonl';
  private line = 0;
  private firstOfFile = true;
  private oldest = true;
  /** The most recent records, a ring: their seq, and where and what they were. */
  private readonly recentSeq = new Float64Array(RECENT).fill(-1);
  private readonly recent: (Seen | undefined)[] = new Array<Seen | undefined>(RECENT);
  private cursor = 0;
  private target: Seen | undefined;

  /** `targetSeq`: the anchor's seq, when known before reading (its line's hash is kept whatever its age). */
  constructor(private readonly targetSeq?: number) {}

  /** Lines that follow come from `file`; `oldest`: no earlier file of the log was read (or remains). */
  beginFile(file: string, oldest: boolean): void {
    this.file = file;
    this.line = 0;
    this.firstOfFile = true;
    this.oldest = oldest;
  }

  /** Whether `text` is the record that comes next (what an incremental reader checks before trusting its offset). */
  follows(text: string): boolean {
    try {
      const r = JSON.parse(text) as Parsed;
      return r?.prev === this.prev && r?.seq === this.seq + 1;
    } catch {
      return false;
    }
  }

  /** Records a break found outside the lines (a missing file); the first break is the one reported. */
  markBroken(file: string, line: number, reason: string): void {
    this.broken ??= { file, line, reason, seq: this.seq };
  }

  get isBroken(): boolean {
    return this.broken !== undefined;
  }

  /** One line (without its newline); `incomplete`: the file ended without one. */
  consume(text: string, incomplete = false): void {
    this.records++;
    this.line++;
    const first = this.firstOfFile;
    this.firstOfFile = false;
    let r: Parsed;
    try {
      r = JSON.parse(text) as Parsed;
      if (r === null || typeof r !== 'object' || Array.isArray(r)) throw new Error('not an object');
    } catch {
      this.unreadable++;
      this.markBroken(
        this.file,
        this.line,
        incomplete
          ? 'the last line is incomplete (a crash or a short write); the next record written sets it aside'
          : 'the line is not a JSON record',
      );
      this.advance(text, this.seq + 1);
      return;
    }
    const checkpoint = r.event === CHECKPOINT_EVENT;
    if (first && this.oldest && checkpoint) {
      // The oldest file kept starts where an earlier, dropped file ended: the checkpoint says where, and what it counted.
      this.startFrom(r);
    } else if (r.prev !== this.prev || r.seq !== this.seq + 1) {
      this.markBroken(this.file, this.line, 'the line does not follow the one before it');
    } else if (checkpoint && !first) {
      this.markBroken(this.file, this.line, 'a rotation checkpoint in the middle of a file');
    } else if (checkpoint) {
      const totals = tallyFromJson(r.totals);
      if (!totals || !sameTally(totals, this.tally))
        this.markBroken(
          this.file,
          this.line,
          'the rotation checkpoint does not add up to the records before it (a rotated file was edited)',
        );
      this.noteRotation(r);
    } else if (first && !this.oldest) {
      this.markBroken(this.file, this.line, 'the file does not begin with a rotation checkpoint');
    }
    if (r.event === 'audit.anchor-mismatch') {
      this.markBroken(
        this.file,
        this.line,
        `the record says ${typeof r.message === 'string' ? printable(r.message, 500) : 'the log did not match its anchor'}`,
      );
    }
    if (!checkpoint) countRecord(this.tally, r);
    const seq =
      typeof r.seq === 'number' && Number.isSafeInteger(r.seq) && r.seq > 0 ? r.seq : this.seq + 1;
    this.advance(text, seq);
  }

  private startFrom(r: Parsed): void {
    const seq = r.seq;
    if (
      typeof seq !== 'number' ||
      !Number.isSafeInteger(seq) ||
      seq < 2 ||
      typeof r.prev !== 'string' ||
      !/^[0-9a-f]{64}$/.test(r.prev)
    ) {
      this.markBroken(
        this.file,
        this.line,
        'the rotation checkpoint has no valid place in the chain',
      );
      return;
    }
    this.seq = seq - 1;
    this.prev = r.prev;
    const totals = tallyFromJson(r.totals);
    if (totals) this.tally = totals;
    else
      this.markBroken(this.file, this.line, 'the rotation checkpoint carries no readable totals');
    this.noteRotation(r);
  }

  private noteRotation(r: Parsed): void {
    if (typeof r.rotation === 'number' && Number.isSafeInteger(r.rotation) && r.rotation > 0)
      this.rotation = r.rotation;
    // A chain found broken before a rotation stays broken: the evidence must not rotate away.
    const before = r.brokenBefore as { reason?: unknown; seq?: unknown } | undefined;
    if (before && typeof before === 'object') {
      const reason =
        typeof before.reason === 'string' ? printable(before.reason, 500) : 'the chain was broken';
      const seq = typeof before.seq === 'number' ? before.seq : this.seq;
      this.broken ??= {
        file: this.file,
        line: this.line,
        reason: `before an earlier rotation (at seq ${seq}): ${reason}`,
        seq,
        carried: reason,
      };
    }
  }

  private advance(text: string, seq: number): void {
    this.prev = sha256(text);
    this.seq = seq;
    const seen = { hash: this.prev, file: this.file, line: this.line };
    if (seq === this.targetSeq) this.target = seen;
    this.recentSeq[this.cursor] = seq;
    this.recent[this.cursor] = seen;
    this.cursor = (this.cursor + 1) % RECENT;
  }

  /** Where a recent seq was read (the newest, should a broken log repeat one). */
  private seen(seq: number): Seen | undefined {
    for (let k = 1; k <= RECENT; k++) {
      const i = (this.cursor - k + RECENT) % RECENT;
      if (this.recentSeq[i] === seq) return this.recent[i];
    }
    return seq === this.targetSeq ? this.target : undefined;
  }

  /** The first break found so far, with where it is (for a checkpoint's `brokenBefore`). */
  firstBreak(): { readonly seq: number; readonly reason: string } | undefined {
    return (
      this.broken && { seq: this.broken.seq, reason: this.broken.carried ?? this.broken.reason }
    );
  }

  /**
   * The verdict: the first break in the lines, else how the log's end
   * compares with the anchor. `current`/`linesInCurrent`: the newest file and
   * its line count (where "after the last line" is).
   */
  verdict(anchor: AnchorState, current = this.file, linesInCurrent = this.line): ChainCheck {
    const withAnchor = anchor && 'seq' in anchor ? { anchor } : {};
    const broken = (b: Omit<Break, 'carried'>): ChainCheck => ({
      records: this.records,
      brokenAt: b.line,
      file: b.file,
      reason: b.reason,
      intact: false,
      lastSeq: b.seq,
      ...withAnchor,
    });
    if (this.broken) return broken(this.broken);
    const end = { file: current, line: linesInCurrent + 1, seq: this.seq };
    if (anchor !== undefined) {
      if (!('seq' in anchor))
        return broken({
          ...end,
          reason: `the audit anchor is unreadable: ${printable(anchor.unreadable, 500)}`,
        });
      if (this.records === 0)
        return broken({
          ...end,
          line: 1,
          reason: `the log is missing or empty but the anchor says it ended at seq ${anchor.seq}`,
        });
      if (anchor.seq > this.seq)
        return broken({
          ...end,
          reason: `the log ends at seq ${this.seq} but the anchor says ${anchor.seq}: records were removed from its end`,
        });
      const seen = this.seen(anchor.seq);
      if (seen && seen.hash !== anchor.hash)
        return broken({
          file: seen.file,
          line: seen.line,
          seq: this.seq,
          reason: `the record at seq ${anchor.seq} is not the one the anchor names: the log was rewritten`,
        });
    }
    return { records: this.records, intact: true, lastSeq: this.seq, ...withAnchor };
  }

  /** A copy to fold on from (the rotation checkpoint's totals are computed on one). */
  tallySnapshot(): Tally {
    return copyTally(this.tally);
  }
}

/** Splits text into complete lines and what follows the last newline. */
export function splitLines(text: string): { lines: string[]; rest: string } {
  const end = text.lastIndexOf('\n');
  const lines = end < 0 ? [] : text.slice(0, end).split('\n');
  return { lines, rest: text.slice(end + 1) };
}

/** Feeds a file's text to the fold; a last line without its newline is fed as incomplete. */
export function foldText(fold: ChainFold, text: string): void {
  const { lines, rest } = splitLines(text);
  for (const l of lines) if (l !== '') fold.consume(l);
  if (rest !== '') fold.consume(rest, true);
}

/**
 * Pure: checks that every line chains to the one before it, that no record
 * says the log was found shortened, and, given the anchor, that the log
 * reaches it and its record there is the one the anchor names. One file (the
 * log as it was before rotation, or a test's text); a rotated log is read
 * with readAuditLog (src/audit/log-files.ts).
 */
export function checkChain(text: string, anchor?: AnchorState): ChainCheck {
  const fold = new ChainFold(anchor && 'seq' in anchor ? anchor.seq : undefined);
  fold.beginFile('audit.jsonl', true);
  foldText(fold, text);
  const check = fold.verdict(anchor);
  if (check.intact) return check;
  // The file is named only when it tells something (one file: its line numbers are the log's).
  const { file, ...rest } = check;
  return file === 'audit.jsonl' ? rest : { ...rest, file: file! };
}
