/**
 * The layers of src/ hold: every import points down the order README.md
 * writes in its Layers block, no file reaches itself through its imports, and
 * the README's Layout block names the folders that exist. Each check runs on
 * the real tree, and on a copy of it with a deliberate break, so a check that
 * could never fail would show.
 */
import assert from 'node:assert/strict';
import {
  appendFileSync,
  cpSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  importCycles,
  importGraph,
  layerViolations,
  parseLayerRule,
  sourceFiles,
  unitOf,
} from './support/layers.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SRC = join(ROOT, 'src');
const README = readFileSync(join(ROOT, 'README.md'), 'utf8');

const show = (items: readonly unknown[]): string => items.map((i) => JSON.stringify(i)).join('\n');

describe('the layers of src/', () => {
  const rule = parseLayerRule(README);
  const graph = importGraph(SRC);

  it('reads the whole tree (a graph with no imports would pass anything)', () => {
    assert.ok(graph.size > 50, `only ${graph.size} files read`);
    const edges = [...graph.values()].reduce((n, t) => n + t.length, 0);
    assert.ok(edges > 200, `only ${edges} imports read`);
    // Type-only, re-exported and dynamic imports are read too.
    assert.ok(graph.get('trust/tlog.ts')?.includes('trust/verified.ts'), 'import type');
    assert.ok(graph.get('index.ts')?.includes('trust/verify.ts'), 'export … from');
    assert.ok(graph.get('cli/commands/metrics.ts')?.includes('telemetry/server.ts'), 'import()');
  });

  it('has no import the Layers block of README.md does not allow', () => {
    const violations = layerViolations(graph, rule);
    assert.deepEqual(violations, [], `imports that break the layers:\n${show(violations)}`);
  });

  it('has no import cycle', () => {
    const cycles = importCycles(graph);
    assert.deepEqual(cycles, [], `import cycles:\n${show(cycles)}`);
  });

  it('lists in the Layers block exactly the units src/ has, each allowed only listed units', () => {
    const units = [...new Set(sourceFiles(SRC).map(unitOf))].sort();
    assert.deepEqual([...rule.keys()].sort(), units);
    for (const [unit, may] of rule) {
      for (const m of may) assert.ok(rule.has(m), `${unit} may import ${m}, which is not listed`);
    }
  });

  it('describes every folder of src/ in the Layout block of README.md, and no other', () => {
    const layout = /## Layout\n\n```\n([\s\S]*?)```/.exec(README)?.[1];
    assert.ok(layout, 'README.md has a Layout block');
    const described = [...layout.matchAll(/^src\/([a-z-]+)\/\s/gm)].map((m) => m[1]!).sort();
    const folders = [...new Set(sourceFiles(SRC).map(unitOf))]
      .filter((u) => !u.endsWith('.ts'))
      .sort();
    assert.deepEqual(described, folders);
    for (const file of new Set(sourceFiles(SRC).map(unitOf))) {
      if (file.endsWith('.ts'))
        assert.match(layout, new RegExp(`src/${file.replace('.', '\\.')}\\b`));
    }
  });
});

describe('the layer check catches a break', () => {
  const work = mkdtempSync(join(tmpdir(), 'mvmctl-layers-'));
  after(() => rmSync(work, { recursive: true, force: true }));
  const rule = parseLayerRule(README);

  /** A copy of the real src/ with `change` applied. */
  const broken = (name: string, change: (src: string) => void): Map<string, string[]> => {
    const src = join(work, name);
    cpSync(SRC, src, { recursive: true });
    change(src);
    return importGraph(src);
  };

  it('names an import that runs up, whether a value, a type or a dynamic import', () => {
    const graph = broken('upward', (src) => {
      appendFileSync(join(src, 'core/json.ts'), "\nimport type { Config } from '../config.js';\n");
      appendFileSync(
        join(src, 'store/receipt.ts'),
        "\nexport const later = () => import('../pipeline/pull.js');\n",
      );
      appendFileSync(
        join(src, 'vm/state.ts'),
        "\nexport { importImage } from '../pipeline/import-image.js';\n",
      );
    });
    assert.deepEqual(
      layerViolations(graph, rule)
        .map((v) => `${v.from} -> ${v.to}: ${v.why}`)
        .sort(),
      [
        'core/json.ts -> config.ts: core may not import config.ts',
        'store/receipt.ts -> pipeline/pull.ts: store may not import pipeline',
        'vm/state.ts -> pipeline/import-image.ts: vm may not import pipeline',
      ],
    );
  });

  it('names a cycle, inside one folder as well as across folders', () => {
    const graph = broken('cycle', (src) => {
      appendFileSync(
        join(src, 'trust/verified.ts'),
        "\nimport type { SignerMaterial } from './tlog.js';\n",
      );
    });
    assert.deepEqual(importCycles(graph), [['trust/tlog.ts', 'trust/verified.ts']]);
    assert.deepEqual(layerViolations(graph, rule), [], 'a cycle inside trust/ breaks no layer');
  });

  it('refuses a folder the Layers block does not list, and an import of a file that is not there', () => {
    const graph = broken('unlisted', (src) => {
      mkdirSync(join(src, 'plugins'));
      writeFileSync(join(src, 'plugins/extra.ts'), 'export const x = 1;\n');
      appendFileSync(join(src, 'io/files.ts'), "\nimport './gone.js';\n");
    });
    assert.deepEqual(
      layerViolations(graph, rule).map((v) => `${v.from}: ${v.why}`),
      [
        'io/files.ts: imports a file that does not exist',
        'plugins/extra.ts: plugins is not in the Layers block of README.md',
      ],
    );
  });

  it('cannot read a Layers block it does not understand', () => {
    assert.throws(() => parseLayerRule('# no layers here\n'), /no "### Layers" section/);
    assert.throws(
      () => parseLayerRule('### Layers\n\n```\nunit  may import\ncore/ -\n```\n'),
      /cannot read this line/,
    );
  });
});
