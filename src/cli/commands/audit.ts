import { homedir } from 'node:os';
import { auditLogPath, configFrom } from '../../config.js';
import { isMvmError, MvmError } from '../../errors.js';
import { printable } from '../../core/printable.js';
import { readHostAuditLog } from '../../telemetry/audit-log.js';
import type { ChainCheck } from '../../telemetry/chain.js';
import { outcomeOf } from '../../telemetry/tally.js';
import { parseFlags } from '../args.js';
import { jsonLine, type Output } from '../render.js';

export const AUDIT_HELP = `Usage: mvmctl audit tail [-n N] [--json]

Print the last N records (default 20) of this host's audit log
(~/.mvm/telemetry/audit.jsonl and its rotated files): every verification
outcome, success included, one per line in aligned columns:
  TIME SEQ UID EVENT OUTCOME CODE WHAT VERSION MESSAGE
UID is the user that ran the command. OUTCOME of an import is ok (verified and
installed), unchanged (verified, already installed: nothing written), bypassed
(installed with an escape hatch: UNVERIFIED) or failed; WHAT says it in words:
install, install,EXPIRED (past not_after), unchanged-re-import,
UNVERIFIED-install(skip:cosign|hash), or the check that failed. An empty cell is
"-"; only MESSAGE has spaces.

Records are hash-chained; the whole log is checked, across its rotated files,
and an edited, removed or reordered record makes the command exit 10 naming
the file and its first broken line.
--json prints one document, also when the chain is broken:
  {"path", "records": N, "chain": {"intact": true|false, "brokenAt", "file", "reason"},
   "tail": [...], "error": {...} (only when broken)}
'status' and 'metrics' report a broken chain too (mvm_audit_chain_valid 0).

Rotation: once audit.jsonl has reached MVM_AUDIT_MAX_BYTES (default 16 MiB), the
next record starts a new file; audit.jsonl.1 is the newest rotated file and 5
are kept (older ones are deleted). The new file's first record (audit.rotated)
chains to the last record of the file before it and carries the totals of
every record before it, so the counters stay exact when old files are deleted,
and a chain broken before a rotation stays reported after it.

What the chain proves: the last sequence number and hash are also kept in an
anchor outside the log, so a record edited, reordered or removed, and a log
shortened or deleted, show, unless both are rewritten. It does not prove the
log genuine: a local writer with your privileges can rewrite the log and its
anchor together. Shipping each record off the host as it is written (set
MVM_AUDIT_SOCKET to a syslog / journal socket, e.g. /dev/log) is what defends
against that.
`;

export async function auditCommand(args: string[], io: Output): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === '--help' || sub === '-h') {
    io.out(AUDIT_HELP);
    return sub === undefined ? 2 : 0;
  }
  if (sub !== 'tail')
    throw new MvmError('usage', `unknown command "audit ${sub}"`, {
      fix: "Run 'mvmctl audit --help'.",
    });
  const { values, positionals } = parseFlags('audit tail', rest, {
    n: { type: 'string', short: 'n' },
  });
  if (values.help) {
    io.out(AUDIT_HELP);
    return 0;
  }
  const count = values.n === undefined ? 20 : Number(values.n);
  if (positionals.length || !Number.isSafeInteger(count) || count < 0) {
    throw new MvmError('usage', 'audit tail takes -n N (a whole number) and no other argument', {
      fix: "Run 'mvmctl audit --help'.",
    });
  }
  const config = configFrom(process.env, homedir());
  const path = auditLogPath(config);
  // Every kept file (rotated ones too), the chain followed across them and checked against the
  // anchor outside the log, which tells a log shortened or deleted from an intact one.
  const log = await readHostAuditLog(config, { tail: count, partial: 'consume' }).catch(
    (e: unknown) => {
      if (isMvmError(e)) throw e;
      throw new MvmError('store', `Cannot read the audit log ${path}`, {
        cause: (e as Error)?.message ?? String(e),
        underlying: e,
      });
    },
  );
  const tail = count === 0 ? [] : log.tail;
  const chain = chainState(log.check);
  const brokenPath = log.brokenPath ?? path;
  // Broken or not, the outcome is one document (--json) or one error (human): never both.
  const broken = chain.intact
    ? undefined
    : new MvmError(
        'tampered',
        `The audit log ${brokenPath} does not chain${chain.brokenAt === undefined ? '' : ` at line ${chain.brokenAt}`}: ${chain.reason ?? 'the chain check failed'}`,
        {
          cause:
            'a record was edited, inserted, removed or reordered, or the log shortened or deleted, after it was written',
        },
      );
  if (values.json) {
    io.out(
      jsonLine({
        path,
        records: chain.records,
        chain: chain.json,
        tail: tail.map((l) => {
          try {
            return JSON.parse(l) as unknown;
          } catch {
            return { unreadable: l };
          }
        }),
        ...(broken ? { error: broken.toJSON() } : {}),
      }),
    );
    return broken ? broken.exitCode : 0;
  }
  if (tail.length) io.out(renderTable(tail));
  io.err(
    broken
      ? `chain: BROKEN${chain.brokenAt === undefined ? '' : ` at line ${chain.brokenAt}`} of ${chain.records}`
      : `chain: intact (${chain.records} records) ${printable(path)}`,
  );
  if (broken) throw broken;
  return 0;
}

const COLUMNS = ['TIME', 'SEQ', 'UID', 'EVENT', 'OUTCOME', 'CODE', 'WHAT', 'VERSION'] as const;

/**
 * The records as aligned columns (two spaces apart, `-` for an empty cell,
 * no spaces inside a cell), the message last; a line that is not a record is
 * shown escaped. Every field came from a file anyone with the user's rights
 * can write: all of it goes through printable().
 */
function renderTable(lines: string[]): string {
  const rows = lines.map((l): string[] | string => {
    let r: Record<string, unknown>;
    try {
      const parsed = JSON.parse(l) as unknown;
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error();
      r = parsed as Record<string, unknown>;
    } catch {
      return `(unreadable) ${printable(l, 200)}`;
    }
    const cell = (v: unknown): string => {
      const t = v === undefined || v === null || v === '' ? '-' : printable(String(v), 120);
      return t.replace(/ /g, '_');
    };
    return [
      cell(r['ts']),
      cell(r['seq']),
      cell(r['uid']),
      cell(r['event']),
      cell(outcomeOf(r)),
      cell(r['code']),
      cell(what(r)),
      cell(r['version'] === undefined ? undefined : `v${String(r['version'] as string)}`),
      printable(String((r['message'] as string | undefined) ?? '')),
    ];
  });
  const widths = COLUMNS.map((h, i) =>
    Math.max(h.length, ...rows.map((r) => (typeof r === 'string' ? 0 : r[i]!.length))),
  );
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i < widths.length ? c.padEnd(widths[i]!) : c))
      .join('  ')
      .trimEnd();
  return [
    line([...COLUMNS, 'MESSAGE']),
    ...rows.map((r) => (typeof r === 'string' ? r : line(r))),
  ].join('\n');
}

/**
 * What an import's outcome was, in the operator's words: an install, an
 * unchanged re-import, an expired install, an UNVERIFIED install (and which
 * escape hatch); the check that failed; a boot; a rotation.
 */
function what(r: Record<string, unknown>): string | undefined {
  const outcome = outcomeOf(r);
  const event = r['event'];
  const expired = r['expired'] === true ? ',EXPIRED' : '';
  if (event === 'dev.import-image') {
    const hatches = Array.isArray(r['bypassed']) ? (r['bypassed'] as unknown[]).map(String) : [];
    if (outcome === 'ok') return `install${expired}`;
    if (outcome === 'unchanged') return `unchanged-re-import${expired}`;
    if (outcome === 'bypassed')
      return `UNVERIFIED-install(skip:${hatches.join('+') || '?'})${expired}`;
  }
  if (event === 'dev.up' && outcome !== 'failed') return 'boot';
  if (event === 'audit.rotated') return `rotation-${String(r['rotation'] as number)}`;
  if (outcome === 'failed' && r['check'] !== undefined)
    return `check:${String(r['check'] as string)}`;
  return undefined;
}

interface ChainState {
  readonly intact: boolean;
  readonly records: number;
  readonly brokenAt?: number;
  readonly reason?: string;
  /** What --json prints as `chain`. */
  readonly json: Record<string, unknown>;
}

/**
 * The chain check's verdict, read tolerantly: fields the check adds later
 * (an explicit `intact`, anchor details, warnings) are carried into the JSON
 * of a broken chain; an intact one reads `{ "intact": true }`.
 */
function chainState(check: ChainCheck): ChainState {
  const { records, brokenAt, reason, ...extra } = check as ChainCheck & Record<string, unknown>;
  const explicit = (extra as { intact?: unknown }).intact;
  const intact =
    typeof explicit === 'boolean' ? explicit && brokenAt === undefined : brokenAt === undefined;
  return {
    intact,
    records,
    ...(brokenAt === undefined ? {} : { brokenAt }),
    ...(reason === undefined ? {} : { reason }),
    json: intact
      ? { intact: true }
      : {
          ...extra,
          intact: false,
          ...(brokenAt === undefined ? {} : { brokenAt }),
          ...(reason === undefined ? {} : { reason }),
        },
  };
}
