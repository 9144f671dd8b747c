import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createConnection } from 'node:net';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { MvmError } from '../src/errors.js';
import {
  cmdlineParams,
  MAX_DISK_BYTES,
  MIN_DISK_BYTES,
  parseDiskSize,
  parseMemorySize,
  virtiofsdSocket,
  vmSpecFrom,
  type DevUpOptions,
  type HostFacts,
  type VmImage,
  type VmSpec,
} from '../src/core/vm-spec.js';
import { qcow2Geometry, QCOW2_HEADER_BYTES } from '../src/core/qcow2.js';
import { QEMU_BINARY, QEMU_RUNAS, qemuArgs, qemuOptValue } from '../src/vm/qemu-args.js';
import { cpuFlags, kvmVerdict, probeKvm, tscKhzFrom, type KvmFacts } from '../src/vm/kvm.js';

const IMAGE: VmImage = {
  version: '0.14.0',
  kernel: '/d/prebuilt/.objects/1-00/vmlinux',
  rootfs: '/d/prebuilt/.objects/1-00/rootfs.ext4',
  initrd: '/d/prebuilt/.objects/1-00/initrd',
};
const STATE = '/d/vms/dev';
const NO_KVM = { usable: false, reason: 'there is no /dev/kvm', fix: 'Enable it.' };
const HOST: HostFacts = {
  cpus: 4,
  memoryMiB: 8192,
  tscKhz: 2596140,
  kvm: NO_KVM,
  shareTransport: '9p',
};
const KVM_HOST: HostFacts = { ...HOST, kvm: { usable: true, reason: 'kvm_intel' } };

const TCG_CMDLINE =
  'console=ttyS0 root=/dev/vda rw init=/init reboot=t panic=-1 cryptomgr.notests quiet tsc_early_khz=2596140';

/** The devices every dev VM has, after the kernel line. */
const devices = (state = STATE, netdev = 'user,id=net0'): string[] => [
  '-blockdev',
  'driver=file,node-name=rootfs-file,filename=/proc/self/fd/4,read-only=on',
  '-blockdev',
  'driver=raw,node-name=rootfs,file=rootfs-file,read-only=on',
  '-blockdev',
  `driver=qcow2,node-name=root,file.driver=file,file.filename=${state}/overlay.qcow2,backing=rootfs`,
  '-device',
  'virtio-blk-device,drive=root',
  '-chardev',
  `socket,id=con,path=${state}/console.sock,server=on,wait=off,logfile=/proc/self/fd/6`,
  '-serial',
  'chardev:con',
  '-device',
  'virtio-serial-device',
  '-chardev',
  `socket,id=agent,path=${state}/agent.sock,server=on,wait=off`,
  '-device',
  'virtserialport,chardev=agent,name=org.qemu.guest_agent.0',
  '-chardev',
  `socket,id=qmp,path=${state}/qmp.sock,server=on,wait=off`,
  '-mon',
  'chardev=qmp,mode=control',
  '-netdev',
  netdev,
  '-device',
  'virtio-net-device,netdev=net0',
];

const spec = (options: DevUpOptions = {}, host: HostFacts = HOST) =>
  vmSpecFrom(IMAGE, options, host, STATE);

/** Splits a QEMU option string as QemuOpts does: `,` separates, `,,` is a literal comma. */
function qemuOpts(text: string): [string, string][] {
  const out: [string, string][] = [];
  let i = 0;
  while (i < text.length) {
    let item = '';
    for (; i < text.length; i++) {
      if (text[i] === ',' && text[i + 1] === ',') {
        item += ',';
        i++;
      } else if (text[i] === ',') break;
      else item += text[i];
    }
    i++;
    const eq = item.indexOf('=');
    out.push(eq === -1 ? [item, ''] : [item.slice(0, eq), item.slice(eq + 1)]);
  }
  return out;
}

/** Asserts the exact usage error: code, message, and the words the cause and fix must hold. */
function assertUsage(
  fn: () => unknown,
  message: string,
  cause: RegExp,
  fix: RegExp,
  code: MvmError['code'] = 'usage',
): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof MvmError, `not an MvmError: ${String(e)}`);
    assert.equal(e.code, code);
    assert.equal(e.message, message);
    assert.match(e.cause ?? '', cause);
    assert.match(e.fix, fix);
    return true;
  });
}

describe('VmSpec and its QEMU arguments (pure core)', () => {
  it('defaults: 2 vCPUs, 1 GiB, upstream command line plus the TCG settings, software emulation with a warning', () => {
    const s = spec();
    assert.equal(s.accel, 'tcg');
    assert.equal(s.cpus, 2);
    assert.equal(s.memoryMiB, 1024);
    assert.equal(s.cmdline, TCG_CMDLINE);
    assert.deepEqual(s.ports, []);
    assert.equal(s.share, undefined);
    assert.deepEqual(s.state, {
      dir: STATE,
      overlay: `${STATE}/overlay.qcow2`,
      consoleSocket: `${STATE}/console.sock`,
      consoleLog: `${STATE}/console.log`,
      agentSocket: `${STATE}/agent.sock`,
      qmpSocket: `${STATE}/qmp.sock`,
      pidFile: `${STATE}/qemu.pid`,
      dataDisk: `${STATE}/data.qcow2`,
      settings: `${STATE}/settings.json`,
    });
    assert.equal(s.diskBytes, undefined, 'no --disk: no size asked for');
    assert.deepEqual(s.warnings, [
      'KVM is not usable (there is no /dev/kvm): booting with software emulation (TCG), several times slower. Enable it. --accel tcg chooses emulation without this warning.',
    ]);
    assert.deepEqual(qemuArgs(s), [
      '-name',
      'mvm-dev',
      '-machine',
      'microvm,acpi=on',
      '-accel',
      'tcg',
      '-smp',
      '2',
      '-m',
      '1024M',
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-no-reboot',
      // The descriptors the preflight hashed (IMAGE_FDS), never a path in the store.
      '-kernel',
      '/proc/self/fd/3',
      '-initrd',
      '/proc/self/fd/5',
      '-append',
      TCG_CMDLINE,
      ...devices(),
      '-sandbox',
      'on,obsolete=deny,resourcecontrol=deny',
      '-daemonize',
      '-pidfile',
      `${STATE}/qemu.pid`,
    ]);
  });

  it('defaults are bounded by a small host', () => {
    const s = spec({}, { ...HOST, cpus: 1, memoryMiB: 300 });
    assert.equal(s.cpus, 1);
    assert.equal(s.memoryMiB, 150);
  });

  it('kvm: -accel kvm -cpu host, no tsc_early_khz, no warning; --accel tcg on a KVM host: tcg', () => {
    const k = spec({}, KVM_HOST);
    assert.equal(k.accel, 'kvm');
    assert.deepEqual(k.warnings, []);
    assert.equal(
      k.cmdline,
      'console=ttyS0 root=/dev/vda rw init=/init reboot=t panic=-1 cryptomgr.notests quiet',
    );
    const args = qemuArgs(k);
    assert.deepEqual(args.slice(4, 8), ['-accel', 'kvm', '-cpu', 'host']);
    assert.equal(args.filter((a) => a === '-accel').length, 1);
    assert.equal(spec({ accel: 'kvm' }, KVM_HOST).accel, 'kvm');

    const t = spec({ accel: 'tcg' }, KVM_HOST);
    assert.equal(t.accel, 'tcg');
    assert.deepEqual(t.warnings, []);
    assert.deepEqual(qemuArgs(t).slice(4, 7), ['-accel', 'tcg', '-smp']);
    assert.deepEqual(spec({ accel: 'tcg' }).warnings, [], 'an explicit tcg is not warned about');
  });

  it('ports, 9p share, append, cpus and memory; no initrd: no -initrd', () => {
    const s = vmSpecFrom(
      { version: '0.14.0', kernel: IMAGE.kernel, rootfs: IMAGE.rootfs },
      {
        cpus: '3',
        memory: '1.5G',
        ports: ['8080:80', '0.0.0.0:2222:22', '127.0.0.2:9000:80'],
        share: 'src',
        append: 'mvm=http loglevel=7',
        cwd: '/home/me/project',
      },
      HOST,
      STATE,
    );
    assert.deepEqual(s.ports, [
      { hostAddr: '127.0.0.1', hostPort: 8080, guestPort: 80 },
      { hostAddr: '0.0.0.0', hostPort: 2222, guestPort: 22 },
      { hostAddr: '127.0.0.2', hostPort: 9000, guestPort: 80 },
    ]);
    assert.deepEqual(s.share, {
      transport: '9p',
      hostPath: '/home/me/project/src',
      tag: 'workdir',
    });
    assert.deepEqual(s.warnings.slice(1), [
      '--port 0.0.0.0:2222:22: guest port 22 is reachable from other hosts at 0.0.0.0:2222, not only from this one.',
    ]);
    const cmdline = `${TCG_CMDLINE} mvm=http loglevel=7`;
    assert.deepEqual(qemuArgs(s), [
      '-name',
      'mvm-dev',
      '-machine',
      'microvm,acpi=on',
      '-accel',
      'tcg',
      '-smp',
      '3',
      '-m',
      '1536M',
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-no-reboot',
      '-kernel',
      '/proc/self/fd/3',
      '-append',
      cmdline,
      ...devices(
        STATE,
        'user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp:0.0.0.0:2222-:22,hostfwd=tcp:127.0.0.2:9000-:80',
      ),
      '-fsdev',
      'local,id=share,path=/home/me/project/src,security_model=none',
      '-device',
      'virtio-9p-device,fsdev=share,mount_tag=workdir',
      '-sandbox',
      'on,obsolete=deny,resourcecontrol=deny',
      '-daemonize',
      '-pidfile',
      `${STATE}/qemu.pid`,
    ]);
  });

  it('--network: user by default; restricted adds restrict=on and keeps the forwards; none has no network device', () => {
    const netdevOf = (args: readonly string[]) => {
      const at = args.indexOf('-netdev');
      return at === -1 ? undefined : args[at + 1];
    };
    assert.equal(spec().network, 'user');
    assert.equal(netdevOf(qemuArgs(spec())), 'user,id=net0');
    assert.equal(
      netdevOf(qemuArgs(spec({ network: 'user', ports: ['2222:22'] }))),
      'user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22',
    );
    const restricted = spec({ network: 'restricted', ports: ['2222:22'] });
    assert.equal(restricted.network, 'restricted');
    assert.equal(
      netdevOf(qemuArgs(restricted)),
      'user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22',
    );
    const none = qemuArgs(spec({ network: 'none' }));
    assert.equal(netdevOf(none), undefined);
    assert.ok(!none.includes('virtio-net-device,netdev=net0'), 'no network device');
    // Everything else is as with the default network.
    const withNet = qemuArgs(spec());
    const at = withNet.indexOf('-netdev');
    assert.deepEqual(none, [...withNet.slice(0, at), ...withNet.slice(at + 4)]);
  });

  it('a host that names no share transport gets virtiofs (the cloud kernel has no 9p)', () => {
    const unnamed: HostFacts = { cpus: 4, memoryMiB: 8192, tscKhz: 2596140, kvm: NO_KVM };
    assert.equal(spec({ share: '/srv/work' }, unnamed).share?.transport, 'virtiofs');
  });

  it('virtiofs share: shared memfd memory, modern virtio-mmio, the virtiofsd socket in its own directory under /run/mvmctl', () => {
    const s = spec({ share: '/srv/work', memory: '2G' }, { ...HOST, shareTransport: 'virtiofs' });
    assert.deepEqual(s.share, {
      transport: 'virtiofs',
      hostPath: '/srv/work',
      tag: 'workdir',
      socket: virtiofsdSocket(STATE),
    });
    // virtiofsd runs as the share's owner, who may not reach the state directory: its socket has
    // a directory of its own, one per state directory.
    assert.match(s.share?.socket ?? '', /^\/run\/mvmctl\/share-[0-9a-f]{16}\/virtiofsd\.sock$/);
    assert.notEqual(virtiofsdSocket('/other/vms/dev'), virtiofsdSocket(STATE));
    const args = qemuArgs(s);
    assert.equal(args[3], 'microvm,acpi=on,memory-backend=mem');
    assert.deepEqual(args.slice(-13), [
      '-object',
      'memory-backend-memfd,id=mem,size=2048M,share=on',
      '-global',
      'virtio-mmio.force-legacy=false',
      '-chardev',
      `socket,id=share,path=${virtiofsdSocket(STATE)}`,
      '-device',
      'vhost-user-fs-device,chardev=share,tag=workdir',
      '-sandbox',
      'on,obsolete=deny,resourcecontrol=deny',
      '-daemonize',
      '-pidfile',
      `${STATE}/qemu.pid`,
    ]);
  });

  it('the virtiofsd socket is comma-escaped in -chardev like every other path', () => {
    // Today the socket sits under /run/mvmctl with a hex name; the adapter must not rely on that.
    const s = spec({ share: '/srv/work' }, { ...HOST, shareTransport: 'virtiofs' });
    const socket = '/run/x,server=off,path=/etc/passwd/virtiofsd.sock';
    const hostile: VmSpec = { ...s, share: { ...s.share!, socket } as VmSpec['share'] };
    const args = qemuArgs(hostile);
    const chardev = args[args.lastIndexOf('-chardev') + 1]!;
    assert.equal(
      chardev,
      'socket,id=share,path=/run/x,,server=off,,path=/etc/passwd/virtiofsd.sock',
    );
    assert.deepEqual(qemuOpts(chardev), [
      ['socket', ''],
      ['id', 'share'],
      ['path', socket],
    ]);
  });

  it('as root, QEMU drops to nobody once set up (-runas), inside its seccomp sandbox', () => {
    const args = qemuArgs(spec({}), { runAs: QEMU_RUNAS });
    assert.deepEqual(args.slice(-7), [
      '-sandbox',
      'on,obsolete=deny,resourcecontrol=deny',
      '-runas',
      '65534:65534',
      '-daemonize',
      '-pidfile',
      `${STATE}/qemu.pid`,
    ]);
  });

  it('commas are doubled inside option strings and left alone where QEMU takes the value whole', () => {
    assert.equal(qemuOptValue('/a,b,,c'), '/a,,b,,,,c');
    const state = '/tmp/x,format=raw,file=/etc/shadow';
    const image: VmImage = {
      version: '0.14.0',
      kernel: '/k,1/vmlinux',
      rootfs: '/r,1/rootfs.ext4',
      initrd: '/i,1/initrd',
    };
    const s = vmSpecFrom(image, { share: '/s,readonly=on' }, HOST, state);
    const args = qemuArgs(s);
    const e = '/tmp/x,,format=raw,,file=/etc/shadow';
    // The image is handed over as descriptors: its paths reach QEMU nowhere.
    assert.deepEqual(args.slice(15, 19), [
      '-kernel',
      '/proc/self/fd/3',
      '-initrd',
      '/proc/self/fd/5',
    ]);
    for (const path of Object.values(image))
      assert.ok(!args.some((a) => a.includes(path.slice(0, 4))), path);
    assert.ok(
      args.includes(
        `driver=qcow2,node-name=root,file.driver=file,file.filename=${e}/overlay.qcow2,backing=rootfs`,
      ),
    );
    assert.ok(
      args.includes(
        `socket,id=con,path=${e}/console.sock,server=on,wait=off,logfile=/proc/self/fd/6`,
      ),
    );
    assert.ok(args.includes(`socket,id=agent,path=${e}/agent.sock,server=on,wait=off`));
    assert.ok(args.includes(`socket,id=qmp,path=${e}/qmp.sock,server=on,wait=off`));
    assert.ok(args.includes('local,id=share,path=/s,,readonly=on,security_model=none'));
    assert.deepEqual(args.slice(-2), ['-pidfile', `${state}/qemu.pid`]);
    // Read back the way QEMU's option parser reads them: the hostile paths stay values.
    const drive = qemuOpts(args[args.lastIndexOf('-blockdev') + 1]!);
    assert.deepEqual(drive, [
      ['driver', 'qcow2'],
      ['node-name', 'root'],
      ['file.driver', 'file'],
      ['file.filename', `${state}/overlay.qcow2`],
      ['backing', 'rootfs'],
    ]);
    const fsdev = qemuOpts(args[args.indexOf('-fsdev') + 1]!);
    assert.deepEqual(fsdev, [
      ['local', ''],
      ['id', 'share'],
      ['path', '/s,readonly=on'],
      ['security_model', 'none'],
    ]);
  });

  it('--append is split the way the kernel splits it', () => {
    assert.deepEqual(
      cmdlineParams(' a=1  "root=/dev/sda" b="x y" -- root=/x').map((p) => p.name),
      ['a', 'root', 'b'],
    );
  });

  it('memory sizes', () => {
    for (const [text, mib] of [
      ['512', 512],
      ['512M', 512],
      ['512m', 512],
      ['512MiB', 512],
      ['2G', 2048],
      ['2GiB', 2048],
      ['0.5G', 512],
      ['1.5G', 1536],
    ] as const)
      assert.equal(parseMemorySize(text), mib, text);
    for (const text of ['', 'G', '2T', '2K', '1.1G', '-1G', '2 G', '2B', '0x100', '1e3'])
      assert.equal(parseMemorySize(text), undefined, text);
  });
});

describe('VmSpec validation errors (usage, exit 2)', () => {
  it('--cpus', () => {
    const fix = /^Give --cpus a whole number from 1 to 4 \(this host's CPU count\)\.$/;
    assertUsage(
      () => spec({ cpus: '0' }),
      '--cpus 0: a VM needs at least one vCPU',
      /zero vCPUs/,
      fix,
    );
    assertUsage(
      () => spec({ cpus: '5' }),
      "--cpus 5 is more than this host's 4 CPUs",
      /contention/,
      fix,
    );
    for (const bad of ['two', '-1', '1.5', '', ' 2'])
      assertUsage(
        () => spec({ cpus: bad }),
        `--cpus ${JSON.stringify(bad)} is not a whole number`,
        /whole number/,
        fix,
      );
  });

  it('--memory', () => {
    const fix =
      /^Give --memory a size from 128M to 8192M \(this host's memory\), like 512M or 2G\.$/;
    assertUsage(
      () => spec({ memory: 'lots' }),
      '--memory "lots" is not a size',
      /whole number of MiB, with M or G/,
      fix,
    );
    assertUsage(
      () => spec({ memory: '64M' }),
      '--memory "64M" is too small: 64 MiB',
      /at least 128 MiB/,
      fix,
    );
    assertUsage(
      () => spec({ memory: '9G' }),
      '--memory "9G" is more than this host\'s 8192 MiB',
      /swap/,
      fix,
    );
  });

  it('--port', () => {
    const fix = /^Use --port HOST:GUEST or --port ADDR:HOST:GUEST, ports from 1 to 65535/;
    assertUsage(
      () => spec({ ports: ['8080'] }),
      '--port "8080" is not [ADDR:]HOST:GUEST',
      /host port and a guest port/,
      fix,
    );
    assertUsage(
      () => spec({ ports: ['::1:8080:80'] }),
      '--port "::1:8080:80" is not [ADDR:]HOST:GUEST',
      /host port/,
      fix,
    );
    for (const [value, side, text] of [
      ['0:80', 'host', '0'],
      ['65536:80', 'host', '65536'],
      ['8080:0', 'guest', '0'],
      ['8080:70000', 'guest', '70000'],
      ['http:80', 'host', 'http'],
      ['8080:', 'guest', ''],
    ] as const)
      assertUsage(
        () => spec({ ports: [value] }),
        `--port ${JSON.stringify(value)}: ${side} port ${JSON.stringify(text)} is not a port from 1 to 65535`,
        /1 to 65535/,
        fix,
      );
    // Anything after the four octets would reach QEMU's hostfwd option string.
    for (const addr of [
      'localhost',
      '256.0.0.1',
      '1.2.3',
      'a,b',
      '127.0.0.1,restrict=off',
      '127.0.0.1 ',
      '127.0.0.1.5',
    ])
      assertUsage(
        () => spec({ ports: [`${addr}:8080:80`] }),
        `--port ${JSON.stringify(`${addr}:8080:80`)}: ${JSON.stringify(addr)} is not an IPv4 address`,
        /IPv4/,
        fix,
      );
    assertUsage(
      () => spec({ ports: ['8080:80', '0.0.0.0:8080:22'] }),
      '--port "0.0.0.0:8080:22": host port 8080 is already forwarded by --port "8080:80"',
      /one forward only/,
      /^Give each --port a different host port\.$/,
    );
    // Two host ports to one guest port is fine.
    assert.equal(spec({ ports: ['8080:80', '8081:80'] }).ports.length, 2);
  });

  it('--console: ttyS0 (the default) is the ISA serial port, hvc0 a virtio console; nothing else', () => {
    const serial = spec();
    assert.equal(serial.console, 'ttyS0');
    const a = qemuArgs(serial);
    assert.equal(a[a.indexOf('-serial') + 1], 'chardev:con');
    assert.ok(!a.includes('virtconsole,chardev=con'));
    const v = spec({ console: 'hvc0' });
    assert.equal(v.console, 'hvc0');
    assert.match(v.cmdline, /^console=hvc0 root=\/dev\/vda rw init=\/init /);
    const b = qemuArgs(v);
    assert.ok(!b.includes('-serial'));
    // The virtio console and the agent's port share one virtio-serial device.
    assert.deepEqual(
      b.slice(b.indexOf('virtio-serial-device') - 1, b.indexOf('virtio-serial-device') + 3),
      ['-device', 'virtio-serial-device', '-device', 'virtconsole,chardev=con'],
    );
    assert.equal(b.filter((x) => x === 'virtio-serial-device').length, 1);
    assertUsage(
      () => spec({ console: 'ttyS1' }),
      '--console "ttyS1" is not one of ttyS0, hvc0',
      /^ttyS0: the serial port/,
      /^Use --console ttyS0 \(the default\) or --console hvc0\.$/,
    );
  });

  it('--append may not override root=, init=, rdinit= or console=, and must be one printable line', () => {
    const fix = /^Remove it from --append; dev up sets it\.$/;
    for (const [append, name, token, why] of [
      ['root=/dev/vdb', 'root', 'root=/dev/vdb', /copy-on-write overlay/],
      ['quiet "root=/dev/sda1"', 'root', 'root=/dev/sda1', /never written/],
      ['init=/bin/sh', 'init', 'init=/bin/sh', /guest agent/],
      ['rdinit=/bin/sh', 'rdinit', 'rdinit=/bin/sh', /initramfs/],
      ['console=ttyS0', 'console', 'console=ttyS0', /--console ttyS0 or --console hvc0/],
      ['console', 'console', 'console', /--console/],
    ] as const)
      assertUsage(
        () => spec({ append }),
        `--append may not set ${name}= (${JSON.stringify(token)})`,
        new RegExp(`^dev up sets ${name}= itself: .*${why.source}`),
        fix,
      );
    // After `--` the words are init's arguments, not the kernel's ("--" quoted is still `--`).
    assert.match(spec({ append: '-- root=/x' }).cmdline, / -- root=\/x$/);
    assert.match(spec({ append: '"--" root=/x' }).cmdline, / "--" root=\/x$/);
    // The kernel keeps quotes that do not open a parameter: --"" is a parameter, not the end.
    for (const [append, token] of [
      ['--"" rdinit=/x', 'rdinit=/x'],
      ['a"b" rdinit=/x', 'rdinit=/x'],
      ['x="a b" init=/x', 'init=/x'],
      ['"console=ttyS0 quiet"', 'console=ttyS0 quiet'],
    ] as const)
      assert.throws(
        () => spec({ append }),
        (e: unknown) =>
          e instanceof MvmError &&
          e.message.startsWith(`--append may not set `) &&
          e.message.endsWith(`(${JSON.stringify(token)})`),
        append,
      );
    assert.deepEqual(
      cmdlineParams('--"" a "b=c d" e="f g" "h"').map((p) => p.name),
      ['--""', 'a', 'b', 'e', 'h'],
    );
    // The kernel's isspace() splits at byte 0xA0, part of à in UTF-8: outside ASCII is refused.
    assertUsage(
      () => spec({ append: 'x\u00e0rdinit=/bin/sh' }),
      '--append "x\u00e0rdinit=/bin/sh" contains a character outside printable ASCII',
      /splits its command line on bytes/,
      /only printable ASCII/,
    );
    assertUsage(
      () => spec({ append: 'a\nroot=/dev/vdb' }),
      '--append "a\\\\nroot=/dev/vdb" contains a control character',
      /one line/,
      /control characters/,
    );
    assertUsage(
      () => spec({ append: 'x="y root=/dev/vdb' }),
      '--append "x=\\"y root=/dev/vdb" has an unbalanced double quote',
      /quoted/,
      /Close the quote/,
    );
    assertUsage(
      () => spec({ append: 'x'.repeat(2000) }),
      `--append makes the kernel command line ${TCG_CMDLINE.length + 2001} bytes long`,
      /at most 2047 bytes/,
      /^Shorten --append\.$/,
    );
  });

  it('--accel', () => {
    assertUsage(
      () => spec({ accel: 'hvf' }),
      '--accel "hvf" is not one of auto, kvm, tcg',
      /kvm \(hardware\)/,
      /^Use --accel auto, --accel kvm or --accel tcg\.$/,
    );
    assertUsage(
      () => spec({ accel: 'kvm' }),
      '--accel kvm: KVM is not usable on this host',
      /^there is no \/dev\/kvm$/,
      /^Enable it\. Or use --accel auto \(or tcg\) to boot with software emulation/,
    );
  });

  it('--network', () => {
    assertUsage(
      () => spec({ network: 'bridge' }),
      '--network "bridge" is not one of user, restricted, none',
      /restricted: nothing out/,
      /^Use --network user, --network restricted or --network none\.$/,
    );
    assertUsage(
      () => spec({ network: 'none', ports: ['2222:22'] }),
      '--port needs a network device, and --network none has none',
      /network device/,
      /--network restricted/,
    );
  });

  it('--share', () => {
    assertUsage(
      () => spec({ share: '' }),
      '--share "" is not a directory path',
      /non-empty/,
      /mount tag workdir/,
    );
  });

  it('a socket path too long to bind', () => {
    const state = `/${'d'.repeat(100)}`;
    assertUsage(
      () => vmSpecFrom(IMAGE, {}, HOST, state),
      `the VM's socket path is too long: ${JSON.stringify(`${state}/console.sock`)}`,
      /limited to 107 bytes and this one has 114/,
      /MVM_DATA_DIR/,
      'store',
    );
  });
});

describe('KVM probe', () => {
  const base: KvmFacts = { device: 'ok', modules: ['kvm', 'kvm_intel'], virtFlag: true };
  const verdicts: [Partial<KvmFacts>, boolean, RegExp][] = [
    [{}, true, /kvm_intel is loaded/],
    [{ modules: ['kvm', 'kvm_amd'] }, true, /kvm_amd is loaded/],
    [
      { modules: ['kvm', 'kvm_pvm'], virtFlag: false },
      false,
      /kvm_pvm .*cannot run a stock kernel/,
    ],
    [{ modules: ['kvm', 'kvm_intel', 'kvm_pvm'] }, false, /kvm_pvm/],
    [{ device: 'missing', modules: [] }, false, /^there is no \/dev\/kvm$/],
    [{ virtFlag: false }, false, /neither vmx nor svm/],
    [{ modules: ['kvm'] }, false, /neither kvm_intel nor kvm_amd is loaded/],
    [{ device: 'denied' }, false, /cannot open \/dev\/kvm read-write/],
  ];
  for (const [facts, usable, reason] of verdicts)
    it(`verdict for ${JSON.stringify(facts)}`, () => {
      const v = kvmVerdict({ ...base, ...facts });
      assert.equal(v.usable, usable);
      assert.match(v.reason, reason);
      if (!usable) assert.ok((v.fix ?? '').length > 0, 'a fix is offered');
      else assert.equal(v.fix, undefined);
    });

  it('cpuinfo parsing', () => {
    const text =
      'processor\t: 0\ncpu MHz\t\t: 2596.140\nflags\t\t: fpu vme svm sse\n\nprocessor\t: 1\n';
    assert.equal(tscKhzFrom(text), 2596140);
    assert.deepEqual(cpuFlags(text), ['fpu', 'vme', 'svm', 'sse']);
    assert.equal(tscKhzFrom('flags: x\n'), undefined);
  });

  const dir = mkdtempSync(join(tmpdir(), 'mvm-kvm-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('reads a host tree: device, modules and CPU flags', async () => {
    const sys = join(dir, 'module');
    mkdirSync(join(sys, 'kvm_intel'), { recursive: true });
    writeFileSync(join(dir, 'cpuinfo'), 'flags\t\t: fpu vmx\n');
    writeFileSync(join(dir, 'kvm'), '');
    const paths = { devKvm: join(dir, 'kvm'), sysModule: sys, cpuinfo: join(dir, 'cpuinfo') };
    assert.deepEqual(await probeKvm(paths), {
      usable: true,
      reason: '/dev/kvm is read-write for this user and kvm_intel is loaded',
    });
    const missing = await probeKvm({ ...paths, devKvm: join(dir, 'none') });
    assert.equal(missing.reason, 'there is no /dev/kvm');
    mkdirSync(join(sys, 'kvm_pvm'));
    assert.match((await probeKvm(paths)).reason, /kvm_pvm/);
  });

  it("this machine: /dev/kvm exists and opens, yet the verdict is 'not usable' because it is kvm_pvm", async (t) => {
    if (!existsSync('/sys/module/kvm_pvm'))
      return t.skip(
        'this host has no kvm_pvm module; the expectation is for the PVM hosts of this project',
      );
    const v = await probeKvm();
    assert.equal(v.usable, false);
    assert.match(
      v.reason,
      /^this host's KVM is kvm_pvm \(paravirtual nested KVM\), which cannot run a stock kernel/,
    );
    assert.match(v.fix ?? '', /kvm_intel or kvm_amd/);
  });
});

/** The first of `names` on the PATH, or undefined. */
function onPath(name: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '').split(':')) {
    const candidate = join(dir, name);
    if (dir !== '' && existsSync(candidate)) return candidate;
  }
  return undefined;
}

describe('the argument list against a real QEMU (paused with -S: parsed and set up, no guest code runs)', () => {
  const qemu = onPath(QEMU_BINARY);
  const qemuImg = onPath('qemu-img');
  const isRoot = process.getuid?.() === 0;
  const skip = !qemu || !qemuImg ? `${QEMU_BINARY} or qemu-img is not installed` : false;
  const dir = mkdtempSync(join(tmpdir(), 'mvm-qemu,'));
  let pid: number | undefined;
  after(() => {
    // Only the QEMU this test started, by the pid it wrote, and only if it still runs.
    if (pid !== undefined && processState(pid) !== undefined && processState(pid) !== 'Z')
      process.kill(pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it(
    'paths with commas reach QEMU intact: overlay, console socket and log, agent and QMP sockets, share, pid file',
    { skip },
    async () => {
      const state = join(dir, 'vms,format=raw');
      const image = join(dir, 'image,id=x');
      const share = join(dir, 'share,readonly=on');
      for (const d of [state, image, share]) mkdirSync(d, { recursive: true });
      // Never executed (-S): any file loads as a kernel.
      writeFileSync(join(image, 'vmlinux'), Buffer.alloc(65536));
      writeFileSync(join(image, 'rootfs.ext4'), Buffer.alloc(1 << 20));
      // The overlay's header names a decoy (as `qemu-img rebase -u` would make it): QEMU must
      // back it with the descriptor it is handed, never with the file the header names.
      const decoy = join(dir, 'decoy.raw');
      writeFileSync(decoy, Buffer.alloc(1 << 20, 0xff));
      execFileSync(qemuImg!, [
        'create',
        '-q',
        '-f',
        'qcow2',
        '-F',
        'raw',
        '-b',
        decoy,
        join(state, 'overlay.qcow2'),
      ]);
      const s = vmSpecFrom(
        { version: '0.14.0', kernel: join(image, 'vmlinux'), rootfs: join(image, 'rootfs.ext4') },
        { share, accel: 'tcg', memory: '128M', cpus: '1' },
        HOST,
        state,
      );
      // -daemonize: the foreground returns once the sockets listen and the pid file is written.
      const kernelFd = openSync(join(image, 'vmlinux'), 'r');
      const rootfsFd = openSync(join(image, 'rootfs.ext4'), 'r');
      // Where the console logs (dev up hands over a pipe to the log's keeper; a file does here).
      const logFd = openSync(s.state.consoleLog, 'w');
      try {
        execFileSync(qemu!, ['-S', ...qemuArgs(s, isRoot ? { runAs: QEMU_RUNAS } : {})], {
          stdio: ['ignore', 'pipe', 'pipe', kernelFd, rootfsFd, 'ignore', logFd],
        });
      } finally {
        closeSync(kernelFd);
        closeSync(rootfsFd);
        closeSync(logFd);
      }
      pid = Number(readFileSync(s.state.pidFile, 'utf8').trim());
      assert.ok(pid > 0);
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      assert.match(status, /^Seccomp:\t2$/m, 'the seccomp sandbox is on');
      if (isRoot) assert.match(status, /^Uid:\t65534\t65534\t65534\t65534$/m, 'no longer root');

      const qmp = await qmpSession(s.state.qmpSocket);
      const nodes = (await qmp.run('query-named-block-nodes')) as {
        'node-name': string;
        file: string;
        ro: boolean;
        backing_file?: string;
      }[];
      const node = (name: string) => nodes.find((n) => n['node-name'] === name);
      assert.equal(node('root')?.backing_file, '/proc/self/fd/4');
      assert.equal(node('rootfs')?.file, '/proc/self/fd/4');
      assert.equal(node('rootfs')?.ro, true, 'the verified rootfs is read-only');
      assert.equal(node('root')?.ro, false);
      // What QEMU has open: the rootfs it was handed and the overlay, never the decoy.
      const open = readdirSync(`/proc/${pid}/fd`).map((fd) => {
        try {
          return readlinkSync(`/proc/${pid}/fd/${fd}`);
        } catch {
          return '';
        }
      });
      assert.ok(open.includes(join(image, 'rootfs.ext4')), 'the rootfs descriptor');
      assert.ok(open.includes(s.state.overlay), 'the overlay');
      assert.ok(
        open.includes(s.state.consoleLog),
        'the console log, through the descriptor handed over',
      );
      assert.ok(!open.includes(decoy), 'the file the header names is never opened');
      const chardevs = (await qmp.run('query-chardev')) as { label: string; filename: string }[];
      assert.deepEqual(
        chardevs.map((c) => [c.label, c.filename.replace(/^disconnected:/, '')]).sort(),
        [
          ['agent', `unix:${s.state.agentSocket},server=on`],
          ['con', `unix:${s.state.consoleSocket},server=on`],
          ['qmp', `unix:${s.state.qmpSocket},server=on`],
        ],
      );
      const cmdline = (await qmp.run('qom-get', {
        path: '/machine',
        property: 'append',
      })) as string;
      assert.equal(cmdline, s.cmdline);
      await qmp.run('quit');
      await qmp.closed;
    },
  );
});

function processState(pid: number): string | undefined {
  try {
    return /\) (\S)/.exec(readFileSync(`/proc/${pid}/stat`, 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}

/** A minimal QMP client for this test: one command at a time, events skipped. */
async function qmpSession(path: string) {
  const socket = createConnection(path);
  const lines = createInterface({ input: socket })[Symbol.asyncIterator]();
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  const next = async (): Promise<Record<string, unknown>> => {
    for (;;) {
      const { value, done } = await lines.next();
      if (done) throw new Error('QMP closed');
      const msg = JSON.parse(value as string) as Record<string, unknown>;
      if (!('event' in msg)) return msg;
    }
  };
  await next(); // greeting
  const run = async (execute: string, args?: Record<string, unknown>): Promise<unknown> => {
    socket.write(`${JSON.stringify({ execute, ...(args ? { arguments: args } : {}) })}\n`);
    const reply = await next();
    if ('error' in reply) throw new Error(`${execute}: ${JSON.stringify(reply['error'])}`);
    return reply['return'];
  };
  await run('qmp_capabilities');
  return { run, closed };
}

describe('--disk: the data disk (pure core)', () => {
  it('sizes with binary units, a unit required, whole MiB, 16M to 16T', () => {
    assert.equal(spec({ disk: '8G' }).diskBytes, 8 * 2 ** 30);
    assert.equal(spec({ disk: '512M' }).diskBytes, 512 * 2 ** 20);
    assert.equal(spec({ disk: '1.5T' }).diskBytes, 1.5 * 2 ** 40);
    assert.equal(spec({ disk: '20GiB' }).diskBytes, 20 * 2 ** 30);
    assert.equal(parseDiskSize('16M'), MIN_DISK_BYTES);
    assert.equal(parseDiskSize('16T'), MAX_DISK_BYTES);
    for (const bad of ['8', '8K', '-1G', '1e3G', '8 G', '', 'G'])
      assertUsage(
        () => spec({ disk: bad }),
        `--disk ${JSON.stringify(bad)} is not a size`,
        /number with M, G or T/,
        /like 8G/,
      );
    assertUsage(
      () => spec({ disk: '15M' }),
      '--disk "15M" is smaller than 16M',
      /at least 16 MiB/,
      /at least 16M/,
    );
    assertUsage(
      () => spec({ disk: '17T' }),
      '--disk "17T" is larger than 16T',
      /at most 16 TiB/,
      /at most 16T/,
    );
  });

  it('attached as the second virtio disk after the root, opening no backing file its header names', () => {
    const s = { ...spec({ disk: '8G' }), dataDisk: `${STATE}/da,ta.qcow2` };
    const args = qemuArgs(s);
    const root = args.indexOf('virtio-blk-device,drive=root');
    assert.deepEqual(args.slice(root + 1, root + 5), [
      '-blockdev',
      `driver=qcow2,node-name=data,file.driver=file,file.filename=${STATE}/da,,ta.qcow2,backing=`,
      '-device',
      'virtio-blk-device,drive=data',
    ]);
    assert.ok(
      !qemuArgs(spec({ disk: '8G' })).includes('virtio-blk-device,drive=data'),
      'only once the shell made it',
    );
  });

  it('qcow2Geometry reads the virtual size and whether a backing file is named', () => {
    const h = Buffer.alloc(QCOW2_HEADER_BYTES);
    h.writeUInt32BE(0x514649fb, 0);
    h.writeUInt32BE(3, 4);
    h.writeBigUInt64BE(8n * 2n ** 30n, 24);
    assert.deepEqual(qcow2Geometry(h), { virtualBytes: 8 * 2 ** 30, hasBacking: false });
    h.writeBigUInt64BE(0x1000n, 8);
    assert.equal(qcow2Geometry(h).hasBacking, true);
  });
});
