/**
 * A TUF repository the tests make and sign themselves: ed25519 keys from
 * node:crypto, canonical JSON as the TUF specification has it, and the
 * layout of a consistent-snapshot repository. `writeBundle` lays out what
 * `mvmctl trust fetch` writes (N.root.json…, timestamp.json, snapshot.json,
 * targets.json, trusted_root.json). Nothing here is a mock: the client that
 * reads it is tuf-js.
 */
import { createHash, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { canonicalize } from '@tufjs/canonical-json';

export interface TufKey {
  readonly id: string;
  readonly privateKey: KeyObject;
  readonly json: { keytype: 'ed25519'; scheme: 'ed25519'; keyval: { public: string } };
}

export function tufKey(): TufKey {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
  const json = {
    keytype: 'ed25519' as const,
    scheme: 'ed25519' as const,
    keyval: { public: raw.toString('hex') },
  };
  const id = createHash('sha256')
    .update(canonicalize(json as unknown as Record<string, unknown>))
    .digest('hex');
  return { id, privateKey, json };
}

type Signed = Record<string, unknown>;
export type Role = 'root' | 'timestamp' | 'snapshot' | 'targets';

/** Signs `signed` with `keys`: the metadata file's bytes. */
export function signMetadata(signed: Signed, keys: readonly TufKey[]): Buffer {
  const bytes = Buffer.from(canonicalize(signed as Record<string, unknown>));
  const signatures = keys.map((k) => ({
    keyid: k.id,
    sig: sign(null, bytes, k.privateKey).toString('hex'),
  }));
  return Buffer.from(JSON.stringify({ signatures, signed }, null, 1));
}

const iso = (d: Date): string => d.toISOString().replace(/\.\d{3}Z$/, 'Z');
const day = 86_400_000;

export interface RepoOptions {
  readonly now?: Date;
  /** Keys per role; threshold 1 each unless `thresholds` says otherwise. */
  readonly thresholds?: Partial<Record<Role, number>>;
  readonly keysPerRole?: number;
}

/**
 * One repository's state: keys per role, the root history, and the current
 * timestamp, snapshot and targets. Each publish step bumps versions as a
 * real repository does.
 */
export class TufRepo {
  readonly keys: Record<Role, TufKey[]>;
  thresholds: Record<Role, number>;
  /** Every root version's bytes, index 0 = version 1. */
  readonly roots: Buffer[] = [];
  timestamp!: Buffer;
  snapshot!: Buffer;
  targets!: Buffer;
  target!: Buffer;
  versions = { timestamp: 0, snapshot: 0, targets: 0 };
  now: Date;

  constructor(opts: RepoOptions = {}) {
    this.now = opts.now ?? new Date();
    const n = opts.keysPerRole ?? 1;
    const make = () => Array.from({ length: n }, tufKey);
    this.keys = { root: make(), timestamp: make(), snapshot: make(), targets: make() };
    this.thresholds = { root: 1, timestamp: 1, snapshot: 1, targets: 1, ...opts.thresholds };
  }

  get rootVersion(): number {
    return this.roots.length;
  }

  /** The root's signed part for the current keys and thresholds. */
  private rootSigned(version: number, expires: Date): Signed {
    const keys: Record<string, unknown> = {};
    const roles: Record<string, unknown> = {};
    for (const role of ['root', 'timestamp', 'snapshot', 'targets'] as const) {
      for (const k of this.keys[role]) keys[k.id] = k.json;
      roles[role] = { keyids: this.keys[role].map((k) => k.id), threshold: this.thresholds[role] };
    }
    return {
      _type: 'root',
      spec_version: '1.0.31',
      version,
      expires: iso(expires),
      consistent_snapshot: true,
      keys,
      roles,
    };
  }

  /**
   * Publishes the next root version: signed by `signers` (default: the old
   * root keys, which must meet the old threshold, and the new ones).
   */
  publishRoot(opts: { signers?: TufKey[]; expires?: Date; version?: number } = {}): Buffer {
    const version = opts.version ?? this.rootVersion + 1;
    const signers = opts.signers ?? [...new Set([...this.previousRootKeys, ...this.keys.root])];
    const bytes = signMetadata(
      this.rootSigned(version, opts.expires ?? new Date(this.now.getTime() + 365 * day)),
      signers,
    );
    this.roots.push(bytes);
    this.previousRootKeys = [...this.keys.root];
    return bytes;
  }
  private previousRootKeys: TufKey[] = [];

  /** Replaces the root keys (a rotation); the next publishRoot is signed by old and new. */
  rotateRootKeys(count = this.keys.root.length): void {
    this.keys.root = Array.from({ length: count }, tufKey);
  }

  /** Replaces the keys of an online role (timestamp, snapshot). */
  rotateKeys(role: Exclude<Role, 'root'>): void {
    this.keys[role] = [tufKey()];
  }

  /** Publishes targets (with `target` as trusted_root.json), snapshot and timestamp. */
  publish(
    target: Buffer,
    opts: {
      timestampExpires?: Date;
      snapshotExpires?: Date;
      targetsExpires?: Date;
      signers?: Partial<Record<Exclude<Role, 'root'>, TufKey[]>>;
      versions?: Partial<{ timestamp: number; snapshot: number; targets: number }>;
      /** Lie about the target: the length and hash recorded for trusted_root.json. */
      recorded?: { length?: number; sha256?: string };
    } = {},
  ): void {
    this.target = target;
    this.versions = {
      timestamp: opts.versions?.timestamp ?? this.versions.timestamp + 1,
      snapshot: opts.versions?.snapshot ?? this.versions.snapshot + 1,
      targets: opts.versions?.targets ?? this.versions.targets + 1,
    };
    const sha256 = createHash('sha256').update(target).digest('hex');
    this.targets = signMetadata(
      {
        _type: 'targets',
        spec_version: '1.0.31',
        version: this.versions.targets,
        expires: iso(opts.targetsExpires ?? new Date(this.now.getTime() + 180 * day)),
        targets: {
          'trusted_root.json': {
            length: opts.recorded?.length ?? target.length,
            hashes: { sha256: opts.recorded?.sha256 ?? sha256 },
          },
        },
      },
      opts.signers?.targets ?? this.keys.targets,
    );
    this.snapshot = signMetadata(
      {
        _type: 'snapshot',
        spec_version: '1.0.31',
        version: this.versions.snapshot,
        expires: iso(opts.snapshotExpires ?? new Date(this.now.getTime() + 30 * day)),
        meta: { 'targets.json': { version: this.versions.targets } },
      },
      opts.signers?.snapshot ?? this.keys.snapshot,
    );
    this.timestamp = signMetadata(
      {
        _type: 'timestamp',
        spec_version: '1.0.31',
        version: this.versions.timestamp,
        expires: iso(opts.timestampExpires ?? new Date(this.now.getTime() + 7 * day)),
        meta: { 'snapshot.json': { version: this.versions.snapshot } },
      },
      opts.signers?.timestamp ?? this.keys.timestamp,
    );
  }

  /**
   * Writes a trust bundle into `dir`: the roots after version `from`
   * (default: all but the first, for a host anchored on version 1), and the
   * current metadata and target.
   */
  writeBundle(dir: string, opts: { from?: number; skip?: number[] } = {}): string {
    mkdirSync(dir, { recursive: true });
    const from = opts.from ?? 1;
    this.roots.forEach((bytes, i) => {
      const v = i + 1;
      if (v > from && !(opts.skip ?? []).includes(v))
        writeFileSync(join(dir, `${v}.root.json`), bytes);
    });
    writeFileSync(join(dir, 'timestamp.json'), this.timestamp);
    writeFileSync(join(dir, 'snapshot.json'), this.snapshot);
    writeFileSync(join(dir, 'targets.json'), this.targets);
    writeFileSync(join(dir, 'trusted_root.json'), this.target);
    return dir;
  }

  /**
   * Writes the repository as a TUF server lays it out (consistent snapshots):
   * N.root.json, timestamp.json, N.snapshot.json, N.targets.json and
   * targets/HASH.trusted_root.json, for `trust fetch` from a loopback server.
   */
  writeRepository(dir: string): string {
    mkdirSync(join(dir, 'targets'), { recursive: true });
    this.roots.forEach((bytes, i) => writeFileSync(join(dir, `${i + 1}.root.json`), bytes));
    writeFileSync(join(dir, 'timestamp.json'), this.timestamp);
    writeFileSync(join(dir, `${this.versions.snapshot}.snapshot.json`), this.snapshot);
    writeFileSync(join(dir, `${this.versions.targets}.targets.json`), this.targets);
    const sha = createHash('sha256').update(this.target).digest('hex');
    writeFileSync(join(dir, 'targets', `${sha}.trusted_root.json`), this.target);
    return dir;
  }
}

/** A static file server on 127.0.0.1 for a TUF repository directory; records each path asked for. */
export async function serveDir(
  root: string,
): Promise<{ url: string; paths: string[]; close: () => Promise<void> }> {
  const paths: string[] = [];
  const server: Server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    paths.push(path);
    const file = join(root, path);
    if (!file.startsWith(root + '/') || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(readFileSync(file));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    paths,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
