/**
 * `./mvmctl`, how the README runs mvmctl from a checkout: on the Node.js that
 * `npm ci` installed, whatever Node.js comes first on the machine's PATH
 * (here a PATH with only the system directories, where Debian 12's Node.js 20
 * may sit), with nothing on stdout or stderr but mvmctl's own (no npm
 * EBADENGINE warnings), and mvmctl's exit status.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';

const WRAPPER = fileURLToPath(new URL('../mvmctl', import.meta.url));

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      WRAPPER,
      args,
      { env: { PATH: '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' }, cwd: '/' },
      (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('./mvmctl from a checkout', () => {
  it('prints only mvmctl’s output, from any directory, whatever node the PATH has', async () => {
    const v = await run(['--version']);
    assert.equal(v.code, 0, v.stderr);
    assert.match(v.stdout, /^\d+\.\d+\.\d+\n$/);
    assert.equal(v.stderr, '');
  });

  it('passes the exit status and stderr through', async () => {
    const r = await run(['dev', 'cp', 'a', 'b']);
    assert.equal(r.code, 2);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^Error: neither side of dev cp is in the guest\n/);
  });
});
