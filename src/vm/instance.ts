/**
 * The dev VM's lifecycle (SPEC.md section 8): `up`, `down`, `status`, `logs`.
 * The state directory is the single source of truth (src/vm/state.ts); QEMU
 * is started from a `VmSpec` (src/core/vm-spec.ts) through the one argv
 * adapter (src/vm/qemu-args.ts) and controlled only over QMP
 * (src/vm/qmp.ts) or, last, SIGKILL — each only after confirming the pid and
 * its start time are still the VM's.
 */
import { spawn } from 'node:child_process';
import { constants, promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config.js';
import { qcow2Geometry, qcow2HeaderProblem, QCOW2_HEADER_BYTES } from '../core/qcow2.js';
import { vmSpecFrom, type DevUpOptions, type HostFacts, type VmSpec } from '../core/vm-spec.js';
import { isMvmError, MvmError } from '../errors.js';
import { withLock } from '../io/lock.js';
import { ensurePrivateDir } from '../io/secure-dir.js';
import { audit } from '../audit/record.js';
import type { LoadedTrustedRoot } from '../trust/trusted-root.js';
import { GuestAgent } from './agent.js';
import { ConsoleWatch, kernelPanic, lastConsoleLines } from './console-log.js';
import { probeHost } from './kvm.js';
import { imageInstalled, preflightDevImage, type BootableImage } from './preflight.js';
import { qmpExecute } from './qmp.js';
import { CONSOLE_LOG_FD, IMAGE_FDS, QEMU_BINARY, QEMU_RUNAS, qemuArgs } from './qemu-args.js';
import { rotatedLog, startConsoleKeeper } from './console-keeper.js';
import {
  findVirtiofsd,
  shareDirectory,
  shareOwner,
  startVirtiofsd,
  stopVirtiofsd,
  type ShareOwner,
} from './virtiofsd.js';
import {
  cleanVmState,
  devVmDir,
  isSameProcess,
  LOCK_FILE,
  OVERLAY_INFO_FILE,
  probeProcess,
  readSettings,
  readVmState,
  statePaths,
  writePrivateJson,
  writeSettings,
  writeVmState,
  type RememberedSettings,
  type VmLiveness,
  type VmState,
} from './state.js';

/** SPEC.md section 8's default ready line. */
export const DEFAULT_READY_LINE = 'mvm: ready';
/**
 * The console lines that mean ready by default: ours, and the one upstream's
 * minimal init writes once its services and agent are started
 * (nix/lib/minimal-init/lib/07-services-and-agent.sh.in).
 */
export const DEFAULT_READY_LINES = [DEFAULT_READY_LINE, '[init] all services started'] as const;
/**
 * How often the readiness probe asks the guest agent while it boots: what is
 * asked before the agent opens its port is lost, so this bounds how late an
 * agent that has started is noticed. Any earlier probe's answer counts too.
 */
const AGENT_PROBE_MS = 250;
/** How long dev down waits for a running agent's ping before it goes on to ACPI. */
const AGENT_PING_MS = 1500;
/** Upstream waits 60 s for its guest agent; software emulation on a loaded host needs about as long. */
export const DEFAULT_UP_TIMEOUT_SECONDS = 60;
export const DEFAULT_DOWN_TIMEOUT_SECONDS = 10;
/** How many console lines a readiness failure shows. */
export const FAILURE_CONSOLE_LINES = 15;
/** How far back a boot failure looks for a kernel panic's line. */
const PANIC_SEARCH_LINES = 400;
const POLL_MS = 20;
/** How long down waits for the console log's keeper to write the rest of the pipe and end. */
const KEEPER_EXIT_MS = 5000;

/** Readiness, as named stages, each with what its failure most likely means. */
export const UP_STAGES = {
  'hypervisor started': 'QEMU did not start or exited at once; its error output is above.',
  'kernel booted':
    'nothing appeared on the guest console and no guest agent answered: the kernel did not get as far as its console driver. Under software emulation a loaded host can be much slower: raise --timeout. Otherwise check that the kernel has a PVH entry (an uncompressed vmlinux, or a bzImage of Linux 5.0 or later) and, with --console hvc0, that the kernel or initrd has virtio_console.',
  ready:
    "the guest console shows output but the VM did not become ready: the image's init started no guest agent and printed no ready line, or prints another line (--ready-line). The console lines are above; mvmctl dev logs shows the whole log.",
} as const;

/** What `dev up` waits for: the guest agent answering, and/or one of these console lines. */
export interface Readiness {
  readonly agent: boolean;
  readonly lines: readonly string[];
}

/** `--ready-line TEXT` waits for that line only; the default is the agent or a default line. */
export const readinessFor = (readyLine: string | undefined): Readiness =>
  readyLine !== undefined
    ? { agent: false, lines: [readyLine] }
    : { agent: true, lines: DEFAULT_READY_LINES };

/** "the guest agent answering, or the line "mvm: ready" or ...": for messages. */
export function describeReadiness(r: Readiness): string {
  const lines = r.lines.map((l) => JSON.stringify(l)).join(' or ');
  return r.agent
    ? `the guest agent answering, or the console line ${lines}`
    : `the console line ${lines}`;
}
export type UpStage = keyof typeof UP_STAGES;

export type UpEvent =
  | { readonly kind: 'stage'; readonly stage: UpStage; readonly detail: string }
  | { readonly kind: 'console-tail'; readonly path: string; readonly lines: readonly string[] }
  | { readonly kind: 'note'; readonly text: string };

export interface UpOptions extends DevUpOptions {
  readonly fresh?: boolean;
  readonly readyLine?: string;
  readonly timeoutSeconds?: number;
  readonly noWait?: boolean;
}

export interface UpContext {
  readonly config: Config;
  readonly trustedRoot: LoadedTrustedRoot;
  readonly now: () => Date;
  readonly warn: (message: string) => void;
  readonly report: (e: UpEvent) => void;
  /** Default: this host (tests of the pure parts pass their own). */
  readonly host?: HostFacts;
  /**
   * Installs this mvmctl's image when none is (dev pull), after the flags
   * checked out and before the boot; absent when offline, so nothing is fetched.
   */
  readonly pullIfMissing?: () => Promise<void>;
}

export interface UpResult {
  readonly alreadyRunning: boolean;
  readonly ready: boolean;
  readonly state: VmState;
}

const vmError = (message: string, cause: string, fix: string, underlying?: unknown): MvmError =>
  new MvmError('internal', message, {
    cause,
    fix,
    ...(underlying !== undefined ? { underlying } : {}),
  });

/** Runs `fn` holding the dev VM's lock: one `up` or `down` at a time, so two `up`s start one VM. */
async function withVmLock<T>(config: Config, waitMs: number, fn: () => Promise<T>): Promise<T> {
  const dir = devVmDir(config);
  await ensurePrivateDir(dir, config.dataDir);
  return withLock(join(dir, LOCK_FILE), 'the dev VM', fn, { timeoutMs: waitMs });
}

/** `mvmctl dev up`: the steps of SPEC.md section 8 in order. */
export async function devUp(opts: UpOptions, ctx: UpContext): Promise<UpResult> {
  const timeoutS = opts.timeoutSeconds ?? DEFAULT_UP_TIMEOUT_SECONDS;
  const readiness = readinessFor(opts.readyLine);
  // --share is served by virtiofsd, vmSpecFrom's default: the Debian cloud kernel has no 9p at all.
  const host: HostFacts = ctx.host ?? (await probeHost());
  // --cpus, --memory and --disk given once hold for the next dev up (each flag overrides its own).
  const remembered = await readSettings(ctx.config, ctx.warn);
  const reused = (['cpus', 'memory', 'disk'] as const).filter(
    (k) => opts[k] === undefined && remembered[k] !== undefined,
  );
  opts = { ...opts, ...Object.fromEntries(reused.map((k) => [k, remembered[k]])) };
  // The flags are checked before anything is hashed or started (placeholder image paths).
  const flags = withRemembered(reused, opts, () =>
    vmSpecFrom({ version: '0', kernel: '/k', rootfs: '/r' }, opts, host, devVmDir(ctx.config)),
  );
  if (reused.length > 0)
    ctx.report({
      kind: 'note',
      text: `using the settings of an earlier dev up: ${reused.map((k) => `--${k} ${opts[k]}`).join(', ')} (give the flag to change one)`,
    });
  // The shared directory and virtiofsd (present, runnable by this user) before anything starts.
  let share: ShareServer | undefined;
  if (flags.share !== undefined) {
    const realPath = await shareDirectory(flags.share.hostPath);
    const binary = await findVirtiofsd();
    share = { realPath, binary, owner: await shareOwner(realPath) };
  }
  if (ctx.pullIfMissing && !(await imageInstalled(ctx.config))) await ctx.pullIfMissing();
  // A concurrent up waits while this one boots, then finds the VM running.
  return withVmLock(ctx.config, (timeoutS + 60) * 1000, async () => {
    const current = await readVmState(ctx.config);
    if (current.liveness === 'running')
      return { alreadyRunning: true, ready: true, state: current.state! };
    if (current.liveness === 'stale') {
      ctx.warn(`cleaned up a stale dev VM state: ${current.staleReason ?? 'QEMU is gone'}`);
      await stopShare(current.state);
      await cleanVmState(ctx.config);
    }
    let image: BootableImage | undefined;
    let spec: VmSpec | undefined;
    try {
      image = await preflightDevImage({
        config: ctx.config,
        trustedRoot: ctx.trustedRoot,
        now: ctx.now,
        warn: ctx.warn,
      });
      spec = vmSpecFrom(image, opts, host, devVmDir(ctx.config));
      for (const w of spec.warnings) ctx.warn(w);
      const result = await boot(
        spec,
        image,
        { ...opts, readiness, timeoutSeconds: timeoutS },
        ctx,
        share,
      );
      await recordUp(ctx, image, spec, undefined);
      const settings: RememberedSettings = {
        ...(opts.cpus !== undefined ? { cpus: opts.cpus } : {}),
        ...(opts.memory !== undefined ? { memory: opts.memory } : {}),
        ...(opts.disk !== undefined ? { disk: opts.disk } : {}),
      };
      if (JSON.stringify(settings) !== JSON.stringify(remembered))
        await writeSettings(ctx.config, settings);
      return result;
    } catch (e) {
      await recordUp(ctx, image, spec, e);
      throw e;
    } finally {
      // QEMU holds its own copies of the descriptors it boots; these are the preflight's.
      await image?.opened.close();
    }
  });
}

/** A flag value taken from the remembered settings that no longer fits says where it came from. */
function withRemembered<T>(reused: readonly string[], opts: DevUpOptions, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    const key = reused.find((k) => isMvmError(e) && e.message.startsWith(`--${k} `));
    if (key === undefined || !isMvmError(e)) throw e;
    throw new MvmError(e.code, e.message, {
      cause: `${e.cause ?? ''}${e.cause ? '; ' : ''}--${key} ${String(opts[key as keyof DevUpOptions])} was remembered from an earlier dev up`,
      fix: `${e.fix ?? ''} Give --${key} to replace the remembered value.`.trim(),
    });
  }
}

/**
 * One audit record per boot attempt that got past the lock (SPEC.md section 8
 * step 8). A failed one carries its error code, so a store changed after
 * import counts as `dev_image_verify_digest_mismatch_total` and a recall as
 * `dev_image_verify_revoked_total`, exactly once (metricsFrom derives
 * counters from the records). No duration: the histogram is the import's.
 */
async function recordUp(
  ctx: UpContext,
  image: BootableImage | undefined,
  spec: VmSpec | undefined,
  error: unknown,
): Promise<void> {
  const r = image?.receipt;
  const digests = r
    ? `kernel ${r.artifacts.kernel.sha256}, rootfs ${r.artifacts.rootfs.sha256}${r.artifacts.initrd ? `, initrd ${r.artifacts.initrd.sha256}` : ''}`
    : undefined;
  const what = [spec ? `accel ${spec.accel}` : undefined, digests].filter(Boolean).join('; ');
  const err = isMvmError(error) ? error : undefined;
  await audit(
    ctx.config,
    {
      event: 'dev.up',
      outcome: error === undefined ? 'ok' : 'failed',
      ...(error !== undefined ? { code: err?.code ?? 'internal' } : {}),
      ...(error !== undefined
        ? { message: `${err ? err.message : String(error)}${what ? ` (${what})` : ''}` }
        : what
          ? { message: `booted: ${what}` }
          : {}),
      ...(image ? { version: image.version } : {}),
      ...(r ? { arch: r.arch, variant: r.variant, manifestSha256: r.manifestSha256 } : {}),
    },
    ctx.now(),
  );
}

/** `--share`: the directory virtiofsd serves (symlinks resolved) and the virtiofsd binary. */
interface ShareServer {
  readonly realPath: string;
  readonly binary: string;
  /** virtiofsd runs as the directory's owner, never as root. */
  readonly owner: ShareOwner;
}

/** Stops the virtiofsd a state records, if it is still that process (pid, start time, socket). */
/**
 * Waits for the console log's keeper to finish (it ends on its own once QEMU
 * is gone and it has written the rest of the pipe); one that is still there
 * after a few seconds is killed: only the recorded process, by its start time.
 */
async function endConsoleKeeper(keeper: VmState['consoleKeeper']): Promise<void> {
  if (keeper === undefined || !Number.isSafeInteger(keeper.pid) || keeper.pid <= 1) return;
  const until = Date.now() + KEEPER_EXIT_MS;
  while (await isSameProcess(keeper.pid, keeper.startTime)) {
    if (Date.now() > until) {
      try {
        process.kill(keeper.pid, 'SIGKILL');
      } catch {
        // it ended just now
      }
      return;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function stopShare(state: VmState | undefined): Promise<void> {
  const share = state?.share;
  if (
    share?.virtiofsd === undefined ||
    !Number.isSafeInteger(share.virtiofsd.pid) ||
    share.virtiofsd.pid <= 1 ||
    typeof share.virtiofsd.startTime !== 'string' ||
    typeof share.socket !== 'string'
  )
    return;
  await stopVirtiofsd(share.virtiofsd, share.socket);
}

async function boot(
  spec: VmSpec,
  image: BootableImage,
  opts: UpOptions & { readiness: Readiness; timeoutSeconds: number },
  ctx: UpContext,
  share: ShareServer | undefined,
): Promise<UpResult> {
  const deadline = Date.now() + opts.timeoutSeconds * 1000;
  const p = spec.state;
  const fsShare = spec.share?.transport === 'virtiofs' ? spec.share : undefined;
  if (fsShare === undefined || share === undefined) return bootQemu(spec, image, opts, ctx);
  const virtiofsd = await startVirtiofsd(
    share.binary,
    share.realPath,
    fsShare.socket,
    p.dir,
    deadline,
    share.owner,
  );
  const recorded: VmState['share'] = {
    transport: 'virtiofs',
    hostPath: fsShare.hostPath,
    realPath: share.realPath,
    tag: fsShare.tag,
    socket: fsShare.socket,
    virtiofsd,
  };
  try {
    return await bootQemu(spec, image, opts, ctx, recorded);
  } catch (e) {
    // A boot that failed or timed out leaves no virtiofsd behind (QEMU is already stopped).
    await stopVirtiofsd(virtiofsd, fsShare.socket).catch(() => undefined);
    throw e;
  }
}

async function bootQemu(
  spec: VmSpec,
  image: BootableImage,
  opts: UpOptions & { readiness: Readiness; timeoutSeconds: number },
  ctx: UpContext,
  share?: VmState['share'],
): Promise<UpResult> {
  const deadline = Date.now() + opts.timeoutSeconds * 1000;
  const p = spec.state;
  await prepareOverlay(spec, image, opts.fresh === true, ctx.warn);
  const dataDisk = await prepareDataDisk(spec, ctx);
  if (dataDisk !== undefined) spec = { ...spec, dataDisk };
  // QEMU would create the log 0644 (0666 less the umask): the guest console is private.
  const log = await fs.open(
    p.consoleLog,
    constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW,
    0o600,
  );
  await log.chmod(0o600);
  await log.close();
  for (const f of [
    p.pidFile,
    p.consoleSocket,
    p.qmpSocket,
    p.agentSocket,
    rotatedLog(p.consoleLog),
  ])
    await fs.rm(f, { force: true });

  // QEMU logs into a pipe; the keeper at its other end bounds what reaches the disk.
  const keeper = await startConsoleKeeper(p.dir, p.consoleLog, ctx.config.consoleLogMaxBytes);
  const keeperProbe = await probeProcess(keeper.pid);
  const consoleKeeper =
    keeperProbe.state === 'alive'
      ? { pid: keeper.pid, startTime: keeperProbe.startTime }
      : undefined;
  let pid: number;
  try {
    pid = await startQemu(spec, image, deadline, keeper.fd);
  } catch (e) {
    keeper.close();
    await endConsoleKeeper(consoleKeeper);
    throw e;
  }
  // QEMU holds its own copy; once it exits the keeper reads the end of the pipe and stops.
  keeper.close();
  const started = await probeProcess(pid);
  if (started.state !== 'alive')
    throw await bootFailure(
      ctx,
      spec,
      'hypervisor started',
      'QEMU exited right after it started',
      opts.readiness,
      { consoleKeeper },
    );
  const state: VmState = {
    schema: 1,
    pid,
    pidStartTime: started.startTime,
    version: spec.version,
    accel: spec.accel,
    cpus: spec.cpus,
    memoryMiB: spec.memoryMiB,
    cmdline: spec.cmdline,
    ports: spec.ports,
    network: spec.network,
    digests: {
      kernel: image.receipt.artifacts.kernel.sha256,
      rootfs: image.receipt.artifacts.rootfs.sha256,
      ...(image.receipt.artifacts.initrd ? { initrd: image.receipt.artifacts.initrd.sha256 } : {}),
    },
    manifestSha256: image.receipt.manifestSha256,
    ...(share ? { share } : {}),
    ...(consoleKeeper ? { consoleKeeper } : {}),
    atRest: image.receipt.bypassed?.includes('hash') ? 'skipped' : 'ok',
    paths: {
      consoleSocket: p.consoleSocket,
      consoleLog: p.consoleLog,
      qmpSocket: p.qmpSocket,
      agentSocket: p.agentSocket,
      pidFile: p.pidFile,
      overlay: p.overlay,
    },
    console: spec.console,
    startedAt: ctx.now().toISOString(),
    readiness: opts.readiness,
  };
  // Written before waiting: an interrupted up leaves a VM that status and down can find.
  await writeVmState(ctx.config, state);
  ctx.report({
    kind: 'stage',
    stage: 'hypervisor started',
    detail: `QEMU pid ${pid}, ${spec.accel}, ${spec.cpus} vCPU, ${spec.memoryMiB} MiB`,
  });
  if (opts.noWait) return { alreadyRunning: false, ready: false, state };

  const t0 = Date.now();
  const stages: Partial<Record<UpStage, number>> = { 'hypervisor started': 0 };
  const watch = new ConsoleWatch(p.consoleLog, opts.readiness.lines);
  const probe = opts.readiness.agent ? new AgentProbe(p.agentSocket) : undefined;
  let stage: UpStage = 'kernel booted';
  try {
    for (;;) {
      const seen = await watch.poll();
      const agentAnswered = probe?.answered === true;
      if (stage === 'kernel booted' && (seen.output || agentAnswered)) {
        stages['kernel booted'] = Date.now() - t0;
        ctx.report({
          kind: 'stage',
          stage,
          detail: seen.output
            ? `the guest console has output (${stageSeconds(stages['kernel booted'])})`
            : 'nothing on the console yet, but the guest agent answered',
        });
        stage = 'ready';
      }
      if (stage === 'ready' && (seen.ready !== undefined || agentAnswered)) {
        stages.ready = Date.now() - t0;
        const readyBy = agentAnswered ? 'agent' : 'line';
        const ready: VmState = { ...state, readyAt: ctx.now().toISOString(), readyBy, stages };
        await writeVmState(ctx.config, ready);
        ctx.report({
          kind: 'stage',
          stage,
          detail: `${agentAnswered ? 'the guest agent answered' : `ready line seen: ${seen.ready}`} (${stageSeconds(stages.ready)})`,
        });
        return { alreadyRunning: false, ready: true, state: ready };
      }
      if (!(await isSameProcess(pid, started.startTime)))
        throw await bootFailure(
          ctx,
          spec,
          stage,
          `QEMU (pid ${pid}) exited before stage "${stage}"`,
          opts.readiness,
          { consoleKeeper, exited: true },
        );
      if (Date.now() > deadline)
        throw await bootFailure(
          ctx,
          spec,
          stage,
          `stage "${stage}" did not complete within ${opts.timeoutSeconds} s`,
          opts.readiness,
          { pid, startTime: started.startTime, consoleKeeper },
        );
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  } finally {
    probe?.stop();
  }
}

/** A stage's time for people: `1.9 s`. */
export const stageSeconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

/**
 * Asks the guest agent, over and over during the boot, until it answers: a
 * guest-sync-delimited with a new id every AGENT_PROBE_MS, where an answer to
 * any earlier probe counts (GuestAgent.answersSync). What was sent before the
 * agent opened its port is answered late or never.
 */
class AgentProbe {
  answered = false;
  private stopped = false;
  private agent: GuestAgent | undefined;

  constructor(readonly path: string) {
    void this.run();
  }

  stop(): void {
    this.stopped = true;
    this.agent?.close();
  }

  private async run(): Promise<void> {
    while (!this.stopped && !this.answered) {
      try {
        this.agent ??= await GuestAgent.connect(this.path);
        if (await this.agent.answersSync(AGENT_PROBE_MS, () => this.stopped)) this.answered = true;
      } catch {
        // A channel that is gone, or could not be reached, is tried again shortly.
        if (this.agent?.isClosed) this.agent = undefined;
        if (this.agent === undefined) await new Promise((r) => setTimeout(r, 200));
      }
    }
    this.agent?.close();
  }
}

/**
 * A boot that did not complete: the last console lines are shown, QEMU is
 * stopped (never left running behind an error) and the state is removed.
 */
async function bootFailure(
  ctx: UpContext,
  spec: VmSpec,
  stage: UpStage,
  what: string,
  readiness: Readiness,
  vm: {
    pid?: number;
    startTime?: string;
    consoleKeeper?: VmState['consoleKeeper'];
    /** QEMU ended by itself after the boot began: the guest stopped it. */
    exited?: boolean;
  } = {},
): Promise<MvmError> {
  if (vm.pid !== undefined && vm.startTime !== undefined)
    await stopVm(spec.state.qmpSocket, vm.pid, vm.startTime, { graceful: false });
  // The log is complete once its keeper has read the pipe to its end.
  await endConsoleKeeper(vm.consoleKeeper);
  await cleanVmState(ctx.config);
  // The panic line is searched for further back than the lines shown: a register dump follows it.
  const tail = await lastConsoleLines(spec.state.consoleLog, PANIC_SEARCH_LINES);
  const lines = tail.slice(-FAILURE_CONSOLE_LINES);
  ctx.report({ kind: 'console-tail', path: spec.state.consoleLog, lines });
  const silent = lines.length === 0;
  if (vm.exited === true) {
    const silentHvc0 = silent && spec.console === 'hvc0';
    const panic = kernelPanic(tail);
    const cause = panic
      ? `the kernel panicked: "${panic.message}"${panic.initExit !== undefined ? ` (the image's init exited with status ${panic.initExit})` : ''}, and a panic ends the VM.`
      : GUEST_STOPPED;
    return vmError(
      `The dev VM did not boot: ${what}`,
      `${cause}${silentHvc0 ? ` ${SILENT_HVC0}` : ''}${silent ? ' The console printed nothing.' : ' The last console lines are above.'}`,
      silentHvc0
        ? 'Boot with --console ttyS0 (the default), the serial port whose driver every kernel has built in, or add virtio_console to the initrd.'
        : `Check the image against the console log ${spec.state.consoleLog} (mvmctl dev logs shows it whole).`,
    );
  }
  return vmError(
    `The dev VM did not boot: ${what}`,
    `${UP_STAGES[stage]} dev up waited for ${describeReadiness(readiness)} (console ${spec.console}).${silent ? ' The console printed nothing.' : ''}`,
    stage === 'ready'
      ? `Run qemu-guest-agent in the image (Debian and Ubuntu: apt-get install qemu-guest-agent), or give --ready-line with a line it prints when it is up; see the console log ${spec.state.consoleLog}. QEMU was stopped.`
      : `Raise --timeout, or check the image${spec.console === 'hvc0' ? ' (or try --console ttyS0)' : ''} and the console log ${spec.state.consoleLog}; QEMU was stopped.`,
  );
}

/** Why QEMU ends by itself during a boot (`-no-reboot` with `reboot=t panic=-1`). */
const GUEST_STOPPED =
  'the guest stopped the VM: a kernel panic (an init that exited, a root disk not found), a reboot or a power-off ends QEMU.';
/** What a stock initrd does on the virtio console, measured with Debian 12's. */
const SILENT_HVC0 =
  "Nothing reached hvc0: the virtio console needs virtio_console in the kernel or its initrd. Stock initrds (Debian's, Ubuntu's) lack it, and their init exits when it cannot open /dev/console.";

/** Starts QEMU detached (-daemonize): the foreground process exits once the VM runs, or with its error. */
async function startQemu(
  spec: VmSpec,
  image: BootableImage,
  deadline: number,
  consoleLog: number,
): Promise<number> {
  // The hashed descriptors, each at the number qemuArgs names for it (IMAGE_FDS).
  const stdio: ('ignore' | 'pipe' | number)[] = ['ignore', 'ignore', 'pipe'];
  stdio[IMAGE_FDS.kernel] = image.opened.kernel.fd;
  stdio[IMAGE_FDS.rootfs] = image.opened.rootfs.fd;
  stdio[IMAGE_FDS.initrd] = image.opened.initrd?.fd ?? 'ignore';
  stdio[CONSOLE_LOG_FD] = consoleLog;
  // As root, QEMU gives up root once the VM is set up (-runas): an escape is not host root.
  const runAs = process.getuid?.() === 0 ? { runAs: QEMU_RUNAS } : {};
  const child = spawn(QEMU_BINARY, qemuArgs(spec, runAs), { stdio });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => {
    if (stderr.length < 8192) stderr += c;
  });
  const outcome = await new Promise<{ code: number | null; error?: Error }>((resolve) => {
    const timer = setTimeout(
      () => {
        child.kill('SIGKILL');
        resolve({ code: null, error: new Error('QEMU did not finish starting in time') });
      },
      Math.max(1000, deadline - Date.now()),
    );
    child.once('error', (error) => {
      clearTimeout(timer);
      resolve({ code: null, error });
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code });
    });
  });
  if (outcome.error && (outcome.error as NodeJS.ErrnoException).code === 'ENOENT')
    throw vmError(
      `${QEMU_BINARY} was not found`,
      'dev up runs the VM under QEMU',
      'Install QEMU (Debian/Ubuntu: apt-get install qemu-system-x86 qemu-utils) and make sure it is on PATH.',
      outcome.error,
    );
  if (outcome.code !== 0) {
    const why = stderr.trim() || outcome.error?.message || `it exited with status ${outcome.code}`;
    throw vmError(
      'The dev VM did not boot: stage "hypervisor started" did not complete',
      `QEMU failed to start: ${why}`,
      `${UP_STAGES['hypervisor started']} Fix what QEMU reports, then run mvmctl dev up again.`,
    );
  }
  const text = await fs.readFile(spec.state.pidFile, 'utf8').catch(() => '');
  const pid = Number(text.trim());
  if (!Number.isSafeInteger(pid) || pid <= 1)
    throw vmError(
      'The dev VM did not boot: stage "hypervisor started" did not complete',
      `QEMU started but its pid file ${spec.state.pidFile} holds no pid (${JSON.stringify(text.slice(0, 40))})`,
      'Run mvmctl dev down, then mvmctl dev up again.',
    );
  return pid;
}

/**
 * The VM's root disk: a qcow2 overlay backed read-only by the installed
 * rootfs (the verified image is never written). It persists across down/up;
 * `--fresh` discards it, and one built on another image is replaced with a
 * note (its backing file is not the rootfs that was just verified).
 */
async function prepareOverlay(
  spec: VmSpec,
  image: BootableImage,
  fresh: boolean,
  warn: (m: string) => void,
): Promise<void> {
  const overlay = spec.state.overlay;
  const infoPath = join(spec.state.dir, OVERLAY_INFO_FILE);
  const exists = await fs
    .lstat(overlay)
    .then(() => true)
    .catch(() => false);
  const info = await fs
    .readFile(infoPath, 'utf8')
    .then((t) => JSON.parse(t) as { backing?: unknown; version?: unknown })
    .catch(() => undefined);
  if (exists && !fresh && info?.backing === image.rootfs) {
    await refuseForeignOverlay(overlay);
    return;
  }
  if (exists && !fresh)
    warn(
      `the VM's disk overlay was built on ${typeof info?.version === 'string' ? `the image of v${info.version}` : 'another image'}; it was replaced by a fresh one on v${image.version} (changes made in the guest are discarded)`,
    );
  await fs.rm(overlay, { force: true });
  await fs.rm(infoPath, { force: true });
  await runQemuImg(['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', image.rootfs, overlay]);
  await fs.chmod(overlay, 0o600);
  await writePrivateJson(infoPath, { backing: image.rootfs, version: image.version });
}

/**
 * An overlay kept from an earlier boot is opened by QEMU with the verified
 * rootfs as its backing node (qemuArgs' `backing=`), so the backing file its
 * header names does not matter; what else a header can make QEMU open or
 * refuse to run is checked here, and the boot refused (the guest's changes are
 * in it: discarding them is the operator's call).
 */
async function refuseForeignOverlay(overlay: string): Promise<void> {
  let problem: string | undefined;
  try {
    const header = await readQcow2Header(overlay);
    problem = header === undefined ? 'it is not a regular file' : qcow2HeaderProblem(header);
  } catch (e) {
    problem = `it cannot be read (${(e as Error).message})`;
  }
  if (problem === undefined) return;
  throw new MvmError('store', `The dev VM's disk overlay ${overlay} is not one dev up made`, {
    cause: `${problem}; nothing was booted`,
    fix: 'Run mvmctl dev up --fresh to replace it with a new overlay (the changes made in the guest are discarded), or move it away first to keep it.',
  });
}

/**
 * The data disk (`--disk`): /dev/vdb, a qcow2 in the state directory that
 * outlives the overlay (--fresh, dev down --reset). Created at the size asked
 * for, grown when a larger one is asked for, never shrunk; attached whenever
 * it exists. Its header is checked as the overlay's is, and it may name no
 * backing file. Returns the path to attach, or undefined for none.
 */
async function prepareDataDisk(spec: VmSpec, ctx: UpContext): Promise<string | undefined> {
  const path = spec.state.dataDisk;
  const wanted = spec.diskBytes;
  const current = await readDataDisk(path);
  if (current === undefined) {
    if (wanted === undefined) return undefined;
    await runQemuImg(['create', '-q', '-f', 'qcow2', path, String(wanted)], 'the data disk');
    await fs.chmod(path, 0o600);
    ctx.report({
      kind: 'note',
      text: `created the data disk ${path} (${gib(wanted)}): /dev/vdb in the guest, empty until a file system is made on it (mkfs.ext4 /dev/vdb)`,
    });
    return path;
  }
  if (wanted === undefined || wanted === current) return path;
  if (wanted < current)
    throw new MvmError(
      'usage',
      `--disk ${gib(wanted)} is smaller than the data disk's ${gib(current)}: a data disk grows, it never shrinks`,
      {
        cause:
          'shrinking would cut off the end of the file system on it, and whatever is stored there',
        fix: `Give --disk ${gib(current)} or more, or leave --disk out. To start over, mvmctl dev down --delete-disk deletes the disk and everything on it.`,
      },
    );
  await runQemuImg(['resize', '-q', '-f', 'qcow2', path, String(wanted)], 'the data disk');
  ctx.report({
    kind: 'note',
    text: `grew the data disk from ${gib(current)} to ${gib(wanted)}: grow its file system in the guest (resize2fs /dev/vdb)`,
  });
  return path;
}

/** The data disk's size, or undefined when there is none; refused when it is not one dev up made. */
export async function readDataDisk(path: string): Promise<number | undefined> {
  let header: Buffer | undefined;
  try {
    header = await readQcow2Header(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw foreignDataDisk(
      path,
      (e as NodeJS.ErrnoException).code === 'ELOOP'
        ? 'it is a symbolic link'
        : (e as Error).message,
    );
  }
  if (header === undefined) throw foreignDataDisk(path, 'it is not a regular file');
  const problem = qcow2HeaderProblem(header);
  if (problem !== undefined) throw foreignDataDisk(path, problem);
  const g = qcow2Geometry(header);
  if (g.hasBacking) throw foreignDataDisk(path, 'its header names a backing file');
  return g.virtualBytes;
}

/**
 * The first QCOW2_HEADER_BYTES of a disk image of the state directory, read
 * without following a link or blocking on a FIFO; undefined when it is not
 * a regular file. Open errors (ENOENT, ELOOP for a link) are the caller's.
 */
async function readQcow2Header(path: string): Promise<Buffer | undefined> {
  const handle = await fs.open(
    path,
    constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK,
  );
  try {
    if (!(await handle.stat()).isFile()) return undefined;
    const header = Buffer.alloc(QCOW2_HEADER_BYTES);
    const { bytesRead } = await handle.read(header, 0, header.length, 0);
    return header.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

function foreignDataDisk(path: string, problem: string): MvmError {
  return new MvmError('store', `The dev VM's data disk ${path} is not one dev up made`, {
    cause: `${problem}; nothing was booted`,
    fix: 'Move it away (it may hold data), or delete it with mvmctl dev down --delete-disk; the next dev up --disk SIZE makes a new one.',
  });
}

const gib = (bytes: number): string =>
  bytes % 2 ** 30 === 0 ? `${bytes / 2 ** 30}G` : `${Math.round(bytes / 2 ** 20)}M`;

function runQemuImg(args: string[], what = "the VM's disk overlay"): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('qemu-img', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(
        (e as NodeJS.ErrnoException).code === 'ENOENT'
          ? vmError(
              'qemu-img was not found',
              "dev up creates the VM's copy-on-write disk with qemu-img",
              'Install it (Debian/Ubuntu: apt-get install qemu-utils) and make sure it is on PATH.',
              e,
            )
          : e,
      );
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else
        reject(
          new MvmError('store', `Cannot ${args[0] === 'resize' ? 'grow' : 'create'} ${what}`, {
            cause: `qemu-img ${args.join(' ')} failed: ${stderr.trim() || `exit ${code}`}`,
            fix: 'Check free space and the permissions of the data directory.',
          }),
        );
    });
  });
}

/** Waits until the process is no longer the VM's (gone, a zombie, or another process). */
async function waitForExit(pid: number, startTime: string, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (!(await isSameProcess(pid, startTime))) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

export type StopMethod = 'agent' | 'powerdown' | 'quit' | 'kill';

/**
 * Asks the guest agent to power the guest off: only when it answers a ping
 * first (a VM without an agent goes straight to ACPI), and `guest-shutdown`
 * itself has no answer on success. Whether QEMU then exits decides.
 */
async function agentShutdown(agentSocket: string | undefined): Promise<void> {
  if (agentSocket === undefined) throw new Error('no agent channel');
  const agent = await GuestAgent.connect(agentSocket);
  try {
    await agent.call('guest-ping', undefined, AGENT_PING_MS);
    await agent.call('guest-shutdown', { mode: 'powerdown' }, 1000).catch(() => undefined);
  } finally {
    agent.close();
  }
}

/**
 * Stops the VM's QEMU: a shutdown through its guest agent and then an ACPI
 * power-down (graceful only, each given the timeout), then QMP quit, then
 * SIGKILL, each only after confirming that the pid is still the VM's own.
 */
async function stopVm(
  qmpSocket: string,
  pid: number,
  startTime: string,
  opts: { graceful: boolean; timeoutMs?: number; agentSocket?: string },
): Promise<StopMethod | undefined> {
  const graceful = opts.timeoutMs ?? 10_000;
  const steps: [StopMethod, number][] = [
    ...(opts.graceful && opts.agentSocket !== undefined
      ? [['agent', graceful] as [StopMethod, number]]
      : []),
    ...(opts.graceful ? [['powerdown', graceful] as [StopMethod, number]] : []),
    ['quit', 5_000],
    ['kill', 5_000],
  ];
  for (const [method, waitMs] of steps) {
    if (!(await isSameProcess(pid, startTime))) return undefined;
    try {
      if (method === 'kill') process.kill(pid, 'SIGKILL');
      else if (method === 'agent') await agentShutdown(opts.agentSocket);
      else await qmpExecute(qmpSocket, method === 'powerdown' ? 'system_powerdown' : 'quit');
    } catch {
      // No agent answering: on to ACPI at once.
      if (method === 'agent') continue;
      // QMP gone or closed mid-answer (quit closes it): whether the process exited decides.
    }
    if (await waitForExit(pid, startTime, waitMs)) return method;
  }
  throw vmError(
    `QEMU (pid ${pid}) did not exit, even after SIGKILL`,
    'the process may be stuck in the kernel (uninterruptible I/O)',
    `Check the process with ps -p ${pid}; run mvmctl dev down again once it is gone.`,
  );
}

export interface DownOptions {
  readonly reset?: boolean;
  /** Also delete the data disk (--disk) and forget its size: everything stored on it is lost. */
  readonly deleteDisk?: boolean;
  readonly timeoutSeconds?: number;
}

export interface DownResult {
  /** What was found: a running VM (now stopped), nothing, or a stale state (cleaned). */
  readonly was: VmLiveness;
  readonly method?: StopMethod;
  readonly staleReason?: string;
  readonly overlayRemoved: boolean;
  /** The data disk deleted by --delete-disk, with its size; absent when there was none. */
  readonly diskRemoved?: { readonly path: string; readonly bytes: number };
}

/** `mvmctl dev down`. */
export async function devDown(config: Config, opts: DownOptions = {}): Promise<DownResult> {
  const timeoutMs = (opts.timeoutSeconds ?? DEFAULT_DOWN_TIMEOUT_SECONDS) * 1000;
  return withVmLock(config, timeoutMs + 120_000, async () => {
    const current = await readVmState(config);
    let method: StopMethod | undefined;
    if (current.liveness === 'running') {
      const s = current.state!;
      method = await stopVm(s.paths.qmpSocket, s.pid, s.pidStartTime, {
        graceful: true,
        timeoutMs,
        ...(s.paths.agentSocket !== undefined ? { agentSocket: s.paths.agentSocket } : {}),
      });
    }
    // virtiofsd (--share) goes with its VM, running or stale, and only the recorded process.
    if (current.state) await stopShare(current.state);
    await endConsoleKeeper(current.state?.consoleKeeper);
    await cleanVmState(config, { overlay: opts.reset === true });
    let diskRemoved: DownResult['diskRemoved'];
    if (opts.deleteDisk === true) {
      const path = statePaths(config).dataDisk;
      // A data disk that is not one dev up made is deleted too: that is what was asked for.
      const bytes = await readDataDisk(path).catch(() => 0);
      if (bytes !== undefined) {
        await fs.rm(path, { force: true });
        diskRemoved = { path, bytes };
      }
      const { disk: _forgotten, ...rest } = await readSettings(config);
      void _forgotten;
      await writeSettings(config, rest);
    }
    return {
      was: current.liveness,
      ...(method ? { method } : {}),
      ...(current.staleReason ? { staleReason: current.staleReason } : {}),
      overlayRemoved: opts.reset === true,
      ...(diskRemoved ? { diskRemoved } : {}),
    };
  });
}

export interface VmStatus {
  readonly state: VmLiveness;
  readonly pid?: number;
  readonly version?: string;
  readonly accel?: string;
  readonly cpus?: number;
  readonly memory_mib?: number;
  readonly ports?: readonly { host: string; guest: number }[];
  readonly network?: string;
  readonly console_log: string;
  readonly started_at?: string;
  readonly ready_at?: string;
  /** `agent` (it answered) or `line` (a ready line appeared). */
  readonly ready_by?: string;
  /** ms after QEMU started at which each stage completed. */
  readonly stages_ms?: Readonly<Record<string, number>>;
  readonly console?: string;
  readonly uptime_seconds?: number;
  readonly digests?: VmState['digests'];
  readonly at_rest?: string;
  readonly overlay?: string;
  readonly overlay_bytes?: number;
  readonly stale_reason?: string;
  /** What the next dev up reuses: the --cpus, --memory and --disk given earlier. */
  readonly settings?: RememberedSettings;
  /** The data disk (/dev/vdb): its size in the guest and the bytes its file takes on the host. */
  readonly data_disk?: {
    readonly path: string;
    readonly size_bytes: number;
    readonly file_bytes: number;
  };
  readonly share?: { readonly host_path: string; readonly tag: string; readonly transport: string };
}

/** `mvmctl dev status`: a read of the state directory, nothing changed. */
export async function devStatus(config: Config, now: Date = new Date()): Promise<VmStatus> {
  const p = statePaths(config);
  const current = await readVmState(config);
  const overlayBytes = await fs
    .stat(p.overlay)
    .then((st) => st.blocks * 512)
    .catch(() => undefined);
  const s = current.state;
  const started = s ? Date.parse(s.startedAt) : NaN;
  const settings = await readSettings(config);
  const diskBytes = await readDataDisk(p.dataDisk).catch(() => undefined);
  const diskFileBytes = await fs
    .stat(p.dataDisk)
    .then((st) => st.blocks * 512)
    .catch(() => 0);
  return {
    state: current.liveness,
    ...(s
      ? {
          pid: s.pid,
          version: s.version,
          accel: s.accel,
          cpus: s.cpus,
          memory_mib: s.memoryMiB,
          ports: (s.ports ?? []).map((f) => ({
            host: `${f.hostAddr}:${f.hostPort}`,
            guest: f.guestPort,
          })),
          network: s.network ?? 'user',
          started_at: s.startedAt,
          ...(s.readyAt ? { ready_at: s.readyAt } : {}),
          ...(s.readyBy ? { ready_by: s.readyBy } : {}),
          ...(s.stages ? { stages_ms: s.stages } : {}),
          console: s.console ?? 'hvc0',
          digests: s.digests,
          at_rest: s.atRest,
          ...(s.share
            ? {
                share: {
                  host_path: s.share.hostPath,
                  tag: s.share.tag,
                  transport: s.share.transport,
                },
              }
            : {}),
        }
      : {}),
    ...(current.liveness === 'running' && Number.isFinite(started)
      ? { uptime_seconds: Math.max(0, Math.round((now.getTime() - started) / 1000)) }
      : {}),
    console_log: p.consoleLog,
    ...(overlayBytes !== undefined ? { overlay: p.overlay, overlay_bytes: overlayBytes } : {}),
    ...(current.staleReason ? { stale_reason: current.staleReason } : {}),
    ...(Object.keys(settings).length > 0 ? { settings } : {}),
    ...(diskBytes !== undefined
      ? { data_disk: { path: p.dataDisk, size_bytes: diskBytes, file_bytes: diskFileBytes } }
      : {}),
  };
}

/** `mvmctl dev logs`: the last lines of the console log, escaped. */
export async function devLogs(config: Config, lines: number): Promise<string[]> {
  return lastConsoleLines(statePaths(config).consoleLog, lines);
}
