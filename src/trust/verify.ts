import { createHash, createPublicKey, X509Certificate, type KeyObject } from 'node:crypto';
import { crypto as sigstoreCrypto, X509Certificate as CoreX509Certificate } from '@sigstore/core';
import type { Bundle, TransparencyLogEntry } from '@sigstore/bundle';
import { toSignedEntity, Verifier, VerificationError, type TrustMaterial } from '@sigstore/verify';
import { MvmError, type VerificationCheck } from '../errors.js';
import { parseJsonObject } from '../core/json.js';
import { checkSigner, type TrustPolicy } from '../core/policy.js';
import type { BundleFormat, ParsedBundle } from './bundle.js';
import type { LoadedTrustedRoot } from './trusted-root.js';

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
}

const fail = (check: VerificationCheck, message: string, cause?: string): MvmError =>
  new MvmError('signature', message, { check, ...(cause ? { cause } : {}) });

/**
 * Verifies `artifact` against a Sigstore bundle with no network access.
 *
 * @sigstore/verify@3 does the cryptography (signature, chain, SCT, signed entry
 * timestamp, inclusion proof, certificate validity at the log's time); the
 * steps around it close the gaps that library leaves to its callers (see
 * shared/NOTES.md), so each is a check of its own here.
 */
export function verifyArtifact(
  artifact: Uint8Array,
  parsed: ParsedBundle,
  trustedRoot: LoadedTrustedRoot,
  policy: TrustPolicy,
): VerifiedSignature {
  const trust = trustMaterialFor(trustedRoot, policy);
  const { bundle } = parsed;
  checkVerificationMaterial(bundle, policy);
  const artifactSha256 = checkArtifactDigest(bundle, artifact);
  const entry = checkTlogEntries(bundle, trust);
  const signer = runSigstoreVerifier(bundle, artifact, trust);
  checkSigner(policy, signer);
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
      logUrl: entry.logUrl,
    },
  };
}

function trustMaterialFor(trustedRoot: LoadedTrustedRoot, policy: TrustPolicy): TrustMaterial {
  if (policy.kind === 'certificate') return trustedRoot.material;
  let key: KeyObject;
  try {
    key = createPublicKey(policy.publicKeyPem);
  } catch (e) {
    throw new MvmError('input', 'The --key file is not a PEM public key', {
      cause: (e as Error).message,
    });
  }
  // The operator's key is trusted for all time: it is pinned by hand, not by a root.
  return { ...trustedRoot.material, publicKey: () => ({ publicKey: key, validFor: () => true }) };
}

/** The bundle must carry the kind of signer the policy asks for, and never its own root. */
function checkVerificationMaterial(bundle: Bundle, policy: TrustPolicy): void {
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
 * string comparison is trusted.
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
}

/** @sigstore/verify does not tie the bundle's digest (or DSSE subject) to the artifact; do it here. */
function checkArtifactDigest(bundle: Bundle, artifact: Uint8Array): string {
  const sha256 = createHash('sha256').update(artifact).digest('hex');
  if (bundle.content.$case === 'messageSignature') {
    const md = bundle.content.messageSignature.messageDigest;
    const algorithm = md?.algorithm === 0 || md?.algorithm === 1 ? 'sha256' : undefined;
    if (!md || algorithm === undefined) {
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
 * Transparency-log evidence, checked before the library runs: there must be
 * an entry; indexes must be sane; an entry may count only once; a checkpoint
 * must be signed by the very log the entry names (v3 matches any log whose URL
 * the signer name matches as a RegExp); and an entry's time is used only when
 * its signed entry timestamp vouches for it.
 */
function checkTlogEntries(
  bundle: Bundle,
  trust: TrustMaterial,
): { entry: TransparencyLogEntry; logUrl: string } {
  const entries = bundle.verificationMaterial.tlogEntries;
  if (entries.length === 0) throw fail('tlog-entry', 'the bundle has no transparency-log entry');
  const seen = new Set<string>();
  let first: { entry: TransparencyLogEntry; logUrl: string } | undefined;
  for (const entry of entries) {
    if (!/^(0|[1-9][0-9]{0,18})$/.test(entry.logIndex)) {
      throw fail(
        'tlog-entry',
        `transparency-log entry has an invalid log index ${JSON.stringify(entry.logIndex)}`,
      );
    }
    const logId = entry.logId?.keyId;
    if (!logId || logId.length === 0)
      throw fail('tlog-entry', 'transparency-log entry names no log');
    // v3 compares a DSSE bundle's payload digest with a hashedrekord entry, but
    // Rekor v2 logs DSSE as hashedrekord over the PAE: refuse the ambiguous pairing.
    if (bundle.content.$case === 'dsseEnvelope' && entry.kindVersion?.kind === 'hashedrekord') {
      throw fail('tlog-entry', 'a DSSE bundle logged as a hashedrekord entry is not supported');
    }
    const key = `${logId.toString('hex')}:${entry.logIndex}`;
    if (seen.has(key))
      throw fail('tlog-entry', 'the bundle lists the same transparency-log entry twice');
    seen.add(key);
    const log = trust.tlogs.find((t) => t.logID.equals(logId));
    if (!log) {
      throw fail(
        'tlog-entry',
        `transparency-log entry is from log ${logId.toString('hex')}, which the trusted root does not list`,
      );
    }
    if (!/^(0|[1-9][0-9]{0,15})$/.test(entry.integratedTime)) {
      throw fail('timestamp', 'transparency-log entry has an invalid integrated time');
    }
    const integrated = new Date(Number(entry.integratedTime) * 1000);
    if (entry.integratedTime === '0') {
      // No signed time: only the inclusion proof vouches for this entry, so the
      // index reported must be the proven one, and the log must still be in force.
      if (!entry.inclusionProof || entry.inclusionProof.logIndex !== entry.logIndex) {
        throw fail(
          'tlog-inclusion',
          'an entry without a signed time must carry an inclusion proof of its own index',
        );
      }
      if (log.validFor.start > new Date() || log.validFor.end.getTime() < 8.64e15) {
        throw fail(
          'tlog-entry',
          'an entry without a signed time is accepted only from a log whose key has no end date',
        );
      }
    } else {
      if (!entry.inclusionPromise) {
        throw fail(
          'signed-entry-timestamp',
          'transparency-log entry has an integrated time but no signed entry timestamp vouching for it',
        );
      }
      if (integrated < log.validFor.start || integrated > log.validFor.end) {
        throw fail(
          'tlog-entry',
          `the transparency log was not trusted at the entry's time ${integrated.toISOString()}`,
        );
      }
    }
    if (entry.inclusionProof) checkCheckpointSigner(entry, log);
    first ??= { entry, logUrl: log.baseURL };
  }
  return first!;
}

function checkCheckpointSigner(
  entry: TransparencyLogEntry,
  log: TrustMaterial['tlogs'][number],
): void {
  const envelope = entry.inclusionProof?.checkpoint?.envelope ?? '';
  const split = envelope.indexOf('\n\n');
  if (split < 0) throw fail('checkpoint', 'the inclusion proof checkpoint is malformed');
  const note = envelope.slice(0, split + 1);
  const origin = note.split('\n')[0] ?? '';
  let name: string;
  try {
    name = new URL(log.baseURL).host;
  } catch {
    throw fail('checkpoint', `the trusted log URL ${log.baseURL} is not a URL`);
  }
  if (origin !== name && !origin.startsWith(`${name} - `)) {
    throw fail('checkpoint', `the checkpoint is for log ${JSON.stringify(origin)}, not ${name}`);
  }
  const hint = log.logID.subarray(0, 4);
  const signed = envelope
    .slice(split + 2)
    .split('\n')
    .some((line) => {
      const m = /^\u2014 (\S+) ([A-Za-z0-9+/]+={0,2})$/u.exec(line);
      if (!m || m[1] !== name) return false;
      const sig = Buffer.from(m[2]!, 'base64');
      return (
        sig.length > 4 &&
        sig.subarray(0, 4).equals(hint) &&
        sigstoreCrypto.verify(Buffer.from(note), log.publicKey, sig.subarray(4))
      );
    });
  if (!signed) {
    throw fail(
      'checkpoint',
      `the inclusion proof checkpoint is not signed by the entry's log ${name}`,
    );
  }
}

function runSigstoreVerifier(
  bundle: Bundle,
  artifact: Uint8Array,
  trust: TrustMaterial,
): { identity?: string | undefined; issuer?: string | undefined } {
  try {
    const verifier = new Verifier(trust, {
      tlogThreshold: 1,
      ctlogThreshold: 1,
      timestampThreshold: 1,
    });
    const signer = verifier.verify(toSignedEntity(bundle, Buffer.from(artifact)));
    return {
      identity: signer.identity?.subjectAlternativeName,
      issuer: signer.identity?.extensions?.issuer,
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
