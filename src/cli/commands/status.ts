import { homedir } from 'node:os';
import { configFrom, revocationsDir, type Config } from '../../config.js';
import { ERROR_TABLE } from '../../errors.js';
import { printable } from '../../core/printable.js';
import { readRecallMemory } from '../../revocations/memory.js';
import { summarizeRevocationCache } from '../../revocations/cache.js';
import { keptDownloads, listImages, type ImageReport } from '../../pipeline/inventory.js';
import { loadTrustedRoot } from '../../trust/trusted-root.js';
import { trustStatus, type TrustStatus } from '../../trust/trust-status.js';
import { devStatus } from '../../vm/instance.js';
import { MVMCTL_VERSION } from '../../version.js';
import { parseCommand } from '../args.js';
import { formatBytes, jsonLine, type Output } from '../render.js';
import { currentMetrics, metricsJson } from './metrics.js';

const plural = (n: number, one: string, many = `${one}s`): string => `${n} ${n === 1 ? one : many}`;

/** What --check reports: the problems a monitoring script must hear about. */
export function healthProblems(s: {
  current: ImageReport | undefined;
  revocationsInvalid: string | undefined;
  chain: { intact: boolean; reason?: string | undefined };
  trust?: Pick<TrustStatus, 'origin' | 'rootExpired' | 'rootExpires' | 'tufRootVersion'>;
}): string[] {
  const problems: string[] = [];
  const c = s.current;
  if (c?.recalled) problems.push(`v${c.version} (this mvmctl's image) is RECALLED: ${c.recalled}`);
  if (c?.verification === 'UNVERIFIED')
    problems.push(
      `v${c.version} (this mvmctl's image) is UNVERIFIED (installed with ${c.bypassed.map((b) => `MVM_SKIP_${b.toUpperCase()}_VERIFY`).join(', ') || 'an escape hatch'})`,
    );
  if (c?.expired)
    problems.push(`v${c.version} (this mvmctl's image) is past its not_after (${c.notAfter})`);
  if (s.revocationsInvalid !== undefined)
    problems.push(`the cached revocation list does not verify: ${s.revocationsInvalid}`);
  if (!s.chain.intact) problems.push(`the audit log's chain is broken: ${s.chain.reason ?? ''}`);
  // A file named by MVM_TRUSTED_ROOT is the operator's own choice, with no TUF metadata to expire.
  if (s.trust?.rootExpired && s.trust.origin !== 'file')
    problems.push(
      `the TUF root in force (${s.trust.origin}, root v${s.trust.tufRootVersion}) expired ${s.trust.rootExpires}: newer Sigstore keys cannot reach this host until a trust bundle is imported (mvmctl trust fetch, then mvmctl trust import DIR)`,
    );
  return problems;
}

export async function statusCommand(args: string[], io: Output): Promise<number> {
  const { values } = parseCommand('status', args);
  const config = configFrom(process.env, homedir());
  const trustedRoot = await loadTrustedRoot(values['trusted-root'] ?? config.trustedRootPath, {
    dataDir: config.dataDir,
  });
  const now = new Date();

  const { summary: revocations, cached: list } = await summarizeRevocationCache(
    revocationsDir(config),
    config.releaseRepo,
    trustedRoot,
    now,
  );
  const inventory = await listImages({
    config,
    mvmctlVersion: MVMCTL_VERSION,
    now: () => now,
    recalls: {
      listed: list?.state === 'verified' ? list.list.revocations : undefined,
      remembered: (await readRecallMemory(config)).recalls,
    },
    warn: (m) => io.err(`warning: ${printable(m)}`),
  });
  const images = inventory.images.map((i) => {
    const receipt = inventory.receipts.get(i.version);
    return {
      version: i.version,
      path: i.path,
      current: i.current,
      running: i.running,
      verification: i.verification ?? 'UNKNOWN (no readable receipt)',
      states: i.states,
      recalled: i.recalled ?? false,
      expired: i.expired,
      expiredAtInstall: i.expiredAtInstall,
      notAfter: i.notAfter,
      builtAt: i.builtAt,
      installedAt: i.installedAt,
      signer: i.signer,
      bytes: i.bytes,
      // The initramfs the set includes, as verified at import (null: a four-file set, or no receipt).
      initrd: receipt?.artifacts?.initrd ?? null,
      receipt: receipt ?? null,
    };
  });
  const vm = await devStatus(config, now);
  const trust = await trustStatus(config, now, trustedRoot);
  const metrics = await currentMetrics(config, trustedRoot);
  const chain = {
    intact: metrics.chain.intact,
    records: metrics.chain.records,
    ...(metrics.chain.intact
      ? {}
      : {
          path: metrics.chainPath,
          brokenAt: metrics.chain.brokenAt,
          reason: metrics.chain.reason,
        }),
  };
  const leftovers = [
    ...inventory.leftovers.filter((l) => !l.creatorAlive),
    // What a dev pull that did not finish kept to resume: dev prune removes it too.
    ...(await keptDownloads(config)),
  ];
  const problems = healthProblems({
    current: inventory.images.find((i) => i.current),
    revocationsInvalid: revocations.state === 'invalid' ? (revocations.error ?? '') : undefined,
    chain: { intact: metrics.chain.intact, reason: metrics.chain.reason },
    trust,
  });
  const status = {
    mvmctlVersion: MVMCTL_VERSION,
    dataDir: config.dataDir,
    images,
    devVm: vm,
    revocations,
    leftovers: leftovers.map((l) => ({ path: l.path, bytes: l.bytes })),
    trustedRoot: { source: trustedRoot.source, sha256: trustedRoot.sha256 },
    trust,
    metrics: metricsJson(metrics),
    auditLogUnreadableLines: metrics.unreadable,
    // A broken chain is loud wherever the log is read, not only in audit tail.
    auditChain: chain,
    ...(values.check ? { check: { ok: problems.length === 0, problems } } : {}),
  };
  for (const w of metrics.warnings) io.err(`warning: ${w}`);
  io.out(values.json ? jsonLine(status) : humanStatus(status, config, metrics.counters));
  if (values.check && problems.length) {
    // The report is the output (one JSON document with --json); the problems follow on stderr.
    if (!values.json) {
      for (const p of problems) io.err(`✗ ${printable(p)}`);
      io.err(
        `status --check: ${plural(problems.length, 'problem')} (exit ${ERROR_TABLE.unhealthy.exit})`,
      );
    }
    return ERROR_TABLE.unhealthy.exit;
  }
  return 0;
}

type Status = {
  images: {
    version: string;
    current: boolean;
    running: boolean;
    verification: string;
    recalled: string | false;
    expired: boolean;
    expiredAtInstall: boolean | null;
    notAfter: string | null;
    builtAt: string | null;
    installedAt: string | null;
    signer: string | null;
    bytes: number;
    initrd: { name: string; sha256: string; bytes: number } | null;
    receipt: { manifestUnknownFields?: Record<string, unknown>; mvmctlVersion?: string } | null;
  }[];
  devVm: Awaited<ReturnType<typeof devStatus>>;
  revocations: Awaited<ReturnType<typeof summarizeRevocationCache>>['summary'];
  leftovers: { path: string; bytes: number }[];
  trustedRoot: { source: string; sha256: string };
  trust: TrustStatus;
  auditChain: {
    intact: boolean;
    records: number;
    path?: string;
    brokenAt?: number | undefined;
    reason?: string | undefined;
  };
};

/** Recall reasons, signer identities, versions and paths come from files: escaped before they reach a terminal. */
function humanStatus(s: Status, config: Config, counters: Record<string, number>): string {
  const p = printable;
  const lines = [
    `mvmctl ${MVMCTL_VERSION}   data ${p(config.dataDir)}`,
    `Trusted root: ${p(s.trustedRoot.source)} (sha256 ${s.trustedRoot.sha256.slice(0, 16)}…)`,
    `  TUF root v${s.trust.tufRootVersion}, expires ${s.trust.rootExpires}${s.trust.rootExpired ? ' (EXPIRED)' : ''}; current as of ${s.trust.asOf.slice(0, 10)}`,
    '',
  ];
  const current = s.images.find((i) => i.current);
  lines.push(
    current
      ? `Dev image (what dev up boots): v${p(current.version)}, ${stateWords(current)}`
      : `Dev image (what dev up boots): v${MVMCTL_VERSION} is NOT INSTALLED (mvmctl dev pull, or dev import-image --dir DIR)`,
  );
  lines.push('', `Installed images: ${s.images.length === 0 ? 'none' : s.images.length}`);
  for (const i of s.images) {
    lines.push(`  v${p(i.version)}${i.current ? ' (this mvmctl)' : ''}  ${stateWords(i)}`);
    if (i.installedAt)
      lines.push(
        `    installed ${p(i.installedAt)}${i.receipt?.mvmctlVersion ? ` by mvmctl ${p(i.receipt.mvmctlVersion)}` : ''}, ${formatBytes(i.bytes)}`,
      );
    lines.push(`    signed by ${i.signer ? p(i.signer) : 'NOBODY (signature not verified)'}`);
    if (i.builtAt || i.notAfter)
      lines.push(`    built ${p(i.builtAt ?? '?')}, valid until ${p(i.notAfter ?? '?')}`);
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
  const vm = s.devVm;
  lines.push(
    '',
    vm.state === 'running'
      ? `Dev VM: running v${p(vm.version ?? '?')} (pid ${vm.pid}, ${p(vm.accel ?? '?')}${vm.uptime_seconds !== undefined ? `, up ${Math.round(vm.uptime_seconds)} s` : ''})`
      : vm.state === 'stale'
        ? `Dev VM: STALE state (${p(vm.stale_reason ?? 'QEMU is gone')}); the next dev up or dev down cleans it up`
        : 'Dev VM: not running',
  );
  const r = s.revocations;
  lines.push(
    r.state === 'verified'
      ? `Revocation list: verified, ${plural(r.entries ?? 0, 'entry', 'entries')}, ${r.ageHours} h old (${r.freshness}${r.staleReason ? `: ${p(r.staleReason)}` : ''})  ${p(r.path)}`
      : r.state === 'absent'
        ? `Revocation list: NONE cached in ${p(r.path)} (recalls are not checked; carry a pair in)`
        : `Revocation list: INVALID: ${p(r.error ?? '')}`,
  );
  const leftBytes = s.leftovers.reduce((n, l) => n + l.bytes, 0);
  lines.push(
    s.leftovers.length
      ? `Store: ${plural(s.leftovers.length, 'leftover')} of interrupted imports or pulls (${formatBytes(leftBytes)}): mvmctl dev prune removes them`
      : 'Store: no leftovers',
  );
  lines.push(
    s.auditChain.intact
      ? `Audit log: chain intact (${plural(s.auditChain.records, 'record')})`
      : `Audit log: CHAIN BROKEN${s.auditChain.brokenAt === undefined ? '' : ` at line ${s.auditChain.brokenAt}`} of ${p(s.auditChain.path ?? '')}: ${p(s.auditChain.reason ?? '')} (mvmctl audit tail shows the records)`,
  );
  lines.push('', 'Counters:');
  for (const [k, v] of Object.entries(counters)) lines.push(`  ${k.padEnd(44)} ${v}`);
  return lines.join('\n');
}

/** "verified, not recalled, valid" or "UNVERIFIED, RECALLED (reason), EXPIRED (already at install)". */
function stateWords(i: Status['images'][number]): string {
  const words = [i.verification];
  words.push(i.recalled ? `RECALLED (${printable(i.recalled)})` : 'not recalled');
  if (i.expired) words.push(`EXPIRED${i.expiredAtInstall ? ' (already at install)' : ''}`);
  if (i.running) words.push('running in the dev VM');
  return words.join(', ');
}
