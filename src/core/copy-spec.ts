/**
 * What a `dev cp SRC DST` means, decided from its two operands alone: which
 * side is the guest (`dev:/path`), which is the host (a path, or `-` for
 * stdin/stdout), and the mistakes refused before anything is touched.
 */
import { MvmError } from '../errors.js';
import { printable } from './printable.js';

export type CopyEndpoint =
  | { readonly side: 'guest'; readonly path: string }
  | { readonly side: 'host'; readonly path: string }
  | { readonly side: 'stdio' };

export interface CopySpec {
  readonly from: CopyEndpoint;
  readonly to: CopyEndpoint;
  readonly recursive: boolean;
}

export const GUEST_PREFIX = 'dev:';

const usage = (message: string, fix: string): MvmError => new MvmError('usage', message, { fix });
const show = (s: string): string => JSON.stringify(printable(s, 200));

function endpoint(operand: string): CopyEndpoint {
  if (operand === '-') return { side: 'stdio' };
  if (operand.includes('\0')) throw usage(`${show(operand)} holds a NUL byte`, 'Give a path.');
  if (!operand.startsWith(GUEST_PREFIX)) {
    if (operand === '')
      throw usage('an empty path', 'Give a path on the host, or dev:/PATH in the guest.');
    return { side: 'host', path: operand };
  }
  const path = operand.slice(GUEST_PREFIX.length);
  if (!path.startsWith('/'))
    throw usage(
      `${show(operand)} is not an absolute path in the guest`,
      `Name the guest side from its root, as in dev:/root/${path || 'FILE'}.`,
    );
  return { side: 'guest', path };
}

export function copySpec(src: string, dst: string, recursive: boolean): CopySpec {
  const from = endpoint(src);
  const to = endpoint(dst);
  const guests = [from, to].filter((e) => e.side === 'guest').length;
  if (guests === 0)
    throw usage(
      'neither side of dev cp is in the guest',
      'Name the guest side with dev:, as in mvmctl dev cp ./src.tar dev:/root/ (for a copy on the host, use cp).',
    );
  if (guests === 2)
    throw usage(
      'both sides of dev cp are in the guest',
      'Copy inside the guest with mvmctl dev exec -- cp SRC DST.',
    );
  if ((from.side === 'stdio' || to.side === 'stdio') && recursive)
    throw usage(
      '-r does not read or write - (one file’s bytes go through stdin and stdout)',
      'Copy the directory to a path, or stream an archive: tar -c DIR | mvmctl dev exec -- tar -x -C /root.',
    );
  if (to.side === 'guest' && from.side === 'stdio' && to.path.endsWith('/'))
    throw usage(
      `stdin has no file name to put in ${show(to.path)}`,
      `Name the file in the guest: dev:${to.path}NAME.`,
    );
  return { from, to, recursive };
}
