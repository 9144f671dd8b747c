import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import { printable } from '../core/printable.js';
import { MvmError } from '../errors.js';
import { COMMANDS, flagsOf, type CommandKey, type CommandSpec, type FlagSpec } from './spec.js';

type ValueOf<F> = F extends { readonly type: 'boolean' }
  ? boolean
  : F extends { readonly multiple: true }
    ? string[]
    : string;

/** The values of a command's flags, typed from its row of the table. */
export type FlagValues<Fs extends readonly FlagSpec[]> = {
  -readonly [F in Fs[number] as F['name']]?: ValueOf<F>;
} & { json?: boolean; debug?: boolean; help?: boolean };

export interface Parsed<V> {
  values: V;
  positionals: string[];
}

/**
 * A command's flags as the table declares them: values typed from its row,
 * every mistake a usage error in mvmctl's own words (exit 2), operands
 * refused for a command that declares none.
 */
export function parseCommand<K extends CommandKey>(
  key: K,
  args: string[],
): Parsed<FlagValues<(typeof COMMANDS)[K]['flags']>> {
  const parsed = parseWith(`mvmctl ${key}`, flagsOf(key), args);
  const spec: CommandSpec = COMMANDS[key];
  if ((spec.operands ?? []).length === 0 && parsed.positionals.length > 0) {
    throw new MvmError(
      'usage',
      `mvmctl ${key} takes no arguments (got ${JSON.stringify(printable(parsed.positionals[0]!, 100))})`,
      { fix: `Give each value with its flag; run 'mvmctl ${key} --help' to see them.` },
    );
  }
  return parsed as Parsed<FlagValues<(typeof COMMANDS)[K]['flags']>>;
}

const flagName = (f: FlagSpec): string => (f.name.length === 1 ? `-${f.name}` : `--${f.name}`);

const shown = (s: string): string => JSON.stringify(printable(s, 100));

/** The arguments as parseArgs tokens (flags, values, positionals), nothing checked yet. */
export function tokensOf(flags: readonly FlagSpec[], args: string[]) {
  const options: ParseArgsOptionsConfig = {};
  for (const f of flags) {
    options[f.name] = {
      type: f.type,
      ...(f.short ? { short: f.short } : {}),
      ...(f.multiple ? { multiple: true } : {}),
    };
  }
  return parseArgs({ args, options, strict: false, allowPositionals: true, tokens: true }).tokens;
}

/**
 * node:util parseArgs, not strict, for its tokens; every check is made here
 * against the table, so no message of the parser's own reaches the operator.
 */
function parseWith(
  command: string,
  flags: readonly FlagSpec[],
  args: string[],
): Parsed<Record<string, unknown>> {
  const tokens = tokensOf(flags, args);
  const byName = new Map(flags.map((f) => [f.name, f]));
  const values: Record<string, unknown> = {};
  const positionals: string[] = [];
  const help = `Run '${command} --help' to see its flags.`;
  for (const t of tokens) {
    if (t.kind === 'positional') {
      positionals.push(t.value);
      continue;
    }
    if (t.kind !== 'option') continue;
    const f = byName.get(t.name);
    const raw = printable(t.rawName, 100);
    if (!f) {
      const guess = didYouMean(t.rawName, flags);
      throw new MvmError(
        'usage',
        `unknown flag ${raw} for ${command}${guess ? ` (did you mean ${guess}?)` : ''}`,
        { fix: help },
      );
    }
    const name = flagName(f);
    if (f.type === 'boolean') {
      if (t.value !== undefined) {
        throw new MvmError('usage', `${name} takes no value (got ${shown(t.value)})`, {
          fix: `Write ${name} alone to turn it on, or leave it out. ${help}`,
        });
      }
      values[f.name] = true;
      continue;
    }
    const placeholder = f.value ?? (f.choices ? f.choices.join('|') : 'VALUE');
    // A value that looks like a flag is the next flag, not this one's value (as strict parseArgs rules).
    if (t.value === undefined || (!t.inlineValue && t.value.startsWith('-') && t.value !== '-')) {
      throw new MvmError('usage', `${name} needs a value (${placeholder})`, {
        ...(t.value !== undefined
          ? { cause: `${shown(t.value)} after it is read as the next flag` }
          : {}),
        fix: `Write ${name} ${placeholder}, or ${name}=${placeholder} for a value that starts with '-'. ${help}`,
      });
    }
    if (f.choices && !f.choices.includes(t.value)) {
      throw new MvmError(
        'usage',
        `${name} ${shown(t.value)} is not one of ${f.choices.join(', ')}`,
        {
          fix: `Give ${name} one of: ${f.choices.join(', ')}.`,
        },
      );
    }
    if (f.multiple) {
      values[f.name] = [...((values[f.name] as string[] | undefined) ?? []), t.value];
    } else if (values[f.name] !== undefined && values[f.name] !== t.value) {
      // Two different values for a one-value flag: refuse rather than pick one silently.
      throw new MvmError(
        'usage',
        `${name} was given twice (${shown(values[f.name] as string)} and ${shown(t.value)})`,
        {
          fix: `Give ${name} once. ${help}`,
        },
      );
    } else {
      values[f.name] = t.value;
    }
  }
  return { values, positionals };
}

/** The flag of the command the operator most likely meant, when the typo is a small one. */
export function didYouMean(raw: string, flags: readonly FlagSpec[]): string | undefined {
  const typed = raw.replace(/^-+/, '').replace(/=.*$/s, '');
  if (typed.length < 3) return undefined;
  const long = flags.filter((f) => f.name.length > 1);
  const prefixed = long.filter((f) => f.name.startsWith(typed));
  if (prefixed.length === 1) return flagName(prefixed[0]!);
  const name = closest(
    typed,
    long.map((f) => f.name),
  );
  return name === undefined ? undefined : `--${name}`;
}

/** The candidate nearest to `word`, if within a typo's distance. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(word, c);
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  const allowed = Math.max(1, Math.min(3, Math.floor(word.length / 3)));
  return bestDistance <= allowed ? best : undefined;
}

/** Optimal string alignment distance: insertions, deletions, substitutions, adjacent swaps. */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        v = Math.min(v, d[i - 2]![j - 2]! + 1);
      }
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}
