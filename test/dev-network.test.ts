/**
 * `mvmctl dev up --network` through the built CLI, booting the real test guest under QEMU
 * (software emulation), with a loopback-only HTTP server on this host standing in for
 * `metrics serve` or a developer's database:
 * - `user` (the default): the guest reaches it at 10.0.2.2, as documented;
 * - `restricted`: the guest cannot, and a `--port` forward still reaches the guest's httpd.
 * `none` (no network device at all) is covered by the argument tests in vm-spec.test.ts.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLI, type CliResult } from './support/cli.js';
import type { TestHost } from './support/host.js';
import { freePort, GUEST_PAGE_TEXT, hostWithTestGuest, READY_LINE } from './support/vm.js';

// Bounds on waiting for events on a loaded 2-core host under software emulation, not timing
// assertions.
const UP_TIMEOUT_S = '120';
const CLI_TIMEOUT_MS = 300_000;

let root: string;
let host: TestHost;
let vmDir: string;
let loopback: Server;
let loopbackPort: number;
/** What only the loopback-only server answers: seen in the guest's console only if it got through. */
const SECRET = 'loopback-only-5e1d';

before(async () => {
  // Short: the VM's sockets live under it, and a unix socket path is limited to 107 bytes.
  root = mkdtempSync(join(tmpdir(), 'mvm-net-'));
  ({ host, vmDir } = await hostWithTestGuest(root));
  loopback = createServer((_req, res) => res.end(`${SECRET}\n`));
  await new Promise<void>((resolve) => loopback.listen(0, '127.0.0.1', resolve));
  loopbackPort = (loopback.address() as { port: number }).port;
});

after(async () => {
  if (host) await dev(['down', '--timeout', '5']);
  loopback?.close();
  if (root) rmSync(root, { recursive: true, force: true });
});

function dev(args: string[], stdin?: string): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [CLI, 'dev', ...args],
      { env: { ...process.env, ...host.env }, timeout: CLI_TIMEOUT_MS },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    child.stdin!.end(stdin ?? '');
  });
}

/** Waits (for the text, not for a time) until console.log contains `text`. */
async function logContains(text: string): Promise<string> {
  for (;;) {
    const log = existsSync(join(vmDir, 'console.log'))
      ? readFileSync(join(vmDir, 'console.log'), 'latin1')
      : '';
    if (log.includes(text)) return log;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Has the guest fetch the host's loopback server at 10.0.2.2; returns what the console showed. */
async function guestFetchesHostLoopback(tag: string): Promise<string> {
  // The marker is computed in the guest, so it appears only once nc has finished.
  const con = await dev(
    ['console', '--idle', '3'],
    `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 10.0.2.2 ${loopbackPort}; echo; echo ${tag}-$((30+3))\n`,
  );
  assert.equal(con.code, 0, con.stderr);
  const log = await logContains(`${tag}-33`);
  return log.slice(log.lastIndexOf(`nc -w 5`));
}

const upArgs = ['--ready-line', READY_LINE, '--accel', 'tcg', '--timeout', UP_TIMEOUT_S];

describe('dev up --network', () => {
  it("user (the default): the guest reaches this host's loopback services at 10.0.2.2", async () => {
    const up = await dev(['up', ...upArgs, '--json']);
    assert.equal(up.code, 0, up.stderr);
    const seen = await guestFetchesHostLoopback('USER-DONE');
    assert.match(seen, new RegExp(SECRET), 'the loopback-only server answered the guest');
    assert.match(seen, /HTTP\/1\.1 200 OK/);
    const down = await dev(['down', '--timeout', '30']);
    assert.equal(down.code, 0, down.stderr);
  });

  it('restricted: the guest cannot reach it; a --port forward still reaches the guest', async () => {
    const port = await freePort();
    const up = await dev(['up', ...upArgs, '--network', 'restricted', '--port', `${port}:80`]);
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stdout, /, network restricted, ports /);
    const status = await dev(['status', '--json']);
    assert.equal((JSON.parse(status.stdout) as { network: string }).network, 'restricted');
    assert.match((await dev(['status'])).stdout, /^network: +restricted$/m);
    const seen = await guestFetchesHostLoopback('RESTRICTED-DONE');
    assert.doesNotMatch(seen, new RegExp(SECRET), 'nothing came back from host loopback');
    assert.doesNotMatch(seen, /HTTP\/1\.1/);
    // Inbound is untouched: the guest's httpd answers through the forward.
    const page = await fetch(`http://127.0.0.1:${port}/`);
    assert.equal(page.status, 200);
    assert.match(await page.text(), new RegExp(GUEST_PAGE_TEXT));
    const down = await dev(['down', '--timeout', '30']);
    assert.equal(down.code, 0, down.stderr);
  });
});
