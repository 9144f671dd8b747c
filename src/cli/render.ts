import { isMvmError, MvmError } from '../errors.js';

export interface Output {
  out(text: string): void;
  err(text: string): void;
}

export const stdio: Output = {
  out: (t) => process.stdout.write(t.endsWith('\n') ? t : `${t}\n`),
  err: (t) => process.stderr.write(t.endsWith('\n') ? t : `${t}\n`),
};

/**
 * Renders an error and returns the exit code. Human form: the message on the
 * first line (where the seed's wording lives), then cause and fix; no stack
 * trace unless --debug. JSON form: one object on stdout.
 */
export function renderError(
  e: unknown,
  opts: { json: boolean; debug: boolean },
  io: Output = stdio,
): number {
  const err = isMvmError(e)
    ? e
    : new MvmError('internal', `unexpected error: ${(e as Error)?.message ?? String(e)}`, {
        underlying: e,
      });
  if (opts.json) {
    io.out(JSON.stringify({ error: err.toJSON() }));
  } else {
    const lines = [`Error: ${err.message}`];
    if (err.check) lines.push(`  check: ${err.check}`);
    if (err.cause) lines.push(`  cause: ${err.cause}`);
    lines.push(`  fix:   ${err.fix}`);
    io.err(lines.join('\n'));
  }
  if (opts.debug) {
    const u = err.underlying ?? err;
    io.err(`debug: ${(u as Error)?.stack ?? String(u)}`);
  }
  return err.exitCode;
}
