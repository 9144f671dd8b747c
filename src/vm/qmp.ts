/**
 * The one QMP client (vmtest's shape): connect to QEMU's control socket, read
 * the greeting, negotiate capabilities, run one command, with a deadline on
 * the whole exchange. Events arriving meanwhile are skipped.
 */
import { createConnection, type Socket } from 'node:net';

export class QmpError extends Error {}

export async function qmpExecute(
  socketPath: string,
  command: string,
  timeoutMs = 5_000,
): Promise<unknown> {
  const conn = createConnection(socketPath);
  conn.setEncoding('utf8');
  let buffer = '';
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  conn.on('data', (c: string) => {
    buffer += c;
    wake?.();
  });
  conn.on('error', (e) => {
    failure = e;
    wake?.();
  });
  conn.on('close', () => {
    failure ??= new QmpError('the QMP connection closed');
    wake?.();
  });
  const timer = setTimeout(() => {
    failure = new QmpError(`no QMP answer within ${timeoutMs / 1000} s`);
    wake?.();
  }, timeoutMs);
  const nextMessage = async (): Promise<Record<string, unknown>> => {
    for (;;) {
      const nl = buffer.indexOf('\n');
      if (nl >= 0) {
        const line = buffer.slice(0, nl).trim();
        buffer = buffer.slice(nl + 1);
        if (line === '') continue;
        return JSON.parse(line) as Record<string, unknown>;
      }
      if (failure) throw failure;
      await new Promise<void>((r) => (wake = r));
    }
  };
  const reply = async (): Promise<unknown> => {
    for (;;) {
      const m = await nextMessage();
      if ('error' in m) {
        const desc = (m['error'] as { desc?: unknown } | null)?.desc;
        throw new QmpError(`QMP error: ${typeof desc === 'string' ? desc : 'unknown'}`);
      }
      if ('return' in m) return m['return'];
    }
  };
  try {
    await nextMessage(); // greeting
    send(conn, { execute: 'qmp_capabilities' });
    await reply();
    send(conn, { execute: command });
    return await reply();
  } finally {
    clearTimeout(timer);
    conn.destroy();
  }
}

function send(conn: Socket, message: unknown): void {
  conn.write(JSON.stringify(message) + '\n');
}
