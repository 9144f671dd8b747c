/**
 * A lean HTTP/1.1 GET for the large release files on a direct connection.
 *
 * Why not undici here: undici hands every socket read to a fresh 64 KiB
 * buffer, copies it into its WebAssembly parser and slices it out again. For
 * a multi-gigabyte rootfs that costs about as much CPU as the SHA-256 itself
 * (measured: 0.45 CPU-s per GB against 0.1 here), and on a small host that CPU
 * is taken from the hashing and the writes. This reads the socket into one
 * reused buffer (net/tls `onread`) and parses only what a GET of a static file
 * needs: a status line, bounded headers, and a body framed by
 * Content-Length, chunked encoding or the connection's end. A sink that
 * offers space (`room`) gets such a body read straight into it, which saves
 * a copy of every byte (a chunked body still comes through our buffer).
 *
 * It decides nothing about the bytes: every body is hashed and compared with
 * the signed manifest, so a malformed answer can only make the download fail,
 * never make it succeed. Proxies, redirects and credentials stay with the
 * caller (src/net/http.ts), which sends proxied requests through undici.
 */
import net from 'node:net';
import type tls from 'node:tls';

export type Headers = Record<string, string | string[]>;

export interface ResponseHead {
  readonly status: number;
  /** Lower-cased names; a repeated header becomes an array, as undici gives them. */
  readonly headers: Headers;
}

/** How the body's end is known (RFC 9112 section 6.3). */
export type Framing =
  | { readonly kind: 'none' }
  | { readonly kind: 'length'; readonly length: number }
  | { readonly kind: 'chunked' }
  | { readonly kind: 'close' };

/** An answer that is not HTTP/1.1 as a static file server sends it. */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
}

/** Status line, header lines and the blank line together: more is not a file server's answer. */
export const MAX_HEAD_BYTES = 64 * 1024;
const MAX_LINE_BYTES = 8 * 1024;
const READ_BUFFER_BYTES = 256 * 1024;

const STATUS_LINE = /^HTTP\/1\.[01] ([1-9][0-9]{2})(?: [\t\x20-\x7e\x80-\xff]*)?$/;
/** RFC 9110 token, colon, value without control characters (a tab is allowed). */
const HEADER_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[\t ]*([\t\x20-\x7e\x80-\xff]*?)[\t ]*$/;
const DIGITS = /^[0-9]{1,15}$/;
const CHUNK_SIZE_LINE = /^([0-9A-Fa-f]{1,15})[\t ]*(?:;[\t\x20-\x7e\x80-\xff]*)?$/;

/** The head's text (latin1, without the final blank line) as status and headers. */
export function parseHead(text: string): ResponseHead {
  const lines = text.split('\r\n');
  const status = STATUS_LINE.exec(lines[0] ?? '');
  if (!status) throw new ProtocolError(`bad status line ${JSON.stringify(lines[0]?.slice(0, 80))}`);
  const headers: Headers = {};
  for (const line of lines.slice(1)) {
    const m = HEADER_LINE.exec(line);
    // A line folded onto the one before it (obsolete), a bare CR or LF, a control
    // character: refused, as a smuggling signature rather than a header to guess at.
    if (!m) throw new ProtocolError(`bad header line ${JSON.stringify(line.slice(0, 80))}`);
    const name = m[1]!.toLowerCase();
    const value = m[2]!;
    const prior = headers[name];
    headers[name] = prior === undefined ? value : [...[prior].flat(), value];
  }
  return { status: Number(status[1]), headers };
}

/** A header's comma-separated list, across repeated lines, elements as sent. */
const listElements = (v: string | string[] | undefined): string[] =>
  v === undefined ? [] : [v].flat().flatMap((x) => x.split(','));

/** The list's tokens, normalised; empty elements are ignored (RFC 9110 section 5.6.1). */
const values = (v: string | string[] | undefined): string[] =>
  listElements(v)
    .map((x) => x.trim().toLowerCase())
    .filter((x) => x !== '');

/** Where the body ends; refuses the ambiguous and the unasked-for. */
export function framingOf(head: ResponseHead): Framing {
  if (head.status === 204 || head.status === 304) return { kind: 'none' };
  const coding = values(head.headers['content-encoding']).filter((c) => c !== 'identity');
  if (coding.length > 0) {
    // Asked for identity: a compressed body would only fail its digest, under a misleading name.
    throw new ProtocolError(`Content-Encoding ${coding.join(', ')} that was not asked for`);
  }
  const te = values(head.headers['transfer-encoding']);
  // Not values(): an empty Content-Length, or one with an empty list element, is invalid, not absent.
  const cl = listElements(head.headers['content-length']);
  if (te.length > 0) {
    if (cl.length > 0) throw new ProtocolError('both Content-Length and Transfer-Encoding');
    if (te.length !== 1 || te[0] !== 'chunked') {
      throw new ProtocolError(`Transfer-Encoding ${te.join(', ')} (only chunked is read)`);
    }
    return { kind: 'chunked' };
  }
  if (cl.length > 0) {
    const lengths = cl.map((v) => v.trim());
    if (!lengths.every((v) => v === lengths[0]) || !DIGITS.test(lengths[0]!)) {
      throw new ProtocolError(`Content-Length ${JSON.stringify(cl.join(','))}`);
    }
    return { kind: 'length', length: Number(lengths[0]) };
  }
  return { kind: 'close' };
}

/**
 * Chunked transfer coding, fed in pieces as they arrive: data goes to `emit`
 * (slices of the input), sizes, extensions and trailers are checked and dropped.
 */
export class ChunkedDecoder {
  private state: 'size' | 'data' | 'data-end' | 'trailer' | 'done' = 'size';
  private line = '';
  private remaining = 0;
  private trailerBytes = 0;

  get done(): boolean {
    return this.state === 'done';
  }

  /** Consumes `buf` up to the body's end; returns how many bytes were the body's. */
  feed(buf: Uint8Array, emit: (data: Uint8Array) => void): number {
    let i = 0;
    while (i < buf.length && this.state !== 'done') {
      if (this.state === 'data') {
        const n = Math.min(this.remaining, buf.length - i);
        emit(buf.subarray(i, i + n));
        i += n;
        this.remaining -= n;
        if (this.remaining === 0) this.state = 'data-end';
        continue;
      }
      const lf = buf.indexOf(0x0a, i);
      const end = lf === -1 ? buf.length : lf + 1;
      this.line += Buffer.from(buf.buffer, buf.byteOffset + i, end - i).toString('latin1');
      i = end;
      if (this.line.length > MAX_LINE_BYTES) throw new ProtocolError('a chunk line too long');
      if (lf === -1) break;
      if (!this.line.endsWith('\r\n')) throw new ProtocolError('a chunk line not ended by CRLF');
      this.onLine(this.line.slice(0, -2));
      this.line = '';
    }
    return i;
  }

  private onLine(line: string): void {
    if (this.state === 'size') {
      const m = CHUNK_SIZE_LINE.exec(line);
      if (!m) throw new ProtocolError(`bad chunk size ${JSON.stringify(line.slice(0, 40))}`);
      this.remaining = parseInt(m[1]!, 16);
      this.state = this.remaining === 0 ? 'trailer' : 'data';
    } else if (this.state === 'data-end') {
      if (line !== '') throw new ProtocolError('chunk data longer than its size');
      this.state = 'size';
    } else if (line === '') {
      this.state = 'done';
    } else {
      this.trailerBytes += line.length + 2;
      if (!HEADER_LINE.test(line) || this.trailerBytes > MAX_HEAD_BYTES) {
        throw new ProtocolError('bad trailer');
      }
    }
  }
}

export interface DirectRequest {
  readonly target: URL;
  /** Extra request headers (lower-case names; Host, Connection and Accept-Encoding are set here). */
  readonly headers: Readonly<Record<string, string>>;
  readonly connectTimeoutMs: number;
  /** For the response head and for silence inside the body (not while the caller has paused it). */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
}

export interface BodySink {
  /** The final head (1xx are skipped); false: the body is not wanted, the connection is closed. */
  head(head: ResponseHead): boolean;
  /** A body piece, valid only during the call; false pauses the socket until `resume()`. */
  data(chunk: Uint8Array, resume: () => void): boolean;
  /**
   * Where the next body bytes may be read straight into, saving a copy: the
   * sink's own free space, which it gets back as a `data` piece at that very
   * place. Undefined (or absent): the reader's own buffer.
   */
  room?(): Uint8Array | undefined;
}

/**
 * tls.connect reads into a user buffer too (`onread`, documented for
 * tls.connect since Node.js 15) though @types/node lists it for net only.
 * node:tls is loaded only for an https URL (getBuiltinModule, synchronous):
 * it costs several milliseconds at start-up, and release mirrors are often
 * plain http.
 */
const tlsOptions = (host: string, port: number, onread: net.OnReadOpts): tls.ConnectionOptions =>
  ({
    host,
    port,
    ...(net.isIP(host) ? {} : { servername: host }),
    ALPNProtocols: ['http/1.1'],
    onread,
  }) as tls.ConnectionOptions;

/** An interruption (Ctrl-C, a sibling's failure), as the HTTP client recognises it. */
export const abortError = (): Error => Object.assign(new Error('aborted'), { name: 'AbortError' });

const timeout = (what: string): Error =>
  Object.assign(new Error(`no ${what} in time`), { name: 'TimeoutError' });

/**
 * GET on its own connection (closed after the body). Resolves when the body
 * has been delivered or refused; rejects on a connection failure, a timeout,
 * an abort (an AbortError), a malformed answer (ProtocolError) or a body cut
 * short.
 */
export function getDirect(req: DirectRequest, sink: BodySink): Promise<void> {
  return new Promise((resolve, reject) => {
    // A deadline (AbortSignal.timeout) is a timeout; any other abort an interruption.
    const aborted = (): Error => {
      const reason: unknown = req.signal?.reason;
      return reason instanceof Error && reason.name === 'TimeoutError' ? reason : abortError();
    };
    if (req.signal?.aborted) {
      reject(aborted());
      return;
    }
    // A line break in a value would start another header or request: never sent.
    if (Object.entries(req.headers).some(([k, v]) => /[\r\n\0]/.test(k + v))) {
      reject(new TypeError('a request header holds a line break or NUL'));
      return;
    }
    const { target } = req;
    const https = target.protocol === 'https:';
    const host = target.hostname.replace(/^\[(.*)\]$/, '$1');
    const port = Number(target.port) || (https ? 443 : 80);
    let head: Buffer | undefined = Buffer.alloc(0);
    let framing: Framing | undefined;
    let chunked: ChunkedDecoder | undefined;
    let received = 0;
    let finished = false;

    const scratch = Buffer.allocUnsafe(READ_BUFFER_BYTES);
    // Node asks for the next read's buffer after every read (onread.buffer as a
    // function), so the sink's space is never held past the one read it was
    // offered for. Inside a body not framed by chunks (whose size lines would
    // land in it): the sink's own space when it has some; else our own.
    const nextBuffer = (): Uint8Array => {
      const room = !head && !finished && framing?.kind !== 'chunked' ? sink.room?.() : undefined;
      // Never an empty one: TLS would copy nothing into it, forever.
      return room && room.byteLength > 0 ? room : scratch;
    };
    const onread = {
      buffer: sink.room ? nextBuffer : scratch,
      callback: (n: number, buf: Uint8Array): boolean => {
        try {
          return onBytes(buf.subarray(0, n));
        } catch (e) {
          finish(e as Error);
          return false;
        }
      },
    };
    const socket: net.Socket = https
      ? process.getBuiltinModule('node:tls').connect(tlsOptions(host, port, onread))
      : net.connect({ host, port, onread });

    const connectTimer = setTimeout(
      () => finish(timeout('connection')),
      Math.min(req.connectTimeoutMs, req.timeoutMs),
    );
    // The final head must come within timeoutMs of connecting, however the server
    // trickles it (a byte at a time, or 1xx answers without end): activity alone
    // would keep the idle timer below from ever firing.
    let headTimer: NodeJS.Timeout | undefined;
    const onAbort = (): void => finish(aborted());
    function finish(e?: Error): void {
      if (finished) return;
      finished = true;
      clearTimeout(connectTimer);
      clearTimeout(headTimer);
      req.signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      if (e) reject(e);
      else resolve();
    }
    req.signal?.addEventListener('abort', onAbort, { once: true });
    socket.once(https ? 'secureConnect' : 'connect', () => {
      clearTimeout(connectTimer);
      headTimer = setTimeout(() => finish(timeout('response')), req.timeoutMs);
    });
    socket.setNoDelay(true);
    socket.setTimeout(req.timeoutMs, () =>
      finish(timeout(head ? 'response' : 'data from the server')),
    );
    socket.on('error', (e) => finish(e));
    socket.on('end', () => {
      if (framing?.kind === 'close') finish();
      else finish(new Error(cutShort()));
    });
    socket.on('close', () => finish(new Error(cutShort())));

    const lines = [
      `GET ${target.pathname}${target.search} HTTP/1.1`,
      `host: ${target.host}`,
      'accept-encoding: identity',
      'connection: close',
      ...Object.entries(req.headers).map(([k, v]) => `${k}: ${v}`),
    ];
    socket.write(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');

    function cutShort(): string {
      if (head) return 'the server closed the connection before answering';
      return framing?.kind === 'length'
        ? `the server closed the connection after ${received} of ${framing.length} body bytes`
        : 'the server closed the connection inside the body';
    }

    const resume = (): void => {
      if (finished) return;
      socket.setTimeout(req.timeoutMs);
      socket.resume();
    };
    /** One read: the head first (skipping 1xx), then the body; false pauses the socket. */
    function onBytes(bytes: Uint8Array): boolean {
      if (head) {
        const all: Buffer = Buffer.concat([head, bytes]);
        let start = 0;
        for (;;) {
          const end = all.indexOf('\r\n\r\n', start, 'latin1');
          if (end === -1) {
            // Up to 3 bytes of the blank line may already be here without being found.
            if (all.length - start > MAX_HEAD_BYTES + 3) {
              throw new ProtocolError(`a response head over ${MAX_HEAD_BYTES} bytes`);
            }
            head = all.subarray(start);
            return true;
          }
          if (end - start > MAX_HEAD_BYTES) {
            throw new ProtocolError(`a response head over ${MAX_HEAD_BYTES} bytes`);
          }
          const parsed = parseHead(all.toString('latin1', start, end));
          start = end + 4;
          if (parsed.status >= 200) {
            head = undefined;
            clearTimeout(headTimer);
            // Before the sink hears of it: a malformed answer must not make it act
            // (a download would drop its partial for a 200 that then fails).
            framing = framingOf(parsed);
            if (!sink.head(parsed)) {
              finish();
              return false;
            }
            if (framing.kind === 'chunked') chunked = new ChunkedDecoder();
            break;
          }
        }
        // A 200 with a zero length, a 204: nothing follows.
        if (framing!.kind === 'none' || (framing!.kind === 'length' && framing!.length === 0)) {
          finish();
          return false;
        }
        bytes = all.subarray(start);
      }
      let go = true;
      const deliver = (piece: Uint8Array): void => {
        if (piece.length === 0) return;
        received += piece.length;
        if (!sink.data(piece, resume)) go = false;
      };
      if (framing!.kind === 'length') {
        deliver(bytes.subarray(0, framing!.length - received));
        if (received === framing!.length) {
          finish();
          return false;
        }
      } else if (chunked) {
        chunked.feed(bytes, deliver);
        if (chunked.done) {
          finish();
          return false;
        }
      } else {
        deliver(bytes);
      }
      if (!go) socket.setTimeout(0); // paused by the caller (its disk), not silent
      return go;
    }
  });
}
