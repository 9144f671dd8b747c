// Preloaded into a benchmarked process (node --import): on exit, writes the
// process's peak resident set size in KiB to the file named by MVM_BENCH_RSS_FILE.
import { writeFileSync } from 'node:fs';
process.on('exit', () => {
  const file = process.env.MVM_BENCH_RSS_FILE;
  if (file) writeFileSync(file, String(process.resourceUsage().maxRSS));
});
