/**
 * Whether `mvmctl dev up` can boot a VM on this host, for hints that point at
 * it (an import's "next step"): a hint to run something that cannot work here
 * sends the operator on a detour. Decides nothing; dev up checks for itself.
 */
import { constants, promises as fs } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { Arch } from '../core/manifest.js';
import { QEMU_BINARY } from './qemu-args.js';

/** Why dev up cannot boot here, or undefined when nothing stands in its way that can be seen from outside. */
export async function devUpBlocker(
  hostArch: Arch,
  path: string | undefined,
): Promise<string | undefined> {
  // The dev VM is QEMU's x86_64 microvm machine (qemu-args.ts).
  if (hostArch !== 'x86_64')
    return `this version boots the dev VM on x86_64 hosts only (${QEMU_BINARY}, microvm); this host is ${hostArch}`;
  const missing = [];
  for (const tool of [QEMU_BINARY, 'qemu-img']) if (!(await onPath(tool, path))) missing.push(tool);
  if (missing.length)
    return `dev up runs the VM under QEMU, and ${missing.join(' and ')} ${missing.length === 1 ? 'is' : 'are'} not on PATH (Debian/Ubuntu: apt-get install qemu-system-x86 qemu-utils)`;
  return undefined;
}

async function onPath(name: string, path: string | undefined): Promise<boolean> {
  for (const dir of (path ?? '').split(delimiter)) {
    if (!dir) continue;
    try {
      await fs.access(join(dir, name), constants.X_OK);
      return true;
    } catch {
      /* not here */
    }
  }
  return false;
}
