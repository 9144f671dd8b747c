import { promises as fs } from 'node:fs';
import { homedir } from 'node:os';
import { parseArgs } from 'node:util';
import { auditLogPath, configFrom } from '../../config.js';
import { MvmError } from '../../errors.js';
import { checkChain } from '../../telemetry/audit.js';
import { asUsageError, COMMON_OPTIONS } from '../args.js';
import type { Output } from '../render.js';

export const AUDIT_HELP = `Usage: mvmctl audit tail [-n N] [--json]

Print the last N records (default 20) of this host's audit log
(~/.mvm/telemetry/audit.jsonl): every verification outcome, success included.
Records are hash-chained; the whole log is checked, and an edited, removed or
reordered record makes the command exit 10 naming the first broken line.
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
  const { values, positionals } = asUsageError('audit tail', () =>
    parseArgs({
      args: rest,
      allowPositionals: true,
      strict: true,
      options: { ...COMMON_OPTIONS, n: { type: 'string', short: 'n' } },
    }),
  );
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
  const path = auditLogPath(configFrom(process.env, homedir()));
  const text = await fs.readFile(path, 'utf8').catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return '';
    throw new MvmError('store', `Cannot read the audit log ${path}`, { cause: e.message });
  });
  const lines = text.split('\n').filter((l) => l !== '');
  const tail = count === 0 ? [] : lines.slice(-count);
  const chain = checkChain(text);
  if (values.json) {
    io.out(
      JSON.stringify({
        path,
        records: chain.records,
        chain: chain.brokenAt
          ? { intact: false, brokenAt: chain.brokenAt, reason: chain.reason }
          : { intact: true },
        tail: tail.map((l) => {
          try {
            return JSON.parse(l);
          } catch {
            return { unreadable: l };
          }
        }),
      }),
    );
  } else {
    for (const l of tail) {
      try {
        const r = JSON.parse(l) as Record<string, unknown>;
        io.out(
          `${r['ts']}  ${String(r['event']).padEnd(19)} ${String(r['outcome']).padEnd(6)} ${r['code'] ? `${r['code']} ` : ''}${r['version'] ? `v${r['version']} ` : ''}${r['message'] ?? ''}`.trimEnd(),
        );
      } catch {
        io.out(`(unreadable) ${l.slice(0, 200)}`);
      }
    }
    io.err(
      chain.brokenAt
        ? `chain: BROKEN at line ${chain.brokenAt} of ${chain.records}`
        : `chain: intact (${chain.records} records) ${path}`,
    );
  }
  if (chain.brokenAt) {
    throw new MvmError(
      'tampered',
      `The audit log ${path} does not chain at line ${chain.brokenAt}: ${chain.reason}`,
      {
        cause: 'a record was edited, removed or reordered after it was written',
      },
    );
  }
  return 0;
}
