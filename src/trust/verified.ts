/**
 * What a successful verification proved: the shape verify.ts returns and
 * tlog.ts fills in (the log entry and the signed time). Types only, in a
 * file of their own so that neither of the two has to import the other's.
 */
import type { BundleFormat } from './bundle.js';

export type VerifiedSigner =
  | { readonly kind: 'certificate'; readonly identity: string; readonly issuer: string }
  | { readonly kind: 'key' };

/** What a successful verification proved, for rendering, receipts and audit records. */
export interface VerifiedSignature {
  readonly bundleFormat: BundleFormat;
  readonly mediaType: string;
  readonly signer: VerifiedSigner;
  readonly artifactSha256: string;
  readonly tlog: {
    readonly logIndex: string;
    readonly logId: string;
    /** The log's signed time for the entry (signed entry timestamp); null when the entry carries none. */
    readonly integratedTime: string | null;
    readonly logUrl: string;
  };
  /**
   * The verified time the signature existed by: a log's signed entry
   * timestamp, else (Rekor v2, which signs none) the time of an RFC 3161
   * timestamp @sigstore/verify verified against the root's timestamp
   * authorities. null when the only evidence is an inclusion proof.
   */
  readonly signedTime: {
    readonly source: 'signed-entry-timestamp' | 'timestamp-authority';
    /** ISO 8601. */
    readonly time: string;
  } | null;
}
