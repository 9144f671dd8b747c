import { homedir } from 'node:os';
import { configFrom, prebuiltDir, revocationsDir } from '../../config.js';
import { MvmError } from '../../errors.js';
import { printable } from '../../core/printable.js';
import { recallInForce } from '../../core/revocation.js';
import { installedImages } from '../../pipeline/import-image.js';
import { readRecallMemory } from '../../revocations/memory.js';
import { summarizeRevocationCache } from '../../revocations/cache.js';
import { ImageStore } from '../../store/image-store.js';
import { loadTrustedRoot } from '../../trust/trusted-root.js';
import { MVMCTL_VERSION } from '../../version.js';
import { parseFlags } from '../args.js';
import { jsonLine, type Output } from '../render.js';
import { currentMetrics, metricsJson } from './metrics.js';

export const STATUS_HELP = `Usage: mvmctl status [--json] [--trusted-root FILE]

Show this host's dev-image state: installed images with their receipts and
verification state (verified or UNVERIFIED, recalled or not, and the initrd
when the set has one), the cached revocation list (present, age, verified,
stale), the trusted root in use, and the verification counters. The dev VM itself is not built yet.
`;

export async function statusCommand(args: string[], io: Output): Promise<number> {
  const { values, positionals } = parseFlags('status', args, {
    'trusted-root': { type: 'string' },
  });
  if (values.help) {
    io.out(STATUS_HELP);
    return 0;
  }
  if (positionals.length)
    throw new MvmError('usage', 'status takes no arguments', {
      fix: "Run 'mvmctl status --help'.",
    });
  const config = configFrom(process.env, homedir());
  const trustedRoot = await loadTrustedRoot(values['trusted-root'] ?? config.trustedRootPath);

  const { summary: revocations, cached: list } = await summarizeRevocationCache(
    revocationsDir(config),
    config.releaseRepo,
    trustedRoot,
    new Date(),
  );

  const store = new ImageStore(prebuiltDir(config), config.dataDir);
  const images = [];
  const inForce = {
    listed: list?.state === 'verified' ? list.list.revocations : undefined,
    remembered: (await readRecallMemory(config)).recalls,
  };
  for (const img of await installedImages(store)) {
    const { receipt } = img;
    const recall = receipt ? recallInForce(receipt, inForce) : undefined;
    images.push({
      version: img.version,
      path: img.path,
      current: img.version === MVMCTL_VERSION,
      verification: receipt ? receipt.verification : 'UNKNOWN (no readable receipt)',
      recalled: recall ? recall.reason : (false as const),
      // The initramfs the set includes, as verified at import (null: a four-file set, or no receipt).
      initrd: receipt?.artifacts?.initrd ?? null,
      receipt: receipt ?? null,
    });
  }
  const metrics = await currentMetrics(config, trustedRoot);
  const status = {
    mvmctlVersion: MVMCTL_VERSION,
    dataDir: config.dataDir,
    images,
    revocations,
    trustedRoot: { source: trustedRoot.source, sha256: trustedRoot.sha256 },
    metrics: metricsJson(metrics),
    auditLogUnreadableLines: metrics.unreadable,
    // A broken chain is loud wherever the log is read (issue 12), not only in audit tail.
    auditChain: {
      intact: metrics.chain.intact,
      records: metrics.chain.records,
      ...(metrics.chain.intact
        ? {}
        : {
            path: metrics.chainPath,
            brokenAt: metrics.chain.brokenAt,
            reason: metrics.chain.reason,
          }),
    },
    devVm: { state: 'not built yet' },
  };
  for (const w of metrics.warnings) io.err(`warning: ${w}`);
  if (values.json) {
    io.out(jsonLine(status));
    return 0;
  }
  // Recall reasons, signer identities, versions and paths come from files: escaped before they reach a terminal.
  const p = printable;
  const lines = [`mvmctl ${MVMCTL_VERSION}   data ${p(config.dataDir)}`, '', 'Installed images:'];
  if (images.length === 0) lines.push('  (none)');
  for (const i of images) {
    lines.push(
      `  v${p(i.version)}${i.current ? ' (this mvmctl)' : ''}  ${p(i.verification)}${i.recalled ? `  RECALLED: ${p(i.recalled)}` : ''}` +
        (i.receipt
          ? `  installed ${p(i.receipt.installedAt)}${i.receipt.signer ? `  signed by ${p(i.receipt.signer.identity)}` : ''}`
          : ''),
    );
    if (i.initrd) {
      lines.push(
        `    initrd ${p(i.initrd.name)}  sha256 ${p(i.initrd.sha256)} (${Number(i.initrd.bytes)} bytes)`,
      );
    }
    // Signed fields a newer producer added: shown so an operator sees them, never acted on.
    const unknown = Object.entries(i.receipt?.manifestUnknownFields ?? {});
    if (unknown.length) {
      lines.push('    manifest fields this mvmctl does not know (signed; recorded, not acted on):');
      for (const [k, v] of unknown) lines.push(`      ${p(k, 200)} = ${p(JSON.stringify(v), 300)}`);
    }
  }
  lines.push('', 'Revocation list:');
  if (revocations.state === 'verified') {
    lines.push(
      `  verified, ${revocations.entries} entries, ${revocations.ageHours} h old (${revocations.freshness}${revocations.staleReason ? `: ${p(revocations.staleReason)}` : ''})  ${p(revocations.path)}`,
    );
  } else if (revocations.state === 'absent') {
    lines.push(`  none cached in ${p(revocations.path)}`);
  } else {
    lines.push(`  INVALID: ${p(revocations.error ?? '')}`);
  }
  lines.push(
    '',
    `Trusted root: ${p(trustedRoot.source)} (sha256 ${trustedRoot.sha256.slice(0, 16)}…)`,
    '',
    'Counters:',
  );
  for (const [k, v] of Object.entries(metrics.counters)) lines.push(`  ${k.padEnd(44)} ${v}`);
  lines.push(
    '',
    metrics.chain.intact
      ? `Audit log: chain intact (${metrics.chain.records} records)`
      : `Audit log: CHAIN BROKEN${metrics.chain.brokenAt === undefined ? '' : ` at line ${metrics.chain.brokenAt}`} of ${p(metrics.chainPath)}: ${p(metrics.chain.reason ?? '')} (mvmctl audit tail shows the records)`,
  );
  io.out(lines.join('\n'));
  return 0;
}
