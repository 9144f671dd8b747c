/**
 * Transparency-log evidence: what a bundle's log entries must prove before
 * and after @sigstore/verify runs. The library verifies inclusion (signed
 * entry timestamp, Merkle proof, checkpoint signature) and compares the
 * logged digest and signature, but leaves to its callers whether the logged
 * body names this bundle's signer, whether the checkpoint is signed by the
 * entry's own log, and when an entry without a signed time (Rekor v2)
 * existed. Those checks live here; verifyArtifact (./verify.ts) calls
 * checkTlogEntries before the library and checkEntryTimes after it.
 */
import { createHash, createPublicKey, X509Certificate } from 'node:crypto';
import { crypto as sigstoreCrypto, dsse } from '@sigstore/core';
import type { Bundle, TransparencyLogEntry } from '@sigstore/bundle';
import type { TrustMaterial } from '@sigstore/verify';
import { MvmError, type VerificationCheck } from '../errors.js';
import { parseJsonObject } from '../core/json.js';
import type { VerifiedSignature } from './verified.js';

const fail = (check: VerificationCheck, message: string, cause?: string): MvmError =>
  new MvmError('signature', message, { check, ...(cause ? { cause } : {}) });

/** Who signed, as a log entry must name it: the signing certificate's DER, or the key's SPKI DER. */
export type SignerMaterial =
  | { readonly kind: 'certificate'; readonly der: Buffer }
  | { readonly kind: 'key'; readonly spki: Buffer };

type TrustedLog = TrustMaterial['tlogs'][number];

/** An entry that passed the checks made before the library runs, with the log that vouches for it. */
export interface CheckedEntry {
  readonly entry: TransparencyLogEntry;
  readonly log: TrustedLog;
  /** The entry carries a signed entry timestamp for its integrated time. */
  readonly signedTime: boolean;
}

/**
 * Transparency-log evidence, checked before the library runs: there must be
 * an entry; indexes must be sane; an entry may count only once; the logged
 * body must bind this very signature (checkLoggedBody); a checkpoint must be
 * signed by the very log the entry names (v3 matched any log whose URL the
 * signer name matched as a RegExp; v4 ties it to the entry's log ID, by
 * substring of the URL); and an entry's time is used only when its signed
 * entry timestamp vouches for it. An entry without one (Rekor v2) is judged
 * by verified TSA time after the library ran (checkEntryTimes).
 */
export function checkTlogEntries(
  bundle: Bundle,
  trust: TrustMaterial,
  signer: SignerMaterial,
): CheckedEntry[] {
  const entries = bundle.verificationMaterial.tlogEntries;
  if (entries.length === 0) throw fail('tlog-entry', 'the bundle has no transparency-log entry');
  const tsaTokens = bundle.verificationMaterial.timestampVerificationData?.rfc3161Timestamps ?? [];
  const seen = new Set<string>();
  const checked: CheckedEntry[] = [];
  for (const entry of entries) {
    // The library compares the index as a JS number: above 2^53 two strings would read as one.
    if (
      !/^(0|[1-9][0-9]{0,15})$/.test(entry.logIndex) ||
      Number(entry.logIndex) > Number.MAX_SAFE_INTEGER
    ) {
      throw fail(
        'tlog-entry',
        `transparency-log entry has an invalid log index ${JSON.stringify(entry.logIndex)}`,
      );
    }
    const logId = entry.logId?.keyId;
    if (!logId || logId.length === 0)
      throw fail('tlog-entry', 'transparency-log entry names no log');
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
    checkLoggedBody(bundle, entry, signer);
    const integrated = new Date(Number(entry.integratedTime) * 1000);
    // An unrepresentable time would compare false against every validity window.
    if (
      !/^(0|[1-9][0-9]{0,15})$/.test(entry.integratedTime) ||
      Number.isNaN(integrated.getTime())
    ) {
      throw fail('timestamp', 'transparency-log entry has an invalid integrated time');
    }
    const hasEnd = log.validFor.end.getTime() < 8.64e15;
    if (entry.integratedTime === '0') {
      // No signed time: only the inclusion proof vouches for this entry, so the
      // index reported must be the proven one.
      if (!entry.inclusionProof || entry.inclusionProof.logIndex !== entry.logIndex) {
        throw fail(
          'tlog-inclusion',
          'an entry without a signed time must carry an inclusion proof of its own index',
        );
      }
      if (entry.inclusionPromise) {
        throw fail(
          'signed-entry-timestamp',
          'an entry with integrated time 0 carries a signed entry timestamp',
        );
      }
      // Without a timestamp authority nothing says when the entry was made, so
      // the log's key must be in force now and for good. With one, its
      // verified time is held against the key's validity once the library has
      // verified it (checkEntryTimes).
      if (tsaTokens.length === 0) {
        if (hasEnd) {
          throw fail(
            'timestamp',
            `an entry without a signed entry timestamp from ${log.baseURL}, whose key has an end date, needs an RFC 3161 timestamp to place it inside the key's validity`,
          );
        }
        if (log.validFor.start > new Date()) {
          throw fail('tlog-entry', `the transparency log ${log.baseURL} is not yet trusted`);
        }
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
    checked.push({ entry, log, signedTime: entry.integratedTime !== '0' });
  }
  return checked;
}

/**
 * After @sigstore/verify has verified every RFC 3161 timestamp: an entry
 * without a signed entry timestamp is placed in time by the TSA, so every
 * verified TSA time must lie inside its log key's validity (a rotated shard's
 * key signs nothing after its end date). Returns the time to report.
 */
export function checkEntryTimes(
  entries: CheckedEntry[],
  tsaTimes: Date[],
): VerifiedSignature['signedTime'] {
  for (const { log, signedTime } of entries) {
    if (signedTime) continue;
    for (const t of tsaTimes) {
      if (t < log.validFor.start || t > log.validFor.end) {
        const end = log.validFor.end.getTime() < 8.64e15 ? log.validFor.end.toISOString() : 'open';
        throw fail(
          'timestamp',
          `the timestamp authority's time ${t.toISOString()} is outside the validity of the key of ${log.baseURL} (${log.validFor.start.toISOString()} to ${end})`,
        );
      }
    }
  }
  const logged = entries.find((e) => e.signedTime);
  if (logged) {
    return {
      source: 'signed-entry-timestamp',
      time: new Date(Number(logged.entry.integratedTime) * 1000).toISOString(),
    };
  }
  return tsaTimes.length > 0
    ? { source: 'timestamp-authority', time: tsaTimes[0]!.toISOString() }
    : null;
}

const HEX = /^[0-9a-f]+$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

const member = (v: unknown, ...path: string[]): unknown => {
  let cur = v;
  for (const k of path) {
    if (cur === null || typeof cur !== 'object' || Array.isArray(cur)) return undefined;
    cur = Object.hasOwn(cur, k) ? (cur as Record<string, unknown>)[k] : undefined;
  }
  return cur;
};

/** What a log entry records about the signature it logs. */
interface LoggedSignature {
  readonly digest: Buffer;
  /** What the digest is of: the signed bytes (hashedrekord) or the DSSE payload (dsse, intoto). */
  readonly digestOf: 'signed' | 'payload';
  readonly signature: Buffer;
  readonly verifier: SignerMaterial;
}

/**
 * Ties the logged entry to this bundle's signature, whatever the library also
 * compares: the logged digest is the artifact's (message signature) or
 * SHA-256 of the DSSE PAE (Rekor v2 hashedrekord 0.0.2 over an envelope) or
 * of the payload (dsse and intoto entries); the logged signature is the
 * bundle's; and the logged verifier is the bundle's signer (same certificate
 * DER, same key).
 * @sigstore/verify@4 compares digest and signature but not the verifier, and
 * accepts a DSSE envelope logged as hashedrekord 0.0.1, which Rekor never writes.
 */
function checkLoggedBody(
  bundle: Bundle,
  entry: TransparencyLogEntry,
  signer: SignerMaterial,
): void {
  const kind = entry.kindVersion?.kind ?? '';
  const version = entry.kindVersion?.version ?? '';
  const parsed = parseJsonObject(entry.canonicalizedBody);
  if (!parsed.ok) throw fail('tlog-entry', `the logged entry body is ${parsed.reason}`);
  const body = parsed.value;
  if (body['kind'] !== kind || body['apiVersion'] !== version) {
    throw fail(
      'tlog-entry',
      `the logged entry body is ${String(body['kind'])}/${String(body['apiVersion'])}, not the ${kind}/${version} the bundle names`,
    );
  }
  const isDsse = bundle.content.$case === 'dsseEnvelope';
  const what = `${kind} ${version} entry`;
  let logged: LoggedSignature;
  switch (`${kind}/${version}`) {
    case 'hashedrekord/0.0.1':
      if (isDsse) {
        throw fail(
          'tlog-entry',
          'a DSSE bundle logged as a hashedrekord 0.0.1 entry is refused: only a hashedrekord 0.0.2 entry (Rekor v2) logs a DSSE envelope, over its PAE',
        );
      }
      logged = {
        digest: hexDigest(member(body, 'spec', 'data', 'hash'), what),
        digestOf: 'signed',
        signature: base64Field(member(body, 'spec', 'signature', 'content'), what, 'signature'),
        verifier: pemVerifier(member(body, 'spec', 'signature', 'publicKey', 'content'), what),
      };
      break;
    case 'hashedrekord/0.0.2': {
      const spec = member(body, 'spec', 'hashedRekordV002');
      logged = {
        digest: v2Digest(member(spec, 'data'), what),
        digestOf: 'signed',
        signature: base64Field(member(spec, 'signature', 'content'), what, 'signature'),
        verifier: v2Verifier(member(spec, 'signature', 'verifier'), what),
      };
      break;
    }
    case 'dsse/0.0.1':
    case 'dsse/0.0.2': {
      if (!isDsse) throw fail('tlog-entry', 'a message-signature bundle logged as a dsse entry');
      const v2 = version === '0.0.2';
      const spec = v2 ? member(body, 'spec', 'dsseV002') : member(body, 'spec');
      const sigs = member(spec, 'signatures');
      if (!Array.isArray(sigs) || sigs.length !== 1) {
        throw fail('tlog-entry', `the ${what} must log exactly one signature`);
      }
      logged = {
        digest: v2
          ? v2Digest(member(spec, 'payloadHash'), what)
          : hexDigest(member(spec, 'payloadHash'), what),
        digestOf: 'payload',
        signature: base64Field(member(sigs[0], v2 ? 'content' : 'signature'), what, 'signature'),
        verifier: v2
          ? v2Verifier(member(sigs[0], 'verifier'), what)
          : pemVerifier(member(sigs[0], 'verifier'), what),
      };
      break;
    }
    case 'intoto/0.0.2': {
      // Rekor v1's older attestation kind, not written by cosign 2+ or Rekor v2
      // but still in the log; bound like a dsse entry, or a same-key
      // certificate for another identity could stand in the log for the signer.
      if (!isDsse) throw fail('tlog-entry', 'a message-signature bundle logged as an intoto entry');
      const sigs = member(body, 'spec', 'content', 'envelope', 'signatures');
      if (!Array.isArray(sigs) || sigs.length !== 1) {
        throw fail('tlog-entry', `the ${what} must log exactly one signature`);
      }
      // Rekor stores the envelope's base64 signature base64-encoded once more.
      const sig = base64Field(member(sigs[0], 'sig'), what, 'signature').toString('utf8');
      logged = {
        digest: hexDigest(member(body, 'spec', 'content', 'payloadHash'), what),
        digestOf: 'payload',
        signature: base64Field(sig, what, 'signature'),
        verifier: pemVerifier(member(sigs[0], 'publicKey'), what),
      };
      break;
    }
    default:
      throw fail('tlog-entry', `unsupported transparency-log entry kind ${kind}/${version}`);
  }

  let expected: Buffer;
  let expectedName: string;
  let signature: Buffer;
  if (bundle.content.$case === 'dsseEnvelope') {
    const env = bundle.content.dsseEnvelope;
    signature = Buffer.from(env.signatures[0]!.sig);
    if (logged.digestOf === 'signed') {
      expected = createHash('sha256')
        .update(dsse.preAuthEncoding(env.payloadType, env.payload))
        .digest();
      expectedName = "the SHA-256 of the DSSE envelope's PAE (pre-authentication encoding)";
    } else {
      expected = createHash('sha256').update(env.payload).digest();
      expectedName = "the SHA-256 of the DSSE envelope's payload";
    }
  } else {
    const ms = bundle.content.messageSignature;
    signature = Buffer.from(ms.signature);
    expected = Buffer.from(ms.messageDigest?.digest ?? []);
    expectedName = "the bundle's message digest";
  }
  if (!sigstoreCrypto.bufferEqual(logged.digest, expected)) {
    throw fail('tlog-entry', `the digest logged in the ${what} is not ${expectedName}`);
  }
  const whose = bundle.content.$case === 'dsseEnvelope' ? "the envelope's" : "the bundle's";
  if (!sigstoreCrypto.bufferEqual(logged.signature, signature)) {
    throw fail('tlog-entry', `the signature logged in the ${what} is not ${whose} signature`);
  }
  const v = logged.verifier;
  if (v.kind !== signer.kind) {
    throw fail(
      'tlog-entry',
      `the ${what} logs a ${v.kind === 'key' ? 'public key' : 'certificate'} as verifier, but the bundle is signed with a ${signer.kind === 'key' ? 'key' : 'certificate'}`,
    );
  }
  if (v.kind === 'certificate' && signer.kind === 'certificate' && !v.der.equals(signer.der)) {
    throw fail(
      'tlog-entry',
      `the certificate logged in the ${what} is not the bundle's signing certificate`,
    );
  }
  if (v.kind === 'key' && signer.kind === 'key' && !v.spki.equals(signer.spki)) {
    throw fail('tlog-entry', `the public key logged in the ${what} is not the verification key`);
  }
}

function hexDigest(hash: unknown, what: string): Buffer {
  const algorithm = member(hash, 'algorithm');
  const value = member(hash, 'value');
  if (
    algorithm !== 'sha256' ||
    typeof value !== 'string' ||
    value.length !== 64 ||
    !HEX.test(value)
  ) {
    throw fail('tlog-entry', `the ${what} does not log a SHA-256 digest`);
  }
  return Buffer.from(value, 'hex');
}

function v2Digest(hash: unknown, what: string): Buffer {
  if (member(hash, 'algorithm') !== 'SHA2_256') {
    throw fail('tlog-entry', `the ${what} does not log a SHA-256 digest`);
  }
  const digest = base64Field(member(hash, 'digest'), what, 'digest');
  if (digest.length !== 32) throw fail('tlog-entry', `the ${what} does not log a SHA-256 digest`);
  return digest;
}

function base64Field(v: unknown, what: string, field: string): Buffer {
  if (typeof v !== 'string' || v === '' || !BASE64.test(v)) {
    throw fail('tlog-entry', `the ${what} has no ${field}`);
  }
  return Buffer.from(v, 'base64');
}

/** Rekor v1 bodies name the verifier as base64 of a PEM certificate or public key. */
function pemVerifier(v: unknown, what: string): SignerMaterial {
  const pem = base64Field(v, what, 'verifier').toString('utf8');
  try {
    if (pem.includes('-----BEGIN CERTIFICATE-----')) {
      return { kind: 'certificate', der: new X509Certificate(pem).raw };
    }
    return { kind: 'key', spki: createPublicKey(pem).export({ format: 'der', type: 'spki' }) };
  } catch {
    throw fail('tlog-entry', `the verifier logged in the ${what} does not parse`);
  }
}

/** Rekor v2 bodies name the verifier as a DER certificate or a DER (SPKI) public key. */
function v2Verifier(v: unknown, what: string): SignerMaterial {
  const cert = member(v, 'x509Certificate', 'rawBytes');
  const key = member(v, 'publicKey', 'rawBytes');
  if (cert !== undefined && key === undefined) {
    return { kind: 'certificate', der: base64Field(cert, what, 'verifier certificate') };
  }
  if (key !== undefined && cert === undefined) {
    const der = base64Field(key, what, 'verifier key');
    try {
      const spki = createPublicKey({ key: der, format: 'der', type: 'spki' });
      return { kind: 'key', spki: spki.export({ format: 'der', type: 'spki' }) };
    } catch {
      throw fail('tlog-entry', `the verifier key logged in the ${what} does not parse`);
    }
  }
  throw fail('tlog-entry', `the ${what} must log exactly one verifier, a certificate or a key`);
}

function checkCheckpointSigner(entry: TransparencyLogEntry, log: TrustedLog): void {
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
