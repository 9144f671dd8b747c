import { createHash, createPublicKey, X509Certificate, type KeyObject } from 'node:crypto';
import { crypto as sigstoreCrypto, X509Certificate as CoreX509Certificate } from '@sigstore/core';
import type { Bundle } from '@sigstore/bundle';
import {
  toSignedEntity,
  Verifier,
  VerificationError,
  type SignedEntity,
  type TrustMaterial,
} from '@sigstore/verify';
import { MvmError, type VerificationCheck } from '../errors.js';
import { parseJsonObject } from '../core/json.js';
import { checkSigner, type TrustPolicy } from '../core/policy.js';
import type { ParsedBundle } from './bundle.js';
import { checkEntryTimes, checkTlogEntries, type SignerMaterial } from './tlog.js';
import type { LoadedTrustedRoot } from './trusted-root.js';
import type { VerifiedSignature } from './verified.js';

const fail = (check: VerificationCheck, message: string, cause?: string): MvmError =>
  new MvmError('signature', message, { check, ...(cause ? { cause } : {}) });

/**
 * Verifies `artifact` against a Sigstore bundle with no network access.
 *
 * @sigstore/verify@4 does the cryptography (signature, chain, SCT, signed entry
 * timestamp, RFC 3161 timestamps, inclusion proof and checkpoint, certificate
 * validity at the verified times); the steps around it close the gaps that
 * library leaves to its callers, and repeat the checks
 * it added in v4 that an earlier line lacked, so each is a check of its own
 * here and does not depend on which library version runs.
 */
export function verifyArtifact(
  artifact: Uint8Array,
  parsed: ParsedBundle,
  trustedRoot: LoadedTrustedRoot,
  policy: TrustPolicy,
): VerifiedSignature {
  const { trust, operatorKey } = trustMaterialFor(trustedRoot, policy);
  const { bundle } = parsed;
  const signerMaterial = checkVerificationMaterial(bundle, policy, operatorKey);
  checkEnvelopeSignatures(bundle);
  const artifactSha256 = checkArtifactDigest(bundle, artifact);
  const entries = checkTlogEntries(bundle, trust, signerMaterial);
  const { signer, tsaTimes } = runSigstoreVerifier(bundle, artifact, trust);
  const signedTime = checkEntryTimes(entries, tsaTimes);
  checkSigner(policy, signer);
  const entry = entries[0]!;
  return {
    bundleFormat: parsed.format,
    mediaType: parsed.mediaType,
    signer:
      policy.kind === 'key'
        ? { kind: 'key' }
        : { kind: 'certificate', identity: signer.identity ?? '', issuer: signer.issuer ?? '' },
    artifactSha256,
    tlog: {
      logIndex: entry.entry.logIndex,
      logId: entry.entry.logId!.keyId.toString('hex'),
      integratedTime:
        entry.entry.integratedTime === '0'
          ? null
          : new Date(Number(entry.entry.integratedTime) * 1000).toISOString(),
      logUrl: entry.log.baseURL,
    },
    signedTime,
  };
}

function trustMaterialFor(
  trustedRoot: LoadedTrustedRoot,
  policy: TrustPolicy,
): { trust: TrustMaterial; operatorKey?: KeyObject } {
  if (policy.kind === 'certificate') return { trust: trustedRoot.material };
  let key: KeyObject;
  try {
    key = createPublicKey(policy.publicKeyPem);
  } catch (e) {
    throw new MvmError('input', 'The --key file is not a PEM public key', {
      cause: (e as Error).message,
    });
  }
  // The operator's key is trusted for all time: it is pinned by hand, not by a root.
  return {
    trust: { ...trustedRoot.material, publicKey: () => ({ publicKey: key, validFor: () => true }) },
    operatorKey: key,
  };
}

/** The bundle must carry the kind of signer the policy asks for, and never its own root. */
function checkVerificationMaterial(
  bundle: Bundle,
  policy: TrustPolicy,
  operatorKey: KeyObject | undefined,
): SignerMaterial {
  const content = bundle.verificationMaterial.content;
  if (policy.kind === 'key' && content.$case !== 'publicKey') {
    throw fail(
      'key',
      'the bundle is signed with a certificate, not a key',
      'verify it with --certificate-identity and --certificate-oidc-issuer instead of --key',
    );
  }
  if (policy.kind === 'certificate' && content.$case === 'publicKey') {
    throw fail('key', 'the bundle is signed with a key, not a certificate', 'verify it with --key');
  }
  if (policy.kind === 'certificate' && content.$case !== 'publicKey') {
    checkSignerNames(
      content.$case === 'certificate'
        ? content.certificate.rawBytes
        : content.x509CertificateChain.certificates[0]!.rawBytes,
    );
  }
  if (content.$case === 'x509CertificateChain') {
    for (const c of content.x509CertificateChain.certificates) {
      let cert: X509Certificate;
      try {
        cert = new X509Certificate(c.rawBytes);
      } catch {
        throw fail('certificate-chain', 'a certificate in the bundle does not parse');
      }
      // A root shipped inside the bundle proves nothing; trust anchors come only from the trusted root.
      if (cert.subject === cert.issuer) {
        throw fail(
          'certificate-chain',
          'the bundle carries a self-signed root certificate',
          'trust anchors come only from the trusted root',
        );
      }
    }
  }
  if (content.$case === 'publicKey') {
    return { kind: 'key', spki: operatorKey!.export({ format: 'der', type: 'spki' }) };
  }
  return {
    kind: 'certificate',
    der: Buffer.from(
      content.$case === 'certificate'
        ? content.certificate.rawBytes
        : content.x509CertificateChain.certificates[0]!.rawBytes,
    ),
  };
}

/**
 * One envelope signature, the one the log entry binds. @sigstore/verify
 * verifies and compares only the first, so a second would ride along
 * unchecked (parseBundle refuses this too; a ParsedBundle may come from elsewhere).
 */
function checkEnvelopeSignatures(bundle: Bundle): void {
  if (bundle.content.$case !== 'dsseEnvelope') return;
  const n = bundle.content.dsseEnvelope.signatures.length;
  if (n !== 1) {
    throw fail(
      'signature',
      `the DSSE envelope carries ${n} signatures; exactly one is accepted, the one its log entry binds`,
    );
  }
}

const IN_TOTO_STATEMENT = /^https:\/\/in-toto\.io\/Statement\/v[0-9.]+$/;

const PRINTABLE_ASCII = (b: Buffer): boolean =>
  b.length > 0 && b.every((c) => c >= 0x20 && c < 0x7f);
const OID_ISSUER_V1 = '1.3.6.1.4.1.57264.1.1';
const OID_ISSUER_V2 = '1.3.6.1.4.1.57264.1.8';

/**
 * @sigstore/core reads the SAN and issuer with Node's 'ascii' decoding, which
 * drops the top bit of every byte, so a byte-different name can read as the
 * expected one. Require one URI or email SAN and issuer values in printable
 * ASCII, and both issuer extensions (when present) to agree, before any
 * string comparison is trusted; and a certificate issued for code signing.
 */
function checkSignerNames(der: Uint8Array): void {
  let leaf: CoreX509Certificate;
  try {
    leaf = CoreX509Certificate.parse(Buffer.from(der));
  } catch {
    throw fail('certificate-chain', 'the signing certificate does not parse');
  }
  // extnValue is an OCTET STRING wrapping the GeneralNames SEQUENCE.
  const generalNames = leaf.extension('2.5.29.17')?.valueObj.subs[0]?.subs ?? [];
  const names = generalNames.filter(
    (gn) => gn.tag.isContextSpecific(0x01) || gn.tag.isContextSpecific(0x06),
  );
  if (names.length !== 1 || !PRINTABLE_ASCII(names[0]!.value)) {
    throw fail(
      'identity',
      'the signing certificate must name exactly one identity (URI or email) in printable ASCII',
    );
  }
  const v2 = leaf.extension(OID_ISSUER_V2)?.valueObj.subs[0]?.value;
  const v1 = leaf.extension(OID_ISSUER_V1)?.value;
  for (const v of [v1, v2]) {
    if (v !== undefined && !PRINTABLE_ASCII(v))
      throw fail('issuer', 'the certificate OIDC issuer is not printable ASCII');
  }
  if (v1 !== undefined && v2 !== undefined && !v1.equals(v2)) {
    throw fail('issuer', 'the certificate carries two different OIDC issuers');
  }
  checkCodeSigningUsage(leaf);
}

const OID_EXT_KEY_USAGE = '2.5.29.37';
const OID_CODE_SIGNING = '1.3.6.1.5.5.7.3.3';

/**
 * The leaf must be a code-signing certificate: exactly one extended key usage
 * extension, listing id-kp-codeSigning, as Fulcio issues and cosign and
 * sigstore-go require. @sigstore/verify does not look at EKU, so a
 * certificate issued by a trusted CA for another purpose (a TLS server's)
 * would otherwise sign artifacts.
 */
function checkCodeSigningUsage(leaf: CoreX509Certificate): void {
  const ekus = leaf.extensions.filter((ext) => ext.subs[0]?.toOID() === OID_EXT_KEY_USAGE);
  let usages: string[] = [];
  if (ekus.length === 1) {
    try {
      // extnValue is an OCTET STRING wrapping SEQUENCE OF KeyPurposeId (OIDs).
      usages = (leaf.extension(OID_EXT_KEY_USAGE)?.valueObj.subs[0]?.subs ?? []).map((o) =>
        o.toOID(),
      );
    } catch {
      usages = [];
    }
  }
  if (!usages.includes(OID_CODE_SIGNING)) {
    throw new MvmError(
      'signature',
      `the signing certificate is not for code signing: it lacks the extended key usage id-kp-codeSigning (${OID_CODE_SIGNING})`,
      {
        check: 'certificate-chain',
        cause:
          ekus.length > 1
            ? 'it carries more than one extended key usage extension'
            : ekus.length === 0
              ? 'it has no extended key usage extension'
              : `its extended key usages are ${usages.join(', ') || 'unreadable'}`,
        fix: 'Sign with a code-signing certificate, as Fulcio issues (cosign sign-blob); a certificate issued for another purpose does not sign artifacts.',
      },
    );
  }
}

/** @sigstore/verify does not tie the bundle's digest (or DSSE subject) to the artifact; do it here. */
function checkArtifactDigest(bundle: Bundle, artifact: Uint8Array): string {
  const sha256 = createHash('sha256').update(artifact).digest('hex');
  if (bundle.content.$case === 'messageSignature') {
    const md = bundle.content.messageSignature.messageDigest;
    // SHA2_256 (1) named, as cosign writes it; unspecified (0) is refused as sigstore-go does.
    if (!md || md.algorithm !== 1) {
      throw fail('artifact-digest', 'the bundle message digest is not SHA-256');
    }
    if (!sigstoreCrypto.bufferEqual(Buffer.from(md.digest), Buffer.from(sha256, 'hex'))) {
      throw fail(
        'artifact-digest',
        `the artifact's SHA-256 ${sha256} is not the digest the bundle signs`,
        'the file was modified, or the bundle belongs to another file',
      );
    }
    return sha256;
  }
  const env = bundle.content.dsseEnvelope;
  if (env.payloadType !== 'application/vnd.in-toto+json') {
    throw fail(
      'artifact-digest',
      `unsupported DSSE payload type ${JSON.stringify(env.payloadType)}`,
    );
  }
  const statement = parseJsonObject(env.payload);
  const type = statement.ok ? statement.value['_type'] : undefined;
  if (!statement.ok || typeof type !== 'string' || !IN_TOTO_STATEMENT.test(type)) {
    throw fail('artifact-digest', 'the DSSE payload is not an in-toto statement');
  }
  const subjects = statement.value['subject'];
  const match =
    Array.isArray(subjects) &&
    subjects.some(
      (s) => typeof s?.digest?.sha256 === 'string' && s.digest.sha256.toLowerCase() === sha256,
    );
  if (!match) {
    throw fail(
      'artifact-digest',
      `the artifact's SHA-256 ${sha256} is not a subject of the attestation`,
    );
  }
  return sha256;
}

/**
 * Runs @sigstore/verify and returns the signer and the times of the RFC 3161
 * timestamps it verified. Verifier.verify does not return them; it verifies
 * every timestamp of the entity it is given against the root's timestamp
 * authorities and throws on the first that fails (dist/verifier.js,
 * verifyTimestamps), so once it returns, each 'timestamp-authority' entry of
 * that same entity is a verified token, and only then is its time read.
 */
function runSigstoreVerifier(
  bundle: Bundle,
  artifact: Uint8Array,
  trust: TrustMaterial,
): { signer: { identity?: string | undefined; issuer?: string | undefined }; tsaTimes: Date[] } {
  try {
    const verifier = new Verifier(trust, {
      tlogThreshold: 1,
      ctlogThreshold: 1,
      timestampThreshold: 1,
    });
    const entity: SignedEntity = toSignedEntity(bundle, Buffer.from(artifact));
    const signer = verifier.verify(entity);
    const tsaTimes = entity.timestamps.flatMap((t) =>
      t.$case === 'timestamp-authority' ? [t.timestamp.signingTime] : [],
    );
    return {
      signer: {
        identity: signer.identity?.subjectAlternativeName,
        issuer: signer.identity?.extensions?.issuer,
      },
      tsaTimes,
    };
  } catch (e) {
    if (e instanceof VerificationError) {
      const detail = (e.cause as Error | undefined)?.message;
      throw fail(classify(e), detail ? `${e.message}: ${detail}` : e.message);
    }
    if (e instanceof MvmError) throw e;
    // Malformed material (a DER that does not parse, say) surfaces as a plain error.
    throw fail('bundle-format', `the bundle could not be verified: ${(e as Error).message}`);
  }
}

function classify(e: VerificationError): VerificationCheck {
  switch (e.code) {
    case 'SIGNATURE_ERROR':
      return 'signature';
    case 'PUBLIC_KEY_ERROR':
      return 'key';
    case 'TIMESTAMP_ERROR':
      return 'timestamp';
    case 'CERTIFICATE_ERROR': {
      // The chain verifier wraps the precise reason as the cause.
      const text = `${e.message} ${(e.cause as Error | undefined)?.message ?? ''}`;
      if (/SCT/.test(text)) return 'sct';
      if (/not valid or expired/.test(text)) return 'certificate-validity';
      return 'certificate-chain';
    }
    case 'TLOG_INCLUSION_PROMISE_ERROR':
      return 'signed-entry-timestamp';
    case 'TLOG_INCLUSION_PROOF_ERROR':
      return /checkpoint/.test(e.message) ? 'checkpoint' : 'tlog-inclusion';
    case 'TLOG_MISSING_INCLUSION_ERROR':
      return 'tlog-inclusion';
    default:
      return 'tlog-entry';
  }
}
