/**
 * Every mvmctl command, flag, environment variable and exit code, declared
 * once. Flag parsing (args.ts), every --help page (help.ts), the shell
 * completion scripts (completion.ts) and the man page (man.ts) are rendered
 * from this table, so they cannot disagree with each other or with what the
 * parser accepts. Data only: no I/O, nothing here runs a command.
 */
import { ERROR_TABLE } from '../errors.js';
import { MVMCTL_VERSION } from '../version.js';

export interface FlagSpec {
  /** The long name without dashes; a one-letter name is a short-only flag (-n). */
  readonly name: string;
  readonly short?: string;
  readonly type: 'boolean' | 'string';
  /** The value's placeholder in help and usage (FILE, DIR, N); string flags only. */
  readonly value?: string;
  /** One line of help; the renderers wrap it. */
  readonly help: string;
  /** May be given more than once; every value is kept. */
  readonly multiple?: boolean;
  /** The only values accepted (checked by the parser) and what completion offers. */
  readonly choices?: readonly string[];
  /** What completion offers for the value; FILE and DIR placeholders imply file and dir. */
  readonly complete?: 'file' | 'dir' | 'none';
  /** The help section it is listed under, when not the command's own "Flags". */
  readonly section?: string;
  /** Accepted (or refused with a reason) for cosign compatibility only: never offered by completion. */
  readonly compatOnly?: true;
}

export interface OperandSpec {
  readonly name: string;
  readonly complete?: 'file' | 'dir' | 'none';
  readonly choices?: readonly string[];
}

/** An environment variable a command reads, with what it means there when that says more than the global line. */
export type EnvRef = string | readonly [name: string, note: string];

/** An exit code a command can end with, with what it means there (required for 0). */
export type ExitRef = readonly [code: ExitCode, note?: string];

export interface CommandSpec {
  /** One line, for command lists and completion descriptions. */
  readonly summary: string;
  /** Full usage lines, each starting with "mvmctl ". */
  readonly usage: readonly string[];
  /** Prose, already wrapped; lines indented by two spaces are shown as they are (examples). */
  readonly description: string;
  readonly operands?: readonly OperandSpec[];
  readonly flags: readonly FlagSpec[];
  readonly env: readonly EnvRef[];
  readonly exit: readonly ExitRef[];
  /** Sections after the exit status (an example). */
  readonly sections?: readonly { readonly title: string; readonly body: string }[];
  /** Other names of the command's last word (dev shell for dev console). */
  readonly aliases?: readonly string[];
  /** A group: only subcommands, no work of its own. */
  readonly group?: true;
  /** Hidden from the command lists (still parsed and completed). */
  readonly hidden?: true;
}

/** Every environment variable mvmctl reads, one line each (mvmctl --help lists them all). */
export const ENVIRONMENT: readonly {
  readonly name: string;
  readonly value?: string;
  readonly help: string;
}[] = [
  { name: 'MVM_DATA_DIR', help: 'data directory: image store, dev VM, audit log (default ~/.mvm)' },
  {
    name: 'MVM_CACHE_DIR',
    help: 'cache directory holding revocations/ (default $XDG_CACHE_HOME/mvm or ~/.cache/mvm)',
  },
  { name: 'XDG_CACHE_HOME', help: 'the cache directory is $XDG_CACHE_HOME/mvm (when absolute)' },
  {
    name: 'HOME',
    help: 'the defaults live under it (~/.mvm, ~/.cache/mvm); empty or relative is refused',
  },
  {
    name: 'MVM_TRUSTED_ROOT',
    help: 'Sigstore trusted_root.json to use instead of the embedded public-good root',
  },
  {
    name: 'MVM_RELEASE_REPO',
    help: 'repository whose workflows sign releases and revocation lists (default tinylabscom/mvm)',
  },
  {
    name: 'MVM_RELEASE_BASE_URL',
    help: 'release location (default https://github.com/{repo}/releases/download); an internal http(s) mirror with the same layout works (every byte is verified)',
  },
  {
    name: 'MVM_RELEASE_TOKEN',
    help: "bearer token for a private mirror; sent only to the release location's own origin, never to a host a redirect names",
  },
  {
    name: 'MVM_HTTP_TIMEOUT_SECONDS',
    help: 'bound for connecting, for the response headers and for a silent body (default 20); failures are retried 3 times',
  },
  { name: 'HTTPS_PROXY', help: 'proxy for https requests (https_proxy too)' },
  { name: 'HTTP_PROXY', help: 'proxy for http requests (http_proxy too)' },
  { name: 'NO_PROXY', help: 'hosts reached without a proxy (no_proxy too)' },
  { name: 'MVM_OFFLINE', value: '1', help: 'never use the network' },
  {
    name: 'MVM_TUF_ROOT',
    help: 'TUF root.json that trust import and trust fetch start from before a trust bundle is installed (default: the embedded public-good root; a private Sigstore deployment names its own)',
  },
  {
    name: 'MVM_TUF_REPOSITORY',
    help: 'TUF repository trust fetch updates from (default https://tuf-repo-cdn.sigstore.dev)',
  },
  {
    name: 'MVM_COMPILE_CACHE',
    value: '0',
    help: "turn off Node.js's compile cache of mvmctl's modules (kept in the cache directory's compile-cache/)",
  },
  {
    name: 'MVM_REQUIRE_FRESH_REVOCATIONS',
    value: '1',
    help: 'refuse to install or boot without a revocation list fresher than 7 days, as --require-fresh-revocations does (fleet configuration)',
  },
  {
    name: 'MVM_MAX_KERNEL_BYTES',
    help: 'largest kernel accepted, checked before any hashing (default 512 MiB)',
  },
  {
    name: 'MVM_MAX_ROOTFS_BYTES',
    help: 'largest rootfs (and initrd) accepted, checked before any hashing (default 64 GiB)',
  },
  {
    name: 'MVM_CONSOLE_LOG_MAX_BYTES',
    help: "bound of the guest console's log, console.log and console.log.1 together (default 64 MiB, at least 64 KiB): past half of it console.log becomes console.log.1, so the oldest output goes first",
  },
  {
    name: 'MVM_AUDIT_SOCKET',
    help: 'unix datagram socket (syslog / the journal, e.g. /dev/log) that also receives every audit record as it is written',
  },
  {
    name: 'MVM_AUDIT_MAX_BYTES',
    help: 'rotate the audit log past this size (default 16 MiB; 5 rotated files are kept, the totals of older ones carried in a chained checkpoint)',
  },
  {
    name: 'MVM_SKIP_COSIGN_VERIFY',
    value: '1',
    help: 'emergency exit only: skip the signature check; loud, counted, audited, image marked UNVERIFIED',
  },
  {
    name: 'MVM_SKIP_HASH_VERIFY',
    value: '1',
    help: 'emergency exit only: skip the digest comparison; loud, counted, audited, image marked UNVERIFIED',
  },
  { name: 'PATH', help: 'where QEMU (qemu-system-x86_64, qemu-img) is found' },
];

/**
 * What each exit code means, the same everywhere (each is an `exit` of
 * src/errors.ts ERROR_TABLE, or 0). A command's help adds what the code
 * means for that command after the label.
 */
export const EXIT_STATUS = {
  0: { label: 'success', meaning: 'done' },
  1: {
    label: 'internal error',
    meaning: 'a bug, or a program mvmctl runs (QEMU, virtiofsd) failed; --debug shows more',
  },
  2: { label: 'usage', meaning: 'a flag, argument or environment variable is wrong' },
  3: {
    label: 'input',
    meaning:
      'a file, directory or trusted root given is missing or unusable, or what the command works on is absent',
  },
  10: {
    label: 'signature',
    meaning:
      'a signature does not verify; also a revocation list that would roll back, and a broken audit chain',
  },
  11: { label: 'version', meaning: 'the manifest is for another mvmctl version' },
  12: { label: 'arch', meaning: "the manifest is for another arch than this host's" },
  13: { label: 'revoked', meaning: 'the version is recalled by the signed revocation list' },
  14: { label: 'digest', meaning: "a file's SHA-256 is not the signed one" },
  15: {
    label: 'manifest',
    meaning: 'the manifest (or the revocation list) is not valid',
  },
  16: {
    label: 'network',
    meaning:
      'the release location cannot be reached, or the network is not allowed (MVM_OFFLINE=1)',
  },
  17: { label: 'store', meaning: 'the data or cache directory cannot be read or written' },
  18: {
    label: 'no fresh revocation list',
    meaning:
      'one fresher than 7 days is required (--require-fresh-revocations, MVM_REQUIRE_FRESH_REVOCATIONS=1)',
  },
  19: {
    label: 'unhealthy',
    meaning:
      "status --check found a problem: this mvmctl's image recalled, UNVERIFIED or expired, the revocation list not verifying, or the audit chain broken",
  },
  130: { label: 'interrupted', meaning: 'Ctrl-C (SIGINT) or SIGTERM stopped it' },
  255: {
    label: 'agent',
    meaning:
      'dev exec could not run the command: no dev VM, no guest agent answering, the agent gone, or --timeout reached (a guest command that itself exits 255 looks the same, as with ssh)',
  },
} as const satisfies Record<number, { label: string; meaning: string }>;

export type ExitCode = keyof typeof EXIT_STATUS;

/** Every exit code mvmctl can end with: 0 and each exit of ERROR_TABLE. */
export const EXIT_CODES: readonly number[] = [
  ...new Set([0, ...Object.values(ERROR_TABLE).map((c) => c.exit)]),
].sort((a, b) => a - b);

/** Flags every command accepts; --json is listed by the commands that print JSON. */
export const COMMON_FLAGS = [
  { name: 'json', type: 'boolean', help: 'machine-readable output' },
  { name: 'debug', type: 'boolean', help: 'show internal detail on errors' },
  { name: 'help', short: 'h', type: 'boolean', help: 'show this help' },
] as const satisfies readonly FlagSpec[];

const JSON_RESULT = {
  name: 'json',
  type: 'boolean',
  help: 'print one JSON object with the result (or the error)',
} as const;

const TRUSTED_ROOT = {
  name: 'trusted-root',
  type: 'string',
  value: 'FILE',
  help: 'Sigstore trusted_root.json (default: $MVM_TRUSTED_ROOT, else the root installed by trust import, else the embedded public-good root)',
} as const;

const OFFLINE_REFUSE = {
  name: 'offline',
  type: 'boolean',
  help: 'refuse at once, requesting nothing (as MVM_OFFLINE=1)',
} as const;

const REQUIRE_FRESH = {
  name: 'require-fresh-revocations',
  type: 'boolean',
  help: 'fail when no revocation list is cached, or it is older than 7 days (also MVM_REQUIRE_FRESH_REVOCATIONS=1)',
} as const;

const ARCHES = ['x86_64', 'aarch64'] as const;

/** What dev fetch, dev pull and a dev up that pulls read to reach the release location. */
const NETWORK_ENV = [
  [
    'MVM_RELEASE_BASE_URL',
    'release location (default https://github.com/{repo}/releases/download); files are {base}/v{version}/{file}, the revocation list {base}/revocations/revoked-versions.json and its .bundle; an internal http(s) mirror with the same layout works (every byte is verified)',
  ],
  'MVM_RELEASE_REPO',
  'MVM_RELEASE_TOKEN',
  'HTTPS_PROXY',
  'HTTP_PROXY',
  'NO_PROXY',
  'MVM_HTTP_TIMEOUT_SECONDS',
  ['MVM_OFFLINE', 'refuse at once: nothing is requested'],
  ['MVM_TRUSTED_ROOT', 'as --trusted-root'],
  [
    'MVM_TUF_REPOSITORY',
    "the TUF repository the set's trust bundle comes from (default https://tuf-repo-cdn.sigstore.dev)",
  ],
  ['MVM_MAX_KERNEL_BYTES', 'largest kernel downloaded'],
  ['MVM_MAX_ROOTFS_BYTES', 'largest rootfs (and initrd) downloaded'],
] as const satisfies readonly EnvRef[];

/**
 * The commands, in the order help and the man page list them. The key is the
 * command's path (the words after mvmctl).
 */
export const COMMANDS = {
  dev: {
    group: true,
    summary: 'the dev image and the dev VM: fetch, pull, import-image, images, rm, prune, up, …',
    usage: ['mvmctl dev <command> [flags]'],
    description: `Get a verified dev image onto this host (online or from files carried in),
manage the installed versions, and run the dev VM from one.`,
    flags: [],
    env: [],
    exit: [
      [0, 'help shown'],
      [2, 'no command, or an unknown one'],
    ],
  },
  'dev fetch': {
    summary: 'download a verified transfer set for an air-gapped host',
    usage: ['mvmctl dev fetch [--version V] [--arch A] [--out DIR] [flags]'],
    description: `Prepare a transfer set for an air-gapped host, on a connected host. The
manifest and its bundle are downloaded first and the signature verified
(the project's release workflow, at the tag of the version) before any large
download. Then the kernel, rootfs (and initrd when the manifest lists one) are
downloaded at once, each into NAME.partial while hashed, and renamed to NAME
only when its SHA-256 is the one the signed manifest records. The signed
revocation list is fetched and verified too, so the set carries a fresh list;
a recalled release stops here (exit 13) unless --allow-recalled.

The set also carries a trust bundle in DIR/trust (as mvmctl trust fetch
writes it): Sigstore's trusted root from a TUF update of its repository
(MVM_TUF_REPOSITORY), anchored on the TUF root built into mvmctl. The set is
verified here with that root, and dev import-image --dir imports it first on
the air-gapped host, so releases and revocation lists signed with keys
Sigstore added since mvmctl was built verify there. It must be imported
within 7 days of its timestamp's expiry (the summary says by when). Not
carried with --no-trust-bundle, or when --trusted-root / MVM_TRUSTED_ROOT
names the trusted root.

Interrupted downloads resume: a failed request is retried, a cut connection
continues with an HTTP Range request, and after Ctrl-C (exit 130) the same
command picks up the NAME.partial files. A file already in DIR with the right
digest is not downloaded again. There is no unsigned fallback, ever.

Then carry DIR to the air-gapped host and run:
  mvmctl dev import-image --dir DIR      (installs, trust and revocation list included)
  mvmctl dev up`,
    flags: [
      {
        name: 'version',
        type: 'string',
        value: 'V',
        help: `release to fetch (default: this mvmctl's, ${MVMCTL_VERSION}); the air-gapped host's mvmctl must be the same version`,
      },
      {
        name: 'arch',
        type: 'string',
        value: 'A',
        choices: ARCHES,
        help: "x86_64 or aarch64 (default: this host's)",
      },
      {
        name: 'out',
        type: 'string',
        value: 'DIR',
        help: 'where the set goes, created when missing (default ./mvm-dev-v{version}-{arch})',
      },
      {
        name: 'allow-recalled',
        type: 'boolean',
        help: 'fetch a recalled release anyway (for investigation; import refuses it)',
      },
      {
        name: 'no-trust-bundle',
        type: 'boolean',
        help: 'leave the trust bundle (DIR/trust) out: the air-gapped host verifies with the trust it has; no request to the TUF repository',
      },
      TRUSTED_ROOT,
      OFFLINE_REFUSE,
      { ...JSON_RESULT, help: `${JSON_RESULT.help}; no progress` },
    ],
    env: NETWORK_ENV,
    exit: [
      [0, 'the set is complete'],
      [2],
      [3, '--out unusable'],
      [10, 'the manifest or the revocation list'],
      [11, 'the location serves another version'],
      [12, 'another arch'],
      [13, 'the release is recalled (see --allow-recalled)'],
      [14, "a file's SHA-256 is not the signed one (its partial is deleted)"],
      [15],
      [16, 'the URL and the cause are named; also MVM_OFFLINE=1 or --offline'],
      [130, 'partials kept for the next run'],
    ],
  },
  'dev pull': {
    summary: 'download and install the dev image of this mvmctl',
    usage: ['mvmctl dev pull [flags]'],
    description: `Download and install the dev image of this mvmctl (v${MVMCTL_VERSION}) for this host's
arch, on a connected host. The transfer set (as mvmctl dev fetch makes it) is
downloaded into a private directory under the data directory
(~/.mvm/dev/downloads/), then installed by the same verification an
air-gapped dev import-image runs: signature, version, arch, max-age, the
revocation list (the one just downloaded, rollback-checked), the digests, one
atomic publish into ~/.mvm/dev/prebuilt/v{version}/. The downloads are removed
after the install, and kept for resume when it fails or is interrupted.
mvmctl dev up runs this itself when no image is installed (unless offline).`,
    flags: [
      TRUSTED_ROOT,
      { ...REQUIRE_FRESH, help: `${REQUIRE_FRESH.help}; see dev import-image` },
      OFFLINE_REFUSE,
      { ...JSON_RESULT, help: `${JSON_RESULT.help}; no progress` },
    ],
    env: [...NETWORK_ENV, 'MVM_DATA_DIR', 'MVM_REQUIRE_FRESH_REVOCATIONS'],
    exit: [
      [0, 'installed (or already installed)'],
      [2],
      [10],
      [11],
      [12],
      [13],
      [14],
      [15],
      [16],
      [17],
      [18],
      [130, 'downloads kept for the next run'],
    ],
  },
  'dev import-image': {
    summary: 'install a verified dev image from local files (air-gapped host)',
    usage: [
      'mvmctl dev import-image --manifest M --bundle B --vmlinux K --rootfs R [--initrd I] [flags]',
      'mvmctl dev import-image --dir D [flags]',
    ],
    description: `Install a dev image on an air-gapped host from the four files of a release
set (five when its manifest lists an initrd), carried in by hand. Runs the
same verification as an online install: the manifest's cosign signature
against the project's release workflow identity, the version pin
(manifest.version == mvmctl --version), the arch, the 90-day max-age (warns
only), the cached revocation list, and the SHA-256 of the kernel and rootfs
(and initrd) as they are copied into ~/.mvm/dev/prebuilt/v{version}/. The only
network use is refreshing a revocation list older than 24 hours (skipped with
--offline, and never a reason to fail).

Nothing is written to the store unless every check passes; your files are
never modified. Fields a newer release adds to a schema_version 1 manifest are
accepted (they are signed), recorded in the receipt and shown by mvmctl status,
and never acted on; an unknown schema_version is refused (exit 15).`,
    flags: [
      { name: 'manifest', type: 'string', value: 'FILE', help: 'dev-image-{arch}.manifest.json' },
      {
        name: 'bundle',
        type: 'string',
        value: 'FILE',
        help: 'dev-image-{arch}.manifest.json.bundle',
      },
      { name: 'vmlinux', type: 'string', value: 'FILE', help: 'dev-vmlinux-{arch}' },
      { name: 'rootfs', type: 'string', value: 'FILE', help: 'dev-rootfs-{arch}.ext4' },
      {
        name: 'initrd',
        type: 'string',
        value: 'FILE',
        help: 'dev-initrd-{arch}: required when the manifest lists an initrd, refused (exit 3) when it lists none',
      },
      {
        name: 'dir',
        type: 'string',
        value: 'DIR',
        help: "find the files of this host's arch by their release names in DIR (the initrd too, when the manifest lists one), e.g. a transfer set from mvmctl dev fetch; a trust bundle in DIR/trust is verified and imported first (as mvmctl trust import does) unless older than the installed trust or expired beyond 7 days, and the set is checked with its trusted root; a revocation pair in DIR (revoked-versions.json + .bundle) is verified and installed before the recall check, unless older than the cached list",
      },
      TRUSTED_ROOT,
      REQUIRE_FRESH,
      {
        name: 'offline',
        type: 'boolean',
        help: 'never try the network (also MVM_OFFLINE=1); a cache older than 24 hours is otherwise refreshed from the release location first',
      },
      JSON_RESULT,
    ],
    env: [
      'MVM_DATA_DIR',
      ['MVM_CACHE_DIR', 'cache directory holding revocations/ (default ~/.cache/mvm)'],
      'XDG_CACHE_HOME',
      ['MVM_TRUSTED_ROOT', 'as --trusted-root'],
      ['MVM_RELEASE_REPO', 'repository whose release workflow signs manifests'],
      ['MVM_RELEASE_BASE_URL', 'where a stale revocation list is refreshed from'],
      ['MVM_OFFLINE', 'never use the network'],
      [
        'MVM_REQUIRE_FRESH_REVOCATIONS',
        'as --require-fresh-revocations, as configuration for a fleet',
      ],
      'MVM_MAX_KERNEL_BYTES',
      'MVM_MAX_ROOTFS_BYTES',
      'HTTPS_PROXY',
      'HTTP_PROXY',
      'NO_PROXY',
      'MVM_SKIP_COSIGN_VERIFY',
      'MVM_SKIP_HASH_VERIFY',
    ],
    exit: [
      [0, 'installed'],
      [2, 'also an empty HOME or MVM_DATA_DIR'],
      [
        3,
        "missing files, all named at once; a --dir that does not exist or holds another arch's set; the manifest and bundle, or the kernel and rootfs, given the wrong way round (not counted as tampering); an initrd the manifest lists but that was not given, or --initrd for a manifest that lists none",
      ],
      [10],
      [11],
      [12],
      [13],
      [14],
      [15, 'also a manifest that is not the dev variant'],
      [
        17,
        'also a data directory that cannot be created or is read-only, found before any verification',
      ],
      [18],
      [130, 'the partial copy is removed and the interruption audited'],
    ],
  },
  'dev images': {
    summary: 'installed versions: state, size, signer, which one dev up boots',
    usage: ['mvmctl dev images [--json] [--trusted-root FILE]'],
    description: `List every dev image installed in ~/.mvm/dev/prebuilt/ with its state:
verified or UNVERIFIED (an MVM_SKIP_* escape hatch was used at import),
RECALLED (by the cached signed revocation list or a recall this host
remembers), EXPIRED (past the manifest's not_after; "at install" when it
already was then); its size on disk, when it was built and installed, who
signed it, which one 'mvmctl dev up' boots (this mvmctl's version) and which
one the running dev VM booted. Leftovers of interrupted imports are counted
below the table ('mvmctl dev prune' removes them). Nothing is changed.`,
    flags: [
      {
        ...TRUSTED_ROOT,
        help: `Sigstore trusted_root.json verifying the cached revocation list (default: $MVM_TRUSTED_ROOT, else embedded)`,
      },
      {
        name: 'json',
        type: 'boolean',
        help: 'print a JSON array, one object per installed version',
      },
    ],
    env: ['MVM_DATA_DIR', 'MVM_CACHE_DIR', ['MVM_TRUSTED_ROOT', 'as --trusted-root']],
    exit: [[0, 'listed (an empty store too)'], [2], [3, 'unusable trusted root'], [17]],
  },
  'dev rm': {
    summary: "remove an installed version (never the running dev VM's)",
    usage: ['mvmctl dev rm VERSION [--json]'],
    operands: [{ name: 'VERSION' }],
    description: `Remove an installed dev image (VERSION as 'mvmctl dev images' shows it:
0.14.0 or v0.14.0). The version disappears at once (its link is renamed out,
so no reader ever sees half an image), then its files are deleted, under the
store's lock and the dev VM's (a dev up cannot boot it meanwhile). The image
the running dev VM booted is never removed: stop the VM with 'mvmctl dev down'
first. Removing this mvmctl's own version leaves dev up nothing to boot until
it is installed again. Audited (event dev.rm).`,
    flags: [JSON_RESULT],
    env: ['MVM_DATA_DIR'],
    exit: [
      [0, 'removed'],
      [2, 'VERSION missing or not a version such as 0.14.0'],
      [3, 'not installed'],
      [17, "the running dev VM's image; a lock held by a dev up or another removal; permissions"],
    ],
  },
  'dev prune': {
    summary: 'remove other versions and leftovers of interrupted imports',
    usage: ['mvmctl dev prune [--dry-run] [--json]'],
    description: `Free the store: remove every installed version except this mvmctl's (the one
dev up boots) and the one the running dev VM booted, and what interrupted
imports left behind (staging objects of processes that are gone; an import
still running is never touched). Removal is as safe as 'mvmctl dev rm'.
Audited (event dev.prune), with what was removed.`,
    flags: [
      {
        name: 'dry-run',
        type: 'boolean',
        help: 'list what would be removed and the space it would free; remove nothing',
      },
      {
        name: 'json',
        type: 'boolean',
        help: 'print one JSON object: removed (with --dry-run, what would be), freedBytes, kept (with the reason), inProgress',
      },
    ],
    env: ['MVM_DATA_DIR'],
    exit: [[0, 'done (also when there was nothing to remove)'], [2], [17]],
  },
  'dev up': {
    summary: 'boot the installed dev image in a QEMU VM (detached)',
    usage: ['mvmctl dev up [flags]'],
    description: `Boot the installed dev image (v{mvmctl --version}) in a QEMU VM that keeps
running after this command returns. With no image installed, it is first
downloaded and installed as mvmctl dev pull does (verified the same way),
unless offline (MVM_OFFLINE=1 or --offline: exit 3, install it with
mvmctl dev import-image). Before anything boots: its version must not be
recalled in the cached signed revocation list or in the recalls this host
remembers (exit 13); the signed manifest installed with the image is verified
again, offline (exit 10), and its digests must be the receipt's (exit 14); and
the installed kernel, rootfs (and initrd) are re-hashed against them (exit 14
on a mismatch). QEMU is handed the very files that were hashed, as open
descriptors, never their paths. No network is used. The VM's root disk is
a copy-on-write overlay on the installed rootfs, which is never written; it
persists across down/up.

--disk SIZE adds a data disk, /dev/vdb in the guest (data.qcow2 in the state
directory), for what must outlive the overlay: it survives dev down, --fresh
and dev down --reset, and only dev down --delete-disk removes it. A larger
--disk later grows it (then grow its file system in the guest); a smaller one
is refused. --cpus, --memory and --disk given once are remembered and used
by the next dev up without them (dev status shows them).

The VM is ready when its guest agent answers (qemu-guest-agent on the
virtio-serial port org.qemu.guest_agent.0, as Debian's and Ubuntu's package
runs it), or when the console shows "mvm: ready" or "[init] all services
started" (upstream mvm's init), whichever comes first; with --ready-line, when
the console shows that line. Stages are printed as they pass, each with its
time (hypervisor started, kernel booted, ready), and kept for dev status. When
the VM already runs, it is reported and the exit status is 0. Everything about
the VM is in ~/.mvm/vms/dev/ (state.json, the overlay, console.sock,
console.log, agent.sock, qmp.sock).`,
    flags: [
      {
        name: 'cpus',
        type: 'string',
        value: 'N',
        help: "vCPUs (default: 2, at most the host's CPU count; remembered)",
      },
      {
        name: 'memory',
        type: 'string',
        value: 'SIZE',
        help: "guest memory, like 512M or 2G; a bare number is MiB (default: half the host's memory, 128M to 1G; remembered)",
      },
      {
        name: 'disk',
        type: 'string',
        value: 'SIZE',
        complete: 'none',
        help: 'a persistent data disk of SIZE (like 8G) as /dev/vdb: created, or grown to SIZE, never shrunk; kept across down, --fresh and --reset (remembered)',
      },
      {
        name: 'port',
        type: 'string',
        value: '[ADDR:]HOST:GUEST',
        multiple: true,
        help: 'forward TCP port HOST on the host (ADDR, default 127.0.0.1) to port GUEST in the guest; repeatable',
      },
      {
        name: 'share',
        type: 'string',
        value: 'DIR',
        help: 'expose the host directory DIR to the guest under the mount tag workdir (virtiofs; the test image mounts it on /mnt/workdir). DIR must exist and belong to an unprivileged user: it is served by virtiofsd (/usr/lib/qemu/virtiofsd, Debian package qemu-system-common) running as the owner of the directory, so whatever the guest makes there belongs to that owner; no device nodes, no other owners. Starting it that way needs root, so --share needs root. virtiofsd is stopped with the VM (dev down, or a boot that fails)',
      },
      {
        name: 'append',
        type: 'string',
        value: 'ARGS',
        help: 'added to the kernel command line (console=ttyS0 root=/dev/vda rw init=/init ...); may not set root=, init=, rdinit= or console=',
      },
      {
        name: 'console',
        type: 'string',
        choices: ['ttyS0', 'hvc0'],
        help: 'the guest console that console.log, dev logs and dev console use: ttyS0 (default), the serial port, which every kernel and stock initrd print to from their first line; hvc0, the virtio console, for images whose kernel or initrd has virtio_console',
      },
      {
        name: 'accel',
        type: 'string',
        choices: ['auto', 'kvm', 'tcg'],
        help: 'kvm: hardware virtualization (an error where KVM cannot run a stock kernel); tcg: software emulation, several times slower; auto (default): kvm when usable, otherwise tcg with a warning saying why',
      },
      {
        name: 'network',
        type: 'string',
        choices: ['user', 'restricted', 'none'],
        help: "user (default): connections out through the host, and --port forwards in; the guest can then also reach this host's loopback services (127.0.0.1) at 10.0.2.2. restricted: nothing out, host loopback included, --port forwards still in. none: no network device",
      },
      {
        name: 'fresh',
        type: 'boolean',
        help: "discard the VM's disk overlay (changes made in the guest) first",
      },
      {
        name: 'ready-line',
        type: 'string',
        value: 'TEXT',
        complete: 'none',
        help: 'wait for this console line only, not for the guest agent (default: the agent answering, or "mvm: ready" or "[init] all services started")',
      },
      {
        name: 'timeout',
        type: 'string',
        value: 'SECONDS',
        help: 'how long to wait for the VM to be ready (default 60); on timeout the error names the stage that did not complete, the last console lines are shown and QEMU is stopped',
      },
      {
        name: 'no-wait',
        type: 'boolean',
        help: 'return once QEMU runs, without waiting for it to be ready',
      },
      {
        name: 'offline',
        type: 'boolean',
        help: 'never download: with no image installed, fail (exit 3) instead of pulling it (also MVM_OFFLINE=1)',
      },
      JSON_RESULT,
    ],
    env: [
      'MVM_DATA_DIR',
      'MVM_CACHE_DIR',
      [
        'MVM_TRUSTED_ROOT',
        'Sigstore trusted_root.json verifying the cached revocation list and, when pulling, the manifest',
      ],
      ['MVM_OFFLINE', 'never download'],
      'MVM_REQUIRE_FRESH_REVOCATIONS',
      ['MVM_RELEASE_BASE_URL', 'where a missing image is pulled from (see mvmctl dev pull --help)'],
      'MVM_CONSOLE_LOG_MAX_BYTES',
      'PATH',
    ],
    exit: [
      [0, 'running (or already running)'],
      [1, 'the VM did not start or did not become ready'],
      [2],
      [3, 'no image installed'],
      [13, 'the version is recalled'],
      [14, 'an installed file changed since import'],
      [17],
      [18, 'one fresher than 7 days is required (MVM_REQUIRE_FRESH_REVOCATIONS=1)'],
      [10, 'when pulling'],
      [11, 'when pulling'],
      [12, 'when pulling'],
      [15, 'when pulling'],
      [16, 'when pulling'],
      [130, 'when pulling'],
    ],
  },
  'dev status': {
    summary: 'whether the dev VM runs, and what it booted',
    usage: ['mvmctl dev status [--json]'],
    description: `Whether the dev VM runs, read from its state directory (~/.mvm/vms/dev/):
state (running, stopped, or stale: the recorded QEMU is gone or its pid now
belongs to another process; the next dev up or dev down cleans it up), pid,
uptime, accel, version and digests booted, the at-rest check at boot, port
forwards, the shared directory (--share), the console log path and the disk
overlay's size. Changes nothing.`,
    flags: [{ name: 'json', type: 'boolean', help: 'print one JSON object' }],
    env: ['MVM_DATA_DIR', 'MVM_CACHE_DIR', 'MVM_TRUSTED_ROOT'],
    exit: [[0, 'whatever the state'], [2], [17]],
  },
  'dev logs': {
    summary: "the guest console's log (-f follows it)",
    usage: ['mvmctl dev logs [-f] [-n N]'],
    description: `Print the last lines of the dev VM's console log (~/.mvm/vms/dev/console.log:
everything the guest printed on its console since the last dev up, and
console.log.1 before it once the log has rotated: the two together stay within
MVM_CONSOLE_LOG_MAX_BYTES, default 64 MiB, the oldest output going first).
Control characters are shown escaped (\\x1b), so guest output cannot drive
your terminal.`,
    flags: [
      {
        name: 'follow',
        short: 'f',
        type: 'boolean',
        help: 'after the last lines, keep printing new lines as the guest writes them (a line is shown once it ends), until the VM stops or you press Ctrl-C (SIGINT; also SIGTERM): both exit 0. When the VM is not running, the last lines are printed and a note says there is nothing to follow',
      },
      {
        name: 'lines',
        short: 'n',
        type: 'string',
        value: 'N',
        help: 'how many lines, from the end (default 100; with -f, 0 shows only new lines)',
      },
      {
        name: 'json',
        type: 'boolean',
        help: 'print one JSON object: the log path and the lines (not with -f)',
      },
    ],
    env: ['MVM_DATA_DIR', 'MVM_CONSOLE_LOG_MAX_BYTES'],
    exit: [[0, 'printed, or followed until the VM stopped or Ctrl-C'], [2], [17]],
  },
  'dev console': {
    summary: "attach to the dev VM's console (also dev shell; Ctrl-] detaches)",
    aliases: ['shell'],
    usage: ['mvmctl dev console [--idle SECONDS]', 'mvmctl dev shell [--idle SECONDS]'],
    description: `Attach to the running dev VM's console (the serial port ttyS0, or hvc0 after
dev up --console hvc0), served by QEMU on the unix socket
~/.mvm/vms/dev/console.sock. 'dev shell' is
the same door, for an image with a shell or getty on its console. The VM must
be running and be the one dev up started (its pid and start time are checked
first); otherwise the error names mvmctl dev up and the exit status is 3.

On a terminal (stdin is a TTY): the terminal is put in raw mode, so every key,
Ctrl-C included, goes to the guest. Press Ctrl-] to detach; the VM keeps
running. The terminal is restored on detach, when the console closes (the VM
stopped), on SIGINT, SIGTERM or SIGHUP, and on errors.

Without a terminal (stdin piped or a file): stdin is sent to the console as it
comes; when it ends, the guest's output is still copied to stdout until the
guest has printed nothing for --idle seconds (and at most 30 s), then the
exit status is 0. No end-of-file is sent: the shell on the console stays. So
scripts can run a command in the guest:
  printf 'uname -a\\n' | mvmctl dev console

What the guest prints is passed through unmodified, to a terminal and to a
pipe alike: a console is a terminal session (the guest's shell drives your
terminal as a remote shell would), and a pipe gets exactly the bytes it asked
for. For the console's output with control characters escaped, use
mvmctl dev logs. Output printed while no one is attached is only in the log.`,
    flags: [
      {
        name: 'idle',
        type: 'string',
        value: 'SECONDS',
        help: 'without a terminal: how long the guest must stay quiet after stdin ends before exiting (default 2); raise it for commands that pause before printing',
      },
    ],
    env: ['MVM_DATA_DIR'],
    exit: [
      [0, 'detached, input ended, or the console closed'],
      [2],
      [3, 'the dev VM is not running (or its console cannot be reached)'],
    ],
  },
  'dev exec': {
    summary: 'run a command in the dev VM through its guest agent',
    usage: [
      'mvmctl dev exec [--env K=V]... [--workdir DIR] [--timeout SECONDS] [-n] [--json] -- CMD [ARG]...',
    ],
    operands: [{ name: 'CMD', complete: 'none' }],
    description: `Run CMD with its arguments in the running dev VM, as root, through the QEMU
guest agent (qemu-guest-agent, on the virtio-serial port
org.qemu.guest_agent.0), and exit with its exit status. No shell reads the
arguments: write -- sh -c '...' for pipes and globs. stdout and stderr stay
apart and appear while the command runs (a long build's log as it is
written). stdin, when it is not a terminal, is read to its end first and
given to the command (at most 16 MiB; -n gives it none, as ssh -n).

The environment is PATH and HOME=/root plus each --env; the command starts
in / unless --workdir names another directory of the guest. Ctrl-C or
SIGTERM stops the guest command (SIGTERM, then SIGKILL after 3 s, to its
whole process group) and exits 130.

It exits with the command's status; 128+N when signal N ended it; 255 when
mvmctl could not run it (no dev VM, no agent answering, the agent gone,
--timeout reached), with the reason on stderr, as ssh does.

  mvmctl dev exec -- make -C /src -j2
  mvmctl dev exec --workdir /src --env CC=clang -- sh -c 'make 2>&1 | tail'
  tar -c src | mvmctl dev exec -- tar -x -C /root`,
    flags: [
      {
        name: 'env',
        type: 'string',
        value: 'K=V',
        multiple: true,
        complete: 'none',
        help: 'set an environment variable for the command (repeatable)',
      },
      {
        name: 'workdir',
        type: 'string',
        value: 'DIR',
        complete: 'none',
        help: 'the guest directory the command starts in (default /)',
      },
      {
        name: 'timeout',
        type: 'string',
        value: 'SECONDS',
        help: 'stop the command after this long (exit 255); default: no limit',
      },
      {
        name: 'no-stdin',
        short: 'n',
        type: 'boolean',
        help: 'give the command no stdin (it reads end of file), whatever stdin is',
      },
      {
        name: 'json',
        type: 'boolean',
        help: 'print one JSON object {exitCode, stdout, stderr} when the command has exited (the output as UTF-8 text)',
      },
    ],
    env: ['MVM_DATA_DIR'],
    exit: [
      [0, "the command's exit status, whatever it is"],
      [130, 'the guest command was stopped first'],
      [255],
    ],
  },
  'dev cp': {
    summary: 'copy files between the host and the dev VM',
    usage: [
      'mvmctl dev cp [-r] [--json] SRC dev:/PATH',
      'mvmctl dev cp [-r] [--json] dev:/PATH DST',
    ],
    operands: [
      { name: 'SRC', complete: 'file' },
      { name: 'DST', complete: 'file' },
    ],
    description: `Copy a file, or with -r a directory, between the host and the running dev
VM, through its guest agent (no network or share needed). dev:/PATH names
the guest side, from its root; the other side is a host path, or - for
stdin (to the guest) or stdout (from the guest). As with cp, a destination
that is an existing directory receives the copy under the source's name.

Every copy is checked by SHA-256 on both sides (mvmctl's hash of the bytes
it moved, the guest's sha256sum of its file) before it gets its final name:
a file is written under a hidden temporary name beside its destination and
renamed into place, so an interrupted copy never leaves a file that looks
complete. The permission bits are kept; setuid, setgid and sticky bits are
not, and files belong to whoever runs the copy (root in the guest).

A directory travels as one tar archive made or unpacked by the guest's own
tar, and its hash is checked before anything is unpacked. From the guest,
the archive's names are the guest's: a name that is absolute or climbs out
with .., or an entry inside a link, refuses the whole copy and leaves the
destination as it was. Symbolic links, hard links and special files from
the guest are not created on the host; they are listed as skipped. Into an
existing directory the copy merges as cp -r does (files replaced, never
written through a link).

  mvmctl dev cp ./src.tar dev:/root/
  mvmctl dev cp -r ./project dev:/src
  mvmctl dev cp dev:/root/out.log .
  mvmctl dev cp dev:/var/log/build.log - | tail
  git archive HEAD | mvmctl dev cp - dev:/root/src.tar`,
    flags: [
      {
        name: 'recursive',
        short: 'r',
        type: 'boolean',
        help: 'copy a directory and everything in it',
      },
      {
        name: 'json',
        type: 'boolean',
        help: 'print one JSON object describing the copy (destination, files, bytes, sha256, skipped)',
      },
    ],
    env: ['MVM_DATA_DIR'],
    exit: [
      [0, 'copied, and the hashes of both sides agree'],
      [2],
      [3, 'the dev VM is not running, or the host side cannot be read or written'],
      [130],
      [
        255,
        "the dev VM, its agent or the guest side failed, the hashes differ, or the guest's archive was refused",
      ],
    ],
  },
  'dev down': {
    summary: 'power the dev VM off',
    usage: ['mvmctl dev down [--reset] [--delete-disk] [--timeout SECONDS]'],
    description: `Power the dev VM off: a shutdown through its guest agent (guest-shutdown,
when an agent answers), then an ACPI power-down over QMP (the guest shuts
down cleanly), each given --timeout, then QMP quit, then SIGKILL. Before each step the process is confirmed to be the VM's own (its
pid and start time, from state.json), so a reused pid is never signalled.
The sockets and state are removed; the disk overlay (changes made in the
guest) stays for the next dev up unless --reset. The data disk (dev up
--disk) stays even then: only --delete-disk deletes it, with everything
stored on it, and forgets its size. A VM that is not running is a note and
exit 0.`,
    flags: [
      {
        name: 'reset',
        type: 'boolean',
        help: "also delete the VM's disk overlay: the next dev up starts from the installed image as verified",
      },
      {
        name: 'delete-disk',
        type: 'boolean',
        help: 'also delete the data disk (dev up --disk) and everything stored on it',
      },
      {
        name: 'timeout',
        type: 'string',
        value: 'SECONDS',
        help: 'how long the guest gets to power off after each request (agent, then ACPI) before the next step (default 10)',
      },
      JSON_RESULT,
    ],
    env: ['MVM_DATA_DIR'],
    exit: [[0, 'stopped (or was not running)'], [1, 'QEMU could not be stopped'], [2], [17]],
  },
  'verify-blob': {
    summary: "verify a Sigstore/cosign signature offline (cosign's flags)",
    usage: [
      'mvmctl verify-blob --bundle FILE (--certificate-identity ID | --certificate-identity-regexp RE) (--certificate-oidc-issuer ISSUER | --certificate-oidc-issuer-regexp RE) [--trusted-root FILE] [--json] ARTIFACT',
      'mvmctl verify-blob --bundle FILE --key cosign.pub [--trusted-root FILE] [--json] ARTIFACT',
    ],
    operands: [{ name: 'ARTIFACT', complete: 'file' }],
    description: `Verify a Sigstore (cosign) signature over ARTIFACT, entirely offline: the
signature over the exact bytes, the certificate chain to a trusted CA, its
SCT, the transparency-log evidence (signed entry timestamp and/or inclusion
proof with a signed checkpoint; Rekor v2 entries with an RFC 3161 timestamp),
the certificate's validity at the log's time, the bundle's digest against the
artifact, and the signer against the policy. The flags are cosign
verify-blob's, so a script written for cosign works unchanged, and a connected
host can check a release set before it is carried to an air-gapped one
without installing cosign. As cosign does, "Verified OK" goes to stderr.`,
    flags: [
      {
        name: 'bundle',
        type: 'string',
        value: 'FILE',
        help: 'Sigstore bundle (v0.1, v0.2, v0.3) or legacy cosign bundle',
      },
      {
        name: 'certificate-identity',
        type: 'string',
        value: 'ID',
        complete: 'none',
        help: 'exact signer identity (certificate SAN)',
      },
      {
        name: 'certificate-identity-regexp',
        type: 'string',
        value: 'RE',
        complete: 'none',
        help: 'pattern for the identity; always matched against the whole identity (anchored), so a prefix or suffix cannot slip through',
      },
      {
        name: 'certificate-oidc-issuer',
        type: 'string',
        value: 'ISSUER',
        complete: 'none',
        help: 'exact OIDC issuer, e.g. https://token.actions.githubusercontent.com',
      },
      {
        name: 'certificate-oidc-issuer-regexp',
        type: 'string',
        value: 'RE',
        complete: 'none',
        help: 'pattern for the issuer, anchored like the identity pattern',
      },
      ...(['trigger', 'sha', 'name', 'repository', 'ref'] as const).map(
        (claim) =>
          ({
            name: `certificate-github-workflow-${claim}`,
            type: 'string',
            value: 'VALUE',
            complete: 'none',
            help: `the GitHub Actions workflow ${claim} the certificate must record (exact)`,
          }) as const,
      ),
      {
        name: 'key',
        type: 'string',
        value: 'FILE',
        help: 'PEM public key, for bundles signed with a key (cosign sign-blob --key); cannot be combined with the certificate flags',
      },
      TRUSTED_ROOT,
      {
        name: 'signature',
        type: 'string',
        value: 'FILE',
        help: "detached signature (base64, as cosign writes it): must be the bundle's own signature",
      },
      {
        name: 'certificate',
        type: 'string',
        value: 'FILE',
        help: "signing certificate (PEM): must be the bundle's own certificate",
      },
      {
        name: 'json',
        type: 'boolean',
        help: 'print one JSON object (verdict, signer, issuer, log index, time)',
      },
      ...cosignCompat(),
    ],
    env: [['MVM_TRUSTED_ROOT', 'as --trusted-root']],
    exit: [[0, 'verified'], [2], [3, 'unreadable input'], [10, 'verification failed']],
    sections: [
      {
        title: 'Example',
        body: `  mvmctl verify-blob --bundle dev-image-x86_64.manifest.json.bundle \\
    --certificate-identity https://github.com/tinylabscom/mvm/.github/workflows/release.yml@refs/tags/v0.14.0 \\
    --certificate-oidc-issuer https://token.actions.githubusercontent.com \\
    dev-image-x86_64.manifest.json`,
      },
    ],
  },
  status: {
    summary: "this host's images, dev VM, revocation list, audit chain (--check)",
    usage: ['mvmctl status [--json] [--check] [--trusted-root FILE]'],
    description: `Show this host's dev-image state: the image this mvmctl boots and every other
installed version, each with its state spelled out (verified or UNVERIFIED,
recalled, past its not_after, and whether it was already expired when
installed), who signed it and when it was installed, its size and initramfs;
the dev VM (running or not, and what it booted); the cached revocation list
(age, entries, fresh, tolerated or stale); leftovers of interrupted imports;
the trusted root in use; whether the audit log's chain is intact; and the
verification counters.`,
    flags: [
      {
        name: 'check',
        type: 'boolean',
        help: "for monitoring: also exit 19 when this mvmctl's image is recalled, UNVERIFIED or expired, the cached revocation list does not verify, or the audit chain is broken (each problem named on stderr)",
      },
      {
        ...TRUSTED_ROOT,
        help: 'Sigstore trusted_root.json verifying the cached revocation list (default: $MVM_TRUSTED_ROOT, else embedded)',
      },
      {
        name: 'json',
        type: 'boolean',
        help: 'one JSON object (with --check: also a "check" member)',
      },
    ],
    env: ['MVM_DATA_DIR', 'MVM_CACHE_DIR', ['MVM_TRUSTED_ROOT', 'as --trusted-root']],
    exit: [[0, 'shown'], [2], [3, 'unusable trusted root'], [17], [19, 'a --check problem']],
  },
  metrics: {
    summary: 'verification counters and gauges: Prometheus text or JSON',
    usage: ['mvmctl metrics [--json] [--textfile DIR]'],
    description: `This host's dev-image verification metrics. The counters persist across
invocations: they are computed from the audit log (~/.mvm/telemetry/audit.jsonl
and its rotated files), not kept beside it.

  mvmctl metrics              Prometheus text exposition (format 0.0.4) on stdout
  mvmctl metrics --json       the same values keyed by name without the mvm_ prefix
                              (the histogram's buckets a list, le ascending, "+Inf" last)
  mvmctl metrics --textfile DIR
                              writes DIR/mvmctl.prom atomically (temp file, fsync, rename;
                              mode 0644) for node_exporter's textfile collector
  mvmctl metrics serve        serves GET /metrics over HTTP for Prometheus
                              (mvmctl metrics serve --help)

Counters (mvm_ prefix): dev_image_verify_ok_total (verified and installed),
dev_image_verify_unchanged_total (verified, already installed: nothing written),
dev_image_verify_bypassed_total (each escape hatch used; such an install is
UNVERIFIED, never ok), and dev_image_verify_{sig_invalid, digest_mismatch,
version_skew, arch_mismatch, revoked, expired, network, manifest_invalid}_total.
Histogram: mvm_dev_image_verify_duration_seconds. Gauges:
  mvm_revocation_list_age_seconds                 absent when no usable list is cached
  mvm_dev_image_verified{version}                 1 verified, 0 UNVERIFIED
  mvm_dev_image_recalled{version}                 1 when recalled (cached list or remembered recall)
  mvm_dev_image_not_after_timestamp_seconds{version}
  mvm_dev_vm_up                                   1 while the dev VM runs
  mvm_dev_vm_running_version_info{version}        1, present only while it runs
  mvm_dev_image_last_verified_timestamp_seconds   absent until an import verified
  mvm_audit_chain_valid                           0 when the audit log does not chain
  mvm_trusted_root_age_seconds{origin}            since trust import verified it (installed),
                                                  else since its newest authority started
  mvm_tuf_root_expiry_timestamp_seconds           the TUF root in force; absent for a named file
A broken audit chain also prints a warning on stderr (exit status stays 0).`,
    flags: [
      {
        name: 'textfile',
        type: 'string',
        value: 'DIR',
        help: "write DIR/mvmctl.prom atomically (temp file, fsync, rename; mode 0644) for node_exporter's textfile collector; not with --json",
      },
      {
        name: 'json',
        type: 'boolean',
        help: 'the same values keyed by name without the mvm_ prefix',
      },
    ],
    env: ['MVM_DATA_DIR', 'MVM_CACHE_DIR', 'MVM_TRUSTED_ROOT'],
    exit: [
      [0, 'printed or written (a broken audit chain is a warning here)'],
      [2, 'also --textfile with --json'],
      [3, 'the --textfile directory cannot be used'],
      [17],
    ],
    sections: [
      {
        title: 'A systemd timer for the textfile collector',
        body: `Run it as the user whose ~/.mvm holds the images; give it write access to the
collector's directory, e.g. setfacl -m u:USER:rwx /var/lib/prometheus/node-exporter.
The same units are in deploy/systemd/:

  # /etc/systemd/system/mvmctl-metrics.service
  [Unit]
  Description=Export mvmctl metrics for node_exporter's textfile collector
  [Service]
  Type=oneshot
  User=USER
  ExecStart=/usr/local/bin/mvmctl metrics --textfile /var/lib/prometheus/node-exporter

  # /etc/systemd/system/mvmctl-metrics.timer
  [Unit]
  Description=Export mvmctl metrics every minute
  [Timer]
  OnBootSec=30s
  OnUnitActiveSec=60s
  AccuracySec=5s
  [Install]
  WantedBy=timers.target

  systemctl daemon-reload && systemctl enable --now mvmctl-metrics.timer`,
      },
    ],
  },
  'metrics serve': {
    summary: 'serve GET /metrics for Prometheus (default 127.0.0.1:9464)',
    usage: ['mvmctl metrics serve [--listen ADDR:PORT]'],
    description: `Serve this host's metrics (as mvmctl metrics prints them) over HTTP for
Prometheus. Prints "listening on http://ADDR:PORT/metrics" on stderr once
listening.

GET /metrics answers in the Prometheus text format, or OpenMetrics 1.0.0 when the
Accept header prefers application/openmetrics-text (as Prometheus sends); any other
path is 404, any other method 405 (HEAD works), a request body 413. At most 256
connections, 8 KiB of headers, 5 s to send them and 10 s per request. At 256, a new
connection takes the slot of the one that has waited longest without a request in
progress (an idle keep-alive, a peer that sent nothing or half a request), so a peer
holding connections open cannot lock a scraper out. The audit log
is read incrementally: each scrape reads only what was appended since the last one
(a rotation is followed; a log shrunk or replaced is read again from its start).
SIGTERM or SIGINT stops it cleanly (exit 0).`,
    flags: [
      {
        name: 'listen',
        type: 'string',
        value: 'ADDR:PORT',
        complete: 'none',
        help: 'where to listen (default 127.0.0.1:9464; [::1]:9464 for IPv6; port 0 takes a free one)',
      },
    ],
    env: ['MVM_DATA_DIR', 'MVM_CACHE_DIR', 'MVM_TRUSTED_ROOT'],
    exit: [[0, 'stopped by SIGTERM or SIGINT'], [2, 'also an address in use'], [17]],
  },
  revocations: {
    group: true,
    summary: 'the signed revocation list: import, status, refresh',
    usage: ['mvmctl revocations <command> [flags]'],
    description: `The project's signed revocation list: which releases are recalled. It is
cached in ~/.cache/mvm/revocations/ (revoked-versions.json + .bundle), always
signature-verified against the revocations workflow identity before use, and
append-only: a list that drops a recall the cached one holds is refused.`,
    flags: [],
    env: [],
    exit: [
      [0, 'help shown'],
      [2, 'no command, or an unknown one'],
    ],
  },
  'revocations import': {
    summary: 'verify a carried-in revocation list and install it',
    usage: ['mvmctl revocations import --list FILE --bundle FILE [flags]'],
    description: `Verify a revocation list carried in by hand (revoked-versions.json and its
bundle, from the revocations release or a transfer set mvmctl dev fetch made)
against the revocations workflow identity, and install the pair in the cache,
atomically. A list that would roll the cached one back (older, or dropping a
recall it holds) is refused, and the cached list stays in force. The recalls
it lists are remembered on this host. Audited (event revocations.import),
failures too.`,
    flags: [
      { name: 'list', type: 'string', value: 'FILE', help: 'the list: revoked-versions.json' },
      {
        name: 'bundle',
        type: 'string',
        value: 'FILE',
        help: "the list's Sigstore bundle: revoked-versions.json.bundle",
      },
      TRUSTED_ROOT,
      JSON_RESULT,
    ],
    env: [
      'MVM_CACHE_DIR',
      'MVM_DATA_DIR',
      'MVM_RELEASE_REPO',
      ['MVM_TRUSTED_ROOT', 'as --trusted-root'],
    ],
    exit: [
      [0, 'installed'],
      [2, '--list or --bundle missing'],
      [3, 'a file is unreadable, or the trusted root unusable'],
      [10, 'the list does not verify, or would roll the cached one back'],
      [15, 'the list is not valid'],
      [17, 'the cache is not writable'],
    ],
  },
  'revocations status': {
    summary: 'the cached list: verified, age, entries, images recalled',
    usage: ['mvmctl revocations status [--json] [--trusted-root FILE]'],
    description: `Show the cached revocation list: its path, whether it verifies and who signed
it, its entries and age (fresh, or STALE: older than 7 days, still enforced),
and for each installed image whether it is recalled, by the list or by a
recall this host remembers. Changes nothing and uses no network.`,
    flags: [TRUSTED_ROOT, { name: 'json', type: 'boolean', help: 'print one JSON object' }],
    env: [
      'MVM_CACHE_DIR',
      'MVM_DATA_DIR',
      'MVM_RELEASE_REPO',
      ['MVM_TRUSTED_ROOT', 'as --trusted-root'],
    ],
    exit: [[0, 'shown (also when no list is cached)'], [2], [3, 'unusable trusted root'], [17]],
  },
  'revocations refresh': {
    summary: 'fetch the list now from the release location',
    usage: ['mvmctl revocations refresh [--offline] [--json] [--trusted-root FILE]'],
    description: `Fetch the revocation list and its bundle now from the release location
({base}/revocations/revoked-versions.json), verify them and install them in
the cache, whatever the cached list's age. A list that does not verify or
would roll the cached one back is refused and the cached one stays in force.
No list published (404) means no recalls today; the cached list, if any,
still applies. Audited.`,
    flags: [
      TRUSTED_ROOT,
      { name: 'offline', type: 'boolean', help: 'refuse at once (as MVM_OFFLINE=1): exit 16' },
      JSON_RESULT,
    ],
    env: [
      ['MVM_RELEASE_BASE_URL', 'release location the list is fetched from'],
      'MVM_RELEASE_REPO',
      'MVM_RELEASE_TOKEN',
      'HTTPS_PROXY',
      'HTTP_PROXY',
      'NO_PROXY',
      'MVM_HTTP_TIMEOUT_SECONDS',
      ['MVM_OFFLINE', 'refuse at once: exit 16'],
      'MVM_CACHE_DIR',
      'MVM_DATA_DIR',
      ['MVM_TRUSTED_ROOT', 'as --trusted-root'],
    ],
    exit: [
      [0, 'refreshed, or none published (404)'],
      [2],
      [3, 'unusable trusted root'],
      [10, 'the list does not verify, or would roll the cached one back'],
      [15, 'the list is not valid'],
      [16, 'also --offline or MVM_OFFLINE=1'],
      [17, 'the cache is not writable'],
    ],
  },
  trust: {
    group: true,
    summary:
      'the Sigstore trusted root: TUF-verified updates carried in, and which root is in force',
    usage: ['mvmctl trust <command> [flags]'],
    description: `Every signature mvmctl checks rests on a Sigstore trusted root: the keys of
the transparency logs, certificate authorities and timestamp authorities.
mvmctl embeds the public-good root of its build. Sigstore rotates these keys
and adds log shards; a host that cannot download gets the newer root as a
trust bundle: TUF metadata that 'trust import' verifies against the root this
host already trusts, then installs in the data directory (trust/). The
installed root replaces the embedded one for every command;
--trusted-root / MVM_TRUSTED_ROOT still override both.`,
    flags: [],
    env: [],
    exit: [
      [0, 'help shown'],
      [2, 'no command, or an unknown one'],
    ],
  },
  'trust import': {
    summary: 'verify a carried trust bundle with TUF and put its trusted root in force',
    usage: ['mvmctl trust import DIR [--json]'],
    operands: [{ name: 'DIR', complete: 'dir' }],
    description: `Verify the trust bundle in DIR (N.root.json for each root rotation,
timestamp.json, snapshot.json, targets.json and trusted_root.json) with a TUF
client, offline, starting from the newest root installed here (or the one
embedded in mvmctl): each root rotation signed by the threshold of the root
before it, the timestamp, snapshot and targets signatures and versions, and
the length and SHA-256 of trusted_root.json. A version older than the one
installed, or a chain that skips a root version, is refused. Metadata up to 7
days past its expiry is accepted with a warning (STALE); beyond that it is
refused. The new set is installed atomically: the trust in force changes only
once all of it is on disk. Audited (event trust.import), refusals too.`,
    flags: [JSON_RESULT],
    env: ['MVM_DATA_DIR', ['MVM_TUF_ROOT', 'the TUF root to start from before any is installed']],
    exit: [
      [0, 'installed, or already installed'],
      [2, 'no DIR'],
      [3, 'the bundle does not verify (the role and check are named), or a file is unreadable'],
      [17, 'the data directory is not writable'],
    ],
  },
  'trust fetch': {
    summary:
      'on a connected host: a TUF update of the Sigstore trusted root, written as a trust bundle to carry',
    usage: ['mvmctl trust fetch [--out DIR] [--repository URL] [--json]'],
    description: `Run a TUF update against Sigstore's TUF repository
(https://tuf-repo-cdn.sigstore.dev, or a mirror: --repository,
MVM_TUF_REPOSITORY), starting from the TUF root embedded in mvmctl (or
MVM_TUF_ROOT), and write what it verified into DIR (default ./trust-bundle):
N.root.json for each root rotation, timestamp.json, snapshot.json,
targets.json and trusted_root.json. The directory is then verified as
'trust import' will verify it. Carry it to the air-gapped host and run
'mvmctl trust import DIR' there within 7 days of the timestamp's expiry.
Installs nothing on this host.`,
    flags: [
      {
        name: 'out',
        type: 'string',
        value: 'DIR',
        help: 'the directory to write the trust bundle into (default ./trust-bundle)',
      },
      {
        name: 'repository',
        type: 'string',
        value: 'URL',
        complete: 'none',
        help: 'the TUF repository (default $MVM_TUF_REPOSITORY, else https://tuf-repo-cdn.sigstore.dev)',
      },
      { name: 'offline', type: 'boolean', help: 'refuse at once (as MVM_OFFLINE=1): exit 16' },
      JSON_RESULT,
    ],
    env: [
      ['MVM_TUF_REPOSITORY', 'as --repository'],
      ['MVM_TUF_ROOT', 'the TUF root to start from instead of the embedded one'],
      'HTTPS_PROXY',
      'HTTP_PROXY',
      'NO_PROXY',
      'MVM_HTTP_TIMEOUT_SECONDS',
      ['MVM_OFFLINE', 'refuse at once: exit 16'],
    ],
    exit: [
      [0, 'written and verified'],
      [2, 'also a --repository that is not an http(s) URL'],
      [3, 'the repository does not verify (the role and check are named)'],
      [16, 'the repository cannot be reached, or offline'],
    ],
  },
  'trust status': {
    summary: 'which trusted root is in force, its TUF versions and expiry',
    usage: ['mvmctl trust status [--json]'],
    description: `Show the trusted root every verification uses now: embedded, installed (with
its TUF versions, when it was verified and from where, and when its metadata
expires), or a file named by MVM_TRUSTED_ROOT. An installed set whose
metadata expired is still used (the embedded root is older still); past the
TUF root's own expiry, status --check reports it. Changes nothing.`,
    flags: [{ name: 'json', type: 'boolean', help: 'print one JSON object' }],
    env: ['MVM_DATA_DIR', ['MVM_TRUSTED_ROOT', 'a file named here is in force instead']],
    exit: [[0, 'shown'], [2], [3, 'the installed trust is damaged']],
  },
  audit: {
    group: true,
    summary: 'the hash-chained audit log of every verification',
    usage: ['mvmctl audit tail [-n N] [--json]'],
    description: `This host's audit log (~/.mvm/telemetry/audit.jsonl and its rotated files):
every verification outcome, success included, hash-chained.

What the chain proves: the last sequence number and hash are also kept in an
anchor outside the log, so a record edited, reordered or removed, and a log
shortened or deleted, show, unless both are rewritten. It does not prove the
log genuine: a local writer with your privileges can rewrite the log and its
anchor together. Shipping each record off the host as it is written (set
MVM_AUDIT_SOCKET to a syslog / journal socket, e.g. /dev/log) is what defends
against that.`,
    flags: [],
    env: [],
    exit: [
      [0, 'help shown'],
      [2, 'no command, or an unknown one'],
    ],
  },
  'audit tail': {
    summary: 'the last audit records, with the hash chain checked',
    usage: ['mvmctl audit tail [-n N] [--json]'],
    description: `Print the last N records (default 20) of this host's audit log
(~/.mvm/telemetry/audit.jsonl and its rotated files): every verification
outcome, success included, one per line in aligned columns:
  TIME SEQ UID EVENT OUTCOME CODE WHAT VERSION MESSAGE
UID is the user that ran the command. OUTCOME of an import is ok (verified and
installed), unchanged (verified, already installed: nothing written), bypassed
(installed with an escape hatch: UNVERIFIED) or failed; WHAT says it in words:
install, install,EXPIRED (past not_after), unchanged-re-import,
UNVERIFIED-install(skip:cosign|hash), or the check that failed. An empty cell is
"-"; only MESSAGE has spaces.

Records are hash-chained; the whole log is checked, across its rotated files,
and an edited, removed or reordered record makes the command exit 10 naming
the file and its first broken line.
--json prints one document, also when the chain is broken:
  {"path", "records": N, "chain": {"intact": true|false, "brokenAt", "file", "reason"},
   "tail": [...], "error": {...} (only when broken)}
'status' and 'metrics' report a broken chain too (mvm_audit_chain_valid 0).

Rotation: once audit.jsonl has reached MVM_AUDIT_MAX_BYTES (default 16 MiB), the
next record starts a new file; audit.jsonl.1 is the newest rotated file and 5
are kept (older ones are deleted). The new file's first record (audit.rotated)
chains to the last record of the file before it and carries the totals of
every record before it, so the counters stay exact when old files are deleted,
and a chain broken before a rotation stays reported after it.

What the chain proves: the last sequence number and hash are also kept in an
anchor outside the log, so a record edited, reordered or removed, and a log
shortened or deleted, show, unless both are rewritten. It does not prove the
log genuine: a local writer with your privileges can rewrite the log and its
anchor together. Shipping each record off the host as it is written (set
MVM_AUDIT_SOCKET to a syslog / journal socket, e.g. /dev/log) is what defends
against that.`,
    flags: [
      {
        name: 'n',
        short: 'n',
        type: 'string',
        value: 'N',
        complete: 'none',
        help: 'how many records, from the end (default 20; 0 checks the chain and prints none)',
      },
      {
        name: 'json',
        type: 'boolean',
        help: 'print one document, also when the chain is broken',
      },
    ],
    env: ['MVM_DATA_DIR', 'MVM_AUDIT_MAX_BYTES'],
    exit: [
      [0, 'printed; the chain is intact'],
      [2, 'also -n that is not a whole number'],
      [10, 'the audit chain is broken (the first broken line is named)'],
      [17, 'the audit log cannot be read'],
    ],
  },
  completion: {
    summary: 'print a shell completion script: bash, zsh or fish',
    usage: ['mvmctl completion bash|zsh|fish'],
    operands: [{ name: 'SHELL', choices: ['bash', 'zsh', 'fish'] }],
    description: `Print a completion script for the shell named, for commands, subcommands,
flags and their values (files, directories, arches), generated from the same
table as every --help page. To load it:
  bash:  source <(mvmctl completion bash)     (e.g. in ~/.bashrc)
  zsh:   source <(mvmctl completion zsh)      (after compinit, e.g. in ~/.zshrc)
  fish:  mvmctl completion fish > ~/.config/fish/completions/mvmctl.fish`,
    flags: [],
    env: [],
    exit: [
      [0, 'printed'],
      [2, 'no shell, or not one of bash, zsh, fish'],
    ],
  },
} as const satisfies Record<string, CommandSpec>;

/** cosign verify-blob flags taken for compatibility: help lines only (verify-blob.ts says why, when it refuses). */
function cosignCompat() {
  const accepted = 'cosign flags accepted and ignored, and why';
  const refused = 'cosign flags refused, and why';
  const bool = (name: string, help: string, section: string) =>
    ({ name, type: 'boolean', value: '[=BOOL]', help, section, compatOnly: true }) as const;
  const withValue = (name: string, value: string, help: string, section: string) =>
    ({ name, type: 'string', value, help, section, compatOnly: true }) as const;
  return [
    bool('offline', 'verification is always offline (=false is noted, never obeyed)', accepted),
    bool('new-bundle-format', "the bundle's format is read from the bundle itself", accepted),
    bool(
      'use-signed-timestamps',
      'RFC 3161 timestamps in the bundle are always verified',
      accepted,
    ),
    withValue(
      'rekor-url',
      'URL',
      'the transparency log comes from the trusted root, not a URL',
      accepted,
    ),
    bool(
      'insecure-ignore-tlog',
      'refused: mvmctl never skips transparency evidence (=false, asking for the check it always makes, is accepted)',
      refused,
    ),
    bool('insecure-ignore-sct', 'refused: mvmctl never skips SCTs (=false is accepted)', refused),
    bool(
      'private-infrastructure',
      'refused: mvmctl never skips the transparency log (=false is accepted)',
      refused,
    ),
    ...(
      ['certificate-chain', 'ca-roots', 'ca-intermediates', 'timestamp-certificate-chain'] as const
    ).map((name) =>
      withValue(
        name,
        'FILE',
        'refused: trust anchors come only from the trusted root (--trusted-root)',
        refused,
      ),
    ),
    withValue(
      'rfc3161-timestamp',
      'FILE',
      'refused: a timestamp is verified only inside the bundle it vouches for',
      refused,
    ),
    bool(
      'sk',
      'refused: hardware keys are not offered; export the public key and use --key',
      refused,
    ),
    withValue(
      'slot',
      'SLOT',
      'refused: hardware keys are not offered; export the public key and use --key',
      refused,
    ),
  ];
}

export type CommandKey = keyof typeof COMMANDS;

/** A command's flags and the common ones (--json, --debug, --help), each once. */
export function flagsOf(key: CommandKey): readonly FlagSpec[] {
  const own: readonly FlagSpec[] = COMMANDS[key].flags;
  return [...own, ...COMMON_FLAGS.filter((c) => !own.some((f) => f.name === c.name))];
}

export function specOf(key: CommandKey): CommandSpec {
  return COMMANDS[key];
}

export const COMMAND_KEYS = Object.keys(COMMANDS) as CommandKey[];

/** The subcommands of a path ('' for the top level), in table order. */
export function childrenOf(path: string): CommandKey[] {
  const depth = path === '' ? 1 : path.split(' ').length + 1;
  return COMMAND_KEYS.filter(
    (k) => k.split(' ').length === depth && (path === '' || k.startsWith(`${path} `)),
  );
}

/** The last word of a command and its aliases: what may be typed after its parent. */
export function namesOf(key: CommandKey): string[] {
  const spec: CommandSpec = COMMANDS[key];
  return [key.split(' ').at(-1)!, ...(spec.aliases ?? [])];
}

/** Flags of mvmctl itself, before any command. */
export const GLOBAL_FLAGS = [
  {
    name: 'help',
    short: 'h',
    type: 'boolean',
    help: 'show help (also after a command: mvmctl dev fetch --help)',
  },
  {
    name: 'version',
    short: 'v',
    type: 'boolean',
    help: 'print the mvmctl version (release manifests are pinned to it)',
  },
  { name: 'json', type: 'boolean', help: 'machine-readable output' },
  { name: 'debug', type: 'boolean', help: 'show internal detail on errors' },
] as const satisfies readonly FlagSpec[];

/** mvmctl as a whole: the top of mvmctl --help and of the man page. */
export const TOOL = {
  summary: 'get a supply-chain-verified microVM dev image onto a host, and boot it',
  usage: ['mvmctl <command> [flags]', 'mvmctl help <command>'],
  description: `mvmctl gets a microVM dev image (a Linux kernel plus an ext4 root file
system) onto a host through a supply-chain-verified path, and boots it under
QEMU: online from the project's releases (dev pull, dev fetch), or on an
air-gapped host from files an operator carried in (dev import-image).
Verification is Sigstore (cosign) based, works with no network at all, fails
closed, and says exactly which check failed. Every outcome is recorded in a
hash-chained audit log.`,
  sections: [
    {
      title: 'Audit log',
      body: `Every verification outcome is appended to ~/.mvm/telemetry/audit.jsonl,
hash-chained, with its last sequence number and hash kept in an anchor outside the log.
The chain and anchor show a record edited, reordered or removed, and a log shortened or
deleted, by anything that does not rewrite both. They do not prove the log genuine: a
local writer with your privileges can rewrite the log and its anchor together. Shipping
each record off the host (MVM_AUDIT_SOCKET) is what defends against that.`,
    },
  ],
} as const;
