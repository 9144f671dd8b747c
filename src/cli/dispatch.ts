/**
 * From argv to a command of the table: the words that name it (aliases
 * included), whether help was asked for, and what is left for its flags.
 * Unknown words are usage errors with the nearest command named.
 */
import { printable } from '../core/printable.js';
import { MvmError } from '../errors.js';
import { closest, didYouMean, tokensOf } from './args.js';
import { commandHelp, mainHelp } from './help.js';
import {
  childrenOf,
  COMMANDS,
  flagsOf,
  GLOBAL_FLAGS,
  namesOf,
  type CommandKey,
  type CommandSpec,
} from './spec.js';

export type Target =
  | { kind: 'help'; text: string; exit: number }
  /** `path` is the command as typed (dev shell), the table's key being dev console. */
  | { kind: 'run'; key: CommandKey; path: string; args: string[] };

const isHelpFlag = (a: string | undefined): boolean => a === '--help' || a === '-h';

/** The command the leading words of `words` name, and how many words that took. */
function walk(words: string[]): { key: CommandKey | undefined; path: string; used: number } {
  let key: CommandKey | undefined;
  let path = '';
  let used = 0;
  for (const word of words) {
    const child = childrenOf(key ?? '').find((k) => namesOf(k).includes(word));
    if (child === undefined) break;
    key = child;
    path = path === '' ? word : `${path} ${word}`;
    used++;
  }
  return { key, path, used };
}

function unknown(parent: CommandKey | undefined, word: string): MvmError {
  const names = childrenOf(parent ?? '').flatMap(namesOf);
  const guess = closest(word, names);
  const where = parent ? `${parent} ` : '';
  return new MvmError(
    'usage',
    `unknown command ${JSON.stringify(printable(`${where}${word}`, 100))}${guess ? ` (did you mean ${where}${guess}?)` : ''}`,
    { fix: `Run 'mvmctl ${where}--help' to list the commands.` },
  );
}

/** Whether --help or -h is among a command's flags (not a flag's value, not after --). */
function wantsHelp(key: CommandKey, args: string[]): boolean {
  return tokensOf(flagsOf(key), args).some((t) => t.kind === 'option' && t.name === 'help');
}

export function resolveCommand(input: string[]): Target {
  // --json and --debug before the command (mvmctl --json dev images) count as its own.
  const leading = input.findIndex((a) => a !== '--json' && a !== '--debug');
  const argv = leading > 0 ? [...input.slice(leading), ...input.slice(0, leading)] : [...input];
  const [first, ...rest] = argv;
  if (first === undefined) return { kind: 'help', text: mainHelp(), exit: 2 };
  if (isHelpFlag(first)) return { kind: 'help', text: mainHelp(), exit: 0 };
  if (first === 'help') {
    if (rest.length === 0) return { kind: 'help', text: mainHelp(), exit: 0 };
    const { key, used } = walk(rest);
    if (key === undefined || used < rest.length) throw unknown(key, rest[used]!);
    return { kind: 'help', text: commandHelp(key), exit: 0 };
  }
  const { key, path, used } = walk(argv);
  if (key === undefined) {
    if (first.startsWith('-')) {
      const guess = didYouMean(first, GLOBAL_FLAGS);
      throw new MvmError(
        'usage',
        `unknown flag ${printable(first, 100)} for mvmctl${guess ? ` (did you mean ${guess}?)` : ''}`,
        { fix: "Run 'mvmctl --help': flags go after the command (mvmctl dev fetch --help)." },
      );
    }
    throw unknown(undefined, first);
  }
  const spec: CommandSpec = COMMANDS[key];
  const args = argv.slice(used);
  if (spec.group) {
    const [next] = args;
    if (isHelpFlag(next)) return { kind: 'help', text: commandHelp(key), exit: 0 };
    if (next !== undefined && !next.startsWith('-')) throw unknown(key, next);
    return { kind: 'help', text: commandHelp(key), exit: 2 };
  }
  if (wantsHelp(key, args)) return { kind: 'help', text: commandHelp(key), exit: 0 };
  return { kind: 'run', key, path, args };
}
