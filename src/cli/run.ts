import { MvmError } from '../errors.js';
import { renderError, stdio, type Output } from './render.js';

export const MAIN_HELP = `mvmctl — get a supply-chain-verified microVM dev image onto a host, and boot it

Usage: mvmctl <command> [flags]

Commands:
  dev import-image  install a verified dev image from local files (air-gapped)
  dev up            boot the installed dev image in a QEMU VM (detached, copy-on-write disk)
  dev status        whether the dev VM runs, and what it booted (--json)
  dev logs          the guest console's log (-f follows it)
  dev console       attach to the running dev VM's console (alias dev shell; Ctrl-] detaches)
  dev down          power the dev VM off
  verify-blob       verify a Sigstore/cosign signature offline (cosign-compatible flags)
  status            installed images, revocation cache, trusted root, counters (--json)
  metrics           verification counters and gauges: Prometheus text, --json, --textfile DIR
  metrics serve     serve GET /metrics for Prometheus (--listen, default 127.0.0.1:9464)
  revocations       the signed revocation list: import, status, refresh
  audit tail        the last audit records, with the hash chain checked

Global flags:
  --help, -h      show help (also after a command: mvmctl verify-blob --help)
  --version       print the mvmctl version (release manifests are pinned to it)
  --json          machine-readable output
  --debug         show internal detail on errors

Environment:
  MVM_TRUSTED_ROOT   Sigstore trusted_root.json to use instead of the embedded public-good root
  MVM_DATA_DIR       data directory (default ~/.mvm)
  MVM_CACHE_DIR      cache directory (default $XDG_CACHE_HOME/mvm or ~/.cache/mvm)
  MVM_RELEASE_REPO   repository whose workflows sign releases (default tinylabscom/mvm)
  MVM_REQUIRE_FRESH_REVOCATIONS=1
                     refuse to install without a revocation list fresher than 7 days, as
                     --require-fresh-revocations does (fleet configuration)
  MVM_AUDIT_SOCKET   unix datagram socket (syslog / the journal, e.g. /dev/log) that also
                     receives every audit record as it is written
  MVM_AUDIT_MAX_BYTES  rotate the audit log past this size (default 16 MiB; 5 rotated files
                     are kept, the totals of older ones carried in a chained checkpoint)
  MVM_MAX_KERNEL_BYTES  largest kernel accepted, checked before any hashing (default 512 MiB)
  MVM_MAX_ROOTFS_BYTES  largest rootfs accepted, checked before any hashing (default 64 GiB)

Audit log: every verification outcome is appended to ~/.mvm/telemetry/audit.jsonl,
hash-chained, with its last sequence number and hash kept in an anchor outside the log.
The chain and anchor show a record edited, reordered or removed, and a log shortened or
deleted, by anything that does not rewrite both. They do not prove the log genuine: a
local writer with your privileges can rewrite the log and its anchor together. Shipping
each record off the host (MVM_AUDIT_SOCKET) is what defends against that.

Exit status: 0 ok, 2 usage, 3 input, 10 signature, 11 version, 12 arch, 13 revoked,
14 digest, 15 manifest, 16 network, 17 store, 18 no fresh revocation list where one is
required, 130 interrupted.
`;

type Command = (args: string[], io: Output) => Promise<number>;

// Commands load lazily so `mvmctl --version` never pays for the Sigstore libraries.
const COMMANDS: Record<string, () => Promise<Command>> = {
  'verify-blob': async () => (await import('./commands/verify-blob.js')).verifyBlobCommand,
  dev: async () => (await import('./commands/dev.js')).devCommand,
  metrics: async () => (await import('./commands/metrics.js')).metricsCommand,
  status: async () => (await import('./commands/status.js')).statusCommand,
  revocations: async () => (await import('./commands/revocations.js')).revocationsCommand,
  audit: async () => (await import('./commands/audit.js')).auditCommand,
};

const PLANNED = new Set<string>();

export async function run(argv: string[], io: Output = stdio): Promise<number> {
  const json = argv.includes('--json');
  const debug = argv.includes('--debug');
  try {
    const [first, ...rest] = argv;
    if (first === '--version' || first === 'version') {
      const { MVMCTL_VERSION } = await import('../version.js');
      io.out(json ? JSON.stringify({ version: MVMCTL_VERSION }) : MVMCTL_VERSION);
      return 0;
    }
    if (first === undefined || first === '--help' || first === '-h' || first === 'help') {
      io.out(MAIN_HELP);
      return first === undefined ? 2 : 0;
    }
    const load = COMMANDS[first];
    if (load) return await (await load())(rest, io);
    if (PLANNED.has(first)) {
      throw new MvmError('not-implemented', `'mvmctl ${first}' is not built yet in this version`, {
        fix: 'See mvmctl --help for what is built; the project issues list what is planned.',
      });
    }
    throw new MvmError('usage', `unknown command ${JSON.stringify(first)}`, {
      fix: "Run 'mvmctl --help' to list the commands.",
    });
  } catch (e) {
    return renderError(e, { json, debug }, io);
  }
}
