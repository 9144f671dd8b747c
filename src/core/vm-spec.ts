/**
 * The dev VM as plain data (SPEC.md section 8), in the manner of Firecracker's
 * API model: a pure function from the installed image, the `dev up` flags and
 * what the host probe found to a `VmSpec`. Nothing here touches the disk or
 * starts a process; `src/vm/qemu-args.ts` turns the spec into QEMU's argument
 * list, and the shell around it runs that.
 */
import { hash } from 'node:crypto';
import { isAbsolute, join, resolve } from 'node:path';
import { MvmError } from '../errors.js';
import { printable } from './printable.js';

export type Accel = 'kvm' | 'tcg';
export type AccelChoice = Accel | 'auto';

/** The KVM probe's verdict (src/vm/kvm.ts): usable, or why not and what would fix it. */
export interface KvmVerdict {
  readonly usable: boolean;
  readonly reason: string;
  readonly fix?: string;
}

/** What the host offers, gathered by the shell (src/vm/kvm.ts `probeHost`) and passed in. */
export interface HostFacts {
  /** Logical CPUs the host has. */
  readonly cpus: number;
  /** Host memory in MiB. */
  readonly memoryMiB: number;
  /** TSC frequency in kHz; under TCG the guest needs it or 1 boot in 3 hangs calibrating its timer. */
  readonly tscKhz?: number;
  readonly kvm: KvmVerdict;
  /**
   * How `--share` is served: virtiofs (the default) needs a virtiofsd this user can run; 9p needs a
   * guest kernel with 9p, which the Debian cloud kernel lacks.
   */
  readonly shareTransport?: ShareTransport;
}

/** The installed image, by absolute path (the store's object directory). */
export interface VmImage {
  readonly version: string;
  readonly kernel: string;
  readonly rootfs: string;
  /** Only when the manifest lists `{variant}-initrd-{arch}`; upstream's images boot without. */
  readonly initrd?: string;
}

/** `dev up` flags as the CLI received them: unparsed strings, validated here. */
export interface DevUpOptions {
  readonly cpus?: string;
  readonly memory?: string;
  readonly ports?: readonly string[];
  readonly share?: string;
  readonly append?: string;
  readonly accel?: string;
  readonly network?: string;
  readonly console?: string;
  /** `--disk SIZE`: the data disk's size (created, or grown to it). */
  readonly disk?: string;
  /** Where a relative `--share` is resolved from. */
  readonly cwd?: string;
}

/**
 * The guest's network (QEMU user-mode networking, libslirp):
 * - `user`: outbound connections, NATed through the host, and --port forwards in. The guest
 *   also reaches the host's own loopback services at 10.0.2.2 (libslirp maps the gateway to
 *   127.0.0.1, and QEMU 7.2 has no switch to stop it).
 * - `restricted`: no connection out at all (libslirp's restrict=on), host loopback included;
 *   --port forwards still come in.
 * - `none`: no network device.
 */
export type NetworkMode = 'user' | 'restricted' | 'none';
export const NETWORK_MODES: readonly NetworkMode[] = ['user', 'restricted', 'none'];

export interface PortForward {
  /** IPv4 address on the host; loopback unless the operator names another. */
  readonly hostAddr: string;
  readonly hostPort: number;
  readonly guestPort: number;
}

/**
 * The guest console:
 * - `ttyS0` (the default): the 8250 UART on the microvm machine's ISA bus. Every x86 kernel
 *   has its driver built in, so a stock distro kernel and initrd print from their first line,
 *   as Firecracker-style images expect (upstream's boots with console=ttyS0).
 * - `hvc0`: the virtio console. It needs virtio_console in the kernel or the initrd (a stock
 *   initrd has none: nothing would appear until the root file system loads it).
 */
export type ConsoleDevice = 'ttyS0' | 'hvc0';
export const CONSOLE_DEVICES: readonly ConsoleDevice[] = ['ttyS0', 'hvc0'];

export type ShareTransport = 'virtiofs' | '9p';

export type ShareSpec =
  | { readonly transport: '9p'; readonly hostPath: string; readonly tag: 'workdir' }
  | {
      readonly transport: 'virtiofs';
      readonly hostPath: string;
      /** Upstream's mount tag. */
      readonly tag: 'workdir';
      /** The vhost-user socket the host's virtiofsd listens on. */
      readonly socket: string;
    };

/** Files of the VM's state directory (`~/.mvm/vms/dev/`), the single source of truth about it. */
export interface VmStatePaths {
  readonly dir: string;
  readonly overlay: string;
  readonly consoleSocket: string;
  readonly consoleLog: string;
  readonly qmpSocket: string;
  /** The guest agent's channel (virtio-serial port org.qemu.guest_agent.0), served by QEMU. */
  readonly agentSocket: string;
  readonly pidFile: string;
  /** The persistent data disk (`--disk`), /dev/vdb in the guest: never reset with the overlay. */
  readonly dataDisk: string;
  /** The --cpus, --memory and --disk given once, reused by the next dev up. */
  readonly settings: string;
}

export interface VmSpec {
  readonly version: string;
  readonly kernel: string;
  readonly initrd?: string;
  /** The installed rootfs: the overlay's read-only backing file, never opened for writing. */
  readonly rootfs: string;
  readonly cpus: number;
  readonly memoryMiB: number;
  readonly cmdline: string;
  readonly accel: Accel;
  readonly console: ConsoleDevice;
  readonly network: NetworkMode;
  readonly ports: readonly PortForward[];
  readonly share?: ShareSpec;
  /** `--disk`: the size the data disk must have (created or grown to it before the boot). */
  readonly diskBytes?: number;
  /** Set by the shell once the data disk exists: attached as the second virtio disk (/dev/vdb). */
  readonly dataDisk?: string;
  readonly state: VmStatePaths;
  /** Notes for the operator (the software-emulation fallback, ports open beyond loopback). */
  readonly warnings: readonly string[];
}

/** Upstream's command line after `console=`: the root disk is the first virtio disk. */
export const BASE_CMDLINE = ['root=/dev/vda', 'rw', 'init=/init'] as const;

/**
 * Added to every boot: `reboot=t` so a guest reboot ends QEMU under
 * `-no-reboot`; `panic=-1` so a kernel panic (an init that exits, a root
 * disk not found) reboots at once, which ends QEMU, and dev up reports it
 * with the console instead of waiting out --timeout beside a guest that
 * spins; `cryptomgr.notests quiet` save about 0.3 s.
 */
export const TUNING_CMDLINE = ['reboot=t', 'panic=-1', 'cryptomgr.notests', 'quiet'] as const;

/** Parameters `--append` may not set, each with why `dev up` depends on it. */
export const RESERVED_PARAMS: Readonly<Record<string, string>> = {
  root: 'the root disk must be the copy-on-write overlay (/dev/vda), so the installed image is never written',
  init: 'init=/init is the image convention, the program that starts the guest agent and prints the ready line',
  rdinit:
    "it would replace the initramfs's init, which loads the virtio drivers and mounts /dev/vda",
  console:
    'the console is the one device dev up logs and attaches to: choose it with --console ttyS0 or --console hvc0',
};

export const MIN_MEMORY_MIB = 128;
export const DEFAULT_MAX_CPUS = 2;
export const DEFAULT_MAX_MEMORY_MIB = 1024;
/** x86 COMMAND_LINE_SIZE is 2048 bytes including the terminating NUL. */
export const MAX_CMDLINE_BYTES = 2047;
/** sun_path is 108 bytes including the NUL: a longer socket path cannot be bound. */
export const MAX_SOCKET_PATH_BYTES = 107;

const usage = (message: string, cause: string, fix: string): MvmError =>
  new MvmError('usage', message, { cause, fix });

const show = (value: string): string => JSON.stringify(printable(value, 200));

export function stateDirPaths(dir: string): VmStatePaths {
  return {
    dir,
    overlay: join(dir, 'overlay.qcow2'),
    consoleSocket: join(dir, 'console.sock'),
    consoleLog: join(dir, 'console.log'),
    qmpSocket: join(dir, 'qmp.sock'),
    agentSocket: join(dir, 'agent.sock'),
    pidFile: join(dir, 'qemu.pid'),
    dataDisk: join(dir, 'data.qcow2'),
    settings: join(dir, 'settings.json'),
  };
}

export function vmSpecFrom(
  image: VmImage,
  options: DevUpOptions,
  host: HostFacts,
  stateDir: string,
): VmSpec {
  for (const [what, path] of [
    ['kernel', image.kernel],
    ['rootfs', image.rootfs],
    ['initrd', image.initrd],
    ['state directory', stateDir],
  ] as const) {
    // The adapter relies on it: an absolute path is never read as a QEMU
    // protocol prefix (`nbd:`) or as an option (`-x`).
    if (path !== undefined && !isAbsolute(path))
      throw new MvmError('internal', `the ${what} path is not absolute: ${show(path)}`);
  }
  const state = stateDirPaths(stateDir);
  const warnings: string[] = [];
  const accel = accelFrom(options.accel, host.kvm, warnings);
  const ports = parsePorts(options.ports ?? [], warnings);
  const network = networkFrom(options.network, ports);
  const console = consoleFrom(options.console);
  const share =
    options.share === undefined
      ? undefined
      : shareFrom(options.share, options.cwd, host.shareTransport ?? 'virtiofs', stateDir);
  for (const socket of [
    state.consoleSocket,
    state.qmpSocket,
    state.agentSocket,
    share?.transport === 'virtiofs' ? share.socket : undefined,
  ]) {
    if (socket !== undefined && Buffer.byteLength(socket) > MAX_SOCKET_PATH_BYTES)
      throw new MvmError('store', `the VM's socket path is too long: ${show(socket)}`, {
        cause: `a unix socket path is limited to ${MAX_SOCKET_PATH_BYTES} bytes and this one has ${Buffer.byteLength(socket)}`,
        fix: 'Point MVM_DATA_DIR at a directory with a shorter path.',
      });
  }
  return {
    version: image.version,
    kernel: image.kernel,
    ...(image.initrd !== undefined ? { initrd: image.initrd } : {}),
    rootfs: image.rootfs,
    cpus: parseCpus(options.cpus, host.cpus),
    memoryMiB: parseMemory(options.memory, host.memoryMiB),
    cmdline: cmdlineFrom(console, options.append, accel, host.tscKhz),
    accel,
    console,
    network,
    ports,
    ...(share ? { share } : {}),
    ...(options.disk !== undefined ? { diskBytes: parseDiskSize(options.disk) } : {}),
    state,
    warnings,
  };
}

function consoleFrom(value: string | undefined): ConsoleDevice {
  const device = value ?? 'ttyS0';
  if (!(CONSOLE_DEVICES as readonly string[]).includes(device))
    throw usage(
      `--console ${show(device)} is not one of ${CONSOLE_DEVICES.join(', ')}`,
      'ttyS0: the serial port every kernel has a driver for; hvc0: the virtio console, which needs virtio_console in the kernel or initrd',
      'Use --console ttyS0 (the default) or --console hvc0.',
    );
  return device as ConsoleDevice;
}

function networkFrom(value: string | undefined, ports: readonly PortForward[]): NetworkMode {
  const mode = value ?? 'user';
  if (!(NETWORK_MODES as readonly string[]).includes(mode))
    throw usage(
      `--network ${show(mode)} is not one of ${NETWORK_MODES.join(', ')}`,
      'user: outbound and host loopback reachable; restricted: nothing out, --port forwards in; none: no network device',
      'Use --network user, --network restricted or --network none.',
    );
  if (mode === 'none' && ports.length > 0)
    throw usage(
      '--port needs a network device, and --network none has none',
      'a forwarded port reaches the guest through its network device',
      'Use --network restricted (no connection out, forwards in), or drop --port.',
    );
  return mode as NetworkMode;
}

function accelFrom(value: string | undefined, kvm: KvmVerdict, warnings: string[]): Accel {
  const choice = value ?? 'auto';
  if (choice !== 'auto' && choice !== 'kvm' && choice !== 'tcg')
    throw usage(
      `--accel ${show(choice)} is not one of auto, kvm, tcg`,
      'the accelerator must be kvm (hardware), tcg (software emulation) or auto (kvm when usable)',
      'Use --accel auto, --accel kvm or --accel tcg.',
    );
  if (choice === 'tcg') return 'tcg';
  if (kvm.usable) return 'kvm';
  const fix = kvm.fix ?? 'Run on a host where KVM can run a stock kernel.';
  if (choice === 'kvm')
    throw usage(
      '--accel kvm: KVM is not usable on this host',
      kvm.reason,
      `${fix} Or use --accel auto (or tcg) to boot with software emulation, several times slower.`,
    );
  warnings.push(
    `KVM is not usable (${kvm.reason}): booting with software emulation (TCG), several times slower. ${fix} --accel tcg chooses emulation without this warning.`,
  );
  return 'tcg';
}

function parseCpus(value: string | undefined, hostCpus: number): number {
  const limit = Math.max(1, Math.floor(hostCpus));
  if (value === undefined) return Math.min(DEFAULT_MAX_CPUS, limit);
  const fix = `Give --cpus a whole number from 1 to ${limit} (this host's CPU count).`;
  if (!/^[0-9]{1,6}$/.test(value))
    throw usage(
      `--cpus ${show(value)} is not a whole number`,
      'the vCPU count is a whole number',
      fix,
    );
  const cpus = Number(value);
  if (cpus === 0) throw usage('--cpus 0: a VM needs at least one vCPU', 'zero vCPUs', fix);
  if (cpus > limit)
    throw usage(
      `--cpus ${cpus} is more than this host's ${limit} CPUs`,
      'more vCPUs than host CPUs only adds contention, most of all under software emulation',
      fix,
    );
  return cpus;
}

export const MIN_DISK_BYTES = 16 * 2 ** 20;
export const MAX_DISK_BYTES = 16 * 2 ** 40;
const DISK = /^([0-9]{1,8})(?:\.([0-9]{1,3}))?([MGT])(?:i?B)?$/i;

/** `--disk`: `512M`, `8G`, `1.5T`, `20GiB` (binary units, as qemu-img reads them); a unit is required. */
export function parseDiskSize(value: string): number {
  const fix = 'Give --disk a size with its unit, like 8G, 512M or 1T (at least 16M, at most 16T).';
  const m = DISK.exec(value.trim());
  if (!m)
    throw usage(
      `--disk ${show(value)} is not a size`,
      'a disk size is a number with M, G or T (binary units: 1G is 1024 MiB)',
      fix,
    );
  const [, whole, frac = '', unit] = m;
  const scale = 2 ** (20 + 10 * 'MGT'.indexOf(unit!.toUpperCase()));
  // Whole MiB: qemu-img and the guest's block layer both want a multiple of 512 bytes.
  const bytes =
    Math.round(((Number(whole) + Number(`0.${frac || '0'}`)) * scale) / 2 ** 20) * 2 ** 20;
  if (bytes < MIN_DISK_BYTES || bytes > MAX_DISK_BYTES)
    throw usage(
      `--disk ${show(value)} is ${bytes < MIN_DISK_BYTES ? 'smaller than 16M' : 'larger than 16T'}`,
      'a data disk is at least 16 MiB (room for a file system) and at most 16 TiB',
      fix,
    );
  return bytes;
}

const MEMORY = /^([0-9]{1,7})(?:\.([0-9]{1,3}))?(?:([MG])(?:i?B)?)?$/i;

/** `512M`, `2G`, `1.5G`, `2GiB`; a bare number is MiB, as with QEMU's -m. */
export function parseMemorySize(value: string): number | undefined {
  const m = MEMORY.exec(value.trim());
  if (!m) return undefined;
  const [, whole, frac = '', unit = 'M'] = m;
  const scale = unit.toUpperCase() === 'G' ? 1024 : 1;
  const mib = (Number(whole) + Number(`0.${frac || '0'}`)) * scale;
  return Number.isInteger(mib) ? mib : undefined;
}

function parseMemory(value: string | undefined, hostMiB: number): number {
  const limit = Math.floor(hostMiB);
  if (value === undefined)
    return Math.max(MIN_MEMORY_MIB, Math.min(DEFAULT_MAX_MEMORY_MIB, Math.floor(limit / 2)));
  const fix = `Give --memory a size from ${MIN_MEMORY_MIB}M to ${limit}M (this host's memory), like 512M or 2G.`;
  const mib = parseMemorySize(value);
  if (mib === undefined)
    throw usage(
      `--memory ${show(value)} is not a size`,
      'a size is a whole number of MiB, with M or G (a bare number is MiB)',
      fix,
    );
  if (mib < MIN_MEMORY_MIB)
    throw usage(
      `--memory ${show(value)} is too small: ${mib} MiB`,
      `the guest kernel needs at least ${MIN_MEMORY_MIB} MiB to boot`,
      fix,
    );
  if (mib > limit)
    throw usage(
      `--memory ${show(value)} is more than this host's ${limit} MiB`,
      'the guest would be killed or the host would swap once it uses that memory',
      fix,
    );
  return mib;
}

const PORT = /^[0-9]{1,5}$/;
const IPV4 =
  /^(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}$/;

function parsePorts(values: readonly string[], warnings: string[]): PortForward[] {
  const fix =
    'Use --port HOST:GUEST or --port ADDR:HOST:GUEST, ports from 1 to 65535, ADDR an IPv4 address.';
  const ports: PortForward[] = [];
  const seen = new Map<number, string>();
  for (const value of values) {
    const parts = value.split(':');
    if (parts.length !== 2 && parts.length !== 3)
      throw usage(
        `--port ${show(value)} is not [ADDR:]HOST:GUEST`,
        'a forward names a host port and a guest port, optionally after a host IPv4 address',
        fix,
      );
    const [hostAddr, host, guest] =
      parts.length === 3
        ? (parts as [string, string, string])
        : ['127.0.0.1', parts[0]!, parts[1]!];
    if (!IPV4.test(hostAddr))
      throw usage(
        `--port ${show(value)}: ${show(hostAddr)} is not an IPv4 address`,
        "QEMU's user-mode network forwards from an IPv4 address of this host",
        fix,
      );
    const hostPort = portNumber(host, value, 'host', fix);
    const guestPort = portNumber(guest, value, 'guest', fix);
    const earlier = seen.get(hostPort);
    if (earlier !== undefined)
      throw usage(
        `--port ${show(value)}: host port ${hostPort} is already forwarded by --port ${show(earlier)}`,
        'one host port can be bound by one forward only',
        'Give each --port a different host port.',
      );
    seen.set(hostPort, value);
    if (!hostAddr.startsWith('127.'))
      warnings.push(
        `--port ${value}: guest port ${guestPort} is reachable from other hosts at ${hostAddr}:${hostPort}, not only from this one.`,
      );
    ports.push({ hostAddr, hostPort, guestPort });
  }
  return ports;
}

function portNumber(text: string, value: string, side: 'host' | 'guest', fix: string): number {
  const port = PORT.test(text) ? Number(text) : NaN;
  if (!(port >= 1 && port <= 65535))
    throw usage(
      `--port ${show(value)}: ${side} port ${show(text)} is not a port from 1 to 65535`,
      `a TCP port is a whole number from 1 to 65535`,
      fix,
    );
  return port;
}

function shareFrom(
  value: string,
  cwd: string | undefined,
  transport: ShareTransport,
  stateDir: string,
): ShareSpec {
  if (value === '' || value.includes('\0'))
    throw usage(
      `--share ${show(value)} is not a directory path`,
      'the shared directory must be named by a non-empty path',
      'Give --share the directory to expose under the mount tag workdir.',
    );
  if (!isAbsolute(value) && cwd === undefined)
    throw new MvmError(
      'internal',
      `--share ${show(value)} is relative and no working directory was given`,
    );
  const hostPath = resolve(cwd ?? '/', value);
  return transport === 'virtiofs'
    ? { transport, hostPath, tag: 'workdir', socket: virtiofsdSocket(stateDir) }
    : { transport, hostPath, tag: 'workdir' };
}

/**
 * Where virtiofsd, which runs as the shared directory's owner (not as the
 * user running mvmctl), listens: a directory of its own under /run/mvmctl,
 * named after the VM's state directory (which that owner may not be able to
 * reach: it is private to the user running mvmctl).
 */
export const SHARE_RUNTIME_ROOT = '/run/mvmctl';
export const virtiofsdSocket = (stateDir: string): string =>
  join(
    SHARE_RUNTIME_ROOT,
    `share-${hash('sha256', resolve(stateDir), 'hex').slice(0, 16)}`,
    'virtiofsd.sock',
  );

/**
 * Splits a command line exactly as the kernel's `next_arg` (lib/cmdline.c)
 * and `parse_args` (kernel/params.c) do, so that what --append may not set is
 * judged on what the kernel will read: whitespace separates parameters
 * outside double quotes; a quote is dropped only at the start of a
 * parameter, at the start of its value, and at its end when it opened the
 * parameter or value; a parameter `--` with no value ends the kernel's
 * parameters (what follows is init's). `"root=/dev/sda"` sets `root`;
 * `--""` is not `--`. Callers pass printable ASCII only (cmdlineFrom refuses
 * the rest): the kernel's isspace() also splits at byte 0xA0, which a UTF-8
 * character can contain.
 */
export function cmdlineParams(cmdline: string): { name: string; token: string }[] {
  const params: { name: string; token: string }[] = [];
  const isSpace = (c: string | undefined): boolean => c !== undefined && /^[\t\n\v\f\r ]$/.test(c);
  let rest = cmdline;
  const skipSpaces = () => {
    let k = 0;
    while (isSpace(rest[k])) k++;
    rest = rest.slice(k);
  };
  skipSpaces();
  while (rest.length > 0) {
    let quoted = false;
    let inQuote = false;
    if (rest[0] === '"') {
      rest = rest.slice(1);
      inQuote = true;
      quoted = true;
    }
    let equals = -1;
    let i = 0;
    for (; i < rest.length; i++) {
      if (isSpace(rest[i]) && !inQuote) break;
      if (equals < 0 && rest[i] === '=') equals = i;
      if (rest[i] === '"') inQuote = !inQuote;
    }
    // next_arg: a trailing quote closes the one that opened the parameter.
    const token = quoted && rest[i - 1] === '"' ? rest.slice(0, i - 1) : rest.slice(0, i);
    const name = equals < 0 ? token : token.slice(0, equals);
    if (equals < 0 && name === '--') break;
    params.push({ name, token });
    rest = rest.slice(i);
    skipSpaces();
  }
  return params;
}

function cmdlineFrom(
  console: ConsoleDevice,
  append: string | undefined,
  accel: Accel,
  tscKhz: number | undefined,
): string {
  const parts: string[] = [`console=${console}`, ...BASE_CMDLINE, ...TUNING_CMDLINE];
  if (accel === 'tcg' && tscKhz !== undefined && Number.isInteger(tscKhz) && tscKhz > 0)
    parts.push(`tsc_early_khz=${tscKhz}`);
  if (append !== undefined) {
    const fix = 'Remove it from --append; dev up sets it.';
    // eslint-disable-next-line no-control-regex -- rejecting control characters is the point
    if (/[\u0000-\u001f\u007f]/u.test(append))
      throw usage(
        `--append ${show(append)} contains a control character`,
        'the kernel command line is one line of printable text',
        'Remove the control characters from --append.',
      );
    // The kernel reads bytes, and its isspace() splits at 0xA0 (in UTF-8, part of à, Ā, …):
    // only printable ASCII is judged the way the kernel will read it.
    if (/[^\u0020-\u007e]/u.test(append))
      throw usage(
        `--append ${show(append)} contains a character outside printable ASCII`,
        'the kernel splits its command line on bytes that non-ASCII characters can contain, so it would not read --append as written',
        'Use only printable ASCII characters in --append.',
      );
    if ((append.match(/"/g) ?? []).length % 2 !== 0)
      throw usage(
        `--append ${show(append)} has an unbalanced double quote`,
        'the kernel would read the rest of the line as one quoted value',
        'Close the quote in --append.',
      );
    for (const { name, token } of cmdlineParams(append)) {
      const why = RESERVED_PARAMS[name];
      if (why !== undefined)
        throw usage(
          `--append may not set ${name}= (${show(token)})`,
          `dev up sets ${name}= itself: ${why}`,
          fix,
        );
    }
    if (append.trim() !== '') parts.push(append.trim());
  }
  const cmdline = parts.join(' ');
  if (Buffer.byteLength(cmdline) > MAX_CMDLINE_BYTES)
    throw usage(
      `--append makes the kernel command line ${Buffer.byteLength(cmdline)} bytes long`,
      `the x86 kernel keeps at most ${MAX_CMDLINE_BYTES} bytes of its command line and drops the rest`,
      'Shorten --append.',
    );
  return cmdline;
}
