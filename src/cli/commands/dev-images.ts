/**
 * `mvmctl dev images | rm | prune`: parse flags, call src/pipeline/inventory.ts,
 * render an aligned table or JSON. Nothing here decides what is removed.
 * Flags, help and exit codes: their rows of src/cli/spec.ts.
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
} from '../../pipeline/inventory.js';
import { loadTrustedRoot } from '../../trust/trusted-root.js';
import { MVMCTL_VERSION } from '../../version.js';
import { parseCommand } from '../args.js';
import { formatBytes, jsonLine, type Output } from '../render.js';

const HOW_TO_INSTALL =
  'mvmctl dev import-image --dir DIR (from a release set carried in) or mvmctl dev pull (online)';

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
  const { values } = parseCommand('dev images', args);
  const ctx = context(io);
  const trustedRoot = await loadTrustedRoot(values['trusted-root'] ?? ctx.config.trustedRootPath, {
    dataDir: ctx.config.dataDir,
  });
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
  const { values, positionals } = parseCommand('dev rm', args);
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
  const { values } = parseCommand('dev prune', args);
  const r = await pruneStore(context(io), { dryRun: values['dry-run'] === true });
  io.out(values.json ? jsonLine(r) : renderPrune(r));
  return 0;
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
    i.kind === 'image'
      ? i.name
      : i.kind === 'download'
        ? `${i.name} (kept by a dev pull that did not finish)`
        : `${i.name} (left by an interrupted import, pid ${i.pid ?? '?'})`,
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
