/**
 * Locations and switches from the environment (SPEC.md section 9). Pure: the
 * environment and home directory come in, so tests point everything at a
 * temporary directory.
 */
import { isAbsolute, join, resolve } from 'node:path';
import { releaseRepo } from './core/release.js';

export interface Config {
  /** ~/.mvm or MVM_DATA_DIR */
  readonly dataDir: string;
  /** ~/.cache/mvm, $XDG_CACHE_HOME/mvm or MVM_CACHE_DIR */
  readonly cacheDir: string;
  readonly releaseRepo: string;
  readonly trustedRootPath: string | undefined;
  readonly skipHashVerify: boolean;
  readonly skipCosignVerify: boolean;
  readonly offline: boolean;
}

export type Env = Readonly<Record<string, string | undefined>>;

const flag = (v: string | undefined): boolean => v === '1' || v === 'true';
const dir = (v: string): string => (isAbsolute(v) ? v : resolve(v));

export function configFrom(env: Env, home: string): Config {
  const xdg = env['XDG_CACHE_HOME'];
  return {
    dataDir: env['MVM_DATA_DIR'] ? dir(env['MVM_DATA_DIR']) : join(home, '.mvm'),
    cacheDir: env['MVM_CACHE_DIR']
      ? dir(env['MVM_CACHE_DIR'])
      : xdg && isAbsolute(xdg)
        ? join(xdg, 'mvm')
        : join(home, '.cache', 'mvm'),
    releaseRepo: releaseRepo(env['MVM_RELEASE_REPO']),
    trustedRootPath: env['MVM_TRUSTED_ROOT'] || undefined,
    skipHashVerify: flag(env['MVM_SKIP_HASH_VERIFY']),
    skipCosignVerify: flag(env['MVM_SKIP_COSIGN_VERIFY']),
    offline: flag(env['MVM_OFFLINE']),
  };
}

export const prebuiltDir = (c: Config): string => join(c.dataDir, 'dev', 'prebuilt');
export const revocationsDir = (c: Config): string => join(c.cacheDir, 'revocations');
export const telemetryDir = (c: Config): string => join(c.dataDir, 'telemetry');
export const auditLogPath = (c: Config): string => join(telemetryDir(c), 'audit.jsonl');
