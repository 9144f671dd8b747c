/**
 * The one adapter from a `VmSpec` to QEMU's argument list (vmtest's shape):
 * pure, so every flag is pinned by a test against an expected list. The
 * command line is the one VM-FACTS.md established on these machines: microvm
 * with ACPI on (the virtio-mmio disk is found through it), the kernel booted
 * through its PVH entry, virtio devices on virtio-mmio, the console (the
 * serial port, or a virtio console) on a unix socket that is also logged
 * (through a pipe to a keeper that bounds `console.log`), the guest agent's
 * virtio-serial port on a unix socket, QMP on a unix socket, user-mode
 * networking, and `-daemonize` with a pid file so the VM outlives
 * the CLI and the foreground process reports start-up errors before it exits.
 */
import type { VmSpec } from '../core/vm-spec.js';

export const QEMU_BINARY = 'qemu-system-x86_64';

/**
 * Where QEMU finds the verified artifacts: descriptors its parent opened and
 * hashed, placed at these numbers in the child (spawn's stdio slots 3, 4, 5).
 * QEMU opens `/proc/self/fd/N`, which reaches the open file itself, so
 * nothing renamed into the store after the hash, and no name in the
 * overlay's header, decides what boots.
 */
export const IMAGE_FDS = { kernel: 3, rootfs: 4, initrd: 5 } as const;
/**
 * Where QEMU's console chardev logs: the write end of a pipe whose reader, the
 * console log's keeper (console-keeper.ts), bounds what reaches the disk.
 */
export const CONSOLE_LOG_FD = 6;
const fdPath = (fd: number): string => `/proc/self/fd/${fd}`;

/**
 * A value inside a QEMU option string (`-drive file=...,format=...`): QEMU
 * splits such strings on `,` and reads `,,` as one literal comma, so a path
 * with a comma must be doubled or it would end the value and start an option
 * of the attacker-chosen name. Values QEMU takes whole (`-kernel`, `-initrd`,
 * `-append`, `-pidfile`) are not escaped: there `,,` would reach the file
 * system as two commas.
 */
export function qemuOptValue(value: string): string {
  return value.replaceAll(',', ',,');
}

/**
 * Defence in depth for a QEMU the guest may escape from: its seccomp sandbox
 * always (no obsolete system calls, no changes to scheduling or resource
 * limits), and, when mvmctl runs as root, `-runas` drops QEMU to this uid and
 * gid once the VM is set up (every file it needs is open by then: the image
 * descriptors, the overlay, the sockets, the console log). Measured with
 * QEMU 7.2: `spawn=deny` and `elevateprivileges=deny` stop `-daemonize`
 * itself (it forks and calls setsid), so they are not used.
 */
export const QEMU_SANDBOX = 'on,obsolete=deny,resourcecontrol=deny';
/** nobody:nogroup on Debian; numeric, so no account lookup decides it. */
export const QEMU_RUNAS = { uid: 65534, gid: 65534 } as const;

export function qemuArgs(spec: VmSpec, o: { runAs?: { uid: number; gid: number } } = {}): string[] {
  const v = qemuOptValue;
  const virtiofs = spec.share?.transport === 'virtiofs';
  const machine = virtiofs ? 'microvm,acpi=on,memory-backend=mem' : 'microvm,acpi=on';
  const args: string[] = [
    '-name',
    'mvm-dev',
    '-machine',
    machine,
    ...(spec.accel === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg']),
    '-smp',
    String(spec.cpus),
    '-m',
    `${spec.memoryMiB}M`,
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-no-reboot',
    '-kernel',
    fdPath(IMAGE_FDS.kernel),
    ...(spec.initrd !== undefined ? ['-initrd', fdPath(IMAGE_FDS.initrd)] : []),
    '-append',
    spec.cmdline,
    // The verified rootfs, read-only, from the descriptor that was hashed; the
    // overlay on top of it names it as its backing node explicitly (`backing=`),
    // so whatever backing file the overlay's header names is never opened.
    '-blockdev',
    `driver=file,node-name=rootfs-file,filename=${fdPath(IMAGE_FDS.rootfs)},read-only=on`,
    '-blockdev',
    'driver=raw,node-name=rootfs,file=rootfs-file,read-only=on',
    '-blockdev',
    `driver=qcow2,node-name=root,file.driver=file,file.filename=${v(spec.state.overlay)},backing=rootfs`,
    '-device',
    'virtio-blk-device,drive=root',
    // The data disk (--disk), /dev/vdb: a plain qcow2 of the state directory. `backing=` (empty)
    // opens no backing file whatever its header names.
    ...(spec.dataDisk !== undefined
      ? [
          '-blockdev',
          `driver=qcow2,node-name=data,file.driver=file,file.filename=${v(spec.dataDisk)},backing=`,
          '-device',
          'virtio-blk-device,drive=data',
        ]
      : []),
    '-chardev',
    `socket,id=con,path=${v(spec.state.consoleSocket)},server=on,wait=off,logfile=${fdPath(CONSOLE_LOG_FD)}`,
    // ttyS0: the microvm machine's ISA 8250 UART on the console chardev; hvc0: a virtio console.
    ...(spec.console === 'ttyS0' ? ['-serial', 'chardev:con'] : []),
    '-device',
    'virtio-serial-device',
    ...(spec.console === 'hvc0' ? ['-device', 'virtconsole,chardev=con'] : []),
    // The guest agent's port, by the name qemu-guest-agent looks for (its udev rule links
    // /dev/virtio-ports/org.qemu.guest_agent.0): `dev exec`, readiness, `dev down`.
    '-chardev',
    `socket,id=agent,path=${v(spec.state.agentSocket)},server=on,wait=off`,
    '-device',
    'virtserialport,chardev=agent,name=org.qemu.guest_agent.0',
    // What -qmp unix:PATH,server=on,wait=off expands to, spelled out so the
    // path goes through the same escaping as every other option value.
    '-chardev',
    `socket,id=qmp,path=${v(spec.state.qmpSocket)},server=on,wait=off`,
    '-mon',
    'chardev=qmp,mode=control',
  ];
  if (spec.network !== 'none') {
    args.push(
      '-netdev',
      [
        'user,id=net0',
        // restrict=on: libslirp lets nothing out, the host's loopback included; forwards still come in.
        ...(spec.network === 'restricted' ? ['restrict=on'] : []),
        ...spec.ports.map((p) => `hostfwd=tcp:${p.hostAddr}:${p.hostPort}-:${p.guestPort}`),
      ].join(','),
      '-device',
      'virtio-net-device,netdev=net0',
    );
  }
  const share = spec.share;
  if (share?.transport === '9p') {
    args.push(
      '-fsdev',
      `local,id=share,path=${v(share.hostPath)},security_model=none`,
      '-device',
      `virtio-9p-device,fsdev=share,mount_tag=${share.tag}`,
    );
  } else if (share?.transport === 'virtiofs') {
    // vhost-user needs guest memory shared with virtiofsd, and modern
    // virtio-mmio: with the legacy default the guest's mount "succeeds" and
    // then hangs on first access (VM-FACTS.md section 5).
    args.push(
      '-object',
      `memory-backend-memfd,id=mem,size=${spec.memoryMiB}M,share=on`,
      '-global',
      'virtio-mmio.force-legacy=false',
      '-chardev',
      `socket,id=share,path=${v(share.socket)}`,
      '-device',
      `vhost-user-fs-device,chardev=share,tag=${share.tag}`,
    );
  }
  args.push('-sandbox', QEMU_SANDBOX);
  if (o.runAs) args.push('-runas', `${o.runAs.uid}:${o.runAs.gid}`);
  args.push('-daemonize', '-pidfile', spec.state.pidFile);
  return args;
}
