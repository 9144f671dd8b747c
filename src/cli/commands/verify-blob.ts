import { homedir } from 'node:os';
import { configFrom } from '../../config.js';
import { MvmError } from '../../errors.js';
import { verifyBlob, type VerifyBlobResult } from '../../verify-blob.js';
import { parseCommand } from '../args.js';
import { jsonLine, type Output } from '../render.js';

/**
 * The data directory to look for installed trust in. Without a usable HOME
 * or MVM_DATA_DIR there is none to find, and the embedded root is used, as
 * before any trust was imported.
 */
function installedTrustDir(): { dataDir?: string } {
  try {
    return { dataDir: configFrom(process.env, homedir()).dataDir };
  } catch {
    return {};
  }
}

/** cosign's boolean flags (Go pflag: --flag, --flag=true, --flag=false). */
const COSIGN_BOOLEANS = [
  'offline',
  'new-bundle-format',
  'use-signed-timestamps',
  'insecure-ignore-tlog',
  'insecure-ignore-sct',
  'private-infrastructure',
] as const;
type CosignBoolean = (typeof COSIGN_BOOLEANS)[number];

/** Booleans that, when true, would weaken verification: refused, never silently ignored. */
const WEAKENING: Readonly<Partial<Record<CosignBoolean, string>>> = {
  'insecure-ignore-tlog':
    'mvmctl never verifies without transparency-log evidence: it is what proves when the signature was made',
  'insecure-ignore-sct':
    'mvmctl never verifies a certificate without its signed certificate timestamp',
  'private-infrastructure':
    'mvmctl never skips the transparency log; for a private Sigstore deployment, pass its trusted_root.json with --trusted-root',
};

/** cosign flags with a value that make no sense for an offline, trusted-root-anchored check. */
const REFUSED_WITH_VALUE: Readonly<Record<string, string>> = {
  'certificate-chain':
    'trust anchors come only from the trusted root; put the CA into a trusted_root.json and pass --trusted-root',
  'ca-roots':
    'trust anchors come only from the trusted root; put the CA into a trusted_root.json and pass --trusted-root',
  'ca-intermediates':
    'trust anchors come only from the trusted root; put the CA into a trusted_root.json and pass --trusted-root',
  'timestamp-certificate-chain':
    'timestamp authorities come only from the trusted root; add the TSA to a trusted_root.json and pass --trusted-root',
  'rfc3161-timestamp':
    'a timestamp is verified only inside the bundle it vouches for; use the bundle cosign wrote with --bundle',
  sk: 'hardware-key verification is not offered; export the public key and verify with --key',
  slot: 'hardware-key verification is not offered; export the public key and verify with --key',
};

const usage = (message: string, fix: string): MvmError =>
  new MvmError('usage', `verify-blob: ${message}`, { fix });

/** Go's strconv.ParseBool, which pflag uses for --flag=VALUE. */
function parseGoBool(flag: string, value: string): boolean {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(value)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(value)) return false;
  throw usage(
    `--${flag}=${value} is not a boolean`,
    `Write --${flag}, --${flag}=true or --${flag}=false.`,
  );
}

/**
 * Takes cosign's boolean flags (which node:util parseArgs cannot read in the
 * --flag=false form) and refused flags out of argv before the strict parse.
 */
function takeCosignFlags(args: string[]): {
  rest: string[];
  booleans: Partial<Record<CosignBoolean, boolean>>;
} {
  const rest: string[] = [];
  const booleans: Partial<Record<CosignBoolean, boolean>> = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--') {
      rest.push(...args.slice(i));
      break;
    }
    const m = /^--([a-z0-9-]+)(?:=(.*))?$/s.exec(arg);
    const name = m?.[1];
    if (name !== undefined && (COSIGN_BOOLEANS as readonly string[]).includes(name)) {
      booleans[name as CosignBoolean] = m![2] === undefined ? true : parseGoBool(name, m![2]);
      continue;
    }
    if (name !== undefined && name in REFUSED_WITH_VALUE) {
      throw new MvmError('usage', `verify-blob: --${name} is not supported`, {
        cause: REFUSED_WITH_VALUE[name]!,
        fix: `Remove --${name}; see 'mvmctl verify-blob --help' for the cosign flags mvmctl takes.`,
      });
    }
    rest.push(arg);
  }
  return { rest, booleans };
}

export async function verifyBlobCommand(args: string[], io: Output): Promise<number> {
  const { rest, booleans } = takeCosignFlags(args);
  // Flags, help and exit codes: the verify-blob row of src/cli/spec.ts (cosign's booleans and
  // refused flags are taken out above: pflag's --flag=false is not parseArgs syntax).
  const { values, positionals } = parseCommand('verify-blob', rest);
  for (const [flag, why] of Object.entries(WEAKENING)) {
    if (booleans[flag as CosignBoolean] === true) {
      throw new MvmError('usage', `verify-blob: --${flag} is refused`, {
        cause: why,
        fix: `Remove --${flag}; if verification then fails, the error names the check and its fix.`,
      });
    }
  }
  if (positionals.length !== 1) {
    throw usage(
      `takes exactly one ARTIFACT, got ${positionals.length}`,
      "Run 'mvmctl verify-blob --help'.",
    );
  }
  if (values.bundle === undefined) {
    throw usage(
      '--bundle is required',
      values.signature !== undefined || values.certificate !== undefined
        ? 'Offline verification needs the transparency-log evidence only a bundle carries: sign with cosign sign-blob --bundle, and pass that file.'
        : "Run 'mvmctl verify-blob --help'.",
    );
  }
  // Say so when a flag asks for something cosign would do differently online.
  const notes: string[] = [];
  if (booleans.offline === false) {
    notes.push(
      '--offline=false is ignored: mvmctl verifies offline only, from the bundle and the trusted root.',
    );
  }
  if (values['rekor-url'] !== undefined) {
    notes.push('--rekor-url is ignored: the transparency log is the one the trusted root lists.');
  }
  const trustedRootPath = values['trusted-root'] || process.env['MVM_TRUSTED_ROOT'] || undefined;
  const result = await verifyBlob({
    artifactPath: positionals[0]!,
    bundlePath: values.bundle,
    certificateIdentity: values['certificate-identity'],
    certificateIdentityRegexp: values['certificate-identity-regexp'],
    certificateOidcIssuer: values['certificate-oidc-issuer'],
    certificateOidcIssuerRegexp: values['certificate-oidc-issuer-regexp'],
    githubWorkflow: {
      trigger: values['certificate-github-workflow-trigger'],
      sha: values['certificate-github-workflow-sha'],
      name: values['certificate-github-workflow-name'],
      repository: values['certificate-github-workflow-repository'],
      ref: values['certificate-github-workflow-ref'],
    },
    signaturePath: values.signature,
    certificatePath: values.certificate,
    keyPath: values.key,
    trustedRootPath,
    // The installed trust is looked up only when no root is named: a named one needs no HOME.
    ...(trustedRootPath ? {} : installedTrustDir()),
  });
  if (values.json) {
    io.out(jsonLine(notes.length > 0 ? { ...result, notes } : result));
  } else {
    const who =
      result.signer.kind === 'key'
        ? 'the given key'
        : `${result.signer.identity} (issuer ${result.signer.issuer})`;
    io.err(
      [
        ...notes.map((n) => `Note: ${n}`),
        `Signed by:        ${who}`,
        `Bundle:           ${result.bundleFormat} (${result.mediaType})`,
        `Artifact SHA-256: ${result.artifactSha256}`,
        `Transparency log: ${result.tlog.logUrl} index ${result.tlog.logIndex}`,
        `Signed at:        ${signedAt(result)}`,
        `Trusted root:     ${result.trustedRoot.source}`,
        // cosign prints its verdict on stderr; scripts that grep it there keep working.
        'Verified OK',
      ].join('\n'),
    );
  }
  return 0;
}

/** The verified time of the signing and which authority vouches for it. */
function signedAt(result: VerifyBlobResult): string {
  const t = result.signedTime;
  if (!t) return '(no signed time)';
  return t.source === 'timestamp-authority'
    ? `${t.time} (RFC 3161 timestamp authority)`
    : `${t.time} (signed entry timestamp of the log)`;
}
