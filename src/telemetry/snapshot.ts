/**
 * Everything `mvmctl metrics` exposes, gathered from this host (SPEC.md
 * section 6): the counters and histogram from the audit log, whether its
 * chain verifies, the installed images (verified, recalled, not_after), the
 * revocation cache's age, whether the dev VM runs, and how old the trust in force is. Nothing here writes:
 * a scrape never changes the host.
 *
 * One `MetricsSource` lives as long as its process: a CLI run collects once;
 * `metrics serve` keeps one and collects per scrape, so the audit log is read
 * incrementally and the revocation list is verified again only when its files
 * change.
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { auditLogPath, prebuiltDir, revocationsDir, type Config } from '../config.js';
import { recallInForce, type Revocation } from '../core/revocation.js';
import { isMvmError, MvmError } from '../errors.js';
import { readRecallMemory } from '../revocations/memory.js';
import { ImageStore } from '../store/image-store.js';
import { readReceiptIfAny } from '../store/receipt.js';
import type { LoadedTrustedRoot } from '../trust/trusted-root.js';
import { trustAge, type TrustAge } from '../trust/trust-age.js';
import { readVmState } from '../vm/state.js';
import { AuditLogReader, auditAnchorPath, type AuditView } from '../audit/log-files.js';
import type { ChainCheck } from '../audit/chain.js';
import type { MetricCounter, Tally } from '../audit/tally.js';

export interface ImageGauges {
  readonly version: string;
  /** The receipt says verified (not UNVERIFIED, and readable). */
  readonly verified: boolean;
  /** Recalled by the verified cached list or a recall remembered on this host. */
  readonly recalled: boolean;
  /** The manifest's not_after, in seconds since the epoch (absent without a readable receipt). */
  readonly notAfterSeconds?: number;
}

export interface MetricsSnapshot {
  readonly tally: Tally;
  /** The counters, keyed without the mvm_ prefix. */
  readonly counters: Readonly<Record<MetricCounter, number>>;
  readonly chain: ChainCheck;
  /** The file of the log the chain verdict names. */
  readonly chainPath: string;
  /** Audit lines that are not JSON records. */
  readonly unreadable: number;
  readonly images: readonly ImageGauges[];
  /** Absent when no list is cached (or the cached one does not verify: a warning says so). */
  readonly revocationListAgeSeconds?: number;
  readonly vm: { readonly up: boolean; readonly version?: string };
  /** The trust in force (absent when it cannot be read: a warning says why). */
  readonly trust?: {
    readonly origin: TrustAge['origin'];
    /** mvm_trusted_root_age_seconds; absent when the root names no start. */
    readonly ageSeconds?: number;
    /** mvm_tuf_root_expiry_timestamp_seconds; absent for a named file. */
    readonly tufRootExpiresSeconds?: number;
  };
  /** What an operator must hear about (a broken chain first): one line each, for stderr. */
  readonly warnings: readonly string[];
}

/** The warning a broken chain gives wherever the log is read. */
export function chainWarning(chain: ChainCheck, path: string): string | undefined {
  if (chain.intact) return undefined;
  return `the audit log's chain is BROKEN${chain.brokenAt === undefined ? '' : ` at line ${chain.brokenAt}`} of ${path}: ${chain.reason ?? 'the chain check failed'} (mvm_audit_chain_valid 0; 'mvmctl audit tail' shows the records)`;
}

interface RevocationState {
  readonly key: string;
  readonly list?: readonly Revocation[];
  readonly modifiedMs?: number;
  readonly warning?: string;
}

export class MetricsSource {
  readonly reader: AuditLogReader;
  private revocations: RevocationState | undefined;
  private trustedRoot: LoadedTrustedRoot | undefined;

  /** `trustedRoot`: the root the cached list is verified with (default: MVM_TRUSTED_ROOT or the embedded one). */
  constructor(
    readonly config: Config,
    trustedRoot?: LoadedTrustedRoot,
  ) {
    this.reader = new AuditLogReader(auditLogPath(config), auditAnchorPath(config));
    this.trustedRoot = trustedRoot;
  }

  async collect(now: Date = new Date()): Promise<MetricsSnapshot> {
    const audit = await this.readAudit();
    const warnings: string[] = [];
    const chainPath = audit.brokenPath ?? auditLogPath(this.config);
    const broken = chainWarning(audit.check, chainPath);
    if (broken) warnings.push(broken);
    const revocation = await this.revocationState();
    if (revocation.warning) warnings.push(revocation.warning);
    const remembered = await readRecallMemory(this.config)
      .then((m) => m.recalls)
      .catch((e: unknown) => {
        warnings.push(`the recalls remembered on this host cannot be read: ${messageOf(e)}`);
        return [] as Revocation[];
      });
    const images = await this.images({ listed: revocation.list, remembered }, warnings);
    const vm = await readVmState(this.config).then(
      (s) =>
        s.liveness === 'running' && s.state
          ? { up: true, version: s.state.version }
          : { up: false },
      (e: unknown) => {
        warnings.push(`the dev VM's state cannot be read: ${messageOf(e)}`);
        return { up: false };
      },
    );
    const trust = await trustAge(this.config).then(
      (t) => ({
        origin: t.origin,
        ...(t.asOfMs !== undefined && Number.isFinite(t.asOfMs)
          ? { ageSeconds: Math.max(0, (now.getTime() - t.asOfMs) / 1000) }
          : {}),
        ...(t.tufRootExpiresMs !== undefined && Number.isFinite(t.tufRootExpiresMs)
          ? { tufRootExpiresSeconds: t.tufRootExpiresMs / 1000 }
          : {}),
      }),
      (e: unknown) => {
        warnings.push(`the trust in force cannot be read: ${messageOf(e)}`);
        return undefined;
      },
    );
    return {
      tally: audit.tally,
      counters: audit.tally.counters,
      chain: audit.check,
      chainPath,
      unreadable: audit.unreadable,
      images,
      ...(revocation.modifiedMs === undefined
        ? {}
        : {
            revocationListAgeSeconds: Math.max(0, (now.getTime() - revocation.modifiedMs) / 1000),
          }),
      vm,
      ...(trust ? { trust } : {}),
      warnings,
    };
  }

  private async readAudit(): Promise<AuditView> {
    try {
      return await this.reader.refresh();
    } catch (e) {
      // An unreadable log (a directory, a symlink, no permission) is a store problem, not a crash.
      if (isMvmError(e)) throw e;
      const path = auditLogPath(this.config);
      throw new MvmError('store', `Cannot read the audit log ${path}`, {
        cause: messageOf(e),
        fix: 'The audit log must be a regular file owned by you; check the data directory (telemetry/audit.jsonl).',
        underlying: e,
      });
    }
  }

  private async images(
    inForce: { listed: readonly Revocation[] | undefined; remembered: readonly Revocation[] },
    warnings: string[],
  ): Promise<ImageGauges[]> {
    const store = new ImageStore(prebuiltDir(this.config), this.config.dataDir);
    const installed = await store.list().catch((e: unknown) => {
      warnings.push(`the installed images cannot be listed: ${messageOf(e)}`);
      return [];
    });
    const out: ImageGauges[] = [];
    for (const img of installed) {
      const read = await readReceiptIfAny(img.dir);
      const receipt = typeof read?.version === 'string' ? read : undefined;
      if (!receipt) {
        out.push({ version: img.version, verified: false, recalled: false });
        continue;
      }
      const notAfter = Date.parse(receipt.notAfter);
      out.push({
        version: img.version,
        verified: receipt.verification === 'verified',
        recalled: recallInForce(receipt, inForce) !== undefined,
        ...(Number.isFinite(notAfter) ? { notAfterSeconds: notAfter / 1000 } : {}),
      });
    }
    return out;
  }

  /**
   * The cached list, verified as every command verifies it (signature, owner,
   * schema), again only when its files changed; its age is its JSON's mtime,
   * as `status` reports it. The Sigstore libraries load only when a list is there.
   */
  private async revocationState(): Promise<RevocationState> {
    const dir = revocationsDir(this.config);
    const key = await listKey(dir);
    if (key === undefined) return { key: '' };
    if (this.revocations?.key === key) return this.revocations;
    let state: RevocationState;
    try {
      const [{ readCachedRevocations }, { loadTrustedRoot }] = await Promise.all([
        import('../revocations/cache.js'),
        import('../trust/trusted-root.js'),
      ]);
      this.trustedRoot ??= await loadTrustedRoot(this.config.trustedRootPath, {
        dataDir: this.config.dataDir,
      });
      const cached = await readCachedRevocations(
        dir,
        this.config.releaseRepo,
        this.trustedRoot,
        new Date(),
      );
      state =
        cached.state === 'verified'
          ? {
              key,
              list: cached.list.revocations,
              modifiedMs: Date.parse(cached.modifiedAt),
            }
          : { key };
    } catch (e) {
      state = {
        key,
        warning: `the cached revocation list in ${dir} is not usable, so no age is reported and only the recalls remembered on this host count: ${messageOf(e)}`,
      };
    }
    this.revocations = state;
    return state;
  }
}

/** What identifies the cached pair's content (undefined: no list); a change means verifying again. */
async function listKey(dir: string): Promise<string | undefined> {
  const parts: string[] = [];
  for (const f of ['revoked-versions.json', 'revoked-versions.json.bundle']) {
    const st = await fs.stat(join(dir, f)).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return undefined;
      return { dev: -1, ino: -1, size: -1, mtimeMs: Date.now(), ctimeMs: 0 }; // unreadable: verify (and say why)
    });
    if (st === undefined) {
      if (f === 'revoked-versions.json') return undefined;
      parts.push('-');
      continue;
    }
    parts.push(`${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`);
  }
  const real = await fs.realpath(dir).catch(() => dir);
  return `${real}|${parts.join('|')}`;
}

const messageOf = (e: unknown): string =>
  (e as Error)?.message ?? (typeof e === 'string' ? e : 'an unknown error');
