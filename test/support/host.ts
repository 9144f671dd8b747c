/** A simulated host for CLI tests: its own data and cache directories, and the test trusted root. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCli, type CliResult } from './cli.js';
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
