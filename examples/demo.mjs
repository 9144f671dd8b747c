// The main job, on the bundled example set: verify a real public-good Sigstore
// signature fully offline with the embedded trusted root, then show that a
// one-byte change and a near-miss signer are refused, each naming the check.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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

function mvmctl(title, args, expected) {
  console.log(
    `\n$ mvmctl ${args.map((a) => (a.includes(root) ? a.replace(root, '') : a)).join(' ')}`,
  );
  console.log(`# ${title}`);
  const r = spawnSync(process.execPath, [cli, ...args], {
    encoding: 'utf8',
    env: { ...process.env, MVM_TRUSTED_ROOT: '' },
  });
  process.stdout.write(r.stdout);
  process.stdout.write(r.stderr);
  console.log(`[exit ${r.status}]`);
  if (r.status !== expected) {
    console.error(`demo: expected exit ${expected}, got ${r.status}`);
    process.exit(1);
  }
}

const tmp = mkdtempSync(join(tmpdir(), 'mvm-demo-'));
try {
  mvmctl('the runtime version release manifests are pinned to', ['--version'], 0);
  mvmctl(
    'a real public-good signature, verified offline against the embedded root',
    ['verify-blob', '--bundle', bundle, ...signer, artifact],
    0,
  );
  const tampered = join(tmp, 'artifact-a.txt');
  copyFileSync(artifact, tampered);
  const bytes = readFileSync(tampered);
  bytes[5] ^= 0x01;
  writeFileSync(tampered, bytes);
  mvmctl(
    'the same file with one flipped bit',
    ['verify-blob', '--bundle', bundle, ...signer, tampered],
    10,
  );
  mvmctl(
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
  mvmctl(
    'machine-readable verdict',
    ['verify-blob', '--bundle', bundle, ...signer, '--json', artifact],
    0,
  );
  console.log('\ndemo: all outcomes as expected');
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
