/**
 * The `metrics serve` HTTP server's connection slots, driven directly (startMetricsServer) with a
 * small cap over real TCP connections on 127.0.0.1, fed by a real MetricsSource over an empty
 * data directory:
 * - peers holding every slot idle (nothing sent, or half a request head), reopening each one
 *   closed, cannot lock a scraper out: its connection takes the slot of the one that waited
 *   longest;
 * - the cap is in force: with a request in progress on every slot, a new connection is closed.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { configFrom } from '../src/config.js';
import { startMetricsServer, type MetricsServer } from '../src/telemetry/server.js';
import { MetricsSource } from '../src/telemetry/snapshot.js';

const CAP = 8;
const root = mkdtempSync(join(tmpdir(), 'mvm-msrv-'));
after(() => rmSync(root, { recursive: true, force: true }));

const source = () => new MetricsSource(configFrom({ MVM_DATA_DIR: join(root, 'data') }, root));

async function serve(src: MetricsSource): Promise<MetricsServer> {
  return startMetricsServer({
    listen: { host: '127.0.0.1', port: 0 },
    source: src,
    warn: () => undefined,
    maxConnections: CAP,
  });
}

/** A raw connection that records whether (and what) the server sent and when it closed. */
interface Peer {
  socket: Socket;
  received: string;
  closed: Promise<void>;
  isClosed: () => boolean;
}
async function peer(port: number, send?: string): Promise<Peer> {
  const socket = connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  let closed = false;
  const p: Peer = {
    socket,
    received: '',
    closed: new Promise((resolve) =>
      socket.once('close', () => {
        closed = true;
        resolve();
      }),
    ),
    isClosed: () => closed,
  };
  socket.on('error', () => undefined);
  socket.setEncoding('latin1').on('data', (d: string) => (p.received += d));
  if (send !== undefined) socket.write(send);
  return p;
}

function scrape(port: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/metrics', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Waits (for the server to have seen every connection, not for a time). */
async function connections(s: MetricsServer, n: number): Promise<void> {
  for (;;) {
    const count = await new Promise<number>((resolve, reject) =>
      s.server.getConnections((e, c) => (e ? reject(e) : resolve(c))),
    );
    if (count >= n) return;
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('metrics serve: connection slots', () => {
  it('peers holding every slot idle, reopening each one closed, cannot lock a scraper out', async () => {
    const s = await serve(source());
    const port = s.address.port;
    const hogs: Peer[] = [];
    const closedOrder: number[] = [];
    let stopping = false;
    // Half of them send nothing, half part of a request head and stop; each closed one reopens.
    const hog = async (i: number): Promise<void> => {
      const p = await peer(port, i % 2 === 0 ? undefined : 'GET /metrics HTTP/1.1\r\nHost: x');
      hogs.push(p);
      void p.closed.then(() => {
        closedOrder.push(i);
        if (!stopping) void hog(i + CAP).catch(() => undefined);
      });
    };
    try {
      for (let i = 0; i < CAP; i++) await hog(i);
      await connections(s, CAP);
      for (let round = 0; round < 3; round++) {
        const r = await scrape(port);
        assert.equal(r.status, 200, `scrape ${round} answered`);
        assert.match(r.body, /^# HELP /m);
      }
      // The first slot given up was the one that had waited longest.
      assert.equal(closedOrder[0], 0);
    } finally {
      stopping = true;
      for (const h of hogs) h.socket.destroy();
      await s.close();
    }
  });

  it('the cap is in force: with a request in progress on every slot, a new connection is closed unanswered', async () => {
    const real = source();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    // The real source, held back so that the requests stay in progress until the test lets go.
    const held = Object.create(real) as MetricsSource;
    held.collect = async (now?: Date) => {
      await gate;
      return real.collect(now);
    };
    const s = await serve(held);
    let requests = 0;
    s.server.on('request', () => requests++);
    try {
      const port = s.address.port;
      const scrapers: Peer[] = [];
      for (let i = 0; i < CAP; i++)
        scrapers.push(await peer(port, 'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n'));
      // Waits until every head has been parsed: each connection then has a request in progress.
      while (requests < CAP) await new Promise((r) => setTimeout(r, 10));
      const late = await peer(port);
      await late.closed;
      assert.equal(late.received, '', 'the connection over the cap got no answer');
      assert.ok(
        scrapers.every((p) => !p.isClosed()),
        'no request in progress was given up',
      );
      release();
      for (const p of scrapers) {
        while (!/\r\n\r\n[\s\S]*# HELP/.test(p.received))
          await new Promise((r) => setTimeout(r, 10));
        assert.match(p.received, /^HTTP\/1\.1 200 OK\r\n/);
        p.socket.destroy();
      }
    } finally {
      release();
      await s.close();
    }
  });
});
