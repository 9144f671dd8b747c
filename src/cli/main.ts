#!/usr/bin/env node
import { useCompileCache } from './compile-cache.js';
import { unsupportedRuntime } from './runtime.js';

// The maintained Sigstore line needs a maintained Node.js; on an older runtime
// say so plainly instead of failing somewhere inside a library.
const refusal = unsupportedRuntime(process.versions.node);
if (refusal !== undefined) {
  process.stderr.write(refusal);
  process.exit(1);
}

// Before the CLI's modules load, so that their compiled code comes from the cache.
useCompileCache();
const { run } = await import('./run.js');

// Exit as soon as the command is done: a DNS lookup still pending in the
// thread pool (an air-gapped host without MVM_OFFLINE) must not hold the
// process open. stdout and stderr are synchronous for files and pipes on Linux.
process.exit(await run(process.argv.slice(2)));
