/**
 * The tar archives `dev cp -r` carries, checked against the real GNU tar of
 * this host both ways: archives mvmctl writes are listed and extracted by
 * GNU tar (long names, links, modes, a large file), and archives GNU tar
 * writes in its gnu, posix (pax) and ustar formats are unpacked by mvmctl
 * to the same tree. Plus the name policy and the header checks alone.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { copySpec } from '../src/core/copy-spec.js';
import {
  BLOCK,
  entryParts,
  padding,
  parsePax,
  parseTarHeader,
  TAR_END,
  tarHeader,
  type TarWriteEntry,
} from '../src/core/tar.js';
import { MvmError } from '../src/errors.js';
import { unpackArchive } from '../src/vm/copy.js';

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'mvm-tar-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
// Past 100 bytes (a GNU long name, a pax path, a ustar prefix), each part short enough for ustar.
const LONG = `${'d'.repeat(90)}/${'f'.repeat(90)}.txt`;

function treeOf(root: string, rel = ''): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(root, rel)).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    const s = lstatSync(join(root, r));
    const mode = (s.mode & 0o777).toString(8);
    if (s.isDirectory()) out.push(`d ${mode} ${r}`, ...treeOf(root, r));
    else if (s.isFile()) out.push(`f ${mode} ${r} ${sha(readFileSync(join(root, r)))}`);
    else out.push(`l ${r} -> ${readlinkSync(join(root, r))}`);
  }
  return out;
}

describe('archives mvmctl writes, read by GNU tar', () => {
  it('lists and extracts them whole: long names and link targets, modes, data', () => {
    const big = randomBytes(3 * BLOCK + 17);
    const entries: [TarWriteEntry, Buffer?][] = [
      [{ name: '.', type: 'dir', mode: 0o755, size: 0, mtime: 1 }],
      [{ name: `./${'d'.repeat(90)}`, type: 'dir', mode: 0o750, size: 0, mtime: 1 }],
      [{ name: `./${LONG}`, type: 'file', mode: 0o640, size: 5, mtime: 1 }, Buffer.from('long\n')],
      [{ name: './big', type: 'file', mode: 0o755, size: big.length, mtime: 1 }, big],
      [{ name: './empty', type: 'file', mode: 0o600, size: 0, mtime: 1 }, Buffer.alloc(0)],
      [
        {
          name: './link',
          type: 'symlink',
          mode: 0o777,
          size: 0,
          mtime: 1,
          linkname: `../${'t'.repeat(120)}`,
        },
      ],
    ];
    const parts: Buffer[] = [];
    for (const [e, data] of entries) {
      parts.push(tarHeader(e));
      if (data) parts.push(data, Buffer.alloc(padding(data.length)));
    }
    parts.push(TAR_END);
    const file = join(dir, 'ours.tar');
    writeFileSync(file, Buffer.concat(parts));
    const listing = execFileSync('tar', ['-tf', file], { encoding: 'utf8' }).split('\n');
    assert.ok(listing.includes(`./${LONG}`), listing.join('\n'));
    const out = join(dir, 'gnu-extracted');
    mkdirSync(out);
    execFileSync('tar', ['-xf', file, '-C', out]);
    assert.equal(readFileSync(join(out, LONG), 'utf8'), 'long\n');
    assert.ok(readFileSync(join(out, 'big')).equals(big));
    assert.equal(statSync(join(out, 'big')).mode & 0o777, 0o755);
    assert.equal(statSync(join(out, LONG)).mode & 0o777, 0o640);
    assert.equal(readlinkSync(join(out, 'link')), `../${'t'.repeat(120)}`);
  });
});

describe('archives GNU tar writes, unpacked by mvmctl', () => {
  let src: string;
  before(() => {
    src = join(dir, 'src');
    mkdirSync(join(src, 'd'.repeat(90)), { recursive: true });
    mkdirSync(join(src, 'ro'));
    writeFileSync(join(src, LONG), 'long\n');
    writeFileSync(join(src, 'ro', 'f'), randomBytes(100_000));
    writeFileSync(join(src, 'ünïcode name'), 'u\n');
    writeFileSync(join(src, 'x'), '#!/bin/sh\n');
    chmodSync(join(src, 'x'), 0o4755);
    chmodSync(join(src, 'ro'), 0o555);
    symlinkSync('/etc/passwd', join(src, 'abs-link'));
  });

  for (const format of ['gnu', 'posix', 'ustar']) {
    it(`--format=${format}: the same tree, links skipped and named, no setuid`, async () => {
      const archive = join(dir, `${format}.tar`);
      execFileSync('tar', [`--format=${format}`, '-C', src, '-cf', archive, '.'], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      const staging = join(dir, `un-${format}`);
      const u = await unpackArchive(archive, staging);
      assert.deepEqual(u.skipped, [{ name: 'abs-link', type: 'symbolic link' }]);
      assert.equal(u.files, 4);
      const expected = treeOf(src)
        .filter((l) => !l.startsWith('l '))
        .map((l) => l.replace(/^f 4755 x /, 'f 755 x ').replace(/^d 555 ro$/, 'd 700 ro'));
      // Directory modes are applied by the caller once everything is placed (a 555 directory
      // would refuse the files inside it): until then they are 700.
      assert.deepEqual(
        treeOf(staging).map((l) => l.replace(/^d 700 (?!ro$)/, 'd 755 ')),
        expected.map((l) => l.replace(/^d 7[05]5 /, 'd 755 ')),
      );
      assert.deepEqual(
        u.dirs.find((d) => d.rel === 'ro'),
        { rel: 'ro', mode: 0o555 },
        'the mode to apply later is the archive’s',
      );
    });
  }
});

describe('the name policy and the header checks', () => {
  it('entryParts keeps names inside the root, and refuses every way out', () => {
    assert.deepEqual(entryParts('./a/b/'), ['a', 'b']);
    assert.deepEqual(entryParts('./'), []);
    assert.deepEqual(entryParts('a//./b'), ['a', 'b']);
    assert.deepEqual(entryParts('..foo/x..'), ['..foo', 'x..'], 'dots inside a name are a name');
    for (const bad of ['/etc/passwd', '../x', 'a/../../x', 'a/..', '..', 'a\0b', 'x'.repeat(4097)])
      assert.throws(
        () => entryParts(bad),
        (e: unknown) => e instanceof MvmError && e.code === 'agent' && /refused/.test(e.message),
        JSON.stringify(bad.slice(0, 20)),
      );
  });

  it('a header is read only when its checksum holds; numbers parse exactly (octal, base-256)', () => {
    const h = tarHeader({ name: './f', type: 'file', mode: 0o644, size: 12_345, mtime: 7 });
    const parsed = parseTarHeader(h);
    assert.deepEqual(parsed, {
      kind: 'header',
      typeflag: '0',
      name: './f',
      linkname: '',
      mode: 0o644,
      size: 12_345,
    });
    const big = tarHeader({
      name: './huge',
      type: 'file',
      mode: 0o644,
      size: 9 * 2 ** 30,
      mtime: 7,
    });
    assert.equal(big[124], 0x80, 'past 8 GiB the size is base-256');
    assert.equal((parseTarHeader(big) as { size: number }).size, 9 * 2 ** 30);
    const flipped = Buffer.from(h);
    flipped[1] = flipped[1]! ^ 0x20;
    assert.throws(() => parseTarHeader(flipped), /fails its checksum/);
    assert.deepEqual(parseTarHeader(Buffer.alloc(BLOCK)), { kind: 'end' });
    assert.throws(() => parseTarHeader(Buffer.alloc(100)), /ends inside a header/);
  });

  it('pax records: path and size read, lengths checked', () => {
    const rec = (k: string, v: string) => {
      const body = ` ${k}=${v}\n`;
      let n = body.length + 1;
      while (`${n}${body}`.length !== n) n++;
      return `${n}${body}`;
    };
    const data = Buffer.from(rec('path', 'a/b') + rec('size', '42') + rec('mtime', '1.5'));
    assert.deepEqual(parsePax(data), { path: 'a/b', size: 42 });
    assert.throws(() => parsePax(Buffer.from('99 path=x\n')), /bad length/);
    assert.throws(() => parsePax(Buffer.from(rec('size', '-1'))), /not a number/);
  });

  it('copySpec: one side in the guest, absolute there, - only for one file', () => {
    assert.deepEqual(copySpec('./a', 'dev:/root/', false), {
      from: { side: 'host', path: './a' },
      to: { side: 'guest', path: '/root/' },
      recursive: false,
    });
    assert.deepEqual(copySpec('dev:/x', '-', false).to, { side: 'stdio' });
    for (const [s, d, r, re] of [
      ['a', 'b', false, /neither side/],
      ['dev:/a', 'dev:/b', false, /both sides/],
      ['a', 'dev:x', false, /not an absolute path/],
      ['-', 'dev:/x', true, /-r does not/],
      ['-', 'dev:/x/', false, /no file name/],
      ['', 'dev:/x', false, /empty path/],
    ] as const)
      assert.throws(
        () => copySpec(s, d, r),
        (e: unknown) => e instanceof MvmError && e.code === 'usage' && re.test(e.message),
      );
  });
});
