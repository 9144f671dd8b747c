/**
 * The tar archive `dev cp -r` carries a directory tree in, both ways, with no
 * I/O: header blocks written for the host's tree, header blocks read from an
 * archive the guest's own tar made, and the policy on every name the guest
 * supplies.
 *
 * The guest is untrusted and its archive is its answer: a name that is
 * absolute, climbs with `..`, or reaches through a link must never choose
 * where the host writes (kubectl cp's CVE-2018-1002100, CVE-2019-1002101 and
 * CVE-2019-11246 were each this mistake). So a header is accepted only
 * when its checksum holds and its fields parse exactly; names are bounded
 * and split into components here, and the shell that extracts (src/vm/copy.ts)
 * only ever joins those components under a directory it created itself.
 *
 * Formats: POSIX ustar, with GNU long names ('L'/'K' records, what GNU tar
 * and BusyBox tar write for names past 100 bytes) and pax 'x' records for
 * `path`, `linkpath` and `size` (GNU tar --format=posix); base-256 sizes.
 */
import { MvmError } from '../errors.js';

export const BLOCK = 512;
/** Longest name or link target accepted (PATH_MAX). */
export const MAX_NAME_BYTES = 4096;
/** Largest GNU long-name or pax record accepted: one of these only ever carries names. */
export const MAX_META_BYTES = 64 * 1024;

export type TarEntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'other';

export interface TarEntry {
  /** The name as the archive gives it (for messages; use `parts` to place it). */
  readonly name: string;
  readonly type: TarEntryType;
  readonly mode: number;
  readonly size: number;
  readonly linkname: string;
}

/** The one refusal of a guest's archive: what was wrong, and that the destination is untouched. */
export const archiveRefused = (what: string, fix?: string): MvmError =>
  new MvmError('agent', `The guest's archive was refused: ${what}`, {
    cause: 'a name or header in it could write outside the destination, or is malformed',
    fix:
      fix ??
      'Nothing was written to the destination. Look at the directory in the guest (mvmctl dev exec -- ls -laR DIR) and copy what you need file by file.',
  });

// ---- writing (the host's tree, for the guest's tar to extract) --------------------------

export interface TarWriteEntry {
  /** Relative, '/'-separated, no trailing slash. */
  readonly name: string;
  readonly type: 'file' | 'dir' | 'symlink';
  readonly mode: number;
  readonly size: number;
  readonly mtime: number;
  readonly linkname?: string;
}

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, '0') + '\0';
}

function header(
  name: Buffer,
  typeflag: string,
  mode: number,
  size: number,
  mtime: number,
  linkname: Buffer,
): Buffer {
  const h = Buffer.alloc(BLOCK);
  name.copy(h, 0, 0, Math.min(100, name.length));
  h.write(octal(mode & 0o7777, 8), 100, 'ascii');
  h.write(octal(0, 8), 108, 'ascii'); // uid: the guest's tar gives the files to whoever extracts
  h.write(octal(0, 8), 116, 'ascii');
  if (size < 8 ** 11) h.write(octal(size, 12), 124, 'ascii');
  else {
    // base-256 (GNU): the high bit of the first byte set, the size big-endian in the rest.
    h[124] = 0x80;
    let v = BigInt(size);
    for (let i = 135; i > 124; i--, v >>= 8n) h[i] = Number(v & 0xffn);
  }
  h.write(octal(Math.max(0, Math.floor(mtime)), 12), 136, 'ascii');
  h.write(typeflag, 156, 'ascii');
  linkname.copy(h, 157, 0, Math.min(100, linkname.length));
  h.write('ustar  \0', 257, 'ascii'); // GNU magic: the format whose 'L'/'K' records every tar reads
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + ' ', 148, 'ascii');
  return h;
}

/** A GNU 'L' or 'K' record carrying a name longer than the header's 100 bytes. */
function longRecord(typeflag: 'L' | 'K', value: Buffer): Buffer {
  const data = Buffer.concat([value, Buffer.from([0])]);
  return Buffer.concat([
    header(Buffer.from('././@LongLink'), typeflag, 0, data.length, 0, Buffer.alloc(0)),
    data,
    Buffer.alloc(padding(data.length)),
  ]);
}

/** The header block(s) for one entry; the caller writes its data and `padding(size)` zero bytes. */
export function tarHeader(e: TarWriteEntry): Buffer {
  const name = Buffer.from(e.type === 'dir' ? `${e.name}/` : e.name, 'utf8');
  const link = Buffer.from(e.linkname ?? '', 'utf8');
  const typeflag = e.type === 'dir' ? '5' : e.type === 'symlink' ? '2' : '0';
  const size = e.type === 'file' ? e.size : 0;
  return Buffer.concat([
    ...(link.length > 100 ? [longRecord('K', link)] : []),
    ...(name.length > 100 ? [longRecord('L', name)] : []),
    header(name, typeflag, e.mode, size, e.mtime, link),
  ]);
}

/** Zero bytes that follow `size` bytes of data up to the next block. */
export const padding = (size: number): number => (BLOCK - (size % BLOCK)) % BLOCK;

/** The end of an archive: two zero blocks. */
export const TAR_END = Buffer.alloc(2 * BLOCK);

// ---- reading (the guest's archive) -------------------------------------------------------

/** One header block as read: a record to act on, the end of the archive, or a meta record. */
export type RawHeader =
  | { readonly kind: 'end' }
  | {
      readonly kind: 'header';
      readonly typeflag: string;
      readonly name: string;
      readonly linkname: string;
      readonly mode: number;
      readonly size: number;
    };

function cString(b: Buffer): Buffer {
  const nul = b.indexOf(0);
  return nul < 0 ? b : b.subarray(0, nul);
}

function parseNumber(field: Buffer, what: string): number {
  if (field[0]! & 0x80) {
    // base-256: only non-negative values that fit a safe integer.
    if (field[0] !== 0x80) throw archiveRefused(`a header's ${what} is negative or too large`);
    let v = 0n;
    for (const b of field.subarray(1)) v = (v << 8n) | BigInt(b);
    if (v > BigInt(Number.MAX_SAFE_INTEGER))
      throw archiveRefused(`a header's ${what} is too large`);
    return Number(v);
  }
  const text = cString(field).toString('latin1').trim();
  if (text === '') return 0;
  if (!/^[0-7]{1,12}$/.test(text))
    throw archiveRefused(`a header's ${what} is not an octal number`);
  return parseInt(text, 8);
}

/** Parses one 512-byte block: its checksum must hold, its numbers parse exactly. */
export function parseTarHeader(block: Buffer): RawHeader {
  if (block.length !== BLOCK) throw archiveRefused('the archive ends inside a header');
  if (block.every((b) => b === 0)) return { kind: 'end' };
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
  if (parseNumber(block.subarray(148, 156), 'checksum') !== sum)
    throw archiveRefused('a header block fails its checksum (the archive is corrupt or not tar)');
  let name = cString(block.subarray(0, 100)).toString('utf8');
  const magic = block.subarray(257, 263).toString('latin1');
  if (magic === 'ustar\0') {
    // POSIX ustar: a prefix joins the name (GNU's 'ustar  ' uses those bytes for other fields).
    const prefix = cString(block.subarray(345, 500)).toString('utf8');
    if (prefix !== '') name = `${prefix}/${name}`;
  }
  return {
    kind: 'header',
    typeflag: String.fromCharCode(block[156]!),
    name,
    linkname: cString(block.subarray(157, 257)).toString('utf8'),
    mode: parseNumber(block.subarray(100, 108), 'mode'),
    size: parseNumber(block.subarray(124, 136), 'size'),
  };
}

/** Reads the value of a GNU long-name record's data (its NUL dropped), bounded. */
export function longName(data: Buffer): string {
  return cString(data).toString('utf8');
}

/** The `path`, `linkpath` and `size` of a pax 'x' record's data; other keys are ignored. */
export function parsePax(data: Buffer): { path?: string; linkpath?: string; size?: number } {
  const out: { path?: string; linkpath?: string; size?: number } = {};
  let at = 0;
  while (at < data.length) {
    if (data[at] === 0) break; // padding of a record written short
    const space = data.indexOf(0x20, at);
    const len = space > at ? Number(data.subarray(at, space).toString('latin1')) : NaN;
    if (!Number.isSafeInteger(len) || len <= space - at || at + len > data.length)
      throw archiveRefused('a pax header record has a bad length');
    const record = data.subarray(space + 1, at + len - 1).toString('utf8');
    if (data[at + len - 1] !== 0x0a)
      throw archiveRefused('a pax header record does not end a line');
    const eq = record.indexOf('=');
    if (eq < 0) throw archiveRefused('a pax header record has no =');
    const key = record.slice(0, eq);
    const value = record.slice(eq + 1);
    if (key === 'path') out.path = value;
    else if (key === 'linkpath') out.linkpath = value;
    else if (key === 'size') {
      if (!/^[0-9]{1,16}$/.test(value) || !Number.isSafeInteger(Number(value)))
        throw archiveRefused('a pax size is not a number');
      out.size = Number(value);
    }
    at += len;
  }
  return out;
}

/** The entry type a typeflag stands for; GNU's and pax's own records are handled by the reader. */
export function entryType(typeflag: string): TarEntryType {
  if (typeflag === '0' || typeflag === '\0' || typeflag === '7') return 'file';
  if (typeflag === '5') return 'dir';
  if (typeflag === '2') return 'symlink';
  if (typeflag === '1') return 'hardlink';
  return 'other';
}

/**
 * The components of a guest-supplied entry name, relative to the copy's
 * root: `./` and empty components dropped, and everything that could leave
 * the root refused (absolute, `..`, NUL, too long). [] is the root itself.
 */
export function entryParts(name: string): string[] {
  const show = JSON.stringify(name.slice(0, 200));
  if (Buffer.byteLength(name) > MAX_NAME_BYTES)
    throw archiveRefused(`a name is longer than ${MAX_NAME_BYTES} bytes`);
  if (name.includes('\0')) throw archiveRefused(`the name ${show} holds a NUL byte`);
  if (name.startsWith('/')) throw archiveRefused(`the name ${show} is absolute`);
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw archiveRefused(`the name ${show} climbs out with ..`);
  return parts;
}
