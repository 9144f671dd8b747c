/**
 * The man page, mvmctl(1), rendered from the command table (spec.ts) as roff
 * (the man macros). `npm run man` writes it to man/mvmctl.1, which the npm
 * package installs; a test regenerates it and compares, so it cannot drift
 * from --help. Pure: no date in it, so the same table gives the same bytes.
 */
import { exitMeaning, exitText, envRow, flagLabel, flagSections } from './help.js';
import {
  COMMAND_KEYS,
  COMMANDS,
  ENVIRONMENT,
  EXIT_CODES,
  GLOBAL_FLAGS,
  TOOL,
  type CommandSpec,
  type FlagSpec,
} from './spec.js';
import { MVMCTL_VERSION } from '../version.js';

const SPECIAL: Record<string, string> = {
  '—': '\\(em',
  '–': '\\(en',
  '…': '.\\|.\\|.',
  '’': "'",
  '‘': '`',
  '“': '\\(lq',
  '”': '\\(rq',
};

/** Text as roff: backslashes and hyphen-minus escaped, anything beyond ASCII named. */
export function roffText(text: string): string {
  return text
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .replace(
      /[^\x20-\x7e\n]/gu,
      (c) => SPECIAL[c] ?? `\\[u${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}]`,
    );
}

/** A text line that roff must not read as a request (a leading . or '). */
const line = (text: string): string => (/^[.']/.test(text) ? `\\&${text}` : text);

/**
 * Prose as written in the table: blank lines make paragraphs, lines indented
 * by two spaces (examples, commands to type) are kept as they are.
 */
export function roffProse(text: string): string[] {
  const out: string[] = [];
  let literal = false;
  for (const raw of text.split('\n')) {
    if (raw.trim() === '') {
      if (literal) out.push('.fi', '.RE');
      literal = false;
      out.push('.PP');
      continue;
    }
    const indented = /^ {2}/.test(raw);
    if (indented && !literal) out.push('.RS 2', '.nf');
    if (!indented && literal) out.push('.fi', '.RE');
    literal = indented;
    out.push(line(roffText(indented ? raw.slice(2) : raw)));
  }
  if (literal) out.push('.fi', '.RE');
  return out;
}

/** `-n, --lines N` as roff: names bold, the value italic. */
function flagTag(f: FlagSpec): string {
  const label = flagLabel(f);
  return label
    .split(', ')
    .map((part) => {
      const [names, ...value] = part.split(' ');
      const bracket = /^(--?[a-z0-9-]+)(\[=BOOL\])$/.exec(names!);
      const bold = `\\fB${roffText(bracket ? bracket[1]! : names!)}\\fR`;
      const tail = bracket ? roffText(bracket[2]!) : '';
      return value.length
        ? `${bold}${tail} \\fI${roffText(value.join(' '))}\\fR`
        : `${bold}${tail}`;
    })
    .join(', ');
}

function tagged(rows: readonly (readonly [string, string])[]): string[] {
  return rows.flatMap(([tag, text]) => ['.TP', line(tag), line(roffText(text))]);
}

function usage(lines: readonly string[]): string[] {
  return [
    '.nf',
    ...lines.map((u) => {
      const [, command, rest] = /^(mvmctl(?: [a-z][a-z-]*)*)(.*)$/.exec(u)!;
      return line(`\\fB${roffText(command!)}\\fR${roffText(rest!)}`);
    }),
    '.fi',
  ];
}

function commandSection(key: (typeof COMMAND_KEYS)[number]): string[] {
  const spec: CommandSpec = COMMANDS[key];
  const out = [
    `.SS ${roffText(`mvmctl ${key}`)}`,
    ...usage(spec.usage),
    '.PP',
    ...roffProse(spec.description),
  ];
  for (const [title, flags] of flagSections(key)) {
    out.push(
      '.PP',
      `\\fI${roffText(title)}:\\fR`,
      ...tagged(flags.map((f) => [flagTag(f), f.help])),
    );
  }
  if (spec.env.length > 0) {
    out.push(
      '.PP',
      '\\fIEnvironment:\\fR',
      ...tagged(spec.env.map(envRow).map(([name, text]) => [`\\fB${roffText(name)}\\fR`, text])),
    );
  }
  out.push(
    '.PP',
    '\\fIExit status:\\fR',
    ...tagged(
      [...spec.exit].sort((a, b) => a[0] - b[0]).map((e) => [`\\fB${e[0]}\\fR`, exitText(e)]),
    ),
  );
  for (const s of spec.sections ?? [])
    out.push('.PP', `\\fI${roffText(s.title)}:\\fR`, ...roffProse(s.body));
  return out;
}

export function manPage(): string {
  const out = [
    `.\\" mvmctl(1): generated from src/cli/spec.ts by 'npm run man'. Do not edit.`,
    `.TH MVMCTL 1 "" "mvmctl ${MVMCTL_VERSION}" "User Commands"`,
    // Flags and paths are typed, not read: no hyphenation, no stretched spaces.
    '.nh',
    '.ad l',
    '.SH NAME',
    `mvmctl \\- ${roffText(TOOL.summary)}`,
    '.SH SYNOPSIS',
    ...usage(TOOL.usage),
    '.SH DESCRIPTION',
    ...roffProse(TOOL.description),
    '.PP',
    line(
      roffText(
        "Every command below also takes --help (its page, as here), and --debug (internal detail on errors). 'mvmctl completion bash|zsh|fish' prints a shell completion script.",
      ),
    ),
    '.SH OPTIONS',
    ...tagged(GLOBAL_FLAGS.map((f) => [flagTag(f), f.help])),
    '.SH COMMANDS',
    ...COMMAND_KEYS.filter((k) => !(COMMANDS[k] as CommandSpec).hidden).flatMap(commandSection),
    '.SH ENVIRONMENT',
    ...tagged(
      ENVIRONMENT.map((e) => envRow(e.name)).map(([name, text]) => [
        `\\fB${roffText(name)}\\fR`,
        text,
      ]),
    ),
  ];
  for (const s of TOOL.sections)
    out.push(`.SH ${roffText(s.title.toUpperCase())}`, ...roffProse(s.body));
  out.push(
    '.SH EXIT STATUS',
    line(
      roffText(
        "Each code means the same for every command; a command's section says what it means there.",
      ),
    ),
    ...tagged(EXIT_CODES.map((c) => [`\\fB${c}\\fR`, exitMeaning(c)])),
    '.SH SEE ALSO',
    line(roffText('cosign(1), qemu-system-x86_64(1); the docs/ directory of the mvmctl project.')),
  );
  return `${out.join('\n')}\n`;
}
