import { MvmError } from './errors.js';
import { anchoredPattern, type IdentityMatcher, type TrustPolicy } from './core/policy.js';
import { MAX_BLOB_BYTES, MAX_BUNDLE_BYTES, MAX_KEY_BYTES, readRegularFile } from './io/files.js';
import { parseBundle } from './trust/bundle.js';
import { loadTrustedRoot, type LoadedTrustedRoot } from './trust/trusted-root.js';
import { verifyArtifact, type VerifiedSignature } from './trust/verify.js';

export interface VerifyBlobOptions {
  /** Path of the signed file. */
  readonly artifactPath: string;
  /** Path of the Sigstore bundle (any supported format). */
  readonly bundlePath: string;
  /** Exact signer identity (certificate SAN). */
  readonly certificateIdentity?: string;
  /** Regular expression the whole identity must match. */
  readonly certificateIdentityRegexp?: string;
  /** Exact OIDC issuer. */
  readonly certificateOidcIssuer?: string;
  /** Path of a PEM public key, for key-signed bundles. */
  readonly keyPath?: string;
  /** Path of a trusted_root.json; the embedded public-good root when absent. */
  readonly trustedRootPath?: string;
}

export interface VerifyBlobResult extends VerifiedSignature {
  readonly verified: true;
  readonly trustedRoot: { readonly source: string; readonly sha256: string };
}

/**
 * Offline `cosign verify-blob`: reads the three inputs, builds the policy and
 * verifies. Throws MvmError: usage for a bad flag combination, input or
 * trusted-root for unreadable files, signature (with the failed check) otherwise.
 */
export async function verifyBlob(options: VerifyBlobOptions): Promise<VerifyBlobResult> {
  const policy = await policyFrom(options);
  const trustedRoot: LoadedTrustedRoot = await loadTrustedRoot(options.trustedRootPath);
  const bundleBytes = await readRegularFile(options.bundlePath, 'bundle', MAX_BUNDLE_BYTES);
  const artifact = await readRegularFile(options.artifactPath, 'artifact', MAX_BLOB_BYTES);
  const verified = verifyArtifact(artifact, parseBundle(bundleBytes), trustedRoot, policy);
  return {
    verified: true,
    ...verified,
    trustedRoot: { source: trustedRoot.source, sha256: trustedRoot.sha256 },
  };
}

/** Turns cosign-style options into a TrustPolicy; mixing key and identity is a usage error. */
export async function policyFrom(options: VerifyBlobOptions): Promise<TrustPolicy> {
  const {
    certificateIdentity: id,
    certificateIdentityRegexp: re,
    certificateOidcIssuer: issuer,
    keyPath,
  } = options;
  if (keyPath !== undefined) {
    if (id !== undefined || re !== undefined || issuer !== undefined) {
      throw new MvmError(
        'usage',
        '--key cannot be combined with --certificate-identity, --certificate-identity-regexp or --certificate-oidc-issuer',
        {
          fix: 'Use --key for key-signed bundles, or the certificate flags for keyless ones, not both.',
        },
      );
    }
    const pem = (await readRegularFile(keyPath, 'key', MAX_KEY_BYTES)).toString('utf8');
    return { kind: 'key', publicKeyPem: pem };
  }
  if (id !== undefined && re !== undefined) {
    throw new MvmError(
      'usage',
      '--certificate-identity and --certificate-identity-regexp are mutually exclusive',
      {
        fix: 'Give the exact identity, or a pattern for it, not both.',
      },
    );
  }
  if (id === undefined && re === undefined) {
    throw new MvmError(
      'usage',
      'one of --certificate-identity or --certificate-identity-regexp is required (or --key)',
      {
        fix: 'Name the signer you expect, e.g. --certificate-identity https://github.com/OWNER/REPO/.github/workflows/release.yml@refs/tags/vX.Y.Z',
      },
    );
  }
  if (issuer === undefined || issuer === '') {
    throw new MvmError('usage', '--certificate-oidc-issuer is required', {
      fix: 'For GitHub Actions: --certificate-oidc-issuer https://token.actions.githubusercontent.com',
    });
  }
  let identity: IdentityMatcher;
  if (re !== undefined) {
    anchoredPattern(re); // reject an invalid pattern as a usage error before any file is read
    identity = { pattern: re };
  } else {
    if (id === '') throw new MvmError('usage', '--certificate-identity must not be empty');
    identity = { exact: id! };
  }
  return { kind: 'certificate', issuer, identity };
}
