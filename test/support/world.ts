/**
 * The setting most CLI suites start from: a temporary root, a fresh test
 * Sigstore deployment and its trusted root written there, and a release set of
 * this version for this host signed by it. A suite assigns it in `before`:
 *
 *   before(async () => ({ root, pki, trustedRoot, good } = await suiteWorld('mvm-x-')));
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HOST_ARCH, VERSION } from './host.js';
import { TestPki } from './pki.js';
import { writeReleaseSet, type ReleaseFiles } from './release.js';

export interface SuiteWorld {
  readonly root: string;
  readonly pki: TestPki;
  readonly trustedRoot: string;
  /** `{root}/good`: the four files of a valid set, at their release names. */
  readonly good: ReleaseFiles;
}

export async function suiteWorld(prefix: string): Promise<SuiteWorld> {
  const root = mkdtempSync(join(tmpdir(), prefix));
  const pki = await TestPki.create();
  const trustedRoot = pki.writeTrustedRoot(root);
  const good = await writeReleaseSet(pki, join(root, 'good'), {
    version: VERSION,
    arch: HOST_ARCH,
  });
  return { root, pki, trustedRoot, good };
}
