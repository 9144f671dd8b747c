/**
 * Is KVM really usable? Not "does /dev/kvm exist": on these machines it exists,
 * opens, creates a VM and even runs real-mode guest code, yet it is kvm_pvm (a
 * paravirtual nested KVM) on which a stock kernel hangs silently or QEMU
 * aborts (`failed to set MSR 0x10a`). Every cheap ioctl probe and QEMU's own
 * `query-kvm` say yes there (VM-FACTS.md section 7). What tells the truth is
 * the host's own description: a hardware KVM module (kvm_intel or kvm_amd)
 * loaded, the CPU's vmx/svm flag, no kvm_pvm, and a /dev/kvm this user can
 * open read-write. That check costs about a millisecond and starts nothing.
 */
import { constants, promises as fs } from 'node:fs';
import { availableParallelism, totalmem } from 'node:os';
import { join } from 'node:path';
import type { HostFacts, KvmVerdict } from '../core/vm-spec.js';

/** Where the probe looks; tests point it at a host tree of their own. */
export interface KvmProbePaths {
  readonly devKvm: string;
  readonly sysModule: string;
  readonly cpuinfo: string;
}

export const HOST_PATHS: KvmProbePaths = {
  devKvm: '/dev/kvm',
  sysModule: '/sys/module',
  cpuinfo: '/proc/cpuinfo',
};

/** What the probe reads from the host, before any judgement. */
export interface KvmFacts {
  /** `ok` when /dev/kvm opens read-write. */
  readonly device: 'missing' | 'denied' | 'ok';
  /** The kvm modules loaded (names under /sys/module). */
  readonly modules: readonly string[];
  /** Whether the CPU flags include vmx or svm. */
  readonly virtFlag: boolean;
}

/** The verdict from the facts: pure, so every branch is tested. */
export function kvmVerdict(facts: KvmFacts): KvmVerdict {
  if (facts.modules.includes('kvm_pvm'))
    return {
      usable: false,
      reason:
        "this host's KVM is kvm_pvm (paravirtual nested KVM), which cannot run a stock kernel: /dev/kvm opens, but the guest kernel hangs or QEMU aborts",
      fix: `Run on a host with hardware virtualization (kvm_intel or kvm_amd), or a VM with nested virtualization enabled.`,
    };
  if (facts.device === 'missing')
    return {
      usable: false,
      reason: 'there is no /dev/kvm',
      fix: `Enable virtualization (VT-x/AMD-V) in the firmware, or nested virtualization for this VM, and load kvm_intel or kvm_amd.`,
    };
  if (!facts.virtFlag)
    return {
      usable: false,
      reason:
        'the CPU flags in /proc/cpuinfo show neither vmx nor svm, so /dev/kvm cannot run a hardware-virtualized guest',
      fix: `Enable virtualization (VT-x/AMD-V) in the firmware, or nested virtualization for this VM.`,
    };
  if (!facts.modules.includes('kvm_intel') && !facts.modules.includes('kvm_amd'))
    return {
      usable: false,
      reason: 'neither kvm_intel nor kvm_amd is loaded',
      fix: `Load the module for this CPU (modprobe kvm_intel or modprobe kvm_amd).`,
    };
  if (facts.device === 'denied')
    return {
      usable: false,
      reason: 'this user cannot open /dev/kvm read-write',
      fix: `Add this user to the group that owns /dev/kvm (usually kvm: sudo usermod -aG kvm $USER), then log in again.`,
    };
  const module = facts.modules.includes('kvm_intel') ? 'kvm_intel' : 'kvm_amd';
  return { usable: true, reason: `/dev/kvm is read-write for this user and ${module} is loaded` };
}

export async function kvmFacts(paths: KvmProbePaths = HOST_PATHS): Promise<KvmFacts> {
  let device: KvmFacts['device'] = 'ok';
  try {
    const handle = await fs.open(paths.devKvm, constants.O_RDWR);
    await handle.close();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    device = code === 'ENOENT' || code === 'ENODEV' || code === 'ENXIO' ? 'missing' : 'denied';
  }
  const modules: string[] = [];
  for (const name of ['kvm', 'kvm_intel', 'kvm_amd', 'kvm_pvm']) {
    try {
      await fs.access(join(paths.sysModule, name));
      modules.push(name);
    } catch {
      // not loaded
    }
  }
  const cpuinfo = await fs.readFile(paths.cpuinfo, 'utf8').catch(() => '');
  return { device, modules, virtFlag: cpuFlags(cpuinfo).some((f) => f === 'vmx' || f === 'svm') };
}

export async function probeKvm(paths: KvmProbePaths = HOST_PATHS): Promise<KvmVerdict> {
  return kvmVerdict(await kvmFacts(paths));
}

/** The first processor's `flags` line of /proc/cpuinfo. */
export function cpuFlags(cpuinfo: string): string[] {
  const line = /^flags\s*:(.*)$/m.exec(cpuinfo);
  return line ? line[1]!.trim().split(/\s+/) : [];
}

/** The first processor's `cpu MHz` as whole kHz, for the guest's `tsc_early_khz`. */
export function tscKhzFrom(cpuinfo: string): number | undefined {
  const line = /^cpu MHz\s*:\s*([0-9]+(?:\.[0-9]+)?)\s*$/m.exec(cpuinfo);
  if (!line) return undefined;
  const khz = Math.round(Number(line[1]) * 1000);
  return khz > 0 ? khz : undefined;
}

/** Everything `vmSpecFrom` needs to know about this host. */
export async function probeHost(paths: KvmProbePaths = HOST_PATHS): Promise<HostFacts> {
  const cpuinfo = await fs.readFile(paths.cpuinfo, 'utf8').catch(() => '');
  const tscKhz = tscKhzFrom(cpuinfo);
  return {
    cpus: availableParallelism(),
    memoryMiB: Math.floor(totalmem() / (1024 * 1024)),
    ...(tscKhz !== undefined ? { tscKhz } : {}),
    kvm: await probeKvm(paths),
  };
}
