/**
 * The command table (src/cli/spec.ts) and what is rendered from it: flag
 * parsing in mvmctl's own words, every --help page, the completion scripts
 * and the man page. The CLI runs as a subprocess, as an operator runs it.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ERROR_TABLE } from '../src/errors.js';
import { bashCompletion } from '../src/cli/completion.js';
import { shownFlags } from '../src/cli/help.js';
import { manPage } from '../src/cli/man.js';
import { cliReference } from '../src/cli/reference.js';
import * as prettier from 'prettier';
import {
  COMMAND_KEYS,
  COMMANDS,
  ENVIRONMENT,
  EXIT_STATUS,
  flagsOf,
  type CommandKey,
  type CommandSpec,
  type FlagSpec,
} from '../src/cli/spec.js';
import {
  DEFAULT_DOWN_TIMEOUT_SECONDS,
  DEFAULT_READY_LINES,
  DEFAULT_UP_TIMEOUT_SECONDS,
} from '../src/vm/instance.js';
import { DEFAULT_IDLE_SECONDS, MAX_DRAIN_SECONDS } from '../src/vm/console.js';
import { CLI, runCli, type CliResult } from './support/cli.js';

const ROOT = new URL('../', import.meta.url);
const pkg = JSON.parse(readFileSync(new URL('package.json', ROOT), 'utf8'));
const words = (key: CommandKey): string[] => key.split(' ');
const spec = (key: CommandKey): CommandSpec => COMMANDS[key];
const leaves = COMMAND_KEYS.filter((k) => !spec(k).group);

/** Runs many CLI invocations a few at a time (each is a process start). */
async function all<T>(items: readonly T[], f: (item: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  await Promise.all(
    Array.from({ length: 6 }, async () => {
      for (let item = queue.shift(); item !== undefined; item = queue.shift()) await f(item);
    }),
  );
}

/**
 * A usage mistake exits 2, except under `dev exec`: there every failure of
 * mvmctl's own is 255 (as ssh), because 2 is a common status of the guest
 * command itself (make, grep) and a script must tell the two apart.
 */
const usageExit = (label: string): number => (label.startsWith('dev exec') ? 255 : 2);

function assertUsage(r: CliResult, message: RegExp, label = ''): void {
  assert.equal(r.code, usageExit(label), `${label}\n${r.stderr}`);
  assert.match(r.stderr, message, label);
  // Nothing of node:util parseArgs' own wording, and no unbalanced quotes.
  assert.doesNotMatch(
    r.stderr,
    /To specify a positional argument|Unknown option|ERR_PARSE_ARGS|'-- "/,
    label,
  );
  assert.equal((r.stderr.match(/"/g) ?? []).length % 2, 0, `balanced quotes: ${r.stderr}`);
  assert.match(r.stderr, /^ {2}fix: {3}/m, label);
}

/** The codes an "Exit status" section lists (one per line, or the older "0 ok, 2 usage" form). */
export function exitCodesOf(help: string): number[] | undefined {
  const at = help.search(/^Exit status:/m);
  if (at < 0) return undefined;
  const section = help.slice(at + 'Exit status:'.length).split(/\n\n/)[0]!;
  return [...section.matchAll(/(?:^|,|\n)\s*(\d{1,3})\b/g)].map((m) => Number(m[1]));
}

describe('flags: mvmctl’s own wording, exit 2', () => {
  it('an unknown flag names the command, the nearest flag and its --help', async () => {
    const r = await runCli(['dev', 'fetch', '--outt', 'x']);
    assertUsage(r, /^Error: unknown flag --outt for mvmctl dev fetch \(did you mean --out\?\)$/m);
    assert.match(r.stderr, /Run 'mvmctl dev fetch --help'/);
    // Far from every flag: no guess.
    const far = await runCli(['dev', 'fetch', '--zzzzzzzz']);
    assertUsage(far, /^Error: unknown flag --zzzzzzzz for mvmctl dev fetch$/m);
    // The old parser's message for exactly this case.
    const dashed = await runCli(['verify-blob', '--x', 'artifact']);
    assertUsage(dashed, /^Error: unknown flag --x for mvmctl verify-blob$/m);
  });

  it('every command refuses an unknown flag the same way, before doing anything', async () => {
    await all(leaves, async (key) => {
      const r = await runCli([...words(key), '--no-such-flag-here']);
      assertUsage(r, new RegExp(`unknown flag --no-such-flag-here for mvmctl ${key}\\b`), key);
    });
  });

  it('a value missing, a value for a boolean, a value not among the choices, one value twice', async () => {
    assertUsage(await runCli(['dev', 'fetch', '--out']), /^Error: --out needs a value \(DIR\)$/m);
    const next = await runCli(['dev', 'import-image', '--dir', '--offline']);
    assertUsage(next, /^Error: --dir needs a value \(DIR\)$/m);
    assert.match(next.stderr, /cause: "--offline" after it is read as the next flag/);
    assertUsage(await runCli(['dev', 'logs', '-n']), /^Error: --lines needs a value \(N\)$/m);
    assertUsage(
      await runCli(['dev', 'fetch', '--offline=yes']),
      /^Error: --offline takes no value \(got "yes"\)$/m,
    );
    assertUsage(
      await runCli(['dev', 'fetch', '--arch', 'sparc']),
      /^Error: --arch "sparc" is not one of x86_64, aarch64$/m,
    );
    assertUsage(
      await runCli(['dev', 'fetch', '--out', 'a', '--out', 'b']),
      /^Error: --out was given twice \("a" and "b"\)$/m,
    );
    assertUsage(
      await runCli(['dev', 'pull', 'extra']),
      /^Error: mvmctl dev pull takes no arguments \(got "extra"\)$/m,
    );
  });

  it('every flag of the table is one the command parses, with the type the table says', async () => {
    const cases = leaves.flatMap((key) =>
      flagsOf(key)
        .filter((f) => !f.compatOnly && f.name !== 'help')
        .map((f) => [key, f] as const),
    );
    await all(cases, async ([key, f]: readonly [CommandKey, FlagSpec]) => {
      const name = f.name.length === 1 ? `-${f.name}` : `--${f.name}`;
      if (f.type === 'string') {
        assertUsage(
          await runCli([...words(key), name]),
          new RegExp(`needs a value`),
          `${key} ${name}`,
        );
      } else {
        assertUsage(
          await runCli([...words(key), `--${f.name}=x`]),
          /takes no value/,
          `${key} --${f.name}`,
        );
      }
    });
  });

  it('an unknown command names the nearest one', async () => {
    assertUsage(
      await runCli(['dev', 'imgaes']),
      /^Error: unknown command "dev imgaes" \(did you mean dev images\?\)$/m,
    );
    assertUsage(
      await runCli(['statsu']),
      /^Error: unknown command "statsu" \(did you mean status\?\)$/m,
    );
    assertUsage(
      await runCli(['revocations', 'frob']),
      /^Error: unknown command "revocations frob"$/m,
    );
    assertUsage(
      await runCli(['--verison']),
      /^Error: unknown flag --verison for mvmctl \(did you mean --version\?\)$/m,
    );
  });
});

describe('-v, --version and help pages', () => {
  it('-v and --version both print the version', async () => {
    for (const flag of ['-v', '--version']) {
      const r = await runCli([flag]);
      assert.equal(r.code, 0, flag);
      assert.equal(r.stdout, `${pkg.version}\n`, flag);
    }
  });

  it('revocations import, status and refresh each have their own page', async () => {
    const pages = new Set<string>();
    for (const sub of ['import', 'status', 'refresh']) {
      const r = await runCli(['revocations', sub, '--help']);
      assert.equal(r.code, 0, sub);
      assert.match(r.stdout, new RegExp(`^Usage: mvmctl revocations ${sub}\\b`), sub);
      assert.match(r.stdout, /^Exit status:/m, sub);
      pages.add(r.stdout);
    }
    assert.equal(pages.size, 3);
    assert.match((await runCli(['revocations', 'import', '--help'])).stdout, /^ {2}--list FILE /m);
    assert.match((await runCli(['revocations', 'refresh', '--help'])).stdout, /^ {2}--offline /m);
    assert.doesNotMatch((await runCli(['revocations', 'status', '--help'])).stdout, /--list/);
  });

  it('every command’s --help lists its exit codes, each a code of the error table (or 0)', async () => {
    const known = new Set([0, ...Object.values(ERROR_TABLE).map((c) => c.exit)]);
    const pages: [string, string[]][] = [
      ['mvmctl', ['--help']],
      ...COMMAND_KEYS.map((k) => [k, [...words(k), '--help']] as [string, string[]]),
    ];
    await all(pages, async ([name, args]) => {
      const r = await runCli(args);
      assert.equal(r.code, 0, name);
      const codes = exitCodesOf(r.stdout);
      assert.ok(codes && codes.length > 0, `${name}: no Exit status section`);
      for (const c of codes) assert.ok(known.has(c), `${name}: exit ${c} is not in ERROR_TABLE`);
      if (name === 'mvmctl')
        assert.deepEqual(
          [...new Set(codes)].sort((a, b) => a - b),
          [...known].sort((a, b) => a - b),
        );
    });
  });

  it('each exit code means one thing everywhere: every page gives it the same label', async () => {
    assert.deepEqual(
      Object.keys(EXIT_STATUS)
        .map(Number)
        .sort((a, b) => a - b),
      [...new Set([0, ...Object.values(ERROR_TABLE).map((c) => c.exit)])].sort((a, b) => a - b),
      'EXIT_STATUS describes exactly the exits of ERROR_TABLE',
    );
    await all(COMMAND_KEYS, async (key) => {
      const help = (await runCli([...words(key), '--help'])).stdout;
      const section = help.slice(help.indexOf('\nExit status:\n')).split('\n\n')[0]!;
      for (const m of section.matchAll(/^ +(\d+) (.*)$/gm)) {
        const code = Number(m[1]) as keyof typeof EXIT_STATUS;
        if (code !== 0)
          assert.ok(m[2]!.startsWith(`${EXIT_STATUS[code].label}: `), `${key}: ${m[0]}`);
      }
    });
  });

  it('a page rendered from the table shows every flag the table gives the command', async () => {
    await all(COMMAND_KEYS, async (key) => {
      const help = (await runCli([...words(key), '--help'])).stdout;
      for (const f of shownFlags(key)) {
        const name = f.name.length === 1 ? `-${f.name}` : `--${f.name}`;
        assert.ok(help.includes(name), `${key} --help does not mention ${name}`);
      }
    });
  });

  it('defaults quoted in the help are the ones the code uses', async () => {
    const up = (await runCli(['dev', 'up', '--help'])).stdout.replace(/\s+/g, ' ');
    for (const line of DEFAULT_READY_LINES) assert.ok(up.includes(`"${line}"`), line);
    assert.ok(up.includes(`(default ${DEFAULT_UP_TIMEOUT_SECONDS});`));
    const down = (await runCli(['dev', 'down', '--help'])).stdout.replace(/\s+/g, ' ');
    assert.ok(down.includes(`(default ${DEFAULT_DOWN_TIMEOUT_SECONDS})`));
    const console = (await runCli(['dev', 'console', '--help'])).stdout.replace(/\s+/g, ' ');
    assert.ok(console.includes(`(default ${DEFAULT_IDLE_SECONDS});`));
    assert.ok(console.includes(`at most ${MAX_DRAIN_SECONDS} s`));
  });
});

/** Every environment variable a source file reads: MVM_* named anywhere, and env['NAME']. */
function variablesRead(dir = new URL('../src/', import.meta.url)): Set<string> {
  const found = new Set<string>();
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile() || !entry.name.endsWith('.ts')) continue;
    const text = readFileSync(join(entry.parentPath, entry.name), 'utf8');
    for (const m of text.matchAll(/\bMVM_[A-Z0-9_]*[A-Z0-9]\b/g)) found.add(m[0]);
    for (const m of text.matchAll(/\benv\[\s*'([A-Z][A-Z0-9_]*)'\s*\]/g)) found.add(m[1]!);
  }
  return found;
}

describe('mvmctl --help lists every command and every environment variable', () => {
  let help: string;
  before(async () => {
    help = (await runCli(['--help'])).stdout;
  });

  it('every variable the sources read, one line each', () => {
    const read = variablesRead();
    assert.ok(read.has('MVM_DATA_DIR') && read.has('MVM_HTTP_TIMEOUT_SECONDS') && read.has('HOME'));
    const env = help.slice(help.indexOf('\nEnvironment:\n')).split('\n\n')[0]!;
    const missing = [...read].filter((name) => !new RegExp(`^ {2}${name}\\b`, 'm').test(env));
    assert.deepEqual(missing, [], 'read by src/ but not in mvmctl --help');
    // And nothing listed that nothing reads (the proxies are read by undici's EnvHttpProxyAgent).
    const listed = ENVIRONMENT.map((e) => e.name).filter((n) => !/_PROXY$/.test(n) && n !== 'PATH');
    assert.deepEqual(
      listed.filter((n) => !read.has(n)),
      [],
      'listed but read nowhere',
    );
  });

  it('every command, the online ones, store management and metrics serve included', () => {
    const commands = help.slice(help.indexOf('\nCommands:\n')).split('\n\n')[0]!;
    for (const key of leaves) assert.match(commands, new RegExp(`^ {2}${key}\\b`, 'm'), key);
    for (const key of [
      'dev fetch',
      'dev pull',
      'dev images',
      'dev rm',
      'dev prune',
      'metrics serve',
    ])
      assert.match(commands, new RegExp(`^ {2}${key}\\b`, 'm'), key);
  });
});

const has = (tool: string): boolean => {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};

/** Runs a bash snippet with the completion script loaded from the CLI itself. */
function bash(
  snippet: string,
  cwd?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const script = `source <("$MVM_NODE" "$MVM_CLI" completion bash) || exit 9\n${snippet}`;
  return new Promise((resolve) => {
    execFile(
      'bash',
      ['--norc', '--noprofile', '-c', script],
      {
        env: { ...process.env, MVM_NODE: process.execPath, MVM_CLI: CLI },
        ...(cwd ? { cwd } : {}),
      },
      (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    );
  });
}

/** What bash completion offers after the given words (the last one being typed). */
async function offered(line: string[], cwd?: string): Promise<string[]> {
  const quoted = line.map((w) => `'${w.replace(/'/g, `'\\''`)}'`).join(' ');
  const r = await bash(
    `COMP_WORDS=(${quoted}); COMP_CWORD=${line.length - 1}; _mvmctl; printf '%s\\n' "\${COMPREPLY[@]}"`,
    cwd,
  );
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.split('\n').filter(Boolean).sort();
}

describe('mvmctl completion bash|zsh|fish', () => {
  let dir: string;
  /** A directory holding one subdirectory and one file, for the value hints. */
  let values: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'mvm-completion-'));
    values = join(dir, 'values');
    mkdirSync(join(values, 'sub'), { recursive: true });
    writeFileSync(join(values, 'file.json'), '{}');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('bash: the script parses (bash -n) and registers mvmctl (complete -p)', async () => {
    const r = await runCli(['completion', 'bash']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${bashCompletion()}`);
    const path = join(dir, 'mvmctl.bash');
    writeFileSync(path, r.stdout);
    execFileSync('bash', ['-n', path]);
    const p = await bash('complete -p mvmctl');
    assert.equal(p.code, 0, p.stderr);
    assert.match(p.stdout, /^complete -F _mvmctl mvmctl$/m);
    // A broken script is caught the same way.
    writeFileSync(path, `${r.stdout}\ncase x in\n`);
    assert.throws(() => execFileSync('bash', ['-n', path], { stdio: 'ignore' }));
  });

  it('bash: commands, subcommands and aliases', async () => {
    const top = await offered(['mvmctl', '']);
    for (const w of [
      'dev',
      'verify-blob',
      'status',
      'metrics',
      'revocations',
      'audit',
      'completion',
    ])
      assert.ok(top.includes(w), w);
    assert.deepEqual(await offered(['mvmctl', 'dev', 'fe']), ['fetch']);
    assert.deepEqual(await offered(['mvmctl', 'dev', 'sh']), ['shell']);
    assert.deepEqual(await offered(['mvmctl', 'revocations', '']), ['import', 'refresh', 'status']);
    assert.deepEqual(await offered(['mvmctl', 'completion', '']), ['bash', 'fish', 'zsh']);
  });

  it('bash: each command’s own flags, after any words and flag values', async () => {
    await all(leaves, async (key) => {
      const expected = shownFlags(key)
        .filter((f) => !f.compatOnly)
        .flatMap((f) =>
          f.name.length === 1
            ? [`-${f.name}`]
            : [`--${f.name}`, ...(f.short ? [`-${f.short}`] : [])],
        )
        .sort();
      assert.deepEqual(await offered(['mvmctl', ...words(key), '-']), expected, key);
    });
    // A flag's value is skipped: --port's value is not read as a command word.
    assert.deepEqual(await offered(['mvmctl', 'dev', 'up', '--port', '8080:80', '--acc']), [
      '--accel',
    ]);
    assert.deepEqual(await offered(['mvmctl', 'dev', 'shell', '--i']), ['--idle']);
  });

  it('bash: value hints: the arches, directories for DIR, files for FILE', async () => {
    assert.deepEqual(await offered(['mvmctl', 'dev', 'fetch', '--arch', '']), [
      'aarch64',
      'x86_64',
    ]);
    assert.deepEqual(await offered(['mvmctl', 'dev', 'up', '--accel', '']), ['auto', 'kvm', 'tcg']);
    assert.deepEqual(await offered(['mvmctl', 'dev', 'fetch', '--out', ''], values), ['sub']);
    assert.deepEqual(await offered(['mvmctl', 'dev', 'import-image', '--manifest', ''], values), [
      'file.json',
      'sub',
    ]);
    assert.deepEqual(await offered(['mvmctl', 'dev', 'fetch', '--out', '=', ''], values), ['sub']);
    assert.deepEqual(await offered(['mvmctl', 'dev', 'up', '--ready-line', '']), []);
  });

  for (const shell of ['zsh', 'fish'] as const) {
    it(`${shell}: a script naming every command and flag${has(shell) ? `, checked by ${shell} -n` : ` (${shell} is not installed: not run)`}`, async () => {
      const r = await runCli(['completion', shell]);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.length > 1000);
      for (const key of COMMAND_KEYS)
        for (const w of words(key)) assert.ok(r.stdout.includes(w), `${shell}: ${key}`);
      for (const key of leaves)
        for (const f of shownFlags(key).filter((x) => !x.compatOnly && x.name.length > 1))
          assert.ok(
            r.stdout.includes(shell === 'fish' ? `-l ${f.name}` : `--${f.name}`),
            `${shell}: ${key} --${f.name}`,
          );
      if (has(shell)) {
        const path = join(dir, `mvmctl.${shell}`);
        writeFileSync(path, r.stdout);
        execFileSync(shell, ['-n', path]);
      }
    });
  }

  it(
    `zsh: registered with compinit, and completes commands, flags and values${has('zsh') ? '' : ' (zsh is not installed: not run)'}`,
    { skip: !has('zsh') },
    async () => {
      const script = join(dir, 'mvmctl.zsh');
      writeFileSync(script, (await runCli(['completion', 'zsh'])).stdout);
      // compinit's helpers are replaced by ones that print what they were given.
      const probe = `autoload -Uz compinit && compinit -u -D
source ${script}
print -r -- "registered=$_comps[mvmctl]"
_describe() { local -a arr; arr=("\${(@P)\${@[-1]}}"); print -rl -- "\${arr[@]%%:*}"; }
compadd() { [[ $1 == -a ]] && print -rl -- "\${(@P)2}"; }
_files() { print -r -- "FILES $*"; }
t() { words=("$@"); CURRENT=$#words; print -r -- "== $*"; _mvmctl; }
t mvmctl dev sh
t mvmctl dev fetch --arch ''
t mvmctl dev fetch --out ''
t mvmctl revocations import -
`;
      const out = execFileSync('zsh', ['-f', '-c', probe], { encoding: 'utf8', cwd: dir });
      const section = (title: string) =>
        out.split(`== ${title}\n`)[1]!.split('\n==')[0]!.split('\n');
      assert.match(out, /^registered=_mvmctl$/m);
      assert.ok(section('mvmctl dev sh').includes('shell'));
      assert.deepEqual(section('mvmctl dev fetch --arch '), ['x86_64', 'aarch64']);
      assert.deepEqual(section('mvmctl dev fetch --out '), ['FILES -/']);
      assert.ok(section('mvmctl revocations import -').includes('--list'));
      assert.ok(!section('mvmctl revocations import -').includes('--offline'));
    },
  );

  it(
    `fish: completes commands, flags and values${has('fish') ? '' : ' (fish is not installed: not run)'}`,
    { skip: !has('fish') },
    async () => {
      const script = join(dir, 'mvmctl.fish');
      writeFileSync(script, (await runCli(['completion', 'fish'])).stdout);
      const complete = (line: string): string[] =>
        execFileSync('fish', ['--no-config', '-c', `source ${script}; complete -C '${line}'`], {
          encoding: 'utf8',
        })
          .split('\n')
          .filter(Boolean)
          .map((l) => l.split('\t')[0]!)
          .sort();
      assert.deepEqual(complete('mvmctl dev fe'), ['fetch']);
      assert.deepEqual(complete('mvmctl dev fetch --arch '), ['aarch64', 'x86_64']);
      assert.deepEqual(complete('mvmctl revocations '), ['import', 'refresh', 'status']);
      assert.ok(complete('mvmctl dev logs -').includes('--follow'));
      assert.ok(complete('mvmctl dev up --port 80:80 --acc').includes('--accel'));
    },
  );

  it('an unknown shell is a usage error', async () => {
    assertUsage(await runCli(['completion', 'tcsh']), /"tcsh" is not bash, zsh or fish/);
    assertUsage(await runCli(['completion']), /needs the shell/);
  });
});

/**
 * The roff requests the man page may use, and what must balance: a check for
 * hosts without groff (groff itself checks the page where it is installed).
 */
export function roffProblems(text: string): string[] {
  const problems: string[] = [];
  const allowed = new Set([
    'TH',
    'SH',
    'SS',
    'TP',
    'PP',
    'RS',
    'RE',
    'nf',
    'fi',
    'nh',
    'ad',
    '\\"',
  ]);
  let rs = 0;
  let nf = 0;
  text.split('\n').forEach((l, i) => {
    const at = `line ${i + 1}`;
    if (/^[.']/.test(l)) {
      const request = /^[.'](\\"|[A-Za-z]+)/.exec(l)?.[1];
      if (!request || !allowed.has(request)) problems.push(`${at}: unknown request ${l}`);
      if (request === 'RS') rs++;
      if (request === 'RE') rs--;
      if (request === 'nf') nf++;
      if (request === 'fi') nf--;
      if (rs < 0 || nf < 0 || nf > 1) problems.push(`${at}: unbalanced ${request}`);
      return;
    }
    const stripped = l.replace(/\\(f[BIR]|e|-|&|\(..|\[u[0-9A-F]{4,6}\]|\|)/g, '');
    if (stripped.includes('\\')) problems.push(`${at}: unknown escape in ${l}`);
    if ((l.match(/\\fB|\\fI/g) ?? []).length !== (l.match(/\\fR/g) ?? []).length)
      problems.push(`${at}: font not restored in ${l}`);
  });
  if (rs !== 0 || nf !== 0) problems.push('unbalanced .RS/.RE or .nf/.fi at the end');
  return problems;
}

describe('the man page, man/mvmctl.1', () => {
  const committed = readFileSync(new URL('man/mvmctl.1', ROOT), 'utf8');

  it('is what the table gives today (run npm run man after changing the table)', () => {
    assert.equal(committed, manPage());
  });

  it('docs/cli.md, the command reference, is what the table gives today (npm run man)', async () => {
    const filepath = new URL('docs/cli.md', ROOT).pathname;
    const expected = await prettier.format(cliReference(), {
      ...((await prettier.resolveConfig(filepath)) ?? {}),
      filepath,
    });
    assert.equal(readFileSync(filepath, 'utf8'), expected);
    for (const key of COMMAND_KEYS) assert.ok(expected.includes(`\n## mvmctl ${key}\n`), key);
  });

  it('names every command and every environment variable', () => {
    for (const key of COMMAND_KEYS)
      assert.ok(committed.includes(`.SS mvmctl ${key.replace(/-/g, '\\-')}\n`), key);
    for (const e of ENVIRONMENT) assert.ok(committed.includes(`\\fB${e.name}`), e.name);
  });

  it(`renders without a warning${has('groff') ? ' (groff -man -ww)' : ' (groff is not installed: checked by a small roff parser)'}`, () => {
    assert.deepEqual(roffProblems(committed), []);
    assert.ok(
      roffProblems('.TH X 1\n.XY bad\n\\fBbold\nback\\slash\n.RE\n').length >= 4,
      'the parser catches a bad page',
    );
    if (has('groff')) {
      const r = execFileSync(
        'sh',
        ['-c', 'groff -man -Tutf8 -ww -z "$1" 2>&1', 'sh', new URL('man/mvmctl.1', ROOT).pathname],
        {
          encoding: 'utf8',
        },
      );
      assert.equal(r, '', 'groff warnings');
      const page = execFileSync(
        'groff',
        ['-man', '-Tutf8', '-P-cbou', new URL('man/mvmctl.1', ROOT).pathname],
        {
          encoding: 'utf8',
        },
      );
      assert.match(page, /mvmctl dev fetch \[--version V\]/);
      assert.match(page, /MVM_REQUIRE_FRESH_REVOCATIONS=1/);
    }
  });

  it('ships in the npm package (files and man in package.json)', () => {
    assert.ok(pkg.files.includes('man'));
    assert.deepEqual(pkg.man, ['./man/mvmctl.1']);
    const [packed] = JSON.parse(
      execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
        cwd: new URL('.', ROOT).pathname,
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }),
    );
    assert.ok(
      packed.files.some((f: { path: string }) => f.path === 'man/mvmctl.1'),
      'npm pack includes man/mvmctl.1',
    );
  });
});
