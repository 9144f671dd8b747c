import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  appendFileSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { openRegularFile, readRegularFile } from '../src/io/files.js';
import { promises as fsp } from 'node:fs';
import { copyAndHash } from '../src/store/copy-hash.js';
import { MvmError } from '../src/errors.js';
import { failingCp, gatedCp } from './support/host.js';

const dir = mkdtempSync(join(tmpdir(), 'mvm-copy-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
let n = 0;

for (const strategy of ['auto', 'user-space'] as const) {
  describe(`copyAndHash (${strategy})`, () => {
    for (const size of [1, 4096, 8 * 1024 * 1024, 3 * 8 * 1024 * 1024 + 12345]) {
      it(`copies and hashes ${size} bytes exactly, into a new 0600 file`, async () => {
        const data = Buffer.alloc(size);
        for (let i = 0; i < size; i += 1000) data[i] = (i * 7) & 0xff;
        const src = join(dir, `src${n}`);
        const dest = join(dir, `dest${n++}`);
        writeFileSync(src, data, { mode: 0o644 });
        const f = await openRegularFile(src, 'rootfs', Number.MAX_SAFE_INTEGER);
        let progress = 0;
        const r = await copyAndHash(f, dest, (b) => (progress = b), strategy).finally(() =>
          f.handle.close(),
        );
        assert.equal(r.sha256, sha(data));
        assert.equal(r.bytes, size);
        assert.equal(progress, size);
        assert.deepEqual(readFileSync(dest), data);
        assert.equal(statSync(dest).mode & 0o777, 0o600);
      });
    }

    it('copies the file that was opened, even if its path now names another', async () => {
      const src = join(dir, `src${n}`);
      const dest = join(dir, `dest${n++}`);
      writeFileSync(src, 'the checked file');
      const f = await openRegularFile(src, 'rootfs', 1024);
      writeFileSync(`${src}.swap`, 'a substitute');
      renameSync(`${src}.swap`, src);
      const r = await copyAndHash(f, dest, undefined, strategy).finally(() => f.handle.close());
      assert.equal(r.sha256, sha(Buffer.from('the checked file')));
      assert.equal(readFileSync(dest, 'utf8'), 'the checked file');
    });

    it('refuses a source that shrinks while it is copied, and does not hang', async () => {
      const src = join(dir, `src${n}`);
      const dest = join(dir, `dest${n++}`);
      writeFileSync(src, Buffer.alloc(64 * 1024 * 1024, 1));
      const f = await openRegularFile(src, 'rootfs', Number.MAX_SAFE_INTEGER);
      truncateSync(src, 1024 * 1024); // someone with write access truncates it after the checks
      await assert.rejects(
        copyAndHash(f, dest, undefined, strategy).finally(() => f.handle.close()),
        (e: unknown) =>
          e instanceof MvmError &&
          e.code === 'input' &&
          /changed size while it was being copied/.test(e.message),
      );
    });

    it('never overwrites an existing destination', async () => {
      const src = join(dir, `src${n}`);
      const dest = join(dir, `dest${n++}`);
      writeFileSync(src, 'new');
      writeFileSync(dest, 'existing');
      const f = await openRegularFile(src, 'rootfs', 1024);
      await assert.rejects(
        copyAndHash(f, dest, undefined, strategy).finally(() => f.handle.close()),
        /EEXIST/,
      );
      assert.equal(readFileSync(dest, 'utf8'), 'existing');
    });
  });
}

/** Runs `fn` with PATH set as given (the kernel path spawns cp from PATH). */
async function withPath<T>(path: string, fn: () => Promise<T>): Promise<T> {
  const saved = process.env['PATH'];
  process.env['PATH'] = path;
  try {
    return await fn();
  } finally {
    process.env['PATH'] = saved;
  }
}

describe('copyAndHash: a source that changes, a cp that fails', () => {
  it('refuses a source that grows while the kernel copy runs (input error, "changed size")', async () => {
    const src = join(dir, `src${n}`);
    const dest = join(dir, `dest${n++}`);
    writeFileSync(src, Buffer.alloc(1024 * 1024, 1));
    const f = await openRegularFile(src, 'rootfs', Number.MAX_SAFE_INTEGER);
    const gate = gatedCp(join(dir, `gate${n++}`));
    const copy = withPath(gate.env.PATH, async () => copyAndHash(f, dest, undefined, 'auto'));
    const settled = copy.then(
      () => undefined,
      () => undefined,
    );
    await gate.started(1, settled); // the copy has started and is held at the gate
    appendFileSync(src, Buffer.alloc(4096, 2)); // someone appends meanwhile
    gate.release();
    await assert.rejects(
      copy.finally(() => f.handle.close()),
      (e: unknown) =>
        e instanceof MvmError &&
        e.code === 'input' &&
        /changed size while it was being copied \(1048576 bytes when opened, 1052672 copied\)/.test(
          e.message,
        ),
    );
  });

  it('refuses a source that grows after it was opened (user-space copy)', async () => {
    const src = join(dir, `src${n}`);
    const dest = join(dir, `dest${n++}`);
    writeFileSync(src, Buffer.alloc(1024 * 1024, 1));
    const f = await openRegularFile(src, 'rootfs', Number.MAX_SAFE_INTEGER);
    appendFileSync(src, Buffer.alloc(4096, 2));
    await assert.rejects(
      copyAndHash(f, dest, undefined, 'user-space').finally(() => f.handle.close()),
      (e: unknown) => e instanceof MvmError && e.code === 'input' && /changed size/.test(e.message),
    );
  });

  it('a cp that fails printing nothing is reported with how it exited', async () => {
    const src = join(dir, `src${n}`);
    const dest = join(dir, `dest${n++}`);
    writeFileSync(src, 'some bytes');
    const f = await openRegularFile(src, 'rootfs', 1024);
    const env = failingCp(join(dir, `fail${n++}`), 4);
    await assert.rejects(
      withPath(env.PATH, () => copyAndHash(f, dest, undefined, 'auto')).finally(() =>
        f.handle.close(),
      ),
      /^Error: copying into the store failed: cp exited with status 4, printing nothing$/,
    );
  });
});

describe('readRegularFile: the size limit', () => {
  it('a file exactly at its limit when fstat-ed, which grows before it is read, is refused, not read short', async () => {
    const path = join(dir, `growing${n++}`);
    writeFileSync(path, Buffer.alloc(100, 0x61));
    // The race made deterministic: a second writer appends right after the fstat, the moment
    // its timing could only hit by luck. The file and the read are real; only the timing is staged.
    const probe = await fsp.open(path, 'r');
    const proto = Object.getPrototypeOf(probe) as { stat: (...a: unknown[]) => Promise<unknown> };
    await probe.close();
    const stat = proto.stat;
    proto.stat = async function (this: unknown, ...a: unknown[]) {
      const st = await stat.apply(this, a);
      appendFileSync(path, 'grown');
      return st;
    };
    try {
      await assert.rejects(
        readRegularFile(path, 'manifest', 100),
        (e: unknown) =>
          e instanceof MvmError &&
          e.code === 'input' &&
          /^manifest .* is too large: it grew past the limit of 100 bytes .* while being read$/.test(
            e.message,
          ),
      );
    } finally {
      proto.stat = stat;
    }
    // Control: the same file, at the limit and not growing, is read whole.
    truncateSync(path, 100);
    assert.equal((await readRegularFile(path, 'manifest', 100)).length, 100);
  });
});
