/**
 * Entry of the single executables (mvmctl-linux-<arch>): main.ts without its
 * top-level await, which CommonJS cannot have. scripts/dist.mjs bundles from
 * here into CommonJS files that scripts/sea-loader.cjs loads from the blob.
 */
import { run } from './run.js';
import { unsupportedRuntime } from './runtime.js';

// The executable carries its own Node.js, so this only fires if someone
// injects the blob into an old one; keep the same plain refusal as main.ts.
const refusal = unsupportedRuntime(process.versions.node);
if (refusal !== undefined) {
  process.stderr.write(refusal);
  process.exit(1);
}

// Exit as soon as the command is done, as main.ts does (a pending DNS lookup must not hold the process open).
void run(process.argv.slice(2)).then((code) => process.exit(code));
