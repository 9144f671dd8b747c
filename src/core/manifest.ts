/**
 * The release manifest, schema v1 (SPEC.md section 2). Pure: bytes in, a typed
 * Manifest or a manifest error out. Callers parse only after the manifest's
 * signature verified (SPEC.md section 3): nothing here makes it trustworthy.
 */
import { MvmError } from '../errors.js';
import { parseJsonObject, schemaVersionOf } from './json.js';

export const SUPPORTED_MANIFEST_SCHEMA = 1;
/** The most bytes a manifest may have; read bounded wherever one is read. */
export const MAX_MANIFEST_BYTES = 1024 * 1024;

export type Arch = 'x86_64' | 'aarch64';
export type Variant = 'dev' | 'builder';
export type RootfsFormat = 'ext4' | 'squashfs';

export interface ArtifactEntry {
  readonly name: string;
  /** Lower-case hex. */
  readonly sha256: string;
  /** Fields of the entry this mvmctl does not know (see Manifest.unknownFields); absent when none. */
  readonly unknownFields?: Readonly<Record<string, unknown>>;
}

export interface Manifest {
  readonly schemaVersion: number;
  readonly version: string;
  readonly arch: Arch;
  readonly variant: Variant;
  readonly rootfsFormat: RootfsFormat;
  readonly artifacts: readonly ArtifactEntry[];
  readonly nixStoreHash: string;
  readonly sourceGitSha: string;
  readonly flakeLocks: Readonly<Record<string, string>>;
  readonly addressedAdvisories: readonly string[];
  readonly builtAt: Date;
  readonly notAfter: Date;
  /**
   * Top-level fields of this known schema_version that this mvmctl does not
   * know, as signed. Upstream's producer and its serde parser let a release
   * add fields without a new schema_version, so they are accepted, shown and
   * recorded, and never acted on: nothing here decides anything.
   */
  readonly unknownFields: Readonly<Record<string, unknown>>;
}

/** semver.org's grammar, anchored; checked before a version ever reaches a path. */
export const SEMVER =
  /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$/;
export const isSemver = (v: string): boolean => v.length <= 128 && SEMVER.test(v);

const SHA256_HEX = /^[0-9a-fA-F]{64}$/;
const RFC3339_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?Z$/;
/** A release file name: no separators, no leading dot, so it can never walk out of a directory. */
const FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const ARTIFACT_FIELDS = new Set(['name', 'sha256']);
const FIELDS = new Set([
  'schema_version',
  'version',
  'arch',
  'variant',
  'rootfs_format',
  'artifacts',
  'nix_store_hash',
  'source_git_sha',
  'flake_locks',
  'addressed_advisories',
  'built_at',
  'not_after',
]);

const invalid = (cause: string, fix?: string): MvmError =>
  new MvmError('manifest', `The manifest is not a valid schema v1 manifest: ${cause}`, {
    cause,
    ...(fix ? { fix } : {}),
  });

export function parseManifest(bytes: Uint8Array): Manifest {
  const parsed = parseJsonObject(bytes);
  if (!parsed.ok) throw invalid(`it is ${parsed.reason}`);
  const m = parsed.value;

  const schema = schemaVersionOf(m);
  if (schema === undefined) throw invalid('schema_version is missing or not a positive integer');
  if (schema > SUPPORTED_MANIFEST_SCHEMA) {
    throw new MvmError(
      'manifest',
      `The manifest uses schema_version ${schema}, newer than this mvmctl reads (${SUPPORTED_MANIFEST_SCHEMA})`,
      {
        cause: 'unsupported schema_version',
        fix: 'Upgrade mvmctl to the release the manifest belongs to.',
      },
    );
  }
  // Unknown fields of a known schema are signed data a newer producer added: kept, never used.
  const unknownFields = unknownOf(m, FIELDS);

  const version = str(m, 'version');
  if (!isSemver(version))
    throw invalid(
      `version ${JSON.stringify(version.slice(0, 64))} is not strict semver (no leading "v")`,
    );
  const arch = oneOf(m, 'arch', ['x86_64', 'aarch64'] as const);
  const variant = oneOf(m, 'variant', ['dev', 'builder'] as const);
  const rootfsFormat = oneOf(m, 'rootfs_format', ['ext4', 'squashfs'] as const);

  const rawArtifacts = m['artifacts'];
  if (!Array.isArray(rawArtifacts) || rawArtifacts.length === 0 || rawArtifacts.length > 64) {
    throw invalid('artifacts is missing, empty or not an array');
  }
  const names = new Set<string>();
  const artifacts = rawArtifacts.map((a, i): ArtifactEntry => {
    if (a === null || typeof a !== 'object' || Array.isArray(a))
      throw invalid(`artifacts[${i}] is not an object`);
    const entry = a as Record<string, unknown>;
    const name = str(entry, 'name', `artifacts[${i}].name`);
    if (!FILE_NAME.test(name))
      throw invalid(
        `artifacts[${i}].name ${JSON.stringify(name.slice(0, 64))} is not a plain file name`,
      );
    if (names.has(name)) throw invalid(`artifact ${name} is listed twice`);
    names.add(name);
    const sha256 = str(entry, 'sha256', `artifacts[${i}].sha256`);
    if (!SHA256_HEX.test(sha256)) throw invalid(`artifacts[${i}].sha256 is not 64 hex digits`);
    const unknown = unknownOf(entry, ARTIFACT_FIELDS);
    return {
      name,
      sha256: sha256.toLowerCase(),
      ...(Object.keys(unknown).length ? { unknownFields: unknown } : {}),
    };
  });

  const flakeLocksRaw = m['flake_locks'];
  if (flakeLocksRaw === null || typeof flakeLocksRaw !== 'object' || Array.isArray(flakeLocksRaw)) {
    throw invalid('flake_locks is missing or not an object');
  }
  const flakeLocks: Record<string, string> = {};
  for (const [path, digest] of Object.entries(flakeLocksRaw)) {
    if (typeof digest !== 'string' || !/^sha256:[0-9a-fA-F]{64}$/.test(digest)) {
      throw invalid(`flake_locks[${JSON.stringify(path.slice(0, 64))}] is not "sha256:<64 hex>"`);
    }
    flakeLocks[path] = digest;
  }

  const advisories = m['addressed_advisories'] ?? [];
  if (!Array.isArray(advisories) || !advisories.every((a) => typeof a === 'string')) {
    throw invalid('addressed_advisories is not an array of strings');
  }
  const builtAt = time(m, 'built_at');
  const notAfter = time(m, 'not_after');
  if (notAfter <= builtAt) throw invalid('not_after is not after built_at');

  const manifest: Manifest = {
    schemaVersion: schema,
    version,
    arch,
    variant,
    rootfsFormat,
    artifacts,
    nixStoreHash: str(m, 'nix_store_hash'),
    sourceGitSha: str(m, 'source_git_sha'),
    flakeLocks,
    addressedAdvisories: advisories as string[],
    builtAt,
    notAfter,
    unknownFields,
  };
  // Kernel and rootfs must be named: a missing entry fails here, not mid-install (an initrd is optional).
  artifactFor(manifest, 'kernel');
  artifactFor(manifest, 'rootfs');
  return manifest;
}

/** The parts of a set: kernel and rootfs always, an initramfs when the manifest lists one. */
export type ArtifactRole = 'kernel' | 'rootfs' | 'initrd';

/** Release file names of SPEC.md sections 1 and 2, looked up by name, never by position. */
export function artifactName(
  m: Pick<Manifest, 'variant' | 'arch' | 'rootfsFormat'>,
  role: ArtifactRole,
): string {
  switch (role) {
    case 'kernel':
      return `${m.variant}-vmlinux-${m.arch}`;
    case 'rootfs':
      return `${m.variant}-rootfs-${m.arch}.${m.rootfsFormat}`;
    case 'initrd':
      return `${m.variant}-initrd-${m.arch}`;
  }
}

/**
 * A dev release's file names for one arch (SPEC.md section 1): what
 * `import-image --dir` looks for and what `dev fetch` writes. The artifacts'
 * names are the ones their manifest lists (artifactName, dev variant, ext4).
 */
export function releaseFileNames(arch: Arch) {
  const dev = { variant: 'dev', arch, rootfsFormat: 'ext4' } as const;
  return {
    manifest: `dev-image-${arch}.manifest.json`,
    bundle: `dev-image-${arch}.manifest.json.bundle`,
    vmlinux: artifactName(dev, 'kernel'),
    rootfs: artifactName(dev, 'rootfs'),
    initrd: artifactName(dev, 'initrd'),
  };
}

/** The manifest's entry for `role`, if it lists one (the initrd is optional). */
export function listedArtifact(m: Manifest, role: ArtifactRole): ArtifactEntry | undefined {
  const name = artifactName(m, role);
  return m.artifacts.find((a) => a.name === name);
}

/** The manifest's entry for `role`; a missing one is an invalid manifest. */
export function artifactFor(m: Manifest, role: ArtifactRole): ArtifactEntry {
  const entry = listedArtifact(m, role);
  if (!entry)
    throw invalid(
      `missing artifact entry ${artifactName(m, role)}`,
      'Re-export the manifest from the release; it does not describe this image.',
    );
  return entry;
}

/** Node's process.arch to the manifest's arch names. */
export function hostArch(nodeArch: string): Arch | undefined {
  return nodeArch === 'x64' ? 'x86_64' : nodeArch === 'arm64' ? 'aarch64' : undefined;
}

/** Hex digests compare case-insensitively (SPEC.md section 2). */
export const sameDigest = (a: string, b: string): boolean => a.toLowerCase() === b.toLowerCase();

/** The fields of `o` not in `known`, as own data properties (a "__proto__" key stays a plain key). */
function unknownOf(
  o: Record<string, unknown>,
  known: ReadonlySet<string>,
): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([k]) => !known.has(k)));
}

/** Bounds for recording unknown fields: the receipt stays small and readable whatever a manifest adds. */
const MAX_RECORDED_FIELDS = 64;
const MAX_RECORDED_VALUE_CHARS = 1024;

/**
 * The manifest's unknown fields, flattened for the receipt and `status`:
 * `name` for a top-level field, `artifacts[<artifact name>].name` for an
 * artifact's. A value longer than 1 KiB of JSON is replaced by a note (the
 * installed manifest.json holds it whole), and at most 64 fields are listed.
 */
export function unknownFieldsOf(m: Manifest): Record<string, unknown> {
  const all: [string, unknown][] = [
    ...Object.entries(m.unknownFields),
    ...m.artifacts.flatMap((a) =>
      Object.entries(a.unknownFields ?? {}).map(([k, v]): [string, unknown] => [
        `artifacts[${a.name}].${k}`,
        v,
      ]),
    ),
  ];
  const recorded = all.slice(0, MAX_RECORDED_FIELDS).map(([k, v]): [string, unknown] => {
    const json = JSON.stringify(v);
    return [
      k,
      json.length > MAX_RECORDED_VALUE_CHARS
        ? { omitted: `${json.length} characters of JSON; the installed manifest.json holds it` }
        : v,
    ];
  });
  if (all.length > MAX_RECORDED_FIELDS)
    recorded.push([
      '(more)',
      `${all.length - MAX_RECORDED_FIELDS} more unknown fields are in the installed manifest.json`,
    ]);
  return Object.fromEntries(recorded);
}

function str(o: Record<string, unknown>, key: string, label = key): string {
  const v = o[key];
  if (typeof v !== 'string' || v === '')
    throw invalid(`${label} is missing or not a non-empty string`);
  if (v.length > 4096) throw invalid(`${label} is too long`);
  return v;
}

function oneOf<T extends string>(
  o: Record<string, unknown>,
  key: string,
  allowed: readonly T[],
): T {
  const v = o[key];
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    throw invalid(`${key} must be one of ${allowed.join(', ')}`);
  }
  return v as T;
}

function time(o: Record<string, unknown>, key: string): Date {
  const v = str(o, key);
  const t = Date.parse(v);
  if (!RFC3339_UTC.test(v) || Number.isNaN(t)) throw invalid(`${key} is not an RFC 3339 UTC time`);
  return new Date(t);
}
