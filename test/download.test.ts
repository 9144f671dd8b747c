/**
 * The download engine (src/net/download.ts, hashing-sink.ts) below the CLI:
 * files larger than one 1 MiB batch, cut at offsets that are not batch
 * boundaries, resumed, and a disk that fills up. Real loopback server, real
 * files; the tmpfs for the full disk is a real mount (tests run as root).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:http';
import {
  createServer as createTcpServer,
  type AddressInfo,
  type Server,
  type Socket,
} from 'node:net';
import { after, before, describe, it, type TestContext } from 'node:test';
import { MvmError } from '../src/errors.js';
import { download, partialPath } from '../src/net/download.js';
import { HashingSink } from '../src/net/hashing-sink.js';
import { HttpClient } from '../src/net/http.js';
import { ReleaseServer } from './support/release-server.js';

const VERSION = '0.14.0';
const NAME = 'dev-rootfs-x86_64.ext4';
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let work: string;
let server: ReleaseServer;
let client: HttpClient;
/** 13 MiB and a bit: thirteen full batches and a partial one. */
const file = randomBytes(13 * 1024 * 1024 + 12_345);

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'mvm-download-'));
  mkdirSync(join(work, 'release'));
  writeFileSync(join(work, 'release', NAME), file);
  server = await ReleaseServer.start({ releases: { [VERSION]: join(work, 'release') } });
  client = new HttpClient({ timeoutMs: 5_000 });
});

after(async () => {
  await client.close();
  await server.close();
  rmSync(work, { recursive: true, force: true });
});

const request = (dest: string, sha256 = sha(file)) => ({
  url: server.url(VERSION, NAME),
  dest,
  sha256,
  maxBytes: 64 * 1024 * 1024,
  limitVariable: 'MVM_MAX_ROOTFS_BYTES',
  role: 'rootfs',
  diskErrorCode: 'input' as const,
});

/** A TCP server on 127.0.0.1 that answers every request with `answer(socket)`; closed after the test. */
async function rawServer(t: TestContext, answer: (s: Socket) => void): Promise<string> {
  const sockets = new Set<Socket>();
  const srv: Server = createTcpServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.once('data', () => answer(s));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.after(() => {
    for (const s of sockets) s.destroy();
    srv.close();
  });
  return `http://127.0.0.1:${(srv.address() as AddressInfo).port}/f`;
}

/** A 2 MiB tmpfs (a real mount: tests run as root), unmounted after the test. */
function tinyDisk(t: TestContext, name: string): string {
  const mnt = join(work, name);
  mkdirSync(mnt);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mnt]);
  t.after(() => execFileSync('umount', [mnt]));
  return mnt;
}

describe('download', () => {
  it('writes every batch at its own offset: the file on disk is the file served', async () => {
    server.reset();
    const dest = join(work, 'whole');
    const r = await download(client, request(dest));
    assert.equal(r.sha256, sha(file));
    assert.equal(r.bytes, file.length);
    assert.ok(readFileSync(dest).equals(file), 'the bytes on disk, not only the digest');
    assert.equal(existsSync(partialPath(dest)), false);
  });

  it('a cut between batches is resumed with Range, and the result is exact', async () => {
    server.reset();
    const cutAt = 5 * 1024 * 1024 + 777; // inside the sixth batch
    server.set(NAME, { cut: { bytes: cutAt } });
    const dest = join(work, 'cut');
    const r = await download(client, request(dest));
    assert.ok(readFileSync(dest).equals(file));
    const reqs = server.requestsFor(NAME);
    assert.equal(reqs.length, 2);
    assert.equal(reqs[1]!.range, `bytes=${cutAt}-`);
    assert.equal(server.bytesSentFor(NAME), file.length);
    assert.equal(r.reused, 0);
  });

  it('a partial left by an earlier run is hashed, then only the rest is requested', async () => {
    server.reset();
    const dest = join(work, 'earlier');
    const held = 9 * 1024 * 1024 + 3;
    writeFileSync(partialPath(dest), file.subarray(0, held));
    const r = await download(client, request(dest));
    assert.ok(readFileSync(dest).equals(file));
    assert.equal(r.reused, held);
    assert.equal(server.bytesSentFor(NAME), file.length - held);
  });

  it('a 206 that starts somewhere else than asked is not appended: the file starts over', async (t) => {
    // A broken cache in front of a mirror: it answers Range with 206 but from byte 0.
    const body = file.subarray(0, 3 * 1024 * 1024 + 99);
    let requests = 0;
    const odd = createServer((req, res) => {
      requests++;
      if (requests === 1) {
        res.writeHead(200, { 'content-length': body.length });
        res.write(body.subarray(0, 1024 * 1024 + 7), () => res.destroy()); // cut mid-way
        return;
      }
      res.writeHead(
        req.headers.range ? 206 : 200,
        req.headers.range
          ? {
              'content-range': `bytes 0-${body.length - 1}/${body.length}`,
              'content-length': body.length,
            }
          : { 'content-length': body.length },
      );
      res.end(body);
    });
    await new Promise<void>((r) => odd.listen(0, '127.0.0.1', r));
    t.after(() => odd.close());
    const dest = join(work, 'odd-range');
    const r = await download(client, {
      ...request(dest, sha(body)),
      url: `http://127.0.0.1:${(odd.address() as AddressInfo).port}/f`,
    });
    assert.ok(readFileSync(dest).equals(body), 'exactly the file, nothing appended twice');
    assert.equal(r.sha256, sha(body));
    assert.ok(requests >= 3, `cut, refused 206, then whole again (${requests} requests)`);
  });

  it('a digest mismatch deletes the partial and names both digests', async () => {
    server.reset();
    const dest = join(work, 'wrong');
    const wrong = sha(Buffer.from('another file'));
    await assert.rejects(download(client, request(dest, wrong)), (e: unknown) => {
      assert.ok(e instanceof MvmError);
      assert.equal(e.code, 'digest');
      assert.match(e.message, /^rootfs SHA-256 mismatch/);
      assert.ok(e.message.includes(wrong) && e.message.includes(sha(file)));
      return true;
    });
    assert.equal(existsSync(dest), false);
    assert.equal(existsSync(partialPath(dest)), false);
  });

  it('a full disk is a local error (the output directory), not retried as a network failure', async (t) => {
    server.reset();
    const mnt = tinyDisk(t, 'tiny');
    await assert.rejects(download(client, request(join(mnt, NAME))), (e: unknown) => {
      assert.ok(e instanceof MvmError);
      assert.equal(e.code, 'input');
      assert.match(e.message, /Cannot write/);
      assert.match(e.cause ?? '', /ENOSPC|no space/i);
      return true;
    });
    assert.equal(server.requestsFor(NAME).length, 1, 'no retry: the network was fine');
    assert.equal(existsSync(join(mnt, NAME)), false);
  });

  it('two files at once, on the one hashing worker: each file and digest exact', async () => {
    server.reset();
    const other = randomBytes(7 * 1024 * 1024 + 5);
    const dir = join(work, 'second');
    mkdirSync(join(dir, 'release'), { recursive: true });
    writeFileSync(join(dir, 'release', 'other.bin'), other);
    const second = await ReleaseServer.start({ releases: { [VERSION]: join(dir, 'release') } });
    try {
      const [a, b] = await Promise.all([
        download(client, request(join(work, 'both-a'))),
        download(client, {
          ...request(join(dir, 'other.bin'), sha(other)),
          url: second.url(VERSION, 'other.bin'),
        }),
      ]);
      assert.equal(a.sha256, sha(file));
      assert.equal(b.sha256, sha(other));
      assert.ok(readFileSync(join(work, 'both-a')).equals(file));
      assert.ok(readFileSync(join(dir, 'other.bin')).equals(other));
    } finally {
      await second.close();
    }
  });

  it('a full disk under one file fails that file only: the other, at the same time, completes', async (t) => {
    server.reset();
    const mnt = tinyDisk(t, 'tiny-two');
    const [full, fine] = await Promise.allSettled([
      download(client, request(join(mnt, NAME))),
      download(client, request(join(work, 'beside-the-full-one'))),
    ]);
    assert.equal(full.status, 'rejected');
    assert.match(((full as PromiseRejectedResult).reason as Error).message, /Cannot write/);
    assert.equal(fine.status, 'fulfilled');
    assert.ok(readFileSync(join(work, 'beside-the-full-one')).equals(file));
  });
  it(
    'a body that never ends, past the size limit: refused at once, not drained forever',
    { timeout: 20_000 },
    async (t) => {
      let requests = 0;
      const url = await rawServer(t, (s) => {
        requests++;
        s.write('HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n'); // no length: until the server closes
        const chunk = Buffer.alloc(256 * 1024, 1);
        const pump = (): void => {
          while (!s.destroyed && s.write(chunk));
          if (!s.destroyed) s.once('drain', pump);
        };
        pump();
      });
      const dest = join(work, 'endless');
      await assert.rejects(
        download(client, { ...request(dest), url, maxBytes: 4 * 1024 * 1024 }),
        (e: unknown) => {
          assert.ok(e instanceof MvmError);
          assert.equal(e.code, 'network');
          assert.match(e.message, /larger than 4194304 bytes/);
          return true;
        },
      );
      assert.equal(requests, 1, 'not retried: the limit will not change');
    },
  );

  it('a malformed answer to a resumed request (200 with Content-Length and chunked) keeps the partial for the next run', async (t) => {
    const dest = join(work, 'malformed-resume');
    const held = file.subarray(0, 2 * 1024 * 1024 + 1);
    writeFileSync(partialPath(dest), held);
    const url = await rawServer(t, (s) =>
      s.end('HTTP/1.1 200 OK\r\ncontent-length: 10\r\ntransfer-encoding: chunked\r\n\r\n'),
    );
    await assert.rejects(download(client, { ...request(dest), url }), /not valid HTTP\/1\.1/);
    assert.ok(readFileSync(partialPath(dest)).equals(held), 'the bytes already held are kept');
  });
});

/** A sink on a new, empty partial in the work directory. */
async function freshSink(name: string): Promise<{ path: string; sink: HashingSink }> {
  const path = join(work, name);
  rmSync(path, { force: true });
  return { path, sink: await HashingSink.open(path, 'input') };
}

describe('HashingSink', () => {
  it('pieces read straight into its room and pieces copied in, mixed, then a restart: the file and digest are exact', async () => {
    const { path, sink } = await freshSink('room.partial');
    try {
      const feed = (bytes: Buffer): void => {
        for (let at = 0, k = 0; at < bytes.length; k++) {
          const n = Math.min(bytes.length - at, 100_000 + k * 37);
          const room = k % 3 === 2 ? undefined : sink.room();
          if (room) {
            // A read into the room, of at most what fits.
            const m = Math.min(n, room.length);
            room.set(bytes.subarray(at, at + m));
            sink.write(room.subarray(0, m));
            at += m;
          } else {
            sink.write(bytes.subarray(at, at + n));
            at += n;
          }
        }
      };
      feed(file.subarray(0, 3 * 1024 * 1024 + 9)); // dropped by the restart
      sink.restart();
      feed(file);
      assert.equal(await sink.finish(), sha(file));
      assert.equal(sink.size, file.length);
    } finally {
      await sink.close();
    }
    assert.ok(readFileSync(path).equals(file));
  });

  it('close writes out every byte accepted before it resolves: the partial is whole for the next run', async () => {
    const { path, sink } = await freshSink('closed.partial');
    // Far more than the worker can write and hash in the moment between the last write and the
    // read below (one 40 MB write queues 40 batches at once), so a close that resolved before
    // the worker was done would be seen short every time, not only when the machine is idle.
    const accepted = Buffer.concat([file.subarray(0, 300_005), randomBytes(40 * 1024 * 1024)]);
    sink.write(accepted.subarray(0, 300_005));
    sink.write(accepted.subarray(300_005));
    await sink.close();
    // Read at once: a descriptor closed while batches were still queued would leave this short.
    assert.ok(readFileSync(path).equals(accepted));
  });

  it('a partial that grows behind our back: finish refuses it (the digest would not describe the file)', async () => {
    const { path, sink } = await freshSink('grown.partial');
    try {
      sink.write(file.subarray(0, 100_000));
      // Larger than what was written, whichever lands first.
      appendFileSync(path, Buffer.alloc(300_000, 7));
      await assert.rejects(sink.finish(), (e: unknown) => {
        assert.ok(e instanceof MvmError);
        assert.equal(e.code, 'input');
        assert.match(e.cause ?? '', /another process changed it/);
        return true;
      });
    } finally {
      await sink.close();
    }
  });
});
