import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import { MvmError } from '../errors.js';

/** Flags every command accepts. */
export const COMMON_OPTIONS = {
  json: { type: 'boolean' },
  debug: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

/**
 * Runs node:util parseArgs (strict) and turns its complaint about an unknown
 * flag or a missing value into a usage error naming the flag.
 */
export function asUsageError<T>(command: string, parse: () => T): T {
  try {
    return parse();
  } catch (e) {
    throw new MvmError('usage', `${command}: ${(e as Error).message.split('\n')[0]}`, {
      fix: `Run 'mvmctl ${command} --help' to see its flags.`,
    });
  }
}

/**
 * A command's flags: strict node:util parseArgs over the common flags and the
 * command's own, positionals allowed (each command says how many it takes),
 * a bad flag a usage error naming it.
 */
export function parseFlags<const O extends ParseArgsOptionsConfig>(
  command: string,
  args: string[],
  options: O,
) {
  return asUsageError(command, () =>
    parseArgs({
      args,
      allowPositionals: true,
      strict: true,
      options: { ...COMMON_OPTIONS, ...options },
    }),
  );
}
