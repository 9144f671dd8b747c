/**
 * The layering rule of src/, read from where a reader sees it (the "Layers"
 * block of README.md) and checked against the imports the code really has.
 *
 * A unit is a top-level folder of src/ (`store`) or a file directly in it
 * (`config.ts`). Imports are read with TypeScript's own pre-processor, so
 * `import type`, `export … from` and dynamic `import()` all count: a type
 * that runs back up is as much a tangle as a value.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative, sep } from 'node:path';
import ts from 'typescript';

/** unit -> the units it may import (its own files, and those every unit may use, come on top). */
export type LayerRule = ReadonlyMap<string, ReadonlySet<string>>;

/** Units any other unit may import: the error family and the version string depend on nothing. */
export const EVERYONE_MAY_IMPORT: ReadonlySet<string> = new Set(['errors.ts', 'version.ts']);

/**
 * The rule as README.md writes it: in the fenced block after the `### Layers`
 * heading, one line per unit, `unit/` or `file.ts`, then (after two spaces or
 * more) the comma-separated units it may import, or `-` for none. The first
 * line is the column heading.
 */
export function parseLayerRule(readme: string): LayerRule {
  const at = readme.search(/^### Layers$/m);
  if (at < 0) throw new Error('README.md has no "### Layers" section');
  const block = /```\n([\s\S]*?)```/.exec(readme.slice(at));
  if (!block) throw new Error('the Layers section of README.md has no fenced block');
  const rule = new Map<string, Set<string>>();
  for (const line of block[1]!.split('\n').slice(1)) {
    if (line.trim() === '') continue;
    const m = /^(\S+)\s{2,}(\S.*)$/.exec(line);
    if (!m) throw new Error(`cannot read this line of the Layers block: ${JSON.stringify(line)}`);
    const unit = unitName(m[1]!);
    const may = m[2]!.trim() === '-' ? [] : m[2]!.split(',').map((u) => unitName(u.trim()));
    if (rule.has(unit)) throw new Error(`the Layers block lists ${unit} twice`);
    rule.set(unit, new Set(may));
  }
  return rule;
}

/** `store/` and `store` name the same unit; a file keeps its extension. */
const unitName = (s: string): string => s.replace(/\/$/, '');

/** The unit a src-relative path belongs to. */
export const unitOf = (srcRelative: string): string => srcRelative.split(sep)[0]!;

/** Every .ts file under `srcDir`, src-relative, in a stable order. */
export function sourceFiles(srcDir: string): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && e.name.endsWith('.ts')) out.push(relative(srcDir, p));
    }
  };
  walk(srcDir);
  return out.sort();
}

/** file -> the src files it imports (relative specifiers only; `x.js` is the source `x.ts`). */
export function importGraph(srcDir: string): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sourceFiles(srcDir)) {
    const text = readFileSync(join(srcDir, file), 'utf8');
    const targets = ts
      .preProcessFile(text, true, true)
      .importedFiles.map((i) => i.fileName)
      .filter((spec) => spec.startsWith('./') || spec.startsWith('../'))
      .map((spec) => normalize(join(dirname(file), spec)).replace(/\.js$/, '.ts'));
    graph.set(file, [...new Set(targets)]);
  }
  return graph;
}

export interface Violation {
  readonly from: string;
  readonly to: string;
  readonly why: string;
}

/** Imports the rule does not allow, and files of units the rule does not know. */
export function layerViolations(
  graph: ReadonlyMap<string, string[]>,
  rule: LayerRule,
): Violation[] {
  const out: Violation[] = [];
  for (const [from, targets] of graph) {
    const fromUnit = unitOf(from);
    const allowed = rule.get(fromUnit);
    if (!allowed) {
      out.push({ from, to: '', why: `${fromUnit} is not in the Layers block of README.md` });
      continue;
    }
    for (const to of targets) {
      const toUnit = unitOf(to);
      if (to.startsWith('..')) out.push({ from, to, why: 'imports from outside src/' });
      else if (!graph.has(to)) out.push({ from, to, why: 'imports a file that does not exist' });
      else if (toUnit === fromUnit || EVERYONE_MAY_IMPORT.has(toUnit) || allowed.has(toUnit))
        continue;
      else out.push({ from, to, why: `${fromUnit} may not import ${toUnit}` });
    }
  }
  return out;
}

/** Every import cycle between files (strongly connected components of more than one file, or a self-import). */
export function importCycles(graph: ReadonlyMap<string, string[]>): string[][] {
  // Tarjan's algorithm, recursive: src/ is about a hundred files, its import chains far shorter.
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next);
    next++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || (graph.get(v) ?? []).includes(v)) cycles.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return cycles;
}
