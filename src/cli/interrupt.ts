/**
 * Ctrl-C (SIGINT) and SIGTERM during long work (an import's copy, a
 * download). Left to Node's default, either signal kills the process on the
 * spot: the half-copied staging object (1.5 GB for a real rootfs) stays in
 * the store and nothing is recorded. While watched, the first signal aborts
 * `signal` (its reason is the signal's name), so the work stops its child
 * processes, removes what it half did, audits the interruption and fails with
 * `interrupted` (exit 130); a second signal quits at once, for an operator
 * who does not want to wait for the clean-up.
 */
import type { Output } from './render.js';

const SIGNALS = ['SIGINT', 'SIGTERM'] as const;

export interface Interrupts {
  /** Aborted by the first SIGINT or SIGTERM; its reason is the signal's name. */
  readonly signal: AbortSignal;
  /** Stops watching: the signals' default action again. */
  readonly release: () => void;
}

export function watchInterrupts(io: Output): Interrupts {
  const controller = new AbortController();
  const onSignal = (name: NodeJS.Signals): void => {
    if (controller.signal.aborted) {
      io.err(`${name} again: quitting now; what is left in the store is removed by the next run.`);
      process.exit(130);
    }
    io.err(`${name}: stopping and cleaning up (send it again to quit at once)...`);
    controller.abort(name);
  };
  for (const s of SIGNALS) process.on(s, onSignal);
  return {
    signal: controller.signal,
    release: () => {
      for (const s of SIGNALS) process.off(s, onSignal);
    },
  };
}

/** Runs `work` with the signal the first SIGINT or SIGTERM aborts, then gives the signals back. */
export async function whileInterruptible<T>(
  io: Output,
  work: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const interrupts = watchInterrupts(io);
  try {
    return await work(interrupts.signal);
  } finally {
    interrupts.release();
  }
}
