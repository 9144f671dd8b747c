import { closeSync, openSync, writeSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

const MB = 1024 * 1024;

/** Writes a file of `mb` MiB of non-zero, non-repeating bytes (or a sparse one of that size). */
export function bigFile(path: string, mb: number, sparse = false): void {
  const fd = openSync(path, 'w');
  if (sparse) {
    closeSync(fd);
    execFileSync('truncate', ['-s', `${mb}M`, path]);
    return;
  }
  const chunk = Buffer.alloc(MB);
  for (let i = 0; i < mb; i++) {
    for (let j = 0; j < MB; j += 4096) chunk.writeUInt32LE(((i * 256 + j) ^ 0x9e3779b9) >>> 0, j);
    writeSync(fd, chunk);
  }
  closeSync(fd);
}
