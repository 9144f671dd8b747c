/**
 * `mvmctl dev fetch` and `mvmctl dev pull`: the online path (connected hosts).
 * Parsing, rendering and Ctrl-C only; the work is src/pipeline/fetch-release.ts
 * and src/pipeline/pull.ts. Flags, help and exit codes: their rows of src/cli/spec.ts.
 */
import { homedir } from 'node:os';
import { resolve } from 'node:path';
import { configFrom, type Config } from '../../config.js';
import { hostArch, isSemver, type Arch } from '../../core/manifest.js';
import { printable } from '../../core/printable.js';
import { MvmError } from '../../errors.js';
import {
  fetchReleaseSet,
  type FetchEvent,
  type TransferSet,
} from '../../pipeline/fetch-release.js';
import type { ImportResult } from '../../pipeline/import-image.js';
import { prepareDownloads } from '../../net/download.js';
import { pullImage } from '../../pipeline/pull.js';
import { loadTrustedRoot, type LoadedTrustedRoot } from '../../trust/trusted-root.js';
import { MVMCTL_VERSION } from '../../version.js';
import { parseCommand } from '../args.js';
import { progressBar, type ProgressBar } from '../progress.js';
import { whileInterruptible } from '../interrupt.js';
import { formatBytes, jsonLine, type Output } from '../render.js';
import { describe, safeLines } from './dev.js';

export async function fetchCommand(args: string[], io: Output): Promise<number> {
  const { values } = parseCommand('dev fetch', args);
  const version = values.version ?? MVMCTL_VERSION;
  // v0.14.0 as the release tag says it, or 0.14.0 as mvmctl --version does.
  const v = version.replace(/^v/, '');
  if (!isSemver(v)) {
    throw new MvmError('usage', `--version ${JSON.stringify(version)} is not a release version`, {
      fix: `Give a version like ${MVMCTL_VERSION} (mvmctl --version on the air-gapped host).`,
    });
  }
  const arch = archFlag(values.arch);
  const config = withOffline(configFrom(process.env, homedir()), values.offline === true);
  startEarly(config);
  const trustedRoot = await loadTrustedRoot(values['trusted-root'] ?? config.trustedRootPath, {
    dataDir: config.dataDir,
  });
  const dir = resolve(values.out ?? `mvm-dev-v${v}-${arch}`);
  const json = values.json === true;
  const progress = !json && process.stderr.isTTY ? progressBar('downloading') : undefined;
  const set = await whileInterruptible(io, (signal) =>
    fetchReleaseSet({
      config,
      trustedRoot,
      version: v,
      arch,
      dir,
      allowRecalled: values['allow-recalled'] === true,
      carryTrust: values['no-trust-bundle'] !== true,
      diskErrorCode: 'input',
      now: () => new Date(),
      signal,
      report: fetchReporter(io, json, progress),
      warn: warner(io, progress),
      ...(progress ? { onProgress: progress.update } : {}),
    }),
  );
  progress?.clear();
  const next = [`mvmctl dev import-image --dir ${shellWord(set.dir)}`, 'mvmctl dev up'];
  io.out(json ? jsonLine({ ...set, next }) : transferSummary(set, next));
  return 0;
}

export async function pullCommand(args: string[], io: Output): Promise<number> {
  const { values } = parseCommand('dev pull', args);
  const config = withOffline(configFrom(process.env, homedir()), values.offline === true);
  startEarly(config);
  const trustedRoot = await loadTrustedRoot(values['trusted-root'] ?? config.trustedRootPath, {
    dataDir: config.dataDir,
  });
  const json = values.json === true;
  const result = await pull(config, trustedRoot, io, {
    json,
    requireFreshRevocations: values['require-fresh-revocations'] === true,
  });
  io.out(
    json
      ? jsonLine({ installed: true, ...result })
      : `${result.alreadyInstalled ? 'Already installed' : 'Installed'} dev image v${result.version}` +
          `${result.receipt.verification === 'UNVERIFIED' ? ' (UNVERIFIED)' : ''} at ${printable(result.path)}\n` +
          `Run 'mvmctl dev up' to boot it.`,
  );
  return 0;
}

/**
 * The pull itself, also run by `dev up` when nothing is installed: download
 * lines and the import's step lines on stderr, a progress bar on a terminal.
 */
export async function pull(
  config: Config,
  trustedRoot: LoadedTrustedRoot,
  io: Output,
  o: { json: boolean; requireFreshRevocations?: boolean },
): Promise<ImportResult & { transfer: TransferSet }> {
  const arch = archFlag(undefined);
  const progress = !o.json && process.stderr.isTTY ? progressBar('downloading') : undefined;
  const warn = warner(io, progress);
  return whileInterruptible(io, (signal) =>
    pullImage(
      {
        config,
        trustedRoot,
        mvmctlVersion: MVMCTL_VERSION,
        hostArch: arch,
        now: () => new Date(),
        requireFreshRevocations:
          o.requireFreshRevocations === true || config.requireFreshRevocations,
        offline: config.offline,
        // The same Ctrl-C stops the download (partials kept) or the import (staging removed).
        signal,
        report: (e) => {
          if (!o.json) io.err(safeLines(describe(e)));
        },
        warn,
      },
      {
        // The import that follows prints the signature and revocation lines: only downloads here.
        report: (e) => {
          if (e.step === 'download' || e.step === 'retry') fetchReporter(io, o.json, progress)(e);
        },
        ...(progress ? { onDownloadProgress: progress.update } : {}),
        downloaded: () => progress?.clear(),
      },
    ),
  ).finally(() => progress?.clear());
}

const withOffline = (config: Config, flag: boolean): Config =>
  flag ? { ...config, offline: true } : config;

/** The download workers boot (tens of milliseconds) while the trusted root loads and the signature is checked. */
const startEarly = (config: Config): void => {
  if (!config.offline) prepareDownloads();
};

function archFlag(value: string | undefined): Arch {
  if (value === undefined) {
    const arch = hostArch(process.arch);
    if (!arch) {
      throw new MvmError('usage', `This host's arch ${process.arch} has no dev image`, {
        fix: 'Name the air-gapped host’s arch with --arch x86_64 or --arch aarch64.',
      });
    }
    return arch;
  }
  if (value !== 'x86_64' && value !== 'aarch64') {
    throw new MvmError('usage', `--arch ${JSON.stringify(value)} is not x86_64 or aarch64`, {
      fix: 'Use --arch x86_64 or --arch aarch64 (the arch of the host that will run the image).',
    });
  }
  return value;
}

function warner(io: Output, progress: ProgressBar | undefined) {
  return (m: string): void => {
    progress?.clear();
    io.err(`warning: ${safeLines(m)}`);
  };
}

function fetchReporter(io: Output, json: boolean, progress: ProgressBar | undefined) {
  return (e: FetchEvent): void => {
    if (json) return;
    progress?.clear();
    io.err(safeLines(describeFetch(e)));
  };
}

const entries = (n: number): string => `${n} ${n === 1 ? 'entry' : 'entries'}`;

function describeFetch(e: FetchEvent): string {
  switch (e.step) {
    case 'signature':
      return `✓ signature   signed by ${e.identity} (issuer ${e.issuer}), Rekor log index ${e.logIndex}`;
    case 'revocations':
      return e.state === 'fetched'
        ? `✓ revocation  signed list fetched (${entries(e.entries)}); this release is not recalled`
        : `! revocation  the release location publishes no revocation list (404): no recalls today`;
    case 'recalled-kept':
      return `! revocation  RECALLED (${e.reason}); kept going (--allow-recalled)`;
    case 'download':
      return `✓ ${e.role.padEnd(11)} sha256 ${e.sha256} (${formatBytes(e.bytes)}${
        e.alreadyThere
          ? ', already there'
          : e.reused > 0
            ? `, resumed after ${formatBytes(e.reused)}`
            : ''
      })`;
    case 'retry':
      return `  retrying in ${e.delayMs / 1000} s: ${e.message}`;
    case 'trust':
      return `✓ trust       TUF-verified trusted root from ${e.repository} (root v${e.versions.root}, timestamp v${e.versions.timestamp}, expires ${e.expires}); the set is checked with it`;
  }
}

function transferSummary(set: TransferSet, next: string[]): string {
  const width = Math.max(...set.files.map((f) => f.name.length));
  const lines = [
    `Transfer set for mvmctl v${set.version} (${set.arch}) in ${set.dir}:`,
    ...set.files.map((f) => `  ${f.name.padEnd(width)}  ${formatBytes(f.bytes).padStart(10)}`),
    set.signer
      ? `Signed by ${set.signer.identity} (issuer ${set.signer.issuer}, Rekor log index ${set.signer.logIndex}).`
      : 'Signed by a key.',
    set.revocations.state === 'fetched'
      ? `Revocation list: ${entries(set.revocations.entries)}, carried in the set.`
      : 'Revocation list: none published (404); the set carries none.',
    set.trust.state === 'carried'
      ? `Trust bundle: trust/ (TUF root v${set.trust.versions.root}, timestamp v${set.trust.versions.timestamp}); import the set by ${set.trust.importBy} for it to count.`
      : `Trust bundle: not carried (${set.trust.reason}).`,
    '',
    `Carry the directory to the air-gapped host (mvmctl v${set.version}) and run:`,
    ...next.map((c) => `  ${c}`),
  ];
  return lines.map((l) => printable(l, 4096)).join('\n');
}

/** A path as one shell word: quoted unless it is plainly safe. */
function shellWord(s: string): string {
  return /^[A-Za-z0-9_./:@%+=,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
