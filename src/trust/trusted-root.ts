import { createHash, createPublicKey, X509Certificate } from 'node:crypto';
import { TrustedRoot } from '@sigstore/protobuf-specs';
import { toTrustMaterial, type TrustMaterial } from '@sigstore/verify';
import { MvmError } from '../errors.js';
import { parseJsonObject } from '../core/json.js';
import { newestStartMs } from '../core/trust-policy.js';
import { MAX_TRUSTED_ROOT_BYTES } from '../io/files.js';
import { readTrustFile } from './trust-file.js';
import {
  installedTrustedRootBytes,
  readInstalledTrust,
  type TrustRecord,
} from './installed-trust.js';

/** Media types a Sigstore trusted root is published under (protobuf-specs TrustedRoot). */
export const TRUSTED_ROOT_MEDIA_TYPES: readonly string[] = [
  'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
  'application/vnd.dev.sigstore.trustedroot.v0.1+json',
  'application/vnd.dev.sigstore.trustedroot.v0.2+json',
];

export {
  EMBEDDED_TRUSTED_ROOT_PATH,
  EMBEDDED_TUF_ROOT_PATH,
  embeddedTrustedRootBytes,
  embeddedTufRootBytes,
} from './embedded.js';
import { embeddedTrustedRootBytes } from './embedded.js';

/**
 * Where a trusted root came from: built into mvmctl, installed by `trust
 * import`, a named file, or fetched by `dev fetch` just now (TUF-verified, to
 * check the transfer set it carries it in).
 */
export type TrustedRootOrigin = 'embedded' | 'installed' | 'file' | 'fetched';

export interface LoadedTrustedRoot {
  readonly root: TrustedRoot;
  /** The root's authorities decoded once, by @sigstore/verify's own rules. */
  readonly material: TrustMaterial;
  /** "embedded", "installed (TUF root v17, timestamp v9, verified 2026-12-07)", or the path it was read from. */
  readonly source: string;
  readonly origin: TrustedRootOrigin;
  /** The newest validFor.start among its authorities (undefined when none is readable). */
  readonly newestAuthorityStartMs: number | undefined;
  /** For an installed root: what its TUF verification recorded. */
  readonly installed?: TrustRecord;
  readonly sha256: string;
  readonly mediaType: string;
}

/**
 * Validates and decodes a trusted root. A root that cannot be fully
 * understood is refused: @sigstore/verify treats an authority with no
 * `validFor.start` as valid since the epoch, which would widen trust silently.
 */
export function parseTrustedRoot(
  bytes: Uint8Array,
  source: string,
  origin: TrustedRootOrigin = source === 'embedded' ? 'embedded' : 'file',
): LoadedTrustedRoot {
  const fail = (cause: string): MvmError =>
    new MvmError('trusted-root', `Trusted root ${source} is not usable`, { cause });
  const parsed = parseJsonObject(bytes);
  if (!parsed.ok) throw fail(`it is ${parsed.reason}`);
  // proto3 JSON may write an unset field as null ("end": null, "ctlogs": null):
  // read it as absent, so the checks below and TrustedRoot.fromJSON see one shape.
  const raw = withoutNulls(parsed.value);
  const mediaType = raw['mediaType'];
  if (typeof mediaType !== 'string' || !TRUSTED_ROOT_MEDIA_TYPES.includes(mediaType)) {
    throw fail(`unknown media type ${JSON.stringify(mediaType)}`);
  }
  const tlogs = arrayField(raw, 'tlogs', fail);
  // An empty list may be written as absent; a key-only deployment has no CA or CT log.
  const optional = (key: string) => (raw[key] === undefined ? [] : arrayField(raw, key, fail));
  const cas = optional('certificateAuthorities');
  const ctlogs = optional('ctlogs');
  const tsas = optional('timestampAuthorities');
  if (tlogs.length === 0) throw fail('it lists no transparency log');

  tlogs.forEach((t, i) => checkLogInstance(t, `tlogs[${i}]`, fail));
  ctlogs.forEach((t, i) => checkLogInstance(t, `ctlogs[${i}]`, fail));
  cas.forEach((c, i) => checkCertificateAuthority(c, `certificateAuthorities[${i}]`, fail));
  tsas.forEach((c, i) => checkCertificateAuthority(c, `timestampAuthorities[${i}]`, fail));

  let root: TrustedRoot;
  let material: TrustMaterial;
  try {
    root = TrustedRoot.fromJSON(raw);
    // The library decodes keys by its own rules (a PKIX_RSA_* label means PKCS#1
    // to it); a key it cannot decode makes the root unusable, found here at load.
    material = toTrustMaterial(root);
  } catch (e) {
    throw fail(`a key or certificate does not decode: ${(e as Error).message}`);
  }
  return {
    root,
    material,
    source,
    origin,
    newestAuthorityStartMs: newestStartMs(raw),
    mediaType,
    sha256: createHash('sha256').update(bytes).digest('hex'),
  };
}

/**
 * Loads the operator's trusted root (`path`); when none is named, the one
 * `trust import` installed in `dataDir`, else the embedded one.
 */
export async function loadTrustedRoot(
  path?: string,
  opts: { readonly dataDir?: string } = {},
): Promise<LoadedTrustedRoot> {
  if (path === undefined || path === '') {
    const installed =
      opts.dataDir === undefined ? undefined : await readInstalledTrust(opts.dataDir);
    if (installed === undefined) return parseTrustedRoot(embeddedTrustedRootBytes(), 'embedded');
    const loaded = parseTrustedRoot(
      await installedTrustedRootBytes(installed),
      installedLabel(installed.record),
      'installed',
    );
    return { ...loaded, installed: installed.record };
  }
  try {
    // Held to the store's owner/mode rule: whoever can write the root decides every signature.
    return parseTrustedRoot(
      await readTrustFile(path, 'trusted root', MAX_TRUSTED_ROOT_BYTES, 'trusted-root'),
      path,
      'file',
    );
  } catch (e) {
    if (e instanceof MvmError && e.code === 'input') {
      throw new MvmError('trusted-root', e.message, {
        ...(e.cause !== undefined ? { cause: e.cause } : {}),
        fix: e.fix,
        underlying: e.underlying ?? e,
      });
    }
    throw e;
  }
}

/** "installed (TUF root v17, timestamp v9, verified 2026-12-07)". */
export const installedLabel = (r: TrustRecord): string =>
  `installed (TUF root v${r.versions.root}, timestamp v${r.versions.timestamp}, verified ${r.verifiedAt.slice(0, 10)})`;

type Fail = (cause: string) => MvmError;

/**
 * Drops every object member whose value is null, at any depth. Array elements
 * are kept as they are: a null where an authority should be stays an error.
 */
function withoutNulls(value: Record<string, unknown>): Record<string, unknown> {
  const walk = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(walk);
    if (v === null || typeof v !== 'object') return v;
    // Null-prototype, as the strict parser makes them: "__proto__" stays plain data.
    const out: Record<string, unknown> = Object.create(null);
    for (const [k, member] of Object.entries(v)) if (member !== null) out[k] = walk(member);
    return out;
  };
  return walk(value) as Record<string, unknown>;
}

function arrayField(
  obj: Record<string, unknown>,
  key: string,
  fail: Fail,
): Record<string, unknown>[] {
  const v = obj[key];
  if (!Array.isArray(v)) throw fail(`"${key}" is missing or not an array`);
  return v.map((item, i) => {
    if (item === null || typeof item !== 'object' || Array.isArray(item)) {
      throw fail(`${key}[${i}] is not an object`);
    }
    return item as Record<string, unknown>;
  });
}

function obj(v: unknown): Record<string, unknown> | undefined {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
    ? (v as Record<string, unknown>)
    : undefined;
}

function checkValidFor(validFor: unknown, where: string, fail: Fail): void {
  const vf = obj(validFor);
  const start = vf?.['start'];
  if (typeof start !== 'string' || Number.isNaN(Date.parse(start))) {
    throw fail(
      `${where} has no valid validFor.start (an authority must say since when it is trusted)`,
    );
  }
  const end = vf?.['end'];
  if (end !== undefined && (typeof end !== 'string' || Number.isNaN(Date.parse(end)))) {
    throw fail(`${where} has an unreadable validFor.end`);
  }
  if (typeof end === 'string' && Date.parse(end) < Date.parse(start)) {
    throw fail(`${where} ends before it starts`);
  }
}

function checkLogInstance(t: Record<string, unknown>, where: string, fail: Fail): void {
  if (typeof t['baseUrl'] !== 'string' || !URL.canParse(t['baseUrl'])) {
    throw fail(`${where} has no valid baseUrl`);
  }
  const pk = obj(t['publicKey']);
  if (!pk || typeof pk['rawBytes'] !== 'string') throw fail(`${where} has no public key`);
  checkValidFor(pk['validFor'], `${where}.publicKey`, fail);
  const keyId = obj(t['logId'])?.['keyId'];
  if (typeof keyId !== 'string' || Buffer.from(keyId, 'base64').length === 0) {
    throw fail(`${where} has no logId`);
  }
  const der = Buffer.from(pk['rawBytes'], 'base64');
  const rsaPkcs1 = typeof pk['keyDetails'] === 'string' && pk['keyDetails'].startsWith('PKCS1_RSA');
  try {
    createPublicKey({ key: der, format: 'der', type: rsaPkcs1 ? 'pkcs1' : 'spki' });
  } catch {
    throw fail(`${where} public key does not parse`);
  }
}

function checkCertificateAuthority(c: Record<string, unknown>, where: string, fail: Fail): void {
  checkValidFor(c['validFor'], where, fail);
  const certs = obj(c['certChain'])?.['certificates'];
  if (!Array.isArray(certs) || certs.length === 0) throw fail(`${where} has no certificate chain`);
  certs.forEach((cert, i) => {
    const raw = obj(cert)?.['rawBytes'];
    if (typeof raw !== 'string') throw fail(`${where} certificate ${i} has no rawBytes`);
    try {
      new X509Certificate(Buffer.from(raw, 'base64'));
    } catch {
      throw fail(`${where} certificate ${i} does not parse`);
    }
  });
}
