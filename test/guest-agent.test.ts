/**
 * The guest agent client against a misbehaving peer. The real qemu-guest-agent
 * is exercised end to end in dev-exec.test.ts; what it will not do on demand —
 * stay silent, send garbage, die mid-answer and come back, send an endless
 * line — is played here by a scripted peer on a real unix socket (a stand-in
 * for the guest side of QEMU's chardev, which is the only thing mocked).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AGENT_MAX_LINE_BYTES, AgentCommandError, GuestAgent } from '../src/vm/agent.js';
import { MvmError } from '../src/errors.js';

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'mvm-agent-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/**
 * A peer that hands each complete request (bytes up to the closing brace of
 * one JSON object, a leading 0xFF kept) to `reply`, which writes what it likes.
 */
async function peer(
  name: string,
  reply: (
    req: { raw: Buffer; msg: { execute: string; arguments?: { id?: number } } },
    s: Socket,
  ) => void,
): Promise<{ path: string; server: Server; requests: string[] }> {
  const path = join(dir, name);
  const requests: string[] = [];
  const server = createServer((s) => {
    let buf = Buffer.alloc(0);
    s.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      for (;;) {
        // Requests are JSON objects with no braces in strings; find where the first one ends.
        const text = buf.toString('latin1');
        let depth = 0;
        let stop = -1;
        for (let i = 0; i < text.length; i++) {
          if (text[i] === '{') depth++;
          else if (text[i] === '}' && --depth === 0) {
            stop = i + 1;
            break;
          }
        }
        if (stop < 0) break;
        const raw = buf.subarray(0, stop);
        buf = buf.subarray(stop);
        const json = raw.toString('latin1').replace(/^\xff/, '');
        const msg = JSON.parse(json) as { execute: string; arguments?: { id?: number } };
        requests.push(msg.execute);
        reply({ raw, msg }, s);
      }
    });
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(path, r));
  after(() => server.close());
  return { path, server, requests };
}

/** What a well-behaved agent answers. */
function answer(msg: { execute: string; arguments?: { id?: number } }, s: Socket): void {
  if (msg.execute === 'guest-sync-delimited')
    s.write(
      Buffer.concat([Buffer.from([0xff]), Buffer.from(`{"return": ${msg.arguments!.id}}\n`)]),
    );
  else if (msg.execute === 'guest-ping') s.write('{"return": {}}\n');
  else s.write(`{"error": {"class": "CommandNotFound", "desc": "no ${msg.execute}"}}\n`);
}

const agentFailure = (re: RegExp) => (e: unknown) =>
  e instanceof MvmError && e.code === 'agent' && re.test(e.message);

describe('guest agent client', () => {
  it('resynchronises first, then calls: the answer is what return holds', async () => {
    const p = await peer('ok.sock', ({ msg }, s) => answer(msg, s));
    const a = await GuestAgent.connect(p.path);
    try {
      assert.deepEqual(await a.call('guest-ping'), {});
      assert.deepEqual(await a.call('guest-ping'), {});
      // One sync for the session, not one per call, when nothing went wrong.
      assert.deepEqual(p.requests, ['guest-sync-delimited', 'guest-ping', 'guest-ping']);
    } finally {
      a.close();
    }
  });

  it("an agent's error answer is an AgentCommandError with its class, bounded", async () => {
    const p = await peer('err.sock', ({ msg }, s) => {
      if (msg.execute === 'guest-exec')
        s.write(`{"error": {"class": "GenericError", "desc": "${'x'.repeat(5000)}"}}\n`);
      else answer(msg, s);
    });
    const a = await GuestAgent.connect(p.path);
    try {
      await assert.rejects(a.call('guest-exec', { path: '/bin/true' }), (e: unknown) => {
        assert.ok(e instanceof AgentCommandError);
        assert.equal(e.errorClass, 'GenericError');
        assert.equal(e.desc.length, 1000);
        return true;
      });
      // The channel is still in step: no resync needed after a clean error answer.
      assert.deepEqual(await a.call('guest-ping'), {});
      assert.deepEqual(p.requests, ['guest-sync-delimited', 'guest-exec', 'guest-ping']);
    } finally {
      a.close();
    }
  });

  it('a silent agent times out with a clear error; nothing hangs', async () => {
    const p = await peer('silent.sock', () => undefined);
    const a = await GuestAgent.connect(p.path);
    try {
      await assert.rejects(
        a.call('guest-ping', undefined, 300),
        agentFailure(/^The guest agent did not answer guest-sync-delimited in time$/),
      );
    } finally {
      a.close();
    }
  });

  it('garbage and stale answers before the delimiter are dropped', async () => {
    let syncs = 0;
    const p = await peer('garbage.sock', ({ msg }, s) => {
      if (msg.execute === 'guest-sync-delimited' && syncs++ === 0) {
        // A dead agent's half line, a stale answer to some other sync, then the real one.
        s.write('{"return": {"pid": 12');
        s.write(Buffer.from([0xff]));
        s.write('{"return": 424242}\n');
        s.write('\x1b[2J noise \n');
      }
      answer(msg, s);
    });
    const a = await GuestAgent.connect(p.path);
    try {
      assert.deepEqual(await a.call('guest-ping'), {});
    } finally {
      a.close();
    }
  });

  it('a garbled answer fails the call, and the next call resynchronises (an agent restart)', async () => {
    let pings = 0;
    const p = await peer('restart.sock', ({ msg }, s) => {
      if (msg.execute === 'guest-ping' && pings++ === 0) s.write('{"retu\n');
      else answer(msg, s);
    });
    const a = await GuestAgent.connect(p.path);
    try {
      await assert.rejects(a.call('guest-ping'), agentFailure(/with a line that is not JSON$/));
      assert.deepEqual(await a.call('guest-ping'), {});
      assert.deepEqual(p.requests, [
        'guest-sync-delimited',
        'guest-ping',
        'guest-sync-delimited',
        'guest-ping',
      ]);
    } finally {
      a.close();
    }
  });

  it('answers that are JSON but not an agent answer are refused', async () => {
    for (const [name, line] of [
      ['array', '[1,2]'],
      ['null', 'null'],
      ['neither', '{"greeting": "hi"}'],
    ] as const) {
      const p = await peer(`${name}.sock`, ({ msg }, s) => {
        if (msg.execute === 'guest-ping') s.write(`${line}\n`);
        else answer(msg, s);
      });
      const a = await GuestAgent.connect(p.path);
      try {
        await assert.rejects(
          a.call('guest-ping'),
          agentFailure(/^The guest agent answered guest-ping with an/),
        );
      } finally {
        a.close();
      }
    }
  });

  it('a line longer than the bound closes the channel instead of growing the buffer', async () => {
    const p = await peer('flood.sock', ({ msg }, s) => {
      if (msg.execute === 'guest-ping') {
        const chunk = Buffer.alloc(1024 * 1024, 0x41);
        for (let i = 0; i <= AGENT_MAX_LINE_BYTES / chunk.length; i++) s.write(chunk);
      } else answer(msg, s);
    });
    const a = await GuestAgent.connect(p.path);
    try {
      await assert.rejects(
        a.call('guest-ping', undefined, 30_000),
        (e: unknown) =>
          e instanceof MvmError &&
          e.code === 'agent' &&
          /^The guest agent channel closed during guest-ping$/.test(e.message) &&
          /without ending a line/.test(e.cause ?? ''),
      );
    } finally {
      a.close();
    }
  });

  it('no socket: a clear error naming the channel and dev up', async () => {
    await assert.rejects(GuestAgent.connect(join(dir, 'absent.sock')), (e: unknown) => {
      assert.ok(e instanceof MvmError && e.code === 'agent');
      assert.match(e.message, /^Cannot reach the dev VM's guest agent channel .*absent\.sock$/);
      assert.match(e.fix ?? '', /mvmctl dev up/);
      return true;
    });
  });

  it(
    'readiness (answersSync): probes are repeated until one is answered; a late answer to an earlier probe counts',
    { timeout: 10_000 },
    async () => {
      // A booting guest: the first three probes are lost (no agent on the port yet); the fourth is
      // answered twice as slowly as probes are sent, so only the answer to an earlier probe arrives
      // before the next probe: it counts.
      const probes: number[] = [];
      const p = await peer('booting.sock', ({ msg }, s) => {
        probes.push(msg.arguments!.id!);
        if (probes.length === 4)
          setTimeout(() => {
            s.write('garbage the port held\n{"return": 12345}\n'); // not delimited, not ours: dropped
            s.write(Buffer.from([0xff]));
            s.write(`{"return": ${probes[3]}`); // an answer split across writes
            setTimeout(() => s.write('}\n'), 20);
          }, 100);
      });
      const a = await GuestAgent.connect(p.path);
      try {
        assert.equal(await a.answersSync(40, () => false), true);
        assert.ok(
          probes.length >= 5,
          `probes kept coming while the answer was slow: ${probes.length}`,
        );
        assert.equal(new Set(probes).size, probes.length, 'each probe has an id of its own');
        assert.deepEqual(new Set(p.requests), new Set(['guest-sync-delimited']));
      } finally {
        a.close();
      }
    },
  );

  it(
    'readiness (answersSync): answers that echo no probe of ours never count; stopping ends it',
    { timeout: 10_000 },
    async () => {
      const p = await peer('liar.sock', ({ msg }, s) => {
        const id = msg.arguments!.id!;
        s.write(Buffer.from([0xff]));
        s.write(`{"return": ${id + 1}}\n`); // the wrong id
        s.write(Buffer.from([0xff]));
        s.write(`{"return": "${id}"}\n`); // the id as a string
        s.write(Buffer.from([0xff]));
        s.write(`[${id}]\n`);
      });
      const a = await GuestAgent.connect(p.path);
      let stop = false;
      setTimeout(() => (stop = true), 300);
      try {
        assert.equal(await a.answersSync(30, () => stop), false);
        assert.ok(p.requests.length >= 3, String(p.requests.length));
      } finally {
        a.close();
      }
    },
  );

  it(
    'readiness (answersSync): a channel that closes rejects, so the probe connects again',
    { timeout: 10_000 },
    async () => {
      const p = await peer('closing.sock', (_req, s) => s.destroy());
      const a = await GuestAgent.connect(p.path);
      await assert.rejects(
        a.answersSync(30, () => false),
        (e: unknown) => e instanceof MvmError && e.code === 'agent' && /closed/.test(e.message),
      );
      a.close();
    },
  );
});
