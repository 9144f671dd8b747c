/**
 * `mvmctl dev fetch` and `mvmctl dev pull`: the online path (connected hosts).
 * Parsing, rendering and Ctrl-C only; the work is src/pipeline/fetch-release.ts
 * and src/pipeline/pull.ts.
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
import { pullImage } from '../../pipeline/pull.js';
import { loadTrustedRoot, type LoadedTrustedRoot } from '../../trust/trusted-root.js';
import { MVMCTL_VERSION } from '../../version.js';
import { parseFlags } from '../args.js';
import { humanBytes, progressBar, type ProgressBar } from '../progress.js';
import { watchInterrupts } from '../interrupt.js';
import { jsonLine, type Output } from '../render.js';
import { describe, safeLines } from './dev.js';

const NETWORK_ENV = `Environment:
  MVM_RELEASE_BASE_URL    release location (default https://github.com/{repo}/releases/download);
                          files are {base}/v{version}/{file}, the revocation list
                          {base}/revocations/revoked-versions.json and its .bundle;
                          an internal http(s) mirror with the same layout works (every byte is verified)
  MVM_RELEASE_REPO        repository whose release workflow signs manifests (default tinylabscom/mvm)
  MVM_RELEASE_TOKEN       bearer token for a private mirror; sent only to the release location's
                          own origin, never to a host a redirect names
  HTTPS_PROXY, HTTP_PROXY, NO_PROXY
                          proxies
  MVM_HTTP_TIMEOUT_SECONDS
                          bound for connecting, for the response headers and for a silent body
                          (default 20); failures are retried 3 times (after 0.25, 0.5 and 1 s)
  MVM_OFFLINE=1           refuse at once: nothing is requested
  MVM_TRUSTED_ROOT        Sigstore trusted_root.json (default: embedded public-good root)
  MVM_MAX_KERNEL_BYTES, MVM_MAX_ROOTFS_BYTES
                          largest kernel / rootfs (and initrd) downloaded`;

export const FETCH_HELP = `Usage: mvmctl dev fetch [--version V] [--arch A] [--out DIR] [flags]

Prepare a transfer set for an air-gapped host, on a connected host. The
manifest and its bundle are downloaded first and the signature verified
(the project's release workflow, at the tag of the version) before any large
download. Then the kernel, rootfs (and initrd when the manifest lists one) are
downloaded at once, each into NAME.partial while hashed, and renamed to NAME
only when its SHA-256 is the one the signed manifest records. The signed
revocation list is fetched and verified too, so the set carries a fresh list;
a recalled release stops here (exit 13) unless --allow-recalled.

Interrupted downloads resume: a failed request is retried, a cut connection
continues with an HTTP Range request, and after Ctrl-C (exit 130) the same
command picks up the NAME.partial files. A file already in DIR with the right
digest is not downloaded again. There is no unsigned fallback, ever.

Then carry DIR to the air-gapped host and run:
  mvmctl dev import-image --dir DIR      (installs, revocation list included)
  mvmctl dev up

Flags:
  --version V        release to fetch (default: this mvmctl's, ${MVMCTL_VERSION}); the air-gapped
                     host's mvmctl must be the same version
  --arch A           x86_64 or aarch64 (default: this host's)
  --out DIR          where the set goes, created when missing
                     (default ./mvm-dev-v{version}-{arch})
  --allow-recalled   fetch a recalled release anyway (for investigation; import refuses it)
  --trusted-root FILE
                     Sigstore trusted_root.json (default: $MVM_TRUSTED_ROOT, else embedded)
  --offline          refuse at once (as MVM_OFFLINE=1)
  --json             print one JSON object with the result (or the error); no progress
  --debug            show internal detail on errors

${NETWORK_ENV}

Exit status: 0 the set is complete, 2 usage, 3 --out unusable, 10 signature (the manifest
or the revocation list), 11 the location serves another version, 12 another arch,
13 recalled, 14 a file's SHA-256 is not the signed one (its partial is deleted),
15 manifest invalid, 16 network (the URL and the cause are named; also MVM_OFFLINE=1),
130 interrupted (partials kept for the next run).
`;

export const PULL_HELP = `Usage: mvmctl dev pull [flags]

Download and install the dev image of this mvmctl (v${MVMCTL_VERSION}) for this host's
arch, on a connected host. The transfer set (as mvmctl dev fetch makes it) is
downloaded into a private directory under the data directory
(~/.mvm/dev/downloads/), then installed by the same verification an
air-gapped dev import-image runs: signature, version, arch, max-age, the
revocation list (the one just downloaded, rollback-checked), the digests, one
atomic publish into ~/.mvm/dev/prebuilt/v{version}/. The downloads are removed
after the install, and kept for resume when it fails or is interrupted.
mvmctl dev up runs this itself when no image is installed (unless offline).

Flags:
  --trusted-root FILE          Sigstore trusted_root.json (default: $MVM_TRUSTED_ROOT, else embedded)
  --require-fresh-revocations  fail when the revocation list is not fresh (see dev import-image)
  --offline                    refuse at once (as MVM_OFFLINE=1)
  --json                       print one JSON object with the result (or the error); no progress
  --debug                      show internal detail on errors

${NETWORK_ENV}
  MVM_DATA_DIR            data directory (default ~/.mvm)

Exit status: 0 installed (or already installed), 2 usage, 10 signature, 11 version,
12 arch, 13 recalled, 14 digest, 15 manifest invalid, 16 network, 17 store,
18 no fresh revocation list (when required), 130 interrupted (downloads kept for the next run).
`;

export async function fetchCommand(args: string[], io: Output): Promise<number> {
  const { values, positionals } = parseFlags('dev fetch', args, {
    version: { type: 'string' },
    arch: { type: 'string' },
    out: { type: 'string' },
    'allow-recalled': { type: 'boolean' },
    'trusted-root': { type: 'string' },
    offline: { type: 'boolean' },
  });
  if (values.help) {
    io.out(FETCH_HELP);
    return 0;
  }
  noPositionals('dev fetch', positionals);
  const version = values.version ?? MVMCTL_VERSION;
  if (!isSemver(version.replace(/^v/, ''))) {
    throw new MvmError('usage', `--version ${JSON.stringify(version)} is not a release version`, {
      fix: `Give a version like ${MVMCTL_VERSION} (mvmctl --version on the air-gapped host).`,
    });
  }
  const arch = archFlag(values.arch);
  const config = withOffline(configFrom(process.env, homedir()), values.offline === true);
  const trustedRoot = await loadTrustedRoot(values['trusted-root'] ?? config.trustedRootPath);
  const v = version.replace(/^v/, '');
  const dir = resolve(values.out ?? `mvm-dev-v${v}-${arch}`);
  const json = values.json === true;
  const progress = !json && process.stderr.isTTY ? progressBar('downloading') : undefined;
  const set = await interruptible(io, (signal) =>
    fetchReleaseSet({
      config,
      trustedRoot,
      version: v,
      arch,
      dir,
      allowRecalled: values['allow-recalled'] === true,
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
  const { values, positionals } = parseFlags('dev pull', args, {
    'trusted-root': { type: 'string' },
    'require-fresh-revocations': { type: 'boolean' },
    offline: { type: 'boolean' },
  });
  if (values.help) {
    io.out(PULL_HELP);
    return 0;
  }
  noPositionals('dev pull', positionals);
  const config = withOffline(configFrom(process.env, homedir()), values.offline === true);
  const trustedRoot = await loadTrustedRoot(values['trusted-root'] ?? config.trustedRootPath);
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
  return interruptible(io, (signal) =>
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

function noPositionals(command: string, positionals: string[]): void {
  if (positionals.length) {
    throw new MvmError(
      'usage',
      `${command} takes no arguments (got ${JSON.stringify(positionals[0])})`,
      {
        fix: `Run 'mvmctl ${command} --help'.`,
      },
    );
  }
}

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

/** Runs `work` with the signal Ctrl-C and SIGTERM abort (partials kept, exit 130). */
async function interruptible<T>(io: Output, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const interrupts = watchInterrupts(io);
  try {
    return await work(interrupts.signal);
  } finally {
    interrupts.release();
  }
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
      return `✓ ${e.role.padEnd(11)} sha256 ${e.sha256} (${humanBytes(e.bytes)}${
        e.alreadyThere
          ? ', already there'
          : e.reused > 0
            ? `, resumed after ${humanBytes(e.reused)}`
            : ''
      })`;
    case 'retry':
      return `  retrying in ${e.delayMs / 1000} s: ${e.message}`;
  }
}

function transferSummary(set: TransferSet, next: string[]): string {
  const width = Math.max(...set.files.map((f) => f.name.length));
  const lines = [
    `Transfer set for mvmctl v${set.version} (${set.arch}) in ${set.dir}:`,
    ...set.files.map((f) => `  ${f.name.padEnd(width)}  ${humanBytes(f.bytes).padStart(10)}`),
    set.signer
      ? `Signed by ${set.signer.identity} (issuer ${set.signer.issuer}, Rekor log index ${set.signer.logIndex}).`
      : 'Signed by a key.',
    set.revocations.state === 'fetched'
      ? `Revocation list: ${entries(set.revocations.entries)}, carried in the set.`
      : 'Revocation list: none published (404); the set carries none.',
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
