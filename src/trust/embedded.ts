/**
 * The trust material built into mvmctl: the pinned Sigstore trusted root and
 * the TUF root.json of the repository it comes from. Node built-ins only:
 * reading them loads no Sigstore library.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Path of the pinned public-good root shipped in the package (see assets/TRUSTED_ROOT.md). */
export const EMBEDDED_TRUSTED_ROOT_PATH = fileURLToPath(
  new URL('../../assets/trusted_root.json', import.meta.url),
);

declare const __MVMCTL_EMBEDDED_TRUSTED_ROOT__: string | undefined;
declare const __MVMCTL_EMBEDDED_TUF_ROOT__: string | undefined;

/** Path of the pinned TUF root.json of Sigstore's public-good repository (see assets/TRUSTED_ROOT.md). */
export const EMBEDDED_TUF_ROOT_PATH = fileURLToPath(
  new URL('../../assets/tuf-root.json', import.meta.url),
);

/**
 * The pinned TUF root's exact bytes: the anchor of `trust import` and
 * `trust fetch` until a newer root is installed.
 */
export function embeddedTufRootBytes(): Buffer {
  return typeof __MVMCTL_EMBEDDED_TUF_ROOT__ === 'string'
    ? Buffer.from(__MVMCTL_EMBEDDED_TUF_ROOT__, 'utf8')
    : readFileSync(EMBEDDED_TUF_ROOT_PATH);
}

/**
 * The pinned root's exact bytes. The CLI bundle has them compiled in
 * (scripts/bundle-cli.mjs), so a copied bundle or a single executable needs no
 * assets/ beside it; the library reads the file shipped in the package.
 */
export function embeddedTrustedRootBytes(): Uint8Array {
  return typeof __MVMCTL_EMBEDDED_TRUSTED_ROOT__ === 'string'
    ? Buffer.from(__MVMCTL_EMBEDDED_TRUSTED_ROOT__, 'utf8')
    : readFileSync(EMBEDDED_TRUSTED_ROOT_PATH);
}
