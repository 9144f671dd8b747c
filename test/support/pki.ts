/**
 * A test Sigstore deployment: a Fulcio-like CA with a CT log (@sigstore/mock)
 * and a Rekor-like transparency log (./tlog.ts), plus the trusted_root.json
 * describing them. It signs blobs the way a GitHub Actions release workflow
 * does with cosign (keyless: ephemeral key, certificate for the workflow
 * identity, hashedrekord entry) and writes every bundle format mvmctl reads.
 * Nothing here is mocked at verification time: mvmctl verifies these bundles
 * with the same code it uses for the public-good instance.
 */
import {
  createHash,
  generateKeyPairSync,
  sign,
  X509Certificate,
  type KeyObject,
} from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { initializeCA, initializeCTLog } from '@sigstore/mock';
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
}

const P256 = () => generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');
/** @sigstore/mock 0.13 hands out DER as a bare ArrayBufferView. */
const bytesOf = (v: ArrayBufferView): Buffer => Buffer.from(v.buffer, v.byteOffset, v.byteLength);

type CA = Awaited<ReturnType<typeof initializeCA>>;

export class TestPki {
  private constructor(
    private readonly ca: CA,
    private readonly untrustedCa: CA,
    /** Mutable clock shared with the CAs: @sigstore/mock reads this Date object at issue time. */
    private readonly caClock: Date,
    readonly tlog: TestTransparencyLog,
    private readonly ctlogKeyDer: Buffer,
    readonly start: Date,
  ) {}

  static async create(): Promise<TestPki> {
    // A few seconds ahead, so issued certificates never predate the mock root's notBefore (now).
    const start = new Date(Math.ceil((Date.now() + 5000) / 1000) * 1000);
    const caClock = new Date(start);
    const ctKeys = P256();
    const ctlog = await initializeCTLog(ctKeys, caClock);
    const ca = await initializeCA(P256(), ctlog, caClock);
    const untrustedCa = await initializeCA(P256(), ctlog, caClock);
    const tlogKeys = P256();
    const tlog = new TestTransparencyLog(
      'rekor.mvm.test',
      tlogKeys.publicKey.export({ format: 'der', type: 'spki' }),
      tlogKeys.privateKey,
    );
    return new TestPki(
      ca,
      untrustedCa,
      caClock,
      tlog,
      ctKeys.publicKey.export({ format: 'der', type: 'spki' }),
      start,
    );
  }

  /** The trusted_root.json (protobuf-specs JSON) naming this deployment's CA, CT log and transparency log. */
  trustedRoot(): Record<string, unknown> {
    // A fresh object per authority, so a test can edit one without touching the others.
    const validFor = () => ({ start: new Date(this.start.getTime() - 86_400_000).toISOString() });
    const logInstance = (baseUrl: string, der: Buffer) => ({
      baseUrl,
      hashAlgorithm: 'SHA2_256',
      publicKey: {
        rawBytes: b64(der),
        keyDetails: 'PKIX_ECDSA_P256_SHA_256',
        validFor: validFor(),
      },
      logId: { keyId: b64(createHash('sha256').update(der).digest()) },
    });
    return {
      mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
      tlogs: [logInstance(`https://${this.tlog.host}`, this.tlog.publicKeyDer)],
      certificateAuthorities: [
        {
          subject: { organization: 'sigstore.mock', commonName: 'sigstore' },
          uri: 'https://fulcio.mvm.test',
          certChain: { certificates: [{ rawBytes: b64(bytesOf(this.ca.rootCertificate)) }] },
          validFor: validFor(),
        },
      ],
      ctlogs: [logInstance('https://ctfe.mvm.test', this.ctlogKeyDer)],
      timestampAuthorities: [],
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
    const signer = await this.signer(opts);
    const signature = sign('sha256', artifact, signer.signingKey);
    const digest = createHash('sha256').update(artifact).digest();
    const entry = this.tlog.append(
      {
        apiVersion: '0.0.1',
        kind: 'hashedrekord',
        spec: {
          data: { hash: { algorithm: 'sha256', value: digest.toString('hex') } },
          signature: {
            content: b64(signature),
            publicKey: { content: b64(Buffer.from(signer.verifierPem)) },
          },
        },
      },
      signer.logSeconds,
    );

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
      verificationMaterial: verificationMaterial(signer, format, entry, withProof),
      messageSignature: {
        messageDigest: { algorithm: 'SHA2_256', digest: b64(digest) },
        signature: b64(signature),
      },
    };
  }

  /**
   * Signs an in-toto statement naming `subjects` (name -> SHA-256 hex) as a DSSE
   * envelope logged as a `dsse` entry: what `cosign attest-blob` produces.
   */
  async signAttestation(
    subjects: Record<string, string>,
    opts: SignOptions & { logKind?: 'dsse' | 'hashedrekord'; statementType?: string } = {},
  ): Promise<Record<string, unknown>> {
    const signer = await this.signer(opts);
    const payloadType = 'application/vnd.in-toto+json';
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
    const sha256hex = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    const body =
      opts.logKind === 'hashedrekord'
        ? {
            apiVersion: '0.0.1',
            kind: 'hashedrekord',
            spec: {
              data: { hash: { algorithm: 'sha256', value: sha256hex(payload) } },
              signature: {
                content: b64(signature),
                publicKey: { content: b64(Buffer.from(signer.verifierPem)) },
              },
            },
          }
        : {
            apiVersion: '0.0.1',
            kind: 'dsse',
            spec: {
              payloadHash: { algorithm: 'sha256', value: sha256hex(payload) },
              signatures: [
                { signature: b64(signature), verifier: b64(Buffer.from(signer.verifierPem)) },
              ],
            },
          };
    const entry = this.tlog.append(body, signer.logSeconds);
    const json = {
      mediaType: 'application/vnd.dev.sigstore.bundle.v0.3+json',
      verificationMaterial: verificationMaterial(signer, 'v0.3', entry, true),
      dsseEnvelope: {
        payload: b64(payload),
        payloadType,
        signatures: [{ sig: b64(signature), keyid: '' }],
      },
    };
    (json.verificationMaterial.tlogEntries as { kindVersion: unknown }[])[0]!.kindVersion = {
      kind: body.kind,
      version: '0.0.1',
    };
    return json;
  }

  /** The signing key and, for keyless, a fresh certificate: what Fulcio gives a workflow run. */
  private async signer(opts: SignOptions): Promise<Signer> {
    const certTime = opts.certTime ?? new Date(this.start.getTime() + 1000);
    const logTime = opts.logTime ?? new Date(certTime.getTime() + 1000);
    const logSeconds = Math.floor(logTime.getTime() / 1000);
    if (opts.key) {
      const verifierPem = opts.key.publicKey.export({ format: 'pem', type: 'spki' }) as string;
      return { signingKey: opts.key.privateKey, chain: [], verifierPem, logSeconds };
    }
    const ephemeral = P256();
    const ca = opts.untrustedCa ? this.untrustedCa : this.ca;
    this.caClock.setTime(certTime.getTime());
    const issuer = opts.issuer ?? GITHUB_ISSUER;
    const certDer = bytesOf(
      await ca.issueCertificate({
        publicKey: ephemeral.publicKey.export({ format: 'der', type: 'spki' }),
        subjectAltName: opts.identity ?? releaseIdentity('tinylabscom/mvm', 'v0.14.0'),
        extensions: [
          { oid: '1.3.6.1.4.1.57264.1.1', value: issuer, legacy: true },
          { oid: '1.3.6.1.4.1.57264.1.8', value: issuer },
          { oid: '1.3.6.1.4.1.57264.1.12', value: 'https://github.com/tinylabscom/mvm' },
        ],
      }),
    );
    return {
      signingKey: ephemeral.privateKey,
      certDer,
      chain: opts.includeRootInChain ? [certDer, bytesOf(ca.rootCertificate)] : [certDer],
      verifierPem: new X509Certificate(certDer).toString(),
      logSeconds,
    };
  }
}

interface Signer {
  signingKey: KeyObject;
  certDer?: Buffer;
  chain: Buffer[];
  /** What the log records as the verifier: the certificate or public key, PEM. */
  verifierPem: string;
  logSeconds: number;
}

function verificationMaterial(
  signer: Signer,
  format: Exclude<BundleFormat, 'cosign-legacy'>,
  entry: LoggedEntry,
  withProof: boolean,
): Record<string, unknown> {
  const singleCert = format === 'v0.3' || format === 'v0.3-legacy-media-type';
  const content = !signer.certDer
    ? { publicKey: { hint: '' } }
    : singleCert
      ? { certificate: { rawBytes: b64(signer.certDer) } }
      : { x509CertificateChain: { certificates: signer.chain.map((c) => ({ rawBytes: b64(c) })) } };
  return {
    ...content,
    tlogEntries: [tlogEntryJSON(entry, withProof)],
    timestampVerificationData: { rfc3161Timestamps: [] },
  };
}

function tlogEntryJSON(e: LoggedEntry, withProof: boolean): Record<string, unknown> {
  return {
    logIndex: String(e.logIndex),
    logId: { keyId: b64(e.logId) },
    kindVersion: { kind: 'hashedrekord', version: '0.0.1' },
    integratedTime: String(e.integratedTime),
    inclusionPromise: { signedEntryTimestamp: b64(e.signedEntryTimestamp) },
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
