import { promises as fs } from 'node:fs';
import { MvmError } from '../errors.js';
import { processAlive } from './process.js';

/**
 * A lock file held for a few milliseconds around a short critical section
 * (swapping the revocation pair, chaining an audit record). A lock left by a
 * process that is gone (kill -9) is taken over; one held longer than 10 s by a
 * live process is a store error. Node has no flock(2); the known gap: two
 * waiters that find the same dead holder at once can both take over.
 */
export async function withLock<T>(path: string, what: string, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      const fh = await fs.open(path, 'wx', 0o600);
      await fh.write(String(process.pid));
      await fh.close();
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new MvmError('store', `Cannot lock ${path}`, { cause: (e as Error).message });
      }
      const holder = Number(await fs.readFile(path, 'utf8').catch(() => '0'));
      if (holder > 0 && !processAlive(holder)) {
        await fs.rm(path, { force: true });
        continue;
      }
      if (Date.now() > deadline) {
        throw new MvmError('store', `${what} is locked by process ${holder}`, {
          cause: 'another mvmctl is updating it, or hung while doing so',
          fix: `Retry; if no mvmctl is running, remove ${path}.`,
        });
      }
      await new Promise((r) => setTimeout(r, 5 + Math.random() * 15));
    }
  }
  try {
    return await fn();
  } finally {
    await fs.rm(path, { force: true });
  }
}
