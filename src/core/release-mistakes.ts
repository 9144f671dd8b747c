/**
 * The ways a release set is usually handed over wrongly, recognised from the
 * bytes (pure): the manifest and its bundle given the wrong way round, and an
 * artifact given in another's place. Telling these apart from tampering
 * matters: a swapped kernel and rootfs is an operator's slip, and counting it
 * as a digest mismatch would raise a fleet's tampering alarm for nothing.
 * Nothing here makes a file trusted; it only chooses the words of a refusal.
 */
import { parseJsonObject } from './json.js';
import { listedArtifact, sameDigest, type ArtifactRole, type Manifest } from './manifest.js';

const has = (o: Record<string, unknown>, key: string): boolean => Object.hasOwn(o, key);

/** A Sigstore bundle (any version, either media-type spelling) or a legacy cosign bundle, by its shape. */
export function looksLikeBundle(bytes: Uint8Array): boolean {
  const parsed = parseJsonObject(bytes);
  if (!parsed.ok) return false;
  const o = parsed.value;
  const mediaType = o['mediaType'];
  if (typeof mediaType === 'string' && mediaType.startsWith('application/vnd.dev.sigstore.bundle'))
    return true;
  return has(o, 'verificationMaterial') || (has(o, 'base64Signature') && has(o, 'rekorBundle'));
}

/** A release manifest (any schema_version), by its shape. */
export function looksLikeManifest(bytes: Uint8Array): boolean {
  const parsed = parseJsonObject(bytes);
  if (!parsed.ok) return false;
  const o = parsed.value;
  return has(o, 'schema_version') && Array.isArray(o['artifacts']);
}

/** What the two small files of a set are, when they are not what they were given as. */
export type DocumentMixUp =
  /** The manifest file is a bundle and the bundle file a manifest. */
  | 'swapped'
  /** The same manifest was given as both. */
  | 'manifest-twice'
  /** The file given as the manifest is a bundle (the bundle file is not a manifest). */
  | 'manifest-is-bundle'
  /** The file given as the bundle is a manifest (the manifest file is not a bundle). */
  | 'bundle-is-manifest';

export function documentMixUp(manifest: Uint8Array, bundle: Uint8Array): DocumentMixUp | undefined {
  const manifestIsBundle = looksLikeBundle(manifest);
  const bundleIsManifest = looksLikeManifest(bundle);
  if (manifestIsBundle && bundleIsManifest) return 'swapped';
  if (bundleIsManifest)
    return Buffer.from(bundle).equals(Buffer.from(manifest))
      ? 'manifest-twice'
      : 'bundle-is-manifest';
  if (manifestIsBundle) return 'manifest-is-bundle';
  return undefined;
}

/** A file given as `given` whose SHA-256 is the one the manifest records for `is`. */
export interface MisplacedArtifact {
  readonly given: ArtifactRole;
  readonly is: ArtifactRole;
}

/**
 * The files that carry another role's recorded digest instead of their own
 * (a kernel given as the rootfs, say). `actual` holds the digests of the
 * bytes copied, by the role they were given as.
 */
export function misplacedArtifacts(
  actual: Partial<Record<ArtifactRole, string>>,
  m: Manifest,
): MisplacedArtifact[] {
  const roles: ArtifactRole[] = ['kernel', 'rootfs', 'initrd'];
  const recorded = (role: ArtifactRole) => listedArtifact(m, role)?.sha256;
  const out: MisplacedArtifact[] = [];
  for (const given of roles) {
    const digest = actual[given];
    const own = recorded(given);
    if (digest === undefined || own === undefined || sameDigest(digest, own)) continue;
    const is = roles.find((r) => r !== given && recorded(r) && sameDigest(digest, recorded(r)!));
    if (is) out.push({ given, is });
  }
  return out;
}
