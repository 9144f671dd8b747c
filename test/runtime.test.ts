import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { unsupportedRuntime } from '../src/cli/runtime.js';
import { CLI } from './support/cli.js';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));

describe('runtime', () => {
  it('the tests themselves run on Node.js 24 LTS', () => {
    assert.equal(process.versions.node.split('.')[0], '24');
  });

  it('engines and the runtime check name the same range', () => {
    assert.equal(pkg.engines.node, '^22.22.2 || ^24.15.0 || >=26.0.0');
    for (const ok of ['24.15.0', '24.21.0', '22.22.2', '22.23.0', '26.0.0', '27.1.0']) {
      assert.equal(unsupportedRuntime(ok), undefined, ok);
    }
    for (const old of ['20.20.2', '22.22.1', '22.12.0', '24.14.9', '23.11.0', '18.20.0']) {
      assert.match(unsupportedRuntime(old) ?? '', /needs Node\.js 24 LTS/, old);
    }
  });

  // The machine's own Node.js 20 (end of life) is what a newcomer has on the PATH.
  const systemNode = ['/usr/bin/node', '/usr/local/bin/node'].find((p) => {
    try {
      return execFileSync(p, ['--version'], { encoding: 'utf8' }).startsWith('v20.');
    } catch {
      return false;
    }
  });
  it(
    'an end-of-life Node.js gets a clear refusal, not a library crash',
    { skip: !systemNode && 'no Node.js 20 on this machine' },
    () => {
      const r = spawnSync(systemNode!, [CLI, 'status'], { encoding: 'utf8' });
      assert.equal(r.status, 1);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, /^Error: mvmctl needs Node\.js 24 LTS .*this is Node\.js 20\./);
      assert.match(r.stderr, /Fix: install Node\.js 24 LTS, or use the single executable/);
      assert.doesNotMatch(r.stderr, /\bat .*\.js:\d+/);
    },
  );
});
