import { X509Certificate } from 'node:crypto';
import {
  BUNDLE_V01_MEDIA_TYPE,
  BUNDLE_V02_MEDIA_TYPE,
  BUNDLE_V03_LEGACY_MEDIA_TYPE,
  BUNDLE_V03_MEDIA_TYPE,
  bundleFromJSON,
  type Bundle,
} from '@sigstore/bundle';
import { MvmError } from '../errors.js';
import { parseJsonObject } from '../core/json.js';

export type BundleFormat = 'v0.1' | 'v0.2' | 'v0.3' | 'cosign-legacy';

/** A bundle in the one internal form every format is converted to. */
export interface ParsedBundle {
  readonly format: BundleFormat;
  /** The media type as written in the file ("cosign-legacy" for the old cosign format). */
  readonly mediaType: string;
  readonly bundle: Bundle;
}

/** Exactly these media types are accepted; anything else fails closed. */
const MEDIA_TYPES: Readonly<Record<string, BundleFormat>> = {
  [BUNDLE_V01_MEDIA_TYPE]: 'v0.1',
  [BUNDLE_V02_MEDIA_TYPE]: 'v0.2',
  [BUNDLE_V03_LEGACY_MEDIA_TYPE]: 'v0.3',
  [BUNDLE_V03_MEDIA_TYPE]: 'v0.3',
};

const bundleError = (cause: string, check: 'bundle-format' | 'media-type' = 'bundle-format') =>
  new MvmError('signature', `The signature bundle is not a valid Sigstore bundle: ${cause}`, {
    cause,
    check,
    fix: 'Use the .bundle file published beside the artifact (cosign sign-blob --bundle output).',
  });

/** Parses bundle bytes in any supported format; throws a signature error naming what is wrong. */
export function parseBundle(bytes: Uint8Array): ParsedBundle {
  const parsed = parseJsonObject(bytes);
  if (!parsed.ok) throw bundleError(`it is ${parsed.reason}`);
  const raw = parsed.value;

  if (raw['mediaType'] === undefined && 'base64Signature' in raw) {
    return {
      format: 'cosign-legacy',
      mediaType: 'cosign-legacy',
      bundle: fromSigstoreJSON(fromLegacyCosign(raw)),
    };
  }
  const mediaType = raw['mediaType'];
  if (typeof mediaType !== 'string') throw bundleError('it has no mediaType', 'media-type');
  const format = MEDIA_TYPES[mediaType];
  if (format === undefined) {
    throw bundleError(
      `unsupported media type ${JSON.stringify(mediaType.slice(0, 100))}`,
      'media-type',
    );
  }
  checkOneEnvelopeSignature(raw);
  return { format, mediaType, bundle: fromSigstoreJSON(raw) };
}

/**
 * A DSSE envelope must carry exactly one signature: the log entry binds one,
 * and @sigstore/verify checks only the first. Said here by name, before
 * @sigstore/bundle refuses the shape as just an invalid field.
 */
function checkOneEnvelopeSignature(raw: Record<string, unknown>): void {
  const env = raw['dsseEnvelope'];
  const signatures = isObj(env) ? env['signatures'] : undefined;
  if (Array.isArray(signatures) && signatures.length !== 1) {
    const cause = `the DSSE envelope carries ${signatures.length} signatures; exactly one is accepted, the one its log entry binds`;
    throw new MvmError('signature', `The signature bundle is not acceptable: ${cause}`, {
      cause,
      check: 'signature',
      fix: 'Use the .bundle file cosign attest-blob wrote for the artifact; an envelope with added or removed signatures is not that file.',
    });
  }
}

function fromSigstoreJSON(raw: Record<string, unknown>): Bundle {
  try {
    return bundleFromJSON(raw);
  } catch (e) {
    const fields = (e as { fields?: string[] }).fields;
    throw bundleError(
      fields?.length ? `invalid fields: ${fields.join(', ')}` : (e as Error).message,
    );
  }
}

const isObj = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === 'object' && !Array.isArray(v);

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const HEX = /^[0-9a-fA-F]+$/;

/**
 * Maps cosign's legacy blob bundle (`base64Signature`, `cert`, `rekorBundle`)
 * field by field onto a v0.1 Sigstore bundle, so the same verifier runs on it.
 */
function fromLegacyCosign(raw: Record<string, unknown>): Record<string, unknown> {
  const sig = raw['base64Signature'];
  if (typeof sig !== 'string' || sig === '' || !BASE64.test(sig)) {
    throw bundleError('legacy cosign bundle: base64Signature is missing or not base64');
  }
  const rekor = raw['rekorBundle'];
  if (!isObj(rekor)) throw bundleError('legacy cosign bundle: rekorBundle is missing');
  const set = rekor['SignedEntryTimestamp'];
  const payload = rekor['Payload'];
  if (typeof set !== 'string' || !BASE64.test(set) || !isObj(payload)) {
    throw bundleError('legacy cosign bundle: rekorBundle has no SignedEntryTimestamp or Payload');
  }
  const { body, integratedTime, logIndex, logID } = payload;
  if (typeof body !== 'string' || !BASE64.test(body)) {
    throw bundleError('legacy cosign bundle: Payload.body is missing');
  }
  if (!Number.isSafeInteger(integratedTime) || !Number.isSafeInteger(logIndex)) {
    throw bundleError('legacy cosign bundle: Payload.integratedTime or logIndex is not an integer');
  }
  if (typeof logID !== 'string' || !HEX.test(logID) || logID.length % 2 !== 0) {
    throw bundleError('legacy cosign bundle: Payload.logID is not hex');
  }
  let entry: Record<string, unknown>;
  try {
    const decoded = JSON.parse(Buffer.from(body, 'base64').toString('utf8'));
    if (!isObj(decoded)) throw new Error('not an object');
    entry = decoded;
  } catch {
    throw bundleError('legacy cosign bundle: the Rekor entry body is not JSON');
  }
  const kind = entry['kind'];
  const apiVersion = entry['apiVersion'];
  const hash =
    isObj(entry['spec']) && isObj(entry['spec']['data'])
      ? entry['spec']['data']['hash']
      : undefined;
  if (kind !== 'hashedrekord' || typeof apiVersion !== 'string' || !isObj(hash)) {
    throw bundleError(
      `legacy cosign bundle: unsupported Rekor entry ${String(kind)}/${String(apiVersion)}`,
    );
  }
  if (
    hash['algorithm'] !== 'sha256' ||
    typeof hash['value'] !== 'string' ||
    !HEX.test(hash['value'])
  ) {
    throw bundleError('legacy cosign bundle: the Rekor entry has no sha256 digest');
  }

  let verificationContent: Record<string, unknown>;
  const cert = raw['cert'];
  if (cert === undefined || cert === '') {
    // Signed with a key (cosign sign-blob --key): the verifier supplies the key.
    verificationContent = { publicKey: { hint: '' } };
  } else {
    if (typeof cert !== 'string' || !BASE64.test(cert)) {
      throw bundleError('legacy cosign bundle: cert is not base64');
    }
    let der: Buffer;
    try {
      der = new X509Certificate(Buffer.from(cert, 'base64').toString('utf8')).raw;
    } catch {
      throw bundleError('legacy cosign bundle: cert is not a PEM certificate');
    }
    verificationContent = {
      x509CertificateChain: { certificates: [{ rawBytes: der.toString('base64') }] },
    };
  }

  return {
    mediaType: BUNDLE_V01_MEDIA_TYPE,
    verificationMaterial: {
      ...verificationContent,
      tlogEntries: [
        {
          logIndex: String(logIndex),
          logId: { keyId: Buffer.from(logID, 'hex').toString('base64') },
          kindVersion: { kind, version: apiVersion },
          integratedTime: String(integratedTime),
          inclusionPromise: { signedEntryTimestamp: set },
          canonicalizedBody: body,
        },
      ],
    },
    messageSignature: {
      messageDigest: {
        algorithm: 'SHA2_256',
        digest: Buffer.from(hash['value'], 'hex').toString('base64'),
      },
      signature: sig,
    },
  };
}
