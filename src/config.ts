/**
 * Locations and switches from the environment (SPEC.md section 9). Pure: the
 * environment and home directory come in, so tests point everything at a
 * temporary directory.
 */
import { isAbsolute, join, resolve } from 'node:path';
import { MvmError } from './errors.js';
import { releaseRepo } from './core/release.js';

export interface Config {
  /** ~/.mvm or MVM_DATA_DIR */
  readonly dataDir: string;
  /** ~/.cache/mvm, $XDG_CACHE_HOME/mvm or MVM_CACHE_DIR */
  readonly cacheDir: string;
  readonly releaseRepo: string;
  readonly trustedRootPath: string | undefined;
  /** MVM_TUF_ROOT: the TUF root.json `trust import` starts from before any is installed (default: the embedded one). */
  readonly tufRootPath: string | undefined;
  /** MVM_TUF_REPOSITORY: the TUF repository `trust fetch` updates from (checked by that command). */
  readonly tufRepository: string | undefined;
  readonly skipHashVerify: boolean;
  readonly skipCosignVerify: boolean;
  readonly offline: boolean;
  /** Where releases are downloaded from: GitHub Releases of the repo, or an internal mirror with the same layout. */
  readonly releaseBaseUrl: string;
  /**
   * MVM_RELEASE_TOKEN: a bearer token for a release location that needs one (a
   * private mirror). Sent only to the origin of releaseBaseUrl, never to a host
   * a redirect names.
   */
  readonly releaseToken: string | undefined;
  /** Upper bound for connecting, for response headers and for a silent body (MVM_HTTP_TIMEOUT_SECONDS, default 20). */
  readonly httpTimeoutMs: number;
  /** MVM_REQUIRE_FRESH_REVOCATIONS=1: what --require-fresh-revocations asks, as fleet configuration. */
  readonly requireFreshRevocations: boolean;
  /** MVM_AUDIT_SOCKET: a unix datagram socket (syslog / the journal, e.g. /dev/log) that also receives every audit record. */
  readonly auditSocket: string | undefined;
  /** Largest kernel accepted before any hashing (MVM_MAX_KERNEL_BYTES, default 512 MiB). */
  readonly maxKernelBytes: number;
  /** Largest rootfs (or initrd) accepted before any hashing (MVM_MAX_ROOTFS_BYTES, default 64 GiB). */
  readonly maxRootfsBytes: number;
  /**
   * Bound of the guest console's log, console.log and console.log.1 together
   * (MVM_CONSOLE_LOG_MAX_BYTES, default 64 MiB, at least 64 KiB): the oldest output goes first.
   */
  readonly consoleLogMaxBytes: number;
}

export type Env = Readonly<Record<string, string | undefined>>;

const flag = (v: string | undefined): boolean => v === '1' || v === 'true';

/**
 * A directory from the environment, made absolute and normal: a trailing
 * slash or a `..` would otherwise make the private-directory check walk past
 * the data directory. Set but empty is refused, never read as "unset" or as
 * the current directory.
 */
function dirFrom(env: Env, name: string): string | undefined {
  const value = env[name];
  if (value === undefined) return undefined;
  if (value === '') {
    throw new MvmError('usage', `${name} is set but empty`, {
      cause: 'an empty path would put the store in the current directory',
      fix: `Unset ${name}, or set it to the directory to use.`,
    });
  }
  return resolve(value);
}

/** The home directory the defaults live under; an empty or relative one is refused, never the current directory. */
function homeFor(env: Env, home: string, needs: string, unset: string): string {
  if (env['HOME'] === '' || home === '') {
    throw new MvmError('usage', `HOME is empty and ${unset} is not set`, {
      cause: `the ${needs} defaults to a directory under HOME; an empty HOME would put it in the current directory`,
      fix: `Set HOME to your home directory, or set ${unset} to an absolute path.`,
    });
  }
  if (!isAbsolute(home)) {
    throw new MvmError(
      'usage',
      `HOME ${JSON.stringify(home)} is not an absolute path and ${unset} is not set`,
      {
        cause: `the ${needs} defaults to a directory under HOME`,
        fix: `Set HOME to an absolute path, or set ${unset} to one.`,
      },
    );
  }
  return resolve(home);
}

export function configFrom(env: Env, home: string): Config {
  const xdg = env['XDG_CACHE_HOME'];
  const repo = releaseRepo(env['MVM_RELEASE_REPO']);
  return {
    dataDir:
      dirFrom(env, 'MVM_DATA_DIR') ??
      join(homeFor(env, home, 'data directory', 'MVM_DATA_DIR'), '.mvm'),
    cacheDir:
      dirFrom(env, 'MVM_CACHE_DIR') ??
      (xdg && isAbsolute(xdg)
        ? join(resolve(xdg), 'mvm')
        : join(
            homeFor(env, home, 'cache directory', 'MVM_CACHE_DIR (or XDG_CACHE_HOME)'),
            '.cache',
            'mvm',
          )),
    releaseRepo: repo,
    releaseBaseUrl: baseUrl(env['MVM_RELEASE_BASE_URL'], repo),
    releaseToken: bearerToken(env['MVM_RELEASE_TOKEN']),
    httpTimeoutMs: timeout(env['MVM_HTTP_TIMEOUT_SECONDS']),
    trustedRootPath: env['MVM_TRUSTED_ROOT'] || undefined,
    tufRootPath: env['MVM_TUF_ROOT'] || undefined,
    tufRepository: env['MVM_TUF_REPOSITORY'] || undefined,
    skipHashVerify: flag(env['MVM_SKIP_HASH_VERIFY']),
    skipCosignVerify: flag(env['MVM_SKIP_COSIGN_VERIFY']),
    offline: flag(env['MVM_OFFLINE']),
    requireFreshRevocations: flag(env['MVM_REQUIRE_FRESH_REVOCATIONS']),
    auditSocket: env['MVM_AUDIT_SOCKET'] || undefined,
    maxKernelBytes: byteLimit(env, 'MVM_MAX_KERNEL_BYTES', 512 * 1024 ** 2),
    maxRootfsBytes: byteLimit(env, 'MVM_MAX_ROOTFS_BYTES', 64 * 1024 ** 3),
    consoleLogMaxBytes: byteLimit(env, 'MVM_CONSOLE_LOG_MAX_BYTES', 64 * 1024 ** 2, 64 * 1024),
  };
}

/**
 * Visible ASCII only: a space or line break would end the Authorization header
 * and start another. The value itself is never echoed (it is a secret).
 */
function bearerToken(value: string | undefined): string | undefined {
  if (!value) return undefined;
  if (!/^[\x21-\x7e]+$/.test(value)) {
    throw new MvmError(
      'usage',
      'MVM_RELEASE_TOKEN holds a space, a line break or another character a bearer token cannot have',
      { fix: 'Set MVM_RELEASE_TOKEN to the token alone (its value is not shown here).' },
    );
  }
  return value;
}

function byteLimit(env: Env, name: string, fallback: number, min = 1): number {
  const value = env[name];
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!/^[1-9][0-9]*$/.test(value) || !Number.isSafeInteger(n)) {
    throw new MvmError('usage', `${name} ${JSON.stringify(value)} is not a number of bytes`, {
      fix: `Set ${name} to a positive whole number of bytes, or unset it for the default.`,
    });
  }
  if (n < min)
    throw new MvmError('usage', `${name} ${value} is below its minimum of ${min} bytes`, {
      fix: `Set ${name} to at least ${min}, or unset it for the default.`,
    });
  return n;
}

function baseUrl(value: string | undefined, repo: string): string {
  if (!value) return `https://github.com/${repo}/releases/download`;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new MvmError('usage', `MVM_RELEASE_BASE_URL ${JSON.stringify(value)} is not a URL`, {
      fix: 'Set it to the mirror that keeps the GitHub release layout, e.g. https://mirror.example/mvm/releases/download',
    });
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new MvmError('usage', `MVM_RELEASE_BASE_URL must be http(s), not ${url.protocol}`);
  }
  return value.replace(/\/+$/, '');
}

function timeout(value: string | undefined): number {
  if (value === undefined || value === '') return 20_000;
  const s = Number(value);
  if (!Number.isFinite(s) || s <= 0 || s > 3600) {
    throw new MvmError(
      'usage',
      `MVM_HTTP_TIMEOUT_SECONDS ${JSON.stringify(value)} is not a number of seconds`,
    );
  }
  return s * 1000;
}

export const revocationsUrl = (c: Config, file: string): string =>
  `${c.releaseBaseUrl}/revocations/${file}`;

/** A release file: `{base}/v{version}/{file}` (GitHub Releases' layout, kept by mirrors). */
export const releaseFileUrl = (c: Config, version: string, file: string): string =>
  `${c.releaseBaseUrl}/v${encodeURIComponent(version)}/${encodeURIComponent(file)}`;

/** The token and the one origin it may go to. */
export const releaseCredential = (c: Config): { origin: string; token: string } | undefined =>
  c.releaseToken ? { origin: new URL(c.releaseBaseUrl).origin, token: c.releaseToken } : undefined;

/** Where `dev pull` downloads before importing: private, under the data directory, kept for resume. */
export const downloadsDir = (c: Config): string => join(c.dataDir, 'dev', 'downloads');

export const prebuiltDir = (c: Config): string => join(c.dataDir, 'dev', 'prebuilt');
export const revocationsDir = (c: Config): string => join(c.cacheDir, 'revocations');
export const telemetryDir = (c: Config): string => join(c.dataDir, 'telemetry');
export const auditLogPath = (c: Config): string => join(telemetryDir(c), 'audit.jsonl');
