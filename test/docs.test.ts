/**
 * The documentation is part of the product: its links lead somewhere, it speaks
 * the operator's words, and it keeps up with the code (every environment
 * variable the sources read, every exit status of the error table). Each check
 * is a small function run over the real files, and also over a bad sample, so
 * a check that could never fail would show.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ERROR_TABLE } from '../src/errors.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** README.md and every Markdown file in docs/, as repository-relative paths. */
function docFiles(root = ROOT): string[] {
  const docs = readdirSync(join(root, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .sort()
    .map((f) => `docs/${f}`);
  return ['README.md', ...docs];
}

const read = (path: string): string => readFileSync(join(ROOT, path), 'utf8');

/** Markdown without its fenced code blocks and inline code: what is left is prose and links. */
function prose(markdown: string): string {
  return markdown.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '').replace(/`[^`\n]*`/g, '');
}

/** The targets of inline links and images, `[text](target)`, outside code. */
export function linkTargets(markdown: string): string[] {
  const out: string[] = [];
  for (const m of prose(markdown).matchAll(
    /!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g,
  )) {
    out.push(m[1]!);
  }
  return out;
}

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered. */
export function headingAnchors(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  const withoutCode = markdown.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '');
  for (const m of withoutCode.matchAll(/^#{1,6}\s+(.+?)\s*#*\s*$/gm)) {
    const base = m[1]!
      .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
      .toLowerCase()
      .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '')
      .replace(/ /g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    anchors.add(n === 0 ? base : `${base}-${n}`);
  }
  return anchors;
}

/** Paths the repository ignores (.gitignore): a link there works in a checkout, not in the repository. */
function ignoredBy(gitignore: string): (repoPath: string) => boolean {
  const rules = gitignore
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  return (p) =>
    rules.some((rule) =>
      rule.startsWith('*')
        ? p.endsWith(rule.slice(1))
        : p === rule.replace(/\/$/, '') || p.startsWith(rule.endsWith('/') ? rule : `${rule}/`),
    );
}

/**
 * The relative links of one document that do not lead to a file or directory
 * of the repository (or to a heading that exists, for a `#fragment` into
 * Markdown), each with the reason.
 */
export function brokenLinks(
  docPath: string,
  markdown: string,
  root = ROOT,
  ignored = ignoredBy(existsSync(join(root, '.gitignore')) ? read('.gitignore') : ''),
): string[] {
  const broken: string[] = [];
  for (const target of linkTargets(markdown)) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto: — not a file
    const [pathPart, fragment] = target.split('#', 2) as [string, string | undefined];
    const file = pathPart === '' ? join(root, docPath) : resolve(root, dirname(docPath), pathPart);
    const inRepo = relative(root, file);
    if (inRepo.startsWith('..') || inRepo.startsWith(sep)) {
      broken.push(`${target}: outside the repository`);
      continue;
    }
    if (!existsSync(file)) {
      broken.push(`${target}: ${inRepo} does not exist`);
      continue;
    }
    if (ignored(inRepo.split(sep).join('/'))) {
      broken.push(`${target}: ${inRepo} is not part of the repository (.gitignore)`);
      continue;
    }
    if (fragment !== undefined && file.endsWith('.md') && statSync(file).isFile()) {
      const text = pathPart === '' ? markdown : readFileSync(file, 'utf8');
      if (!headingAnchors(text).has(decodeURIComponent(fragment))) {
        broken.push(`${target}: ${inRepo} has no heading #${fragment}`);
      }
    }
  }
  return broken;
}

/** Words only the people building mvmctl use: operators were never told what they mean. */
const INSIDE_WORDS: readonly [RegExp, string][] = [
  [/SPEC\.md/i, 'SPEC.md'],
  [/\bseed\b/i, '"the seed"'],
  [/\.\.\/shared\b/, '../shared'],
  [/\bissue\s*#?\d+/i, 'an issue number'],
  [/\bplan\s+\d+\b/i, 'a plan number'],
  [/\bVM-FACTS\b/, 'VM-FACTS'],
];

export function insideWords(text: string): string[] {
  return INSIDE_WORDS.filter(([re]) => re.test(text)).map(([, name]) => name);
}

/** Every file under src/, recursively. */
function sourceFiles(dir = join(ROOT, 'src')): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory()
      ? sourceFiles(join(dir, e.name))
      : /\.(ts|mts|js|mjs)$/.test(e.name)
        ? [join(dir, e.name)]
        : [],
  );
}

const VARIABLE = /\bMVM_[A-Z0-9]+(?:_[A-Z0-9]+)*\b/g;

/** The MVM_* variables named in source text. */
export function variablesIn(text: string): Set<string> {
  return new Set(text.match(VARIABLE) ?? []);
}

/** Variables the sources name that the page does not, and variables the page names that no source does. */
export function variableDrift(
  sources: Set<string>,
  page: string,
): { undocumented: string[]; stale: string[] } {
  const documented = variablesIn(page);
  return {
    undocumented: [...sources].filter((v) => !documented.has(v)).sort(),
    stale: [...documented].filter((v) => !sources.has(v)).sort(),
  };
}

/** The rows of the page's "Exit codes" table: exit status -> the row's text. */
export function exitCodeRows(page: string): Map<number, string> {
  const section = /^## Exit codes\s*$([\s\S]*?)(?=^## |(?![\s\S]))/m.exec(page)?.[1] ?? '';
  const rows = new Map<number, string>();
  for (const m of section.matchAll(/^\|\s*(\d+)\s*\|(.*)$/gm)) rows.set(Number(m[1]), m[2]!);
  return rows;
}

/** What the error table says that the page's exit code table does not. */
export function exitCodeDrift(
  table: Readonly<Record<string, { exit: number; counter?: string }>>,
  page: string,
): string[] {
  const rows = exitCodeRows(page);
  const problems: string[] = [];
  for (const [code, c] of Object.entries(table)) {
    const row = rows.get(c.exit);
    if (row === undefined) {
      problems.push(`exit ${c.exit} (${code}) has no row in the exit code table`);
      continue;
    }
    if (!row.includes(`\`${code}\``))
      problems.push(`the row of exit ${c.exit} does not name ${code}`);
    if (c.counter && !row.includes(c.counter))
      problems.push(`the row of exit ${c.exit} does not name ${code}'s counter ${c.counter}`);
  }
  const exits = new Set(Object.values(table).map((c) => c.exit));
  for (const exit of rows.keys()) {
    if (exit !== 0 && !exits.has(exit))
      problems.push(`exit ${exit} is in the table but no error has it`);
  }
  return problems;
}

describe('documentation', () => {
  const docs = docFiles();

  it('covers the workflow, the errors, the store, configuration, the audit log and the dev VM', () => {
    for (const page of [
      'docs/README.md',
      'docs/air-gapped.md',
      'docs/errors.md',
      'docs/store.md',
      'docs/configuration.md',
      'docs/audit.md',
      'docs/dev-vm.md',
    ]) {
      assert.ok(docs.includes(page), `${page} is missing`);
    }
    const index = read('docs/README.md');
    for (const page of docs.filter((d) => d.startsWith('docs/') && d !== 'docs/README.md')) {
      assert.ok(
        linkTargets(index).includes(page.slice('docs/'.length)),
        `docs/README.md does not link ${page}`,
      );
    }
  });

  it('every relative link leads to a file of the repository (and an existing heading)', () => {
    const broken = docs.flatMap((d) => brokenLinks(d, read(d)).map((b) => `${d}: ${b}`));
    assert.deepEqual(broken, []);
  });

  it('the link check finds broken links', () => {
    const sample = [
      '[ok](docs/errors.md) [ok too](docs/errors.md#exit-codes) [web](https://example.com/x.md)',
      '[missing](docs/no-such-page.md) [spec](../shared/SPEC.md) [built](dist/cli/main.js)',
      '[anchor](docs/errors.md#no-such-heading) [here](#nowhere)',
      '`[in code](docs/nowhere.md)`',
      '```',
      '[in a block](docs/nowhere-either.md)',
      '```',
    ].join('\n');
    const broken = brokenLinks('README.md', sample);
    assert.equal(broken.length, 5, broken.join('\n'));
    for (const target of [
      'docs/no-such-page.md',
      '../shared/SPEC.md',
      'dist/cli/main.js',
      'docs/errors.md#no-such-heading',
      '#nowhere',
    ]) {
      assert.ok(
        broken.some((b) => b.startsWith(`${target}:`)),
        `${target} not reported: ${broken.join('; ')}`,
      );
    }
  });

  it('heading anchors are the ones GitHub makes', () => {
    const anchors = headingAnchors(
      '# Errors\n## Installing an image (`dev import-image`, `dev pull`)\n## Sharing a directory: `--share`\n## Sending records off the host: `MVM_AUDIT_SOCKET`\n## Errors\n',
    );
    assert.deepEqual(
      [...anchors],
      [
        'errors',
        'installing-an-image-dev-import-image-dev-pull',
        'sharing-a-directory---share',
        'sending-records-off-the-host-mvm_audit_socket',
        'errors-1',
      ],
    );
  });

  it("speaks the operator's words, not the development team's", () => {
    const found = docs.flatMap((d) => insideWords(read(d)).map((w) => `${d} mentions ${w}`));
    assert.deepEqual(found, []);
  });

  it('the word check finds inside words', () => {
    assert.deepEqual(
      insideWords(
        'See SPEC.md section 3, as the seed says (../shared/NOTES.md, issue 11, plan 36).',
      ),
      ['SPEC.md', '"the seed"', '../shared', 'an issue number', 'a plan number'],
    );
    assert.deepEqual(insideWords('mvmctl dev import-image --dir DIR; exit 13 when recalled.'), []);
  });

  it('every MVM_* variable the sources read is in docs/configuration.md, and no other', () => {
    const sources = new Set(
      sourceFiles().flatMap((f) => [...variablesIn(readFileSync(f, 'utf8'))]),
    );
    assert.ok(sources.has('MVM_DATA_DIR') && sources.size > 5, 'the sources were not read');
    assert.deepEqual(variableDrift(sources, read('docs/configuration.md')), {
      undocumented: [],
      stale: [],
    });
  });

  it('the variable check finds a variable left out, and one that no longer exists', () => {
    const sources = variablesIn(
      "const dir = env['MVM_DATA_DIR']; const t = env['MVM_NEW_SWITCH']; // MVM_OFFLINE=1",
    );
    assert.deepEqual([...sources].sort(), ['MVM_DATA_DIR', 'MVM_NEW_SWITCH', 'MVM_OFFLINE']);
    assert.deepEqual(
      variableDrift(sources, '`MVM_DATA_DIR`, `MVM_OFFLINE=1` and `MVM_OLD_SWITCH`'),
      { undocumented: ['MVM_NEW_SWITCH'], stale: ['MVM_OLD_SWITCH'] },
    );
  });

  it('every exit status of the error table is in docs/errors.md, with its code and counter', () => {
    const page = read('docs/errors.md');
    assert.ok(exitCodeRows(page).size >= 10, 'the exit code table was not found');
    assert.deepEqual(exitCodeDrift(ERROR_TABLE, page), []);
  });

  it('the exit status check finds a missing, a misnamed and an extra row', () => {
    const page = [
      '## Exit codes',
      '',
      '| Exit | code | meaning | counter |',
      '| ---- | ---- | ------- | ------- |',
      '| 0 | | ok | |',
      '| 10 | `signature` | bad signature | `dev_image_verify_sig_invalid_total` |',
      '| 14 | `digest` | mismatch | |',
      '| 99 | `other` | nothing has it | |',
      '',
      '## Next section',
      '| 13 | `revoked` | outside the table | |',
    ].join('\n');
    const table = {
      signature: { exit: 10, counter: 'dev_image_verify_sig_invalid_total' },
      digest: { exit: 14, counter: 'dev_image_verify_digest_mismatch_total' },
      revoked: { exit: 13 },
      rollback: { exit: 10 },
    };
    assert.deepEqual(exitCodeDrift(table, page), [
      "the row of exit 14 does not name digest's counter dev_image_verify_digest_mismatch_total",
      'exit 13 (revoked) has no row in the exit code table',
      'the row of exit 10 does not name rollback',
      'exit 99 is in the table but no error has it',
    ]);
  });
});
