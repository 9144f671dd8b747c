/**
 * Node's module compile cache for the CLI: V8 keeps the compiled code of
 * mvmctl's modules on disk, so a later run skips most of the compile work of
 * loading them (measured by `npm run bench:startup`).
 *
 * What the cache holds is compiled code only: Node checks each entry against
 * the source it was made from (a hash of the source text) and a checksum of
 * its own, and recompiles on any mismatch, so a stale or corrupt entry costs
 * time and never changes what runs. It is still code that this process would
 * run, so it is used only from a directory that only this user can write,
 * with a parent no one else can swap it out of; otherwise mvmctl runs
 * without a cache. Any failure here means no cache, never an error.
 *
 * This module is loaded before everything else: it imports Node built-ins only.
 */
// A namespace import: main.ts loads this before it refuses an old Node.js, which has no enableCompileCache.
import * as nodeModule from 'node:module';
import { lstatSync, mkdirSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';

type Env = Readonly<Record<string, string | undefined>>;

/** Subdirectory of the cache directory that holds the compile cache. */
export const COMPILE_CACHE_SUBDIR = 'compile-cache';

/**
 * The cache directory as configFrom resolves it (MVM_CACHE_DIR,
 * $XDG_CACHE_HOME/mvm, ~/.cache/mvm), or undefined where it would raise an
 * error there: that command reports it, this only declines to cache.
 */
export function compileCacheDir(env: Env): string | undefined {
  const own = env['MVM_CACHE_DIR'];
  const xdg = env['XDG_CACHE_HOME'];
  const home = env['HOME'];
  const base =
    own !== undefined && own !== ''
      ? isAbsolute(own)
        ? resolve(own)
        : undefined
      : xdg && isAbsolute(xdg)
        ? join(resolve(xdg), 'mvm')
        : home && isAbsolute(home)
          ? join(resolve(home), '.cache', 'mvm')
          : undefined;
  return base === undefined ? undefined : join(base, COMPILE_CACHE_SUBDIR);
}

/** True when `path` is a directory of this user that no other user can write. */
function privateDirectory(path: string, uid: number): boolean {
  const st = lstatSync(path, { throwIfNoEntry: false });
  return st !== undefined && st.isDirectory() && st.uid === uid && (st.mode & 0o022) === 0;
}

/** True when no other user can rename entries in `path` (this user's or root's, not group/other-writable). */
function safeParent(path: string, uid: number): boolean {
  const st = lstatSync(path, { throwIfNoEntry: false });
  return (
    st !== undefined &&
    st.isDirectory() &&
    (st.uid === uid || st.uid === 0) &&
    (st.mode & 0o022) === 0
  );
}

export type CompileCacheOutcome =
  | { readonly state: 'enabled' | 'already-enabled'; readonly directory: string }
  | { readonly state: 'off'; readonly reason: string };

/**
 * Turns the compile cache on for this process, in the private directory
 * `compileCacheDir(env)` (created 0700 if missing). MVM_COMPILE_CACHE=0 (or
 * Node's own NODE_DISABLE_COMPILE_CACHE) turns it off.
 */
export function useCompileCache(env: Env = process.env): CompileCacheOutcome {
  if (env['MVM_COMPILE_CACHE'] === '0') return { state: 'off', reason: 'MVM_COMPILE_CACHE=0' };
  const { enableCompileCache, constants: moduleConstants } = nodeModule;
  if (typeof enableCompileCache !== 'function')
    return { state: 'off', reason: 'this Node.js has no module compile cache' };
  const dir = compileCacheDir(env);
  if (dir === undefined) return { state: 'off', reason: 'no absolute cache directory' };
  const uid = process.geteuid?.() ?? -1;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (!privateDirectory(dir, uid) || !safeParent(dirname(dir), uid))
      return { state: 'off', reason: `${dir} is not a directory that only this user can write` };
    const r = enableCompileCache(dir);
    if (r.status === moduleConstants.compileCacheStatus.ENABLED)
      return { state: 'enabled', directory: r.directory ?? dir };
    if (r.status === moduleConstants.compileCacheStatus.ALREADY_ENABLED)
      return { state: 'already-enabled', directory: r.directory ?? dir };
    return { state: 'off', reason: r.message ?? 'Node.js did not enable it' };
  } catch (e) {
    return { state: 'off', reason: (e as Error).message };
  }
}
