/**
 * Tests that pin the verifier's own security checks (src/trust/verify.ts,
 * src/trust/tlog.ts): each signs or edits a bundle so that exactly one check
 * of ours stands between it and "Verified OK" (@sigstore/verify alone would
 * accept it), and asserts that check's name and wording. Each has a control
 * made the same way that verifies, so a refusal cannot come from the test
 * machinery. The built CLI as a subprocess; nothing is mocked.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCli, type CliResult } from './support/cli.js';
import { HOST_ARCH, testHost, VERSION } from './support/host.js';
import {
  GITHUB_ISSUER,
  OID_CODE_SIGNING,
  OID_SERVER_AUTH,
  releaseIdentity,
  TestPki,
  type SignOptions,
} from './support/pki.js';
import { REPO, writeReleaseSet } from './support/release.js';

const IDENTITY = releaseIdentity('tinylabscom/mvm', 'v0.14.0');
const MANIFEST = Buffer.from(
  JSON.stringify({ schema_version: 1, version: '0.14.0', arch: 'x86_64' }, null, 2) + '\n',
);
const SHA256 = createHash('sha256').update(MANIFEST).digest('hex');

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const clone = (b: object): Json => JSON.parse(JSON.stringify(b));

let dir: string;
let pki: TestPki;
let rootPath: string;
let manifestPath: string;
let n = 0;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mvm-pinning-'));
  pki = await TestPki.create();
  rootPath = pki.writeTrustedRoot(dir);
  manifestPath = join(dir, 'dev-image-x86_64.manifest.json');
  writeFileSync(manifestPath, MANIFEST);
});
after(() => rmSync(dir, { recursive: true, force: true }));

function verify(
  bundle: object,
  opts: { root?: string; flags?: string[]; json?: boolean } = {},
): Promise<CliResult> {
  const path = join(dir, `b${n++}.json`);
  writeFileSync(path, JSON.stringify(bundle));
  return runCli([
    'verify-blob',
    '--trusted-root',
    opts.root ?? rootPath,
    '--bundle',
    path,
    ...(opts.flags ?? [
      '--certificate-identity',
      IDENTITY,
      '--certificate-oidc-issuer',
      GITHUB_ISSUER,
    ]),
    ...(opts.json ? ['--json'] : []),
    manifestPath,
  ]);
}

/** Exit 10, exactly this check, this wording in the first line, no stack trace, nothing on stdout. */
function assertFails(r: CliResult, check: string, wording: RegExp): void {
  assert.equal(r.code, 10, `expected exit 10, got ${r.code}: ${r.stderr}${r.stdout}`);
  assert.match(r.stderr, new RegExp(`\\n {2}check: ${check}\\n`), r.stderr);
  assert.match(r.stderr.split('\n')[0]!, wording, r.stderr);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace without --debug');
  assert.equal(r.stdout, '');
}

function assertVerifies(r: CliResult): void {
  assert.equal(r.code, 0, `control must verify: ${r.stderr}${r.stdout}`);
  assert.match(r.stderr, /\nVerified OK\n$/);
}

const blob = (o: SignOptions = {}) => pki.signBlob(MANIFEST, o);

describe('pinning: the signing certificate must be for code signing (EKU)', () => {
  it('control: a certificate issued the same way with codeSigning verifies', async () => {
    assertVerifies(await verify(await blob({ certificate: {} })));
  });

  it('control: codeSigning among other usages verifies (cosign and sigstore-go accept it)', async () => {
    const certificate = { extendedKeyUsage: [OID_SERVER_AUTH, OID_CODE_SIGNING] };
    assertVerifies(await verify(await blob({ certificate })));
  });

  it('a certificate without the extended key usage extension is refused', async () => {
    const r = await verify(await blob({ certificate: { extendedKeyUsage: null } }));
    assertFails(r, 'certificate-chain', /code signing/);
    assert.match(r.stderr, /1\.3\.6\.1\.5\.5\.7\.3\.3/);
  });

  it('a certificate for TLS servers only (serverAuth) is refused', async () => {
    const r = await verify(await blob({ certificate: { extendedKeyUsage: [OID_SERVER_AUTH] } }));
    assertFails(r, 'certificate-chain', /code signing/);
  });

  it('also for a DSSE attestation', async () => {
    const r = await verify(
      await pki.signAttestation({ m: SHA256 }, { certificate: { extendedKeyUsage: null } }),
    );
    assertFails(r, 'certificate-chain', /code signing/);
  });

  it('dev import-image refuses a release set signed without codeSigning, and installs nothing', async () => {
    const root = join(dir, 'import-eku');
    const host = testHost(root, rootPath);
    const set = await writeReleaseSet(pki, join(root, 'set'), {
      version: VERSION,
      arch: HOST_ARCH,
    });
    writeFileSync(
      set.bundle,
      JSON.stringify(
        await pki.signBlob(readFileSync(set.manifest), {
          identity: releaseIdentity(REPO, `v${VERSION}`),
          certificate: { extendedKeyUsage: [OID_SERVER_AUTH] },
        }),
      ),
    );
    const r = await host.importSet(set);
    assert.equal(r.code, 10, r.stderr);
    assert.match(r.stderr, /\n {2}check: certificate-chain\n/);
    assert.match(r.stderr, /code signing/);
    assert.throws(() => readFileSync(join(host.prebuilt, `v${VERSION}`, 'manifest.json')));
  });
});

describe('pinning: the certificate names one identity and one issuer, in printable ASCII', () => {
  const other = releaseIdentity('attacker/mvm', 'v0.14.0');

  it('two URI identities, the expected one first (the one the library reads)', async () => {
    const subjectAltNames = [
      { type: 'url' as const, value: IDENTITY },
      { type: 'url' as const, value: other },
    ];
    assertFails(
      await verify(await blob({ certificate: { subjectAltNames } })),
      'identity',
      /exactly one identity/,
    );
  });

  it('two URI identities, the expected one second', async () => {
    const subjectAltNames = [
      { type: 'url' as const, value: other },
      { type: 'url' as const, value: IDENTITY },
    ];
    assertFails(
      await verify(await blob({ certificate: { subjectAltNames } })),
      'identity',
      /exactly one identity/,
    );
  });

  it('a URI and an email', async () => {
    const subjectAltNames = [
      { type: 'url' as const, value: IDENTITY },
      { type: 'email' as const, value: 'attacker@example.com' },
    ];
    assertFails(
      await verify(await blob({ certificate: { subjectAltNames } })),
      'identity',
      /exactly one identity/,
    );
  });

  it('an issuer with a high-bit byte that reads as the expected one in ASCII', async () => {
    // 0xE8 & 0x7F is 'h': @sigstore/verify decodes 'ascii' and reads GITHUB_ISSUER.
    const issuerV2 = Buffer.from(GITHUB_ISSUER);
    issuerV2[0] = 0xe8;
    assertFails(
      await verify(await blob({ certificate: { issuerV2 } })),
      'issuer',
      /issuer is not printable ASCII/,
    );
  });

  it('a legacy issuer extension with a control character', async () => {
    const issuerV1 = Buffer.from(`${GITHUB_ISSUER}\u001b[2J`);
    assertFails(
      await verify(await blob({ certificate: { issuerV1 } })),
      'issuer',
      /issuer is not printable ASCII/,
    );
  });

  it('two issuer extensions that disagree (the library reads the expected one)', async () => {
    assertFails(
      await verify(
        await blob({ certificate: { issuerV1: Buffer.from('https://accounts.google.com') } }),
      ),
      'issuer',
      /two different OIDC issuers/,
    );
  });
});

describe('pinning: transparency-log evidence', () => {
  it('control: the same log and checkpoint verify', async () => {
    assertVerifies(await verify(await blob({ format: 'v0.3' })));
  });

  it('a checkpoint naming another log (signed by the entry log, origin of another host)', async () => {
    const r = await verify(
      await blob({ format: 'v0.3', checkpointOrigin: 'rekor.other.test - 1' }),
    );
    assertFails(
      r,
      'checkpoint',
      /checkpoint is for log "rekor\.other\.test - 1", not rekor\.mvm\.test/,
    );
  });

  it('a checkpoint whose origin only starts with the log name', async () => {
    const r = await verify(
      await blob({ format: 'v0.3', checkpointOrigin: 'rekor.mvm.test.evil - 1' }),
    );
    assertFails(r, 'checkpoint', /checkpoint is for log/);
  });

  it("a log key whose validity ended before the entry's integrated time", async () => {
    const bundle = await blob({ format: 'v0.1' });
    const ended = new Date(pki.start.getTime() - 3600_000);
    const root = pki.writeTrustedRoot(join(dir, 'ended'), pki.trustedRoot({ logEnd: ended }));
    assertFails(
      await verify(bundle, { root }),
      'tlog-entry',
      /transparency log was not trusted at the entry's time/,
    );
  });

  it("a log key whose validity starts after the entry's integrated time", async () => {
    const bundle = await blob({ format: 'v0.1' });
    const trusted = pki.trustedRoot();
    const later = new Date(pki.start.getTime() + 3600_000).toISOString();
    (trusted as Json).tlogs[0].publicKey.validFor.start = later;
    const root = pki.writeTrustedRoot(join(dir, 'later'), trusted);
    assertFails(
      await verify(bundle, { root }),
      'tlog-entry',
      /transparency log was not trusted at the entry's time/,
    );
  });

  for (const [what, edit] of [
    ['a leading zero', (t: string) => `0${t}`],
    ['a plus sign', (t: string) => `+${t}`],
    ['an exponent', (t: string) => `${Number(t) / 10}e1`],
    ['non-digits', (t: string) => `${t}x`],
  ] as const) {
    it(`an integrated time with ${what}`, async () => {
      const b = clone(await blob({ format: 'v0.1' }));
      const e = b.verificationMaterial.tlogEntries[0];
      e.integratedTime = edit(e.integratedTime);
      assertFails(await verify(b), 'timestamp', /invalid integrated time/);
    });
  }

  it('an entry without a log ID (refused when the bundle is parsed)', async () => {
    const b = clone(await blob({ format: 'v0.3' }));
    delete b.verificationMaterial.tlogEntries[0].logId;
    assertFails(await verify(b), 'bundle-format', /invalid fields: .*tlogEntries\[0\]\.logId/);
  });

  it('an entry with an empty log ID', async () => {
    const b = clone(await blob({ format: 'v0.3' }));
    b.verificationMaterial.tlogEntries[0].logId.keyId = '';
    assertFails(await verify(b), 'tlog-entry', /names no log/);
  });
});

describe('pinning: what the signature is over', () => {
  it('a DSSE payload type that is not in-toto', async () => {
    const r = await verify(
      await pki.signAttestation({ m: SHA256 }, { payloadType: 'application/json' }),
    );
    assertFails(r, 'artifact-digest', /unsupported DSSE payload type "application\/json"/);
  });

  it('a message digest algorithm other than SHA-256 (the digest bytes unchanged)', async () => {
    for (const algorithm of ['SHA2_384', 'SHA2_512', 'SHA3_256', 'HASH_ALGORITHM_UNSPECIFIED']) {
      const b = clone(await blob({ format: 'v0.3' }));
      b.messageSignature.messageDigest.algorithm = algorithm;
      assertFails(await verify(b), 'artifact-digest', /message digest is not SHA-256/);
    }
  });

  it('a message digest that names no algorithm', async () => {
    const b = clone(await blob({ format: 'v0.3' }));
    delete b.messageSignature.messageDigest.algorithm;
    assertFails(await verify(b), 'artifact-digest', /message digest is not SHA-256/);
  });
});

describe('pinning: the identity pattern is anchored as a whole', () => {
  it('an alternation cannot be split by the anchors (^a|b$ would accept evil+identity)', async () => {
    const flags = [
      '--certificate-identity-regexp',
      `nobody|${IDENTITY.replace(/[.?]/g, '\\$&')}`,
      '--certificate-oidc-issuer',
      GITHUB_ISSUER,
    ];
    assertVerifies(await verify(await blob(), { flags }));
    for (const identity of [`https://evil.example/${IDENTITY}`, `${IDENTITY}-evil`, 'nobody-x']) {
      assertFails(
        await verify(await blob({ identity }), { flags }),
        'identity',
        /certificate identity .* does not match/,
      );
    }
  });
});
