/**
 * The append-only audit log (JSON lines): appending, the anchor that tells
 * when it was shortened, size-based rotation, and the external sink.
 * Reading it (whole or incrementally, across rotated files) is
 * src/audit/log-files.ts; the chain check is src/audit/chain.ts; the
 * counters it implies are src/audit/tally.ts.
 *
 * Each record is chained to the one before it (`seq` counts up, `prev` is the
 * SHA-256 of the previous line). Reading the last line and appending the next
 * must not interleave with another writer, so appends run under a lock
 * (src/io/lock.ts); the Prometheus counters of SPEC.md section 6 are computed
 * from the records, not kept beside them, so a counter cannot disagree with
 * the log. Each record carries the uid that ran the command.
 *
 * What the chain proves, and what it does not: an edited, inserted, removed
 * or reordered line breaks it. Records removed from the end, or the whole log
 * deleted, are caught by the anchor (the last seq and hash, rewritten
 * atomically beside the recall memory on every append). Someone with this
 * user's rights who rewrites the log, recomputes every hash and rewrites the
 * anchor too cannot be caught on this host: that is what the external sink
 * (MVM_AUDIT_SOCKET, syslog / the journal) is for, once records have left it.
 *
 * Rotation (see log-files.ts for the layout and why totals travel in a
 * checkpoint record): when audit.jsonl has reached MVM_AUDIT_MAX_BYTES, the
 * next append rotates it, under the same lock, and the new file's first
 * record is the checkpoint, chained to the rotated file's last line.
 */
import { randomBytes } from 'node:crypto';
import { constants, promises as fs } from 'node:fs';
import { basename } from 'node:path';
import { auditLogPath, telemetryDir, type Config } from '../config.js';
import { printable } from '../core/printable.js';
import type { ErrorCode, VerificationCheck } from '../errors.js';
import { MvmError } from '../errors.js';
import { withLock } from '../io/lock.js';
import { runWithInput } from '../io/process.js';
import { ensurePrivateDir } from '../io/secure-dir.js';
import { MVMCTL_VERSION } from '../version.js';
import {
  AUDIT_KEEP,
  auditAnchorDir,
  auditAnchorPath,
  auditMaxBytes,
  checkpointFrom,
  DEFAULT_AUDIT_MAX_BYTES,
  lastLineOf,
  readAnchor,
  rotatedPath,
  shiftRotated,
} from './log-files.js';
import { CHECKPOINT_EVENT, GENESIS, sha256, type AnchorState, type AuditAnchor } from './chain.js';
import { tallyToJson, type Outcome, type TallyJson } from './tally.js';

export {
  AUDIT_KEEP,
  auditAnchorDir,
  auditAnchorPath,
  DEFAULT_AUDIT_MAX_BYTES,
  readAnchor,
  readAuditAnchor,
} from './log-files.js';
import { replaceFile } from '../io/files.js';
export { checkChain, type AnchorState, type AuditAnchor, type ChainCheck } from './chain.js';
export { COUNTER_NAMES, DURATION_BUCKETS, type Outcome } from './tally.js';

export type Bypass = 'cosign' | 'hash';
export type AuditEvent =
  | 'dev.import-image'
  | 'revocations.refresh'
  | 'revocations.import'
  /** mvmctl trust import: a carried TUF trust bundle verified and installed, or refused. */
  | 'trust.import'
  /** A dev VM boot attempt (mvmctl dev up): ok, or failed with the code that stopped it. */
  | 'dev.up'
  /** mvmctl dev fetch / dev pull: a release set fetched and verified on a connected host (failures counted like an import's). */
  | 'dev.fetch'
  /** mvmctl dev rm / dev prune: installed images removed. */
  | 'dev.rm'
  | 'dev.prune'
  /** A last line left incomplete by a crash or short write, set aside. */
  | 'audit.torn-tail'
  /** The log was shorter than the anchor says, missing, or the anchor unreadable. */
  | 'audit.anchor-mismatch'
  /** A record was written here but could not be sent to MVM_AUDIT_SOCKET. */
  | 'audit.sink-failed'
  /** The first record of a file after a rotation: the totals so far (src/audit/log-files.ts). */
  | 'audit.rotated';

export interface AuditRecord {
  readonly ts: string;
  readonly event: AuditEvent;
  /**
   * An import: 'ok' installed and verified; 'bypassed' installed with an
   * escape hatch (UNVERIFIED); 'unchanged' the same verified image was
   * already installed (nothing written); 'failed'. Logs written before this
   * split recorded 'ok' with `bypassed` set for a bypassed install: readers
   * take that as 'bypassed' (outcomeOf, src/audit/tally.ts).
   */
  readonly outcome: Outcome;
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
  /** trust.import: the TUF versions installed and the SHA-256 of the trusted_root.json put in force. */
  readonly trust?: {
    readonly root: number;
    readonly timestamp: number;
    readonly snapshot: number;
    readonly targets: number;
    readonly trustedRootSha256: string;
    readonly freshness: string;
  };
  /** audit.rotated: the rotation's number, the totals of every record before it, the file it follows. */
  readonly rotation?: number;
  readonly totals?: TallyJson;
  readonly previous?: {
    readonly file: string;
    readonly firstSeq: number;
    readonly lastSeq: number;
    readonly records: number;
  };
  /** audit.rotated: the chain was already broken before this rotation (carried forward, never dropped). */
  readonly brokenBefore?: { readonly seq: number; readonly reason: string };
  readonly mvmctlVersion: string;
  readonly pid: number;
  /** The user that ran the command (absent only where the platform has no uids). */
  readonly uid?: number;
  /** Position in the chain (1, 2, …), set when appended. */
  readonly seq?: number;
  /** SHA-256 of the previous line (64 zeros for the first), set when appended. */
  readonly prev?: string;
}

export interface AppendOptions {
  /** Where the anchor is kept (absent: no anchor is checked or written). */
  readonly anchorPath?: string;
  /** A unix socket that receives every record as a syslog message (MVM_AUDIT_SOCKET). */
  readonly sink?: string;
  /** Where warnings go (default: stderr). */
  readonly warn?: (message: string) => void;
  /** Rotate audit.jsonl once it has reached this size (default 16 MiB, MVM_AUDIT_MAX_BYTES). */
  readonly maxBytes?: number;
}

const stderrWarning = (m: string): void =>
  void process.stderr.write(`warning: ${printable(m, 4096)}\n`);

/**
 * Appends one record, chained to the one before it, under the log's lock.
 * Before it, in the same chain: a torn last line is set aside and recorded,
 * a log shorter than its anchor is recorded (so the evidence is not lost
 * when the anchor moves on), and a log that reached its size is rotated, the
 * new file starting with the checkpoint. After it: the anchor is rewritten
 * and the lines are sent to the sink; neither failure loses the local record
 * (a warning, and a sink failure is itself recorded).
 */
export async function appendAudit(
  path: string,
  record: AuditRecord,
  options: AppendOptions = {},
): Promise<void> {
  await appendAuditRecords(path, [record], options);
}

/** appendAudit for several records in one locked append (one fsync): the same chain, the same checks. */
export async function appendAuditRecords(
  path: string,
  records: readonly AuditRecord[],
  options: AppendOptions = {},
): Promise<void> {
  const trigger = records[0];
  if (trigger === undefined) return;
  const warn = options.warn ?? stderrWarning;
  const maxBytes = options.maxBytes ?? DEFAULT_AUDIT_MAX_BYTES;
  await withLock(`${path}.lock`, 'the audit log', async () => {
    let fh = await openLog(path);
    try {
      const tail = await readTail(fh);
      const before: AuditRecord[] = [];
      if (tail.torn) {
        const setAside = await setAsideTornTail(fh, path, tail.end, tail.torn);
        const msg = `the audit log ${path} ended in an incomplete line (${tail.torn.length} bytes, a crash or short write); it was moved to ${setAside} and new records chain on`;
        warn(msg);
        before.push({
          ...systemRecord(trigger, 'audit.torn-tail', msg),
          tornBytes: tail.torn.length,
          tornSha256: sha256(tail.torn),
          tornFile: printable(basename(setAside)),
        });
      }
      // The line the next record chains to: this file's last, or, in a file a
      // rotation has just begun (or a crash interrupted), the rotated file's last.
      let last = tail.last;
      let rotate: 'now' | 'resume' | undefined;
      if (last !== undefined && tail.end >= maxBytes) rotate = 'now';
      else if (tail.end === 0) {
        last = await lastLineOf(rotatedPath(path, 1));
        if (last !== undefined) rotate = 'resume';
      }
      const anchor = options.anchorPath ? await readAnchor(options.anchorPath) : undefined;
      // An unreadable last line (the chain check names it) cannot say where it was: the anchor can.
      let seq =
        last === undefined ? 0 : (lastSeq(last) ?? (anchor && 'seq' in anchor ? anchor.seq : 0));
      let prev = last === undefined ? GENESIS : sha256(last);
      const mismatch = anchorMismatch(anchor, seq, prev);
      if (mismatch) {
        const msg = `${mismatch.text}; recorded, and new records chain on`;
        warn(msg);
        before.push({
          ...systemRecord(trigger, 'audit.anchor-mismatch', mismatch.text),
          logSeq: seq,
          ...(mismatch.anchorSeq === undefined ? {} : { anchorSeq: mismatch.anchorSeq }),
        });
      }
      if (rotate === 'now') {
        await fh.close();
        await shiftRotated(path);
        fh = await openLog(path);
      }
      if (rotate) before.unshift(await checkpointRecord(path, trigger, tail.end, maxBytes));
      const lines: string[] = [];
      for (const r of [...before, ...records]) {
        const line = JSON.stringify({ ...r, seq: ++seq, prev });
        lines.push(line);
        prev = sha256(line);
      }
      await appendLines(fh, path, lines);
      if (options.anchorPath)
        await writeAnchorOrWarn(options.anchorPath, { seq, hash: prev }, warn);
      if (options.sink) {
        const failure = await sendToSink(options.sink, lines, trigger.pid);
        if (failure) {
          const msg = `the audit record was written to ${path} but not sent to ${options.sink}: ${failure}`;
          warn(msg);
          // Recorded here only: the collector sees the gap in seq.
          const line = JSON.stringify({
            ...systemRecord(trigger, 'audit.sink-failed', printable(msg, 2000)),
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

async function openLog(path: string): Promise<fs.FileHandle> {
  try {
    return await fs.open(
      path,
      constants.O_RDWR | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW,
      0o600,
    );
  } catch (e) {
    throw storeError(`Cannot open the audit log ${path}`, e);
  }
}

/** The first record of a new file: what the rotated file and everything before it counted. */
async function checkpointRecord(
  path: string,
  trigger: AuditRecord,
  rotatedBytes: number,
  maxBytes: number,
): Promise<AuditRecord> {
  const c = await checkpointFrom(rotatedPath(path, 1));
  // eslint-disable-next-line @typescript-eslint/no-unused-vars -- a checkpoint is no failure: no code
  const { code, ...stamp } = systemRecord(
    trigger,
    CHECKPOINT_EVENT,
    `${basename(path)} was rotated to ${c.previous.file}${rotatedBytes ? ` at ${rotatedBytes} bytes (limit ${maxBytes}, MVM_AUDIT_MAX_BYTES)` : ''}; ${AUDIT_KEEP} rotated files are kept, and the totals of every record before this one are carried here`,
  );
  return {
    ...stamp,
    outcome: 'ok',
    rotation: c.rotation,
    totals: tallyToJson(c.totals),
    previous: c.previous,
    ...(c.brokenBefore ? { brokenBefore: c.brokenBefore } : {}),
  };
}

/** A record the log writes about itself, stamped like the record that triggered it. */
function systemRecord(
  trigger: AuditRecord,
  event: 'audit.torn-tail' | 'audit.anchor-mismatch' | 'audit.sink-failed' | 'audit.rotated',
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
    ...(trigger.uid === undefined ? {} : { uid: trigger.uid }),
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

/** temp + fsync + rename: the anchor is the old one or the new one, never a partial one. */
async function writeAnchorOrWarn(
  path: string,
  anchor: AuditAnchor,
  warn: (m: string) => void,
): Promise<void> {
  try {
    await replaceFile(
      path,
      `${JSON.stringify({ seq: anchor.seq, hash: anchor.hash, ts: new Date().toISOString() })}\n`,
      { mode: 0o600, sync: true },
    );
  } catch (e) {
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
  fields: Omit<AuditRecord, 'ts' | 'mvmctlVersion' | 'pid' | 'uid'>,
  now: Date = new Date(),
): Promise<void> {
  const uid = process.getuid?.();
  await ensurePrivateDir(telemetryDir(config), config.dataDir);
  await ensurePrivateDir(auditAnchorDir(config), config.dataDir);
  await appendAudit(
    auditLogPath(config),
    {
      ts: now.toISOString(),
      ...(bounded(fields) as typeof fields),
      mvmctlVersion: MVMCTL_VERSION,
      pid: process.pid,
      ...(uid === undefined ? {} : { uid }),
    },
    {
      anchorPath: auditAnchorPath(config),
      maxBytes: auditMaxBytes(process.env),
      ...(config.auditSocket ? { sink: config.auditSocket } : {}),
    },
  );
}
