/**
 * A bare QEMU guest agent client for the benches' yardsticks: what a script
 * would write by hand against the agent's unix socket. One JSON line out, one
 * back; nothing bounded, nothing checked beyond the sync. Never used against
 * a guest that is not the bench's own.
 */
import { createConnection, type Socket } from 'node:net';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class BareQga {
  private buf = '';
  private waiting: ((line: string) => void) | undefined;
  private constructor(private readonly s: Socket) {
    s.setEncoding('latin1').on('data', (d: string) => {
      this.buf += d;
      this.flush();
    });
  }

  /** Connects and synchronises (guest-sync-delimited) with an agent that is already up. */
  static async open(path: string): Promise<BareQga> {
    const s = createConnection(path);
    await new Promise((r) => s.once('connect', r));
    const q = new BareQga(s);
    const id = 1_000_000 + Math.floor(Math.random() * 1_000_000);
    s.write(
      `\xff${JSON.stringify({ execute: 'guest-sync-delimited', arguments: { id } })}`,
      'latin1',
    );
    // Lines before the answer to the sync are dropped: the agent's complaint about the 0xFF
    // itself, and its answers to a boot's readiness probes still queued (waitAnswering).
    for (let n = 0; !new RegExp(`"return": ?${id}\\b`).test(await q.line()); n++)
      if (n > 10_000) throw new Error('the guest agent does not answer guest-sync-delimited');
    return q;
  }

  /**
   * Waits for a booting guest's agent to answer: a guest-sync with a new id
   * every `everyMs` until an answer to any of them arrives (what was written
   * before the agent opened its port is answered late or never). Throws after
   * `boundMs` or when `alive()` says the VM is gone.
   */
  static async waitAnswering(
    path: string,
    o: { everyMs: number; boundMs: number; alive: () => Promise<boolean> },
  ): Promise<void> {
    const deadline = Date.now() + o.boundMs;
    const s = createConnection(path);
    await new Promise<void>((resolve, reject) => {
      s.once('connect', resolve);
      s.once('error', reject);
    });
    let answered = false;
    let seen = '';
    s.setEncoding('latin1').on('data', (d: string) => {
      seen = (seen + d).slice(-4096);
      if (/"return": ?\d+/.test(seen)) answered = true;
    });
    try {
      for (let id = 1; !answered; id++) {
        s.write(JSON.stringify({ execute: 'guest-sync', arguments: { id } }));
        const next = Date.now() + o.everyMs;
        while (!answered && Date.now() < next) await sleep(5);
        if (!answered && !(await o.alive()))
          throw new Error('the VM exited before its agent answered');
        if (Date.now() > deadline) throw new Error(`no guest agent answer on ${path}`);
      }
    } finally {
      s.destroy();
    }
  }

  private flush(): void {
    const nl = this.buf.indexOf('\n');
    if (nl >= 0 && this.waiting) {
      const line = this.buf.slice(0, nl).replace(/^\xff/, '');
      this.buf = this.buf.slice(nl + 1);
      const w = this.waiting;
      this.waiting = undefined;
      w(line);
    }
  }
  private line(): Promise<string> {
    return new Promise((r) => {
      this.waiting = r;
      this.flush();
    });
  }
  async call(execute: string, args?: unknown): Promise<unknown> {
    this.s.write(JSON.stringify({ execute, ...(args ? { arguments: args } : {}) }));
    return (JSON.parse(await this.line()) as { return: unknown }).return;
  }
  /** Sends without waiting for an answer (guest-shutdown gives none). */
  send(execute: string, args?: unknown): void {
    this.s.write(JSON.stringify({ execute, ...(args ? { arguments: args } : {}) }));
  }
  close(): void {
    this.s.destroy();
  }
}
