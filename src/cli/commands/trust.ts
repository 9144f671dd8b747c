import { homedir } from 'node:os';
import { configFrom, type Config } from '../../config.js';
import { MvmError, ONLINE_FETCH_FAILED } from '../../errors.js';
import { printable } from '../../core/printable.js';
import {
  humanDuration,
  importDeadlineMs,
  TRUST_TOLERANCE_MS,
  type TrustFreshness,
} from '../../core/trust-policy.js';
import { fetchTrust, importTrustBundle, tufRepository } from '../../pipeline/carried-trust.js';
import { loadTrustedRoot } from '../../trust/trusted-root.js';
import { trustStatus } from '../../trust/trust-status.js';
import { parseCommand } from '../args.js';
import { jsonLine, type Output } from '../render.js';

/**
 * `mvmctl trust fetch | import | status`: the TUF-verified Sigstore trusted root of
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
    case 'fetch': {
      const { values } = parseCommand('trust fetch', rest);
      return fetchBundle(
        config(),
        {
          out: values.out ?? DEFAULT_OUT,
          repository: values.repository,
          offline: values.offline === true,
        },
        values.json === true,
        io,
      );
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
  const { verified: v, installed, unchanged } = await importTrustBundle(config, dir, new Date());
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

const DEFAULT_OUT = 'trust-bundle';

async function fetchBundle(
  config: Config,
  o: { out: string; repository: string | undefined; offline: boolean },
  json: boolean,
  io: Output,
): Promise<number> {
  const repository = tufRepository(config, o.repository);
  if (o.offline || config.offline)
    throw new MvmError(
      'network',
      `${ONLINE_FETCH_FAILED}: offline (MVM_OFFLINE=1 or --offline), nothing was requested`,
      {
        cause: 'trust fetch downloads from the TUF repository, and the network is off by request',
        fix: 'Run trust fetch on a connected host and carry its output here for mvmctl trust import DIR.',
      },
    );
  const { verified: v } = await fetchTrust(config, repository, o.out, new Date());
  if (json) {
    io.out(
      jsonLine({
        out: o.out,
        repository,
        versions: v.versions,
        expires: v.expires,
        anchorRootVersion: v.anchorRootVersion,
        rotations: v.rotations,
        trustedRootSha256: v.trustedRootSha256,
      }),
    );
    return 0;
  }
  io.out(`✓ trust bundle written to ${printable(o.out)} from ${repository}`);
  io.out(
    `  root chain:   v${v.anchorRootVersion} → v${v.versions.root}${v.rotations.length ? ` (${v.rotations.length} rotation files)` : ' (no rotation)'}`,
  );
  io.out(
    `  metadata:     timestamp v${v.versions.timestamp}, snapshot v${v.versions.snapshot}, targets v${v.versions.targets}`,
  );
  io.out(
    `  import by:    ${new Date(importDeadlineMs(Date.parse(v.expires.timestamp))).toISOString()} (timestamp expires ${v.expires.timestamp}, plus ${humanDuration(TRUST_TOLERANCE_MS)})`,
  );
  io.out(`  carry ${printable(o.out)} to the air-gapped host and run: mvmctl trust import DIR`);
  return 0;
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
