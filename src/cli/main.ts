#!/usr/bin/env node
import { run } from './run.js';

// Exit as soon as the command is done: a DNS lookup still pending in the
// thread pool (an air-gapped host without MVM_OFFLINE) must not hold the
// process open. stdout and stderr are synchronous for files and pipes on Linux.
process.exit(await run(process.argv.slice(2)));
