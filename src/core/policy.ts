import { MvmError } from '../errors.js';

/** Who must have signed: a keyless (certificate) signer or the holder of a key. */
export type TrustPolicy =
  | {
      readonly kind: 'certificate';
      /** OIDC issuer, compared exactly. */
      readonly issuer: string;
      readonly identity: IdentityMatcher;
    }
  | {
      readonly kind: 'key';
      /** PEM-encoded public key (cosign.pub). */
      readonly publicKeyPem: string;
    };

export type IdentityMatcher =
  | { readonly exact: string }
  /** An operator-given regular expression, always matched against the whole identity. */
  | { readonly pattern: string };

export const GITHUB_ACTIONS_ISSUER = 'https://token.actions.githubusercontent.com';

/**
 * Compiles an identity pattern so it must match the whole SAN. The group keeps
 * an alternation like `a|b` from anchoring only one side; the `u` flag makes
 * the syntax strict.
 */
export function anchoredPattern(pattern: string): RegExp {
  try {
    return new RegExp(`^(?:${pattern})$`, 'u');
  } catch (e) {
    throw new MvmError('usage', `--certificate-identity-regexp is not a valid regular expression`, {
      cause: (e as Error).message,
      fix: 'Fix the pattern; it is matched against the whole identity, so no ^ or $ is needed.',
    });
  }
}

export function describeIdentity(m: IdentityMatcher): string {
  return 'exact' in m ? m.exact : `/^(?:${m.pattern})$/`;
}

/** Pure check of a verified signer against the policy; throws a signature error naming the mismatch. */
export function checkSigner(
  policy: TrustPolicy,
  signer: { identity?: string | undefined; issuer?: string | undefined },
): void {
  if (policy.kind === 'key') return;
  if (signer.issuer !== policy.issuer) {
    throw new MvmError(
      'signature',
      `certificate OIDC issuer ${JSON.stringify(signer.issuer ?? null)} is not the required ${JSON.stringify(policy.issuer)}`,
      {
        check: 'issuer',
        cause: 'the signing certificate was issued for another identity provider',
      },
    );
  }
  const san = signer.identity;
  const ok =
    san !== undefined &&
    ('exact' in policy.identity
      ? san === policy.identity.exact
      : anchoredPattern(policy.identity.pattern).test(san));
  if (!ok) {
    throw new MvmError(
      'signature',
      `certificate identity ${JSON.stringify(san ?? null)} does not match the required ${describeIdentity(policy.identity)}`,
      {
        check: 'identity',
        cause: 'the artifact was signed by someone other than the expected signer',
      },
    );
  }
}
