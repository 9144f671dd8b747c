/**
 * The append-only audit log (JSON lines) and the counters derived from it.
 *
 * Every verification outcome is one line, written with a single O_APPEND
 * write, so concurrent processes never interleave or lose a record. The
 * Prometheus counters of SPEC.md section 6 are computed from these records,
 * not kept beside them: a counter can never disagree with the audit trail,
 * and no lock or read-modify-write is needed.
 */
import { createHash } from 'node:crypto';
import { constants, promises as fs } from 'node:fs';
import { withLock } from '../io/lock.js';
import { auditLogPath, telemetryDir, type Config } from '../config.js';
import { ensurePrivateDir } from '../store/secure-dir.js';
import { MVMCTL_VERSION } from '../version.js';
import type { CounterName, ErrorCode, VerificationCheck } from '../errors.js';
import { ERROR_TABLE } from '../errors.js';

export type Bypass = 'cosign' | 'hash';
export type AuditEvent = 'dev.import-image' | 'revocations.refresh' | 'revocations.import';

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
  readonly mvmctlVersion: string;
  readonly pid: number;
  /** Position in the chain (1, 2, …), set when appended. */
  readonly seq?: number;
  /** SHA-256 of the previous line (64 zeros for the first), set when appended. */
  readonly prev?: string;
}

/**
 * Appends one record, chained to the one before it: `seq` counts up and `prev`
 * is the SHA-256 of the previous line, so an edited, removed or reordered line
 * shows (`mvmctl audit tail`). The chaining read-and-append runs under a lock
 * file; the append itself is one O_APPEND write.
 */
export async function appendAudit(path: string, record: AuditRecord): Promise<void> {
  await withLock(`${path}.lock`, 'the audit log', async () => {
    const fh = await fs.open(
      path,
      constants.O_RDWR | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW,
      0o600,
    );
    try {
      const last = await lastLine(fh);
      const seq = last ? ((JSON.parse(last) as { seq?: number }).seq ?? 0) + 1 : 1;
      const prev = last ? sha256(last) : GENESIS;
      await fh.write(`${JSON.stringify({ ...record, seq, prev })}\n`);
    } finally {
      await fh.close();
    }
  });
}

const GENESIS = '0'.repeat(64);
const sha256 = (line: string): string => createHash('sha256').update(line).digest('hex');

/** The file's last complete line, read from its end. */
async function lastLine(fh: fs.FileHandle): Promise<string | undefined> {
  const { size } = await fh.stat();
  if (size === 0) return undefined;
  for (let window = 64 * 1024; ; window *= 4) {
    const start = Math.max(0, size - window);
    const buf = Buffer.alloc(size - start);
    await fh.read(buf, 0, buf.length, start);
    const text = buf.toString('utf8').replace(/\n$/, '');
    const nl = text.lastIndexOf('\n');
    if (nl >= 0 || start === 0) return text.slice(nl + 1);
  }
}

export interface ChainCheck {
  readonly records: number;
  /** 1-based line number of the first line that does not chain to the one before, if any. */
  readonly brokenAt?: number;
  readonly reason?: string;
}

/** Pure: checks that every line chains to the one before it. */
export function checkChain(text: string): ChainCheck {
  const lines = text.split('\n').filter((l) => l !== '');
  let prev = GENESIS;
  let seq = 0;
  for (let i = 0; i < lines.length; i++) {
    let r: { seq?: unknown; prev?: unknown };
    try {
      r = JSON.parse(lines[i]!) as typeof r;
    } catch {
      return { records: lines.length, brokenAt: i + 1, reason: 'the line is not JSON' };
    }
    if (r.prev !== prev || r.seq !== seq + 1) {
      return {
        records: lines.length,
        brokenAt: i + 1,
        reason: 'the line does not follow the one before it',
      };
    }
    prev = sha256(lines[i]!);
    seq++;
  }
  return { records: lines.length };
}

/** Appends one outcome to this host's audit log, creating its private directory if needed. */
export async function audit(
  config: Config,
  fields: Omit<AuditRecord, 'ts' | 'mvmctlVersion' | 'pid'>,
  now: Date = new Date(),
): Promise<void> {
  await ensurePrivateDir(telemetryDir(config), config.dataDir);
  await appendAudit(auditLogPath(config), {
    ts: now.toISOString(),
    ...fields,
    ...(fields.message ? { message: fields.message.slice(0, 2000) } : {}),
    mvmctlVersion: MVMCTL_VERSION,
    pid: process.pid,
  });
}

export async function readAudit(
  path: string,
): Promise<{ records: AuditRecord[]; unreadable: number }> {
  let text: string;
  try {
    text = await fs.readFile(path, {
      encoding: 'utf8',
      flag: constants.O_RDONLY | constants.O_NOFOLLOW,
    });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { records: [], unreadable: 0 };
    throw e;
  }
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
