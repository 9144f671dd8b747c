import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCli, type CliResult } from './support/cli.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

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

  it('every command has --help', async () => {
    for (const args of [
      ['dev', '--help'],
      ['dev', 'import-image', '--help'],
      ['dev', 'up', '--help'],
      ['dev', 'down', '--help'],
      ['dev', 'status', '--help'],
      ['dev', 'logs', '--help'],
      ['dev', 'console', '--help'],
      ['dev', 'shell', '--help'],
      ['metrics', '--help'],
      ['status', '--help'],
    ]) {
      const r = await runCli(args);
      assert.equal(r.code, 0, args.join(' '));
      assert.match(r.stdout, /^Usage: mvmctl /);
    }
  });

  const usage: [string, string[], RegExp][] = [
    [
      'an unknown flag',
      ['verify-blob', '--bogus', 'x'],
      /unknown flag --bogus for mvmctl verify-blob/,
    ],
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

describe('help: what the audit chain proves', () => {
  const envLines = [
    'MVM_REQUIRE_FRESH_REVOCATIONS',
    'MVM_AUDIT_SOCKET',
    'MVM_MAX_KERNEL_BYTES',
    'MVM_MAX_ROOTFS_BYTES',
  ];
  it('mvmctl --help lists the environment and says what the audit chain does not prove', async () => {
    const r = await runCli(['--help']);
    assert.equal(r.code, 0);
    const env = r.stdout.slice(r.stdout.indexOf('Environment:'));
    for (const name of envLines) assert.match(env, new RegExp(`^  ${name}\\b`, 'm'), name);
    assert.match(r.stdout, /do not prove the log genuine/);
    assert.match(r.stdout, /rewrite the log and its anchor/);
    assert.match(r.stdout, /MVM_AUDIT_SOCKET\) is what defends/);
  });

  it('mvmctl audit tail --help says the same and shows the --json shape', async () => {
    const r = await runCli(['audit', 'tail', '--help']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^Usage: mvmctl audit tail/);
    assert.match(r.stdout, /does not prove the\s+log genuine/);
    assert.match(r.stdout, /rewrite the log and its\s+anchor together/);
    assert.match(r.stdout, /MVM_AUDIT_SOCKET/);
    assert.match(r.stdout, /--json prints one document, also when the chain is broken/);
  });
});

describe('audit tail --json prints exactly one JSON document', () => {
  let dir: string;
  let n = 0;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'mvm-cli-audit-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** A data directory with `count` audit records: failed imports of a set that is not there. */
  async function hostWithRecords(count: number) {
    const home = join(dir, `host${n++}`);
    const env = { MVM_DATA_DIR: join(home, 'data'), XDG_CACHE_HOME: join(home, 'cache') };
    const missing = join(home, 'missing');
    for (let i = 0; i < count; i++) {
      const r = await runCli(
        [
          'dev',
          'import-image',
          '--manifest',
          missing,
          '--bundle',
          missing,
          '--vmlinux',
          missing,
          '--rootfs',
          missing,
        ],
        env,
      );
      assert.equal(r.code, 3, r.stderr);
    }
    const log = join(home, 'data', 'telemetry', 'audit.jsonl');
    assert.equal(readFileSync(log, 'utf8').trim().split('\n').length, count);
    return { env, log };
  }

  /** stdout is one line holding one JSON value (a second document would not parse). */
  function oneDocument(r: CliResult): Json {
    assert.equal(r.stdout.indexOf('\n'), r.stdout.length - 1, `one line: ${r.stdout}`);
    return JSON.parse(r.stdout) as Json;
  }

  it('an intact chain: one document, exit 0', async () => {
    const { env } = await hostWithRecords(3);
    const r = await runCli(['audit', 'tail', '-n', '2', '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    const doc = oneDocument(r);
    assert.deepEqual(doc['chain'], { intact: true });
    assert.equal(doc['records'], 3);
    assert.equal(doc['tail'].length, 2);
    assert.equal(doc['tail'][1].seq, 3);
    assert.equal(doc['error'], undefined);
  });

  it('an edited record: one document naming the break, exit 10', async () => {
    const { env, log } = await hostWithRecords(3);
    const lines = readFileSync(log, 'utf8').split('\n');
    lines[1] = lines[1]!.replace('"outcome":"failed"', '"outcome":"ok"');
    writeFileSync(log, lines.join('\n'));
    const r = await runCli(['audit', 'tail', '--json'], env);
    assert.equal(r.code, 10, r.stderr);
    const doc = oneDocument(r);
    assert.equal(doc['chain'].intact, false);
    assert.equal(doc['chain'].brokenAt, 3);
    assert.match(doc['chain'].reason, /does not follow the one before it/);
    assert.equal(doc['error'].code, 'tampered');
    assert.equal(doc['error'].exitCode, 10);
    assert.equal(doc['tail'][1].outcome, 'ok');
  });

  it('a log shortened from its end, or deleted: one document, exit 10 (the anchor disagrees)', async () => {
    const { env, log } = await hostWithRecords(3);
    const lines = readFileSync(log, 'utf8').trim().split('\n');
    writeFileSync(log, lines.slice(0, 2).join('\n') + '\n');
    let r = await runCli(['audit', 'tail', '--json'], env);
    assert.equal(r.code, 10, r.stderr);
    let doc = oneDocument(r);
    assert.equal(doc['chain'].intact, false);
    assert.equal(doc['records'], 2);
    assert.match(doc['chain'].reason, /anchor says 3/);
    assert.equal(doc['error'].code, 'tampered');
    rmSync(log);
    r = await runCli(['audit', 'tail', '--json'], env);
    assert.equal(r.code, 10, r.stderr);
    doc = oneDocument(r);
    assert.equal(doc['chain'].intact, false);
    assert.equal(doc['records'], 0);
    assert.match(doc['chain'].reason, /missing or empty/);
    const h = await runCli(['audit', 'tail'], env);
    assert.equal(h.code, 10);
    assert.match(
      h.stderr,
      /^Error: The audit log .* does not chain at line 1: the log is missing/m,
    );
  });

  it('a garbage line: one document naming the break, exit 10', async () => {
    const { env, log } = await hostWithRecords(2);
    const lines = readFileSync(log, 'utf8').split('\n');
    lines.splice(1, 0, 'garbage \u001b[2J');
    writeFileSync(log, lines.join('\n'));
    const r = await runCli(['audit', 'tail', '--json'], env);
    assert.equal(r.code, 10, r.stderr);
    const doc = oneDocument(r);
    assert.equal(doc['chain'].intact, false);
    assert.equal(doc['chain'].brokenAt, 2);
    assert.match(doc['chain'].reason, /not a? ?JSON/);
    assert.equal(doc['error'].code, 'tampered');
    assert.deepEqual(doc['tail'][1], { unreadable: 'garbage \u001b[2J' });
    // Human form: the records, the verdict and the error, on stderr, the garbage escaped.
    const h = await runCli(['audit', 'tail'], env);
    assert.equal(h.code, 10);
    assert.match(h.stdout, /^\(unreadable\) garbage \\x1b\[2J$/m);
    assert.match(
      h.stderr,
      /^chain: BROKEN at line 2 of 3\nError: The audit log .* does not chain at line 2: the line is not a? ?JSON/,
    );
  });
});

describe('an unexpected failure is a typed error, never a stack trace', () => {
  it('metrics and status with an audit log that is a directory: store error, exit 17', async () => {
    const home = mkdtempSync(join(tmpdir(), 'mvm-cli-metrics-'));
    try {
      mkdirSync(join(home, 'data', 'telemetry', 'audit.jsonl'), { recursive: true, mode: 0o700 });
      const env = { MVM_DATA_DIR: join(home, 'data'), XDG_CACHE_HOME: join(home, 'cache') };
      for (const args of [['metrics'], ['metrics', '--json']]) {
        const r = await runCli(args, env);
        assert.equal(r.code, 17, r.stderr);
        const text = r.stdout + r.stderr;
        assert.doesNotMatch(text, /unexpected error|\n\s+at /);
        assert.match(text, /Cannot read the audit log .*audit\.jsonl/);
      }
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});
