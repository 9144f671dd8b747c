import { MvmError } from '../../errors.js';
import { verifyBlob } from '../../verify-blob.js';
import { parseArgs } from 'node:util';
import { asUsageError, COMMON_OPTIONS } from '../args.js';
import type { Output } from '../render.js';

export const VERIFY_BLOB_HELP = `Usage: mvmctl verify-blob --bundle FILE (--certificate-identity ID | --certificate-identity-regexp RE)
                          --certificate-oidc-issuer ISSUER [--trusted-root FILE] [--json] ARTIFACT
       mvmctl verify-blob --bundle FILE --key cosign.pub [--trusted-root FILE] [--json] ARTIFACT

Verify a Sigstore (cosign) signature over ARTIFACT, entirely offline: the
signature over the exact bytes, the certificate chain to a trusted CA, its
SCT, the transparency-log evidence (signed entry timestamp and/or inclusion
proof with a signed checkpoint), the certificate's validity at the log's time,
the bundle's digest against the artifact, and the signer against the policy.
Flags are cosign's, so a connected host can check a release set before it is
carried to an air-gapped one, without installing cosign.

Flags:
  --bundle FILE                     Sigstore bundle (v0.1, v0.2, v0.3) or legacy cosign bundle
  --certificate-identity ID         exact signer identity (certificate SAN)
  --certificate-identity-regexp RE  pattern for the identity; always matched against the whole
                                    identity (anchored), so a prefix or suffix cannot slip through
  --certificate-oidc-issuer ISSUER  exact OIDC issuer, e.g. https://token.actions.githubusercontent.com
  --key FILE                        PEM public key, for bundles signed with a key (cosign sign-blob --key);
                                    cannot be combined with the certificate flags
  --trusted-root FILE               Sigstore trusted_root.json (default: $MVM_TRUSTED_ROOT, else the
                                    embedded public-good root)
  --json                            print one JSON object (verdict, signer, issuer, log index, time)
  --debug                           show internal detail on errors

Exit status: 0 verified, 10 verification failed, 2 usage error, 3 unreadable input.

Example:
  mvmctl verify-blob --bundle dev-image-x86_64.manifest.json.bundle \\
    --certificate-identity https://github.com/tinylabscom/mvm/.github/workflows/release.yml@refs/tags/v0.14.0 \\
    --certificate-oidc-issuer https://token.actions.githubusercontent.com \\
    dev-image-x86_64.manifest.json
`;

export async function verifyBlobCommand(args: string[], io: Output): Promise<number> {
  const { values, positionals } = asUsageError('verify-blob', () =>
    parseArgs({
      args,
      allowPositionals: true,
      strict: true,
      options: {
        ...COMMON_OPTIONS,
        bundle: { type: 'string' },
        'certificate-identity': { type: 'string' },
        'certificate-identity-regexp': { type: 'string' },
        'certificate-oidc-issuer': { type: 'string' },
        key: { type: 'string' },
        'trusted-root': { type: 'string' },
      },
    }),
  );
  if (values.help) {
    io.out(VERIFY_BLOB_HELP);
    return 0;
  }
  if (positionals.length !== 1) {
    throw new MvmError(
      'usage',
      `verify-blob takes exactly one ARTIFACT, got ${positionals.length}`,
      {
        fix: "Run 'mvmctl verify-blob --help'.",
      },
    );
  }
  if (values.bundle === undefined) {
    throw new MvmError('usage', 'verify-blob: --bundle is required', {
      fix: "Run 'mvmctl verify-blob --help'.",
    });
  }
  const result = await verifyBlob({
    artifactPath: positionals[0]!,
    bundlePath: values.bundle,
    certificateIdentity: values['certificate-identity'],
    certificateIdentityRegexp: values['certificate-identity-regexp'],
    certificateOidcIssuer: values['certificate-oidc-issuer'],
    keyPath: values.key,
    trustedRootPath: values['trusted-root'] ?? process.env['MVM_TRUSTED_ROOT'],
  });
  if (values.json) {
    io.out(JSON.stringify(result));
  } else {
    const who =
      result.signer.kind === 'key'
        ? 'the given key'
        : `${result.signer.identity} (issuer ${result.signer.issuer})`;
    io.err(
      [
        `Signed by:        ${who}`,
        `Bundle:           ${result.bundleFormat} (${result.mediaType})`,
        `Artifact SHA-256: ${result.artifactSha256}`,
        `Transparency log: ${result.tlog.logUrl} index ${result.tlog.logIndex} at ${result.tlog.integratedTime ?? '(no signed time)'}`,
        `Trusted root:     ${result.trustedRoot.source}`,
      ].join('\n'),
    );
    io.out('Verified OK');
  }
  return 0;
}
