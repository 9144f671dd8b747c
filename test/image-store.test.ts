/**
 * The image store against a real directory: what is in the way of a version
 * link is refused and left as it is, links that are not ours are refused, and
 * garbage collection removes only unlinked objects of dead creators.
 */
import assert from 'node:assert/strict';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { MvmError } from '../src/errors.js';
import { ImageStore } from '../src/store/image-store.js';

const root = mkdtempSync(join(tmpdir(), 'mvm-store-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;

async function freshStore(): Promise<ImageStore> {
  const data = join(root, `data${n++}`);
  const store = new ImageStore(join(data, 'dev', 'prebuilt'), data);
  await store.open();
  return store;
}

/** Beyond any pid_max: a creator that is certainly gone. */
const DEAD_PID = 4_194_399;

const storeError = (wording: RegExp) => (e: unknown) =>
  e instanceof MvmError && e.code === 'store' && wording.test(e.message);

describe('ImageStore: the version link', () => {
  it('publish refuses a real directory where the version link belongs, and neither moves nor deletes it', async () => {
    const store = await freshStore();
    const staged = await store.stage();
    writeFileSync(join(staged, 'vmlinux'), 'kernel');
    const link = join(store.root, 'v0.14.0');
    mkdirSync(link);
    writeFileSync(join(link, 'notes.txt'), 'the operator keeps this');
    await assert.rejects(
      store.publish('0.14.0', staged),
      storeError(/v0\.14\.0 is a directory, not an image installed by mvmctl/),
    );
    assert.equal(readFileSync(join(link, 'notes.txt'), 'utf8'), 'the operator keeps this');
    assert.deepEqual(
      readdirSync(join(store.root, '.objects')),
      [basename(staged)],
      'the directory was not moved into the objects (where garbage collection would delete it)',
    );
    assert.deepEqual(
      readdirSync(store.root).filter((f) => f.startsWith('.link-')),
      [],
    );
    await store.open(); // garbage collection
    assert.equal(readFileSync(join(link, 'notes.txt'), 'utf8'), 'the operator keeps this');
  });

  it('remove keeps an object another version still links, and the last link takes it', async () => {
    // mvmctl gives each publish an object of its own; a second link to one (made by hand, or by
    // a future dedup) must not lose its files when the first version goes.
    const store = await freshStore();
    const staged = await store.stage();
    writeFileSync(join(staged, 'vmlinux'), 'kernel');
    const first = await store.publish('0.14.0', staged);
    symlinkSync(`.objects/${basename(first.dir)}`, join(store.root, 'v0.15.0'));
    const removed = await store.remove('0.14.0');
    assert.equal(removed?.version, '0.14.0');
    assert.equal(removed?.bytes, 0, 'nothing was deleted');
    assert.equal(await store.installed('0.14.0'), undefined);
    const other = await store.installed('0.15.0');
    assert.equal(other?.dir, first.dir);
    assert.equal(readFileSync(join(first.dir, 'vmlinux'), 'utf8'), 'kernel');
    await store.open(); // garbage collection leaves a linked object alone too
    assert.equal(readFileSync(join(first.dir, 'vmlinux'), 'utf8'), 'kernel');

    const last = await store.remove('0.15.0');
    assert.ok(last && last.bytes > 0, JSON.stringify(last));
    assert.equal(existsSync(first.dir), false);
    assert.deepEqual(readdirSync(join(store.root, '.objects')), []);
  });

  it('installed() refuses a directory, a file, and links that do not point at one of our objects', async () => {
    const store = await freshStore();
    const link = join(store.root, 'v0.14.0');
    mkdirSync(link);
    await assert.rejects(store.installed('0.14.0'), storeError(/is a directory, not an image/));
    rmSync(link, { recursive: true });
    writeFileSync(link, 'x');
    await assert.rejects(store.installed('0.14.0'), storeError(/is not a link, not an image/));
    rmSync(link);
    const outside = join(root, `outside${n++}`);
    mkdirSync(outside);
    for (const target of [outside, '.objects/../../outside', '.objects/1-0123456789abcdef/..']) {
      rmSync(link, { force: true });
      symlinkSync(target, link);
      await assert.rejects(store.installed('0.14.0'), storeError(/points outside the store/));
    }
    assert.deepEqual(await store.list(), [], 'not listed as installed');
  });
});

describe('ImageStore: garbage collection', () => {
  it('removes unlinked objects of dead creators only, and temporary links of dead creators', async () => {
    const store = await freshStore();
    const objects = join(store.root, '.objects');
    const orphan = `${DEAD_PID}-0123456789abcdef`;
    const linked = `${DEAD_PID}-fedcba9876543210`;
    const mine = `${process.pid}-00112233445566ff`;
    for (const id of [orphan, linked, mine, 'not-ours']) mkdirSync(join(objects, id));
    symlinkSync(`.objects/${linked}`, join(store.root, 'v0.14.0'));
    symlinkSync(`.objects/${linked}`, join(store.root, `.link-${DEAD_PID}-0123456789abcdef`));
    await store.open();
    assert.deepEqual(readdirSync(objects).sort(), [linked, mine, 'not-ours'].sort());
    assert.ok(!existsSync(join(store.root, `.link-${DEAD_PID}-0123456789abcdef`)));
    assert.deepEqual(await store.installed('0.14.0'), {
      version: '0.14.0',
      dir: join(objects, linked),
    });
  });
});
