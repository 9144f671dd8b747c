/**
 * Every --help page, rendered from the table in spec.ts: the prose as
 * written there, then the flags, the environment and the exit status, in
 * the same layout for every command. Pure: text in, text out.
 */
import {
  childrenOf,
  COMMANDS,
  COMMAND_KEYS,
  ENVIRONMENT,
  EXIT_STATUS,
  EXIT_CODES,
  flagsOf,
  GLOBAL_FLAGS,
  namesOf,
  TOOL,
  type CommandKey,
  type CommandSpec,
  type EnvRef,
  type ExitRef,
  type FlagSpec,
} from './spec.js';

/** Help is wrapped to this many columns. */
export const WIDTH = 88;

/** Words of `text` in lines of at most `width` columns (a longer word stays whole). */
export function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line !== '' && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line === '' ? word : `${line} ${word}`;
    }
  }
  if (line !== '') lines.push(line);
  return lines;
}

/** Two columns: each label, then its text wrapped beside it (below it, when the label is too wide). */
export function columns(rows: readonly (readonly [string, string])[], maxLabel = 28): string[] {
  const labelWidth = Math.min(maxLabel, Math.max(0, ...rows.map(([l]) => l.length)));
  const col = 2 + labelWidth + 2;
  const out: string[] = [];
  for (const [label, text] of rows) {
    const body = wrap(text, WIDTH - col);
    if (label.length > labelWidth) {
      out.push(`  ${label}`);
      out.push(...body.map((l) => ' '.repeat(col) + l));
    } else {
      out.push(`  ${label.padEnd(labelWidth)}  ${body[0] ?? ''}`.trimEnd());
      out.push(...body.slice(1).map((l) => ' '.repeat(col) + l));
    }
  }
  return out;
}

/** How a flag is written in help: `-n, --lines N`, `--offline[=BOOL]`. */
export function flagLabel(f: FlagSpec): string {
  const names =
    f.name.length === 1 ? `-${f.name}` : f.short ? `-${f.short}, --${f.name}` : `--${f.name}`;
  if (f.type === 'boolean') return f.value ? `${names}${f.value}` : names;
  return `${names} ${valueOf(f)}`;
}

/** The placeholder of a string flag's value. */
export const valueOf = (f: FlagSpec): string =>
  f.value ?? (f.choices ? f.choices.join('|') : 'VALUE');

/** An environment reference as [NAME or NAME=1, what it means here]. */
export function envRow(ref: EnvRef): [string, string] {
  const [name, note] = typeof ref === 'string' ? [ref, undefined] : ref;
  const global = ENVIRONMENT.find((e) => e.name === name);
  if (!global) throw new Error(`spec: ${name} is not in ENVIRONMENT`);
  return [global.value ? `${name}=${global.value}` : name, note ?? global.help];
}

/** What an exit code means for a command: the code's label everywhere, then the command's note. */
export function exitText([code, note]: ExitRef): string {
  if (code === 0) return note ?? EXIT_STATUS[0].meaning;
  const { label, meaning } = EXIT_STATUS[code];
  // A note that adds a case ("also ...") keeps the general meaning before it.
  if (note?.startsWith('also ')) return `${label}: ${meaning}; ${note}`;
  return `${label}: ${note ?? meaning}`;
}

/** What an exit code means anywhere (mvmctl --help, the man page). */
export function exitMeaning(code: number): string {
  const e = (EXIT_STATUS as Record<number, { label: string; meaning: string }>)[code];
  if (!e) throw new Error(`spec: exit ${code} has no meaning in EXIT_STATUS`);
  return code === 0 ? 'success' : `${e.label}: ${e.meaning}`;
}

function exitLines(items: readonly (readonly [number, string])[]): string[] {
  const out: string[] = [];
  for (const [code, text] of [...items].sort((a, b) => a[0] - b[0])) {
    const body = wrap(text, WIDTH - 6);
    out.push(`  ${String(code).padStart(3)} ${body[0] ?? ''}`);
    out.push(...body.slice(1).map((l) => `      ${l}`));
  }
  return out;
}

/** Usage lines: "Usage: " then each, wrapped between bracketed groups, never inside one. */
function usageLines(usage: readonly string[]): string[] {
  const out: string[] = [];
  usage.forEach((u, i) => {
    const lead = i === 0 ? 'Usage: ' : '       ';
    const words = splitUsage(u);
    const command = words.findIndex((w) => /^[-[(<]|^[A-Z]/.test(w));
    const hang = ' '.repeat(
      7 + words.slice(0, command < 0 ? words.length : command).join(' ').length + 1,
    );
    let line = lead;
    let first = true;
    for (const w of words) {
      if (!first && line.length + 1 + w.length > WIDTH) {
        out.push(line);
        line = hang + w;
      } else {
        line = first ? line + w : `${line} ${w}`;
      }
      first = false;
    }
    out.push(line);
  });
  return out;
}

/** Splits at spaces outside (), [] and <>. */
function splitUsage(u: string): string[] {
  const words: string[] = [];
  let depth = 0;
  let word = '';
  for (const c of u) {
    if ('([<'.includes(c)) depth++;
    if (')]>'.includes(c)) depth--;
    if (c === ' ' && depth === 0) {
      if (word) words.push(word);
      word = '';
    } else word += c;
  }
  if (word) words.push(word);
  return words;
}

/** A command's flags, grouped by section, "Flags" first. */
export function flagSections(key: CommandKey): [string, FlagSpec[]][] {
  const sections = new Map<string, FlagSpec[]>([['Flags', []]]);
  for (const f of shownFlags(key)) {
    const title = f.section ?? 'Flags';
    sections.set(title, [...(sections.get(title) ?? []), f]);
  }
  return [...sections].filter(([, flags]) => flags.length > 0);
}

/**
 * The flags a command's help lists: its own, then --debug and --help (--json
 * only where the command declares what it prints; a group has only --help).
 */
export function shownFlags(key: CommandKey): FlagSpec[] {
  const spec: CommandSpec = COMMANDS[key];
  return flagsOf(key).filter(
    (f) => spec.flags.includes(f) || f.name === 'help' || (f.name === 'debug' && !spec.group),
  );
}

/** `fetch`, `console, shell`, `rm VERSION`: how a subcommand is listed under its parent. */
function childLabel(key: CommandKey, from: string): string {
  const spec: CommandSpec = COMMANDS[key];
  const words = from === '' ? key : namesOf(key).join(', ');
  const operands = (spec.operands ?? []).map((o) => o.name).join(' ');
  return operands ? `${words} ${operands}` : words;
}

/** The --help page of a command (or a group of commands). */
export function commandHelp(key: CommandKey): string {
  const spec: CommandSpec = COMMANDS[key];
  const out: string[] = [...usageLines(spec.usage), '', spec.description];
  if (spec.group) {
    out.push('', 'Commands:');
    const children = childrenOf(key).filter((k) => !(COMMANDS[k] as CommandSpec).hidden);
    out.push(
      ...columns(
        children.map((k) => [childLabel(k, key), COMMANDS[k].summary]),
        18,
      ),
    );
  }
  for (const [title, flags] of flagSections(key)) {
    out.push('', `${title}:`, ...columns(flags.map((f) => [flagLabel(f), f.help])));
  }
  if (spec.env.length > 0) out.push('', 'Environment:', ...columns(spec.env.map(envRow), 32));
  out.push('', 'Exit status:', ...exitLines(spec.exit.map((e) => [e[0], exitText(e)])));
  for (const s of spec.sections ?? []) out.push('', `${s.title}:`, s.body);
  if (spec.group) out.push('', `Run 'mvmctl ${key} <command> --help' for a command's flags.`);
  return `${out.join('\n')}\n`;
}

/** mvmctl --help: every command, every environment variable, every exit code. */
export function mainHelp(): string {
  const commands = COMMAND_KEYS.filter((k) => {
    const s: CommandSpec = COMMANDS[k];
    return !s.group && !s.hidden;
  });
  const out = [
    `mvmctl — ${TOOL.summary}`,
    '',
    ...usageLines(TOOL.usage),
    '',
    'Commands:',
    ...columns(
      commands.map((k) => [childLabel(k, ''), COMMANDS[k].summary]),
      22,
    ),
    '',
    'Global flags:',
    ...columns(GLOBAL_FLAGS.map((f) => [flagLabel(f), f.help])),
    '',
    'Environment:',
    ...columns(
      ENVIRONMENT.map((e) => envRow(e.name)),
      32,
    ),
  ];
  for (const s of TOOL.sections) out.push('', `${s.title}:`, s.body);
  out.push(
    '',
    'Exit status:',
    ...exitLines(EXIT_CODES.map((c) => [c, exitMeaning(c)])),
    '',
    "Run 'mvmctl <command> --help' for a command's flags, environment and exit status.",
    "Shell completion: 'mvmctl completion bash|zsh|fish'. The manual: man mvmctl.",
  );
  return `${out.join('\n')}\n`;
}

/** Top-level words that name a command or group. */
export const TOP_LEVEL = childrenOf('');
