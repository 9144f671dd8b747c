/**
 * `mvmctl dev images | rm | prune`: parse flags, call src/store/inventory.ts,
 * render an aligned table or JSON. Nothing here decides what is removed.
 */
import { homedir } from 'node:os';
import { configFrom, revocationsDir } from '../../config.js';
import { isSemver } from '../../core/manifest.js';
import { printable } from '../../core/printable.js';
import { MvmError } from '../../errors.js';
import { summarizeRevocationCache } from '../../revocations/cache.js';
import { readRecallMemory } from '../../revocations/memory.js';
import {
  listImages,
  pruneStore,
  removeVersion,
  type ImageReport,
  type Inventory,
  type InventoryContext,
  type PruneResult,
} from '../../store/inventory.js';
import { loadTrustedRoot } from '../../trust/trusted-root.js';
import { MVMCTL_VERSION } from '../../version.js';
import { parseFlags } from '../args.js';
import { jsonLine, type Output } from '../render.js';

const HOW_TO_INSTALL =
  'mvmctl dev import-image --dir DIR (from a release set carried in) or mvmctl dev pull (online)';

export const IMAGES_HELP = `Usage: mvmctl dev images [--json] [--trusted-root FILE]

List every dev image installed in ~/.mvm/dev/prebuilt/ with its state:
verified or UNVERIFIED (an MVM_SKIP_* escape hatch was used at import),
RECALLED (by the cached signed revocation list or a recall this host
remembers), EXPIRED (past the manifest's not_after; "at install" when it
already was then); its size on disk, when it was built and installed, who
signed it, which one 'mvmctl dev up' boots (this mvmctl's version) and which
one the running dev VM booted. Leftovers of interrupted imports are counted
below the table ('mvmctl dev prune' removes them). Nothing is changed.

Flags:
  --trusted-root FILE  Sigstore trusted_root.json verifying the cached revocation list
                       (default: $MVM_TRUSTED_ROOT, else embedded)
  --json               print a JSON array, one object per installed version
  --debug              show internal detail on errors

Environment:
  MVM_DATA_DIR      data directory (default ~/.mvm)
  MVM_CACHE_DIR     cache directory holding revocations/ (default ~/.cache/mvm)
  MVM_TRUSTED_ROOT  as --trusted-root

Exit status: 0 listed (an empty store too), 2 usage, 3 unusable trusted root, 17 store.
`;

export const RM_HELP = `Usage: mvmctl dev rm VERSION [--json]

Remove an installed dev image (VERSION as 'mvmctl dev images' shows it:
0.14.0 or v0.14.0). The version disappears at once (its link is renamed out,
so no reader ever sees half an image), then its files are deleted, under the
store's lock and the dev VM's (a dev up cannot boot it meanwhile). The image
the running dev VM booted is never removed: stop the VM with 'mvmctl dev down'
first. Removing this mvmctl's own version leaves dev up nothing to boot until
it is installed again. Audited (event dev.rm).

Flags:
  --json    print one JSON object with the result (or the error)
  --debug   show internal detail on errors

Exit status: 0 removed, 2 usage (VERSION missing or not a version such as 0.14.0),
3 not installed, 17 store (the running dev VM's image; a lock held by a dev up or
another removal; permissions).
`;

export const PRUNE_HELP = `Usage: mvmctl dev prune [--dry-run] [--json]

Free the store: remove every installed version except this mvmctl's (the one
dev up boots) and the one the running dev VM booted, and what interrupted
imports left behind (staging objects of processes that are gone; an import
still running is never touched). Removal is as safe as 'mvmctl dev rm'.
Audited (event dev.prune), with what was removed.

Flags:
  --dry-run  list what would be removed and the space it would free; remove nothing
  --json     print one JSON object: removed (with --dry-run, what would be), freedBytes,
             kept (with the reason), inProgress
  --debug    show internal detail on errors

Exit status: 0 done (also when there was nothing to remove), 2 usage, 17 store.
`;

export async function storeCommand(
  sub: 'images' | 'rm' | 'prune',
  args: string[],
  io: Output,
): Promise<number> {
  if (sub === 'images') return imagesCommand(args, io);
  if (sub === 'rm') return rmCommand(args, io);
  return pruneCommand(args, io);
}

const context = (io: Output): InventoryContext => ({
  config: configFrom(process.env, homedir()),
  mvmctlVersion: MVMCTL_VERSION,
  now: () => new Date(),
  warn: (m) => io.err(`warning: ${printable(m, 4096)}`),
});

async function imagesCommand(args: string[], io: Output): Promise<number> {
  const { values, positionals } = parseFlags('dev images', args, {
    'trusted-root': { type: 'string' },
  });
  if (values.help) {
    io.out(IMAGES_HELP);
    return 0;
  }
  noArguments('dev images', positionals);
  const ctx = context(io);
  const trustedRoot = await loadTrustedRoot(values['trusted-root'] ?? ctx.config.trustedRootPath);
  const { summary, cached } = await summarizeRevocationCache(
    revocationsDir(ctx.config),
    ctx.config.releaseRepo,
    trustedRoot,
    ctx.now(),
  );
  if (summary.state === 'invalid') {
    ctx.warn(
      `the cached revocation list does not verify (${summary.error ?? 'unknown error'}): only the recalls remembered on this host are shown`,
    );
  }
  const inventory = await listImages({
    ...ctx,
    recalls: {
      listed: cached?.state === 'verified' ? cached.list.revocations : undefined,
      remembered: (await readRecallMemory(ctx.config)).recalls,
    },
  });
  if (values.json) {
    io.out(jsonLine(inventory.images));
    return 0;
  }
  io.out(renderImages(inventory));
  return 0;
}

async function rmCommand(args: string[], io: Output): Promise<number> {
  const { values, positionals } = parseFlags('dev rm', args, {});
  if (values.help) {
    io.out(RM_HELP);
    return 0;
  }
  if (positionals.length !== 1) {
    throw new MvmError(
      'usage',
      positionals.length === 0
        ? 'dev rm needs the VERSION to remove'
        : `dev rm takes one VERSION (got ${positionals.length})`,
      { fix: "Name one version as 'mvmctl dev images' lists it, e.g. mvmctl dev rm 0.13.0." },
    );
  }
  const version = versionArgument(positionals[0]!);
  const r = await removeVersion(context(io), version);
  if (values.json) {
    io.out(jsonLine({ removed: true, ...r }));
    return 0;
  }
  const lines = [`Removed dev image v${r.version} (${formatBytes(r.bytes)} freed).`];
  if (r.current) {
    lines.push(
      `It was this mvmctl's version: dev up has nothing to boot until v${r.version} is installed again (${HOW_TO_INSTALL}).`,
    );
  }
  io.out(lines.join('\n'));
  return 0;
}

async function pruneCommand(args: string[], io: Output): Promise<number> {
  const { values, positionals } = parseFlags('dev prune', args, {
    'dry-run': { type: 'boolean' },
  });
  if (values.help) {
    io.out(PRUNE_HELP);
    return 0;
  }
  noArguments('dev prune', positionals);
  const r = await pruneStore(context(io), { dryRun: values['dry-run'] === true });
  io.out(values.json ? jsonLine(r) : renderPrune(r));
  return 0;
}

function noArguments(command: string, positionals: string[]): void {
  if (positionals.length > 0) {
    throw new MvmError(
      'usage',
      `${command} takes no arguments (got ${JSON.stringify(printable(positionals[0]!, 64))})`,
      { fix: `Run 'mvmctl ${command} --help'.` },
    );
  }
}

/**
 * A version as an operator types it (0.14.0, or v0.14.0 as the store names
 * it). Anything else, a path above all (../x), is refused before it comes
 * near the store.
 */
function versionArgument(arg: string): string {
  const version = arg.startsWith('v') ? arg.slice(1) : arg;
  if (!isSemver(version)) {
    throw new MvmError(
      'usage',
      `${JSON.stringify(printable(arg, 64))} is not a version such as 0.14.0`,
      {
        cause: 'dev rm takes the version of an installed image, never a path',
        fix: "Run 'mvmctl dev images' to list the installed versions.",
      },
    );
  }
  return version;
}

/** Aligned columns; every value from a receipt goes through printable(). */
function renderImages(inv: Inventory): string {
  const p = printable;
  const lines: string[] = [];
  if (inv.images.length === 0) {
    lines.push(
      `No dev images are installed (in ${p(inv.store)}).`,
      `Install one: ${HOW_TO_INSTALL}.`,
    );
  } else {
    const rows = inv.images.map((i) => [
      `v${i.version}`,
      stateText(i),
      formatBytes(i.bytes),
      formatTime(i.builtAt),
      formatTime(i.installedAt),
      [i.current ? 'dev up' : '', i.running ? 'running VM' : ''].filter(Boolean).join(', ') || '-',
      p(i.signer ?? (i.bypassed.includes('cosign') ? 'NOT VERIFIED (signature skipped)' : '-')),
    ]);
    lines.push(
      ...table(['VERSION', 'STATE', 'SIZE', 'BUILT', 'INSTALLED', 'USED BY', 'SIGNED BY'], rows),
    );
    lines.push('');
    for (const i of inv.images) {
      if (i.recalled) lines.push(`v${i.version} is RECALLED: ${p(i.recalled)}`);
      if (i.expired && i.notAfter) lines.push(`v${i.version} expired: not_after ${p(i.notAfter)}`);
    }
    const total = inv.images.reduce((n, i) => n + i.bytes, 0);
    lines.push(
      `${inv.images.length} ${inv.images.length === 1 ? 'version' : 'versions'}, ${formatBytes(total)} on disk, in ${p(inv.store)}`,
    );
  }
  const current = inv.images.find((i) => i.current);
  lines.push(
    current
      ? `dev up boots v${inv.mvmctlVersion} (this mvmctl's version).`
      : `dev up boots v${inv.mvmctlVersion} (this mvmctl's version), which is not installed: ${HOW_TO_INSTALL}.`,
  );
  if (inv.runningVm) {
    lines.push(
      `The running dev VM (pid ${inv.runningVm.pid}) booted v${p(inv.runningVm.version)}.`,
    );
  }
  const left = inv.leftovers.filter((l) => !l.creatorAlive);
  if (left.length > 0) {
    const bytes = left.reduce((n, l) => n + l.bytes, 0);
    lines.push(
      `Leftovers of interrupted imports: ${left.length} (${formatBytes(bytes)}); mvmctl dev prune removes them.`,
    );
  }
  for (const l of inv.leftovers.filter((x) => x.creatorAlive)) {
    lines.push(`An import is in progress (pid ${l.pid}): ${formatBytes(l.bytes)} copied so far.`);
  }
  return lines.join('\n');
}

function stateText(i: ImageReport): string {
  return i.states
    .map((s) => {
      if (s === 'unknown') return 'UNKNOWN (no readable receipt)';
      if (s === 'recalled') return 'RECALLED';
      if (s === 'expired') return i.expiredAtInstall ? 'EXPIRED (at install)' : 'EXPIRED';
      return s;
    })
    .join(', ');
}

function renderPrune(r: PruneResult): string {
  const lines: string[] = [];
  const verb = r.dryRun ? 'Would remove' : 'Removed';
  const rows = r.removed.map((i) => [
    verb,
    i.kind === 'image' ? i.name : `${i.name} (left by an interrupted import, pid ${i.pid ?? '?'})`,
    formatBytes(i.bytes),
  ]);
  if (rows.length > 0) lines.push(...table(undefined, rows));
  for (const k of r.kept) lines.push(`Kept v${k.version}: ${k.reason}`);
  for (const i of r.inProgress)
    lines.push(`Kept ${i.name}: an import in progress (pid ${i.pid ?? '?'})`);
  if (r.removed.length === 0) lines.push('Nothing to prune.');
  else if (r.dryRun)
    lines.push(`Would free ${formatBytes(r.freedBytes)} (dry run: nothing was removed).`);
  else lines.push(`Freed ${formatBytes(r.freedBytes)}.`);
  return lines.join('\n');
}

function table(header: string[] | undefined, rows: string[][]): string[] {
  const all = header ? [header, ...rows] : rows;
  const widths = all[0]!.map((_, c) => Math.max(...all.map((r) => r[c]!.length)));
  return all.map((r) =>
    r
      .map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!)))
      .join('  ')
      .trimEnd(),
  );
}

/** 2026-05-01 10:00Z: minutes are enough to tell builds apart in a table. */
function formatTime(iso: string | null): string {
  if (iso === null || Number.isNaN(Date.parse(iso))) return '-';
  return `${new Date(iso).toISOString().slice(0, 16).replace('T', ' ')}Z`;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
}
