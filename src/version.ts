import { readFileSync } from 'node:fs';

/**
 * The package version, which is also the runtime version release manifests
 * are pinned to (SPEC.md section 3, step 3). Read from package.json so there
 * is one source of truth; src/ and dist/ sit at the same depth.
 */
export const MVMCTL_VERSION: string = (
  JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  }
).version;
