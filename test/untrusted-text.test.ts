/**
 * Text from carried-in files (file names, manifest fields quoted by the
 * parser, audit records written from them) reaches the terminal. None of it
 * may move the cursor, clear the screen, set the window title, reorder the
 * line (bidi overrides) or forge a line that reads like an `ok` record: the
 * renderer shows such characters as visible escapes, in human and JSON
 * output alike. JSON output stays one line and round-trips the value.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { renderError, type Output } from '../src/cli/render.js';
import { MvmError } from '../src/errors.js';
import type { CliResult } from './support/cli.js';
import { HOST_ARCH, importArgs, testHost, VERSION } from './support/host.js';
import { TestPki } from './support/pki.js';
import { writeReleaseSet } from './support/release.js';

/** Everything a terminal could act on, except the newline the renderer itself ends its lines with. */
const RAW_CONTROL =
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/u;

/**
 * A crafted value: clears the screen, sets the window title (OSC 0), returns
 * the cursor and starts a fake line, flips the text direction (RLO), and a C1
 * CSI that some terminals honour as ESC [.
 */
const EVIL = 'x\u001b[2J\u001b]0;pwned\u0007\r\nok: installed\u202egpj.exe\u009b31m';
/** EVIL as the renderer shows it. */
const EVIL_SHOWN = 'x\\x1b[2J\\x1b]0;pwned\\x07\\r\\nok: installed\\u202egpj.exe\\x9b31m';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

let root: string;
let pki: TestPki;
let trustedRoot: string;
let n = 0;

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'mvm-untrusted-'));
  pki = await TestPki.create();
  trustedRoot = pki.writeTrustedRoot(root);
});
after(() => rmSync(root, { recursive: true, force: true }));

const host = () => testHost(join(root, `host${n++}`), trustedRoot);

/** The four files of a set, the manifest named by a crafted, missing path (the other three exist). */
const missingManifest = () => {
  const dir = join(root, `set${n++}`);
  mkdirSync(dir, { recursive: true });
  // Several missing files are named in one error (issue 11); here only the crafted one is missing.
  for (const f of ['b', 'k', 'r']) writeFileSync(join(dir, f), 'x');
  return {
    manifest: join(dir, EVIL),
    bundle: join(dir, 'b'),
    vmlinux: join(dir, 'k'),
    rootfs: join(dir, 'r'),
  };
};

function assertNoRawControl(text: string, what: string): void {
  const m = RAW_CONTROL.exec(text);
  assert.equal(
    m,
    null,
    `${what} carries a raw U+${m?.[0].codePointAt(0)?.toString(16).padStart(4, '0')}: ${JSON.stringify(text)}`,
  );
}

/** Human error output: every line is one the renderer wrote (no injected line). */
function assertRendererLines(stderr: string): void {
  assert.ok(stderr.endsWith('\n'));
  for (const line of stderr.slice(0, -1).split('\n')) {
    assert.match(
      line,
      /^(Error: | {2}(check|cause|fix): )/,
      `a line the renderer did not write: ${line}`,
    );
  }
}

/** --json output: exactly one line holding one JSON document. */
function oneJsonLine(r: CliResult): Json {
  assert.ok(r.stdout.endsWith('\n'), 'ends with a newline');
  assert.equal(r.stdout.indexOf('\n'), r.stdout.length - 1, 'one line');
  assertNoRawControl(r.stdout, 'stdout');
  return JSON.parse(r.stdout) as Json;
}

describe('untrusted text in errors', () => {
  it('a crafted file name quoted by the "does not exist" error is shown escaped', async () => {
    const h = host();
    const set = missingManifest();
    const r = await h.run(importArgs(set));
    assert.equal(r.code, 3, r.stderr);
    assert.equal(r.stdout, '');
    assertNoRawControl(r.stderr, 'stderr');
    assertRendererLines(r.stderr);
    assert.ok(
      r.stderr.startsWith(
        `Error: manifest ${join(set.manifest, '..')}/${EVIL_SHOWN} does not exist\n`,
      ),
      r.stderr,
    );
  });

  it('--json: one parseable line, no raw control or bidi character, the value round-trips', async () => {
    const h = host();
    const set = missingManifest();
    const r = await h.run([...importArgs(set), '--json']);
    assert.equal(r.code, 3, r.stderr);
    const doc = oneJsonLine(r);
    assert.equal(doc['error'].code, 'input');
    assert.equal(doc['error'].message, `manifest ${set.manifest} does not exist`);
    assertNoRawControl(r.stderr, 'stderr');
  });

  it('an unknown field of a signed manifest, and its value, are shown escaped by status', async () => {
    // Unknown fields of schema 1 are accepted and shown (issue 11): their names and values are signed text.
    const h = host();
    const set = await writeReleaseSet(pki, join(root, `set${n++}`), {
      version: VERSION,
      arch: HOST_ARCH,
      edit: (m) => {
        m[EVIL] = EVIL;
      },
    });
    const r = await h.importSet(set);
    assert.equal(r.code, 0, r.stderr);
    const s = await h.run(['status']);
    assert.equal(s.code, 0, s.stderr);
    assertNoRawControl(s.stdout, 'stdout');
    assert.ok(s.stdout.includes(`${EVIL_SHOWN} = `), s.stdout);
    const j = await h.run(['status', '--json']);
    assertNoRawControl(j.stdout, 'stdout');
    assert.equal(oneJsonLine(j)['images'][0].receipt.manifestUnknownFields[EVIL], EVIL);
  });
});

describe('untrusted text in audit tail', () => {
  it('a record whose message carries control characters is shown escaped, and --json round-trips it', async () => {
    const h = host();
    assert.equal((await h.run(importArgs(missingManifest()))).code, 3);
    const stored = h.audit().at(-1)!;
    assert.equal(stored['outcome'], 'failed');

    const r = await h.run(['audit', 'tail']);
    assert.equal(r.code, 0, r.stderr);
    assertNoRawControl(r.stdout, 'stdout');
    assertNoRawControl(r.stderr, 'stderr');
    // A header line, then the one record, whose message is escaped on its own line.
    const lines = r.stdout.trimEnd().split('\n');
    assert.equal(lines.length, 2, r.stdout);
    assert.match(lines[0]!, /^TIME +SEQ +UID +EVENT +OUTCOME +CODE +WHAT +VERSION +MESSAGE$/);
    assert.match(lines[1]!, /dev\.import-image +failed +input .*\\x1b\[2J.*does not exist$/);

    const j = await h.run(['audit', 'tail', '--json']);
    assert.equal(j.code, 0, j.stderr);
    const doc = oneJsonLine(j);
    assert.equal(doc['tail'].at(-1).message, stored['message']);
  });
});

describe('renderError', () => {
  const capture = () => {
    const out: string[] = [];
    const err: string[] = [];
    const io: Output = { out: (t) => out.push(t), err: (t) => err.push(t) };
    return { io, out, err };
  };

  it('escapes message, cause, fix and the --debug trace of an MvmError', () => {
    const c = capture();
    const e = new MvmError('signature', `signed by ${EVIL}`, {
      check: 'identity',
      cause: `cause ${EVIL}`,
      fix: `fix ${EVIL}`,
    });
    assert.equal(renderError(e, { json: false, debug: true }, c.io), 10);
    const text = c.err.join('\n');
    assertNoRawControl(text, 'stderr');
    assert.ok(c.err[0]!.startsWith(`Error: signed by ${EVIL_SHOWN}\n`), c.err[0]);
    assert.ok(c.err[0]!.includes(`  cause: cause ${EVIL_SHOWN}\n`));
    assert.ok(c.err[0]!.includes(`  fix:   fix ${EVIL_SHOWN}`));
    assert.match(c.err[1]!, /^debug: MvmError: signed by x\\x1b\[2J/);
  });

  it('an unexpected exception is an internal error without a stack trace, whatever was thrown', () => {
    const thrown: unknown[] = [
      new Error(`boom ${EVIL}`),
      Object.create(null),
      {
        get message(): string {
          throw new Error('a getter that throws');
        },
      },
      Symbol('s'),
      undefined,
    ];
    for (const t of thrown) {
      for (const json of [false, true]) {
        const c = capture();
        assert.equal(renderError(t, { json, debug: false }, c.io), 1);
        const text = [...c.out, ...c.err].join('\n');
        assertNoRawControl(text, 'output');
        assert.doesNotMatch(text, /\n\s+at /, 'no stack trace');
        if (json) {
          assert.equal(c.out.length, 1);
          const doc = JSON.parse(c.out[0]!) as Json;
          assert.equal(doc['error'].code, 'internal');
          assert.match(doc['error'].message, /^unexpected error: /);
        } else {
          assert.match(c.err[0]!, /^Error: unexpected error: .+\n {2}fix: {3}Re-run with --debug/);
        }
      }
    }
  });
});

describe('untrusted text: dev import-image step lines and result', () => {
  it('a data directory named with control characters shows escaped in the result line', async () => {
    const h = host();
    const set = await writeReleaseSet(pki, join(root, `set${n++}`), {
      version: VERSION,
      arch: HOST_ARCH,
    });
    const data = join(h.dir, `data-${EVIL.replace(/\//g, '_')}`);
    const r = await h.importSet(set, [], { MVM_DATA_DIR: data });
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout + r.stderr.replace(/\n/g, ''), RAW_CONTROL);
    assert.match(
      r.stdout,
      new RegExp(`at .*data-${EVIL_SHOWN.replace(/[\\[\]().*+?^$|]/g, '\\$&')}`),
    );
    const j = await h.importSet(set, ['--json'], { MVM_DATA_DIR: data });
    assert.equal(j.code, 0, j.stderr);
    assert.equal(j.stdout.trim().split('\n').length, 1, 'one JSON line');
    assert.equal((JSON.parse(j.stdout) as Json).path.includes(EVIL.replace(/\//g, '_')), true);
  });
});
