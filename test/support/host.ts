/** A simulated host for CLI tests: its own data and cache directories, and the test trusted root. */
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, runCli, type CliResult } from './cli.js';
import type { ReleaseFiles } from './release.js';

export const HOST_ARCH = process.arch === 'arm64' ? 'aarch64' : 'x86_64';
export const OTHER_ARCH = HOST_ARCH === 'x86_64' ? 'aarch64' : 'x86_64';
export const VERSION = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  }
).version;

export type SetPaths = Pick<ReleaseFiles, 'manifest' | 'bundle' | 'vmlinux' | 'rootfs'>;

/** `dev import-image` naming the four files of a set. */
export const importArgs = (set: SetPaths): string[] => [
  'dev',
  'import-image',
  '--manifest',
  set.manifest,
  '--bundle',
  set.bundle,
  '--vmlinux',
  set.vmlinux,
  '--rootfs',
  set.rootfs,
];

export function testHost(dir: string, trustedRoot: string) {
  const env = {
    MVM_DATA_DIR: join(dir, 'data'),
    XDG_CACHE_HOME: join(dir, 'cache'),
    MVM_TRUSTED_ROOT: trustedRoot,
    // Tests never reach the internet; the online refresh is tested against a loopback server.
    MVM_OFFLINE: '1',
  };
  return {
    dir,
    env,
    revocations: join(dir, 'cache', 'mvm', 'revocations'),
    prebuilt: join(dir, 'data', 'dev', 'prebuilt'),
    run: (args: string[], extra: Record<string, string> = {}): Promise<CliResult> =>
      runCli(args, { ...env, ...extra }),
    importSet: (set: SetPaths, flags: string[] = [], extra: Record<string, string> = {}) =>
      runCli([...importArgs(set), ...flags], { ...env, ...extra }),
    async metrics(): Promise<Record<string, number>> {
      const r = await runCli(['metrics', '--json'], env);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout);
    },
    /** The audit log's records, oldest first. */
    audit(): Record<string, unknown>[] {
      try {
        return readFileSync(join(dir, 'data', 'telemetry', 'audit.jsonl'), 'utf8')
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l));
      } catch {
        return [];
      }
    },
  };
}
export type TestHost = ReturnType<typeof testHost>;

/** Runs the built CLI in `cwd` with exactly `env` (plus PATH): for tests of what an empty HOME resolves to. */
export function runCliIn(
  cwd: string,
  args: string[],
  env: Record<string, string>,
): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { cwd, env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', ...env }, timeout: 60_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

const realCp = (): string => execFileSync('sh', ['-c', 'command -v cp']).toString().trim();

/**
 * A `cp` first on PATH that announces each start, then waits for `release()`
 * before running the real cp: the store copy, paused on a signal, so a test
 * can act while an import is mid-copy without guessing at timings.
 */
export function gatedCp(dir: string) {
  const bin = join(dir, 'gated-bin');
  mkdirSync(bin, { recursive: true });
  const gate = join(bin, 'gate');
  writeFileSync(
    join(bin, 'cp'),
    `#!/bin/sh\n: > '${bin}/started.'$$\nwhile [ ! -e '${gate}' ]; do sleep 0.01; done\nexec '${realCp()}' "$@"\n`,
    { mode: 0o755 },
  );
  const started = () => readdirSync(bin).filter((f) => f.startsWith('started.')).length;
  return {
    env: { PATH: `${bin}:${process.env['PATH'] ?? '/usr/bin:/bin'}` },
    /** Resolves once `count` copies have started (and are held at the gate); fails if `run` ends first. */
    async started(count: number, run: Promise<unknown>): Promise<void> {
      let ended: { outcome: unknown } | undefined;
      void run.then(
        (outcome) => (ended = { outcome }),
        (outcome: unknown) => (ended = { outcome }),
      );
      while (started() < count) {
        if (ended) assert.fail(`it ended before copying: ${JSON.stringify(ended.outcome)}`);
        await new Promise((r) => setTimeout(r, 5));
      }
    },
    release(): void {
      writeFileSync(gate, '');
    },
    released: () => existsSync(gate),
  };
}

/** A `cp` first on PATH that fails as a broken or full store would, printing nothing. */
export function failingCp(dir: string, status = 1): { PATH: string } {
  const bin = join(dir, 'failing-bin');
  mkdirSync(bin, { recursive: true });
  writeFileSync(join(bin, 'cp'), `#!/bin/sh\nexit ${status}\n`, { mode: 0o755 });
  return { PATH: `${bin}:${process.env['PATH'] ?? '/usr/bin:/bin'}` };
}

/** A running `mvmctl metrics serve` of a test host (startMetricsServe). */
export interface MetricsServe {
  /** http://127.0.0.1:PORT/metrics, as it printed it. */
  readonly url: string;
  readonly child: ChildProcess;
  /** Everything it wrote to stderr so far. */
  stderr(): string;
  /** Sends `signal` and resolves with how it exited. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * `mvmctl metrics serve` for `host` on a free loopback port (--listen 127.0.0.1:0), resolved once
 * it prints "listening on URL"; fails with its output if it exits first.
 */
export function startMetricsServe(
  host: TestHost,
  extraEnv: Record<string, string> = {},
): Promise<MetricsServe> {
  const env: NodeJS.ProcessEnv = { ...process.env, MVM_TRUSTED_ROOT: undefined };
  Object.assign(env, host.env, extraEnv);
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  const child = spawn(process.execPath, [CLI, 'metrics', 'serve', '--listen', '127.0.0.1:0'], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  child.stdout!.resume();
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`metrics serve did not start in 20 s:\n${err}`));
    }, 20_000);
    const onData = () => {
      const m = /listening on (http:\/\/\S+)/.exec(err);
      if (!m) return;
      clearTimeout(timer);
      child.stderr!.off('data', onData);
      resolve({
        url: m[1]!,
        child,
        stderr: () => err,
        stop: (signal = 'SIGTERM') => {
          if (child.exitCode === null && child.signalCode === null) child.kill(signal);
          return exited;
        },
      });
    };
    child.stderr!.on('data', onData);
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`metrics serve exited (${code ?? signal}) before listening:\n${err}`));
    });
  });
}
