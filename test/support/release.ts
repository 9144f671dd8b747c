/**
 * Release sets and revocation lists signed by the test PKI, written as real
 * files with their release names, as an operator would carry them in.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { releaseIdentity, TestPki } from './pki.js';

export const REPO = 'tinylabscom/mvm';
export const REVOCATIONS_IDENTITY = `https://github.com/${REPO}/.github/workflows/revocations.yml@refs/tags/revocations`;
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

export interface ReleaseFiles {
  dir: string;
  manifest: string;
  bundle: string;
  vmlinux: string;
  rootfs: string;
  manifestJson: Record<string, unknown>;
  kernelBytes: Buffer;
  rootfsBytes: Buffer;
  /** Sets made with the `initrd` option: the file at its release name, and its bytes. */
  initrd?: string;
  initrdBytes?: Buffer;
}

export interface ReleaseOptions {
  version?: string;
  arch?: 'x86_64' | 'aarch64';
  /** The tag the release workflow ran at (defaults to v{version}). */
  tag?: string;
  kernel?: Buffer;
  rootfs?: Buffer;
  /** A five-file set: the manifest lists `dev-initrd-{arch}` (these bytes, or generated ones for `true`). */
  initrd?: Buffer | true;
  builtAt?: Date;
  notAfter?: Date;
  /** Artifacts already written at their release names (large files): their digests, not their bytes. */
  artifactsInPlace?: { kernelSha256: string; rootfsSha256: string };
  /** Edit the manifest object before it is signed. */
  edit?: (m: Record<string, unknown>) => void;
  /** Sign as Sigstore does today: a Rekor v2 entry and an RFC 3161 timestamp, no signed entry timestamp. */
  rekorV2?: boolean;
}

export async function writeReleaseSet(
  pki: TestPki,
  dir: string,
  o: ReleaseOptions = {},
): Promise<ReleaseFiles> {
  mkdirSync(dir, { recursive: true });
  const version = o.version ?? '0.14.0';
  const arch = o.arch ?? 'x86_64';
  const kernelBytes = o.kernel ?? Buffer.from(`kernel ${version} ${arch} `.repeat(4096));
  const rootfsBytes = o.rootfs ?? Buffer.from(`rootfs ${version} ${arch} `.repeat(65536));
  const initrdBytes =
    o.initrd === undefined
      ? undefined
      : o.initrd === true
        ? Buffer.from(`initrd ${version} ${arch} `.repeat(8192))
        : o.initrd;
  const builtAt = o.builtAt ?? new Date(Date.now() - 86_400_000);
  const manifestJson: Record<string, unknown> = {
    schema_version: 1,
    version,
    arch,
    variant: 'dev',
    rootfs_format: 'ext4',
    artifacts: [
      { name: `dev-vmlinux-${arch}`, sha256: o.artifactsInPlace?.kernelSha256 ?? sha(kernelBytes) },
      {
        name: `dev-rootfs-${arch}.ext4`,
        sha256: o.artifactsInPlace?.rootfsSha256 ?? sha(rootfsBytes),
      },
      ...(initrdBytes ? [{ name: `dev-initrd-${arch}`, sha256: sha(initrdBytes) }] : []),
    ],
    nix_store_hash: '/nix/store/0000000000000000000000000000000-mvm-dev-image',
    source_git_sha: '0123456789abcdef0123456789abcdef01234567',
    flake_locks: { 'flake.lock': `sha256:${sha(Buffer.from('lock'))}` },
    addressed_advisories: [],
    built_at: builtAt.toISOString().replace(/\.\d+Z$/, 'Z'),
    not_after: (o.notAfter ?? new Date(builtAt.getTime() + 90 * 86_400_000))
      .toISOString()
      .replace(/\.\d+Z$/, 'Z'),
  };
  o.edit?.(manifestJson);
  const manifestBytes = Buffer.from(JSON.stringify(manifestJson, null, 2) + '\n');
  const bundle = await pki.signBlob(manifestBytes, {
    identity: releaseIdentity(REPO, o.tag ?? `v${version}`),
    ...(o.rekorV2 ? { rekorV2: true } : {}),
  });
  const files: ReleaseFiles = {
    dir,
    manifest: join(dir, `dev-image-${arch}.manifest.json`),
    bundle: join(dir, `dev-image-${arch}.manifest.json.bundle`),
    vmlinux: join(dir, `dev-vmlinux-${arch}`),
    rootfs: join(dir, `dev-rootfs-${arch}.ext4`),
    manifestJson,
    kernelBytes,
    rootfsBytes,
    ...(initrdBytes ? { initrd: join(dir, `dev-initrd-${arch}`), initrdBytes } : {}),
  };
  writeFileSync(files.manifest, manifestBytes);
  writeFileSync(files.bundle, JSON.stringify(bundle));
  if (!o.artifactsInPlace) {
    writeFileSync(files.vmlinux, kernelBytes);
    writeFileSync(files.rootfs, rootfsBytes);
  }
  if (files.initrd && initrdBytes) writeFileSync(files.initrd, initrdBytes);
  return files;
}

export interface RevocationEntry {
  version: string;
  variant?: string;
  arch?: string;
  reason?: string;
}

/** A signed revocation list pair in `dir` (the cache directory, or a transfer folder). */
export async function writeRevocationList(
  pki: TestPki,
  dir: string,
  entries: RevocationEntry[],
  o: { identity?: string; certTime?: Date; rekorV2?: boolean } = {},
): Promise<{ json: string; bundle: string }> {
  mkdirSync(dir, { recursive: true });
  const list = {
    schema_version: 1,
    revocations: entries.map((e) => ({
      version: e.version,
      variant: e.variant ?? 'dev',
      arch: e.arch ?? 'x86_64',
      reason: e.reason ?? 'CVE-2026-0001: test recall',
      revoked_at: '2026-11-01T00:00:00Z',
    })),
  };
  const bytes = Buffer.from(JSON.stringify(list, null, 2) + '\n');
  const json = join(dir, 'revoked-versions.json');
  const bundle = join(dir, 'revoked-versions.json.bundle');
  writeFileSync(json, bytes);
  writeFileSync(
    bundle,
    JSON.stringify(
      await pki.signBlob(bytes, {
        identity: o.identity ?? REVOCATIONS_IDENTITY,
        ...(o.certTime ? { certTime: o.certTime } : {}),
        ...(o.rekorV2 ? { rekorV2: true } : {}),
      }),
    ),
  );
  return { json, bundle };
}
