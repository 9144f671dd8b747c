/**
 * A test Sigstore deployment: a Fulcio-like CA with a CT log (@sigstore/mock)
 * and a Rekor-like transparency log (./tlog.ts), plus the trusted_root.json
 * describing them. It signs blobs the way a GitHub Actions release workflow
 * does with cosign (keyless: ephemeral key, certificate for the workflow
 * identity, hashedrekord entry) and writes every bundle format mvmctl reads.
 * Nothing here is mocked at verification time: mvmctl verifies these bundles
 * with the same code it uses for the public-good instance.
 *
 * With `rekorV2` it signs what Sigstore signs today: a hashedrekord 0.0.2
 * entry (for DSSE: over the envelope's PAE) in an Ed25519-keyed log shard, no
 * signed entry timestamp (integratedTime 0), and an RFC 3161 timestamp from a
 * test TSA (@sigstore/mock). `tamper` breaks one binding of the logged entry
 * before it is logged, so the inclusion proof still holds and only the
 * binding check can catch it.
 */
import {
  createHash,
  generateKeyPairSync,
  randomBytes,
  randomInt,
  sign,
  webcrypto,
  X509Certificate,
  type KeyObject,
} from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { initializeCA, initializeCTLog, initializeTSA } from '@sigstore/mock';
import { TestTransparencyLog, type LoggedEntry } from './tlog.js';

export const GITHUB_ISSUER = 'https://token.actions.githubusercontent.com';
export const releaseIdentity = (repo: string, tag: string): string =>
  `https://github.com/${repo}/.github/workflows/release.yml@refs/tags/${tag}`;

export type BundleFormat = 'v0.1' | 'v0.2' | 'v0.3' | 'v0.3-legacy-media-type' | 'cosign-legacy';

export interface SignOptions {
  identity?: string;
  issuer?: string;
  format?: BundleFormat;
  /** When the certificate is issued (its 10-minute validity starts here). */
  certTime?: Date;
  /** When the log integrates the entry; defaults to certTime + 1 s. */
  logTime?: Date;
  /** Issue from a CA the trusted root does not list. */
  untrustedCa?: boolean;
  /** Put the CA's self-signed root into the bundle's certificate chain (v0.1/v0.2). */
  includeRootInChain?: boolean;
  /** Sign with this key instead of a certificate (cosign sign-blob --key). */
  key?: { privateKey: KeyObject; publicKey: KeyObject };
  /** Log in the Ed25519 Rekor v2 shard: hashedrekord 0.0.2, no SET, an RFC 3161 timestamp. */
  rekorV2?: boolean;
  /** When the TSA stamps the signature (rekorV2); defaults to logTime. null: no timestamp. */
  tsaTime?: Date | null;
  /** Break one binding of the logged entry (it is logged broken, so inclusion still verifies). */
  tamper?: Tamper;
  /**
   * Issue the signing certificate with this shape (by the same trusted CA key,
   * with an SCT from the same CT log) instead of @sigstore/mock's fixed one.
   */
  certificate?: CertificateShape;
  /** The origin line the log's checkpoint names (signed by the log's own key all the same). */
  checkpointOrigin?: string;
}

export const OID_CODE_SIGNING = '1.3.6.1.5.5.7.3.3';
export const OID_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';

/** What a custom signing certificate carries; each field defaults to what Fulcio issues. */
export interface CertificateShape {
  /** Extended key usage OIDs; null: no EKU extension at all. Default: codeSigning only. */
  extendedKeyUsage?: readonly string[] | null;
  /** Subject alternative names, in order. Default: one URI, the identity. */
  subjectAltNames?: readonly { type: 'url' | 'email'; value: string }[];
  /** Raw value of the legacy issuer extension 1.3.6.1.4.1.57264.1.1. Default: the issuer. */
  issuerV1?: Buffer;
  /** Raw bytes of the UTF8String in the issuer extension 1.3.6.1.4.1.57264.1.8. Default: the issuer. */
  issuerV2?: Buffer;
}

export interface Tamper {
  /** Log another digest: for DSSE the SHA-256 of the payload instead of the PAE; for a blob, of other bytes. */
  loggedDigest?: 'payload' | 'other';
  /** Log a second, equally valid signature by the same key instead of the bundle's. */
  otherSignature?: boolean;
  /** Log a second certificate for the same key (another serial) instead of the bundle's. */
  otherCertificate?: boolean;
  /** DSSE: the envelope carries two signatures (the logged one first). */
  twoEnvelopeSignatures?: boolean;
  /** Log hashedrekord 0.0.1 (still over the PAE for DSSE) with Rekor v2 evidence around it. */
  hashedrekordVersion?: '0.0.1';
  /** Sign other bytes than the artifact, and log that signature with the artifact's digest. */
  signatureOverOtherBytes?: boolean;
}

export interface TrustedRootOptions {
  /** End of the Rekor v2 shard key's validity (a rotated shard). */
  v2LogEnd?: Date;
  /** End of the Rekor v1 log key's validity. */
  logEnd?: Date;
}

const P256 = () => generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const ED25519 = () => generateKeyPairSync('ed25519');
const sha256 = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest();
const spki = (k: KeyObject): Buffer => k.export({ format: 'der', type: 'spki' });
const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');
/** @sigstore/mock 0.13 hands out DER as a bare ArrayBufferView. */
const bytesOf = (v: ArrayBufferView): Buffer => Buffer.from(v.buffer, v.byteOffset, v.byteLength);

type CA = Awaited<ReturnType<typeof initializeCA>>;
type TSA = Awaited<ReturnType<typeof initializeTSA>>;
type CTLog = Awaited<ReturnType<typeof initializeCTLog>>;
type KeyPair = { privateKey: KeyObject; publicKey: KeyObject };

/**
 * @peculiar/x509, the library @sigstore/mock issues its certificates with,
 * resolved through @sigstore/mock so it is the very copy that package uses
 * (its reflect-metadata polyfill loaded first, as @sigstore/mock does).
 */
const mockRequire = createRequire(createRequire(import.meta.url).resolve('@sigstore/mock'));
mockRequire('reflect-metadata');
const x509 = mockRequire('@peculiar/x509') as typeof import('@peculiar/x509');
/** The issuer name @sigstore/mock's CA signs as (its root's subject). */
const MOCK_CA_NAME = 'CN=sigstore,O=sigstore.mock';
const OID_ISSUER_V1 = '1.3.6.1.4.1.57264.1.1';
const OID_ISSUER_V2 = '1.3.6.1.4.1.57264.1.8';
const OID_SOURCE_REPO = '1.3.6.1.4.1.57264.1.12';
const OID_SCT_LIST = '1.3.6.1.4.1.11129.2.4.2';
const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;

/** DER: a tag and a definite length (short or long form) around `content`. */
function der(tag: number, content: Buffer): Buffer {
  const n = content.length;
  const len =
    n < 0x80
      ? Buffer.from([n])
      : (() => {
          const bytes: number[] = [];
          for (let v = n; v > 0; v >>= 8) bytes.unshift(v & 0xff);
          return Buffer.from([0x80 | bytes.length, ...bytes]);
        })();
  return Buffer.concat([Buffer.from([tag]), len, content]);
}
const utf8String = (b: Buffer): Buffer => der(0x0c, b);
const arrayBuffer = (b: Buffer): ArrayBuffer =>
  b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;

export class TestPki {
  private constructor(
    private readonly ca: CA,
    /** The trusted CA's key pair, for certificates @sigstore/mock's fixed template cannot make. */
    private readonly caKeys: KeyPair,
    private readonly ctlog: CTLog,
    private readonly untrustedCa: CA,
    /** Mutable clock shared with the CAs: @sigstore/mock reads this Date object at issue time. */
    private readonly caClock: Date,
    readonly tlog: TestTransparencyLog,
    /** The Rekor v2 shard: Ed25519 key, checkpoints only. */
    readonly tlogV2: TestTransparencyLog,
    private readonly tsa: TSA,
    /** Mutable clock of the TSA, read at stamping time like caClock. */
    private readonly tsaClock: Date,
    private readonly ctlogKeyDer: Buffer,
    readonly start: Date,
  ) {}

  static async create(): Promise<TestPki> {
    // A few seconds ahead, so issued certificates never predate the mock root's notBefore (now).
    const start = new Date(Math.ceil((Date.now() + 5000) / 1000) * 1000);
    const caClock = new Date(start);
    const ctKeys = P256();
    const ctlog = await initializeCTLog(ctKeys, caClock);
    const caKeys = P256();
    const ca = await initializeCA(caKeys, ctlog, caClock);
    const untrustedCa = await initializeCA(P256(), ctlog, caClock);
    const tlogKeys = P256();
    const tlog = new TestTransparencyLog(
      'rekor.mvm.test',
      spki(tlogKeys.publicKey),
      tlogKeys.privateKey,
    );
    const v2Keys = ED25519();
    const tlogV2 = new TestTransparencyLog(
      'log2025-1.rekor.mvm.test',
      spki(v2Keys.publicKey),
      v2Keys.privateKey,
    );
    const tsaClock = new Date(start);
    const tsa = await initializeTSA(P256(), tsaClock);
    return new TestPki(
      ca,
      caKeys,
      ctlog,
      untrustedCa,
      caClock,
      tlog,
      tlogV2,
      tsa,
      tsaClock,
      spki(ctKeys.publicKey),
      start,
    );
  }

  /** The trusted_root.json (protobuf-specs JSON) naming this deployment's CA, CT log and transparency log. */
  trustedRoot(opts: TrustedRootOptions = {}): Record<string, unknown> {
    // A fresh object per authority, so a test can edit one without touching the others.
    const validFor = () => ({ start: new Date(this.start.getTime() - 86_400_000).toISOString() });
    const logInstance = (
      baseUrl: string,
      der: Buffer,
      keyDetails = 'PKIX_ECDSA_P256_SHA_256',
      end?: Date,
    ) => ({
      baseUrl,
      hashAlgorithm: 'SHA2_256',
      publicKey: {
        rawBytes: b64(der),
        keyDetails,
        validFor: { ...validFor(), ...(end ? { end: end.toISOString() } : {}) },
      },
      logId: { keyId: b64(sha256(der)) },
    });
    return {
      mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
      tlogs: [
        logInstance(
          `https://${this.tlog.host}`,
          this.tlog.publicKeyDer,
          'PKIX_ECDSA_P256_SHA_256',
          opts.logEnd,
        ),
        logInstance(
          `https://${this.tlogV2.host}`,
          this.tlogV2.publicKeyDer,
          'PKIX_ED25519',
          opts.v2LogEnd,
        ),
      ],
      certificateAuthorities: [
        {
          subject: { organization: 'sigstore.mock', commonName: 'sigstore' },
          uri: 'https://fulcio.mvm.test',
          certChain: { certificates: [{ rawBytes: b64(bytesOf(this.ca.rootCertificate)) }] },
          validFor: validFor(),
        },
      ],
      ctlogs: [logInstance('https://ctfe.mvm.test', this.ctlogKeyDer)],
      timestampAuthorities: [
        {
          subject: { organization: 'sigstore.mock', commonName: 'tsa' },
          uri: 'https://tsa.mvm.test',
          // The TSA's signing certificate first, then its root: @sigstore/verify's order.
          certChain: {
            certificates: [this.tsa.intCertificate, this.tsa.rootCertificate].map((c) => ({
              rawBytes: b64(bytesOf(c)),
            })),
          },
          validFor: validFor(),
        },
      ],
    };
  }

  writeTrustedRoot(dir: string, root: Record<string, unknown> = this.trustedRoot()): string {
    mkdirSync(dir, { recursive: true });
    const path = join(dir, 'trusted_root.json');
    writeFileSync(path, JSON.stringify(root, null, 2));
    return path;
  }

  /** Signs `artifact` as cosign sign-blob would in a release workflow, and returns the bundle JSON. */
  async signBlob(artifact: Uint8Array, opts: SignOptions = {}): Promise<Record<string, unknown>> {
    const format = opts.format ?? 'v0.3';
    const t = opts.tamper ?? {};
    const signer = await this.signer(opts);
    const signed = t.signatureOverOtherBytes
      ? Buffer.concat([Buffer.from(artifact), Buffer.from('x')])
      : artifact;
    const signature = sign('sha256', signed, signer.signingKey);
    const digest = sha256(artifact);
    const logged = {
      digest: t.loggedDigest
        ? sha256(Buffer.concat([Buffer.from(artifact), Buffer.from('x')]))
        : digest,
      signature: t.otherSignature ? sign('sha256', artifact, signer.signingKey) : signature,
    };
    const messageSignature = {
      messageDigest: { algorithm: 'SHA2_256', digest: b64(digest) },
      signature: b64(signature),
    };
    if (opts.rekorV2) {
      if (format !== 'v0.3') throw new Error('a Rekor v2 bundle is a v0.3 bundle');
      return {
        mediaType: 'application/vnd.dev.sigstore.bundle.v0.3+json',
        verificationMaterial: await this.logV2(signer, opts, logged, signature),
        messageSignature,
      };
    }
    const body = hashedRekordV001(logged.digest, logged.signature, signer.loggedVerifierPem);
    const entry = this.tlog.append(body, signer.logSeconds, opts.checkpointOrigin);

    if (format === 'cosign-legacy') {
      return {
        base64Signature: b64(signature),
        ...(signer.certDer ? { cert: b64(Buffer.from(signer.verifierPem)) } : {}),
        rekorBundle: {
          SignedEntryTimestamp: b64(entry.signedEntryTimestamp),
          Payload: {
            body: b64(entry.body),
            integratedTime: entry.integratedTime,
            logIndex: entry.logIndex,
            logID: entry.logId.toString('hex'),
          },
        },
      };
    }
    const withProof = format !== 'v0.1';
    const mediaType = {
      'v0.1': 'application/vnd.dev.sigstore.bundle+json;version=0.1',
      'v0.2': 'application/vnd.dev.sigstore.bundle+json;version=0.2',
      'v0.3': 'application/vnd.dev.sigstore.bundle.v0.3+json',
      'v0.3-legacy-media-type': 'application/vnd.dev.sigstore.bundle+json;version=0.3',
    }[format];
    return {
      mediaType,
      verificationMaterial: verificationMaterial(signer, format, [
        tlogEntryJSON(entry, body, withProof),
      ]),
      messageSignature,
    };
  }

  /**
   * Signs an in-toto statement naming `subjects` (name -> SHA-256 hex) as a DSSE
   * envelope: what `cosign attest-blob` produces. Logged as a `dsse` entry, or
   * with `logKind: 'hashedrekord'` as a hashedrekord over the PAE (0.0.1, or
   * 0.0.2 with `rekorV2`, which is what Rekor v2 logs), or with
   * `logKind: 'intoto'` as Rekor v1's older intoto 0.0.2 entry.
   */
  async signAttestation(
    subjects: Record<string, string>,
    opts: SignOptions & {
      logKind?: 'dsse' | 'hashedrekord' | 'intoto';
      statementType?: string;
      /** The envelope's payload type (signed and logged as such); default in-toto's. */
      payloadType?: string;
    } = {},
  ): Promise<Record<string, unknown>> {
    const t = opts.tamper ?? {};
    const signer = await this.signer(opts);
    const payloadType = opts.payloadType ?? 'application/vnd.in-toto+json';
    const payload = Buffer.from(
      JSON.stringify({
        _type: opts.statementType ?? 'https://in-toto.io/Statement/v1',
        subject: Object.entries(subjects).map(([name, sha256]) => ({ name, digest: { sha256 } })),
        predicateType: 'https://slsa.dev/provenance/v1',
        predicate: {},
      }),
    );
    const pae = Buffer.concat([
      Buffer.from(`DSSEv1 ${payloadType.length} ${payloadType} ${payload.length} `),
      payload,
    ]);
    const signature = sign('sha256', pae, signer.signingKey);
    const second = sign('sha256', pae, signer.signingKey);
    const logged = {
      digest: t.loggedDigest ? sha256(payload) : sha256(pae),
      signature: t.otherSignature ? second : signature,
    };
    const dsseEnvelope = {
      payload: b64(payload),
      payloadType,
      signatures: [
        { sig: b64(signature), keyid: '' },
        ...(t.twoEnvelopeSignatures ? [{ sig: b64(second), keyid: '' }] : []),
      ],
    };
    if (opts.rekorV2) {
      return {
        mediaType: 'application/vnd.dev.sigstore.bundle.v0.3+json',
        verificationMaterial: await this.logV2(signer, opts, logged, signature),
        dsseEnvelope,
      };
    }
    const body =
      opts.logKind === 'hashedrekord'
        ? hashedRekordV001(logged.digest, logged.signature, signer.loggedVerifierPem)
        : opts.logKind === 'intoto'
          ? intotoV002(payloadType, payload, logged.signature, signer.loggedVerifierPem, t)
          : dsseV001(pae, payload, logged.signature, signer.loggedVerifierPem, t);
    const entry = this.tlog.append(body, signer.logSeconds, opts.checkpointOrigin);
    return {
      mediaType: 'application/vnd.dev.sigstore.bundle.v0.3+json',
      verificationMaterial: verificationMaterial(signer, 'v0.3', [
        tlogEntryJSON(entry, body, true),
      ]),
      dsseEnvelope,
    };
  }

  /**
   * Logs a hashedrekord entry in the Rekor v2 shard and returns the bundle's
   * verification material: no signed entry timestamp, an RFC 3161 timestamp
   * over the signature (unless tsaTime is null).
   */
  private async logV2(
    signer: Signer,
    opts: SignOptions,
    logged: { digest: Buffer; signature: Buffer },
    signature: Buffer,
  ): Promise<Record<string, unknown>> {
    const v001 = opts.tamper?.hashedrekordVersion === '0.0.1';
    const body = v001
      ? hashedRekordV001(logged.digest, logged.signature, signer.loggedVerifierPem)
      : {
          apiVersion: '0.0.2',
          kind: 'hashedrekord',
          spec: {
            hashedRekordV002: {
              data: { algorithm: 'SHA2_256', digest: b64(logged.digest) },
              signature: {
                content: b64(logged.signature),
                verifier: signer.loggedVerifierDer
                  ? {
                      keyDetails: 'PKIX_ECDSA_P256_SHA_256',
                      x509Certificate: { rawBytes: b64(signer.loggedVerifierDer) },
                    }
                  : {
                      keyDetails: 'PKIX_ECDSA_P256_SHA_256',
                      publicKey: { rawBytes: b64(signer.loggedKeyDer!) },
                    },
              },
            },
          },
        };
    const entry = this.tlogV2.append(body, 0);
    const tsaTime = opts.tsaTime === undefined ? new Date(signer.logSeconds * 1000) : opts.tsaTime;
    const timestamps: Buffer[] = [];
    if (tsaTime !== null) {
      this.tsaClock.setTime(tsaTime.getTime());
      timestamps.push(
        bytesOf(
          await this.tsa.timestamp({
            artifactHash: sha256(signature),
            hashAlgorithmOID: '2.16.840.1.101.3.4.2.1', // SHA-256
            nonce: randomInt(2 ** 31),
            policyOID: '1.3.6.1.4.1.57264.2',
            certReq: false,
          }),
        ),
      );
    }
    return verificationMaterial(
      signer,
      'v0.3',
      [tlogEntryJSON(entry, body, true, { noSignedTime: true })],
      timestamps,
    );
  }

  /** The signing key and, for keyless, a fresh certificate: what Fulcio gives a workflow run. */
  private async signer(opts: SignOptions): Promise<Signer> {
    const certTime = opts.certTime ?? new Date(this.start.getTime() + 1000);
    const logTime = opts.logTime ?? new Date(certTime.getTime() + 1000);
    const logSeconds = Math.floor(logTime.getTime() / 1000);
    if (opts.key) {
      const verifierPem = opts.key.publicKey.export({ format: 'pem', type: 'spki' }) as string;
      return {
        signingKey: opts.key.privateKey,
        chain: [],
        verifierPem,
        loggedVerifierPem: verifierPem,
        loggedKeyDer: spki(opts.key.publicKey),
        logSeconds,
      };
    }
    const ephemeral = P256();
    const ca = opts.untrustedCa ? this.untrustedCa : this.ca;
    this.caClock.setTime(certTime.getTime());
    const issuer = opts.issuer ?? GITHUB_ISSUER;
    const identity = opts.identity ?? releaseIdentity('tinylabscom/mvm', 'v0.14.0');
    const shape = opts.certificate;
    const issue = async () =>
      shape
        ? this.issueShaped(ephemeral.publicKey, identity, issuer, shape)
        : bytesOf(
            await ca.issueCertificate({
              publicKey: ephemeral.publicKey.export({ format: 'der', type: 'spki' }),
              subjectAltName: identity,
              extensions: [
                { oid: OID_ISSUER_V1, value: issuer, legacy: true },
                { oid: OID_ISSUER_V2, value: issuer },
                { oid: OID_SOURCE_REPO, value: 'https://github.com/tinylabscom/mvm' },
              ],
            }),
          );
    const certDer = await issue();
    // Same key, same identity, another serial: only a comparison of the DER tells them apart.
    const loggedDer = opts.tamper?.otherCertificate ? await issue() : certDer;
    return {
      signingKey: ephemeral.privateKey,
      certDer,
      chain: opts.includeRootInChain ? [certDer, bytesOf(ca.rootCertificate)] : [certDer],
      verifierPem: new X509Certificate(certDer).toString(),
      loggedVerifierPem: new X509Certificate(loggedDer).toString(),
      loggedVerifierDer: loggedDer,
      logSeconds,
    };
  }

  /**
   * A certificate like @sigstore/mock's CA issues (same issuer name and key,
   * same validity, an SCT from the same CT log over the precertificate), but
   * with the extensions `shape` asks for: what the mock's fixed template
   * (codeSigning, one URI) cannot make. Issued by the trusted CA only.
   */
  private async issueShaped(
    subjectKey: KeyObject,
    identity: string,
    issuer: string,
    shape: CertificateShape,
  ): Promise<Buffer> {
    const subtle = webcrypto.subtle;
    const publicKey = await subtle.importKey('spki', spki(subjectKey), EC_P256, true, ['verify']);
    const caPublic = await subtle.importKey('spki', spki(this.caKeys.publicKey), EC_P256, true, [
      'verify',
    ]);
    const caPrivate = await subtle.importKey(
      'pkcs8',
      this.caKeys.privateKey.export({ format: 'der', type: 'pkcs8' }),
      EC_P256,
      false,
      ['sign'],
    );
    const eku = shape.extendedKeyUsage === undefined ? [OID_CODE_SIGNING] : shape.extendedKeyUsage;
    const names = shape.subjectAltNames ?? [{ type: 'url' as const, value: identity }];
    const extensions = [
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      ...(eku === null ? [] : [new x509.ExtendedKeyUsageExtension([...eku])]),
      new x509.SubjectAlternativeNameExtension(
        names.map((n) => ({ type: n.type, value: n.value })),
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(publicKey, false, webcrypto),
      await x509.AuthorityKeyIdentifierExtension.create(caPublic, false, webcrypto),
      new x509.Extension(OID_ISSUER_V1, false, arrayBuffer(shape.issuerV1 ?? Buffer.from(issuer))),
      new x509.Extension(
        OID_ISSUER_V2,
        false,
        arrayBuffer(utf8String(shape.issuerV2 ?? Buffer.from(issuer))),
      ),
      new x509.Extension(
        OID_SOURCE_REPO,
        false,
        arrayBuffer(utf8String(Buffer.from('https://github.com/tinylabscom/mvm'))),
      ),
    ];
    const tbs = {
      serialNumber: randomBytes(8)
        .toString('hex')
        .replace(/^[89a-f]/, '1'),
      notBefore: new Date(this.caClock),
      notAfter: new Date(this.caClock.getTime() + 10 * 60_000),
      issuer: MOCK_CA_NAME,
      subject: '',
      publicKey,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-384' },
      signingKey: caPrivate,
    };
    // As Fulcio does: log the precertificate, then embed the SCT it returns.
    const pre = await x509.X509CertificateGenerator.create({ ...tbs, extensions }, webcrypto);
    const issuerId = sha256(spki(this.caKeys.publicKey));
    const sct = Buffer.from(await this.ctlog.log(pre.rawData, arrayBuffer(issuerId)));
    const sctList = der(0x04, Buffer.concat([Buffer.from([0x00, sct.length]), sct]));
    const cert = await x509.X509CertificateGenerator.create(
      {
        ...tbs,
        extensions: [...extensions, new x509.Extension(OID_SCT_LIST, false, arrayBuffer(sctList))],
      },
      webcrypto,
    );
    return Buffer.from(cert.rawData);
  }
}

interface Signer {
  signingKey: KeyObject;
  certDer?: Buffer;
  chain: Buffer[];
  /** The certificate or public key, PEM, as the bundle carries it. */
  verifierPem: string;
  /** What the log records as the verifier (differs from verifierPem only when tampered). */
  loggedVerifierPem: string;
  loggedVerifierDer?: Buffer;
  loggedKeyDer?: Buffer;
  logSeconds: number;
}

interface LogBody {
  apiVersion: string;
  kind: string;
}

function hashedRekordV001(digest: Buffer, signature: Buffer, verifierPem: string) {
  return {
    apiVersion: '0.0.1',
    kind: 'hashedrekord',
    spec: {
      data: { hash: { algorithm: 'sha256', value: digest.toString('hex') } },
      signature: {
        content: b64(signature),
        publicKey: { content: b64(Buffer.from(verifierPem)) },
      },
    },
  };
}

function dsseV001(pae: Buffer, payload: Buffer, signature: Buffer, verifierPem: string, t: Tamper) {
  return {
    apiVersion: '0.0.1',
    kind: 'dsse',
    spec: {
      payloadHash: {
        algorithm: 'sha256',
        value: (t.loggedDigest === 'other' ? sha256(pae) : sha256(payload)).toString('hex'),
      },
      signatures: [{ signature: b64(signature), verifier: b64(Buffer.from(verifierPem)) }],
    },
  };
}

/**
 * Rekor v1's intoto 0.0.2 body as Rekor stores it: the payload left out, its
 * hash kept; each signature base64 of the envelope's base64 signature (so
 * twice encoded), the verifier base64 of a PEM.
 */
function intotoV002(
  payloadType: string,
  payload: Buffer,
  signature: Buffer,
  verifierPem: string,
  t: Tamper,
) {
  const sig = b64(Buffer.from(b64(signature)));
  const envelope = {
    payloadType,
    signatures: [{ sig, publicKey: b64(Buffer.from(verifierPem)) }],
  };
  return {
    apiVersion: '0.0.2',
    kind: 'intoto',
    spec: {
      content: {
        envelope,
        hash: {
          algorithm: 'sha256',
          value: sha256(Buffer.from(JSON.stringify(envelope))).toString('hex'),
        },
        payloadHash: {
          algorithm: 'sha256',
          value: (t.loggedDigest === 'other'
            ? sha256(Buffer.concat([payload, Buffer.from('x')]))
            : sha256(payload)
          ).toString('hex'),
        },
      },
    },
  };
}

function verificationMaterial(
  signer: Signer,
  format: Exclude<BundleFormat, 'cosign-legacy'>,
  tlogEntries: Record<string, unknown>[],
  timestamps: Buffer[] = [],
): Record<string, unknown> {
  const singleCert = format === 'v0.3' || format === 'v0.3-legacy-media-type';
  const content = !signer.certDer
    ? { publicKey: { hint: '' } }
    : singleCert
      ? { certificate: { rawBytes: b64(signer.certDer) } }
      : { x509CertificateChain: { certificates: signer.chain.map((c) => ({ rawBytes: b64(c) })) } };
  return {
    ...content,
    tlogEntries,
    timestampVerificationData: {
      rfc3161Timestamps: timestamps.map((t) => ({ signedTimestamp: b64(t) })),
    },
  };
}

function tlogEntryJSON(
  e: LoggedEntry,
  body: LogBody,
  withProof: boolean,
  { noSignedTime = false } = {},
): Record<string, unknown> {
  return {
    logIndex: String(e.logIndex),
    logId: { keyId: b64(e.logId) },
    kindVersion: { kind: body.kind, version: body.apiVersion },
    // Rekor v2 signs no entry timestamp: the time comes from a TSA.
    integratedTime: noSignedTime ? '0' : String(e.integratedTime),
    ...(noSignedTime
      ? {}
      : { inclusionPromise: { signedEntryTimestamp: b64(e.signedEntryTimestamp) } }),
    ...(withProof
      ? {
          inclusionProof: {
            logIndex: String(e.inclusionProof.logIndex),
            rootHash: b64(e.inclusionProof.rootHash),
            treeSize: String(e.inclusionProof.treeSize),
            hashes: e.inclusionProof.hashes.map(b64),
            checkpoint: { envelope: e.inclusionProof.checkpoint },
          },
        }
      : {}),
    canonicalizedBody: b64(e.body),
  };
}

/**
 * A throwaway self-signed TLS server certificate (P-256, one day) made by the
 * openssl CLI in `dir`: `cert` is also the CA file a client trusts
 * (NODE_EXTRA_CA_CERTS). `subject` is the CN, `altNames` the subjectAltName
 * entries (`DNS:localhost`, `IP:127.0.0.1`).
 */
export function selfSignedTlsCertificate(
  dir: string,
  subject: string,
  altNames: string[],
): { key: string; cert: string } {
  const key = join(dir, 'tls.key');
  const cert = join(dir, 'tls.crt');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-days',
      '1',
      '-subj',
      `/CN=${subject}`,
      '-addext',
      `subjectAltName=${altNames.join(',')}`,
      '-keyout',
      key,
      '-out',
      cert,
    ],
    { stdio: 'ignore' },
  );
  return { key, cert };
}
