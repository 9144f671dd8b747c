/**
 * `mvmctl metrics --textfile DIR`: DIR/mvmctl.prom for node_exporter's
 * textfile collector. The collector may read the directory at any moment,
 * so the file is replaced whole: written under a temporary name the
 * collector ignores (it reads only `*.prom`), synced, then renamed over the
 * old one. Mode 0644: node_exporter runs as another user.
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { MvmError } from '../errors.js';
import { replaceFile } from '../io/files.js';

export const TEXTFILE_NAME = 'mvmctl.prom';

export async function writeTextfile(dir: string, text: string): Promise<string> {
  const st = await fs.stat(dir).catch((e: NodeJS.ErrnoException) => {
    throw new MvmError('input', `The textfile directory ${dir} cannot be used`, {
      cause: e.code === 'ENOENT' ? 'it does not exist' : e.message,
      fix: "Create it, or name node_exporter's --collector.textfile.directory (e.g. /var/lib/prometheus/node-exporter).",
    });
  });
  if (!st.isDirectory())
    throw new MvmError('input', `The textfile path ${dir} is not a directory`, {
      fix: "Name node_exporter's --collector.textfile.directory.",
    });
  const target = join(dir, TEXTFILE_NAME);
  try {
    // The temporary name does not end in .prom: the collector never reads a half-written file.
    await replaceFile(target, text, { mode: 0o644, sync: true });
  } catch (e) {
    throw new MvmError('store', `Cannot write ${target}`, {
      cause: (e as Error).message,
      fix: `The user running mvmctl needs write access to ${dir} (for example: setfacl -m u:$(id -un):rwx ${dir}).`,
      underlying: e,
    });
  }
  return target;
}
