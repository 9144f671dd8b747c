import { isMvmError, MvmError } from '../errors.js';
import { printable } from '../core/printable.js';

export interface Output {
  out(text: string): void;
  err(text: string): void;
}

export const stdio: Output = {
  out: (t) => process.stdout.write(t.endsWith('\n') ? t : `${t}\n`),
  err: (t) => process.stderr.write(t.endsWith('\n') ? t : `${t}\n`),
};

/** A size for people: "512 B", "1.4 MiB", "50 MiB", "2.0 GiB". */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
}

/** Long enough for any path (PATH_MAX) a message quotes; bounded all the same. */
const MESSAGE_LENGTH = 4096;

// JSON.stringify escapes C0 controls in strings but leaves DEL, C1 controls, bidi controls and
// the line/paragraph separators raw: a terminal showing the JSON would still act on them.
const JSON_UNSAFE = /[\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/gu;

/**
 * One line of JSON that is safe on a terminal: the same value (it parses back
 * to exactly what was given), with every character a terminal could act on
 * written as a \u escape. JSON output of every command goes through here.
 */
export function jsonLine(value: unknown): string {
  return JSON.stringify(value).replace(
    JSON_UNSAFE,
    (c) => `\\u${c.codePointAt(0)!.toString(16).padStart(4, '0')}`,
  );
}

/** What an unexpected throw says, whatever was thrown; never throws itself. */
function describeThrown(e: unknown): string {
  try {
    const message: unknown = e instanceof Error ? e.message : (e as { message?: unknown })?.message;
    if (typeof message === 'string') return message;
    return typeof e === 'object' && e !== null && !(e instanceof Error)
      ? Object.prototype.toString.call(e)
      : String(e);
  } catch {
    return 'an exception that cannot be described';
  }
}

function stackOf(u: unknown): string {
  try {
    const stack: unknown = (u as Error)?.stack;
    return typeof stack === 'string' ? stack : describeThrown(u);
  } catch {
    return describeThrown(u);
  }
}

/**
 * Renders an error and returns the exit code. Human form: the message on the
 * first line (where the seed's wording lives), then cause and fix; no stack
 * trace unless --debug. JSON form: one object on stdout. Messages quote text
 * from carried-in files (file names, bundle and manifest fields), so every
 * field is shown through printable(): a crafted value cannot clear the
 * screen, set the window title or forge a line.
 */
export function renderError(
  e: unknown,
  opts: { json: boolean; debug: boolean; exit?: (err: MvmError) => number },
  io: Output = stdio,
): number {
  const err = isMvmError(e)
    ? e
    : new MvmError('internal', `unexpected error: ${describeThrown(e)}`, { underlying: e });
  // A command with exit statuses of its own (dev exec: the guest's) maps its failures itself.
  const exit = opts.exit ? opts.exit(err) : err.exitCode;
  if (opts.json) {
    io.out(jsonLine({ error: { ...err.toJSON(), exitCode: exit } }));
  } else {
    const lines = [`Error: ${printable(err.message, MESSAGE_LENGTH)}`];
    if (err.check) lines.push(`  check: ${printable(err.check)}`);
    if (err.cause) lines.push(`  cause: ${printable(err.cause, MESSAGE_LENGTH)}`);
    lines.push(`  fix:   ${printable(err.fix)}`);
    io.err(lines.join('\n'));
  }
  if (opts.debug) {
    // The trace's own lines stay lines; whatever the message quoted is escaped within them.
    const trace = stackOf(err.underlying ?? err)
      .split('\n')
      .map((l) => printable(l, MESSAGE_LENGTH));
    io.err(`debug: ${trace.join('\n')}`);
  }
  return exit;
}
