// Writes man/mvmctl.1 and docs/cli.md from the command table (src/cli/spec.ts),
// the same table --help and the completion scripts come from. Run with
// `npm run man` after changing a command, a flag, an environment variable or
// an exit code; test/cli-spec.test.ts fails while a committed file differs.
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as prettier from 'prettier';
import { manPage } from '../src/cli/man.ts';
import { cliReference } from '../src/cli/reference.ts';

/** The reference as the repository's formatting check (prettier) leaves it. */
export async function formattedReference() {
  const filepath = fileURLToPath(new URL('../docs/cli.md', import.meta.url));
  const options = (await prettier.resolveConfig(filepath)) ?? {};
  return prettier.format(cliReference(), { ...options, filepath });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  writeFileSync(new URL('../man/mvmctl.1', import.meta.url), manPage());
  writeFileSync(new URL('../docs/cli.md', import.meta.url), await formattedReference());
}
