import { MvmError } from './errors.js';
import { X509Certificate } from 'node:crypto';
import {
  anchoredPattern,
  checkGithubWorkflow,
  type GithubWorkflowClaims,
  type IdentityMatcher,
  type TrustPolicy,
} from './core/policy.js';
import { MAX_BLOB_BYTES, MAX_BUNDLE_BYTES, MAX_KEY_BYTES, readRegularFile } from './io/files.js';
import { parseBundle, type ParsedBundle } from './trust/bundle.js';
import {
  bundleSignature,
  githubWorkflowClaims,
  leafCertificate,
} from './trust/certificate-claims.js';
import { loadTrustedRoot, type LoadedTrustedRoot } from './trust/trusted-root.js';
import { readTrustFile } from './trust/trust-file.js';
import type { VerifiedSignature } from './trust/verified.js';
import { verifyArtifact } from './trust/verify.js';

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
  /** Regular expression the whole OIDC issuer must match. */
  readonly certificateOidcIssuerRegexp?: string;
  /** GitHub workflow claims the certificate must record (cosign's --certificate-github-workflow-*). */
  readonly githubWorkflow?: GithubWorkflowClaims;
  /** A detached signature file (cosign --signature) that must be the bundle's signature. */
  readonly signaturePath?: string;
  /** A certificate file (cosign --certificate) that must be the bundle's signing certificate. */
  readonly certificatePath?: string;
  /** Path of a PEM public key, for key-signed bundles. */
  readonly keyPath?: string;
  /** Path of a trusted_root.json; when absent, the one installed in dataDir, else the embedded public-good root. */
  readonly trustedRootPath?: string;
  /** The data directory whose installed trust (`mvmctl trust import`) is used when no trustedRootPath is given. */
  readonly dataDir?: string;
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
  const trustedRoot: LoadedTrustedRoot = await loadTrustedRoot(options.trustedRootPath, {
    ...(options.dataDir !== undefined ? { dataDir: options.dataDir } : {}),
  });
  const bundleBytes = await readRegularFile(options.bundlePath, 'bundle', MAX_BUNDLE_BYTES);
  const artifact = await readRegularFile(options.artifactPath, 'artifact', MAX_BLOB_BYTES);
  const parsed = parseBundle(bundleBytes);
  const verified = verifyArtifact(artifact, parsed, trustedRoot, policy);
  // Only now is the certificate known to be genuine, so only now are its claims worth reading.
  if (policy.kind === 'certificate' && policy.githubWorkflow) {
    checkGithubWorkflow(
      policy.githubWorkflow,
      githubWorkflowClaims(leafCertificate(parsed.bundle)!),
    );
  }
  await checkDetachedMaterial(options, parsed);
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
    certificateOidcIssuer: exactIssuer,
    certificateOidcIssuerRegexp: issuerRe,
    keyPath,
  } = options;
  const workflow = Object.entries(options.githubWorkflow ?? {}).filter(([, v]) => v !== undefined);
  if (keyPath !== undefined) {
    if (
      id !== undefined ||
      re !== undefined ||
      exactIssuer !== undefined ||
      issuerRe !== undefined ||
      workflow.length > 0
    ) {
      throw new MvmError(
        'usage',
        '--key cannot be combined with the --certificate-identity*, --certificate-oidc-issuer* or --certificate-github-workflow-* flags',
        {
          fix: 'Use --key for key-signed bundles, or the certificate flags for keyless ones, not both.',
        },
      );
    }
    // Held to the store's owner/mode rule: whoever can write the key decides what verifies.
    const pem = (await readTrustFile(keyPath, 'key', MAX_KEY_BYTES, 'input')).toString('utf8');
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
  if (exactIssuer !== undefined && issuerRe !== undefined) {
    throw new MvmError(
      'usage',
      '--certificate-oidc-issuer and --certificate-oidc-issuer-regexp are mutually exclusive',
      { fix: 'Give the exact issuer, or a pattern for it, not both.' },
    );
  }
  if ((exactIssuer === undefined || exactIssuer === '') && issuerRe === undefined) {
    throw new MvmError('usage', '--certificate-oidc-issuer is required', {
      fix: 'For GitHub Actions: --certificate-oidc-issuer https://token.actions.githubusercontent.com',
    });
  }
  let issuer: string | { pattern: string };
  if (issuerRe !== undefined) {
    anchoredPattern(issuerRe, '--certificate-oidc-issuer-regexp');
    issuer = { pattern: issuerRe };
  } else {
    issuer = exactIssuer!;
  }
  for (const [claim, value] of workflow) {
    if (value === '') {
      throw new MvmError('usage', `--certificate-github-workflow-${claim} must not be empty`);
    }
  }
  let identity: IdentityMatcher;
  if (re !== undefined) {
    anchoredPattern(re); // reject an invalid pattern as a usage error before any file is read
    identity = { pattern: re };
  } else {
    if (id === '') throw new MvmError('usage', '--certificate-identity must not be empty');
    identity = { exact: id! };
  }
  return {
    kind: 'certificate',
    issuer,
    identity,
    ...(workflow.length > 0 ? { githubWorkflow: options.githubWorkflow! } : {}),
  };
}

/**
 * cosign accepts the signature and certificate as files beside the bundle.
 * Offline, the bundle is what carries the evidence, so those files can only
 * confirm it: each must be exactly what the verified bundle holds.
 */
async function checkDetachedMaterial(
  options: VerifyBlobOptions,
  parsed: ParsedBundle,
): Promise<void> {
  if (options.signaturePath !== undefined) {
    const text = await readRegularFile(options.signaturePath, 'signature', MAX_KEY_BYTES);
    const trimmed = text.toString('latin1').trim();
    // cosign writes the signature base64-encoded; accept the raw bytes too, as cosign does.
    const given = /^[A-Za-z0-9+/]+={0,2}$/.test(trimmed) ? Buffer.from(trimmed, 'base64') : text;
    const inBundle = bundleSignature(parsed.bundle);
    if (!inBundle || !given.equals(inBundle)) {
      throw new MvmError('signature', 'the --signature file is not the signature in the bundle', {
        check: 'signature',
        cause: 'the detached signature and the bundle come from different signings',
        fix: 'Pass the signature that was published with this bundle, or leave --signature out: the bundle carries it.',
      });
    }
  }
  if (options.certificatePath !== undefined) {
    const pem = await readRegularFile(options.certificatePath, 'certificate', MAX_KEY_BYTES);
    let given: Buffer;
    try {
      // cosign's legacy bundles base64-encode the PEM once more; take either form.
      const text = pem.toString('latin1').trim();
      const decoded = text.startsWith('-----BEGIN') ? pem : Buffer.from(text, 'base64');
      given = new X509Certificate(decoded).raw;
    } catch (e) {
      throw new MvmError(
        'input',
        `The --certificate file ${options.certificatePath} is not a certificate`,
        {
          cause: (e as Error).message,
          fix: 'Pass the PEM certificate published with the bundle, or leave --certificate out: the bundle carries it.',
        },
      );
    }
    const inBundle = leafCertificate(parsed.bundle);
    if (!inBundle || !given.equals(inBundle)) {
      throw new MvmError(
        'signature',
        'the --certificate file is not the signing certificate in the bundle',
        {
          check: 'certificate-chain',
          cause: 'the certificate and the bundle come from different signings',
          fix: 'Pass the certificate that was published with this bundle, or leave --certificate out: the bundle carries it.',
        },
      );
    }
  }
}
