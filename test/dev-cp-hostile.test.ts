/**
 * `dev cp` against a compromised guest. The real guest and its agent are
 * exercised in dev-cp.test.ts, but a guest that lies — a tar that writes
 * absolute names, `..`, entries through links, a sha256sum that disagrees —
 * cannot be made from the BusyBox test guest, whose shell runs its own
 * applets whatever PATH says. So the compromised guest's agent is played
 * here by a scripted peer on a real unix socket, speaking the QEMU guest
 * agent protocol (the only thing mocked); mvmctl's copy code and the host
 * files it must protect are real.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { copySpec } from '../src/core/copy-spec.js';
import { MvmError } from '../src/errors.js';
import { AgentChannel } from '../src/vm/agent.js';
import { guestCopy } from '../src/vm/copy.js';

let dir: string;
let work: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'mvm-cph-'));
  work = join(dir, 'work');
  mkdirSync(work);
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** One ustar header block (and its data), written here independently of src/core/tar.ts. */
function ustar(name: string, typeflag: string, body = Buffer.alloc(0), linkname = ''): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, 'utf8');
  h.write('0000644\0', 100, 'ascii');
  h.write('0000000\0', 108, 'ascii');
  h.write('0000000\0', 116, 'ascii');
  h.write(`${body.length.toString(8).padStart(11, '0')}\0`, 124, 'ascii');
  h.write('00000000000\0', 136, 'ascii');
  h.write(typeflag, 156, 'ascii');
  h.write(linkname, 157, 100, 'utf8');
  h.write('ustar\x0000', 257, 'ascii');
  h.fill(' ', 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
  return Buffer.concat([h, body, Buffer.alloc((512 - (body.length % 512)) % 512)]);
}
const archive = (...entries: Buffer[]): Buffer => Buffer.concat([...entries, Buffer.alloc(1024)]);
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

interface Lies {
  /** What reading any guest file returns (the archive for -r, the file's bytes otherwise). */
  readonly content: Buffer;
  /** What sha256sum says; by default the true hash of `content` (a consistent liar). */
  readonly sha256?: string;
  /** Guest paths that are directories. */
  readonly dirs: readonly string[];
}

/**
 * A scripted guest agent: helper scripts are recognised by what they run
 * (the type check, sha256sum, everything else exits 0), files read back
 * `lies.content`, writes are taken whole. Every script run is recorded.
 */
async function compromisedGuest(
  name: string,
  lies: Lies,
): Promise<{ channel: AgentChannel; scripts: string[] }> {
  const path = join(dir, name);
  const scripts: string[] = [];
  const procs = new Map<number, { out: string }>();
  const reads = new Map<number, number>();
  let next = 100;
  const server = createServer((s: Socket) => {
    let buf = '';
    s.on('data', (c: Buffer) => {
      buf += c.toString('latin1');
      for (;;) {
        let depth = 0;
        let stop = -1;
        let inString = false;
        for (let i = 0; i < buf.length; i++) {
          const ch = buf[i];
          if (inString) {
            if (ch === '\\') i++;
            else if (ch === '"') inString = false;
          } else if (ch === '"') inString = true;
          else if (ch === '{') depth++;
          else if (ch === '}' && --depth === 0) {
            stop = i + 1;
            break;
          }
        }
        if (stop < 0) return;
        const raw = buf.slice(0, stop).replace(/^\xff/, '');
        buf = buf.slice(stop);
        const msg = JSON.parse(raw) as { execute: string; arguments?: Record<string, unknown> };
        const a = msg.arguments ?? {};
        const reply = (v: unknown) => s.write(`${JSON.stringify({ return: v })}\n`);
        switch (msg.execute) {
          case 'guest-sync-delimited':
            s.write(
              Buffer.concat([Buffer.from([0xff]), Buffer.from(`{"return": ${String(a.id)}}\n`)]),
            );
            break;
          case 'guest-exec': {
            const argv = a.arg as string[];
            const script = argv[1]!;
            const target = (argv[3] ?? '').replace(/(.)\/+$/, '$1');
            scripts.push(script);
            let out = '';
            if (script.includes('stat -L'))
              out = lies.dirs.includes(target)
                ? 'dir 755 4096\n'
                : `file 644 ${lies.content.length}\n`;
            else if (script.includes('sha256sum')) out = `${lies.sha256 ?? sha(lies.content)}  -\n`;
            const pid = next++;
            procs.set(pid, { out });
            reply({ pid });
            break;
          }
          case 'guest-exec-status': {
            const p = procs.get(a.pid as number)!;
            reply({ exited: true, exitcode: 0, 'out-data': Buffer.from(p.out).toString('base64') });
            break;
          }
          case 'guest-file-open': {
            const h = next++;
            reads.set(h, 0);
            reply(h);
            break;
          }
          case 'guest-file-read': {
            const at = reads.get(a.handle as number)!;
            const bytes = lies.content.subarray(at, at + (a.count as number));
            reads.set(a.handle as number, at + bytes.length);
            reply({
              count: bytes.length,
              'buf-b64': bytes.toString('base64'),
              eof: bytes.length === 0,
            });
            break;
          }
          case 'guest-file-write':
            reply({ count: Buffer.from(a['buf-b64'] as string, 'base64').length, eof: false });
            break;
          default:
            reply({});
        }
      }
    });
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(path, r));
  after(() => server.close());
  return { channel: new AgentChannel(path), scripts };
}

const io = () => ({ stdin: new PassThrough(), stdout: new PassThrough() });
const partials = (d: string): string[] => readdirSync(d).filter((n) => n.includes('.mvmctl-part-'));
const refusal = (re: RegExp) => (e: unknown) => {
  assert.ok(e instanceof MvmError, String(e));
  assert.equal(e.code, 'agent');
  assert.match(e.message, re);
  assert.match(e.fix ?? '', /Nothing was written to the destination/);
  return true;
};

describe('a compromised guest’s archive never chooses where the host writes', () => {
  const x = Buffer.from('x');
  const cases: [string, Buffer, RegExp][] = [
    [
      'an absolute name',
      archive(ustar('./', '5'), ustar('/tmp/mvm-cph-escape', '0', x)),
      /the name "\/tmp\/mvm-cph-escape" is absolute/,
    ],
    [
      'a name that climbs out',
      archive(ustar('./', '5'), ustar('./a/../../escape', '0', x)),
      /the name "\.\/a\/\.\.\/\.\.\/escape" climbs out with \.\./,
    ],
    ['a bare ..', archive(ustar('..', '5')), /the name "\.\." climbs out with \.\./],
    [
      'an entry inside a link',
      archive(
        ustar('./', '5'),
        ustar('./link', '2', Buffer.alloc(0), join(dir, 'work')),
        ustar('./link/escape', '0', x),
      ),
      /the entry "\.\/link\/escape" is inside a link or special file of the archive/,
    ],
    [
      'an entry inside a hard link',
      archive(
        ustar('./', '5'),
        ustar('./d', '5'),
        ustar('./h', '1', Buffer.alloc(0), './d'),
        ustar('./h/escape', '0', x),
      ),
      /the entry "\.\/h\/escape" is inside a link or special file/,
    ],
    [
      'a name given twice (a file, then a directory over it)',
      archive(ustar('./', '5'), ustar('./f', '0', x), ustar('./f/', '5')),
      /the entry "\.\/f\/" appears twice/,
    ],
    [
      'a file before its directory',
      archive(ustar('./', '5'), ustar('./sub/f', '0', x)),
      /the entry "\.\/sub\/f" is not inside a directory the archive created first/,
    ],
    [
      'the root as a link',
      archive(ustar('.', '2', Buffer.alloc(0), '/etc')),
      /makes the copy's root a link/,
    ],
    [
      'a header whose checksum fails',
      (() => {
        const a = archive(ustar('./', '5'), ustar('./f', '0', x));
        a[512 + 10] = a[512 + 10]! ^ 1; // a flipped bit in the second header's name
        return a;
      })(),
      /fails its checksum/,
    ],
    [
      'an archive cut inside a file',
      archive(ustar('./', '5'), ustar('./f', '0', Buffer.alloc(4096))).subarray(0, 2048),
      /ends inside/,
    ],
    [
      'a size that is not octal',
      (() => {
        const a = archive(ustar('./', '5'), ustar('./f', '0', x));
        a.write('0000000009x', 512 + 124, 'ascii');
        return a;
      })(),
      /checksum|not an octal number/,
    ],
  ];
  for (const [what, content, message] of cases) {
    it(`${what}: refused whole, the destination never appears, nothing is left beside it`, async () => {
      const { channel } = await compromisedGuest(`g-${cases.findIndex((c) => c[0] === what)}`, {
        content,
        dirs: ['/victim'],
      });
      const dst = join(work, 'victim-copy');
      await assert.rejects(
        guestCopy(channel, copySpec('dev:/victim', dst, true), io()),
        refusal(message),
      );
      assert.equal(existsSync(dst), false);
      assert.equal(existsSync('/tmp/mvm-cph-escape'), false);
      assert.equal(existsSync(join(dir, 'escape')), false);
      assert.equal(existsSync(join(work, 'escape')), false);
      assert.deepEqual(partials(work), []);
    });
  }

  it('links, hard links and devices inside are skipped and named; the rest arrives', async () => {
    const { channel } = await compromisedGuest('g-skip', {
      content: archive(
        ustar('./', '5'),
        ustar('./ok', '0', Buffer.from('fine\n')),
        ustar('./to-etc', '2', Buffer.alloc(0), '/etc/passwd'),
        ustar('./hard', '1', Buffer.alloc(0), './ok'),
        ustar('./null', '3'),
      ),
      dirs: ['/victim'],
    });
    const dst = join(work, 'skip-copy');
    const r = await guestCopy(channel, copySpec('dev:/victim', dst, true), io());
    assert.deepEqual(r.skipped, [
      { name: 'to-etc', type: 'symbolic link' },
      { name: 'hard', type: 'hard link' },
      { name: 'null', type: 'special file' },
    ]);
    assert.deepEqual(readdirSync(dst), ['ok']);
  });

  it('a merge into an existing tree never writes through a link the host has there', async () => {
    const dst = join(work, 'merge');
    mkdirSync(dst);
    const outside = join(dir, 'outside');
    mkdirSync(outside);
    const { symlinkSync } = await import('node:fs');
    // cp's rule: into an existing directory under the source's name, so the link sits in merge/victim.
    mkdirSync(join(dst, 'victim'));
    symlinkSync(outside, join(dst, 'victim', 'sub'));
    const { channel } = await compromisedGuest('g-merge', {
      content: archive(
        ustar('./', '5'),
        ustar('./sub/', '5'),
        ustar('./sub/planted', '0', Buffer.from('x')),
      ),
      dirs: ['/victim'],
    });
    await assert.rejects(
      guestCopy(channel, copySpec('dev:/victim', dst, true), io()),
      (e: unknown) =>
        e instanceof MvmError &&
        e.code === 'input' &&
        /is in the way: .* a symbolic link/.test(e.message),
    );
    assert.deepEqual(readdirSync(outside), []);
  });
});

describe('a hash the guest does not agree with is refused, both ways', () => {
  it('from the guest: no file under the destination name, no partial', async () => {
    const { channel } = await compromisedGuest('h-from', {
      content: Buffer.from('the bytes sent\n'),
      sha256: '0'.repeat(64),
      dirs: [],
    });
    const dst = join(work, 'from-copy');
    await assert.rejects(
      guestCopy(channel, copySpec('dev:/f', dst, false), io()),
      (e: unknown) =>
        e instanceof MvmError &&
        e.code === 'agent' &&
        /does not match: SHA-256 [0-9a-f]{16}… on the host, 0{16}… in the guest/.test(e.message),
    );
    assert.equal(existsSync(dst), false);
    assert.deepEqual(partials(work), []);
  });

  it('to the guest: the partial is never moved into place, and is removed', async () => {
    const src = join(work, 'to-send');
    writeFileSync(src, 'payload\n');
    const { channel, scripts } = await compromisedGuest('h-to', {
      content: Buffer.alloc(0),
      sha256: 'f'.repeat(64),
      dirs: ['/dst'],
    });
    await assert.rejects(
      guestCopy(channel, copySpec(src, 'dev:/dst/', false), io()),
      (e: unknown) =>
        e instanceof MvmError && e.code === 'agent' && /does not match/.test(e.message),
    );
    assert.equal(scripts.filter((s) => s.includes('mv -f')).length, 0, 'never renamed into place');
    assert.ok(scripts.at(-1)!.startsWith('rm -rf'), 'the partial is removed');
  });
});
