/**
 * Whether a trusted root knows the authorities a bundle relies on: the
 * transparency log(s) its entries name and the CA that issued its signing
 * certificate. Pure. Used only to explain a verification that already
 * failed: a root that lacks them (a test or private deployment's root left in
 * MVM_TRUSTED_ROOT, or a private deployment's bundle checked against the
 * public-good root) is a configuration mistake, not a forged file, and the
 * operator fixes it in a different place.
 */
import type { Bundle } from '@sigstore/bundle';
import { X509Certificate as CoreX509Certificate } from '@sigstore/core';
import type { TrustMaterial } from '@sigstore/verify';
import { X509Certificate } from 'node:crypto';

export interface RootGaps {
  /** Ids (hex) of the logs the bundle's entries name that the trusted root does not list. */
  readonly unknownLogs: readonly string[];
  /** The issuer of the signing certificate, when no CA of the trusted root issued it (or its chain). */
  readonly unknownCa?: string;
}

export function rootGaps(bundle: Bundle, trust: TrustMaterial): RootGaps {
  const unknownLogs = bundle.verificationMaterial.tlogEntries.flatMap((e) => {
    const id = e.logId?.keyId;
    if (!id || id.length === 0) return [];
    return trust.tlogs.some((t) => t.logID.equals(id)) ? [] : [Buffer.from(id).toString('hex')];
  });
  const chain = bundleCertificates(bundle);
  const known =
    chain.length === 0 ||
    chain.some((cert) =>
      trust.certificateAuthorities.some((ca) => ca.certChain.some((c) => issued(c, cert))),
    );
  return {
    unknownLogs: [...new Set(unknownLogs)],
    ...(known ? {} : { unknownCa: issuerName(chain[0]!) }),
  };
}

/** The signer a bundle's certificate names (read, not verified): for an error that says who signed. */
export function certificateSigner(
  bundle: Bundle,
): { identity: string | undefined; issuer: string | undefined } | undefined {
  const leaf = bundleCertificates(bundle)[0];
  if (!leaf) return undefined;
  try {
    const v2 = leaf.extension(OID_ISSUER_V2)?.valueObj.subs[0]?.value;
    const v1 = leaf.extension(OID_ISSUER_V1)?.value;
    return {
      identity: leaf.subjectAltName,
      issuer: (v2 ?? v1)?.toString('latin1'),
    };
  } catch {
    return undefined;
  }
}

const OID_ISSUER_V1 = '1.3.6.1.4.1.57264.1.1';
const OID_ISSUER_V2 = '1.3.6.1.4.1.57264.1.8';

function bundleCertificates(bundle: Bundle): CoreX509Certificate[] {
  const content = bundle.verificationMaterial.content;
  const raw =
    content.$case === 'certificate'
      ? [content.certificate.rawBytes]
      : content.$case === 'x509CertificateChain'
        ? content.x509CertificateChain.certificates.map((c) => c.rawBytes)
        : [];
  try {
    return raw.map((b) => CoreX509Certificate.parse(Buffer.from(b)));
  } catch {
    return [];
  }
}

function issued(issuer: CoreX509Certificate, cert: CoreX509Certificate): boolean {
  try {
    return issuer.subject.equals(cert.issuer) && cert.verify(issuer);
  } catch {
    return false;
  }
}

function issuerName(cert: CoreX509Certificate): string {
  try {
    return new X509Certificate(cert.root.toDER()).issuer.split('\n').join(', ');
  } catch {
    return 'an issuer that cannot be read';
  }
}
