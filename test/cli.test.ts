import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { runCli } from './support/cli.js';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));

describe('mvmctl CLI', () => {
  it('--version prints the package version', async () => {
    const r = await runCli(['--version']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, `${pkg.version}\n`);
  });

  it('--version --json', async () => {
    const r = await runCli(['--version', '--json']);
    assert.deepEqual(JSON.parse(r.stdout), { version: pkg.version });
  });

  it('--help lists the commands and exit codes', async () => {
    const r = await runCli(['--help']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /verify-blob/);
    assert.match(r.stdout, /10 signature/);
  });

  it('no arguments prints help and exits 2', async () => {
    const r = await runCli([]);
    assert.equal(r.code, 2);
    assert.match(r.stdout, /Usage: mvmctl <command>/);
  });

  it('verify-blob --help explains its flags', async () => {
    const r = await runCli(['verify-blob', '--help']);
    assert.equal(r.code, 0);
    for (const flag of [
      '--bundle',
      '--certificate-identity',
      '--certificate-identity-regexp',
      '--certificate-oidc-issuer',
      '--trusted-root',
      '--key',
      '--json',
    ]) {
      assert.match(r.stdout, new RegExp(`${flag} `), flag);
    }
    assert.match(r.stdout, /Exit status/);
  });

  it('an unknown command is a usage error', async () => {
    const r = await runCli(['frobnicate']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown command "frobnicate"/);
  });

  it('a planned command says it is not built yet', async () => {
    for (const [args, name] of [[['dev', 'up'], 'dev up']] as const) {
      const r = await runCli([...args]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`'mvmctl ${name}' is not built yet`));
    }
  });

  it('every command has --help', async () => {
    for (const args of [
      ['dev', '--help'],
      ['dev', 'import-image', '--help'],
      ['metrics', '--help'],
      ['status', '--help'],
    ]) {
      const r = await runCli(args);
      assert.equal(r.code, 0, args.join(' '));
      assert.match(r.stdout, /^Usage: mvmctl /);
    }
  });

  const usage: [string, string[], RegExp][] = [
    ['an unknown flag', ['verify-blob', '--bogus', 'x'], /Unknown option '--bogus'/],
    ['a flag without its value', ['verify-blob', 'x', '--bundle'], /--bundle/],
    ['no --bundle', ['verify-blob', 'x'], /--bundle is required/],
    ['two artifacts', ['verify-blob', '--bundle', 'b', 'x', 'y'], /exactly one ARTIFACT/],
    [
      'no identity',
      ['verify-blob', '--bundle', 'b', '--certificate-oidc-issuer', 'i', 'x'],
      /--certificate-identity or --certificate-identity-regexp is required/,
    ],
    [
      'no issuer',
      ['verify-blob', '--bundle', 'b', '--certificate-identity', 'i', 'x'],
      /--certificate-oidc-issuer is required/,
    ],
    [
      'identity and regexp',
      [
        'verify-blob',
        '--bundle',
        'b',
        '--certificate-identity',
        'i',
        '--certificate-identity-regexp',
        'r',
        '--certificate-oidc-issuer',
        'i',
        'x',
      ],
      /mutually exclusive/,
    ],
    [
      'an invalid regexp',
      [
        'verify-blob',
        '--bundle',
        'b',
        '--certificate-identity-regexp',
        '(',
        '--certificate-oidc-issuer',
        'i',
        'x',
      ],
      /not a valid regular expression/,
    ],
    [
      'key with issuer',
      ['verify-blob', '--bundle', 'b', '--key', 'k', '--certificate-oidc-issuer', 'i', 'x'],
      /--key cannot be combined/,
    ],
  ];
  for (const [name, args, wording] of usage) {
    it(`usage error: ${name} (exit 2, no file read)`, async () => {
      const r = await runCli(args);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, wording);
      assert.match(r.stderr, /fix: /);
    });
  }

  it('--debug adds the stack trace that is otherwise hidden', async () => {
    const plain = await runCli([
      'verify-blob',
      '--bundle',
      '/nonexistent',
      '--key',
      '/nonexistent',
      'x',
    ]);
    const debug = await runCli([
      'verify-blob',
      '--bundle',
      '/nonexistent',
      '--key',
      '/nonexistent',
      '--debug',
      'x',
    ]);
    assert.equal(plain.code, 3);
    assert.equal(debug.code, 3);
    assert.doesNotMatch(plain.stderr, /debug:/);
    assert.match(debug.stderr, /debug: .*\n\s+at /);
  });
});
