/**
 * What is installed and taking it out again: `mvmctl dev images`, `dev rm`
 * and `dev prune`. Every installed version with the states that matter to an
 * operator (verified or UNVERIFIED, recalled, expired), its size, who signed
 * it and when it was installed, which one `dev up` boots and which one the
 * running dev VM booted; and removals that never take the running VM's image,
 * hold the dev VM's lock and the store's (so a `dev up` cannot boot what is
 * being removed), and are audited.
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { downloadsDir, prebuiltDir, type Config } from '../config.js';
import { recallInForce, type Revocation } from '../core/revocation.js';
import { isMvmError, MvmError } from '../errors.js';
import { withLock } from '../io/lock.js';
import { audit } from '../audit/record.js';
import { devVmDir, LOCK_FILE, readVmState } from '../vm/state.js';
import { diskUsage, ImageStore, type Leftover } from '../store/image-store.js';
import { builtAtOf, readReceiptIfAny, type Receipt } from '../store/receipt.js';
import { ensurePrivateDir } from '../io/secure-dir.js';

/** The recalls in force on this host, as `status` reads them (nothing is written). */
export interface RecallsOnHost {
  /** The verified cached list's recalls; undefined when none is cached or it does not verify. */
  readonly listed: readonly Revocation[] | undefined;
  /** Recalls verified on this host before (enforced whatever happened to the cache since). */
  readonly remembered: readonly Revocation[];
}

export interface InventoryContext {
  readonly config: Config;
  /** This mvmctl's version: the image `dev up` boots. */
  readonly mvmctlVersion: string;
  readonly now: () => Date;
  /** Absent: recall states are not evaluated (prune and rm do not need them). */
  readonly recalls?: RecallsOnHost;
  readonly warn: (message: string) => void;
}

export type ImageState = 'verified' | 'UNVERIFIED' | 'unknown' | 'recalled' | 'expired';

/** One installed version, as `dev images --json` prints it. */
export interface ImageReport {
  readonly version: string;
  /** The version link, ~/.mvm/dev/prebuilt/v{version}. */
  readonly path: string;
  /** `dev up` boots this one (this mvmctl's version). */
  readonly current: boolean;
  /** The running dev VM booted this version. */
  readonly running: boolean;
  /** Verification first ('verified', 'UNVERIFIED', or 'unknown' without a readable receipt), then 'recalled', 'expired'. */
  readonly states: readonly ImageState[];
  readonly verification: 'verified' | 'UNVERIFIED' | null;
  /** Escape hatches used at import (MVM_SKIP_COSIGN_VERIFY, MVM_SKIP_HASH_VERIFY). */
  readonly bypassed: readonly string[];
  /** The recall's reason; false when not recalled; null when not evaluated. */
  readonly recalled: string | false | null;
  readonly expired: boolean;
  readonly expiredAtInstall: boolean | null;
  readonly notAfter: string | null;
  readonly builtAt: string | null;
  readonly installedAt: string | null;
  /** The release workflow identity that signed the manifest; null when the signature was skipped. */
  readonly signer: string | null;
  /** The mvmctl that installed it. */
  readonly installedBy: string | null;
  readonly manifestSha256: string | null;
  /** Space the image takes on disk. */
  readonly bytes: number;
}

export interface Inventory {
  readonly store: string;
  readonly mvmctlVersion: string;
  readonly images: readonly ImageReport[];
  /** What interrupted imports left (and imports in progress, `creatorAlive`). */
  readonly leftovers: readonly Leftover[];
  /** Each version's receipt as read for its report (undefined: missing or unreadable). */
  readonly receipts: ReadonlyMap<string, Receipt | undefined>;
  /** The running dev VM, if one runs. */
  readonly runningVm: { readonly pid: number; readonly version: string } | undefined;
}

const storeOf = (c: Config): ImageStore => new ImageStore(prebuiltDir(c), c.dataDir);

/** Every installed version with its states; reads only (an empty host stays empty). */
export async function listImages(ctx: InventoryContext): Promise<Inventory> {
  const store = storeOf(ctx.config);
  const vm = await readVmState(ctx.config);
  const runningVm =
    vm.liveness === 'running' && vm.state
      ? { pid: vm.state.pid, version: vm.state.version }
      : undefined;
  const images: ImageReport[] = [];
  const receipts = new Map<string, Receipt | undefined>();
  for (const img of await store.list()) {
    const receipt = await readReceiptIfAny(img.dir);
    receipts.set(img.version, receipt);
    images.push(
      report(ctx, {
        version: img.version,
        path: join(store.root, `v${img.version}`),
        receipt,
        builtAt: await builtAtOf(img.dir, receipt),
        bytes: await diskUsage(img.dir),
        running: runningVm?.version === img.version,
      }),
    );
  }
  return {
    store: store.root,
    mvmctlVersion: ctx.mvmctlVersion,
    images,
    receipts,
    leftovers: await store.leftovers(),
    runningVm,
  };
}

function report(
  ctx: InventoryContext,
  i: {
    version: string;
    path: string;
    receipt: Receipt | undefined;
    builtAt: string | undefined;
    bytes: number;
    running: boolean;
  },
): ImageReport {
  const r = i.receipt;
  const verification =
    r?.verification === 'verified' || r?.verification === 'UNVERIFIED' ? r.verification : null;
  const recall =
    ctx.recalls && r && typeof r.variant === 'string' && typeof r.arch === 'string'
      ? recallInForce({ version: i.version, variant: r.variant, arch: r.arch }, ctx.recalls)
      : undefined;
  const recalled = ctx.recalls === undefined ? null : recall ? recall.reason : false;
  const notAfter = typeof r?.notAfter === 'string' ? r.notAfter : null;
  const expired = notAfter !== null && ctx.now().getTime() > Date.parse(notAfter);
  const states: ImageState[] = [verification ?? 'unknown'];
  if (recalled) states.push('recalled');
  if (expired) states.push('expired');
  return {
    version: i.version,
    path: i.path,
    current: i.version === ctx.mvmctlVersion,
    running: i.running,
    states,
    verification,
    bypassed: Array.isArray(r?.bypassed) ? r.bypassed : [],
    recalled,
    expired,
    expiredAtInstall: typeof r?.expiredAtInstall === 'boolean' ? r.expiredAtInstall : null,
    notAfter,
    builtAt: i.builtAt ?? null,
    installedAt: typeof r?.installedAt === 'string' ? r.installedAt : null,
    signer: typeof r?.signer?.identity === 'string' ? r.signer.identity : null,
    installedBy: typeof r?.mvmctlVersion === 'string' ? r.mvmctlVersion : null,
    manifestSha256: typeof r?.manifestSha256 === 'string' ? r.manifestSha256 : null,
    bytes: i.bytes,
  };
}

/** The receipt in an object (never through a link); undefined when unreadable. */

/** How long a removal waits for a `dev up` or `dev down` in progress, or another removal. */
const LOCK_WAIT_MS = 10_000;

/**
 * Runs `fn` holding the dev VM's lock, then the store's: `dev up` takes the
 * first while it picks and boots an image, so what a removal finds running
 * (or not) stays true until it is done.
 */
async function withRemovalLocks<T>(store: ImageStore, c: Config, fn: () => Promise<T>): Promise<T> {
  await store.check();
  const vmDir = devVmDir(c);
  await ensurePrivateDir(vmDir, c.dataDir);
  return withLock(join(vmDir, LOCK_FILE), 'the dev VM', () => store.withLock(fn), {
    timeoutMs: LOCK_WAIT_MS,
  });
}

/** The version the running dev VM booted, read under the dev VM's lock. */
async function runningVersion(c: Config): Promise<{ version: string; pid: number } | undefined> {
  const vm = await readVmState(c);
  return vm.liveness === 'running' && vm.state
    ? { version: vm.state.version, pid: vm.state.pid }
    : undefined;
}

export interface RemoveResult {
  readonly version: string;
  readonly path: string;
  readonly bytes: number;
  /** It was the image `dev up` boots: dev up has nothing to boot until it is installed again. */
  readonly current: boolean;
}

/**
 * `mvmctl dev rm VERSION`: not installed is an input error (exit 3), the
 * running VM's image a store error naming `dev down` (exit 17). Audited,
 * except a version that is not installed (nothing was touched).
 */
export async function removeVersion(ctx: InventoryContext, version: string): Promise<RemoveResult> {
  const store = storeOf(ctx.config);
  // Looked up first: asking about a version that is not installed creates and records nothing.
  if (!(await store.installed(version))) throw await notInstalled(store, version);
  let manifestSha256: string | undefined;
  let removed;
  try {
    removed = await withRemovalLocks(store, ctx.config, async () => {
      const running = await runningVersion(ctx.config);
      if (running?.version === version) throw inUse(version, running.pid);
      const img = await store.installed(version);
      if (img) manifestSha256 = (await readReceiptIfAny(img.dir))?.manifestSha256;
      const gone = await store.remove(version);
      if (!gone) throw await notInstalled(store, version);
      return gone;
    });
  } catch (e) {
    // Removed by someone else meanwhile: nothing was touched here either.
    if (!(isMvmError(e) && e.code === 'input')) await recordFailure(ctx, 'dev.rm', e, version);
    throw e;
  }
  await recordOrThrow(ctx, `v${version} was removed`, {
    event: 'dev.rm',
    outcome: 'ok',
    version,
    ...(manifestSha256 ? { manifestSha256 } : {}),
    message: `removed v${version} (${removed.bytes} bytes)`,
  });
  return {
    version,
    path: join(store.root, `v${version}`),
    bytes: removed.bytes,
    current: version === ctx.mvmctlVersion,
  };
}

export interface PruneItem {
  readonly kind: 'image' | 'leftover' | 'download';
  /**
   * `v{version}` for an image; `.objects/<id>` or `.link-<id>` for a leftover;
   * `downloads/v{version}-{arch}` for what a failed or interrupted dev pull kept to resume.
   */
  readonly name: string;
  readonly version?: string;
  readonly path: string;
  readonly bytes: number;
  /** A leftover's creator: the interrupted import's process. */
  readonly pid?: number;
}

export interface PruneResult {
  readonly dryRun: boolean;
  /** What was removed (with --dry-run: what would be). */
  readonly removed: readonly PruneItem[];
  readonly freedBytes: number;
  /** Versions kept, and why. */
  readonly kept: readonly { readonly version: string; readonly reason: string }[];
  /** Staging objects of imports still running: never touched. */
  readonly inProgress: readonly PruneItem[];
}

/**
 * `mvmctl dev prune`: every version but this mvmctl's and the one the running
 * dev VM booted, and what interrupted imports left. `dryRun` removes nothing
 * and records nothing.
 */
export async function pruneStore(
  ctx: InventoryContext,
  opts: { readonly dryRun: boolean },
): Promise<PruneResult> {
  const store = storeOf(ctx.config);
  // An empty host: nothing to prune, and nothing is created to say so.
  if (
    (await store.list()).length === 0 &&
    (await store.leftovers()).length === 0 &&
    (await keptDownloads(ctx.config)).length === 0
  )
    return { dryRun: opts.dryRun, removed: [], freedBytes: 0, kept: [], inProgress: [] };
  if (opts.dryRun) return plan(store, ctx, await runningVersion(ctx.config), true);
  const removed: PruneItem[] = [];
  let result: PruneResult;
  try {
    result = await withRemovalLocks(store, ctx.config, async () => {
      const planned = await plan(store, ctx, await runningVersion(ctx.config), false);
      // Leftovers first (the creators found gone are checked again), then the versions.
      for (const name of await store.collectLeftovers()) {
        removed.push(
          planned.removed.find((i) => i.name === name) ?? {
            kind: 'leftover',
            name,
            path: join(store.root, name),
            bytes: 0,
          },
        );
      }
      for (const item of planned.removed) {
        if (item.kind !== 'image' || item.version === undefined) continue;
        const gone = await store.remove(item.version);
        if (gone) removed.push({ ...item, bytes: gone.bytes });
      }
      removed.push(...(await removeDownloads(ctx.config, planned.removed)));
      return { ...planned, removed, freedBytes: sum(removed) };
    });
  } catch (e) {
    const before = removed.length ? `; before it failed: ${describeItems(removed)}` : '';
    await recordFailure(ctx, 'dev.prune', e, undefined, before);
    throw e;
  }
  await recordOrThrow(ctx, 'the prune is done', {
    event: 'dev.prune',
    outcome: 'ok',
    message: describePrune(result),
  });
  return result;
}

async function plan(
  store: ImageStore,
  ctx: InventoryContext,
  running: { version: string; pid: number } | undefined,
  dryRun: boolean,
): Promise<PruneResult> {
  const removed: PruneItem[] = [];
  const inProgress: PruneItem[] = [];
  const kept: { version: string; reason: string }[] = [];
  for (const l of await store.leftovers()) {
    const item: PruneItem = {
      kind: 'leftover',
      name: l.name,
      path: l.path,
      bytes: l.bytes,
      pid: l.pid,
    };
    (l.creatorAlive ? inProgress : removed).push(item);
  }
  for (const d of await keptDownloads(ctx.config)) removed.push(d);
  for (const img of await store.list()) {
    const reasons = [];
    if (img.version === ctx.mvmctlVersion) reasons.push("this mvmctl's version (dev up boots it)");
    if (img.version === running?.version)
      reasons.push(`the running dev VM (pid ${running.pid}) booted it`);
    if (reasons.length > 0) {
      kept.push({ version: img.version, reason: reasons.join('; ') });
      continue;
    }
    removed.push({
      kind: 'image',
      name: `v${img.version}`,
      version: img.version,
      path: join(store.root, `v${img.version}`),
      bytes: await diskUsage(img.dir),
    });
  }
  return { dryRun, removed, freedBytes: sum(removed), kept, inProgress };
}

/**
 * What dev pull kept under the data directory to resume (a pull that failed or
 * was interrupted): real directories only, never through a link.
 */
export async function keptDownloads(config: Config): Promise<PruneItem[]> {
  const dir = downloadsDir(config);
  if (!(await fs.lstat(dir).catch(() => undefined))) return [];
  // The rule dev pull applies to the same directory: a link there (or anywhere up to the data
  // directory) is refused, never followed into whatever it points at.
  await ensurePrivateDir(dir, config.dataDir);
  const names = await fs.readdir(dir);
  const items: PruneItem[] = [];
  for (const name of names) {
    if (name.startsWith('.')) continue; // the pull lock
    const path = join(dir, name);
    const st = await fs.lstat(path).catch(() => undefined);
    if (!st?.isDirectory()) continue;
    items.push({ kind: 'download', name: `downloads/${name}`, path, bytes: await diskUsage(path) });
  }
  return items;
}

/**
 * Removes the planned downloads while holding dev pull's lock, so a pull in
 * progress is waited for briefly and otherwise left alone (a store error naming it).
 */
async function removeDownloads(
  config: Config,
  planned: readonly PruneItem[],
): Promise<PruneItem[]> {
  const items = planned.filter((i) => i.kind === 'download');
  if (items.length === 0) return [];
  const dir = downloadsDir(config);
  return withLock(
    join(dir, '.pull.lock'),
    'the dev image download (a dev pull is running)',
    async () => {
      const removed: PruneItem[] = [];
      for (const item of items) {
        const st = await fs.lstat(item.path).catch(() => undefined);
        if (!st?.isDirectory()) continue;
        await fs.rm(item.path, { recursive: true, force: true });
        removed.push(item);
      }
      return removed;
    },
    { timeoutMs: 2_000 },
  );
}

const sum = (items: readonly PruneItem[]): number => items.reduce((n, i) => n + i.bytes, 0);

const describeItems = (items: readonly PruneItem[]): string =>
  items.map((i) => `${i.name} (${i.bytes} bytes)`).join(', ');

function describePrune(r: PruneResult): string {
  const removed = r.removed.length ? `removed ${describeItems(r.removed)}` : 'removed nothing';
  const kept = r.kept.length ? `; kept ${r.kept.map((k) => `v${k.version}`).join(', ')}` : '';
  return `${removed}; freed ${r.freedBytes} bytes${kept}`;
}

async function notInstalled(store: ImageStore, version: string): Promise<MvmError> {
  const installed = (await store.list().catch(() => [])).map((i) => `v${i.version}`);
  return new MvmError('input', `v${version} is not installed`, {
    cause: `${join(store.root, `v${version}`)} does not exist (installed: ${installed.length ? installed.join(', ') : 'none'})`,
    fix: "Run 'mvmctl dev images' to list the installed versions.",
  });
}

function inUse(version: string, pid: number): MvmError {
  return new MvmError(
    'store',
    `v${version} is the image the running dev VM booted (QEMU pid ${pid}); it is not removed`,
    {
      cause: 'the VM reads its kernel and root disk from this image while it runs',
      fix: `Stop the VM with 'mvmctl dev down', then run 'mvmctl dev rm ${version}' again.`,
    },
  );
}

type Recorded = Parameters<typeof audit>[1];

/** A removal that happened must be on the record; a failure to write it is a store error (exit 17). */
async function recordOrThrow(ctx: InventoryContext, done: string, fields: Recorded): Promise<void> {
  await audit(ctx.config, fields, ctx.now()).catch((e: unknown) => {
    throw new MvmError('store', `${done}, but its audit record could not be written`, {
      cause: (e as Error).message,
      fix: 'Check the data directory (telemetry/audit.jsonl).',
      underlying: e,
    });
  });
}

/** A refused or failed removal is recorded too; failing to record it only warns. */
async function recordFailure(
  ctx: InventoryContext,
  event: 'dev.rm' | 'dev.prune',
  e: unknown,
  version: string | undefined,
  extra = '',
): Promise<void> {
  const err = isMvmError(e) ? e : undefined;
  await audit(
    ctx.config,
    {
      event,
      outcome: 'failed',
      code: err?.code ?? 'internal',
      message: `${err ? err.message : String(e)}${extra}`,
      ...(version ? { version } : {}),
    },
    ctx.now(),
  ).catch((auditError: unknown) =>
    ctx.warn(`could not write the audit record: ${(auditError as Error).message}`),
  );
}
