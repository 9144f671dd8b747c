// The main script of the single executables (mvmctl-linux-<arch>), run by
// Node.js as CommonJS. mvmctl itself travels in the executable as assets: the
// same code-split bundle as dist/cli/ (each file turned into CommonJS by
// scripts/dist.mjs), compiled only when first required. One script holding
// every command would be compiled whole on every start (~20 ms here, 1.7x
// `node -e 0` for `--version`); this keeps the CLI's lazy loading.
'use strict';
/* global require -- a SEA's main script is CommonJS: require() is its only loader */
/* eslint-disable @typescript-eslint/no-require-imports */
const { getAsset } = require('node:sea');
const { compileFunction } = require('node:vm');
const { pathToFileURL } = require('node:url');

const builtin = require;
// What import.meta.url was in the bundle: nothing is read beside the executable
// (version and trusted root are compiled in), so paths derived from it point at it.
const importMetaUrl = pathToFileURL(process.execPath).href;
const loaded = new Map();

function load(name) {
  const cached = loaded.get(name);
  if (cached !== undefined) return cached.exports;
  const module = { exports: {} };
  loaded.set(name, module);
  const fn = compileFunction(
    getAsset(name, 'utf8'),
    ['exports', 'require', 'module', '__mvmImportMetaUrl'],
    { filename: `mvmctl:${name}` },
  );
  fn.call(module.exports, module.exports, requireFromBundle, module, importMetaUrl);
  return module.exports;
}

/** Bundle files name each other './<file>.js'; anything else is a Node.js built-in. */
function requireFromBundle(id) {
  return id.startsWith('./') ? load(id.slice(2)) : builtin(id);
}

load('main.js');
