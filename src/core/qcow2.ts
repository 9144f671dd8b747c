/**
 * The header of the dev VM's disk overlay (a qcow2 file), read before every
 * boot that reuses it. The overlay sits in the VM's state directory, outside
 * the verified store, and QEMU would act on what its header names. The
 * backing file it names is overridden on QEMU's command line (`backing=`);
 * what cannot be overridden as simply is refused here: an external data file
 * (another file the header would have QEMU open and write), encryption, and
 * any feature this code does not know. Pure: bytes in, a problem or nothing.
 *
 * Layout: QEMU's docs/interop/qcow2.txt (big-endian; version 3 adds the
 * feature bitmaps at byte 72).
 */

/** Bytes to read: the version 3 header up to and including its length field. */
export const QCOW2_HEADER_BYTES = 104;

const MAGIC = 0x514649fb; // 'QFI\xfb'
/** Incompatible feature bits QEMU defines (docs/interop/qcow2.txt). */
const DIRTY = 1n << 0n;
const CORRUPT = 1n << 1n;
const EXTERNAL_DATA_FILE = 1n << 2n;
const COMPRESSION_TYPE = 1n << 3n;
const EXTENDED_L2 = 1n << 4n;
/** Bits a plain overlay may carry: dirty (a crash with lazy refcounts), a compression type, subclusters. */
const ACCEPTED = DIRTY | COMPRESSION_TYPE | EXTENDED_L2;

/** Why this header is not a plain qcow2 overlay QEMU may open, or undefined when it is. */
export function qcow2HeaderProblem(header: Uint8Array): string | undefined {
  if (header.length < 72) return 'it is shorter than a qcow2 header';
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  if (view.getUint32(0) !== MAGIC) return 'it is not a qcow2 image';
  const version = view.getUint32(4);
  if (version !== 2 && version !== 3) return `its qcow2 version ${version} is not 2 or 3`;
  if (view.getUint32(32) !== 0) return 'it is encrypted';
  if (version === 2) return undefined;
  if (header.length < QCOW2_HEADER_BYTES) return 'its version 3 header is cut short';
  const incompatible = view.getBigUint64(72);
  if (incompatible & EXTERNAL_DATA_FILE)
    return 'it keeps its data in an external data file, which its header names';
  if (incompatible & CORRUPT) return 'QEMU marked it corrupt';
  const unknown = incompatible & ~ACCEPTED;
  if (unknown !== 0n)
    return `it uses incompatible features this mvmctl does not know (0x${unknown.toString(16)})`;
  return undefined;
}

/**
 * The data disk's size and whether its header names a backing file, read
 * from a header qcow2HeaderProblem accepted: what `--disk` compares a new
 * size with (it grows, never shrinks) and what `dev status` shows.
 */
export function qcow2Geometry(header: Uint8Array): { virtualBytes: number; hasBacking: boolean } {
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  return {
    hasBacking: view.getBigUint64(8) !== 0n,
    virtualBytes: Number(view.getBigUint64(24)),
  };
}
