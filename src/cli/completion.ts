/**
 * `mvmctl completion bash|zsh|fish`: completion scripts generated from the
 * command table (spec.ts): commands and subcommands (aliases too), each
 * command's flags, and their values (files, directories, fixed choices such
 * as the arches). Each script finds the command being typed the same way:
 * it walks the words typed so far through the table's tree, skipping the
 * value of every flag that takes one.
 */
import { printable } from '../core/printable.js';
import { MvmError } from '../errors.js';
import { parseCommand } from './args.js';
import { shownFlags } from './help.js';
import type { Output } from './render.js';
import {
  childrenOf,
  COMMAND_KEYS,
  COMMANDS,
  GLOBAL_FLAGS,
  namesOf,
  type CommandSpec,
  type FlagSpec,
  type OperandSpec,
} from './spec.js';

export const SHELLS = ['bash', 'zsh', 'fish'] as const;
export type Shell = (typeof SHELLS)[number];

/** A value hint: complete files, directories, one of some words, or nothing. */
type Hint = { kind: 'file' } | { kind: 'dir' } | { kind: 'words'; words: readonly string[] };

interface Node {
  /** "mvmctl", "mvmctl dev", "mvmctl dev fetch": what the scripts call the command being typed. */
  readonly id: string;
  readonly children: readonly { word: string; node: string; summary: string }[];
  readonly flags: readonly FlagSpec[];
  readonly operand: Hint | undefined;
}

function hintOf(x: FlagSpec | OperandSpec): Hint | undefined {
  if (x.choices) return { kind: 'words', words: x.choices };
  const complete =
    x.complete ??
    (/FILE/.test((x as FlagSpec).value ?? '')
      ? 'file'
      : /DIR/.test((x as FlagSpec).value ?? '')
        ? 'dir'
        : 'none');
  return complete === 'none' ? undefined : { kind: complete };
}

/** The command tree as the scripts need it, from the table. */
export function completionTree(): Node[] {
  const node = (key: string): string => (key === '' ? 'mvmctl' : `mvmctl ${key}`);
  const childrenOfNode = (key: string) =>
    childrenOf(key).flatMap((k) => {
      const spec: CommandSpec = COMMANDS[k];
      return spec.hidden
        ? []
        : namesOf(k).map((word) => ({ word, node: node(k), summary: spec.summary }));
    });
  const top: Node = {
    id: 'mvmctl',
    children: childrenOfNode(''),
    flags: GLOBAL_FLAGS,
    operand: undefined,
  };
  return [
    top,
    ...COMMAND_KEYS.map((k) => {
      const spec: CommandSpec = COMMANDS[k];
      const operand = spec.operands?.[0];
      return {
        id: node(k),
        children: childrenOfNode(k),
        flags: shownFlags(k).filter((f) => !f.compatOnly),
        operand: operand ? hintOf(operand) : undefined,
      };
    }),
  ];
}

/** How a flag is typed: --name, and -x for its short form. */
const spellings = (f: FlagSpec): string[] =>
  f.name.length === 1 ? [`-${f.name}`] : [`--${f.name}`, ...(f.short ? [`-${f.short}`] : [])];

/** A description short enough for a completion menu: its first clause, at most 60 characters. */
function brief(text: string): string {
  const first = text.split(/; | \(/)[0]!;
  return first.length <= 60 ? first : `${first.slice(0, 59).replace(/\s+\S*$/, '')}…`;
}

/** Single-quoted for sh and zsh. */
const sq = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

function hintWord(h: Hint | undefined): string {
  if (!h) return '';
  return h.kind === 'words' ? `words:${h.words.join(' ')}` : h.kind;
}

/** The case arms every script shares: next node, valued flags, value hints, operands. */
function shared(tree: Node[]) {
  const next: [string, string][] = [];
  const valued: [string, string[]][] = [];
  const values: [string, string][] = [];
  const operands: [string, string][] = [];
  for (const n of tree) {
    for (const c of n.children) next.push([`${n.id} ${c.word}`, c.node]);
    const takes = n.flags.filter((f) => f.type === 'string');
    if (takes.length) valued.push([n.id, takes.flatMap(spellings)]);
    for (const f of takes) {
      const h = hintWord(hintOf(f));
      if (h) for (const s of spellings(f)) values.push([`${n.id} ${s}`, h]);
    }
    if (n.operand) operands.push([n.id, hintWord(n.operand)]);
  }
  return { next, valued, values, operands };
}

export function bashCompletion(tree = completionTree()): string {
  const { next, valued, values, operands } = shared(tree);
  const arms = (rows: [string, string][]) =>
    rows.map(([k, v]) => `    ${sq(k)}) REPLY=${sq(v)} ;;`).join('\n');
  const words = tree.map(
    (n) => [n.id, n.children.map((c) => c.word).join(' ')] as [string, string],
  );
  const flags = tree.map((n) => [n.id, n.flags.flatMap(spellings).join(' ')] as [string, string]);
  // One lookup function per table: `_mvmctl_NAME KEY` sets REPLY to the key's value, or ''.
  const lookups = Object.entries({
    next,
    words,
    flags,
    valued: valued.map(([k, v]) => [k, ` ${v.join(' ')} `] as [string, string]),
    values,
    operands,
  })
    .map(([name, rows]) => `_mvmctl_${name}() { REPLY=''; case "$1" in\n${arms(rows)}\n  esac; }`)
    .join('\n');
  return `# bash completion for mvmctl: generated from its command table by 'mvmctl completion bash'.
# Load it with: source <(mvmctl completion bash)
${lookups}
_mvmctl_offer() {
  case "$1" in
    file) compopt -o filenames 2>/dev/null; mapfile -t -O "\${#COMPREPLY[@]}" COMPREPLY < <(compgen -f -- "$cur") ;;
    dir) compopt -o filenames 2>/dev/null; mapfile -t -O "\${#COMPREPLY[@]}" COMPREPLY < <(compgen -d -- "$cur") ;;
    words:*) mapfile -t -O "\${#COMPREPLY[@]}" COMPREPLY < <(compgen -W "\${1#words:}" -- "$cur") ;;
  esac
}
_mvmctl() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" node=mvmctl i w flag REPLY
  COMPREPLY=()
  for (( i = 1; i < COMP_CWORD; i++ )); do
    w="\${COMP_WORDS[i]}"
    if [[ $w == -* ]]; then
      _mvmctl_valued "$node"
      if [[ $w != *=* && $REPLY == *" $w "* ]]; then
        (( i++ ))
        [[ \${COMP_WORDS[i]} == = ]] && (( i++ ))
      fi
      continue
    fi
    _mvmctl_next "$node $w"
    [[ -n $REPLY ]] && node="$REPLY"
  done
  # The value of a flag: after "--flag" or (COMP_WORDBREAKS splits at =) after "--flag =".
  flag="\${COMP_WORDS[COMP_CWORD-1]}"
  [[ $flag == = && COMP_CWORD -gt 1 ]] && flag="\${COMP_WORDS[COMP_CWORD-2]}"
  [[ $cur == = ]] && { flag="\${COMP_WORDS[COMP_CWORD-1]}"; cur=''; }
  if (( COMP_CWORD > 1 )) && [[ $flag == -* ]]; then
    _mvmctl_valued "$node"
    if [[ $REPLY == *" $flag "* ]]; then
      _mvmctl_values "$node $flag"
      _mvmctl_offer "$REPLY"
      return 0
    fi
  fi
  if [[ $cur == -* ]]; then
    _mvmctl_flags "$node"
    mapfile -t COMPREPLY < <(compgen -W "$REPLY" -- "$cur")
    return 0
  fi
  _mvmctl_words "$node"
  mapfile -t COMPREPLY < <(compgen -W "$REPLY" -- "$cur")
  _mvmctl_operands "$node"
  _mvmctl_offer "$REPLY"
  return 0
}
complete -F _mvmctl mvmctl
`;
}

export function zshCompletion(tree = completionTree()): string {
  const { next, valued, values, operands } = shared(tree);
  const described = (pairs: [string, string][]) =>
    pairs.map(([w, d]) => sq(`${w.replace(/:/g, '\\:')}:${brief(d)}`)).join(' ');
  const arms = (rows: [string, string][], assign: (v: string) => string) =>
    rows.map(([k, v]) => `    (${sq(k)}) ${assign(v)} ;;`).join('\n');
  const str = (v: string) => `REPLY=${sq(v)}`;
  const commands = tree.map(
    (n) => [n.id, described(n.children.map((c) => [c.word, c.summary]))] as [string, string],
  );
  const flags = tree.map(
    (n) =>
      [
        n.id,
        described(n.flags.flatMap((f) => spellings(f).map((s) => [s, f.help] as [string, string]))),
      ] as [string, string],
  );
  return `#compdef mvmctl
# zsh completion for mvmctl: generated from its command table by 'mvmctl completion zsh'.
# Load it with: source <(mvmctl completion zsh)   (after compinit), or save it as _mvmctl in $fpath.
_mvmctl_next() { REPLY=''; case "$1" in
${arms(next, str)}
  esac; }
_mvmctl_valued() { REPLY=''; case "$1" in
${arms(
  valued.map(([k, v]) => [k, ` ${v.join(' ')} `]),
  str,
)}
  esac; }
_mvmctl_values() { REPLY=''; case "$1" in
${arms(values, str)}
  esac; }
_mvmctl_operands() { REPLY=''; case "$1" in
${arms(operands, str)}
  esac; }
_mvmctl_commands() { reply=(); case "$1" in
${arms(commands, (v) => `reply=(${v})`)}
  esac; }
_mvmctl_flag_list() { reply=(); case "$1" in
${arms(flags, (v) => `reply=(${v})`)}
  esac; }
_mvmctl_offer() {
  case "$1" in
    file) _files ;;
    dir) _files -/ ;;
    words:*) local -a choices; choices=(\${=1#words:}); compadd -a choices ;;
  esac
}
_mvmctl() {
  local node=mvmctl w REPLY i
  local -a reply
  for (( i = 2; i < CURRENT; i++ )); do
    w=\${words[i]}
    if [[ $w == -* ]]; then
      _mvmctl_valued "$node"
      [[ $w != *=* && $REPLY == *" $w "* ]] && (( i++ ))
      continue
    fi
    _mvmctl_next "$node $w"
    [[ -n $REPLY ]] && node=$REPLY
  done
  local prev=\${words[CURRENT-1]} cur=\${words[CURRENT]}
  if (( CURRENT > 2 )) && [[ $prev == -* ]]; then
    _mvmctl_valued "$node"
    if [[ $REPLY == *" $prev "* ]]; then
      _mvmctl_values "$node $prev"
      _mvmctl_offer "$REPLY"
      return
    fi
  fi
  if [[ $cur == -* ]]; then
    _mvmctl_flag_list "$node"
    _describe -t flags 'flag' reply
    return
  fi
  _mvmctl_commands "$node"
  (( \${#reply} )) && _describe -t commands 'command' reply
  _mvmctl_operands "$node"
  _mvmctl_offer "$REPLY"
}
if [[ $funcstack[1] == _mvmctl ]]; then
  _mvmctl "$@"
else
  compdef _mvmctl mvmctl
fi
`;
}

/** Single-quoted for fish. */
const fq = (s: string): string => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;

export function fishCompletion(tree = completionTree()): string {
  const { next, valued } = shared(tree);
  const lines: string[] = [];
  for (const n of tree) {
    const at = `-n ${fq(`__mvmctl_at ${fq(n.id)}`)}`;
    for (const c of n.children) {
      lines.push(`complete -c mvmctl ${at} -a ${fq(c.word)} -d ${fq(brief(c.summary))}`);
    }
    for (const f of n.flags) {
      const names =
        f.name.length === 1 ? `-s ${f.name}` : `-l ${f.name}${f.short ? ` -s ${f.short}` : ''}`;
      let value = '';
      if (f.type === 'string') {
        const h = hintOf(f);
        value =
          h?.kind === 'file'
            ? ' -r -F'
            : h?.kind === 'dir'
              ? " -x -a '(__fish_complete_directories)'"
              : h?.kind === 'words'
                ? ` -x -a ${fq(h.words.join(' '))}`
                : ' -x';
      }
      lines.push(`complete -c mvmctl ${at} ${names}${value} -d ${fq(brief(f.help))}`);
    }
    if (n.operand?.kind === 'words') {
      lines.push(`complete -c mvmctl ${at} -a ${fq(n.operand.words.join(' '))}`);
    } else if (n.operand?.kind === 'file') {
      lines.push(`complete -c mvmctl ${at} -F`);
    }
  }
  const arms = (rows: [string, string][]) =>
    rows.map(([k, v]) => `        case ${fq(k)}\n            printf '%s\\n' ${v}`).join('\n');
  return `# fish completion for mvmctl: generated from its command table by 'mvmctl completion fish'.
# Install it with: mvmctl completion fish > ~/.config/fish/completions/mvmctl.fish
function __mvmctl_next
    switch "$argv[1]"
${arms(next.map(([k, v]) => [k, fq(v)]))}
    end
end
function __mvmctl_valued
    switch "$argv[1]"
${arms(valued.map(([k, v]) => [k, v.map(fq).join(' ')]))}
    end
end
function __mvmctl_node
    set -l node mvmctl
    set -l skip 0
    for w in (commandline -opc)[2..-1]
        if test $skip = 1
            set skip 0
            continue
        end
        if string match -q -- '-*' $w
            if not string match -q -- '*=*' $w; and contains -- $w (__mvmctl_valued $node)
                set skip 1
            end
            continue
        end
        set -l next (__mvmctl_next "$node $w")
        test -n "$next"; and set node $next
    end
    echo $node
end
function __mvmctl_at
    test (__mvmctl_node) = "$argv[1]"
end
complete -c mvmctl -f
${lines.join('\n')}
`;
}

export function completionScript(shell: Shell): string {
  return shell === 'bash' ? bashCompletion() : shell === 'zsh' ? zshCompletion() : fishCompletion();
}

export async function completionCommand(args: string[], io: Output): Promise<number> {
  const { positionals } = parseCommand('completion', args);
  const [shell] = positionals;
  if (positionals.length !== 1 || !(SHELLS as readonly string[]).includes(shell!)) {
    throw new MvmError(
      'usage',
      shell === undefined
        ? 'mvmctl completion needs the shell: bash, zsh or fish'
        : `mvmctl completion: ${JSON.stringify(printable(shell, 100))} is not bash, zsh or fish${positionals.length > 1 ? ' (give one shell)' : ''}`,
      { fix: 'Run e.g. source <(mvmctl completion bash); see mvmctl completion --help.' },
    );
  }
  io.out(completionScript(shell as Shell));
  return 0;
}
