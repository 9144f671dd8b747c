import { printable } from '../../core/printable.js';
import { homedir } from 'node:os';
import { configFrom } from '../../config.js';
import { MvmError } from '../../errors.js';
import { hostArch } from '../../core/manifest.js';
import {
  importImage,
  releaseSetIn,
  type ImportEvent,
  type ReleaseSet,
} from '../../pipeline/import-image.js';
import { loadTrustedRoot } from '../../trust/trusted-root.js';
import { devUpBlocker } from '../../vm/can-boot.js';
import { MVMCTL_VERSION } from '../../version.js';
import { parseFlags } from '../args.js';
import { watchInterrupts } from '../interrupt.js';
import { jsonLine, type Output } from '../render.js';

export const IMPORT_IMAGE_HELP = `Usage: mvmctl dev import-image --manifest M --bundle B --vmlinux K --rootfs R [--initrd I] [flags]
       mvmctl dev import-image --dir D [flags]

Install a dev image on an air-gapped host from the four files of a release set
(five when its manifest lists an initrd), carried in by hand. Runs the same verification as an online install; the only
network use is refreshing a revocation list older than 24 hours (skipped with
--offline, and never a reason to fail): the manifest's cosign signature against the project's release workflow
identity, the version pin (manifest.version == mvmctl --version), the arch, the
90-day max-age (warns only), the cached revocation list, and the SHA-256 of the
kernel and rootfs (and initrd) as they are copied into ~/.mvm/dev/prebuilt/v{version}/.
Nothing is written to the store unless every check passes; your files are
never modified. Fields a newer release adds to a schema_version 1 manifest are
accepted (they are signed), recorded in the receipt and shown by mvmctl status,
and never acted on; an unknown schema_version is refused (exit 15).

Flags:
  --manifest FILE              dev-image-{arch}.manifest.json
  --bundle FILE                dev-image-{arch}.manifest.json.bundle
  --vmlinux FILE               dev-vmlinux-{arch}
  --rootfs FILE                dev-rootfs-{arch}.ext4
  --initrd FILE                dev-initrd-{arch}: required when the manifest lists an initrd,
                               refused (exit 3) when it lists none
  --dir DIR                    find the files of this host's arch by their release names in DIR
                               (the initrd too, when the manifest lists one), e.g. a transfer
                               set from mvmctl dev fetch; a revocation pair in DIR
                               (revoked-versions.json + .bundle) is verified and installed
                               before the recall check, unless older than the cached list
  --trusted-root FILE          Sigstore trusted_root.json (default: $MVM_TRUSTED_ROOT, else embedded)
  --require-fresh-revocations  fail when no revocation list is cached, or it is older than 7 days
                               (also MVM_REQUIRE_FRESH_REVOCATIONS=1)
  --offline                    never try the network (also MVM_OFFLINE=1); a cache older than
                               24 hours is otherwise refreshed from the release location first
  --json                       print one JSON object with the result (or the error)
  --debug                      show internal detail on errors

Environment:
  MVM_DATA_DIR            data directory (default ~/.mvm)
  MVM_CACHE_DIR, XDG_CACHE_HOME
                          cache directory holding revocations/ (default ~/.cache/mvm)
  MVM_RELEASE_REPO        repository whose release workflow signs manifests (default tinylabscom/mvm)
  MVM_RELEASE_BASE_URL    release download base (default https://github.com/{repo}/releases/download)
  MVM_OFFLINE=1           never use the network
  MVM_REQUIRE_FRESH_REVOCATIONS=1  as --require-fresh-revocations, as configuration for a fleet
  MVM_MAX_KERNEL_BYTES, MVM_MAX_ROOTFS_BYTES
                          largest kernel / rootfs (and initrd) accepted, checked before any
                          hashing (defaults 512 MiB and 64 GiB)
  HTTPS_PROXY, HTTP_PROXY, NO_PROXY
                          proxies for the revocation list refresh
  MVM_SKIP_COSIGN_VERIFY=1, MVM_SKIP_HASH_VERIFY=1
                          emergency exits only: loud, counted, audited, image marked UNVERIFIED

Exit status: 0 installed, 3 input (missing files, all named at once; a --dir that does not
exist or holds another arch's set; the manifest and bundle, or the kernel and rootfs, given
the wrong way round, which is not counted as tampering; an initrd the manifest lists but that
was not given, or --initrd for a manifest that lists none), 10 signature, 11 version, 12 arch,
13 revoked, 14 digest, 15 manifest invalid (or not the dev variant), 17 store (including a
data directory that cannot be created or is read-only, found before any verification),
18 no fresh revocation list (when required), 2 usage (including an empty HOME or MVM_DATA_DIR).
`;

export const DEV_HELP = `Usage: mvmctl dev <command>

Commands:
  fetch           download a verified transfer set for an air-gapped host (connected host)
  pull            download and install the dev image of this mvmctl (connected host)
  import-image    install a verified dev image from local files (air-gapped)
  images          the installed versions: state, size, signer, which one dev up boots (--json)
  rm VERSION      remove an installed version (never the running dev VM's)
  prune           remove other versions and leftovers of interrupted imports (--dry-run)
  up              boot the installed dev image in a QEMU VM (detached)
  status          whether the dev VM runs, and what it booted (--json)
  logs            the guest console's log (-f follows it)
  console, shell  attach to the running dev VM's console (Ctrl-] detaches)
  down            power the dev VM off

Run 'mvmctl dev <command> --help' for a command's flags.
`;

export async function devCommand(args: string[], io: Output): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === 'import-image') return importImageCommand(rest, io);
  if (sub === 'images' || sub === 'rm' || sub === 'prune') {
    const { storeCommand } = await import('./dev-images.js');
    return storeCommand(sub, rest, io);
  }
  if (sub === 'fetch' || sub === 'pull') {
    const { fetchCommand, pullCommand } = await import('./dev-fetch.js');
    return sub === 'fetch' ? fetchCommand(rest, io) : pullCommand(rest, io);
  }
  if (sub === undefined || sub === '--help' || sub === '-h') {
    io.out(DEV_HELP);
    return sub === undefined ? 2 : 0;
  }
  if (
    sub === 'up' ||
    sub === 'status' ||
    sub === 'logs' ||
    sub === 'down' ||
    sub === 'console' ||
    sub === 'shell'
  ) {
    const { vmCommand } = await import('./dev-vm.js');
    return vmCommand(sub, rest, io);
  }
  throw new MvmError('usage', `unknown command "dev ${sub}"`, { fix: "Run 'mvmctl dev --help'." });
}

async function importImageCommand(args: string[], io: Output): Promise<number> {
  const { values, positionals } = parseFlags('dev import-image', args, {
    manifest: { type: 'string' },
    bundle: { type: 'string' },
    vmlinux: { type: 'string' },
    rootfs: { type: 'string' },
    initrd: { type: 'string' },
    dir: { type: 'string' },
    'trusted-root': { type: 'string' },
    'require-fresh-revocations': { type: 'boolean' },
    offline: { type: 'boolean' },
  });
  if (values.help) {
    io.out(IMPORT_IMAGE_HELP);
    return 0;
  }
  if (positionals.length > 0) {
    throw new MvmError(
      'usage',
      `dev import-image takes no positional arguments (got ${JSON.stringify(positionals[0])})`,
      {
        fix: "Name each file with its flag; run 'mvmctl dev import-image --help'.",
      },
    );
  }
  const arch = hostArch(process.arch);
  if (!arch) {
    throw new MvmError(
      'arch',
      `This host's arch ${process.arch} is not supported (x86_64 and aarch64 are)`,
      {
        fix: 'Run mvmctl on an x86_64 or aarch64 host.',
      },
    );
  }
  const set = releaseSetFrom(values, arch);
  const config = configFrom(process.env, homedir());
  const trustedRoot = await loadTrustedRoot(values['trusted-root'] ?? config.trustedRootPath);
  const json = values.json === true;
  const progress = !json && process.stderr.isTTY ? progressBar() : undefined;
  // Ctrl-C / SIGTERM: the partial copy is removed and the interruption audited (exit 130).
  const interrupts = watchInterrupts(io);
  const result = await importImage(set, {
    signal: interrupts.signal,
    config,
    trustedRoot,
    mvmctlVersion: MVMCTL_VERSION,
    hostArch: arch,
    now: () => new Date(),
    requireFreshRevocations: values['require-fresh-revocations'] === true,
    offline: values.offline === true || config.offline,
    report: (e) => {
      progress?.clear();
      if (!json) io.err(safeLines(describe(e)));
    },
    warn: (m) => {
      progress?.clear();
      io.err(`warning: ${safeLines(m)}`);
    },
    ...(progress ? { onProgress: progress.update } : {}),
  }).finally(interrupts.release);
  progress?.clear();
  if (json) {
    io.out(jsonLine({ installed: true, ...result }));
  } else {
    // The next step, only where it can work: dev up needs QEMU on an x86_64 host.
    const blocker = await devUpBlocker(arch, process.env['PATH']);
    io.out(
      `${result.alreadyInstalled ? 'Already installed' : 'Installed'} dev image v${result.version}` +
        `${result.receipt.verification === 'UNVERIFIED' ? ' (UNVERIFIED)' : ''} at ${printable(result.path)}\n` +
        (result.replaced
          ? `It replaced another build of v${result.version}: built ${printable(result.replaced.previous.builtAt ?? 'at an unknown date')}, now built ${result.replaced.builtAt}${result.replaced.older ? ' (OLDER)' : ''}.\n`
          : '') +
        (blocker
          ? `mvmctl dev up cannot boot it on this host yet: ${blocker}.`
          : `Run 'mvmctl dev up' to boot the dev VM from it (no network: the installed files are re-hashed and the cached revocation list checked before each boot).`),
    );
  }
  return 0;
}

function releaseSetFrom(v: Record<string, unknown>, arch: 'x86_64' | 'aarch64'): ReleaseSet {
  const files = ['manifest', 'bundle', 'vmlinux', 'rootfs'] as const;
  const named = [...files, 'initrd' as const].filter((f) => typeof v[f] === 'string');
  if (typeof v['dir'] === 'string') {
    if (named.length > 0) {
      throw new MvmError('usage', `--dir cannot be combined with --${named[0]}`, {
        fix: 'Use --dir alone, or name all four files.',
      });
    }
    return releaseSetIn(v['dir'], arch);
  }
  const missing = files.filter((f) => typeof v[f] !== 'string');
  if (missing.length > 0) {
    throw new MvmError(
      'usage',
      `dev import-image needs ${missing.map((f) => `--${f}`).join(', ')} (or --dir)`,
      {
        fix: "Name all four files of the release set; run 'mvmctl dev import-image --help'.",
      },
    );
  }
  return {
    manifest: v['manifest'] as string,
    bundle: v['bundle'] as string,
    vmlinux: v['vmlinux'] as string,
    rootfs: v['rootfs'] as string,
    // Whether the set needs it is known only from the signed manifest: the pipeline decides.
    ...(typeof v['initrd'] === 'string'
      ? { initrd: { path: v['initrd'], from: 'flag' as const } }
      : {}),
  };
}

/** Step lines and warnings quote file names and signed fields: each line is escaped on its own. */
export const safeLines = (text: string): string =>
  text
    .split('\n')
    .map((line) => printable(line, 4096))
    .join('\n');

export function describe(e: ImportEvent): string {
  switch (e.step) {
    case 'signature':
      return `✓ signature   signed by ${e.identity} (issuer ${e.issuer}), Rekor log index ${e.logIndex}`;
    case 'signature-skipped':
      return `! signature   SKIPPED (MVM_SKIP_COSIGN_VERIFY=1)`;
    case 'version':
      return `✓ version     ${e.version}`;
    case 'arch':
      return `✓ arch        ${e.arch}`;
    case 'max-age':
      return e.expired
        ? `! max-age     EXPIRED (not_after ${e.notAfter})`
        : `✓ max-age     valid until ${e.notAfter}`;
    case 'revocation':
      return e.state === 'absent'
        ? `! revocation  no list cached: not checked`
        : `${e.state === 'stale' ? '!' : '✓'} revocation  not recalled (${e.entries} ${e.entries === 1 ? 'entry' : 'entries'}, list ${e.ageHours} h old${e.state === 'stale' ? ', STALE' : ''})`;
    case 'digest':
      return `${e.skipped ? '!' : '✓'} ${e.role.padEnd(11)} sha256 ${e.sha256} (${e.bytes} bytes)${e.skipped ? ' NOT COMPARED (MVM_SKIP_HASH_VERIFY=1)' : ''}`;
    case 'install':
      return `✓ install     ${e.path}${e.alreadyInstalled ? ' (already installed, unchanged)' : ''}${e.replaced ? `\n  replaced the build of ${e.replaced.previous.builtAt ?? 'an unknown date'} with the build of ${e.replaced.builtAt}` : ''}`;
    case 'carried-list':
      return e.installed
        ? `✓ revocation  installed the set's revocation list (${e.entries} ${e.entries === 1 ? 'entry' : 'entries'})`
        : `! revocation  kept the cached list: the set's list is older`;
  }
}

/** A one-line progress bar on stderr, for terminals only. */
function progressBar() {
  const done: Record<string, [number, number]> = {};
  let last = 0;
  let shown = false;
  return {
    update: (role: string, bytes: number, total: number) => {
      done[role] = [bytes, total];
      if (bytes === 0) return; // registration of a file's size, before any byte moved
      const now = Date.now();
      if (now - last < 100 && bytes < total) return;
      last = now;
      const [b, t] = Object.values(done).reduce(([x, y], [p, q]) => [x + p, y + q], [0, 0]);
      const pct = t ? Math.floor((b / t) * 100) : 100;
      const width = 30;
      const bar = '#'.repeat(Math.floor((pct / 100) * width)).padEnd(width, ' ');
      process.stderr.write(
        `\r  hashing and copying [${bar}] ${String(pct).padStart(3)}%  ${(b / 1e6).toFixed(0)}/${(t / 1e6).toFixed(0)} MB`,
      );
      shown = true;
    },
    clear: () => {
      if (shown) process.stderr.write('\r\x1b[2K');
      shown = false;
    },
  };
}
