/**
 * `mvmctl dev exec`: one command in the guest through its agent, with its
 * exit status, stdout and stderr apart and streamed while it runs.
 *
 * The QEMU guest agent's guest-exec returns captured output only once the
 * command has exited, which would hold a 20-minute build's log back until the
 * end. So the command runs with its stdout and stderr redirected into two
 * files of a private directory in the guest, and those files are read with
 * guest-file-read while it runs (the way `tail -f` follows a log): the bytes
 * reach the host in the order each stream wrote them. stdin is handed to
 * guest-exec whole (`input-data`), bounded by MAX_STDIN_BYTES.
 *
 * The command runs in a session of its own (setsid, where the guest has it),
 * so stopping it (Ctrl-C, --timeout) signals its whole process group: a
 * `make -j` and its compilers, not only the shell that started them.
 *
 * Everything the guest returns is data: lengths are bounded, base64 is
 * decoded strictly, an exit status is a small integer or it is refused.
 */
import { randomBytes } from 'node:crypto';
import { MvmError } from '../errors.js';
import type { AgentChannel, GuestAgent } from './agent.js';
import {
  agentFailure as execError,
  DEFAULT_ENV,
  exitOf as resultOf,
  FILE_CHUNK_BYTES,
  openGuestFile,
  readGuestChunk,
  runInGuest as run,
  shq,
  sleep,
  type ExecStatus,
} from './guest-ops.js';

/** stdin is sent in one guest-exec request, so it is bounded. */
export const MAX_STDIN_BYTES = 16 * 1024 * 1024;

/** stdin past MAX_STDIN_BYTES: the one wording, for the CLI reading it and for guestExec. */
export const stdinTooLarge = (): MvmError =>
  new MvmError(
    'usage',
    `stdin is larger than ${MAX_STDIN_BYTES} bytes, the most dev exec passes to a command`,
    {
      fix: 'Put the data in a shared directory (mvmctl dev up --share DIR) and read it there, with -n.',
    },
  );
export const FILE_READ_BYTES = 1024 * 1024;
const POLL_MIN_MS = 20;
const POLL_MAX_MS = 250;
/** After SIGTERM, how long the command has before SIGKILL. */
const STOP_GRACE_MS = 3000;

export interface ExecRequest {
  readonly argv: readonly string[];
  /** `K=V` entries, added to (and overriding) DEFAULT_ENV. */
  readonly env?: readonly string[];
  readonly workdir?: string;
  readonly stdin?: Buffer;
  /** Wall-clock limit for the command; undefined: none. */
  readonly timeoutSeconds?: number;
}

export interface ExecSinks {
  readonly stdout: (chunk: Buffer) => void;
  readonly stderr: (chunk: Buffer) => void;
}

export interface ExecResult {
  /** The command's exit status; 128 + N when signal N ended it (as a shell reports it). */
  readonly exitCode: number;
  readonly signal?: number;
}

/**
 * Runs `req` in the guest; resolves with its exit status once it has exited
 * and every byte it wrote was delivered. `signal` (Ctrl-C, SIGTERM) stops the
 * guest command first, then rejects with an interrupted error.
 */
export async function guestExec(
  channel: AgentChannel,
  req: ExecRequest,
  sinks: ExecSinks,
  signal?: AbortSignal,
): Promise<ExecResult> {
  if (req.argv.length === 0) throw new MvmError('internal', 'guestExec without a command');
  if (req.stdin && req.stdin.length > MAX_STDIN_BYTES) throw stdinTooLarge();
  const dir = `/tmp/.mvmctl-exec-${randomBytes(8).toString('hex')}`;
  const handles = await channel.session(async (agent) => {
    await prepare(agent, dir, req.workdir);
    const pid = await start(agent, dir, req);
    return {
      pid,
      stdout: await openGuestFile(agent, `${dir}/out`, 'r'),
      stderr: await openGuestFile(agent, `${dir}/err`, 'r'),
    };
  });
  try {
    return await follow(channel, handles, req, sinks, signal);
  } finally {
    // Best effort: the files are the guest's, and a dead agent cannot remove them anyway.
    await channel
      .session(async (agent) => {
        for (const h of [handles.stdout, handles.stderr])
          await agent.call('guest-file-close', { handle: h }, 5000).catch(() => undefined);
        await run(agent, ['rm', '-rf', '--', dir], 5000);
      })
      .catch(() => undefined);
  }
}

/** The private directory and its two files, and the working directory checked, before the command starts. */
async function prepare(agent: GuestAgent, dir: string, workdir: string | undefined): Promise<void> {
  const script = [
    `mkdir -m 700 ${shq(dir)} || exit 101`,
    `: >${shq(`${dir}/out`)} && : >${shq(`${dir}/err`)} || exit 101`,
    ...(workdir !== undefined ? [`cd ${shq(workdir)} 2>/dev/null || exit 102`] : []),
  ].join('\n');
  const code = await run(agent, ['/bin/sh', '-c', script], 15_000);
  if (code === 101)
    throw execError(
      'The guest cannot hold the command’s output',
      `creating ${dir} in the guest failed (is /tmp writable there?)`,
    );
  if (code === 102)
    throw new MvmError(
      'usage',
      `--workdir ${JSON.stringify(workdir)} is not a directory in the guest`,
      {
        fix: 'Give --workdir an existing directory of the guest (an absolute path).',
      },
    );
  if (code !== 0)
    throw execError('The guest could not prepare the command', `its shell exited ${code}`);
}

async function start(agent: GuestAgent, dir: string, req: ExecRequest): Promise<number> {
  const out = shq(`${dir}/out`);
  const err = shq(`${dir}/err`);
  // guest-exec has no working directory of its own: the command starts through cd (checked by prepare).
  const cd = req.workdir !== undefined ? `cd ${shq(req.workdir)} || exit 126; ` : 'cd / ; ';
  const script = `${cd}if command -v setsid >/dev/null 2>&1; then exec setsid "$@" >${out} 2>${err}; else exec "$@" >${out} 2>${err}; fi`;
  const answer = await agent.call<{ pid?: unknown }>('guest-exec', {
    path: '/bin/sh',
    arg: ['-c', script, 'mvmctl-exec', ...req.argv],
    env: mergeEnv(req.env ?? []),
    ...(req.stdin && req.stdin.length > 0 ? { 'input-data': req.stdin.toString('base64') } : {}),
    'capture-output': false,
  });
  const pid = answer?.pid;
  if (!Number.isSafeInteger(pid) || (pid as number) <= 1)
    throw execError('The guest agent did not start the command', 'its answer names no process id');
  return pid as number;
}

/** DEFAULT_ENV with each K=V of the caller set over it (a later entry wins). */
export function mergeEnv(entries: readonly string[]): string[] {
  const byName = new Map<string, string>();
  for (const e of [...DEFAULT_ENV, ...entries]) byName.set(e.slice(0, e.indexOf('=')), e);
  return [...byName.values()];
}

async function follow(
  channel: AgentChannel,
  h: { readonly pid: number; readonly stdout: number; readonly stderr: number },
  req: ExecRequest,
  sinks: ExecSinks,
  signal: AbortSignal | undefined,
): Promise<ExecResult> {
  const deadline =
    req.timeoutSeconds !== undefined ? Date.now() + req.timeoutSeconds * 1000 : Infinity;
  let wait = POLL_MIN_MS;
  for (;;) {
    // One short session per round (see AgentChannel). Status first, then the files: once it
    // has exited, this round's drain gets every last byte.
    const { status, got } = await channel.session(async (agent) => {
      const status = await agent.call<ExecStatus>('guest-exec-status', { pid: h.pid });
      const got =
        (await drain(agent, h.stdout, sinks.stdout)) + (await drain(agent, h.stderr, sinks.stderr));
      return { status, got };
    });
    if (status?.exited === true) return resultOf(status);
    if (signal?.aborted) {
      await channel.session((agent) => stop(agent, h.pid)).catch(() => undefined);
      throw new MvmError('interrupted', 'dev exec was interrupted: the guest command was stopped');
    }
    if (Date.now() > deadline) {
      await channel.session((agent) => stop(agent, h.pid)).catch(() => undefined);
      throw execError(
        `The guest command ran longer than --timeout ${req.timeoutSeconds} s and was stopped`,
        'it was sent SIGTERM, then SIGKILL, with its process group',
        'Raise --timeout, or leave it out for no limit.',
      );
    }
    wait = got > 0 ? POLL_MIN_MS : Math.min(POLL_MAX_MS, wait * 2);
    await sleep(wait, signal);
  }
}

/** Reads what is new in a guest file into `sink`; the number of bytes delivered. */
async function drain(
  agent: GuestAgent,
  handle: number,
  sink: (b: Buffer) => void,
): Promise<number> {
  let total = 0;
  for (;;) {
    const bytes = await readGuestChunk(agent, handle);
    if (bytes.length === 0) return total;
    sink(bytes);
    total += bytes.length;
    if (bytes.length < FILE_CHUNK_BYTES) return total;
  }
}

/** SIGTERM to the command's process group, SIGKILL after STOP_GRACE_MS if it is still there. */
async function stop(agent: GuestAgent, pid: number): Promise<void> {
  const kill = (sig: string) =>
    run(
      agent,
      [
        '/bin/sh',
        '-c',
        `kill -${sig} -- -${pid} 2>/dev/null || kill -${sig} ${pid} 2>/dev/null; exit 0`,
      ],
      5000,
    ).catch(() => undefined);
  await kill('TERM');
  const until = Date.now() + STOP_GRACE_MS;
  while (Date.now() < until) {
    const s = await agent
      .call<ExecStatus>('guest-exec-status', { pid }, 5000)
      .catch(() => undefined);
    if (s?.exited === true) return;
    await sleep(100);
  }
  await kill('KILL');
}
