/**
 * A one-line progress bar on stderr (terminals only): bytes, percentage, rate
 * and time left, summed over the files moving at once. Redrawn at most ten
 * times a second; cleared before any other line is written.
 */
import { formatBytes } from './render.js';

function humanSeconds(s: number): string {
  if (!Number.isFinite(s)) return '--';
  if (s < 60) return `${Math.ceil(s)}s`;
  const m = Math.floor(s / 60);
  return m < 60
    ? `${m}m${String(Math.ceil(s % 60)).padStart(2, '0')}s`
    : `${Math.floor(m / 60)}h${m % 60}m`;
}

export interface ProgressBar {
  update(key: string, bytes: number, total: number | undefined): void;
  clear(): void;
}

export function progressBar(
  label: string,
  write = (t: string) => process.stderr.write(t),
): ProgressBar {
  const files = new Map<string, { bytes: number; total: number | undefined; first: number }>();
  const started = Date.now();
  let last = 0;
  let shown = false;
  return {
    update(key, bytes, total) {
      const f = files.get(key);
      // Bytes already on disk when a file first reports (a resumed partial) are not part of the rate.
      files.set(key, { bytes, total, first: f ? f.first : bytes });
      const now = Date.now();
      if (now - last < 100) return;
      last = now;
      let done = 0;
      let all = 0;
      let moved = 0;
      let known = true;
      for (const v of files.values()) {
        done += v.bytes;
        moved += v.bytes - v.first;
        if (v.total === undefined) known = false;
        else all += v.total;
      }
      const rate = moved / Math.max((now - started) / 1000, 0.001);
      const width = 24;
      const pct = known && all > 0 ? Math.min(100, Math.floor((done / all) * 100)) : undefined;
      const bar =
        pct === undefined
          ? ''.padEnd(width, '?')
          : '#'.repeat(Math.floor((pct / 100) * width)).padEnd(width);
      const eta = known && rate > 0 ? humanSeconds((all - done) / rate) : '--';
      write(
        `\r\x1b[2K  ${label} [${bar}] ${pct === undefined ? ' ? ' : String(pct).padStart(3)}%  ${formatBytes(done)}${known ? ` / ${formatBytes(all)}` : ''}  ${formatBytes(rate)}/s  ETA ${eta}`,
      );
      shown = true;
    },
    clear() {
      if (shown) write('\r\x1b[2K');
      shown = false;
    },
  };
}
