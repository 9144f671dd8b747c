import { readFileSync } from 'node:fs';

declare const __MVMCTL_BUNDLED_VERSION__: string | undefined;

/**
 * The package version, which is also the runtime version release manifests
 * are pinned to (SPEC.md section 3, step 3). The CLI bundle has it compiled in
 * (scripts/bundle-cli.mjs); unbundled code reads package.json, one level up
 * from src/ and from dist/.
 */
export const MVMCTL_VERSION: string =
  typeof __MVMCTL_BUNDLED_VERSION__ === 'string'
    ? __MVMCTL_BUNDLED_VERSION__
    : (
        JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
          version: string;
        }
      ).version;
