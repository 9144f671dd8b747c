// Bundles the CLI (dist/cli/main.js and the commands it loads lazily) into a
// few files, so a cold start parses one module graph instead of resolving
// hundreds of files: module loading is most of mvmctl's start-up time.
// The library entry (dist/index.js) stays as tsc wrote it.
import { build } from 'esbuild';
import { readdirSync, rmSync } from 'node:fs';
import { nodeBundle } from './bundle-options.mjs';

// Chunks sit beside main.js: modules find assets/ and package.json at a fixed depth (dist/<dir>/).
// The previous build's chunks and lazily loaded entries go first (esbuild names them name-HASH.js).
for (const f of readdirSync(new URL('../dist/cli/', import.meta.url))) {
  if (/-[A-Z0-9]{8}\.js$/.test(f)) rmSync(new URL(`../dist/cli/${f}`, import.meta.url));
}
await build({
  ...nodeBundle,
  entryPoints: { main: 'dist/cli/main.js' },
  outdir: 'dist/cli',
  allowOverwrite: true,
  splitting: true,
  chunkNames: '[name]-[hash]',
  format: 'esm',
  // Bundled CommonJS dependencies call require() for Node built-ins.
  banner: {
    js: "import { createRequire as __mvmRequire } from 'node:module'; const require = __mvmRequire(import.meta.url);",
  },
});
