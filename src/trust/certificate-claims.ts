import { X509Certificate as CoreX509Certificate } from '@sigstore/core';
import type { Bundle } from '@sigstore/bundle';
import { GITHUB_WORKFLOW_OIDS, type GithubWorkflowClaims } from '../core/policy.js';

/** The signing certificate's DER, or undefined for a key-signed bundle. */
export function leafCertificate(bundle: Bundle): Buffer | undefined {
  const content = bundle.verificationMaterial.content;
  if (content.$case === 'certificate') return Buffer.from(content.certificate.rawBytes);
  if (content.$case === 'x509CertificateChain') {
    const first = content.x509CertificateChain.certificates[0];
    return first ? Buffer.from(first.rawBytes) : undefined;
  }
  return undefined;
}

/** The signature bytes the bundle carries (the DSSE envelope's only signature for attestations). */
export function bundleSignature(bundle: Bundle): Buffer | undefined {
  if (bundle.content.$case === 'messageSignature') {
    return Buffer.from(bundle.content.messageSignature.signature);
  }
  const sigs = bundle.content.dsseEnvelope.signatures;
  return sigs.length === 1 ? Buffer.from(sigs[0]!.sig) : undefined;
}

const PRINTABLE_ASCII = (b: Buffer): boolean =>
  b.length > 0 && b.every((c) => c >= 0x20 && c < 0x7f);

/**
 * The GitHub workflow claims Fulcio wrote into a (verified) signing
 * certificate. These legacy extensions hold the raw string, not DER; a value
 * that is not printable ASCII is treated as absent, so it can never match.
 */
export function githubWorkflowClaims(
  certificateDer: Uint8Array,
): Partial<Record<keyof GithubWorkflowClaims, string>> {
  const cert = CoreX509Certificate.parse(Buffer.from(certificateDer));
  const claims: Partial<Record<keyof GithubWorkflowClaims, string>> = {};
  for (const [claim, oid] of Object.entries(GITHUB_WORKFLOW_OIDS)) {
    const value = cert.extension(oid)?.value;
    if (value !== undefined && PRINTABLE_ASCII(value)) {
      claims[claim as keyof GithubWorkflowClaims] = value.toString('ascii');
    }
  }
  return claims;
}
