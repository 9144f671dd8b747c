import { createHash } from 'node:crypto';
import { GITHUB_ISSUER, releaseIdentity } from './pki.js';

/** A signed manifest's stand-in and the release policy it is verified under, shared by the verifier suites. */
export const IDENTITY = releaseIdentity('tinylabscom/mvm', 'v0.14.0');
export const ARTIFACT = Buffer.from('{"schema_version":1,"version":"0.14.0","arch":"x86_64"}\n');
export const SHA256 = createHash('sha256').update(ARTIFACT).digest('hex');
export const POLICY = {
  kind: 'certificate',
  issuer: GITHUB_ISSUER,
  identity: { exact: IDENTITY },
} as const;
