import { homedir } from 'node:os';
import { configFrom, type Config } from '../../config.js';
import { isMvmError, MvmError } from '../../errors.js';
import { printable } from '../../core/printable.js';
import {
  humanDuration,
  TRUST_TOLERANCE_MS,
  trustFreshness,
  type RoleExpiries,
  type TrustFreshness,
} from '../../core/trust-policy.js';
import { audit } from '../../audit/record.js';
import {
  installedAnchor,
  installTrust,
  readInstalledTrust,
  type TrustRecord,
} from '../../trust/installed-trust.js';
import { embeddedTufRootBytes, loadTrustedRoot } from '../../trust/trusted-root.js';
import { readTrustFile } from '../../trust/trust-file.js';
import { parseCommand } from '../args.js';
import { jsonLine, type Output } from '../render.js';

/**
 * `mvmctl trust import | status`: the TUF-verified Sigstore trusted root of
 * this host. Flags, help and exit codes: their rows of src/cli/spec.ts.
 */
export async function trustCommand(args: string[], io: Output): Promise<number> {
  const [sub, ...rest] = args;
  const config = (): Config => configFrom(process.env, homedir());
  switch (sub) {
    case 'import': {
      const { values, positionals } = parseCommand('trust import', rest);
      if (positionals.length !== 1)
        throw new MvmError(
          'usage',
          positionals.length === 0
            ? 'mvmctl trust import needs the trust bundle directory'
            : 'mvmctl trust import takes one directory',
          {
            fix: 'Run mvmctl trust import DIR, DIR being what mvmctl trust fetch --out DIR wrote.',
          },
        );
      return importBundle(config(), positionals[0]!, values.json === true, io);
    }
    case 'status': {
      const { values } = parseCommand('trust status', rest);
      return status(config(), values.json === true, io);
    }
    default:
      throw new MvmError('usage', `unknown command "trust ${sub ?? ''}"`, {
        fix: "Run 'mvmctl trust --help'.",
      });
  }
}

const freshnessLine = (f: TrustFreshness): string =>
  f.state === 'fresh'
    ? 'fresh'
    : `${f.state === 'stale' ? 'STALE' : 'EXPIRED'}: ${f.role}.json expired ${humanDuration(f.pastMs)} ago (accepted up to ${humanDuration(TRUST_TOLERANCE_MS)} past its expiry)`;

async function importBundle(
  config: Config,
  dir: string,
  json: boolean,
  io: Output,
): Promise<number> {
  const now = new Date();
  const { verifyTrustBundle } = await import('../../trust/tuf-bundle.js');
  let result;
  try {
    result = await installTrust(
      config.dataDir,
      async (before) =>
        verifyTrustBundle(
          dir,
          before ? await installedAnchor(before) : { root: await firstTufRoot(config) },
          now,
        ),
      dir,
      () => now,
    );
  } catch (e) {
    if (isMvmError(e))
      await audit(
        config,
        { event: 'trust.import', outcome: 'failed', code: e.code, message: e.message },
        now,
      ).catch(() => undefined);
    throw e;
  }
  const { verified: v, installed, unchanged } = result;
  await audit(
    config,
    {
      event: 'trust.import',
      outcome: unchanged ? 'unchanged' : 'ok',
      trust: {
        ...v.versions,
        trustedRootSha256: v.trustedRootSha256,
        freshness: v.freshness.state,
      },
    },
    now,
  );
  const loaded = await loadTrustedRoot(undefined, { dataDir: config.dataDir });
  const authorities = {
    tlogs: loaded.root.tlogs.map((t) => t.baseUrl),
    certificateAuthorities: loaded.root.certificateAuthorities.length,
    timestampAuthorities: loaded.root.timestampAuthorities.length,
  };
  if (json) {
    io.out(
      jsonLine({
        installed: !unchanged,
        unchanged,
        trustedRoot: { source: loaded.source, sha256: loaded.sha256 },
        versions: v.versions,
        expires: v.expires,
        anchorRootVersion: v.anchorRootVersion,
        rotations: v.rotations,
        freshness: v.freshness,
        directory: installed.dir,
        authorities,
      }),
    );
    return 0;
  }
  if (v.freshness.state === 'stale')
    io.err(
      `warning: the bundle is ${freshnessLine(v.freshness)}; carry a newer one from mvmctl trust fetch soon`,
    );
  io.out(
    unchanged
      ? `✓ trust bundle verified: already installed, nothing changed (${loaded.source})`
      : `✓ trust bundle verified and installed: ${loaded.source}`,
  );
  io.out(
    `  root chain:   v${v.anchorRootVersion} → v${v.versions.root}${v.rotations.length ? ` (rotations ${v.rotations.map((r) => `v${r}`).join(', ')})` : ' (no rotation)'}`,
  );
  io.out(
    `  metadata:     timestamp v${v.versions.timestamp}, snapshot v${v.versions.snapshot}, targets v${v.versions.targets}; ${freshnessLine(v.freshness)}`,
  );
  io.out(`  expires:      timestamp ${v.expires.timestamp}, root ${v.expires.root}`);
  io.out(`  trusted root: sha256 ${v.trustedRootSha256}`);
  io.out(
    `  authorities:  ${authorities.tlogs.length} transparency logs (${authorities.tlogs.map((u) => printable(u, 100)).join(', ')}), ${authorities.certificateAuthorities} CAs, ${authorities.timestampAuthorities} timestamp authorities`,
  );
  return 0;
}

/**
 * The TUF root a host without installed trust starts from: MVM_TUF_ROOT (a
 * private Sigstore deployment's TUF repository), else the embedded one. Held
 * to the trusted root's owner and mode rule: it decides every rotation after it.
 */
async function firstTufRoot(config: Config): Promise<Buffer> {
  if (config.tufRootPath === undefined) return embeddedTufRootBytes();
  return readTrustFile(config.tufRootPath, 'TUF root', 512_000, 'trusted-root');
}

/** What `trust status` and `status` report about the trust in force. */
export interface TrustStatus {
  readonly origin: 'embedded' | 'installed' | 'file';
  readonly source: string;
  readonly sha256: string;
  readonly tufRootVersion: number;
  readonly installed?: TrustRecord;
  /** Installed only: the freshness of its metadata now. */
  readonly freshness?: TrustFreshness;
  /** The TUF root's own expiry: past it, the trust in force is out of date (status --check). */
  readonly rootExpires: string;
  readonly rootExpired: boolean;
}

export async function trustStatus(config: Config, now: Date): Promise<TrustStatus> {
  const loaded = await loadTrustedRoot(config.trustedRootPath, { dataDir: config.dataDir });
  const installed = await readInstalledTrust(config.dataDir);
  const first = installed
    ? undefined
    : (JSON.parse((await firstTufRoot(config)).toString('utf8')).signed as {
        version: number;
        expires: string;
      });
  const rootExpires: string = installed ? installed.record.expires.root : first!.expires;
  return {
    origin: loaded.origin,
    source: loaded.source,
    sha256: loaded.sha256,
    tufRootVersion: installed ? installed.record.versions.root : first!.version,
    ...(installed
      ? {
          installed: installed.record,
          freshness: trustFreshness(installed.record.expires as RoleExpiries, now),
        }
      : {}),
    rootExpires,
    rootExpired: Date.parse(rootExpires) < now.getTime(),
  };
}

async function status(config: Config, json: boolean, io: Output): Promise<number> {
  const now = new Date();
  const s = await trustStatus(config, now);
  if (json) {
    io.out(jsonLine(s));
    return 0;
  }
  io.out(`Trusted root in force: ${printable(s.source)} (sha256 ${s.sha256.slice(0, 16)}…)`);
  if (s.origin === 'file')
    io.out(
      '  named by --trusted-root or MVM_TRUSTED_ROOT: not TUF-verified; an installed root is not used',
    );
  if (s.installed) {
    const r = s.installed;
    io.out(
      `  TUF versions: root v${r.versions.root}, timestamp v${r.versions.timestamp}, snapshot v${r.versions.snapshot}, targets v${r.versions.targets}`,
    );
    io.out(`  verified:     ${r.verifiedAt} (from ${printable(r.importedFrom, 200)})`);
    io.out(`  expires:      timestamp ${r.expires.timestamp}, root ${r.expires.root}`);
    if (s.freshness) io.out(`  metadata:     ${freshnessLine(s.freshness)}`);
  } else {
    io.out(
      `  ${config.tufRootPath ? `TUF root v${s.tufRootVersion} of MVM_TUF_ROOT` : `embedded TUF root v${s.tufRootVersion}`} (expires ${s.rootExpires}); no trust bundle imported on this host`,
    );
  }
  if (s.rootExpired)
    io.out(
      `  ✗ the TUF root expired ${s.rootExpires}: carry a bundle from mvmctl trust fetch and run mvmctl trust import DIR`,
    );
  return 0;
}
