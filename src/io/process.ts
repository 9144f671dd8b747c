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
