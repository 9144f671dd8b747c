/**
 * The lean HTTP/1.1 GET (src/net/http1.ts): its parsers on crafted input, then
 * getDirect against real servers on 127.0.0.1 (node:net, writing raw answers
 * byte for byte as broken or slow servers do), and over TLS in a child process
 * that trusts a throwaway certificate only through NODE_EXTRA_CA_CERTS.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TLSSocket } from 'node:tls';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  ChunkedDecoder,
  framingOf,
  getDirect,
  MAX_HEAD_BYTES,
  parseHead,
  ProtocolError,
  type BodySink,
  type DirectRequest,
  type Headers,
  type ResponseHead,
} from '../src/net/http1.js';
import { selfSignedTlsCertificate } from './support/pki.js';

const MiB = 1024 * 1024;
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** A ProtocolError, with its name as the caller (http.ts) and error reports see it. */
function protocolError(message?: RegExp) {
  return (e: unknown): true => {
    assert.ok(e instanceof ProtocolError, `a ProtocolError, not ${String(e)}`);
    assert.equal(e.name, 'ProtocolError');
    if (message) assert.match(e.message, message);
    return true;
  };
}

const named = (name: string, message?: RegExp) => (e: unknown) => {
  const err = e as Error;
  assert.equal(err.name, name, `${err.name}: ${err.message}`);
  if (message) assert.match(err.message, message);
  return true as const;
};

describe('parseHead', () => {
  it('a status line with a reason; names lower-cased; a repeated header becomes an array', () => {
    const head = parseHead(
      [
        'HTTP/1.1 206 Partial Content',
        'Content-Length: 5',
        'X-Seen: 1',
        'Content-Range: bytes 10-14/15',
        'x-seen: 2',
        'X-SEEN:3',
        'Empty:',
        'Spaced: \t padded value \t',
        'Tabbed: a\tb',
      ].join('\r\n'),
    );
    assert.equal(head.status, 206);
    assert.deepEqual(head.headers, {
      'content-length': '5',
      'x-seen': ['1', '2', '3'],
      'content-range': 'bytes 10-14/15',
      empty: '',
      spaced: 'padded value',
      tabbed: 'a\tb',
    });
  });

  it('a status line without a reason (or with an empty one), HTTP/1.0 too', () => {
    assert.deepEqual(parseHead('HTTP/1.1 200'), { status: 200, headers: {} });
    assert.deepEqual(parseHead('HTTP/1.1 404 '), { status: 404, headers: {} });
    assert.deepEqual(parseHead('HTTP/1.0 302 Found\r\nLocation: /x'), {
      status: 302,
      headers: { location: '/x' },
    });
    assert.equal(parseHead('HTTP/1.1 100 Continue').status, 100);
  });

  for (const [what, text] of [
    ['no status code', 'HTTP/1.1 OK'],
    ['HTTP/2', 'HTTP/2 200'],
    ['HTTP/1.2', 'HTTP/1.2 200 OK'],
    ['a lower-case protocol name', 'http/1.1 200 OK'],
    ['a two-digit status', 'HTTP/1.1 20 OK'],
    ['a four-digit status', 'HTTP/1.1 2000 OK'],
    ['a status below 100', 'HTTP/1.1 099 OK'],
    ['no space before the reason', 'HTTP/1.1 200OK'],
    ['a leading space', ' HTTP/1.1 200 OK'],
    ['not HTTP at all', 'ICY 200 OK'],
    ['a control character in the reason', 'HTTP/1.1 200 O\x00K'],
    ['an empty head', ''],
  ] as const) {
    it(`refuses a bad status line: ${what}`, () => {
      assert.throws(() => parseHead(text), protocolError(/bad status line/));
    });
  }

  for (const [what, line] of [
    ['an obs-fold line (starting with a space)', ' folded onto the line before'],
    ['an obs-fold line (starting with a tab)', '\tfolded'],
    ['a control character in a value', 'X-A: a\x01b'],
    ['DEL in a value', 'X-A: a\x7fb'],
    ['NUL in a value', 'X-A: a\x00b'],
    ['a bare LF in a value', 'X-A: a\nX-B: b'],
    ['a bare CR in a value', 'X-A: a\rb'],
    ['a bare name without a colon', 'X-A'],
    ['a space before the colon', 'X-A : 1'],
    ['an empty name', ': 1'],
    ['a name that is not a token', 'X(A): 1'],
    ['an empty line inside the head', ''],
  ] as const) {
    it(`refuses a bad header line: ${what}`, () => {
      assert.throws(
        () => parseHead(`HTTP/1.1 200 OK\r\nX-Before: 1\r\n${line}\r\nX-After: 2`),
        protocolError(/bad header line/),
      );
    });
  }
});

describe('framingOf', () => {
  const at = (status: number, headers: Headers): ResponseHead => ({ status, headers });

  it('204 and 304 have no body, whatever they say', () => {
    assert.deepEqual(framingOf(at(204, { 'content-length': '10' })), { kind: 'none' });
    assert.deepEqual(framingOf(at(304, { 'transfer-encoding': 'chunked' })), { kind: 'none' });
  });

  it('Content-Length, also repeated with one value', () => {
    assert.deepEqual(framingOf(at(200, { 'content-length': '1234567' })), {
      kind: 'length',
      length: 1234567,
    });
    assert.deepEqual(framingOf(at(206, { 'content-length': '0' })), { kind: 'length', length: 0 });
    assert.deepEqual(framingOf(at(200, { 'content-length': ['42', '42'] })), {
      kind: 'length',
      length: 42,
    });
    assert.deepEqual(framingOf(at(200, { 'content-length': '42, 42' })), {
      kind: 'length',
      length: 42,
    });
    assert.deepEqual(framingOf(at(200, { 'content-length': '999999999999999' })), {
      kind: 'length',
      length: 999_999_999_999_999,
    });
  });

  for (const [what, cl] of [
    ['two different values', ['5', '6']],
    ['two different values in one line', '5, 6'],
    ['the same number spelled two ways', ['5', '05']],
    ['not digits', 'abc'],
    ['negative', '-1'],
    ['an exponent', '1e3'],
    ['hexadecimal', '0x10'],
    ['a fraction', '1.5'],
    ['more digits than a safe integer holds', '1234567890123456'],
  ] as const) {
    it(`refuses a Content-Length with ${what}`, () => {
      assert.throws(
        () => framingOf(at(200, { 'content-length': cl as string | string[] })),
        protocolError(/Content-Length/),
      );
    });
  }

  it('chunked (any case)', () => {
    assert.deepEqual(framingOf(at(200, { 'transfer-encoding': 'chunked' })), { kind: 'chunked' });
    assert.deepEqual(framingOf(at(206, { 'transfer-encoding': 'Chunked' })), { kind: 'chunked' });
  });

  for (const [what, te] of [
    ['gzip, chunked', 'gzip, chunked'],
    ['gzip then chunked on two lines', ['gzip', 'chunked']],
    ['chunked twice', 'chunked, chunked'],
    ['identity', 'identity'],
    ['gzip alone', 'gzip'],
  ] as const) {
    it(`refuses Transfer-Encoding ${what}`, () => {
      assert.throws(
        () => framingOf(at(200, { 'transfer-encoding': te as string | string[] })),
        protocolError(/Transfer-Encoding/),
      );
    });
  }

  it('refuses Content-Length with Transfer-Encoding (a smuggling signature)', () => {
    assert.throws(
      () => framingOf(at(200, { 'content-length': '5', 'transfer-encoding': 'chunked' })),
      protocolError(/both Content-Length and Transfer-Encoding/),
    );
  });

  it('refuses a Content-Encoding that was not asked for; identity is fine', () => {
    for (const ce of ['gzip', 'br', 'identity, gzip', ['identity', 'deflate']]) {
      assert.throws(
        () => framingOf(at(200, { 'content-encoding': ce, 'content-length': '3' })),
        protocolError(/Content-Encoding .*not asked for/),
        JSON.stringify(ce),
      );
    }
    assert.deepEqual(
      framingOf(at(200, { 'content-encoding': 'identity', 'content-length': '3' })),
      { kind: 'length', length: 3 },
    );
    assert.deepEqual(
      framingOf(at(200, { 'content-encoding': 'Identity', 'transfer-encoding': 'chunked' })),
      { kind: 'chunked' },
    );
  });

  it('refuses an empty Content-Length (RFC 9112 section 6.3: invalid, not absent)', () => {
    for (const v of ['', ' ', '5,', ',5', '5, ,5']) {
      assert.throws(
        () => framingOf(at(200, { 'content-length': v })),
        protocolError(/Content-Length/),
        JSON.stringify(v),
      );
    }
    assert.deepEqual(framingOf(at(200, { 'transfer-encoding': 'chunked,' })), {
      kind: 'chunked',
    }); // empty list elements are ignored in Transfer-Encoding (RFC 9110 section 5.6.1)
  });

  it('neither length nor chunked: the body ends with the connection', () => {
    assert.deepEqual(framingOf(at(200, {})), { kind: 'close' });
    assert.deepEqual(framingOf(at(200, { 'content-type': 'application/octet-stream' })), {
      kind: 'close',
    });
  });
});

/** A chunked body: `pieces` as chunks (every third with an extension), then a trailer. */
function chunkedWire(pieces: Buffer[], trailer = 'X-Checksum: abc\r\nX-Other: 1\r\n'): Buffer {
  const parts: Buffer[] = [];
  pieces.forEach((p, i) => {
    const ext = i % 3 === 0 ? `;name=value;q="quoted ${i}"` : '';
    // Sizes in both cases of hex digits.
    const size = i % 2 ? p.length.toString(16).toUpperCase() : p.length.toString(16);
    parts.push(Buffer.from(`${size}${ext}\r\n`, 'latin1'), p, Buffer.from('\r\n'));
  });
  parts.push(Buffer.from(`0\r\n${trailer}\r\n`, 'latin1'));
  return Buffer.concat(parts);
}

/** Feeds `wire` to a fresh decoder in pieces of `step` bytes; the data and the bytes consumed. */
function decode(wire: Buffer, step: number): { data: Buffer; consumed: number; done: boolean } {
  const d = new ChunkedDecoder();
  const out: Buffer[] = [];
  let consumed = 0;
  for (let i = 0; i < wire.length; i += step) {
    const piece = wire.subarray(i, i + step);
    const n = d.feed(piece, (x) => out.push(Buffer.from(x)));
    assert.ok(n >= 0 && n <= piece.length, `fed ${piece.length}, consumed ${n}`);
    consumed += n;
    // Once done, nothing more is the body's.
    if (d.done)
      assert.equal(
        d.feed(piece.subarray(n), () => assert.fail('emitted after the end')),
        0,
      );
  }
  return { data: Buffer.concat(out), consumed, done: d.done };
}

describe('ChunkedDecoder', () => {
  const pieces = [
    Buffer.from('hello'),
    Buffer.from(', '),
    randomBytes(300),
    Buffer.from('\r\n0\r\n\r\n'), // data that looks like framing
    randomBytes(17),
  ];
  const expected = Buffer.concat(pieces);

  it('in one piece and byte by byte: the same data, extensions and trailers dropped', () => {
    const wire = chunkedWire(pieces);
    const whole = decode(wire, wire.length);
    const bytewise = decode(wire, 1);
    for (const r of [whole, bytewise]) {
      assert.ok(r.data.equals(expected), `${r.data.length} bytes, ${expected.length} expected`);
      assert.equal(r.consumed, wire.length);
      assert.equal(r.done, true);
    }
    for (const step of [2, 3, 7, 64])
      assert.ok(decode(wire, step).data.equals(expected), `${step}`);
  });

  it('feed returns the body bytes consumed and stops after the terminating blank line', () => {
    const wire = chunkedWire(pieces);
    const after = Buffer.from('HTTP/1.1 200 OK\r\n\r\nnot the body');
    const d = new ChunkedDecoder();
    const out: Buffer[] = [];
    const n = d.feed(Buffer.concat([wire, after]), (x) => out.push(Buffer.from(x)));
    assert.equal(n, wire.length);
    assert.equal(d.done, true);
    assert.ok(Buffer.concat(out).equals(expected));
    assert.equal(
      d.feed(after, () => assert.fail('emitted after the end')),
      0,
    );

    // Byte by byte with the extra bytes: the count stops at the wire's end.
    const bytewise = decode(Buffer.concat([wire, after]), 1);
    assert.equal(bytewise.consumed, wire.length);
    assert.ok(bytewise.data.equals(expected));

    // Not done before the blank line that ends the trailer.
    const e = new ChunkedDecoder();
    assert.equal(
      e.feed(wire.subarray(0, wire.length - 2), () => undefined),
      wire.length - 2,
    );
    assert.equal(e.done, false);
    assert.equal(
      e.feed(Buffer.concat([wire.subarray(wire.length - 2), after]), () => undefined),
      2,
    );
    assert.equal(e.done, true);
  });

  it('emits data pieces that stop at the chunk boundaries, not after them', () => {
    const d = new ChunkedDecoder();
    const out: string[] = [];
    d.feed(Buffer.from('3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n'), (x) =>
      out.push(Buffer.from(x).toString()),
    );
    assert.deepEqual(out, ['abc', 'de']);
  });

  it('an empty body: a last chunk alone, no data emitted', () => {
    const d = new ChunkedDecoder();
    assert.equal(
      d.feed(Buffer.from('0\r\n\r\nX'), () => assert.fail('no data')),
      5,
    );
    assert.ok(d.done);
  });

  it('a size line with an extension just under the line bound is read', () => {
    const ext = 'x'.repeat(8000);
    const r = decode(Buffer.from(`3;${ext}\r\nabc\r\n0\r\n\r\n`), 1000);
    assert.equal(r.data.toString(), 'abc');
    assert.ok(r.done);
  });

  for (const [what, wire, message] of [
    ['a size that is not hex', 'zz\r\nab\r\n0\r\n\r\n', /bad chunk size/],
    ['an empty size line', '\r\nab\r\n0\r\n\r\n', /bad chunk size/],
    ['a negative size', '-5\r\nhello\r\n0\r\n\r\n', /bad chunk size/],
    ['a size with a leading space', ' 5\r\nhello\r\n0\r\n\r\n', /bad chunk size/],
    ['data longer than its size (no CRLF after it)', '5\r\nhelloX\r\n0\r\n\r\n', /longer than/],
    ['data followed by the next size line', '5\r\nhello0\r\n\r\n', /longer than/],
    ['data followed by LF alone', '5\r\nhello\n0\r\n\r\n', /not ended by CRLF/],
    ['a size line ended by LF alone', '5\nhello\r\n0\r\n\r\n', /not ended by CRLF/],
    ['a trailer that is not a header', '0\r\nnot a header\r\n\r\n', /bad trailer/],
    ['a trailer with a control character', '0\r\nX-A: a\x01b\r\n\r\n', /bad trailer/],
  ] as const) {
    it(`refuses ${what}, fed whole or byte by byte`, () => {
      for (const step of [wire.length, 1]) {
        assert.throws(() => decode(Buffer.from(wire, 'latin1'), step), protocolError(message));
      }
    });
  }

  it('refuses an over-long line, terminated or not, before holding much more than the bound', () => {
    assert.throws(
      () => decode(Buffer.from(`1;${'x'.repeat(9000)}\r\na\r\n0\r\n\r\n`), 1_000_000),
      protocolError(/too long/),
    );
    // A line that never ends: refused while it grows, not after it ends.
    const d = new ChunkedDecoder();
    let fed = 0;
    assert.throws(
      () => {
        for (; fed < 1_000_000; fed += 100) d.feed(Buffer.alloc(100, 0x31), () => undefined);
      },
      protocolError(/too long/),
    );
    assert.ok(fed <= 8 * 1024 + 100, `refused only after ${fed} bytes`);
  });

  it('refuses a trailer section larger than a head may be', () => {
    const line = `X-Pad: ${'p'.repeat(1000)}\r\n`;
    const wire = Buffer.from(
      `0\r\n${line.repeat(Math.ceil(MAX_HEAD_BYTES / line.length) + 1)}\r\n`,
    );
    assert.throws(() => decode(wire, 4096), protocolError(/bad trailer/));
  });
});

// ---------------------------------------------------------------------------------------------
// getDirect against real loopback servers.

interface RawServer {
  readonly port: number;
  url(path: string): string;
  /** Request heads received (up to the blank line), in order. */
  readonly requests: string[];
  /** Connections accepted. */
  connections(): number;
  /** Resolves once every accepted connection has closed (the client left); rejects after `ms`. */
  allClosed(ms?: number): Promise<void>;
  close(): Promise<void>;
}

/**
 * A TCP server on 127.0.0.1 that reads a request head, then lets `answer`
 * write whatever it likes to the socket. Closed after the test.
 */
async function rawServer(
  t: TestContext,
  answer: (socket: Socket, requestHead: string) => void | Promise<void>,
): Promise<RawServer> {
  const sockets = new Set<Socket>();
  const closes: Promise<void>[] = [];
  const requests: string[] = [];
  let connections = 0;
  const server = createServer((socket) => {
    connections++;
    sockets.add(socket);
    closes.push(new Promise((r) => socket.once('close', () => r())));
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let got = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      got = Buffer.concat([got, d]);
      const end = got.indexOf('\r\n\r\n');
      if (end === -1) return;
      socket.off('data', onData);
      socket.resume(); // keep reading, so that the client's close is seen
      const head = got.toString('latin1', 0, end);
      requests.push(head);
      Promise.resolve(answer(socket, head)).catch(() => socket.destroy());
    };
    socket.on('data', onData);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const rs: RawServer = {
    port,
    url: (path) => `http://127.0.0.1:${port}${path}`,
    requests,
    connections: () => connections,
    allClosed: (ms = 3_000) =>
      Promise.race([
        Promise.all(closes).then(() => undefined),
        sleep(ms, undefined, { ref: false }).then(() => {
          throw new Error(`${sockets.size} connection(s) still open after ${ms} ms`);
        }),
      ]),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  t.after(() => rs.close());
  return rs;
}

/** Writes and waits until the bytes are handed to the kernel (or the client is gone). */
const write = (socket: Socket, data: string | Buffer): Promise<void> =>
  new Promise((resolve) => {
    if (socket.destroyed) return resolve();
    socket.write(typeof data === 'string' ? Buffer.from(data, 'latin1') : data, () => resolve());
  });

/** A sink that keeps copies of everything (pieces are only valid during the call). */
function collect(o: { head?: (h: ResponseHead) => boolean } = {}) {
  const heads: ResponseHead[] = [];
  const pieces: Buffer[] = [];
  const sink: BodySink = {
    head: (h) => {
      heads.push(h);
      return o.head ? o.head(h) : true;
    },
    data: (chunk) => {
      pieces.push(Buffer.from(chunk));
      return true;
    },
  };
  return { sink, heads, pieces, body: () => Buffer.concat(pieces) };
}

/**
 * A sink that offers its own space to read into (`room`), as the download's
 * batches do: 1 MiB regions filled front to back, a fresh one when full. It
 * notes whether each piece arrived in place (read straight into the room).
 */
function roomy() {
  let region = new Uint8Array(MiB);
  let fill = 0;
  let offered = 0;
  const inPlace: boolean[] = [];
  const pieces: Buffer[] = [];
  const sink: BodySink = {
    head: () => true,
    data: (chunk) => {
      const here = chunk.buffer === region.buffer && chunk.byteOffset === fill;
      inPlace.push(here);
      pieces.push(Buffer.from(chunk));
      if (here) fill += chunk.length;
      return true;
    },
    room: () => {
      offered++;
      if (fill === region.length) {
        region = new Uint8Array(MiB);
        fill = 0;
      }
      return region.subarray(fill);
    },
  };
  return { sink, inPlace, offered: () => offered, body: () => Buffer.concat(pieces) };
}

const request = (url: string, o: Partial<DirectRequest> = {}): DirectRequest => ({
  target: new URL(url),
  headers: {},
  connectTimeoutMs: 2_000,
  timeoutMs: 5_000,
  ...o,
});

const okHead = (headers: string[]) =>
  `HTTP/1.1 200 OK\r\n${headers.map((h) => `${h}\r\n`).join('')}\r\n`;

/** With a 300 ms bound and no head in time: TimeoutError, after the bound and well before 3 s. */
async function noHeadWithin300ms(url: string): Promise<void> {
  const started = Date.now();
  await assert.rejects(
    getDirect(request(url, { timeoutMs: 300 }), collect().sink),
    named('TimeoutError', /no response in time/),
  );
  const ms = Date.now() - started;
  assert.ok(ms >= 250 && ms < 3_000, `after ${ms} ms`);
}

// A regression that loses a timeout or a resume would hang: each test is bounded.
describe('getDirect: bodies', { timeout: 30_000 }, () => {
  it('Content-Length: a multi-MiB body delivered exactly, over many reads; the request as sent', async (t) => {
    const body = randomBytes(5 * MiB + 4321);
    const srv = await rawServer(t, async (s) => {
      await write(s, okHead([`Content-Length: ${body.length}`, 'Content-Type: x/y']));
      await write(s, body);
      // Followed by bytes that are not the body, and no close: the length ends it.
      await write(s, 'EXTRA BYTES');
    });
    const c = collect();
    await getDirect(
      request(srv.url('/files/rootfs.ext4?q=1&v=%20x'), {
        headers: { 'x-extra': 'yes', range: 'bytes=0-' },
      }),
      c.sink,
    );
    assert.equal(c.heads.length, 1);
    assert.equal(c.heads[0]!.status, 200);
    assert.equal(c.heads[0]!.headers['content-length'], String(body.length));
    assert.equal(c.body().length, body.length);
    assert.equal(sha(c.body()), sha(body));
    assert.ok(c.pieces.length > 4, `${c.pieces.length} pieces: more than one read`);

    const [line, ...headerLines] = srv.requests[0]!.split('\r\n');
    assert.equal(line, 'GET /files/rootfs.ext4?q=1&v=%20x HTTP/1.1');
    const names = headerLines.map((h) => h.slice(0, h.indexOf(':')).toLowerCase());
    assert.equal(new Set(names).size, names.length, `each header once: ${names.join(' ')}`);
    assert.deepEqual(
      Object.fromEntries(
        headerLines.map((h) => [
          h.slice(0, h.indexOf(':')).toLowerCase(),
          h.slice(h.indexOf(':') + 1).trim(),
        ]),
      ),
      {
        host: `127.0.0.1:${srv.port}`,
        connection: 'close',
        'accept-encoding': 'identity',
        'x-extra': 'yes',
        range: 'bytes=0-',
      },
    );
    assert.equal(srv.requests.length, 1);
    await srv.allClosed(); // its own connection, closed after the body
  });

  it('chunked: a body in hundreds of chunks, written in odd pieces, then bytes after the end', async (t) => {
    const chunks: Buffer[] = [];
    for (let i = 0; i < 400; i++) chunks.push(randomBytes(1 + ((i * 7919) % 20_000)));
    const body = Buffer.concat(chunks);
    const wire = chunkedWire(chunks);
    const srv = await rawServer(t, async (s) => {
      await write(s, okHead(['Transfer-Encoding: chunked']));
      for (let at = 0, k = 1; at < wire.length; k++) {
        const next = Math.min(wire.length, at + ((k * 104_729) % 70_001) + 1);
        await write(s, wire.subarray(at, next));
        at = next;
      }
      // Not the body, and the connection stays open: the last chunk ends it.
      await write(s, 'HTTP/1.1 200 OK\r\n\r\ngarbage');
    });
    const c = collect();
    await getDirect(request(srv.url('/chunked')), c.sink);
    assert.equal(c.heads[0]!.headers['transfer-encoding'], 'chunked');
    assert.equal(c.body().length, body.length);
    assert.equal(sha(c.body()), sha(body));
    await srv.allClosed();
  });

  it('a sink with room: the body is read straight into it, the head never', async (t) => {
    const body = randomBytes(4 * MiB + 77);
    const srv = await rawServer(t, async (s) => {
      // The head and the first body bytes in one write: they arrive in one read.
      await write(
        s,
        Buffer.concat([
          Buffer.from(okHead([`Content-Length: ${body.length}`])),
          body.subarray(0, 1000),
        ]),
      );
      for (let at = 1000; at < body.length; at += 300_000)
        await write(s, body.subarray(at, at + 300_000));
    });
    const r = roomy();
    await getDirect(request(srv.url('/in-place')), r.sink);
    assert.equal(sha(r.body()), sha(body), 'the bytes delivered are the body, in order');
    assert.ok(r.inPlace.filter(Boolean).length > 4, `in place: ${r.inPlace.join(' ')}`);
    assert.equal(
      r.inPlace[0],
      false,
      'the read that held the head went to the reader’s own buffer',
    );
    await srv.allClosed();
  });

  it('a sink whose room is empty: the reader reads into its own buffer (an empty one would never fill)', async (t) => {
    const body = randomBytes(MiB + 3);
    const srv = await rawServer(t, async (s) => {
      await write(s, okHead([`Content-Length: ${body.length}`]));
      await write(s, body);
    });
    const c = collect();
    let offered = 0;
    await getDirect(request(srv.url('/empty-room')), {
      ...c.sink,
      room: () => (offered++, new Uint8Array(0)),
    });
    assert.equal(sha(c.body()), sha(body));
    assert.ok(offered > 0);
  });

  it('a sink with room, chunked body: the room is never offered (size lines must not land in it)', async (t) => {
    const chunks = Array.from({ length: 50 }, (_, i) => randomBytes(20_000 + i));
    const srv = await rawServer(t, async (s) => {
      await write(s, okHead(['Transfer-Encoding: chunked']));
      await write(s, chunkedWire(chunks));
    });
    const r = roomy();
    await getDirect(request(srv.url('/chunked-room')), r.sink);
    assert.equal(sha(r.body()), sha(Buffer.concat(chunks)));
    assert.equal(r.offered(), 0);
    assert.ok(r.inPlace.every((x) => !x));
  });

  it('close-delimited: no length, the body ends when the server ends the connection', async (t) => {
    const body = randomBytes(2 * MiB + 3);
    const srv = await rawServer(t, async (s) => {
      await write(s, okHead(['Content-Type: application/octet-stream']));
      await write(s, body.subarray(0, MiB));
      await sleep(30);
      await write(s, body.subarray(MiB));
      s.end();
    });
    const c = collect();
    await getDirect(request(srv.url('/close')), c.sink);
    assert.equal(c.body().length, body.length);
    assert.equal(sha(c.body()), sha(body));
  });

  it('100 Continue and 103 Early Hints are skipped; the sink hears only the final head', async (t) => {
    const srv = await rawServer(t, async (s) => {
      await write(s, 'HTTP/1.1 100 Continue\r\n\r\n');
      await sleep(20);
      await write(
        s,
        'HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-Final: yes\r\n\r\nhello',
      );
      await sleep(20);
      await write(s, ' world');
    });
    const c = collect();
    await getDirect(request(srv.url('/continue')), c.sink);
    assert.deepEqual(c.heads, [
      { status: 200, headers: { 'content-length': '11', 'x-final': 'yes' } },
    ]);
    assert.equal(c.body().toString(), 'hello world');
  });

  it('a head split across several writes with delays (inside a name, a value and the blank line)', async (t) => {
    const srv = await rawServer(t, async (s) => {
      for (const piece of [
        'HTT',
        'P/1.1 20',
        '0 OK\r\nContent-',
        'Length: 11\r\nX-Split: a',
        'b\r',
        '\n\r',
        '\n',
        'hello',
        ' world',
      ]) {
        await write(s, piece);
        await sleep(40);
      }
    });
    const c = collect();
    await getDirect(request(srv.url('/split'), { timeoutMs: 2_000 }), c.sink);
    assert.deepEqual(c.heads, [
      { status: 200, headers: { 'content-length': '11', 'x-split': 'ab' } },
    ]);
    assert.equal(c.body().toString(), 'hello world');
  });

  it('a head just under MAX_HEAD_BYTES is read', async (t) => {
    const filler: string[] = [];
    let size = 'HTTP/1.1 200 OK\r\nContent-Length: 2'.length;
    for (let i = 0; size < MAX_HEAD_BYTES - 300; i++) {
      const line = `X-Filler-${i}: ${'f'.repeat(200)}`;
      filler.push(line);
      size += line.length + 2;
    }
    const head = okHead(['Content-Length: 2', ...filler]);
    assert.ok(head.length > MAX_HEAD_BYTES - 300 && head.length < MAX_HEAD_BYTES);
    const srv = await rawServer(t, async (s) => {
      await write(s, head.slice(0, 30_000));
      await sleep(20);
      await write(s, head.slice(30_000));
      await write(s, 'ok');
    });
    const c = collect();
    await getDirect(request(srv.url('/big-head')), c.sink);
    assert.equal(Object.keys(c.heads[0]!.headers).length, filler.length + 1);
    assert.equal(c.body().toString(), 'ok');
  });

  it('a redirect whose head() returns false resolves at once without reading the body', async (t) => {
    const srv = await rawServer(t, async (s) => {
      // A body announced and never sent: reading it would hang until the timeout.
      await write(
        s,
        'HTTP/1.1 302 Found\r\nLocation: https://elsewhere.example/file\r\nContent-Length: 100000\r\n\r\nsome',
      );
    });
    const c = collect({ head: (h) => h.status !== 302 });
    const started = Date.now();
    await getDirect(request(srv.url('/moved'), { timeoutMs: 5_000 }), c.sink);
    assert.ok(Date.now() - started < 2_000, `resolved after ${Date.now() - started} ms`);
    assert.equal(c.heads.length, 1);
    assert.equal(c.heads[0]!.status, 302);
    assert.equal(c.heads[0]!.headers['location'], 'https://elsewhere.example/file');
    assert.deepEqual(c.pieces, [], 'no body piece delivered');
    await srv.allClosed();
  });

  for (const [what, head] of [
    ['Content-Length: 0', 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'],
    ['204', 'HTTP/1.1 204 No Content\r\n\r\n'],
    ['304 with a length', 'HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n'],
  ] as const) {
    it(`no body (${what}): resolves without waiting for the connection to close`, async (t) => {
      const srv = await rawServer(t, (s) => write(s, head));
      const c = collect();
      await getDirect(request(srv.url('/empty'), { timeoutMs: 5_000 }), c.sink);
      assert.equal(c.heads.length, 1);
      assert.deepEqual(c.pieces, []);
      await srv.allClosed();
    });
  }
});

describe('getDirect: an IPv6 literal', { timeout: 30_000 }, () => {
  it('http://[::1]:PORT/ connects to ::1 and sends Host with the brackets', async (t) => {
    const server = createServer((s) => {
      let got = '';
      s.on('error', () => undefined);
      s.on('data', (d: Buffer) => {
        got += d.toString('latin1');
        if (got.includes('\r\n\r\n')) {
          s.end(`HTTP/1.1 200 OK\r\nContent-Length: ${got.length}\r\n\r\n${got}`);
        }
      });
    });
    const listening = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen(0, '::1', () => resolve(true));
    });
    if (!listening) return t.skip('no IPv6 loopback here');
    t.after(() => new Promise<void>((r) => server.close(() => r())));
    const port = (server.address() as AddressInfo).port;
    const c = collect();
    await getDirect(request(`http://[::1]:${port}/six?x=1`), c.sink);
    const echoed = c.body().toString('latin1').split('\r\n');
    assert.equal(echoed[0], 'GET /six?x=1 HTTP/1.1');
    assert.ok(echoed.includes(`host: [::1]:${port}`), echoed.join(' | '));
  });
});

describe('getDirect: failures', { timeout: 30_000 }, () => {
  it('a server that closes after half the Content-Length: rejected, naming the byte counts', async (t) => {
    const body = randomBytes(1_000_000);
    const srv = await rawServer(t, async (s) => {
      await write(s, okHead([`Content-Length: ${body.length}`]));
      await write(s, body.subarray(0, 500_000));
      s.end();
    });
    const c = collect();
    await assert.rejects(getDirect(request(srv.url('/cut')), c.sink), (e: Error) => {
      assert.match(e.message, /after 500000 of 1000000 body bytes/);
      assert.ok(!(e instanceof ProtocolError), 'a cut is not a protocol error (it is retried)');
      return true;
    });
    assert.ok(c.body().equals(body.subarray(0, 500_000)), 'what came is delivered');
  });

  it('a chunked body cut before its last chunk: rejected', async (t) => {
    const srv = await rawServer(t, async (s) => {
      await write(s, okHead(['Transfer-Encoding: chunked']));
      await write(s, '5\r\nhello\r\n5\r\nwor');
      s.end();
    });
    const c = collect();
    await assert.rejects(getDirect(request(srv.url('/cut')), c.sink), /inside the body/);
    assert.equal(c.body().toString(), 'hellowor');
  });

  it('a server that closes before answering, or halfway through the head: rejected', async (t) => {
    for (const sent of ['', 'HTTP/1.1 200 OK\r\nContent-Le']) {
      const srv = await rawServer(t, async (s) => {
        await write(s, sent);
        s.end();
      });
      const c = collect();
      await assert.rejects(
        getDirect(request(srv.url('/gone')), c.sink),
        /closed the connection before answering/,
      );
      assert.equal(c.heads.length, 0);
    }
  });

  it('a refused connection: rejected with ECONNREFUSED', async () => {
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    await assert.rejects(
      getDirect(request(`http://127.0.0.1:${port}/`), collect().sink),
      (e: Error & { code?: string }) => e.code === 'ECONNREFUSED',
    );
  });

  it('a head over MAX_HEAD_BYTES (then a blank line and a body): ProtocolError', async (t) => {
    const lines: string[] = [];
    for (let i = 0; lines.join('\r\n').length < MAX_HEAD_BYTES + 10; i++)
      lines.push(`X-Filler-${i}: ${'f'.repeat(200)}`);
    const srv = await rawServer(t, (s) => write(s, `${okHead(['Content-Length: 2', ...lines])}ok`));
    const c = collect();
    await assert.rejects(
      getDirect(request(srv.url('/huge-head')), c.sink),
      protocolError(new RegExp(`head over ${MAX_HEAD_BYTES} bytes`)),
    );
    assert.equal(c.heads.length, 0);
  });

  it('a head that never ends: ProtocolError once it passes the bound, not a timeout', async (t) => {
    const srv = await rawServer(t, async (s) => {
      await write(s, 'HTTP/1.1 200 OK\r\n');
      for (let i = 0; i < 1000 && !s.destroyed; i++) {
        await write(s, `X-Endless-${i}: ${'e'.repeat(1000)}\r\n`);
        if (i % 20 === 0) await sleep(5);
      }
    });
    const started = Date.now();
    await assert.rejects(
      getDirect(request(srv.url('/endless'), { timeoutMs: 10_000 }), collect().sink),
      protocolError(/head over/),
    );
    assert.ok(Date.now() - started < 5_000, `after ${Date.now() - started} ms`);
  });

  for (const [what, answer, message] of [
    ['a malformed status line', 'HTTP/1.1 OK\r\nContent-Length: 2\r\n\r\nok', /bad status line/],
    ['an HTTP/2 status line', 'HTTP/2 200\r\ncontent-length: 2\r\n\r\nok', /bad status line/],
    [
      'a folded header',
      'HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 2\r\n\r\nok',
      /bad header line/,
    ],
    [
      'Content-Length and Transfer-Encoding',
      'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n',
      /both/,
    ],
    [
      'a gzip body',
      'HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\nok',
      /Content-Encoding gzip/,
    ],
    [
      'a bad chunk size',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n',
      /bad chunk size/,
    ],
    [
      'a malformed interim (1xx) head',
      'HTTP/1.1 100 Continue\r\nbad\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok',
      /bad header line/,
    ],
  ] as const) {
    it(`${what}: ProtocolError, and the connection is closed`, async (t) => {
      // The connection stays open on the server's side: only the client can end it.
      const srv = await rawServer(t, (s) => write(s, answer));
      await assert.rejects(
        getDirect(request(srv.url('/bad'), { timeoutMs: 5_000 }), collect().sink),
        protocolError(message),
      );
      await srv.allClosed();
    });
  }

  it('a head trickled a byte at a time: TimeoutError once timeoutMs has passed since connecting', async (t) => {
    const srv = await rawServer(t, async (s) => {
      for (const byte of Buffer.from(okHead(['Content-Length: 1']))) {
        if (s.destroyed) return;
        await write(s, Buffer.from([byte]));
        await sleep(50);
      }
    });
    await noHeadWithin300ms(srv.url('/trickle'));
  });

  it('a request header value with a line break is never sent: no connection is made', async (t) => {
    const srv = await rawServer(t, () => undefined);
    await assert.rejects(
      getDirect(
        request(srv.url('/x'), { headers: { authorization: 'Bearer a\r\nx-injected: 1' } }),
        collect().sink,
      ),
      (e: Error) => e instanceof TypeError && /line break/.test(e.message),
    );
    await sleep(100);
    assert.equal(srv.connections(), 0);
  });

  it('a server that accepts and never answers: TimeoutError after timeoutMs', async (t) => {
    const srv = await rawServer(t, () => undefined);
    await noHeadWithin300ms(srv.url('/silent'));
    assert.equal(srv.connections(), 1);
    await srv.allClosed();
  });

  it('interim (1xx) answers that never end: TimeoutError, as for a head that never comes', async (t) => {
    const srv = await rawServer(t, async (s) => {
      while (!s.destroyed) {
        await write(s, 'HTTP/1.1 100 Continue\r\n\r\n');
        await sleep(50);
      }
    });
    const outcome = await Promise.race([
      getDirect(request(srv.url('/interim'), { timeoutMs: 300 }), collect().sink).then(
        () => 'resolved',
        (e: Error) => e.name,
      ),
      sleep(3_000, 'still waiting after 3 s', { ref: false }),
    ]);
    assert.equal(outcome, 'TimeoutError');
  });

  it('a body that goes silent: TimeoutError', async (t) => {
    const srv = await rawServer(t, async (s) => {
      await write(s, okHead(['Content-Length: 1000000']));
      await write(s, randomBytes(100_000));
    });
    const c = collect();
    await assert.rejects(
      getDirect(request(srv.url('/stall'), { timeoutMs: 300 }), c.sink),
      named('TimeoutError', /no data from the server in time/),
    );
    assert.equal(c.body().length, 100_000);
  });

  it('an already-aborted signal: AbortError, and no connection is made', async (t) => {
    const srv = await rawServer(t, () => undefined);
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(
      getDirect(request(srv.url('/never'), { signal: ac.signal }), collect().sink),
      named('AbortError'),
    );
    await sleep(100);
    assert.equal(srv.connections(), 0);
  });

  it('a deadline (AbortSignal.timeout) that passes: TimeoutError, not an interruption', async (t) => {
    const srv = await rawServer(t, () => undefined);
    await assert.rejects(
      getDirect(
        request(srv.url('/deadline'), { timeoutMs: 5_000, signal: AbortSignal.timeout(200) }),
        collect().sink,
      ),
      named('TimeoutError'),
    );
    await srv.allClosed();
  });

  it('an abort mid-body: AbortError, the connection closed, no data after the abort', async (t) => {
    const srv = await rawServer(t, async (s) => {
      await write(s, okHead([`Content-Length: ${10 * MiB}`]));
      await write(s, randomBytes(200_000)); // then nothing: only the abort can end it
    });
    const ac = new AbortController();
    let afterAbort = 0;
    const sink: BodySink = {
      head: () => true,
      data: () => {
        if (ac.signal.aborted) afterAbort++;
        else setTimeout(() => ac.abort(), 20);
        return true;
      },
    };
    const started = Date.now();
    await assert.rejects(
      getDirect(request(srv.url('/abort'), { signal: ac.signal, timeoutMs: 10_000 }), sink),
      named('AbortError'),
    );
    assert.ok(Date.now() - started < 5_000);
    assert.equal(afterAbort, 0);
    await srv.allClosed();
  });
});

describe('getDirect: back-pressure', { timeout: 30_000 }, () => {
  for (const framing of ['length', 'chunked'] as const) {
    it(`a sink that pauses after every piece and resumes later gets every byte in order (${framing})`, async (t) => {
      const body = randomBytes(3 * MiB + 77);
      const srv = await rawServer(t, async (s) => {
        if (framing === 'length') {
          await write(s, okHead([`Content-Length: ${body.length}`]));
          await write(s, body);
        } else {
          const chunks: Buffer[] = [];
          for (let at = 0; at < body.length; at += 50_000)
            chunks.push(body.subarray(at, at + 50_000));
          await write(s, okHead(['Transfer-Encoding: chunked']));
          await write(s, chunkedWire(chunks));
        }
      });
      const pieces: Buffer[] = [];
      let paused = false;
      let whilePaused = 0;
      let resumes = 0;
      const sink: BodySink = {
        head: () => true,
        data: (chunk, resume) => {
          if (paused) whilePaused++;
          pieces.push(Buffer.from(chunk));
          if (!paused) {
            paused = true;
            setTimeout(() => {
              paused = false;
              resumes++;
              resume();
            }, 3);
          }
          return false;
        },
      };
      await getDirect(request(srv.url('/slow-disk'), { timeoutMs: 5_000 }), sink);
      const got = Buffer.concat(pieces);
      assert.equal(got.length, body.length);
      assert.equal(sha(got), sha(body));
      assert.ok(resumes > 4, `${resumes} pauses`);
      // With Content-Length a read is one piece: nothing arrives while paused.
      if (framing === 'length') assert.equal(whilePaused, 0, 'data delivered while paused');
    });
  }

  it('paused for twice timeoutMs: no TimeoutError, the body completes after resume', async (t) => {
    const body = randomBytes(2 * MiB);
    const srv = await rawServer(t, async (s) => {
      await write(s, okHead([`Content-Length: ${body.length}`]));
      await write(s, body);
    });
    const pieces: Buffer[] = [];
    let pausedAt = 0;
    let resumedAt = 0;
    const sink: BodySink = {
      head: () => true,
      data: (chunk, resume) => {
        pieces.push(Buffer.from(chunk));
        if (pausedAt) return true;
        pausedAt = Date.now();
        setTimeout(() => {
          resumedAt = Date.now();
          resume();
        }, 600);
        return false;
      },
    };
    await getDirect(request(srv.url('/pause'), { timeoutMs: 300 }), sink);
    assert.ok(resumedAt - pausedAt >= 590, `paused ${resumedAt - pausedAt} ms`);
    assert.equal(sha(Buffer.concat(pieces)), sha(body));
  });

  it('after a long pause, silence from the server is timed again', async (t) => {
    const srv = await rawServer(t, async (s) => {
      await write(s, okHead(['Content-Length: 1000000']));
      await write(s, randomBytes(100_000)); // then nothing
    });
    let received = 0;
    let resumedAt = 0;
    const sink: BodySink = {
      head: () => true,
      data: (chunk, resume) => {
        received += chunk.length;
        if (resumedAt) return true;
        setTimeout(() => {
          resumedAt = Date.now();
          resume();
        }, 600);
        resumedAt = -1;
        return false;
      },
    };
    await assert.rejects(
      getDirect(request(srv.url('/pause-then-stall'), { timeoutMs: 300 }), sink),
      named('TimeoutError', /no data from the server in time/),
    );
    assert.ok(resumedAt > 0, 'the timeout came after the resume, not during the pause');
    assert.ok(Date.now() - resumedAt >= 250, `timed out ${Date.now() - resumedAt} ms after resume`);
    assert.equal(received, 100_000);
  });
});

// ---------------------------------------------------------------------------------------------
// TLS, in a child process so that NODE_EXTRA_CA_CERTS (read at start-up) applies.

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const HTTP1 = pathToFileURL(join(ROOT, 'src', 'net', 'http1.ts')).href;

describe('getDirect over TLS', { timeout: 30_000 }, () => {
  let dir: string;
  let cert: string;
  let script: string;
  let server: HttpsServer;
  let port: number;
  const fixed = randomBytes(3 * MiB + 11);
  const streamed = randomBytes(MiB + 5);
  const served: { url: string; servername: string | false | null; host: string | undefined }[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mvm-http1-tls-'));
    const tlsFiles = selfSignedTlsCertificate(dir, 'localhost', ['DNS:localhost', 'IP:127.0.0.1']);
    const key = tlsFiles.key;
    cert = tlsFiles.cert;
    server = createHttpsServer({ key: readFileSync(key), cert: readFileSync(cert) }, (req, res) => {
      served.push({
        url: req.url ?? '',
        servername: (req.socket as TLSSocket).servername,
        host: req.headers.host,
      });
      if (req.url === '/fixed.bin') {
        res.writeHead(200, { 'content-length': String(fixed.length) }).end(fixed);
      } else if (req.url === '/streamed.bin') {
        res.writeHead(200); // no length: chunked
        for (let at = 0; at < streamed.length; at += 100_000)
          res.write(streamed.subarray(at, at + 100_000));
        res.end();
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
    script = join(dir, 'get.mts'); // ESM whatever the temp dir's package scope
    writeFileSync(
      script,
      `import { createHash } from 'node:crypto';
import { getDirect } from ${JSON.stringify(HTTP1)};
const hash = createHash('sha256');
let status = 0;
let bytes = 0;
// With 'room': the sink offers space to read into, and counts the pieces that came in place.
let region = new Uint8Array(1 << 20);
let fill = 0;
let inPlace = 0;
try {
  await getDirect(
    { target: new URL(process.argv[2]!), headers: {}, connectTimeoutMs: 5000, timeoutMs: 5000 },
    {
      head: (h) => ((status = h.status), true),
      data: (c) => {
        if (c.buffer === region.buffer && c.byteOffset === fill) (inPlace++, (fill += c.length));
        bytes += c.length;
        hash.update(c);
        return true;
      },
      ...(process.argv[3] === 'room'
        ? {
            room: () => {
              if (fill === region.length) (region = new Uint8Array(1 << 20)), (fill = 0);
              return region.subarray(fill);
            },
          }
        : {}),
    },
  );
  console.log(JSON.stringify({ status, bytes, sha256: hash.digest('hex'), inPlace }));
} catch (e) {
  const err = e as Error & { code?: string };
  console.error(JSON.stringify({ name: err.name, code: err.code, message: err.message }));
  process.exit(2);
}
`,
    );
  });

  after(async () => {
    server?.closeAllConnections();
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** The child's run: `trust` names the certificate file NODE_EXTRA_CA_CERTS points to, or none. */
  function child(url: string, trust: string | undefined, mode = '') {
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const k of ['NODE_EXTRA_CA_CERTS', 'NODE_TLS_REJECT_UNAUTHORIZED', 'NODE_TEST_CONTEXT'])
      delete env[k];
    if (trust) env['NODE_EXTRA_CA_CERTS'] = trust;
    return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        ['--import', 'tsx', script, url, mode],
        { cwd: ROOT, env, timeout: 60_000 },
        (err, stdout, stderr) =>
          resolve({
            code: err ? (typeof err.code === 'number' ? err.code : -1) : 0,
            stdout,
            stderr,
          }),
      );
    });
  }

  /** The child got all of `body` with a 200, through the reader's own buffer (no room offered). */
  function assertWhole(r: { code: number; stdout: string; stderr: string }, body: Buffer): void {
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), {
      status: 200,
      bytes: body.length,
      sha256: sha(body),
      inPlace: 0,
    });
  }

  it('https://localhost: a multi-MiB body with Content-Length, the name sent as SNI', async () => {
    assertWhole(await child(`https://localhost:${port}/fixed.bin`, cert), fixed);
    const last = served.at(-1)!;
    assert.deepEqual(last, {
      url: '/fixed.bin',
      servername: 'localhost',
      host: `localhost:${port}`,
    });
  });

  it('https://localhost: a chunked body', async () => {
    assertWhole(await child(`https://localhost:${port}/streamed.bin`, cert), streamed);
  });

  it('https://localhost, a sink with room: the decrypted body is read straight into it', async () => {
    const r = await child(`https://localhost:${port}/fixed.bin`, cert, 'room');
    assert.equal(r.code, 0, r.stderr);
    const got = JSON.parse(r.stdout) as { bytes: number; sha256: string; inPlace: number };
    assert.equal(got.bytes, fixed.length);
    assert.equal(got.sha256, sha(fixed));
    assert.ok(got.inPlace > 1, `${got.inPlace} pieces in place`);
  });

  it('https://127.0.0.1 (an IP: no SNI), checked against the IP in the certificate', async () => {
    const r = await child(`https://127.0.0.1:${port}/fixed.bin`, cert);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).sha256, sha(fixed));
    assert.equal(served.at(-1)!.servername, false);
  });

  it('without NODE_EXTRA_CA_CERTS: a certificate error, and no request reaches the server', async () => {
    const before = served.length;
    const r = await child(`https://localhost:${port}/fixed.bin`, undefined);
    assert.equal(r.code, 2, `${r.stdout}${r.stderr}`);
    assert.equal(r.stdout, '');
    const err = JSON.parse(r.stderr.trim().split('\n').at(-1)!) as { code?: string };
    assert.match(String(err.code), /SELF_SIGNED|UNABLE_TO_VERIFY|CERT/, r.stderr);
    assert.equal(served.length, before, 'the request was not sent');
  });
});
