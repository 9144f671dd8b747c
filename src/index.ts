/**
 * mvmctl as a library. Everything a later command reuses is exported from
 * here; the CLI in ./cli only parses flags and renders results.
 */
export {
  verifyBlob,
  policyFrom,
  type VerifyBlobOptions,
  type VerifyBlobResult,
} from './verify-blob.js';
export { verifyArtifact } from './trust/verify.js';
export type { VerifiedSignature, VerifiedSigner } from './trust/verified.js';
export { parseBundle, type BundleFormat, type ParsedBundle } from './trust/bundle.js';
export {
  EMBEDDED_TRUSTED_ROOT_PATH,
  loadTrustedRoot,
  parseTrustedRoot,
  type LoadedTrustedRoot,
} from './trust/trusted-root.js';
export {
  anchoredPattern,
  checkGithubWorkflow,
  checkSigner,
  GITHUB_ACTIONS_ISSUER,
  type GithubWorkflowClaims,
  type IdentityMatcher,
  type TrustPolicy,
} from './core/policy.js';
export {
  CHECK_FIX,
  ERROR_TABLE,
  isMvmError,
  MvmError,
  type CounterName,
  type ErrorClass,
  type ErrorCode,
  type VerificationCheck,
} from './errors.js';
export { MVMCTL_VERSION } from './version.js';
