/**
 * The overlay header check (src/core/qcow2.ts) on headers qemu-img really
 * writes, and on hand-made ones for what qemu-img will not make on request.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { qcow2HeaderProblem, QCOW2_HEADER_BYTES } from '../src/core/qcow2.js';

const dir = mkdtempSync(join(tmpdir(), 'mvm-qcow2-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** The header of an image qemu-img creates with `options`. */
function created(name: string, ...options: string[]): Buffer {
  const path = join(dir, name);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', ...options, path, '1M']);
  return readFileSync(path).subarray(0, QCOW2_HEADER_BYTES);
}

describe('the overlay header check', () => {
  it('accepts the overlays dev up makes (version 3, and the older version 2)', () => {
    writeFileSync(join(dir, 'base.raw'), Buffer.alloc(1 << 20));
    const backed = created('v3.qcow2', '-F', 'raw', '-b', join(dir, 'base.raw'));
    assert.equal(backed.readUInt32BE(4), 3);
    assert.equal(qcow2HeaderProblem(backed), undefined);
    const v2 = created('v2.qcow2', '-o', 'compat=0.10');
    assert.equal(v2.readUInt32BE(4), 2);
    assert.equal(qcow2HeaderProblem(v2), undefined);
    assert.equal(qcow2HeaderProblem(created('l2.qcow2', '-o', 'extended_l2=on')), undefined);
  });

  it('refuses an external data file, which the header names', () => {
    const h = created('data.qcow2', '-o', `data_file=${join(dir, 'data.raw')}`);
    assert.equal(
      qcow2HeaderProblem(h),
      'it keeps its data in an external data file, which its header names',
    );
  });

  it('refuses what is not a plain qcow2: another format, encryption, corruption, unknown features, a short file', () => {
    assert.equal(qcow2HeaderProblem(Buffer.alloc(QCOW2_HEADER_BYTES)), 'it is not a qcow2 image');
    assert.equal(qcow2HeaderProblem(Buffer.alloc(10)), 'it is shorter than a qcow2 header');
    const base = created('plain.qcow2');
    const edited = (offset: number, write: (b: Buffer) => void): Buffer => {
      const b = Buffer.from(base);
      write(b.subarray(offset));
      return b;
    };
    assert.equal(qcow2HeaderProblem(edited(32, (b) => b.writeUInt32BE(1))), 'it is encrypted');
    assert.equal(
      qcow2HeaderProblem(edited(4, (b) => b.writeUInt32BE(4))),
      'its qcow2 version 4 is not 2 or 3',
    );
    assert.equal(
      qcow2HeaderProblem(edited(72, (b) => b.writeBigUInt64BE(2n))),
      'QEMU marked it corrupt',
    );
    assert.equal(
      qcow2HeaderProblem(edited(72, (b) => b.writeBigUInt64BE(1n << 5n))),
      'it uses incompatible features this mvmctl does not know (0x20)',
    );
    assert.equal(qcow2HeaderProblem(edited(72, (b) => b.writeBigUInt64BE(1n))), undefined, 'dirty');
    assert.equal(qcow2HeaderProblem(base.subarray(0, 80)), 'its version 3 header is cut short');
  });
});
