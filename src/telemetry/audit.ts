/**
 * The append-only audit log (JSON lines), the anchor that tells when it was
 * shortened, the external sink, and the counters derived from the log.
 *
 * Each record is chained to the one before it (`seq` counts up, `prev` is the
 * SHA-256 of the previous line). Reading the last line and appending the next
 * must not interleave with another writer, so appends run under a lock
 * (src/io/lock.ts); the Prometheus counters of SPEC.md section 6 are computed
 * from the records, not kept beside them, so a counter cannot disagree with
 * the log.
 *
 * What the chain proves, and what it does not: an edited, inserted, removed
 * or reordered line breaks it. Records removed from the end, or the whole log
 * deleted, are caught by the anchor (the last seq and hash, rewritten
 * atomically beside the recall memory on every append). Someone with this
 * user's rights who rewrites the log, recomputes every hash and rewrites the
 * anchor too cannot be caught on this host: that is what the external sink
 * (MVM_AUDIT_SOCKET, syslog / the journal) is for, once records have left it.
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants, promises as fs } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { auditLogPath, telemetryDir, type Config } from '../config.js';
import { printable } from '../core/printable.js';
import type { CounterName, ErrorCode, VerificationCheck } from '../errors.js';
import { ERROR_TABLE, MvmError } from '../errors.js';
import { withLock } from '../io/lock.js';
import { runWithInput } from '../io/process.js';
import { ensurePrivateDir } from '../store/secure-dir.js';
import { MVMCTL_VERSION } from '../version.js';

export type Bypass = 'cosign' | 'hash';
export type AuditEvent =
  | 'dev.import-image'
  | 'revocations.refresh'
  | 'revocations.import'
  /** A dev VM boot attempt (mvmctl dev up): ok, or failed with the code that stopped it. */
  | 'dev.up'
  /** A last line left incomplete by a crash or short write, set aside. */
  | 'audit.torn-tail'
  /** The log was shorter than the anchor says, missing, or the anchor unreadable. */
  | 'audit.anchor-mismatch'
  /** A record was written here but could not be sent to MVM_AUDIT_SOCKET. */
  | 'audit.sink-failed';

export interface AuditRecord {
  readonly ts: string;
  readonly event: AuditEvent;
  readonly outcome: 'ok' | 'failed';
  readonly code?: ErrorCode;
  readonly check?: VerificationCheck;
  readonly message?: string;
  readonly version?: string;
  readonly arch?: string;
  readonly variant?: string;
  readonly manifestSha256?: string;
  readonly signer?: string;
  /** Past not_after: warned, not failed. */
  readonly expired?: boolean;
  readonly bypassed?: readonly Bypass[];
  /** Import outcomes only: the verification's wall time. */
  readonly durationSeconds?: number;
  /** audit.torn-tail: how many bytes were set aside, their SHA-256 and where they went. */
  readonly tornBytes?: number;
  readonly tornSha256?: string;
  readonly tornFile?: string;
  /** audit.anchor-mismatch: the last seq the log had and the one the anchor named. */
  readonly logSeq?: number;
  readonly anchorSeq?: number;
  readonly mvmctlVersion: string;
  readonly pid: number;
  /** Position in the chain (1, 2, …), set when appended. */
  readonly seq?: number;
  /** SHA-256 of the previous line (64 zeros for the first), set when appended. */
  readonly prev?: string;
}

/** The last record's position and line hash, kept outside the log. */
export interface AuditAnchor {
  readonly seq: number;
  readonly hash: string;
}
/** What was found where the anchor belongs: none yet (a log from before anchors), one, or something unreadable. */
export type AnchorState = AuditAnchor | { readonly unreadable: string } | undefined;

export interface AppendOptions {
  /** Where the anchor is kept (absent: no anchor is checked or written). */
  readonly anchorPath?: string;
  /** A unix socket that receives every record as a syslog message (MVM_AUDIT_SOCKET). */
  readonly sink?: string;
  /** Where warnings go (default: stderr). */
  readonly warn?: (message: string) => void;
}

const GENESIS = '0'.repeat(64);
const sha256 = (data: string | Uint8Array): string =>
  createHash('sha256').update(data).digest('hex');
const stderrWarning = (m: string): void =>
  void process.stderr.write(`warning: ${printable(m, 4096)}\n`);

/** Where the anchor lives: beside the recall memory, outside the telemetry directory. */
export const auditAnchorDir = (c: Config): string => join(c.dataDir, 'revocations');
export const auditAnchorPath = (c: Config): string => join(auditAnchorDir(c), 'audit-anchor.json');

/**
 * Appends one record, chained to the one before it, under the log's lock.
 * Before it, in the same chain: a torn last line is set aside and recorded,
 * and a log shorter than its anchor is recorded (so the evidence is not lost
 * when the anchor moves on). After it: the anchor is rewritten and the lines
 * are sent to the sink; neither failure loses the local record (a warning,
 * and a sink failure is itself recorded).
 */
export async function appendAudit(
  path: string,
  record: AuditRecord,
  options: AppendOptions = {},
): Promise<void> {
  const warn = options.warn ?? stderrWarning;
  await withLock(`${path}.lock`, 'the audit log', async () => {
    let fh;
    try {
      fh = await fs.open(
        path,
        constants.O_RDWR | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW,
        0o600,
      );
    } catch (e) {
      throw storeError(`Cannot open the audit log ${path}`, e);
    }
    try {
      const tail = await readTail(fh);
      const before: AuditRecord[] = [];
      if (tail.torn) {
        const setAside = await setAsideTornTail(fh, path, tail.end, tail.torn);
        const msg = `the audit log ${path} ended in an incomplete line (${tail.torn.length} bytes, a crash or short write); it was moved to ${setAside} and new records chain on`;
        warn(msg);
        before.push({
          ...systemRecord(record, 'audit.torn-tail', msg),
          tornBytes: tail.torn.length,
          tornSha256: sha256(tail.torn),
          tornFile: printable(basename(setAside)),
        });
      }
      const anchor = options.anchorPath ? await readAnchor(options.anchorPath) : undefined;
      // An unreadable last line (the chain check names it) cannot say where it was: the anchor can.
      let seq =
        tail.last === undefined
          ? 0
          : (lastSeq(tail.last) ?? (anchor && 'seq' in anchor ? anchor.seq : 0));
      let prev = tail.last === undefined ? GENESIS : sha256(tail.last);
      const mismatch = anchorMismatch(anchor, seq, prev);
      if (mismatch) {
        const msg = `${mismatch.text}; recorded, and new records chain on`;
        warn(msg);
        before.push({
          ...systemRecord(record, 'audit.anchor-mismatch', mismatch.text),
          logSeq: seq,
          ...(mismatch.anchorSeq === undefined ? {} : { anchorSeq: mismatch.anchorSeq }),
        });
      }
      const lines: string[] = [];
      for (const r of [...before, record]) {
        const line = JSON.stringify({ ...r, seq: ++seq, prev });
        lines.push(line);
        prev = sha256(line);
      }
      await appendLines(fh, path, lines);
      if (options.anchorPath)
        await writeAnchorOrWarn(options.anchorPath, { seq, hash: prev }, warn);
      if (options.sink) {
        const failure = await sendToSink(options.sink, lines, record.pid);
        if (failure) {
          const msg = `the audit record was written to ${path} but not sent to ${options.sink}: ${failure}`;
          warn(msg);
          // Recorded here only: the collector sees the gap in seq.
          const line = JSON.stringify({
            ...systemRecord(record, 'audit.sink-failed', printable(msg, 2000)),
            seq: ++seq,
            prev,
          });
          await appendLines(fh, path, [line]);
          if (options.anchorPath)
            await writeAnchorOrWarn(options.anchorPath, { seq, hash: sha256(line) }, warn);
        }
      }
    } finally {
      await fh.close();
    }
  });
}

/** A record the log writes about itself, stamped like the record that triggered it. */
function systemRecord(
  trigger: AuditRecord,
  event: 'audit.torn-tail' | 'audit.anchor-mismatch' | 'audit.sink-failed',
  message: string,
): AuditRecord {
  return {
    ts: trigger.ts,
    event,
    outcome: 'failed',
    code: event === 'audit.anchor-mismatch' ? 'tampered' : 'store',
    message: printable(message, 2000),
    mvmctlVersion: trigger.mvmctlVersion,
    pid: trigger.pid,
  };
}

function storeError(message: string, e: unknown): MvmError {
  return new MvmError('store', message, { cause: (e as Error).message, underlying: e });
}

function lastSeq(line: string | undefined): number | undefined {
  if (line === undefined) return undefined;
  try {
    const seq = (JSON.parse(line) as { seq?: unknown } | null)?.seq;
    return typeof seq === 'number' && Number.isSafeInteger(seq) && seq > 0 ? seq : undefined;
  } catch {
    return undefined; // an unreadable last line: chain on; the chain check names it
  }
}

/** How the log's end disagrees with the anchor, if it does. */
function anchorMismatch(
  anchor: AnchorState,
  seq: number,
  hash: string,
): { text: string; anchorSeq?: number } | undefined {
  if (anchor === undefined) return undefined;
  if (!('seq' in anchor)) return { text: `the audit anchor was unreadable (${anchor.unreadable})` };
  if (seq === 0)
    return {
      text: `the audit log was missing or empty but the anchor says it ended at seq ${anchor.seq}`,
      anchorSeq: anchor.seq,
    };
  if (anchor.seq > seq)
    return {
      text: `the audit log ends at seq ${seq} but the anchor says ${anchor.seq}: records were removed from its end`,
      anchorSeq: anchor.seq,
    };
  if (anchor.seq === seq && anchor.hash !== hash)
    return {
      text: `the audit log's last record (seq ${seq}) is not the one the anchor names: the log was rewritten`,
      anchorSeq: anchor.seq,
    };
  return undefined;
}

interface Tail {
  /** The last complete line (without its newline), if any. */
  readonly last?: string;
  /** Offset just past the last complete line. */
  readonly end: number;
  /** Bytes after the last newline: an incomplete line. */
  readonly torn?: Buffer;
}

/** The file's last complete line and whatever follows it, read from its end. */
async function readTail(fh: fs.FileHandle): Promise<Tail> {
  const { size } = await fh.stat();
  if (size === 0) return { end: 0 };
  for (let window = 64 * 1024; ; window *= 4) {
    const start = Math.max(0, size - window);
    const buf = Buffer.alloc(size - start);
    await readFully(fh, buf, start);
    const nl = buf.lastIndexOf(0x0a);
    if (nl < 0 && start > 0) continue;
    const end = nl < 0 ? 0 : start + nl + 1;
    const torn = end < size ? buf.subarray(end - start) : undefined;
    if (nl < 0) return { end, ...(torn ? { torn } : {}) };
    const before = nl === 0 ? -1 : buf.lastIndexOf(0x0a, nl - 1);
    if (before < 0 && start > 0) continue;
    return { last: buf.subarray(before + 1, nl).toString('utf8'), end, ...(torn ? { torn } : {}) };
  }
}

async function readFully(fh: fs.FileHandle, buf: Buffer, position: number): Promise<void> {
  for (let off = 0; off < buf.length;) {
    const { bytesRead } = await fh.read(buf, off, buf.length - off, position + off);
    if (bytesRead === 0) throw new MvmError('store', 'The audit log shrank while being read');
    off += bytesRead;
  }
}

/** Moves an incomplete last line into its own file and cuts it from the log; returns that file. */
async function setAsideTornTail(
  fh: fs.FileHandle,
  path: string,
  end: number,
  torn: Buffer,
): Promise<string> {
  const stamp = new Date().toISOString().replace(/:/g, '-');
  let aside = `${path}.torn-${stamp}`;
  try {
    try {
      await fs.writeFile(aside, torn, { mode: 0o600, flag: 'wx' });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      aside = `${path}.torn-${stamp}-${randomBytes(4).toString('hex')}`;
      await fs.writeFile(aside, torn, { mode: 0o600, flag: 'wx' });
    }
    await fh.truncate(end);
  } catch (e) {
    throw storeError(`Cannot set aside the incomplete last line of the audit log ${path}`, e);
  }
  return aside;
}

/** Writes the lines completely (short writes continue), durably; on failure the log is cut back. */
async function appendLines(fh: fs.FileHandle, path: string, lines: string[]): Promise<void> {
  const data = Buffer.from(`${lines.join('\n')}\n`);
  const { size } = await fh.stat();
  try {
    for (let off = 0; off < data.length;) {
      const { bytesWritten } = await fh.write(data, off, data.length - off);
      off += bytesWritten;
    }
    await fh.datasync();
  } catch (e) {
    await fh.truncate(size).catch(() => undefined);
    throw storeError(`Cannot append to the audit log ${path}`, e);
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

/** temp + fsync + rename: the anchor is the old one or the new one, never a partial one. */
async function writeAnchorOrWarn(
  path: string,
  anchor: AuditAnchor,
  warn: (m: string) => void,
): Promise<void> {
  const tmp = join(
    dirname(path),
    `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}`,
  );
  try {
    const fh = await fs.open(
      tmp,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o600,
    );
    try {
      await fh.writeFile(
        `${JSON.stringify({ seq: anchor.seq, hash: anchor.hash, ts: new Date().toISOString() })}\n`,
      );
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, path);
  } catch (e) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    warn(
      `the audit anchor ${path} could not be updated (${(e as Error).message}): a shortened audit log would not be detected until it is`,
    );
  }
}

/**
 * Sends the lines to a unix socket as syslog messages (facility authpriv, tag
 * mvmctl) through logger(1) from util-linux: Node.js has no unix datagram
 * sockets, and /dev/log and the journal's socket are datagram sockets.
 * Returns why it failed, or undefined.
 */
async function sendToSink(
  socket: string,
  lines: string[],
  pid: number,
): Promise<string | undefined> {
  const r = await runWithInput(
    'logger',
    [
      '--socket-errors=on',
      '--socket',
      socket,
      '--tag',
      'mvmctl',
      `--id=${pid}`,
      '--priority',
      'authpriv.notice',
      '--size',
      String(64 * 1024),
    ],
    `${lines.join('\n')}\n`,
    5_000,
  );
  if (r.ok) return undefined;
  return printable(r.error, 500);
}

export interface ChainCheck {
  readonly records: number;
  /** 1-based line number of the first line that does not chain to the one before, if any. */
  readonly brokenAt?: number;
  readonly reason?: string;
  /** Whether the log chains and agrees with its anchor. */
  readonly intact: boolean;
  /** The seq of the log's last record (0 for an empty log). */
  readonly lastSeq: number;
  /** The anchor it was checked against, if there was one. */
  readonly anchor?: AuditAnchor;
}

/**
 * Pure: checks that every line chains to the one before it, that no record
 * says the log was found shortened, and, given the anchor, that the log
 * reaches it and its record there is the one the anchor names.
 */
export function checkChain(text: string, anchor?: AnchorState): ChainCheck {
  const lines = text.split('\n').filter((l) => l !== '');
  const records = lines.length;
  const broken = (brokenAt: number, reason: string, seq: number): ChainCheck => ({
    records,
    brokenAt,
    reason,
    intact: false,
    lastSeq: seq,
    ...(anchor && 'seq' in anchor ? { anchor } : {}),
  });
  let prev = GENESIS;
  let seq = 0;
  for (let i = 0; i < lines.length; i++) {
    let r: { seq?: unknown; prev?: unknown; event?: unknown; message?: unknown };
    try {
      r = JSON.parse(lines[i]!) as typeof r;
      if (r === null || typeof r !== 'object' || Array.isArray(r)) throw new Error('not an object');
    } catch {
      const torn = i === lines.length - 1 && !text.endsWith('\n');
      return broken(
        i + 1,
        torn
          ? 'the last line is incomplete (a crash or a short write); the next record written sets it aside'
          : 'the line is not a JSON record',
        seq,
      );
    }
    if (r.prev !== prev || r.seq !== seq + 1) {
      return broken(i + 1, 'the line does not follow the one before it', seq);
    }
    if (r.event === 'audit.anchor-mismatch') {
      return broken(
        i + 1,
        `the record says ${typeof r.message === 'string' ? printable(r.message, 500) : 'the log did not match its anchor'}`,
        seq + 1,
      );
    }
    prev = sha256(lines[i]!);
    seq++;
  }
  if (anchor !== undefined) {
    if (!('seq' in anchor))
      return broken(
        records + 1,
        `the audit anchor is unreadable: ${printable(anchor.unreadable, 500)}`,
        seq,
      );
    if (records === 0)
      return broken(
        1,
        `the log is missing or empty but the anchor says it ended at seq ${anchor.seq}`,
        seq,
      );
    if (anchor.seq > seq)
      return broken(
        records + 1,
        `the log ends at seq ${seq} but the anchor says ${anchor.seq}: records were removed from its end`,
        seq,
      );
    if (sha256(lines[anchor.seq - 1]!) !== anchor.hash)
      return broken(
        anchor.seq,
        `the record at seq ${anchor.seq} is not the one the anchor names: the log was rewritten`,
        seq,
      );
  }
  return { records, intact: true, lastSeq: seq, ...(anchor && 'seq' in anchor ? { anchor } : {}) };
}

/** Strings stored in a record may come from carried-in files: escaped and bounded. */
function bounded(fields: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(fields).map(([k, v]) => [
      k,
      typeof v === 'string' ? printable(v, k === 'message' ? 2000 : 256) : v,
    ]),
  );
}

/** Appends one outcome to this host's audit log, creating its private directories if needed. */
export async function audit(
  config: Config,
  fields: Omit<AuditRecord, 'ts' | 'mvmctlVersion' | 'pid'>,
  now: Date = new Date(),
): Promise<void> {
  await ensurePrivateDir(telemetryDir(config), config.dataDir);
  await ensurePrivateDir(auditAnchorDir(config), config.dataDir);
  await appendAudit(
    auditLogPath(config),
    {
      ts: now.toISOString(),
      ...(bounded(fields) as typeof fields),
      mvmctlVersion: MVMCTL_VERSION,
      pid: process.pid,
    },
    {
      anchorPath: auditAnchorPath(config),
      ...(config.auditSocket ? { sink: config.auditSocket } : {}),
    },
  );
}

export async function readAudit(
  path: string,
): Promise<{ records: AuditRecord[]; unreadable: number }> {
  const text = await readIfPresent(path);
  if (text === undefined) return { records: [], unreadable: 0 };
  const records: AuditRecord[] = [];
  let unreadable = 0;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    try {
      const r = JSON.parse(line) as AuditRecord;
      if (r && typeof r === 'object' && typeof r.outcome === 'string') records.push(r);
      else unreadable++;
    } catch {
      unreadable++;
    }
  }
  return { records, unreadable };
}

export const COUNTER_NAMES: readonly CounterName[] = [
  'dev_image_verify_ok_total',
  'dev_image_verify_sig_invalid_total',
  'dev_image_verify_digest_mismatch_total',
  'dev_image_verify_version_skew_total',
  'dev_image_verify_arch_mismatch_total',
  'dev_image_verify_revoked_total',
  'dev_image_verify_expired_total',
  'dev_image_verify_network_total',
  'dev_image_verify_bypassed_total',
  'dev_image_verify_manifest_invalid_total',
];

/** Histogram buckets for a verification's wall time, in seconds. */
export const DURATION_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

export interface Metrics {
  readonly counters: Readonly<Record<CounterName, number>>;
  readonly durations: readonly number[];
}

/** Pure: the counters and duration samples a list of audit records implies. */
export function metricsFrom(records: readonly AuditRecord[]): Metrics {
  const counters = Object.fromEntries(COUNTER_NAMES.map((n) => [n, 0])) as Record<
    CounterName,
    number
  >;
  const durations: number[] = [];
  for (const r of records) {
    // Only image imports are verifications that pass; a refresh or list import counts only its failures.
    if (r.outcome === 'ok' && r.event === 'dev.import-image') counters.dev_image_verify_ok_total++;
    const counter = r.outcome === 'failed' && r.code ? ERROR_TABLE[r.code]?.counter : undefined;
    if (counter) counters[counter]++;
    if (r.expired) counters.dev_image_verify_expired_total++;
    counters.dev_image_verify_bypassed_total += r.bypassed?.length ?? 0;
    if (typeof r.durationSeconds === 'number') durations.push(r.durationSeconds);
  }
  return { counters, durations };
}

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
