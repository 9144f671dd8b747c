/**
 * One error family for the whole tool. Callers branch on `code` (a closed
 * union), never on message text; the CLI maps a code to its exit status, its
 * counter and its default fix through ERROR_TABLE, the only place that mapping
 * lives (SPEC.md section 3, "Error wording and exit codes").
 */

export type ErrorCode =
  | 'usage'
  | 'input'
  | 'trusted-root'
  | 'signature'
  | 'version'
  | 'arch'
  | 'revoked'
  | 'digest'
  | 'manifest'
  | 'network'
  /** No revocation list fresh enough where one is required (--require-fresh-revocations): not a network failure. */
  | 'stale-revocations'
  | 'rollback'
  | 'tampered'
  | 'store'
  /** `status --check`: the host is not healthy (the current image recalled, UNVERIFIED or expired, a broken audit chain). */
  | 'unhealthy'
  /** The dev VM's guest agent is absent, silent, garbled or gone; or a guest command could not be run (exit 255, as ssh). */
  | 'agent'
  /** SIGINT / SIGTERM: the work was stopped by the operator (exit 130, as a shell reports Ctrl-C). */
  | 'interrupted'
  | 'not-implemented'
  | 'internal';

/** Which check of a Sigstore verification failed; named in every signature error. */
export type VerificationCheck =
  | 'bundle-format'
  | 'media-type'
  | 'artifact-digest'
  | 'signature'
  | 'key'
  | 'certificate-chain'
  | 'certificate-validity'
  | 'sct'
  | 'tlog-entry'
  | 'tlog-inclusion'
  | 'checkpoint'
  | 'signed-entry-timestamp'
  | 'timestamp'
  | 'identity'
  | 'issuer';

/** Counter names of SPEC.md section 6, without the `mvm_` prefix. */
export type CounterName =
  | 'dev_image_verify_ok_total'
  | 'dev_image_verify_sig_invalid_total'
  | 'dev_image_verify_digest_mismatch_total'
  | 'dev_image_verify_version_skew_total'
  | 'dev_image_verify_arch_mismatch_total'
  | 'dev_image_verify_revoked_total'
  | 'dev_image_verify_expired_total'
  | 'dev_image_verify_network_total'
  | 'dev_image_verify_bypassed_total'
  /** Not in SPEC.md's list: a signed manifest that does not parse is worth alerting on too. */
  | 'dev_image_verify_manifest_invalid_total';

/** The wording the first line of every network failure carries (SPEC.md section 3's table). */
export const ONLINE_FETCH_FAILED = 'Online fetch failed';

export interface ErrorClass {
  /** Process exit status. */
  readonly exit: number;
  /** Counter bumped when a pipeline fails with this code, if any. */
  readonly counter?: CounterName;
  /** The fix offered when the thrower gives none. */
  readonly fix: string;
}

export const ERROR_TABLE: Readonly<Record<ErrorCode, ErrorClass>> = {
  usage: { exit: 2, fix: 'Run the command with --help to see its flags.' },
  input: { exit: 3, fix: 'Check the path: it must name a readable regular file.' },
  'trusted-root': {
    exit: 3,
    fix: 'Point --trusted-root or MVM_TRUSTED_ROOT at a valid Sigstore trusted_root.json, or unset them to use the embedded public-good root.',
  },
  signature: {
    exit: 10,
    counter: 'dev_image_verify_sig_invalid_total',
    fix: 'Re-export both files together from the same release tag.',
  },
  version: {
    exit: 11,
    counter: 'dev_image_verify_version_skew_total',
    fix: 'Use a manifest from the matching release; or upgrade mvmctl first.',
  },
  arch: {
    exit: 12,
    counter: 'dev_image_verify_arch_mismatch_total',
    fix: 'Re-export the manifest for your host arch.',
  },
  revoked: {
    exit: 13,
    counter: 'dev_image_verify_revoked_total',
    fix: 'Use a non-revoked release.',
  },
  digest: {
    exit: 14,
    counter: 'dev_image_verify_digest_mismatch_total',
    fix: 'Re-transfer the full set; check transit medium.',
  },
  manifest: {
    exit: 15,
    counter: 'dev_image_verify_manifest_invalid_total',
    fix: 'Re-export the manifest from the release; it is not a valid schema v1 manifest.',
  },
  network: {
    exit: 16,
    counter: 'dev_image_verify_network_total',
    fix: 'Check connectivity and proxy settings (HTTPS_PROXY), or use the air-gapped path.',
  },
  'stale-revocations': {
    exit: 18,
    // Counted where these refusals were counted before they had a code of their own: on an
    // air-gapped host they are what a missing network looks like, and fleets' existing rates and
    // alerts keep their meaning. The audit record's code tells the two apart.
    counter: 'dev_image_verify_network_total',
    fix: 'Import a current pair with mvmctl revocations import --list revoked-versions.json --bundle revoked-versions.json.bundle (or run mvmctl revocations refresh where the network allows), then retry.',
  },
  rollback: {
    exit: 10,
    fix: 'Keep the cached list; fetch or carry in the current pair from the revocations release.',
  },
  tampered: {
    exit: 10,
    fix: 'The audit log was edited or truncated: keep a copy for investigation; new records still chain on.',
  },
  store: { exit: 17, fix: 'Check free space and the permissions of the data directory.' },
  unhealthy: {
    exit: 19,
    fix: 'Act on each problem listed: install a release that is not recalled or expired (mvmctl dev import-image or dev pull), re-import an UNVERIFIED image without the escape hatch, and investigate a broken audit chain (mvmctl audit tail).',
  },
  agent: {
    // Outside what guest commands usually exit with, and what ssh uses for its own failures, so a
    // script running `mvmctl dev exec -- CMD` can tell CMD's status from mvmctl's.
    exit: 255,
    fix: "Check that the dev VM is up (mvmctl dev status) and that its image runs qemu-guest-agent on the virtio-serial port org.qemu.guest_agent.0; mvmctl dev logs shows the guest's console.",
  },
  interrupted: {
    exit: 130,
    fix: 'Run the command again: nothing half-done was kept under a final name.',
  },
  'not-implemented': {
    exit: 1,
    fix: 'This capability is not built yet; see the project issues.',
  },
  internal: { exit: 1, fix: 'Re-run with --debug and report the output.' },
};

/** The fix for a failed verification check, where it is more precise than the class's fix. */
export const CHECK_FIX: Readonly<Partial<Record<VerificationCheck, string>>> = {
  'bundle-format':
    'Use the bundle published beside the artifact (cosign sign-blob --bundle output), unmodified.',
  'media-type': 'Use a Sigstore bundle (v0.1 to v0.3) or a legacy cosign bundle.',
  'artifact-digest':
    'The file and the bundle are not from the same signing: fetch both again from the same release.',
  signature:
    'The file was modified after signing, or the bundle is for another file: fetch both again.',
  identity: 'Check --certificate-identity (or the pattern); the error names who actually signed.',
  issuer: 'Check --certificate-oidc-issuer; the error names the issuer that signed.',
  'certificate-chain':
    'The signing certificate does not chain to a CA in the trusted root: check --trusted-root (or MVM_TRUSTED_ROOT). A CA newer than the trusted root needs a newer root: `mvmctl trust fetch` on a connected host, then `mvmctl trust import DIR`.',
  'certificate-validity':
    'The certificate was not valid when the log recorded the signature: the bundle is not genuine.',
  key: 'Use --key for key-signed bundles and the certificate flags for keyless ones, with the right key.',
  'tlog-entry':
    'The transparency-log evidence is missing or from a log the trusted root does not list: check --trusted-root (or MVM_TRUSTED_ROOT). A log newer than the trusted root (a new Rekor shard) needs a newer root: run `mvmctl trust fetch --out DIR` on a connected host, carry DIR, then `mvmctl trust import DIR`.',
  'tlog-inclusion': 'The inclusion proof does not verify: the bundle was altered; fetch it again.',
  checkpoint:
    'The log checkpoint is not signed by the trusted log: the bundle was altered; fetch it again.',
  'signed-entry-timestamp':
    'The signed entry timestamp does not verify: the bundle was altered; fetch it again.',
};

export interface MvmErrorOptions {
  /** Why it happened, in the operator's terms. */
  cause?: string;
  /** What to do about it; defaults to the table's fix for the code. */
  fix?: string;
  /** For signature errors: the verification check that failed. */
  check?: VerificationCheck;
  /** The underlying exception, kept for --debug only. */
  underlying?: unknown;
}

export class MvmError extends Error {
  override readonly name = 'MvmError';
  readonly code: ErrorCode;
  override readonly cause: string | undefined;
  readonly fix: string;
  readonly check: VerificationCheck | undefined;
  readonly underlying: unknown;

  constructor(code: ErrorCode, message: string, options: MvmErrorOptions = {}) {
    super(message);
    this.code = code;
    this.cause = options.cause;
    this.fix = options.fix ?? (options.check && CHECK_FIX[options.check]) ?? ERROR_TABLE[code].fix;
    this.check = options.check;
    this.underlying = options.underlying;
  }

  get exitCode(): number {
    return ERROR_TABLE[this.code].exit;
  }

  toJSON(): Record<string, unknown> {
    return {
      code: this.code,
      ...(this.check ? { check: this.check } : {}),
      message: this.message,
      cause: this.cause ?? null,
      fix: this.fix,
      exitCode: this.exitCode,
    };
  }
}

export function isMvmError(e: unknown): e is MvmError {
  return e instanceof MvmError;
}
