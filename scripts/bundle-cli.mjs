// Bundles the CLI (dist/cli/main.js and the commands it loads lazily) into a
// few files, so a cold start parses one module graph instead of resolving
// hundreds of files: module loading is most of mvmctl's start-up time.
// The library entry (dist/index.js) stays as tsc wrote it.
import { build } from 'esbuild';
import { readdirSync, readFileSync, rmSync } from 'node:fs';

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
// Chunks sit beside main.js: modules find assets/ and package.json at a fixed depth (dist/<dir>/).
for (const f of readdirSync(new URL('../dist/cli/', import.meta.url))) {
  if (/^chunk-.*\.js$/.test(f)) rmSync(new URL(`../dist/cli/${f}`, import.meta.url));
}
await build({
  entryPoints: { main: 'dist/cli/main.js' },
  outdir: 'dist/cli',
  allowOverwrite: true,
  bundle: true,
  splitting: true,
  chunkNames: '[name]-[hash]',
  format: 'esm',
  platform: 'node',
  target: 'node24',
  // Bundled CommonJS dependencies call require() for Node built-ins.
  banner: {
    js: "import { createRequire as __mvmRequire } from 'node:module'; const require = __mvmRequire(import.meta.url);",
  },
  define: {
    __MVMCTL_BUNDLED_VERSION__: JSON.stringify(version),
    // The pinned trusted root travels inside the CLI, byte for byte (its SHA-256 is in assets/TRUSTED_ROOT.md).
    __MVMCTL_EMBEDDED_TRUSTED_ROOT__: JSON.stringify(
      readFileSync(new URL('../assets/trusted_root.json', import.meta.url), 'utf8'),
    ),
  },
  logLevel: 'warning',
});
