import { MvmError } from '../errors.js';

/** Who must have signed: a keyless (certificate) signer or the holder of a key. */
export type TrustPolicy =
  | {
      readonly kind: 'certificate';
      /** OIDC issuer: a string is compared exactly; a pattern must match the whole issuer. */
      readonly issuer: string | { readonly pattern: string };
      readonly identity: IdentityMatcher;
      /** cosign's --certificate-github-workflow-* claims, each compared exactly. */
      readonly githubWorkflow?: GithubWorkflowClaims;
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

/**
 * GitHub Actions claims Fulcio records in the signing certificate (the
 * 1.3.6.1.4.1.57264.1.2-.6 extensions cosign's --certificate-github-workflow-*
 * flags compare).
 */
export interface GithubWorkflowClaims {
  readonly trigger?: string;
  readonly sha?: string;
  readonly name?: string;
  readonly repository?: string;
  readonly ref?: string;
}

export const GITHUB_WORKFLOW_OIDS: Readonly<Record<keyof GithubWorkflowClaims, string>> = {
  trigger: '1.3.6.1.4.1.57264.1.2',
  sha: '1.3.6.1.4.1.57264.1.3',
  name: '1.3.6.1.4.1.57264.1.4',
  repository: '1.3.6.1.4.1.57264.1.5',
  ref: '1.3.6.1.4.1.57264.1.6',
};

export const GITHUB_ACTIONS_ISSUER = 'https://token.actions.githubusercontent.com';

/**
 * Compiles an identity pattern so it must match the whole SAN. The group keeps
 * an alternation like `a|b` from anchoring only one side; the `u` flag makes
 * the syntax strict.
 */
export function anchoredPattern(pattern: string, flag = '--certificate-identity-regexp'): RegExp {
  try {
    return new RegExp(`^(?:${pattern})$`, 'u');
  } catch (e) {
    throw new MvmError('usage', `${flag} is not a valid regular expression`, {
      cause: (e as Error).message,
      fix: 'Fix the pattern; it is matched against the whole value, so no ^ or $ is needed.',
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
  const issuerOk =
    signer.issuer !== undefined &&
    (typeof policy.issuer === 'string'
      ? signer.issuer === policy.issuer
      : anchoredPattern(policy.issuer.pattern, '--certificate-oidc-issuer-regexp').test(
          signer.issuer,
        ));
  if (!issuerOk) {
    const required =
      typeof policy.issuer === 'string'
        ? JSON.stringify(policy.issuer)
        : `/^(?:${policy.issuer.pattern})$/`;
    throw new MvmError(
      'signature',
      `certificate OIDC issuer ${JSON.stringify(signer.issuer ?? null)} is not the required ${required}`,
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

/**
 * Pure check of the certificate's GitHub workflow claims (as read from its
 * extensions; undefined when absent) against the ones the operator named. A
 * claim asked for and absent from the certificate fails: absence proves nothing.
 */
export function checkGithubWorkflow(
  expected: GithubWorkflowClaims,
  actual: Readonly<Partial<Record<keyof GithubWorkflowClaims, string>>>,
): void {
  for (const claim of Object.keys(GITHUB_WORKFLOW_OIDS) as (keyof GithubWorkflowClaims)[]) {
    const want = expected[claim];
    if (want === undefined) continue;
    if (actual[claim] !== want) {
      throw new MvmError(
        'signature',
        `certificate GitHub workflow ${claim} ${JSON.stringify(actual[claim] ?? null)} is not the required ${JSON.stringify(want)}`,
        {
          check: 'identity',
          cause: `--certificate-github-workflow-${claim} names another workflow ${claim} than the one that signed`,
          fix: `Check --certificate-github-workflow-${claim}; the error names what the signing certificate records.`,
        },
      );
    }
  }
}
