// The main job, end to end on this machine with no network:
//  1. verify-blob: a real public-good Sigstore signature, verified offline with
//     the embedded trusted root; a one-byte change and a near-miss signer are
//     refused, each naming the check; a Rekor v2 bundle (what cosign 3 writes
//     today) verifies with cosign's own flags.
//  2. dev import-image: an air-gapped install of a release set. Real release
//     sets are signed by the project's GitHub workflow through the public-good
//     instance; here a local Sigstore deployment (test/support/pki.ts) signs
//     one, and mvmctl is pointed at its trusted root (MVM_TRUSTED_ROOT), in a
//     temporary data directory, with the network off (MVM_OFFLINE=1). A
//     tampered rootfs is refused; the audit log and three counters show the
//     outcome.
// Each command's stdout and stderr are shown interleaved, in the order it wrote
// them (both go to one pipe), as they would appear on a terminal.
import { spawn } from 'node:child_process';
import {
  appendFileSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const cli = join(root, 'dist/cli/main.js');
const set = join(root, 'test/fixtures/public-good');
const artifact = join(set, 'artifact-a.txt');
const bundle = join(set, 'artifact-a.v03.sigstore.json');
const signer = [
  '--certificate-identity',
  'appu@google.com',
  '--certificate-oidc-issuer',
  'https://accounts.google.com',
];

const tmp = mkdtempSync(join(tmpdir(), 'mvm-demo-'));

/** The demo's temporary directory and the checkout, as a reader would write them. */
const shorten = (text) => text.replaceAll(tmp, '$DEMO').replaceAll(root, '');

/**
 * Runs mvmctl with stdout and stderr on one pipe (through sh's 2>&1, so the
 * order is the order mvmctl wrote in) and prints its lines as they come; only
 * lines `keep` accepts are shown. Resolves to the exit status and the lines
 * that were not shown.
 */
function run(args, env, keep) {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', 'exec "$0" "$@" 2>&1', process.execPath, cli, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let pending = '';
    const hidden = [];
    const show = (line) => {
      if (keep(line)) process.stdout.write(`${shorten(line)}\n`);
      else hidden.push(shorten(line));
    };
    child.stdout.setEncoding('utf8').on('data', (chunk) => {
      const lines = (pending + chunk).split('\n');
      pending = lines.pop();
      lines.forEach(show);
    });
    child.once('error', reject);
    child.once('close', (code) => {
      if (pending !== '') show(pending);
      resolve({ status: code, hidden });
    });
  });
}

async function mvmctl(title, args, expected, env = { MVM_TRUSTED_ROOT: '' }, filter) {
  const pipe = filter ? ` | ${filter.shown}` : '';
  console.log(`\n$ mvmctl ${args.map(shorten).join(' ')}${pipe}`);
  console.log(`# ${title}`);
  const { status, hidden } = await run(args, env, filter ? filter.keep : () => true);
  console.log(`[exit ${status}]`);
  if (status !== expected) {
    // What the filter left out is what explains the failure.
    for (const line of hidden) console.log(line);
    throw new Error(`expected exit ${expected}, got ${status}`);
  }
}

try {
  await mvmctl('the runtime version release manifests are pinned to', ['--version'], 0);
  await mvmctl(
    'a real public-good signature, verified offline against the embedded root',
    ['verify-blob', '--bundle', bundle, ...signer, artifact],
    0,
  );
  await mvmctl(
    'what Sigstore signs today: a Rekor v2 entry with an RFC 3161 timestamp (cosign 3, GitHub Actions), with cosign-style flags',
    [
      'verify-blob',
      '--offline=true',
      '--new-bundle-format',
      '--bundle',
      join(set, 'rekor-v2-test.sigstore.json'),
      '--certificate-identity',
      'https://github.com/tkgsn/sigstore-public-good-instance-test/.github/workflows/rekor-v2.yml@refs/heads/main',
      '--certificate-oidc-issuer',
      'https://token.actions.githubusercontent.com',
      '--certificate-github-workflow-repository',
      'tkgsn/sigstore-public-good-instance-test',
      join(set, 'rekor-v2-test-subject.json'),
    ],
    0,
  );
  const tampered = join(tmp, 'artifact-a.txt');
  copyFileSync(artifact, tampered);
  const bytes = readFileSync(tampered);
  bytes[5] ^= 0x01;
  writeFileSync(tampered, bytes);
  await mvmctl(
    'the same file with one flipped bit',
    ['verify-blob', '--bundle', bundle, ...signer, tampered],
    10,
  );
  await mvmctl(
    'a pattern that would match a longer identity if it were not anchored',
    [
      'verify-blob',
      '--bundle',
      bundle,
      '--certificate-identity-regexp',
      'appu@google',
      '--certificate-oidc-issuer',
      'https://accounts.google.com',
      artifact,
    ],
    10,
  );
  await mvmctl(
    'machine-readable verdict',
    ['verify-blob', '--bundle', bundle, ...signer, '--json', artifact],
    0,
  );

  console.log(
    '\n=== dev import-image: an air-gapped install, signed by a local Sigstore deployment ===',
  );
  const { TestPki } = await import('../test/support/pki.ts');
  const { writeReleaseSet, writeRevocationList } = await import('../test/support/release.ts');
  const pki = await TestPki.create();
  const version = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version;
  const arch = process.arch === 'arm64' ? 'aarch64' : 'x86_64';
  const usb = join(tmp, 'usb');
  await writeReleaseSet(pki, usb, { version, arch });
  const env = {
    MVM_TRUSTED_ROOT: pki.writeTrustedRoot(tmp),
    MVM_DATA_DIR: join(tmp, 'mvm'),
    XDG_CACHE_HOME: join(tmp, 'cache'),
    MVM_OFFLINE: '1',
  };
  console.log(
    `# environment: ${Object.entries(env)
      .map(([k, v]) => `${k}=${shorten(v)}`)
      .join(' ')}`,
  );
  await writeRevocationList(pki, join(tmp, 'cache', 'mvm', 'revocations'), [
    { version: '0.1.0', reason: 'CVE-0000-0000: an old recall' },
  ]);
  await mvmctl(
    'install the four carried-in files of this host arch',
    ['dev', 'import-image', '--dir', usb],
    0,
    env,
  );
  const evil = join(tmp, 'evil');
  mkdirSync(evil);
  for (const f of readdirSync(usb)) copyFileSync(join(usb, f), join(evil, f));
  appendFileSync(join(evil, `dev-rootfs-${arch}.ext4`), 'implant');
  await mvmctl(
    'the same set with a modified rootfs: refused, the store untouched',
    ['dev', 'import-image', '--dir', evil],
    14,
    env,
  );
  await mvmctl(
    'both outcomes are on the record, in the hash-chained audit log',
    ['audit', 'tail', '-n', '2'],
    0,
    env,
  );
  const counters = /^mvm_dev_image_verify_(ok|sig_invalid|digest_mismatch)_total /;
  await mvmctl('the three counters an alert watches', ['metrics'], 0, env, {
    shown: "grep -E '^mvm_dev_image_verify_(ok|sig_invalid|digest_mismatch)_total '",
    keep: (line) => counters.test(line),
  });

  console.log('\ndemo: all outcomes as expected');
} catch (e) {
  console.error(`demo: ${e.message}`);
  process.exitCode = 1;
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
