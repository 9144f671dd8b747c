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
import { parseCommand } from '../args.js';
import { whileInterruptible } from '../interrupt.js';
import { progressBar } from '../progress.js';
import { jsonLine, type Output } from '../render.js';

/** `mvmctl dev import-image`: flags, help and exit codes are its row of src/cli/spec.ts. */
export async function importImageCommand(args: string[], io: Output): Promise<number> {
  const { values } = parseCommand('dev import-image', args);
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
  const trustedRoot = await loadTrustedRoot(values['trusted-root'] ?? config.trustedRootPath, {
    dataDir: config.dataDir,
  });
  const json = values.json === true;
  const progress = !json && process.stderr.isTTY ? progressBar('hashing and copying') : undefined;
  // Ctrl-C / SIGTERM: the partial copy is removed and the interruption audited (exit 130).
  const result = await whileInterruptible(io, (signal) =>
    importImage(set, {
      signal,
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
    }),
  );
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
    case 'trust':
      return e.carried.state === 'skipped'
        ? `! trust       the set's trust bundle was not imported: ${e.carried.detail}`
        : `✓ trust       ${e.carried.state === 'installed' ? "imported the set's trust bundle" : "the set's trust bundle is already installed"}: ${e.carried.source}`;
  }
}
