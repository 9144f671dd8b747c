import { constants, promises as fs } from 'node:fs';
import { homedir } from 'node:os';
import { auditLogPath, configFrom } from '../../config.js';
import { MvmError } from '../../errors.js';
import { printable } from '../../core/printable.js';
import { checkChain, readAuditAnchor, type ChainCheck } from '../../telemetry/audit.js';
import { parseFlags } from '../args.js';
import { jsonLine, type Output } from '../render.js';

export const AUDIT_HELP = `Usage: mvmctl audit tail [-n N] [--json]

Print the last N records (default 20) of this host's audit log
(~/.mvm/telemetry/audit.jsonl): every verification outcome, success included.
Records are hash-chained; the whole log is checked, and an edited, removed or
reordered record makes the command exit 10 naming the first broken line.
--json prints one document, also when the chain is broken:
  {"path", "records": N, "chain": {"intact": true|false, "brokenAt", "reason"},
   "tail": [...], "error": {...} (only when broken)}

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
  const text = await fs
    .readFile(path, { encoding: 'utf8', flag: constants.O_RDONLY | constants.O_NOFOLLOW })
    .catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return '';
      throw new MvmError('store', `Cannot read the audit log ${path}`, {
        cause: e.message,
        underlying: e,
      });
    });
  const lines = text.split('\n').filter((l) => l !== '');
  const tail = count === 0 ? [] : lines.slice(-count);
  // The anchor outside the log tells a log shortened or deleted from an intact one.
  const chain = chainState(checkChain(text, await readAuditAnchor(config)));
  // Broken or not, the outcome is one document (--json) or one error (human): never both.
  const broken = chain.intact
    ? undefined
    : new MvmError(
        'tampered',
        `The audit log ${path} does not chain${chain.brokenAt === undefined ? '' : ` at line ${chain.brokenAt}`}: ${chain.reason ?? 'the chain check failed'}`,
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
  for (const l of tail) io.out(humanLine(l));
  io.err(
    broken
      ? `chain: BROKEN${chain.brokenAt === undefined ? '' : ` at line ${chain.brokenAt}`} of ${chain.records}`
      : `chain: intact (${chain.records} records) ${printable(path)}`,
  );
  if (broken) throw broken;
  return 0;
}

/** One record as a line of text; every field came from a file anyone with the user's rights can write. */
function humanLine(line: string): string {
  let r: Record<string, unknown>;
  try {
    const parsed = JSON.parse(line) as unknown;
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error();
    r = parsed as Record<string, unknown>;
  } catch {
    return `(unreadable) ${printable(line, 200)}`;
  }
  const field = (k: string, width = 0): string =>
    printable(r[k] === undefined ? '' : String(r[k] as string), 200).padEnd(width);
  const code = r['code'] ? `${field('code')} ` : '';
  const version = r['version'] ? `v${field('version')} ` : '';
  return `${field('ts')}  ${field('event', 19)} ${field('outcome', 6)} ${code}${version}${printable(String((r['message'] as string | undefined) ?? ''))}`.trimEnd();
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
