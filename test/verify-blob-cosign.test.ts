/**
 * `mvmctl verify-blob` takes cosign verify-blob's flags, so a script written
 * for cosign runs unchanged: the built CLI as a subprocess, bundles from the
 * test PKI, real verification. Flags that would weaken verification are
 * refused with the reason; flags that only make sense online are accepted and
 * ignored, with a note where cosign would behave differently.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { runCli, type CliResult } from './support/cli.js';
import { GITHUB_ISSUER, releaseIdentity, TestPki } from './support/pki.js';

const IDENTITY = releaseIdentity('tinylabscom/mvm', 'v0.14.0');
const ARTIFACT = Buffer.from('{"schema_version":1,"version":"0.14.0","arch":"x86_64"}\n');

let dir: string;
let pki: TestPki;
let rootPath: string;
let artifactPath: string;
let bundle: Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
let bundlePath: string;
let otherBundle: Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
let n = 0;

const put = (content: string | Buffer | object): string => {
  const path = join(dir, `f${n++}`);
  writeFileSync(
    path,
    typeof content === 'string' || Buffer.isBuffer(content) ? content : JSON.stringify(content),
  );
  return path;
};

const cosign = (flags: string[], identity = true): Promise<CliResult> =>
  runCli([
    'verify-blob',
    '--trusted-root',
    rootPath,
    '--bundle',
    bundlePath,
    ...(identity
      ? ['--certificate-identity', IDENTITY, '--certificate-oidc-issuer', GITHUB_ISSUER]
      : []),
    ...flags,
    artifactPath,
  ]);

function assertVerified(r: CliResult): void {
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.equal(r.stdout, '', 'cosign prints nothing on stdout');
  assert.match(r.stderr, /\nVerified OK\n$/);
}

function assertUsage(r: CliResult, message: RegExp, fix: RegExp): void {
  assert.equal(r.code, 2, r.stderr + r.stdout);
  assert.match(r.stderr.split('\n')[0]!, message);
  assert.match(r.stderr, fix);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
  assert.doesNotMatch(r.stderr, /Verified OK/);
}

const pem = (derBase64: string): string =>
  new X509Certificate(Buffer.from(derBase64, 'base64')).toString();

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mvm-cosign-flags-'));
  pki = await TestPki.create();
  rootPath = pki.writeTrustedRoot(dir);
  artifactPath = put(ARTIFACT);
  bundle = await pki.signBlob(ARTIFACT, { format: 'v0.3' });
  bundlePath = put(bundle);
  otherBundle = await pki.signBlob(ARTIFACT, { format: 'v0.3' });
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('verify-blob: cosign boolean flags in every form pflag takes', () => {
  for (const flag of [
    '--offline',
    '--offline=true',
    '--offline=1',
    '--new-bundle-format',
    '--new-bundle-format=false',
    '--use-signed-timestamps',
    '--use-signed-timestamps=True',
    '--insecure-ignore-tlog=false',
    '--insecure-ignore-sct=false',
    '--private-infrastructure=false',
  ]) {
    it(`${flag} is accepted and verification is unchanged`, async () => {
      const r = await cosign([flag]);
      assertVerified(r);
      assert.doesNotMatch(r.stderr, /Note:/);
    });
  }

  it('--offline=false is noted (cosign would go online) and never obeyed', async () => {
    const r = await cosign(['--offline=false']);
    assertVerified(r);
    assert.match(r.stderr, /^Note: --offline=false is ignored: mvmctl verifies offline only/m);
  });

  it('--rekor-url is noted as ignored', async () => {
    const r = await cosign(['--rekor-url', 'https://rekor.example.invalid']);
    assertVerified(r);
    assert.match(
      r.stderr,
      /^Note: --rekor-url is ignored: the transparency log is the one the trusted root lists/m,
    );
  });

  it('a boolean with a value Go would not parse is a usage error', async () => {
    assertUsage(
      await cosign(['--offline=maybe']),
      /--offline=maybe is not a boolean/,
      /--offline=false/,
    );
  });

  it('--json keeps stdout one object and carries the notes', async () => {
    const r = await cosign(['--offline=false', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.verified, true);
    assert.deepEqual(out.notes, [
      '--offline=false is ignored: mvmctl verifies offline only, from the bundle and the trusted root.',
    ]);
  });
});

describe('verify-blob: cosign flags that would weaken or re-anchor trust are refused', () => {
  for (const [flags, reason] of [
    [['--insecure-ignore-tlog'], /never verifies without transparency-log evidence/],
    [['--insecure-ignore-tlog=true'], /never verifies without transparency-log evidence/],
    [['--insecure-ignore-sct'], /signed certificate timestamp/],
    [['--private-infrastructure'], /pass its trusted_root\.json with --trusted-root/],
    [['--certificate-chain', 'chain.pem'], /trust anchors come only from the trusted root/],
    [['--ca-roots=roots.pem'], /trust anchors come only from the trusted root/],
    [['--ca-intermediates', 'i.pem'], /trust anchors come only from the trusted root/],
    [
      ['--timestamp-certificate-chain', 'tsa.pem'],
      /timestamp authorities come only from the trusted root/,
    ],
    [['--rfc3161-timestamp', 'ts.der'], /only inside the bundle it vouches for/],
    [['--sk'], /export the public key and verify with --key/],
  ] as const) {
    it(`${flags.join(' ')}`, async () => {
      const name = flags[0].replace(/=.*$/, '');
      const r = await cosign([...flags]);
      assertUsage(r, new RegExp(`verify-blob: ${name} is (refused|not supported)`), reason);
    });
  }

  it('a truly unknown flag is still a usage error naming it', async () => {
    assertUsage(await cosign(['--no-such-flag']), /--no-such-flag/, /--help/);
  });
});

describe('verify-blob: --signature and --certificate must be the bundle’s own', () => {
  it('the bundle’s signature, as cosign writes it (base64 text)', async () => {
    assertVerified(await cosign(['--signature', put(`${bundle.messageSignature.signature}\n`)]));
  });

  it('the bundle’s signature as raw bytes', async () => {
    assertVerified(
      await cosign(['--signature', put(Buffer.from(bundle.messageSignature.signature, 'base64'))]),
    );
  });

  it('another signing’s signature fails closed', async () => {
    const r = await cosign(['--signature', put(otherBundle.messageSignature.signature)]);
    assert.equal(r.code, 10, r.stderr);
    assert.match(r.stderr, /^Error: .*the --signature file is not the signature in the bundle/);
    assert.match(r.stderr, /check: signature\n/);
    assert.doesNotMatch(r.stderr, /Verified OK/);
  });

  it('the bundle’s certificate (PEM, and base64 of the PEM as in legacy bundles)', async () => {
    const certPem = pem(bundle.verificationMaterial.certificate.rawBytes);
    assertVerified(await cosign(['--certificate', put(certPem)]));
    assertVerified(await cosign(['--certificate', put(Buffer.from(certPem).toString('base64'))]));
  });

  it('another signing’s certificate fails closed', async () => {
    const r = await cosign([
      '--certificate',
      put(pem(otherBundle.verificationMaterial.certificate.rawBytes)),
    ]);
    assert.equal(r.code, 10, r.stderr);
    assert.match(r.stderr, /the --certificate file is not the signing certificate in the bundle/);
    assert.match(r.stderr, /check: certificate-chain\n/);
  });

  it('a --certificate that is not a certificate is an input error', async () => {
    const r = await cosign(['--certificate', put('not a certificate\n')]);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /is not a certificate/);
  });

  it('--signature without --bundle says why a bundle is needed offline', async () => {
    const r = await runCli([
      'verify-blob',
      '--signature',
      put(bundle.messageSignature.signature),
      '--certificate-identity',
      IDENTITY,
      '--certificate-oidc-issuer',
      GITHUB_ISSUER,
      artifactPath,
    ]);
    assertUsage(r, /--bundle is required/, /transparency-log evidence only a bundle carries/);
  });
});

describe('verify-blob: --certificate-oidc-issuer-regexp', () => {
  it('a pattern matching the whole issuer verifies', async () => {
    assertVerified(
      await cosign(
        [
          '--certificate-identity',
          IDENTITY,
          '--certificate-oidc-issuer-regexp',
          'https://token\\.actions\\.githubusercontent\\.com',
        ],
        false,
      ),
    );
  });

  it('is anchored: a pattern matching only a prefix of the issuer fails', async () => {
    const r = await cosign(
      ['--certificate-identity', IDENTITY, '--certificate-oidc-issuer-regexp', 'https://token'],
      false,
    );
    assert.equal(r.code, 10, r.stderr);
    assert.match(r.stderr, /check: issuer\n/);
  });

  it('cannot be combined with --certificate-oidc-issuer', async () => {
    assertUsage(
      await cosign(['--certificate-oidc-issuer-regexp', '.*']),
      /mutually exclusive/,
      /not both/,
    );
  });

  it('an invalid pattern is a usage error naming the flag', async () => {
    assertUsage(
      await cosign(
        ['--certificate-identity', IDENTITY, '--certificate-oidc-issuer-regexp', '('],
        false,
      ),
      /--certificate-oidc-issuer-regexp is not a valid regular expression/,
      /matched against the whole value/,
    );
  });
});

describe('verify-blob: a real public-good Rekor v2 bundle signed in GitHub Actions', () => {
  const fix = (f: string): string =>
    fileURLToPath(new URL(`./fixtures/public-good/${f}`, import.meta.url));
  const args = (flags: string[]): string[] => [
    'verify-blob',
    '--bundle',
    fix('rekor-v2-test.sigstore.json'),
    '--certificate-identity',
    'https://github.com/tkgsn/sigstore-public-good-instance-test/.github/workflows/rekor-v2.yml@refs/heads/main',
    '--certificate-oidc-issuer',
    GITHUB_ISSUER,
    ...flags,
    fix('rekor-v2-test-subject.json'),
  ];

  it('shows the RFC 3161 time as the signing time, in cosign’s form', async () => {
    const r = await runCli(args(['--offline=true', '--new-bundle-format']));
    assertVerified(r);
    assert.match(
      r.stderr,
      /^Signed at: +2026-07-26T01:42:18\.000Z \(RFC 3161 timestamp authority\)$/m,
    );
    assert.match(
      r.stderr,
      /^Transparency log: https:\/\/log2025-1\.rekor\.sigstore\.dev index \d+$/m,
    );
  });

  it('the workflow claims the certificate records verify, each exactly', async () => {
    assertVerified(
      await runCli(
        args([
          '--certificate-github-workflow-trigger',
          'push',
          '--certificate-github-workflow-sha',
          '3069fcd0c32873ef580c02e20e955cdb776b1f4a',
          '--certificate-github-workflow-name',
          'Rekor v2 public-good test',
          '--certificate-github-workflow-repository',
          'tkgsn/sigstore-public-good-instance-test',
          '--certificate-github-workflow-ref',
          'refs/heads/main',
        ]),
      ),
    );
  });

  for (const [flag, value] of [
    ['--certificate-github-workflow-repository', 'tkgsn/sigstore-public-good-instance'],
    ['--certificate-github-workflow-ref', 'refs/heads/mai'],
    ['--certificate-github-workflow-sha', '3069fcd0c32873ef580c02e20e955cdb776b1f4b'],
    ['--certificate-github-workflow-trigger', 'workflow_dispatch'],
  ] as const) {
    it(`${flag} ${value} (not what was recorded) fails closed`, async () => {
      const r = await runCli(args([flag, value]));
      assert.equal(r.code, 10, r.stderr);
      assert.match(r.stderr, /check: identity\n/);
      assert.match(
        r.stderr.split('\n')[0]!,
        /certificate GitHub workflow \w+ "[^"]+" is not the required/,
      );
    });
  }
});

describe('verify-blob: --certificate-github-workflow-*', () => {
  it('a claim the certificate does not record fails closed', async () => {
    // The test CA records no 1.3.6.1.4.1.57264.1.5 (repository) extension.
    const r = await cosign(['--certificate-github-workflow-repository', 'tinylabscom/mvm']);
    assert.equal(r.code, 10, r.stderr);
    assert.match(
      r.stderr,
      /^Error: .*certificate GitHub workflow repository null is not the required "tinylabscom\/mvm"/,
    );
    assert.match(r.stderr, /check: identity\n/);
  });

  it('cannot be combined with --key', async () => {
    const r = await runCli([
      'verify-blob',
      '--bundle',
      bundlePath,
      '--key',
      put('x'),
      '--certificate-github-workflow-ref',
      'refs/heads/main',
      artifactPath,
    ]);
    assertUsage(r, /--key cannot be combined/, /not both/);
  });
});
