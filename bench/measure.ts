/** What every benchmark measures with: the median of samples, and one command's wall time. */
import { spawnSync } from 'node:child_process';

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/**
 * Wall seconds of one command (stdout ignored; a failure throws with its
 * stderr). Each starts with no dirty pages left by the one before, so
 * writeback of earlier runs does not throttle whichever runs next.
 */
export function timed(cmd: string, args: string[], env: Record<string, string> = {}): number {
  spawnSync('sync');
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ...env },
  });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return s;
}
