/**
 * `mvmctl verify-blob` end to end: the built CLI as a subprocess, bundles signed
 * by the test PKI (test/support/pki.ts), real files in a temporary directory,
 * real Sigstore verification. Nothing is mocked.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCli, type CliResult } from './support/cli.js';
import { GITHUB_ISSUER, releaseIdentity, TestPki, type BundleFormat } from './support/pki.js';

const IDENTITY = releaseIdentity('tinylabscom/mvm', 'v0.14.0');
const MANIFEST = Buffer.from(
  JSON.stringify({ schema_version: 1, version: '0.14.0', arch: 'x86_64' }, null, 2) + '\n',
);

let dir: string;
let pki: TestPki;
let rootPath: string;
let manifestPath: string;
let n = 0;

/** Writes a bundle (object or raw text) to a fresh file and returns its path. */
function put(content: object | string | Buffer, name = `b${n++}.json`): string {
  const path = join(dir, name);
  writeFileSync(
    path,
    typeof content === 'string' || Buffer.isBuffer(content) ? content : JSON.stringify(content),
  );
  return path;
}

function verify(
  bundle: object | string,
  opts: {
    artifact?: string;
    flags?: string[];
    json?: boolean;
    env?: Record<string, string>;
    rootFlag?: boolean;
  } = {},
): Promise<CliResult> {
  const bundlePath = typeof bundle === 'string' ? bundle : put(bundle);
  return runCli(
    [
      'verify-blob',
      ...(opts.rootFlag === false ? [] : ['--trusted-root', rootPath]),
      '--bundle',
      bundlePath,
      ...(opts.flags ?? [
        '--certificate-identity',
        IDENTITY,
        '--certificate-oidc-issuer',
        GITHUB_ISSUER,
      ]),
      ...(opts.json ? ['--json'] : []),
      opts.artifact ?? manifestPath,
    ],
    opts.env,
  );
}

/** Asserts a verification failure: exit 10, the failed check named, cause and fix, no stack trace. */
function assertFails(r: CliResult, check: string, wording?: RegExp): void {
  assert.equal(r.code, 10, `expected exit 10, got ${r.code}: ${r.stderr}${r.stdout}`);
  assert.match(r.stderr, new RegExp(`check: ${check}\\n`));
  assert.match(r.stderr, /^Error: /);
  assert.match(r.stderr, /fix: /);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace without --debug');
  assert.equal(r.stdout, '');
  if (wording) assert.match(r.stderr.split('\n')[0]!, wording);
}

// Helpers to edit a bundle's JSON in place.
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const clone = (b: object): Json => JSON.parse(JSON.stringify(b));
const flipBase64 = (s: string, at = 10): string => {
  const buf = Buffer.from(s, 'base64');
  buf[at % buf.length]! ^= 0x01;
  return buf.toString('base64');
};

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mvm-verify-'));
  pki = await TestPki.create();
  rootPath = pki.writeTrustedRoot(dir);
  manifestPath = put(MANIFEST, 'dev-image-x86_64.manifest.json');
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('verify-blob: every bundle format verifies', () => {
  const formats: BundleFormat[] = [
    'v0.1',
    'v0.2',
    'v0.3',
    'v0.3-legacy-media-type',
    'cosign-legacy',
  ];
  for (const format of formats) {
    it(`${format}`, async () => {
      const r = await verify(await pki.signBlob(MANIFEST, { format }), { json: true });
      assert.equal(r.code, 0, r.stderr + r.stdout);
      const out = JSON.parse(r.stdout);
      assert.equal(out.verified, true);
      assert.equal(out.signer.identity, IDENTITY);
      assert.equal(out.signer.issuer, GITHUB_ISSUER);
      assert.equal(out.bundleFormat, format === 'v0.3-legacy-media-type' ? 'v0.3' : format);
      assert.match(out.tlog.logIndex, /^[0-9]+$/);
      assert.equal(out.tlog.logUrl, 'https://rekor.mvm.test');
      assert.ok(Math.abs(Date.parse(out.tlog.integratedTime) - pki.start.getTime()) < 10_000);
      assert.equal(
        out.artifactSha256,
        execFileSync('sha256sum', [manifestPath]).toString().split(' ')[0],
      );
    });
  }

  it('prints "Verified OK" and the signer in human form', async () => {
    const r = await verify(await pki.signBlob(MANIFEST));
    assert.equal(r.code, 0, r.stderr);
    // As cosign prints it: on stderr, after the details (src/cli/commands/verify-blob.ts).
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /\nVerified OK\n$/);
    assert.match(
      r.stderr,
      new RegExp(`Signed by: +${IDENTITY.replace(/[.?]/g, '\\$&')} \\(issuer ${GITHUB_ISSUER}\\)`),
    );
  });

  it('accepts an identity pattern that matches the whole identity', async () => {
    const r = await verify(await pki.signBlob(MANIFEST), {
      flags: [
        '--certificate-identity-regexp',
        'https://github\\.com/tinylabscom/mvm/\\.github/workflows/release\\.yml@refs/tags/v[0-9]+\\.[0-9]+\\.[0-9]+',
        '--certificate-oidc-issuer',
        GITHUB_ISSUER,
      ],
    });
    assert.equal(r.code, 0, r.stderr);
  });

  it('accepts the seed page regexp (unescaped dots) for the genuine identity', async () => {
    const r = await verify(await pki.signBlob(MANIFEST), {
      flags: [
        '--certificate-identity-regexp',
        IDENTITY,
        '--certificate-oidc-issuer',
        GITHUB_ISSUER,
      ],
    });
    assert.equal(r.code, 0, r.stderr);
  });

  it('takes the trusted root from MVM_TRUSTED_ROOT', async () => {
    const r = await verify(await pki.signBlob(MANIFEST), {
      rootFlag: false,
      env: { MVM_TRUSTED_ROOT: rootPath },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`Trusted root: +${rootPath}`));
  });
});

describe('verify-blob: tampering and mismatches fail closed', () => {
  it('one flipped byte in the artifact', async () => {
    const bundle = await pki.signBlob(MANIFEST);
    const tampered = Buffer.from(MANIFEST);
    tampered[20]! ^= 0x01;
    assertFails(
      await verify(bundle, { artifact: put(tampered, 'tampered.json') }),
      'artifact-digest',
    );
  });

  it('artifact and bundle from different signings', async () => {
    const other = Buffer.from(MANIFEST.toString().replace('x86_64', 'aarch64'));
    assertFails(await verify(await pki.signBlob(other)), 'artifact-digest');
  });

  it("another signing's bundle with its digest edited to the artifact's", async () => {
    const other = Buffer.from(MANIFEST.toString().replace('x86_64', 'aarch64'));
    const b = clone(await pki.signBlob(other));
    const good = clone(await pki.signBlob(MANIFEST));
    b.messageSignature.messageDigest = good.messageSignature.messageDigest;
    assertFails(
      await verify(b),
      'tlog-entry',
      /digest logged in the hashedrekord 0\.0\.1 entry is not the bundle's message digest/,
    );
  });

  it('a signature edited in the bundle (the log still holds the original)', async () => {
    const b = clone(await pki.signBlob(MANIFEST));
    b.messageSignature.signature = flipBase64(b.messageSignature.signature, 40);
    assertFails(await verify(b), 'tlog-entry', /signature logged .* is not the bundle's signature/);
  });

  it('a signature over other bytes, with the logged entry to match', async () => {
    const r = await verify(
      await pki.signBlob(MANIFEST, { tamper: { signatureOverOtherBytes: true } }),
    );
    assertFails(r, 'signature');
  });

  it('an identity that differs only by a suffix', async () => {
    const r = await verify(await pki.signBlob(MANIFEST, { identity: `${IDENTITY}-evil` }));
    assertFails(r, 'identity', /certificate identity ".*v0\.14\.0-evil" does not match/);
  });

  it('an identity that differs only by a prefix', async () => {
    const r = await verify(
      await pki.signBlob(MANIFEST, { identity: `https://evil.example/${IDENTITY}` }),
    );
    assertFails(r, 'identity');
  });

  it('an identity with a high-bit byte that reads as the expected one in ASCII', async () => {
    const lookalike = '\u00e8' + IDENTITY.slice(1); // 0xE8 & 0x7F is 'h'
    assertFails(
      await verify(await pki.signBlob(MANIFEST, { identity: lookalike })),
      'identity',
      /printable ASCII/,
    );
  });

  it('another repository', async () => {
    assertFails(
      await verify(
        await pki.signBlob(MANIFEST, { identity: releaseIdentity('attacker/mvm', 'v0.14.0') }),
      ),
      'identity',
    );
  });

  it('a regexp is anchored: it would match a prefixed or suffixed identity if it were not', async () => {
    const pattern =
      'https://github.com/tinylabscom/mvm/.github/workflows/release.yml@refs/tags/v0.14.0';
    for (const identity of [`${IDENTITY}-rc1`, `https://evil.example/?${IDENTITY}`]) {
      assert.ok(new RegExp(pattern).test(identity), 'precondition: the unanchored pattern matches');
      const r = await verify(await pki.signBlob(MANIFEST, { identity }), {
        flags: [
          '--certificate-identity-regexp',
          pattern,
          '--certificate-oidc-issuer',
          GITHUB_ISSUER,
        ],
      });
      assertFails(r, 'identity');
    }
  });

  it('a regexp alternation is anchored on both sides', async () => {
    const pattern = `nobody|${IDENTITY}`;
    // ^nobody|IDENTITY$ (or ^(?:nobody|IDENTITY) without $) would accept one of these.
    for (const identity of [`${IDENTITY}-evil`, `evil${IDENTITY}`]) {
      assert.ok(
        new RegExp(`^nobody|${IDENTITY}$`).test(identity) ||
          new RegExp(`^(?:${pattern})`).test(identity),
        'precondition: a mis-grouped anchor accepts the identity',
      );
      const r = await verify(await pki.signBlob(MANIFEST, { identity }), {
        flags: [
          '--certificate-identity-regexp',
          pattern,
          '--certificate-oidc-issuer',
          GITHUB_ISSUER,
        ],
      });
      assertFails(r, 'identity', /certificate identity .* does not match/);
    }
  });

  it('a wrong issuer', async () => {
    const r = await verify(await pki.signBlob(MANIFEST, { issuer: 'https://accounts.google.com' }));
    assertFails(r, 'issuer', /issuer "https:\/\/accounts\.google\.com" is not the required/);
  });

  it('an issuer that extends the expected one', async () => {
    assertFails(
      await verify(await pki.signBlob(MANIFEST, { issuer: `${GITHUB_ISSUER}.evil.example` })),
      'issuer',
    );
  });

  it('a certificate not valid at the log time', async () => {
    const certTime = new Date(pki.start.getTime() + 1000);
    const logTime = new Date(certTime.getTime() + 3600_000); // an hour after the 10-minute certificate expired
    assertFails(
      await verify(await pki.signBlob(MANIFEST, { certTime, logTime })),
      'certificate-validity',
    );
  });

  it('a tampered signed entry timestamp', async () => {
    const b = clone(await pki.signBlob(MANIFEST, { format: 'v0.1' }));
    const e = b.verificationMaterial.tlogEntries[0];
    e.inclusionPromise.signedEntryTimestamp = flipBase64(
      e.inclusionPromise.signedEntryTimestamp,
      20,
    );
    assertFails(await verify(b), 'signed-entry-timestamp');
  });

  it('an edited integrated time (no longer matches its signed entry timestamp)', async () => {
    const b = clone(await pki.signBlob(MANIFEST, { format: 'v0.1' }));
    const e = b.verificationMaterial.tlogEntries[0];
    // Still inside the certificate's validity, so only the signed entry timestamp can catch it.
    e.integratedTime = String(Number(e.integratedTime) + 60);
    assertFails(await verify(b), 'signed-entry-timestamp');
  });

  it('an integrated time with no signed entry timestamp to vouch for it', async () => {
    const b = clone(await pki.signBlob(MANIFEST, { format: 'v0.3' }));
    delete b.verificationMaterial.tlogEntries[0].inclusionPromise;
    assertFails(await verify(b), 'signed-entry-timestamp');
  });

  it('an entry without a signed time must prove its own index', async () => {
    const b = clone(await pki.signBlob(MANIFEST, { format: 'v0.3' }));
    const e = b.verificationMaterial.tlogEntries[0];
    delete e.inclusionPromise;
    e.integratedTime = '0';
    e.logIndex = String(Number(e.logIndex) + 1000);
    assertFails(await verify(b), 'tlog-inclusion', /own index/);
  });

  it('an entry without a signed time and no timestamp authority has no verified time', async () => {
    const b = clone(await pki.signBlob(MANIFEST, { format: 'v0.3' }));
    const e = b.verificationMaterial.tlogEntries[0];
    delete e.inclusionPromise;
    e.integratedTime = '0';
    assertFails(await verify(b), 'timestamp');
  });

  it('a tampered inclusion proof hash', async () => {
    const b = clone(await pki.signBlob(MANIFEST, { format: 'v0.3' }));
    const proof = b.verificationMaterial.tlogEntries[0].inclusionProof;
    assert.ok(proof.hashes.length >= 2, 'precondition: the proof has sibling hashes');
    proof.hashes[1] = flipBase64(proof.hashes[1], 3);
    assertFails(await verify(b), 'tlog-inclusion');
  });

  it('a tampered checkpoint (root hash rewritten)', async () => {
    const b = clone(await pki.signBlob(MANIFEST, { format: 'v0.3' }));
    const cp = b.verificationMaterial.tlogEntries[0].inclusionProof.checkpoint;
    const lines = cp.envelope.split('\n');
    lines[2] = flipBase64(lines[2], 5);
    cp.envelope = lines.join('\n');
    assertFails(await verify(b), 'checkpoint');
  });

  it('a checkpoint re-signed by another key under the log name', async () => {
    const b = clone(await pki.signBlob(MANIFEST, { format: 'v0.3' }));
    const cp = b.verificationMaterial.tlogEntries[0].inclusionProof.checkpoint;
    const [note, sigLine] = cp.envelope.split('\n\n');
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const { sign } = await import('node:crypto');
    const hint = Buffer.from(sigLine.split(' ')[2], 'base64').subarray(0, 4);
    const forged = Buffer.concat([
      hint,
      sign('sha256', Buffer.from(`${note}\n`), privateKey),
    ]).toString('base64');
    cp.envelope = `${note}\n\n\u2014 rekor.mvm.test ${forged}\n`;
    assertFails(await verify(b), 'checkpoint');
  });

  it('a certificate from a CA not in the trusted root', async () => {
    assertFails(
      await verify(await pki.signBlob(MANIFEST, { untrustedCa: true })),
      'certificate-chain',
    );
  });

  it('a bundle carrying a self-signed root of its own', async () => {
    const r = await verify(
      await pki.signBlob(MANIFEST, { format: 'v0.1', untrustedCa: true, includeRootInChain: true }),
    );
    assertFails(r, 'certificate-chain', /self-signed root/);
  });

  it('a bundle carrying a self-signed root, even the trusted one', async () => {
    const r = await verify(
      await pki.signBlob(MANIFEST, { format: 'v0.2', includeRootInChain: true }),
    );
    assertFails(r, 'certificate-chain', /self-signed root/);
  });

  it('a bundle with no transparency-log entry', async () => {
    const b = clone(await pki.signBlob(MANIFEST));
    b.verificationMaterial.tlogEntries = [];
    assertFails(await verify(b), 'tlog-entry');
  });

  it('the same transparency-log entry listed twice', async () => {
    const b = clone(await pki.signBlob(MANIFEST));
    b.verificationMaterial.tlogEntries.push(b.verificationMaterial.tlogEntries[0]);
    assertFails(await verify(b), 'tlog-entry', /twice/);
  });

  it('a negative log index', async () => {
    const b = clone(await pki.signBlob(MANIFEST, { format: 'v0.1' }));
    b.verificationMaterial.tlogEntries[0].logIndex = '-1';
    assertFails(await verify(b), 'tlog-entry', /invalid log index/);
  });

  it('a log index beyond 2^53 (two index strings would read as one number)', async () => {
    const b = clone(await pki.signBlob(MANIFEST, { format: 'v0.1' }));
    b.verificationMaterial.tlogEntries[0].logIndex = '9007199254740993';
    assertFails(await verify(b), 'tlog-entry', /invalid log index/);
  });

  it('an integrated time too large to be a date', async () => {
    const b = clone(await pki.signBlob(MANIFEST, { format: 'v0.1' }));
    b.verificationMaterial.tlogEntries[0].integratedTime = '9999999999999999';
    assertFails(await verify(b), 'timestamp', /invalid integrated time/);
  });

  it('an entry from a log the trusted root does not list', async () => {
    const b = clone(await pki.signBlob(MANIFEST, { format: 'v0.1' }));
    b.verificationMaterial.tlogEntries[0].logId.keyId = Buffer.alloc(32, 7).toString('base64');
    assertFails(await verify(b), 'tlog-entry', /does not list/);
  });

  it('the embedded public-good root does not trust the test PKI', async () => {
    const r = await verify(await pki.signBlob(MANIFEST), { rootFlag: false });
    assertFails(r, 'tlog-entry', /which the trusted root does not list/);
  });
});

describe('verify-blob: DSSE attestations (cosign attest-blob)', () => {
  const sha256 = () => execFileSync('sha256sum', [manifestPath]).toString().split(' ')[0]!;

  it('verifies when the artifact is a subject of the in-toto statement', async () => {
    const r = await verify(
      await pki.signAttestation({
        'other.bin': 'ab'.repeat(32),
        'dev-image-x86_64.manifest.json': sha256(),
      }),
      {
        json: true,
      },
    );
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.equal(JSON.parse(r.stdout).signer.identity, IDENTITY);
  });

  it('fails when the artifact is not a subject', async () => {
    assertFails(
      await verify(await pki.signAttestation({ 'other.bin': 'ab'.repeat(32) })),
      'artifact-digest',
      /not a subject/,
    );
  });

  it('fails when the payload is not an in-toto statement', async () => {
    const r = await verify(
      await pki.signAttestation({ m: sha256() }, { statementType: 'https://example.com/Other' }),
    );
    assertFails(r, 'artifact-digest', /not an in-toto statement/);
  });

  it('refuses a DSSE bundle logged as a hashedrekord entry', async () => {
    const r = await verify(await pki.signAttestation({ m: sha256() }, { logKind: 'hashedrekord' }));
    assertFails(r, 'tlog-entry', /DSSE bundle logged as a hashedrekord/);
  });
});

describe('verify-blob: malformed bundles', () => {
  it('an unknown media type', async () => {
    const b = clone(await pki.signBlob(MANIFEST));
    b.mediaType = 'application/vnd.dev.sigstore.bundle.v0.9+json';
    assertFails(await verify(b), 'media-type', /unsupported media type/);
  });

  it('a media type with a trailing suffix', async () => {
    const b = clone(await pki.signBlob(MANIFEST));
    b.mediaType += ';evil';
    assertFails(await verify(b), 'media-type');
  });

  it('malformed JSON', async () => {
    const text = JSON.stringify(await pki.signBlob(MANIFEST));
    assertFails(
      await verify(put(text.slice(0, text.length / 2))),
      'bundle-format',
      /not valid JSON/,
    );
  });

  it('duplicate keys (two readings of one document)', async () => {
    const text = JSON.stringify(await pki.signBlob(MANIFEST));
    const dup = text.replace(
      '"mediaType":',
      '"mediaType":"application/vnd.dev.sigstore.bundle+json;version=0.1","mediaType":',
    );
    assertFails(await verify(put(dup)), 'bundle-format', /duplicate key "mediaType"/);
  });

  it('JSON that is not an object', async () => {
    assertFails(await verify(put('[1,2,3]')), 'bundle-format');
  });

  it('invalid UTF-8', async () => {
    assertFails(await verify(put(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]))), 'bundle-format', /UTF-8/);
  });

  it('a bundle missing its verification material', async () => {
    const b = clone(await pki.signBlob(MANIFEST));
    delete b.verificationMaterial;
    assertFails(await verify(b), 'bundle-format');
  });

  it('a legacy cosign bundle with a non-hex log ID', async () => {
    const b = clone(await pki.signBlob(MANIFEST, { format: 'cosign-legacy' }));
    b.rekorBundle.Payload.logID = 'zz';
    assertFails(await verify(b), 'bundle-format');
  });

  it('deeply nested JSON', async () => {
    assertFails(await verify(put('['.repeat(200_000) + ']'.repeat(200_000))), 'bundle-format');
  });

  it('an oversized bundle is an input error', async () => {
    const r = await verify(put(Buffer.alloc(2 * 1024 * 1024, 0x20)));
    assert.equal(r.code, 3);
    assert.match(r.stderr, /too large/);
  });

  it('an empty bundle file is an input error', async () => {
    const r = await verify(put(''));
    assert.equal(r.code, 3);
    assert.match(r.stderr, /is empty/);
  });

  it('an empty artifact is an input error', async () => {
    const r = await verify(await pki.signBlob(MANIFEST), { artifact: put('', 'empty.txt') });
    assert.equal(r.code, 3);
    assert.match(r.stderr, /artifact .* is empty/);
  });
});

describe('verify-blob: inputs', () => {
  it('a missing artifact', async () => {
    const r = await verify(await pki.signBlob(MANIFEST), { artifact: join(dir, 'nope') });
    assert.equal(r.code, 3);
    assert.match(r.stderr, /artifact .*nope does not exist/);
  });

  it('a directory as the bundle', async () => {
    const r = await verify(dir);
    assert.equal(r.code, 3);
    assert.match(r.stderr, /not a regular file/);
  });

  it('a FIFO as the artifact does not hang', async () => {
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const r = await verify(await pki.signBlob(MANIFEST), { artifact: fifo });
    assert.equal(r.code, 3);
    assert.match(r.stderr, /named pipe/);
  });

  it('--json errors are one object on stdout', async () => {
    const r = await verify(
      await pki.signBlob(MANIFEST, { issuer: 'https://accounts.google.com' }),
      { json: true },
    );
    assert.equal(r.code, 10);
    const { error } = JSON.parse(r.stdout);
    assert.equal(error.code, 'signature');
    assert.equal(error.check, 'issuer');
    assert.equal(typeof error.message, 'string');
    assert.equal(typeof error.cause, 'string');
    assert.equal(typeof error.fix, 'string');
  });
});

describe('verify-blob: key-based', () => {
  const keys = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const pem = (k = keys.publicKey) =>
    put(k.export({ format: 'pem', type: 'spki' }) as string, `key${n++}.pub`);

  for (const format of ['v0.3', 'cosign-legacy'] as const) {
    it(`verifies a ${format} bundle signed with --key`, async () => {
      const r = await verify(await pki.signBlob(MANIFEST, { format, key: keys }), {
        flags: ['--key', pem()],
        json: true,
      });
      assert.equal(r.code, 0, r.stderr + r.stdout);
      assert.equal(JSON.parse(r.stdout).signer.kind, 'key');
    });
  }

  it('rejects a bundle signed by another key', async () => {
    const other = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const r = await verify(await pki.signBlob(MANIFEST, { key: other }), {
      flags: ['--key', pem()],
    });
    assertFails(r, 'tlog-entry', /public key logged .* is not the verification key/);
  });

  it('rejects a certificate-signed bundle under --key', async () => {
    assertFails(await verify(await pki.signBlob(MANIFEST), { flags: ['--key', pem()] }), 'key');
  });

  it('rejects a key-signed bundle under a certificate policy', async () => {
    assertFails(await verify(await pki.signBlob(MANIFEST, { key: keys })), 'key');
  });

  it('mixing --key and a certificate identity is a usage error', async () => {
    const r = await verify(await pki.signBlob(MANIFEST, { key: keys }), {
      flags: ['--key', pem(), '--certificate-identity', IDENTITY],
    });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--key cannot be combined/);
  });

  it('a key file that is not PEM is an input error', async () => {
    const r = await verify(await pki.signBlob(MANIFEST, { key: keys }), {
      flags: ['--key', put('not a key', 'bad.pub')],
    });
    assert.equal(r.code, 3);
    assert.match(r.stderr, /not a PEM public key/);
  });
});
