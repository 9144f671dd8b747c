import { createHash, randomBytes, randomInt, sign, type KeyObject } from 'node:crypto';
import { json } from '@sigstore/core';

/**
 * A small Rekor-like transparency log for tests: a real RFC 6962 Merkle tree,
 * signed entry timestamps and signed checkpoints (note format), so inclusion
 * proofs have real sibling hashes to tamper with. @sigstore/mock's log uses a
 * one-leaf tree, which cannot exercise the proof path. With an Ed25519 key it
 * signs checkpoints the way a Rekor v2 shard does (`log2025-1.rekor.sigstore.dev`).
 */
export interface LoggedEntry {
  logIndex: number;
  integratedTime: number;
  logId: Buffer;
  body: Buffer;
  signedEntryTimestamp: Buffer;
  inclusionProof: {
    logIndex: number;
    treeSize: number;
    rootHash: Buffer;
    hashes: Buffer[];
    checkpoint: string;
  };
}

const leafHash = (data: Buffer): Buffer =>
  createHash('sha256')
    .update(Buffer.from([0]))
    .update(data)
    .digest();
const nodeHash = (l: Buffer, r: Buffer): Buffer =>
  createHash('sha256')
    .update(Buffer.from([1]))
    .update(l)
    .update(r)
    .digest();

/** Largest power of two strictly less than n (n > 1). */
const split = (n: number): number => 2 ** Math.floor(Math.log2(n - 1));

function treeHash(leaves: Buffer[]): Buffer {
  if (leaves.length === 1) return leaves[0]!;
  const k = split(leaves.length);
  return nodeHash(treeHash(leaves.slice(0, k)), treeHash(leaves.slice(k)));
}

function auditPath(m: number, leaves: Buffer[]): Buffer[] {
  if (leaves.length <= 1) return [];
  const k = split(leaves.length);
  return m < k
    ? [...auditPath(m, leaves.slice(0, k)), treeHash(leaves.slice(k))]
    : [...auditPath(m - k, leaves.slice(k)), treeHash(leaves.slice(0, k))];
}

export class TestTransparencyLog {
  readonly logId: Buffer;
  private readonly leaves: Buffer[] = [];
  private readonly treeId = randomInt(2 ** 40);

  constructor(
    /** Host of the log's base URL; checkpoints are signed under this name. */
    readonly host: string,
    readonly publicKeyDer: Buffer,
    private readonly privateKey: KeyObject,
  ) {
    this.logId = createHash('sha256').update(publicKeyDer).digest();
    // Other tenants' entries, so a proof has siblings on both sides.
    for (let i = 0; i < 5; i++) this.leaves.push(leafHash(randomBytes(64)));
  }

  /** `checkpointOrigin`: the origin line the checkpoint names instead of this log's (still signed by this log). */
  append(entryBody: object, integratedTime: number, checkpointOrigin?: string): LoggedEntry {
    const body = Buffer.from(json.canonicalize(entryBody), 'utf8');
    const logIndex = this.leaves.length;
    this.leaves.push(leafHash(body));
    // A couple of later entries: the proof is against a tree that kept growing.
    for (let i = 0; i < 2; i++) this.leaves.push(leafHash(randomBytes(64)));
    const set = this.sign(
      Buffer.from(
        json.canonicalize({
          body: body.toString('base64'),
          integratedTime,
          logIndex,
          logID: this.logId.toString('hex'),
        }),
        'utf8',
      ),
    );
    return {
      logIndex,
      integratedTime,
      logId: this.logId,
      body,
      signedEntryTimestamp: set,
      inclusionProof: this.prove(logIndex, checkpointOrigin),
    };
  }

  /** ECDSA over SHA-256, or pure Ed25519 (which takes no digest). */
  private sign(data: Buffer): Buffer {
    const ed25519 = this.privateKey.asymmetricKeyType === 'ed25519';
    return sign(ed25519 ? null : 'sha256', data, this.privateKey);
  }

  private prove(logIndex: number, origin?: string): LoggedEntry['inclusionProof'] {
    const treeSize = this.leaves.length;
    const rootHash = treeHash(this.leaves);
    const note = `${origin ?? `${this.host} - ${this.treeId}`}\n${treeSize}\n${rootHash.toString('base64')}\n`;
    const sig = this.sign(Buffer.from(note, 'utf8'));
    const checkpoint = `${note}\n\u2014 ${this.host} ${Buffer.concat([this.logId.subarray(0, 4), sig]).toString('base64')}\n`;
    return { logIndex, treeSize, rootHash, hashes: auditPath(logIndex, this.leaves), checkpoint };
  }
}
