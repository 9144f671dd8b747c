/**
 * The dev VM's guest agent channel: the QEMU guest agent protocol (the one
 * Debian's, Ubuntu's and Fedora's `qemu-guest-agent` speak) over the
 * virtio-serial port `org.qemu.guest_agent.0`, which QEMU serves on the unix
 * socket `agent.sock` in the VM's state directory.
 *
 * The guest is untrusted and the channel is a byte pipe with no framing of
 * its own: the agent may be absent (nothing answers), slow, restarted
 * mid-reply (half a line, then a new agent), or replaced by something that
 * sends garbage. So every read is bounded (a line longer than
 * AGENT_MAX_LINE_BYTES closes the channel), every call has a deadline, and
 * after anything unexpected the next call resynchronises first with
 * `guest-sync-delimited`: a 0xFF byte resets the agent's parser, its answer
 * is preceded by 0xFF, and everything before that byte (stale answers, a
 * dead agent's half line) is dropped. What the agent returns is data for the
 * caller to check; nothing here interprets it beyond JSON.
 */
import { randomInt } from 'node:crypto';
import { createConnection, type Socket } from 'node:net';
import { MvmError } from '../errors.js';

/** Longest line accepted from the agent: a guest-file-read of FILE_READ_BYTES, base64, with room. */
export const AGENT_MAX_LINE_BYTES = 4 * 1024 * 1024;
/** How long one call waits for its answer unless the caller says otherwise. */
export const AGENT_CALL_TIMEOUT_MS = 10_000;
const DELIMITER = 0xff;
const NEWLINE = 0x0a;

const agentError = (message: string, cause: string, fix?: string): MvmError =>
  new MvmError('agent', message, {
    cause,
    fix:
      fix ??
      "Check that the image runs qemu-guest-agent on the virtio-serial port org.qemu.guest_agent.0 (Debian and Ubuntu: apt-get install qemu-guest-agent); mvmctl dev logs shows the guest's console.",
  });

/** An error the agent itself answered with (`{"error": {"class", "desc"}}`): bounded, as data. */
export class AgentCommandError extends MvmError {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super('agent', `The guest agent refused ${command}: ${desc}`, {
      cause: `it answered ${errorClass}`,
    });
  }
}

/**
 * The agent's socket, used in short sessions: QEMU serves one client at a
 * time on it (the next waits in the listen backlog until the first
 * disconnects), so a `dev exec` that held its connection for a 20-minute
 * build would lock every other out. Each session connects, resynchronises,
 * makes its calls and disconnects; a long command is followed by many short
 * sessions, and others fit in between.
 */
export class AgentChannel {
  constructor(readonly path: string) {}

  async session<T>(fn: (agent: GuestAgent) => Promise<T>): Promise<T> {
    const agent = await GuestAgent.connect(this.path);
    try {
      return await fn(agent);
    } finally {
      agent.close();
    }
  }
}

export class GuestAgent {
  private buf: Buffer = Buffer.alloc(0);
  private closedReason: string | undefined;
  private wake: (() => void) | undefined;
  /** Set after a timeout or anything unexpected: the next call resynchronises first. */
  private needsSync = true;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly socket: Socket,
    readonly path: string,
  ) {
    socket.on('data', (chunk: Buffer) => {
      this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
      if (this.buf.length > AGENT_MAX_LINE_BYTES && this.buf.indexOf(NEWLINE) < 0)
        this.fail(`it sent more than ${AGENT_MAX_LINE_BYTES} bytes without ending a line`);
      this.wake?.();
    });
    socket.on('error', (e) => this.fail(e.message));
    socket.on('close', () => this.fail('the channel closed (QEMU exited)'));
  }

  /** Connects to the agent's socket; nothing is sent until the first call. */
  static async connect(path: string): Promise<GuestAgent> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = createConnection(path);
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    }).catch((e: NodeJS.ErrnoException) => {
      throw agentError(
        `Cannot reach the dev VM's guest agent channel ${path}`,
        e.code === 'ENOENT' || e.code === 'ECONNREFUSED'
          ? 'QEMU is not serving it (the VM is not running, or was started by an mvmctl without the agent channel)'
          : e.message,
        'Start the VM with mvmctl dev up (mvmctl dev down first if it was started by an older mvmctl).',
      );
    });
    return new GuestAgent(socket, path);
  }

  /** The channel is gone (QEMU closed it, or an unbounded line closed it): connect again. */
  get isClosed(): boolean {
    return this.closedReason !== undefined;
  }

  close(): void {
    this.closedReason ??= 'closed by mvmctl';
    this.socket.destroy();
  }

  /**
   * Runs `command` and returns what the agent answered in `return`. Calls are
   * queued: the protocol has one outstanding command at a time. `timeoutMs`
   * bounds the whole call, resynchronisation included.
   */
  call<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    timeoutMs: number = AGENT_CALL_TIMEOUT_MS,
  ): Promise<T> {
    const run = async (): Promise<T> => {
      const deadline = Date.now() + timeoutMs;
      if (this.needsSync) await this.sync(deadline);
      this.needsSync = true; // until the answer is read whole
      this.write(
        Buffer.from(JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}) })),
      );
      const answer = await this.readAnswer(command, deadline);
      this.needsSync = false;
      return answer as T;
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  /**
   * Readiness: a guest-sync-delimited with a new id every `everyMs`, until
   * the agent echoes any of them (true) or `stopped()` (false). While a
   * guest boots, what is written before its agent opens the port is lost,
   * and once it runs under emulation an answer can take longer than the
   * interval: so an answer to an earlier probe counts too, and no probe
   * waits for its own. Everything but a delimited JSON object echoing one of
   * our ids is dropped. The channel is left needing a resync (the agent may
   * still answer the other probes).
   */
  async answersSync(everyMs: number, stopped: () => boolean): Promise<boolean> {
    const sent = new Set<number>();
    this.needsSync = true;
    this.buf = Buffer.alloc(0);
    let next = 0;
    while (!stopped()) {
      if (Date.now() >= next) {
        const id = randomInt(1, 2 ** 47);
        sent.add(id);
        this.sendSync(id);
        next = Date.now() + everyMs;
      }
      for (;;) {
        const at = this.buf.indexOf(DELIMITER);
        if (at < 0) {
          this.buf = Buffer.alloc(0);
          break;
        }
        const nl = this.buf.indexOf(NEWLINE, at + 1);
        if (nl < 0) {
          this.buf = this.buf.subarray(at); // the rest of this answer is still to come
          break;
        }
        const line = this.buf.subarray(at + 1, nl).toString('utf8');
        this.buf = this.buf.subarray(nl + 1);
        if (sent.has(echoedId(line) ?? 0)) return true;
      }
      try {
        await this.waitForData('guest-sync-delimited', next);
      } catch (e) {
        if (this.closedReason !== undefined) throw e; // else: no answer yet, ask again
      }
    }
    return false;
  }

  /** guest-sync-delimited: drop everything up to the agent's 0xFF, then its answer must echo our id. */
  private async sync(deadline: number): Promise<void> {
    const id = randomInt(1, 2 ** 47);
    this.buf = Buffer.alloc(0);
    this.sendSync(id);
    for (;;) {
      const at = this.buf.indexOf(DELIMITER);
      if (at >= 0) {
        this.buf = this.buf.subarray(at + 1);
        const answer = await this.readAnswer('guest-sync-delimited', deadline);
        if (answer === id) return;
        // An answer to an earlier sync (a restarted agent, a timed-out call): keep looking.
        continue;
      }
      this.buf = Buffer.alloc(0); // garbage or stale answers before the delimiter
      await this.waitForData('guest-sync-delimited', deadline);
    }
  }

  private async readAnswer(command: string, deadline: number): Promise<unknown> {
    for (;;) {
      const nl = this.buf.indexOf(NEWLINE);
      if (nl >= 0) {
        const line = this.buf.subarray(0, nl).toString('utf8').trim();
        this.buf = this.buf.subarray(nl + 1);
        if (line === '') continue;
        let msg: unknown;
        try {
          msg = JSON.parse(line);
        } catch {
          throw this.garbled(command, 'a line that is not JSON');
        }
        if (msg === null || typeof msg !== 'object' || Array.isArray(msg))
          throw this.garbled(command, 'an answer that is not a JSON object');
        const m = msg as { return?: unknown; error?: { class?: unknown; desc?: unknown } };
        if ('return' in m) return m.return;
        if (m.error && typeof m.error === 'object') {
          this.needsSync = false;
          throw new AgentCommandError(
            command,
            String(m.error.class ?? 'an error').slice(0, 100),
            String(m.error.desc ?? '').slice(0, 1000),
          );
        }
        throw this.garbled(command, 'an answer with neither return nor error');
      }
      await this.waitForData(command, deadline);
    }
  }

  private garbled(command: string, what: string): MvmError {
    this.needsSync = true;
    return agentError(
      `The guest agent answered ${command} with ${what}`,
      'the channel carries something that is not a QEMU guest agent, or the agent restarted mid-answer',
    );
  }

  private waitForData(command: string, deadline: number): Promise<void> {
    if (this.closedReason !== undefined)
      return Promise.reject(
        agentError(`The guest agent channel closed during ${command}`, this.closedReason),
      );
    const left = deadline - Date.now();
    if (left <= 0) return Promise.reject(this.timedOut(command));
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.wake = undefined;
        reject(this.timedOut(command));
      }, left);
      this.wake = () => {
        clearTimeout(timer);
        this.wake = undefined;
        if (this.closedReason !== undefined)
          reject(agentError(`The guest agent channel closed during ${command}`, this.closedReason));
        else resolve();
      };
    });
  }

  private timedOut(command: string): MvmError {
    this.needsSync = true;
    return agentError(
      `The guest agent did not answer ${command} in time`,
      'no agent runs in the guest, it is still starting, or it is busy',
    );
  }

  /** A guest-sync-delimited request, behind the 0xFF that resets the agent's parser. */
  private sendSync(id: number): void {
    this.write(
      Buffer.concat([
        Buffer.from([DELIMITER]),
        Buffer.from(JSON.stringify({ execute: 'guest-sync-delimited', arguments: { id } })),
      ]),
    );
  }

  private write(bytes: Buffer): void {
    if (this.closedReason === undefined) this.socket.write(bytes);
  }

  private fail(reason: string): void {
    if (this.closedReason !== undefined) return;
    this.closedReason = reason;
    this.buf = Buffer.alloc(0);
    this.socket.destroy();
    this.wake?.();
  }
}

/** The id a guest-sync answer line echoes (`{"return": ID}`); undefined for anything else. */
function echoedId(line: string): number | undefined {
  try {
    const m = JSON.parse(line) as unknown;
    if (m !== null && typeof m === 'object' && !Array.isArray(m)) {
      const id = (m as { return?: unknown }).return;
      if (Number.isSafeInteger(id)) return id as number;
    }
  } catch {
    // not JSON: not an answer
  }
  return undefined;
}
