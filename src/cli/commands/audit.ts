import { homedir } from 'node:os';
import { auditLogPath, configFrom } from '../../config.js';
import { isMvmError, MvmError } from '../../errors.js';
import { printable } from '../../core/printable.js';
import { readHostAuditLog } from '../../audit/log-files.js';
import type { ChainCheck } from '../../audit/chain.js';
import { outcomeOf } from '../../audit/tally.js';
import { parseCommand } from '../args.js';
import { jsonLine, type Output } from '../render.js';

/** `mvmctl audit tail`: flags, help and exit codes are its row of src/cli/spec.ts. */
export async function auditTailCommand(args: string[], io: Output): Promise<number> {
  const { values } = parseCommand('audit tail', args);
  const count = values.n === undefined ? 20 : Number(values.n);
  if (!Number.isSafeInteger(count) || count < 0) {
    throw new MvmError('usage', 'audit tail takes -n N (a whole number)', {
      fix: "Run 'mvmctl audit tail --help'.",
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
