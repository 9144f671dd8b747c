/**
 * Who may sign what (SPEC.md sections 3 and 5): release manifests come from
 * the project's release workflow at a v{semver} tag, revocation lists from a
 * separate revocations workflow. Pure.
 */
import { MvmError } from '../errors.js';
import { GITHUB_ACTIONS_ISSUER, type TrustPolicy } from './policy.js';
import { isSemver } from './manifest.js';

export const DEFAULT_RELEASE_REPO = 'tinylabscom/mvm';
const REPO = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})\/[A-Za-z0-9._-]{1,100}$/;
const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

/** Validates MVM_RELEASE_REPO ("owner/name") before it goes into an identity. */
export function releaseRepo(value: string | undefined): string {
  const repo = value === undefined || value === '' ? DEFAULT_RELEASE_REPO : value;
  if (!REPO.test(repo)) {
    throw new MvmError(
      'usage',
      `MVM_RELEASE_REPO ${JSON.stringify(repo.slice(0, 120))} is not "owner/name"`,
      {
        fix: 'Set MVM_RELEASE_REPO to a GitHub repository such as tinylabscom/mvm, or unset it.',
      },
    );
  }
  return repo;
}

const releasePrefix = (repo: string): string =>
  `https://github.com/${repo}/.github/workflows/release.yml@refs/tags/v`;

/**
 * The release workflow at any v{semver} tag; the pattern is anchored by
 * checkSigner, and the semver part allows no path or ref tricks.
 */
export function releasePolicy(repo: string): TrustPolicy {
  const semver =
    '(?:0|[1-9][0-9]*)\\.(?:0|[1-9][0-9]*)\\.(?:0|[1-9][0-9]*)(?:-[0-9A-Za-z.-]+)?(?:\\+[0-9A-Za-z.-]+)?';
  return {
    kind: 'certificate',
    issuer: GITHUB_ACTIONS_ISSUER,
    identity: { pattern: `${escape(releasePrefix(repo))}${semver}` },
  };
}

/** The release tag's version in a verified release identity, or undefined if it is not one. */
export function releaseTagVersion(identity: string, repo: string): string | undefined {
  const prefix = releasePrefix(repo);
  if (!identity.startsWith(prefix)) return undefined;
  const version = identity.slice(prefix.length);
  return isSemver(version) ? version : undefined;
}

export function revocationsIdentity(repo: string): string {
  return `https://github.com/${repo}/.github/workflows/revocations.yml@refs/tags/revocations`;
}

export function revocationsPolicy(repo: string): TrustPolicy {
  return {
    kind: 'certificate',
    issuer: GITHUB_ACTIONS_ISSUER,
    identity: { exact: revocationsIdentity(repo) },
  };
}
