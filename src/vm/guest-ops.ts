/**
 * The few guest agent operations `dev exec` and `dev cp` are built from:
 * a helper command run to completion (its status, or its bounded output),
 * and guest files opened, read and written in chunks.
 *
 * Everything the agent answers is checked here before anyone uses it: a
 * handle is an integer, a count is in range and matches the decoded bytes,
 * an exit status is a small integer. A malformed answer is an `agent` error,
 * never a value passed on.
 */
import { MvmError } from '../errors.js';
import type { GuestAgent } from './agent.js';

/** How the command is found when the caller gives no PATH: Debian's default for root. */
export const DEFAULT_ENV: readonly string[] = [
  'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  'HOME=/root',
];
/** Bytes asked for per guest-file-read, and sent per guest-file-write (base64 stays under AGENT_MAX_LINE_BYTES). */
export const FILE_CHUNK_BYTES = 1024 * 1024;
/** Most output a helper command may return (a listing, a hash): more is refused, not truncated. */
const HELPER_OUTPUT_MAX_BYTES = 64 * 1024;

export interface ExecStatus {
  readonly exited: boolean;
  readonly exitcode?: unknown;
  readonly signal?: unknown;
  readonly 'out-data'?: unknown;
}

export const agentFailure = (message: string, cause: string, fix?: string): MvmError =>
  new MvmError('agent', message, { cause, ...(fix ? { fix } : {}) });

/** A shell word for the guest's /bin/sh: single-quoted, every ' closed and escaped. */
export const shq = (s: string): string => `'${s.replaceAll("'", `'\\''`)}'`;

/** An exit status as a shell reports it: the code, or 128 + the signal that ended it. */
export function exitOf(status: ExecStatus): { exitCode: number; signal?: number } {
  const small = (v: unknown): v is number =>
    Number.isSafeInteger(v) && (v as number) >= 0 && (v as number) < 256;
  if (small(status.exitcode)) return { exitCode: status.exitcode };
  if (small(status.signal)) return { exitCode: 128 + status.signal, signal: status.signal };
  throw agentFailure(
    'The guest agent reported no exit status for the command',
    'its status answer is malformed',
  );
}

/** A short helper command in the guest, to completion: its exit status and (when asked) its stdout. */
async function helper(
  agent: GuestAgent,
  argv: readonly string[],
  timeoutMs: number,
  capture: boolean,
): Promise<{ exitCode: number; stdout: Buffer }> {
  const deadline = Date.now() + timeoutMs;
  const started = await agent.call<{ pid?: unknown }>(
    'guest-exec',
    { path: argv[0], arg: argv.slice(1), env: DEFAULT_ENV, 'capture-output': capture },
    timeoutMs,
  );
  const pid = started?.pid;
  if (!Number.isSafeInteger(pid))
    throw agentFailure('The guest agent did not start a helper command', 'no process id');
  let wait = 5;
  for (;;) {
    const s = await agent.call<ExecStatus>(
      'guest-exec-status',
      { pid },
      Math.max(1, deadline - Date.now()),
    );
    if (s?.exited === true) {
      const out = s['out-data'];
      if (out !== undefined && (typeof out !== 'string' || out.length > HELPER_OUTPUT_MAX_BYTES))
        throw agentFailure(
          'A helper command in the guest returned output mvmctl does not accept',
          `${argv[0]}'s output is not base64 or is larger than ${HELPER_OUTPUT_MAX_BYTES} bytes`,
        );
      return {
        exitCode: exitOf(s).exitCode,
        stdout: typeof out === 'string' ? Buffer.from(out, 'base64') : Buffer.alloc(0),
      };
    }
    if (Date.now() > deadline)
      throw agentFailure(
        'A helper command in the guest did not finish in time',
        `${argv[0]} ran for ${timeoutMs} ms`,
      );
    await sleep(wait);
    wait = Math.min(100, wait * 2);
  }
}

/** Runs a helper command in the guest; its exit status. */
export async function runInGuest(
  agent: GuestAgent,
  argv: readonly string[],
  timeoutMs: number,
): Promise<number> {
  return (await helper(agent, argv, timeoutMs, false)).exitCode;
}

/** Runs a helper command in the guest; its exit status and stdout (bounded). */
export const captureInGuest = (
  agent: GuestAgent,
  argv: readonly string[],
  timeoutMs: number,
): Promise<{ exitCode: number; stdout: Buffer }> => helper(agent, argv, timeoutMs, true);

/** guest-file-open: the handle, checked to be one. `mode` is fopen's ('r', 'w'). */
export async function openGuestFile(
  agent: GuestAgent,
  path: string,
  mode: 'r' | 'w',
): Promise<number> {
  const handle = await agent.call<unknown>('guest-file-open', { path, mode });
  if (!Number.isSafeInteger(handle))
    throw agentFailure(
      `The guest agent did not open ${JSON.stringify(path)}`,
      'its answer is not a file handle',
    );
  return handle as number;
}

export const closeGuestFile = (agent: GuestAgent, handle: number): Promise<unknown> =>
  agent.call('guest-file-close', { handle });

/** One guest-file-read of at most `count` bytes; an empty buffer at the end of the file. */
export async function readGuestChunk(
  agent: GuestAgent,
  handle: number,
  count: number = FILE_CHUNK_BYTES,
): Promise<Buffer> {
  const r = await agent.call<{ count?: unknown; 'buf-b64'?: unknown }>('guest-file-read', {
    handle,
    count,
  });
  const n = r?.count;
  const b64 = r?.['buf-b64'];
  if (
    !Number.isSafeInteger(n) ||
    (n as number) < 0 ||
    (n as number) > count ||
    typeof b64 !== 'string'
  )
    throw agentFailure(
      'The guest agent returned a malformed file read',
      'count or data missing or out of range',
    );
  const bytes = Buffer.from(b64, 'base64');
  if (bytes.length !== n)
    throw agentFailure(
      'The guest agent returned a malformed file read',
      `it said ${String(n)} bytes and sent ${bytes.length}`,
    );
  return bytes;
}

/** guest-file-write of all of `bytes`: a short write is an error, not a silent loss. */
export async function writeGuestChunk(
  agent: GuestAgent,
  handle: number,
  bytes: Buffer,
): Promise<void> {
  const r = await agent.call<{ count?: unknown }>('guest-file-write', {
    handle,
    'buf-b64': bytes.toString('base64'),
  });
  if (r?.count !== bytes.length)
    throw agentFailure(
      'The guest did not take a whole write',
      `it wrote ${String(r?.count)} of ${bytes.length} bytes (is its disk full?)`,
    );
}

export const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
