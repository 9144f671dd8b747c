/**
 * `mvmctl dev cp`: files and directory trees between the host and the dev VM,
 * through the guest agent's guest-file-open/read/write (no network, no share).
 *
 * Byte-exact: every copy is hashed with SHA-256 on the host as it moves and by
 * the guest's own `sha256sum` on its side, and the two must agree before the
 * copy gets its final name. A single file is written under a temporary name
 * beside its destination and renamed into place, so a cut copy never leaves
 * a file that looks complete. A directory (-r) travels as one tar archive,
 * whose hash is checked before a single entry of it is extracted.
 *
 * Guest to host, the guest chose every byte and every name of the archive.
 * Names are checked by src/core/tar.ts; extraction here only creates entries
 * under a staging directory mvmctl made (O_EXCL, O_NOFOLLOW), each inside a
 * directory the same archive created; links and special files are never
 * created on the host (they are skipped and reported). File modes keep their
 * permission bits only: a guest's setuid bit never reaches the host.
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import {
  chmod,
  lstat,
  mkdir,
  open,
  readdir,
  readlink,
  rename,
  rm,
  stat,
  type FileHandle,
} from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { posix } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import type { CopySpec } from '../core/copy-spec.js';
import {
  BLOCK,
  archiveRefused,
  entryParts,
  entryType,
  longName,
  MAX_META_BYTES,
  MAX_NAME_BYTES,
  padding,
  parsePax,
  parseTarHeader,
  TAR_END,
  tarHeader,
  type TarEntryType,
} from '../core/tar.js';
import { MvmError } from '../errors.js';
import { GuestAgent, type AgentChannel } from './agent.js';
import {
  agentFailure,
  captureInGuest,
  closeGuestFile,
  FILE_CHUNK_BYTES,
  openGuestFile,
  readGuestChunk,
  runInGuest,
  writeGuestChunk,
} from './guest-ops.js';

/** Calls made on one connection before it is handed back, so a `dev exec` beside a long copy gets its turn. */
const CALLS_PER_SESSION = 16;
const HELPER_TIMEOUT_MS = 60_000;
/** A tree's archive is made or extracted by the guest's tar: allow it time for a large tree. */
const TAR_TIMEOUT_MS = 30 * 60_000;

export interface CopyIo {
  readonly stdin: Readable;
  readonly stdout: Writable;
  /** Bytes moved so far of `total` (undefined when unknown: stdin). */
  readonly progress?: (bytes: number, total: number | undefined) => void;
}

export interface CopyResult {
  readonly direction: 'to-guest' | 'from-guest';
  /** Where the copy landed: a host path, `dev:/path`, or `-`. */
  readonly destination: string;
  readonly files: number;
  readonly directories: number;
  readonly bytes: number;
  /** SHA-256 of the file, or of the archive a tree travelled in, as both sides computed it. */
  readonly sha256: string;
  /** Entries not copied (links, devices, sockets), with what they are. */
  readonly skipped: readonly { readonly name: string; readonly type: string }[];
}

const hostError = (message: string, fix: string): MvmError =>
  new MvmError('input', message, { fix });
const show = (s: string): string => JSON.stringify(s.length > 200 ? `${s.slice(0, 200)}…` : s);
const partName = (base: string): string => `.${base}.mvmctl-part-${randomBytes(6).toString('hex')}`;

/**
 * One connection at a time, replaced after CALLS_PER_SESSION calls (see
 * AgentChannel: QEMU serves one client on the socket). Guest file handles
 * belong to the agent, not to the connection, so they outlive the swap.
 */
class AgentLease {
  private agent: GuestAgent | undefined;
  private calls = 0;
  constructor(private readonly path: string) {}

  async get(): Promise<GuestAgent> {
    if (!this.agent || this.agent.isClosed || this.calls >= CALLS_PER_SESSION) {
      this.agent?.close();
      this.agent = await GuestAgent.connect(this.path);
      this.calls = 0;
    }
    this.calls++;
    return this.agent;
  }

  close(): void {
    this.agent?.close();
    this.agent = undefined;
  }
}

export async function guestCopy(
  channel: AgentChannel,
  spec: CopySpec,
  io: CopyIo,
  signal?: AbortSignal,
): Promise<CopyResult> {
  const lease = new AgentLease(channel.path);
  try {
    if (spec.to.side === 'guest') return await toGuest(lease, spec, io, signal);
    return await fromGuest(lease, spec, io, signal);
  } finally {
    lease.close();
  }
}

// ---- the guest's side ----------------------------------------------------------------------

type GuestKind = 'dir' | 'file' | 'other' | 'missing';

/** What `path` is in the guest (symlinks followed, as cp follows the names it is given). */
async function probe(
  lease: AgentLease,
  path: string,
): Promise<{ kind: GuestKind; mode: number; size: number }> {
  const script =
    'p=$1; if [ -d "$p" ]; then t=dir; elif [ -f "$p" ]; then t=file; ' +
    'elif [ -e "$p" ] || [ -L "$p" ]; then t=other; else echo missing; exit 0; fi; ' +
    'm=$(stat -L -c "%a %s" -- "$p" 2>/dev/null) || m="644 0"; echo "$t $m"';
  const r = await captureInGuest(
    await lease.get(),
    ['/bin/sh', '-c', script, 'mvmctl-cp', path],
    HELPER_TIMEOUT_MS,
  );
  const m = /^(?:(missing)|(dir|file|other) ([0-7]{1,4}) ([0-9]{1,16}))\n?$/.exec(
    r.stdout.toString('latin1'),
  );
  if (r.exitCode !== 0 || !m)
    throw agentFailure(
      `Cannot look up ${show(path)} in the guest`,
      'its shell did not answer the check (is /bin/sh there?)',
    );
  if (m[1]) return { kind: 'missing', mode: 0, size: 0 };
  return { kind: m[2] as GuestKind, mode: parseInt(m[3]!, 8), size: Number(m[4]) };
}

/** The guest's `sha256sum` of `path`. */
async function guestSha256(lease: AgentLease, path: string): Promise<string> {
  const r = await captureInGuest(
    await lease.get(),
    [
      '/bin/sh',
      '-c',
      'command -v sha256sum >/dev/null 2>&1 || exit 127; sha256sum < "$1"',
      'mvmctl-cp',
      path,
    ],
    TAR_TIMEOUT_MS,
  );
  if (r.exitCode === 127)
    throw agentFailure(
      'The guest has no sha256sum to check the copy with',
      'dev cp checks every copy by SHA-256 on both sides, and the image lacks the tool',
      'Add coreutils or busybox to the image.',
    );
  const m = /^([0-9a-f]{64})[ \t]/.exec(r.stdout.toString('latin1'));
  if (r.exitCode !== 0 || !m)
    throw agentFailure(`The guest could not hash ${show(path)}`, `sha256sum exited ${r.exitCode}`);
  return m[1]!;
}

async function guestSh(
  lease: AgentLease,
  script: string,
  args: string[],
  timeoutMs = HELPER_TIMEOUT_MS,
): Promise<number> {
  return runInGuest(await lease.get(), ['/bin/sh', '-c', script, 'mvmctl-cp', ...args], timeoutMs);
}

const removeInGuest = (lease: AgentLease, ...paths: string[]): Promise<unknown> =>
  guestSh(lease, 'rm -rf -- "$@"', paths).catch(() => undefined);

function checkAbort(signal: AbortSignal | undefined): void {
  if (signal?.aborted)
    throw new MvmError(
      'interrupted',
      'dev cp was interrupted: nothing was left under the destination name',
    );
}

interface Moved {
  readonly bytes: number;
  readonly sha256: string;
}

/**
 * Writes everything `chunks` yields into a new guest file, hashing it as it
 * goes; the guest's sha256sum of the file must then agree (`what` names the
 * copy in the mismatch error).
 */
async function sendChecked(
  lease: AgentLease,
  path: string,
  chunks: AsyncIterable<Buffer>,
  what: string,
  io: CopyIo,
  total: number | undefined,
  signal: AbortSignal | undefined,
): Promise<Moved> {
  const hash = createHash('sha256');
  const handle = await openGuestFile(await lease.get(), path, 'w');
  let n = 0;
  try {
    for await (const chunk of chunks) {
      checkAbort(signal);
      for (let at = 0; at < chunk.length; at += FILE_CHUNK_BYTES) {
        const piece = chunk.subarray(at, at + FILE_CHUNK_BYTES);
        await writeGuestChunk(await lease.get(), handle, piece);
        hash.update(piece);
        n += piece.length;
        io.progress?.(n, total);
      }
    }
  } finally {
    await closeGuestFile(await lease.get(), handle).catch(() => undefined);
  }
  return agreed(what, n, hash.digest('hex'), await guestSha256(lease, path));
}

/**
 * Reads a guest file to its end into `sink`: the guest's sha256sum of it
 * first, then the bytes, hashed as they arrive; the two must agree.
 */
async function receiveChecked(
  lease: AgentLease,
  path: string,
  sink: (b: Buffer) => Promise<void>,
  what: string,
  io: CopyIo,
  total: number | undefined,
  signal: AbortSignal | undefined,
): Promise<Moved> {
  const theirs = await guestSha256(lease, path);
  const hash = createHash('sha256');
  const handle = await openGuestFile(await lease.get(), path, 'r');
  let n = 0;
  try {
    for (;;) {
      checkAbort(signal);
      const bytes = await readGuestChunk(await lease.get(), handle);
      if (bytes.length === 0) return agreed(what, n, hash.digest('hex'), theirs);
      hash.update(bytes);
      await sink(bytes);
      n += bytes.length;
      io.progress?.(n, total);
    }
  } finally {
    await closeGuestFile(await lease.get(), handle).catch(() => undefined);
  }
}

function agreed(what: string, bytes: number, host: string, guest: string): Moved {
  if (host !== guest) throw mismatch(what, host, guest);
  return { bytes, sha256: host };
}

function mismatch(what: string, host: string, guest: string): MvmError {
  return agentFailure(
    `The copy of ${what} does not match: SHA-256 ${host.slice(0, 16)}… on the host, ${guest.slice(0, 16)}… in the guest`,
    'the bytes changed on the way, or the file changed while it was copied',
    'Nothing was left under the destination name. Run the copy again (with the file no longer being written).',
  );
}

// ---- host to guest ---------------------------------------------------------------------------

async function toGuest(
  lease: AgentLease,
  spec: CopySpec,
  io: CopyIo,
  signal?: AbortSignal,
): Promise<CopyResult> {
  if (spec.to.side !== 'guest')
    throw new MvmError('internal', 'toGuest without a guest destination');
  const dstArg = spec.to.path;
  let srcName: string;
  let source:
    | { kind: 'stdin' }
    | { kind: 'file'; path: string; mode: number; size: number }
    | { kind: 'dir'; path: string };
  if (spec.from.side === 'stdio') {
    source = { kind: 'stdin' };
    srcName = '';
  } else if (spec.from.side === 'host') {
    const path = spec.from.path;
    const st = await stat(path).catch((e: NodeJS.ErrnoException) => {
      throw hostError(
        `Cannot read ${show(path)}: ${e.code ?? e.message}`,
        'Check the path on the host.',
      );
    });
    srcName = basename(path.replace(/\/+$/, ''));
    if (srcName === '' || srcName === '.' || srcName === '..')
      throw new MvmError('usage', `${show(path)} has no name to give the copy`, {
        fix: 'Name the destination in full, as in dev:/root/NAME.',
      });
    if (st.isDirectory()) {
      if (!spec.recursive)
        throw new MvmError('usage', `${show(path)} is a directory`, {
          fix: 'Copy a directory with -r.',
        });
      source = { kind: 'dir', path };
    } else if (st.isFile()) source = { kind: 'file', path, mode: st.mode & 0o777, size: st.size };
    else
      throw hostError(
        `${show(path)} is not a regular file or directory`,
        'Copy a file or, with -r, a directory.',
      );
  } else throw new MvmError('internal', 'toGuest from the guest');

  // cp's rule: into an existing directory under the source's name, otherwise to the path itself.
  const dst = await probe(lease, dstArg);
  let target: string;
  if (dst.kind === 'dir' && source.kind !== 'stdin') target = posix.join(dstArg, srcName);
  else if (dst.kind === 'dir')
    throw new MvmError('usage', `dev:${dstArg} is a directory in the guest`, {
      fix: `Name the file: dev:${posix.join(dstArg, 'NAME')}.`,
    });
  else if (dstArg.endsWith('/'))
    throw new MvmError('usage', `dev:${dstArg} is not a directory in the guest`, {
      fix: 'Create it first (mvmctl dev exec -- mkdir -p DIR), or name the file without a trailing /.',
    });
  else target = posix.normalize(dstArg);
  const parent = posix.dirname(target);
  if ((await probe(lease, parent)).kind !== 'dir')
    throw new MvmError('usage', `dev:${parent} is not a directory in the guest`, {
      fix: `Create it first: mvmctl dev exec -- mkdir -p ${parent}`,
    });
  const existing = target === posix.normalize(dstArg) ? dst : await probe(lease, target);
  if (source.kind !== 'dir' && existing.kind === 'dir')
    throw new MvmError('usage', `dev:${target} is a directory in the guest`, {
      fix: 'Name a file path, or remove the directory first.',
    });
  if (source.kind === 'dir' && (existing.kind === 'file' || existing.kind === 'other'))
    throw new MvmError('usage', `dev:${target} exists in the guest and is not a directory`, {
      fix: 'Name another destination, or remove it first.',
    });

  const part = posix.join(parent, partName(posix.basename(target)));
  try {
    if (source.kind === 'dir') {
      const tree = await walkHostTree(source.path);
      const moved = await sendChecked(
        lease,
        part,
        tarStream(tree, signal),
        `the archive of ${show(source.path)}`,
        io,
        tree.archiveSize,
        signal,
      );
      const staging = `${part}.d`;
      // Into an existing directory the archive merges, as cp -r does; otherwise the tree is
      // extracted beside it and renamed into place whole.
      const code = await guestSh(
        lease,
        'a=$1 t=$2 s=$3; if [ -d "$t" ]; then tar -xf "$a" -C "$t" || exit 3; else mkdir -m 700 "$s" && tar -xf "$a" -C "$s" || exit 3; mv "$s" "$t" || exit 4; fi; rm -f "$a"',
        [part, target, staging],
        TAR_TIMEOUT_MS,
      );
      if (code !== 0) {
        await removeInGuest(lease, staging);
        throw agentFailure(
          `The guest could not ${code === 4 ? 'move the tree into place at' : 'extract the tree into'} dev:${target}`,
          `its tar or mv exited ${code} (is there room on the guest's disk, and a tar in the image?)`,
        );
      }
      return {
        direction: 'to-guest',
        destination: `dev:${target}`,
        files: tree.files,
        directories: tree.directories,
        ...moved,
        skipped: tree.skipped,
      };
    }
    const chunks =
      source.kind === 'stdin'
        ? (io.stdin as AsyncIterable<Buffer>)
        : readHostFile(source.path, source.size);
    const total = source.kind === 'file' ? source.size : undefined;
    const moved = await sendChecked(
      lease,
      part,
      chunks,
      show(source.kind === 'file' ? source.path : 'stdin'),
      io,
      total,
      signal,
    );
    const mode = (source.kind === 'file' ? source.mode : 0o644).toString(8);
    if ((await guestSh(lease, 'chmod "$1" "$2" && mv -f "$2" "$3"', [mode, part, target])) !== 0)
      throw agentFailure(
        `The guest could not move the copy into place at dev:${target}`,
        'its chmod or mv failed',
      );
    return {
      direction: 'to-guest',
      destination: `dev:${target}`,
      files: 1,
      directories: 0,
      ...moved,
      skipped: [],
    };
  } finally {
    await removeInGuest(lease, part);
  }
}

/** A host file's bytes, exactly `size` of them: a file that changes length while it is read is refused. */
async function* readHostFile(path: string, size: number): AsyncIterable<Buffer> {
  const fh = await open(path, fsc.O_RDONLY | fsc.O_NOFOLLOW).catch((e: NodeJS.ErrnoException) => {
    throw hostError(
      `Cannot read ${show(path)}: ${e.code ?? e.message}`,
      'Check the path and its permissions.',
    );
  });
  try {
    let left = size;
    while (left > 0) {
      const buf = Buffer.allocUnsafe(Math.min(FILE_CHUNK_BYTES, left));
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0)
        throw hostError(
          `${show(path)} shrank while it was copied`,
          'Copy it again once nothing writes to it.',
        );
      left -= bytesRead;
      yield buf.subarray(0, bytesRead);
    }
  } finally {
    await fh.close();
  }
}

interface HostEntry {
  readonly rel: string;
  readonly abs: string;
  readonly type: 'file' | 'dir' | 'symlink';
  readonly mode: number;
  readonly size: number;
  readonly mtime: number;
  readonly linkname?: string;
}

interface HostTree {
  readonly entries: HostEntry[];
  readonly files: number;
  readonly directories: number;
  readonly archiveSize: number;
  readonly skipped: { name: string; type: string }[];
}

/** The host tree under `root`, links not followed (copied as links), special files skipped. */
async function walkHostTree(root: string): Promise<HostTree> {
  const st = await stat(root);
  const entries: HostEntry[] = [
    { rel: '.', abs: root, type: 'dir', mode: st.mode & 0o777, size: 0, mtime: st.mtimeMs / 1000 },
  ];
  const skipped: { name: string; type: string }[] = [];
  const walk = async (absDir: string, relDir: string): Promise<void> => {
    const names = (await readdir(absDir)).sort();
    for (const name of names) {
      const abs = join(absDir, name);
      const rel = relDir === '.' ? `./${name}` : `${relDir}/${name}`;
      const s = await lstat(abs);
      const base = { rel, abs, mode: s.mode & 0o777, mtime: s.mtimeMs / 1000 };
      if (Buffer.byteLength(rel) > MAX_NAME_BYTES)
        throw hostError(
          `${show(abs)} has a name longer than ${MAX_NAME_BYTES} bytes`,
          'Shorten it.',
        );
      if (s.isDirectory()) {
        entries.push({ ...base, type: 'dir', size: 0 });
        await walk(abs, rel);
      } else if (s.isFile()) entries.push({ ...base, type: 'file', size: s.size });
      else if (s.isSymbolicLink())
        entries.push({ ...base, type: 'symlink', size: 0, linkname: await readlink(abs) });
      else skipped.push({ name: rel.slice(2), type: 'special file' });
    }
  };
  await walk(root, '.');
  let archiveSize = TAR_END.length;
  for (const e of entries)
    archiveSize += tarHeader({ ...e, name: e.rel }).length + e.size + padding(e.size);
  return {
    entries,
    files: entries.filter((e) => e.type === 'file').length,
    directories: entries.filter((e) => e.type === 'dir').length,
    archiveSize,
    skipped,
  };
}

/** The tree as a tar archive, in chunks of about FILE_CHUNK_BYTES. */
async function* tarStream(tree: HostTree, signal?: AbortSignal): AsyncIterable<Buffer> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const push = function* (b: Buffer): Generator<Buffer> {
    pending.push(b);
    pendingBytes += b.length;
    if (pendingBytes >= FILE_CHUNK_BYTES) {
      yield Buffer.concat(pending);
      pending = [];
      pendingBytes = 0;
    }
  };
  for (const e of tree.entries) {
    checkAbort(signal);
    yield* push(tarHeader({ ...e, name: e.rel }));
    if (e.type === 'file') {
      for await (const chunk of readHostFile(e.abs, e.size)) yield* push(chunk);
      yield* push(Buffer.alloc(padding(e.size)));
    }
  }
  yield* push(TAR_END);
  if (pendingBytes > 0) yield Buffer.concat(pending);
}

// ---- guest to host ---------------------------------------------------------------------------

async function fromGuest(
  lease: AgentLease,
  spec: CopySpec,
  io: CopyIo,
  signal?: AbortSignal,
): Promise<CopyResult> {
  if (spec.from.side !== 'guest')
    throw new MvmError('internal', 'fromGuest without a guest source');
  const srcPath = spec.from.path;
  const src = await probe(lease, srcPath);
  if (src.kind === 'missing')
    throw new MvmError('usage', `dev:${srcPath} does not exist in the guest`, {
      fix: 'Check the path: mvmctl dev exec -- ls -la DIR.',
    });
  if (src.kind === 'other')
    throw new MvmError('usage', `dev:${srcPath} is not a regular file or directory in the guest`, {
      fix: 'Copy a file or, with -r, a directory.',
    });
  if (src.kind === 'dir' && !spec.recursive)
    throw new MvmError('usage', `dev:${srcPath} is a directory in the guest`, {
      fix: 'Copy a directory with -r.',
    });
  const srcName = posix.basename(posix.normalize(srcPath));

  if (spec.to.side === 'stdio') {
    // Streamed as it arrives (a pipe cannot be renamed into place); a mismatch still fails the command.
    const out = io.stdout;
    const moved = await receiveChecked(
      lease,
      srcPath,
      (b) => writeTo(out, b),
      `dev:${srcPath}`,
      io,
      src.size,
      signal,
    );
    return {
      direction: 'from-guest',
      destination: '-',
      files: 1,
      directories: 0,
      ...moved,
      skipped: [],
    };
  }
  if (spec.to.side !== 'host') throw new MvmError('internal', 'fromGuest to the guest');
  const dstArg = spec.to.path;
  const dstStat = await stat(dstArg).catch(() => undefined);
  let target: string;
  if (dstStat?.isDirectory()) {
    if (srcName === '/' || srcName === '' || srcName === '.' || srcName === '..')
      throw new MvmError('usage', `dev:${srcPath} has no name to give the copy`, {
        fix: 'Name the destination: mvmctl dev cp -r dev:/ ./guest-root',
      });
    target = join(dstArg, srcName);
  } else if (dstArg.endsWith('/'))
    throw hostError(
      `${show(dstArg)} is not a directory on the host`,
      'Create it first, or name the file without a trailing /.',
    );
  else target = dstArg;
  const parent = dirname(target);
  if (!(await stat(parent).catch(() => undefined))?.isDirectory())
    throw hostError(
      `${show(parent)} is not a directory on the host`,
      `Create it first: mkdir -p ${parent}`,
    );
  const existing = await lstat(target).catch(() => undefined);
  if (src.kind === 'file' && existing?.isDirectory())
    throw new MvmError('usage', `${show(target)} is a directory on the host`, {
      fix: 'Name a file path, or remove the directory first.',
    });
  if (src.kind === 'dir' && existing && !existing.isDirectory())
    throw new MvmError('usage', `${show(target)} exists on the host and is not a directory`, {
      fix: 'Name another destination, or remove it first.',
    });

  const part = join(parent, partName(basename(target)));
  if (src.kind === 'file') {
    try {
      const fh = await createExclusive(part);
      let moved: Moved;
      try {
        moved = await receiveChecked(
          lease,
          srcPath,
          (b) => writeAll(fh, b),
          `dev:${srcPath}`,
          io,
          src.size,
          signal,
        );
        await fh.chmod(src.mode & 0o777);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(part, target);
      return {
        direction: 'from-guest',
        destination: target,
        files: 1,
        directories: 0,
        ...moved,
        skipped: [],
      };
    } finally {
      await rm(part, { force: true });
    }
  }

  // A tree: the guest's tar makes one archive, which is carried, checked, then unpacked here.
  const guestArchive = `/tmp/.mvmctl-cp-${randomBytes(8).toString('hex')}.tar`;
  const archive = `${part}.tar`;
  const staging = `${part}.d`;
  try {
    const code = await guestSh(
      lease,
      'umask 077; cd "$1" && tar -cf "$2" .',
      [srcPath, guestArchive],
      TAR_TIMEOUT_MS,
    );
    if (code !== 0)
      throw agentFailure(
        `The guest could not archive dev:${srcPath}`,
        `its tar exited ${code} (is there room in the guest's /tmp, and a tar in the image?)`,
      );
    const archiveSize = (await probe(lease, guestArchive)).size;
    const fh = await createExclusive(archive);
    let moved: Moved;
    try {
      moved = await receiveChecked(
        lease,
        guestArchive,
        (b) => writeAll(fh, b),
        `the archive of dev:${srcPath}`,
        io,
        archiveSize,
        signal,
      );
    } finally {
      await fh.close();
    }
    checkAbort(signal);
    const unpacked = await unpackArchive(archive, staging);
    if (existing) await mergeInto(staging, target, unpacked);
    else {
      await applyDirModes(staging, unpacked.dirs);
      await rename(staging, target);
    }
    return {
      direction: 'from-guest',
      destination: target,
      files: unpacked.files,
      directories: unpacked.dirs.length,
      ...moved,
      skipped: unpacked.skipped,
    };
  } finally {
    await removeInGuest(lease, guestArchive);
    await rm(archive, { force: true });
    await rm(staging, { recursive: true, force: true });
  }
}

function writeTo(out: Writable, b: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    out.write(b, (e) => (e ? reject(e) : resolve()));
  });
}

async function writeAll(fh: FileHandle, b: Buffer): Promise<void> {
  let at = 0;
  while (at < b.length) at += (await fh.write(b, at, b.length - at)).bytesWritten;
}

/** A new file that nothing else named before (no link followed, none replaced). */
function createExclusive(path: string, mode = 0o600): Promise<FileHandle> {
  return open(path, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, mode).catch(
    (e: NodeJS.ErrnoException) => {
      throw hostError(
        `Cannot create ${show(path)}: ${e.code ?? e.message}`,
        'Check the permissions of the destination directory and its free space.',
      );
    },
  );
}

interface Unpacked {
  /** Directories created, relative to the staging root ('' is the root), with their modes. */
  readonly dirs: { rel: string; mode: number }[];
  readonly files: number;
  readonly skipped: { name: string; type: string }[];
  /** Every entry created, in archive order: what a merge moves. */
  readonly order: { rel: string; type: 'dir' | 'file' }[];
}

const SKIPPED_AS: Record<Exclude<TarEntryType, 'file' | 'dir'>, string> = {
  symlink: 'symbolic link',
  hardlink: 'hard link',
  other: 'special file',
};

/**
 * Unpacks the (already hash-checked) archive into a new `staging` directory.
 * Every name is split by entryParts, and its parent must be a directory this
 * archive created: nothing resolves through a link or outside `staging`.
 */
export async function unpackArchive(archive: string, staging: string): Promise<Unpacked> {
  await mkdir(staging, { mode: 0o700 });
  const fh = await open(archive, fsc.O_RDONLY | fsc.O_NOFOLLOW);
  const created = new Map<string, 'dir' | 'file' | 'skipped'>([['', 'dir']]);
  const dirs: { rel: string; mode: number }[] = [];
  const order: { rel: string; type: 'dir' | 'file' }[] = [];
  const skipped: { name: string; type: string }[] = [];
  let files = 0;
  let pos = 0;
  const read = async (n: number): Promise<Buffer> => {
    const buf = Buffer.alloc(n);
    const { bytesRead } = await fh.read(buf, 0, n, pos);
    if (bytesRead !== n) throw archiveEnds();
    pos += n;
    return buf;
  };
  const archiveEnds = () => archiveRefused('it ends inside an entry (it is cut short, or not tar)');
  try {
    let longPath: string | undefined;
    let paxSize: number | undefined;
    for (;;) {
      const h = parseTarHeader(await read(BLOCK));
      if (h.kind === 'end') break;
      const size = paxSize ?? h.size;
      if (h.typeflag === 'L' || h.typeflag === 'K' || h.typeflag === 'x' || h.typeflag === 'g') {
        if (size > MAX_META_BYTES)
          throw archiveRefused(`a name record of ${size} bytes is larger than ${MAX_META_BYTES}`);
        const data = await read(size + padding(size));
        const value = data.subarray(0, size);
        if (h.typeflag === 'L') longPath = longName(value);
        else if (h.typeflag === 'x') {
          const pax = parsePax(value);
          if (pax.path !== undefined) longPath = pax.path;
          if (pax.size !== undefined) paxSize = pax.size;
        }
        continue;
      }
      const name = longPath ?? h.name;
      longPath = paxSize = undefined;
      const type = entryType(h.typeflag);
      const parts = entryParts(name);
      const rel = parts.join('/');
      const parentRel = parts.slice(0, -1).join('/');
      // A file's data is extracted below; an unknown type's (GNU sparse, ...) is stepped over.
      const dataBlocks = type === 'other' ? size + padding(size) : 0;
      if (rel === '' && type !== 'dir')
        throw refusedEntry(
          name,
          type === 'file'
            ? "names the copy's root as a file"
            : "makes the copy's root a link or special file",
        );
      if (rel !== '' && created.has(rel)) throw refusedEntry(name, 'appears twice in the archive');
      if (rel !== '' && created.get(parentRel) !== 'dir')
        throw refusedEntry(
          name,
          created.get(parentRel) === 'skipped'
            ? 'is inside a link or special file of the archive'
            : 'is not inside a directory the archive created first',
        );
      const abs = rel === '' ? staging : join(staging, ...parts);
      if (type === 'dir') {
        if (rel !== '') await mkdir(abs, { mode: 0o700 });
        created.set(rel, 'dir');
        dirs.push({ rel, mode: h.mode & 0o777 });
        if (rel !== '') order.push({ rel, type: 'dir' });
      } else if (type === 'file') {
        const out = await createExclusive(abs);
        try {
          let left = size;
          while (left > 0) {
            const n = Math.min(FILE_CHUNK_BYTES, left);
            await writeAll(out, await read(n));
            left -= n;
          }
          await out.chmod(h.mode & 0o777);
        } finally {
          await out.close();
        }
        pos += padding(size);
        created.set(rel, 'file');
        order.push({ rel, type: 'file' });
        files++;
        continue;
      } else {
        created.set(rel, 'skipped');
        skipped.push({ name: rel, type: SKIPPED_AS[type] });
      }
      pos += dataBlocks;
    }
  } finally {
    await fh.close();
  }
  return { dirs, files, skipped, order };
}

function refusedEntry(name: string, why: string): MvmError {
  return archiveRefused(`the entry ${show(name)} ${why}`);
}

/** Directory modes last (a read-only directory would refuse its own entries), deepest first. */
async function applyDirModes(
  root: string,
  dirs: readonly { rel: string; mode: number }[],
): Promise<void> {
  for (const d of [...dirs].reverse()) await chmod(d.rel === '' ? root : join(root, d.rel), d.mode);
}

/**
 * Merges an unpacked tree into an existing host directory, as cp -r does:
 * files replace files (renamed over, never written through), directories
 * are created where missing. Anything in the way that is not a directory
 * where one is needed, a link included, stops the merge.
 */
async function mergeInto(staging: string, target: string, u: Unpacked): Promise<void> {
  const modes = new Map(u.dirs.map((d) => [d.rel, d.mode]));
  const made: { rel: string; mode: number }[] = [];
  for (const e of u.order) {
    const dst = join(target, ...e.rel.split('/'));
    const there = await lstat(dst).catch(() => undefined);
    if (e.type === 'dir') {
      if (!there) {
        await mkdir(dst, { mode: 0o700 });
        made.push({ rel: e.rel, mode: modes.get(e.rel) ?? 0o755 });
      } else if (!there.isDirectory())
        throw hostError(
          `${show(dst)} is in the way: the copy has a directory there, the host ${there.isSymbolicLink() ? 'a symbolic link' : 'a file'}`,
          'Move it aside and copy again; files copied so far are in place.',
        );
    } else {
      if (there?.isDirectory())
        throw hostError(
          `${show(dst)} is a directory on the host, the copy has a file there`,
          'Move it aside and copy again; files copied so far are in place.',
        );
      await rename(join(staging, ...e.rel.split('/')), dst);
    }
  }
  await applyDirModes(target, made);
}
