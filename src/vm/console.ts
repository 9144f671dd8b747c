/**
 * The door into a running dev VM (SPEC.md section 8): `dev console` attaches
 * to QEMU's console socket, and `dev logs -f` follows the console's log.
 *
 * The console is only opened after the VM is confirmed running and ours (pid
 * plus start time, src/vm/state.ts): a socket left by a dead VM, or a pid
 * reused by another process, is never mistaken for the VM.
 */
import { promises as fs } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import type { Config } from '../config.js';
import { MvmError } from '../errors.js';
import { consoleLines, LogCursor, TAIL_BYTES } from './console-log.js';
import { readVmState, statePaths, type VmState } from './state.js';

/** Ctrl-] (GS), the detach key of telnet and virsh console. */
export const DETACH_BYTE = 0x1d;
export const DEFAULT_IDLE_SECONDS = 2;
/** After piped stdin ends, output is copied at most this long (a guest printing forever). */
export const MAX_DRAIN_SECONDS = 30;
const FOLLOW_POLL_MS = 200;

/** The running VM's state, or the clear error that it is not running (exit 3). */
export async function requireRunningVm(config: Config, command: string): Promise<VmState> {
  const current = await readVmState(config);
  if (current.liveness === 'running' && current.state) return current.state;
  const why =
    current.liveness === 'stale'
      ? `its state is stale: ${current.staleReason ?? 'QEMU is gone'}`
      : 'stopped';
  const nothing =
    command === 'dev console' || command === 'dev shell' ? ': nothing to attach to' : '';
  throw new MvmError('input', `The dev VM is not running (${why})${nothing}`, {
    fix: `Start it with 'mvmctl dev up', then run 'mvmctl ${command}' again.`,
  });
}

/** Connects to the VM's console socket, after checking it is a socket of this user. */
export async function connectConsole(config: Config): Promise<Socket> {
  const path = statePaths(config).consoleSocket;
  const fail = (cause: string, underlying?: unknown) =>
    new MvmError('input', `Cannot attach to the dev VM's console ${path}`, {
      cause,
      fix: "Check 'mvmctl dev status'; if the VM stopped, start it with 'mvmctl dev up'.",
      underlying,
    });
  let st;
  try {
    st = await fs.lstat(path);
  } catch (e) {
    throw fail((e as Error).message, e);
  }
  if (!st.isSocket()) throw fail('it is not a unix socket');
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid)
    throw fail(`it is owned by uid ${st.uid}, not by this user (uid ${uid})`);
  return new Promise((resolve, reject) => {
    const socket = createConnection(path);
    socket.once('connect', () => {
      socket.off('error', onError);
      resolve(socket);
    });
    const onError = (e: Error) => reject(fail(e.message, e));
    socket.once('error', onError);
  });
}

export interface ConsoleStreams {
  readonly input: NodeJS.ReadableStream & {
    isTTY?: boolean;
    setRawMode?: (raw: boolean) => unknown;
  };
  readonly output: NodeJS.WritableStream;
  /** Where notes for the operator go (stderr): never mixed into the guest's output. */
  readonly notice: (text: string) => void;
}

export type ConsoleEnd = 'detached' | 'input-ended' | 'console-closed' | 'signal';

/**
 * Copies bytes both ways between the terminal and the console until the
 * operator detaches (Ctrl-] on a terminal), piped input ends and the guest
 * goes quiet for `idleSeconds`, the console closes, or a signal arrives. A
 * terminal is put in raw mode and always restored before this returns.
 */
export function runConsole(
  socket: Socket,
  io: ConsoleStreams,
  opts: { idleSeconds: number; /** Shown on a terminal once it is in raw mode. */ banner?: string },
): Promise<ConsoleEnd> {
  const tty = io.input.isTTY === true && typeof io.input.setRawMode === 'function';
  return new Promise<ConsoleEnd>((resolve, reject) => {
    let done = false;
    let idleTimer: NodeJS.Timeout | undefined;
    let capTimer: NodeJS.Timeout | undefined;
    const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
    const onSignal = () => finish('signal');
    const finish = (end: ConsoleEnd, error?: unknown) => {
      if (done) return;
      done = true;
      clearTimeout(idleTimer);
      clearTimeout(capTimer);
      for (const s of signals) process.off(s, onSignal);
      io.input.off('data', onInput);
      io.input.off('end', onInputEnd);
      socket.off('data', onOutput);
      socket.destroy();
      if (tty) io.input.setRawMode!(false);
      io.input.pause();
      if (error !== undefined) reject(error);
      else resolve(end);
    };
    const onOutput = (chunk: Buffer) => {
      io.output.write(chunk);
      if (idleTimer) idleTimer.refresh();
    };
    const onInput = (chunk: Buffer | string) => {
      const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      const at = tty ? bytes.indexOf(DETACH_BYTE) : -1;
      if (at < 0) {
        socket.write(bytes);
        return;
      }
      if (at > 0) socket.write(bytes.subarray(0, at));
      finish('detached');
    };
    const onInputEnd = () => {
      // The console is shared with the guest's shell: no EOF is sent (it would end that shell).
      idleTimer = setTimeout(() => finish('input-ended'), opts.idleSeconds * 1000);
      capTimer = setTimeout(
        () => finish('input-ended'),
        Math.max(MAX_DRAIN_SECONDS, opts.idleSeconds) * 1000,
      );
    };
    for (const s of signals) process.on(s, onSignal);
    socket.on('data', onOutput);
    socket.once('close', () => finish('console-closed'));
    socket.once('error', (e) => finish('console-closed', e));
    try {
      if (tty) {
        io.input.setRawMode!(true);
        // Raw mode turns off output processing too: a line break needs its carriage return.
        if (opts.banner !== undefined) io.notice(`${opts.banner}\r\n`);
      }
    } catch (e) {
      finish('console-closed', e);
      return;
    }
    io.input.on('data', onInput);
    io.input.once('end', onInputEnd);
    io.input.resume();
  });
}

/** More than the 4,096 characters a display line shows, in any UTF-8 (4 bytes a character at most). */
export const MAX_PARTIAL_BYTES = 4 * 4096 + 4;

/** A line longer than what was kept of it: its display says how long it really was. */
const cutLine = (line: string, bytes: number): string =>
  `${line.replace(/…\(\d+ more characters\)$/, '')}…(a line of ${bytes} bytes, cut)`;

export interface FollowOptions {
  /** How many existing lines to show first. */
  readonly lines: number;
  /** Whether the VM still runs; following stops (after a last read) once it does not. */
  readonly running: () => Promise<boolean>;
  /** Receives escaped display lines. */
  readonly emit: (lines: string[]) => void;
  readonly signal: AbortSignal;
  readonly pollMs?: number;
}

/**
 * `dev logs -f`: the last lines of the console log, then each new line as it
 * is written, escaped like `dev logs`, until the VM stops or `signal` aborts.
 * A partial line is held until its end arrives (or following stops).
 */
export async function followConsoleLog(
  path: string,
  opts: FollowOptions,
): Promise<'stopped' | 'interrupted'> {
  let pending = Buffer.alloc(0);
  // Bytes of the held partial line left out: a line shows at most 4,096 characters, so more
  // than MAX_PARTIAL_BYTES of one is never kept (a guest printing one endless line).
  let dropped = 0;
  let first = true;
  const take = (bytes: Buffer, all: boolean): string[] => {
    const data = pending.length === 0 ? bytes : Buffer.concat([pending, bytes]);
    const end = all ? data.length : data.lastIndexOf(0x0a) + 1;
    const lines = end > 0 ? consoleLines(data.subarray(0, end).toString('utf8')) : [];
    if (end > 0 && dropped > 0) {
      const firstEnd = data.indexOf(0x0a);
      lines[0] = cutLine(
        lines[0] ?? '',
        dropped + (firstEnd < 0 || firstEnd > end ? end : firstEnd),
      );
      dropped = 0;
    }
    const rest = data.subarray(end);
    if (rest.length > MAX_PARTIAL_BYTES) dropped += rest.length - MAX_PARTIAL_BYTES;
    // A copy, so the large read it came from is not kept alive by a view into it.
    pending = Buffer.from(rest.subarray(0, MAX_PARTIAL_BYTES));
    return lines;
  };
  const cursor = new LogCursor(path);
  const read = async (all: boolean): Promise<string[]> => {
    if (first) {
      // Start at the last TAIL_BYTES, on a line boundary, and show only the last `lines`.
      first = false;
      const { data, whole } = await cursor.tail(TAIL_BYTES);
      const lines = take(whole ? data : data.subarray(data.indexOf(0x0a) + 1), all);
      return opts.lines === 0 ? [] : lines.slice(-opts.lines);
    }
    const out: string[] = [];
    for (;;) {
      const { data, restarted } = await cursor.next(1024 * 1024);
      // Started again: dev up began a new boot's log.
      if (restarted) pending = Buffer.alloc(0);
      if (data.length === 0) break;
      out.push(...take(data, false));
    }
    if (all) out.push(...take(Buffer.alloc(0), true));
    return out;
  };
  const emit = (lines: string[]) => {
    if (lines.length > 0) opts.emit(lines);
  };
  emit(await read(false));
  for (;;) {
    if (opts.signal.aborted) {
      emit(await read(true));
      return 'interrupted';
    }
    if (!(await opts.running())) {
      emit(await read(true));
      return 'stopped';
    }
    emit(await read(false));
    await new Promise<void>((resolve) => {
      const wake = () => {
        clearTimeout(t);
        opts.signal.removeEventListener('abort', wake);
        resolve();
      };
      const t = setTimeout(wake, opts.pollMs ?? FOLLOW_POLL_MS);
      opts.signal.addEventListener('abort', wake);
    });
  }
}
