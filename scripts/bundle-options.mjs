// esbuild options every mvmctl bundle shares: the CLI's ESM bundle
// (scripts/bundle-cli.mjs) and the single executable's CommonJS bundle
// (scripts/dist.mjs). Both carry the version and the pinned trusted root
// compiled in, so neither reads package.json or assets/ at run time.
import { readFileSync } from 'node:fs';

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));

export const VERSION = version;

export const define = {
  __MVMCTL_BUNDLED_VERSION__: JSON.stringify(version),
  // The pinned trusted root travels inside the CLI, byte for byte (its SHA-256 is in assets/TRUSTED_ROOT.md).
  __MVMCTL_EMBEDDED_TRUSTED_ROOT__: JSON.stringify(
    readFileSync(new URL('../assets/trusted_root.json', import.meta.url), 'utf8'),
  ),
  // The TUF root.json that `trust import` and `trust fetch` start from (assets/TRUSTED_ROOT.md).
  __MVMCTL_EMBEDDED_TUF_ROOT__: JSON.stringify(
    readFileSync(new URL('../assets/tuf-root.json', import.meta.url), 'utf8'),
  ),
};

export const nodeBundle = {
  bundle: true,
  platform: 'node',
  target: 'node24',
  define,
  logLevel: 'warning',
};
