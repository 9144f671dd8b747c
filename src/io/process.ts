/**
 * Whether a process still exists: leftovers (staging objects, list
 * generations, locks) are only ever removed once the process that made them is
 * gone. EPERM means it exists under another user.
 */
export function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Runs a short helper (logger(1)) with `input` on its stdin. Never throws:
 * returns why it failed (not found, a non-zero exit with its stderr, or no
 * answer within the timeout, after which it is killed).
 */
export function runWithInput(
  command: string,
  args: readonly string[],
  input: string,
  timeoutMs: number,
): Promise<{ ok: true } | { ok: false; error: string }> {
  return new Promise((resolve) => {
    let stderr = '';
    let settled = false;
    const done = (r: { ok: true } | { ok: false; error: string }): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(r);
    };
    // Loaded on first use (getBuiltinModule): commands that never run a tool,
    // dev fetch among them, do not pay for node:child_process at start-up.
    const { spawn } = process.getBuiltinModule('node:child_process');
    const child = spawn(command, args, { stdio: ['pipe', 'ignore', 'pipe'] });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      done({ ok: false, error: `${command} did not finish within ${timeoutMs / 1000} s` });
    }, timeoutMs);
    child.stderr.on('data', (d: Buffer) => {
      if (stderr.length < 4096) stderr += d.toString();
    });
    child.on('error', (e) => done({ ok: false, error: `${command}: ${e.message}` }));
    child.stdin.on('error', () => undefined); // EPIPE when it exits early: its exit says why
    child.on('close', (code, signal) => {
      if (code === 0) return done({ ok: true });
      const why = stderr.trim();
      done({
        ok: false,
        error: why !== '' ? why : `${command} exited ${signal ?? code}`,
      });
    });
    child.stdin.end(input);
  });
}
