/**
 * `mvmctl dev up | down | status | logs | console`: parse flags, call src/vm/instance.ts,
 * render human text or one JSON object. Nothing here decides anything about
 * the VM. Flags, help and exit codes: their rows of src/cli/spec.ts.
 */
import { homedir } from 'node:os';
import { configFrom, revocationsDir, type Config } from '../../config.js';
import { hostArch } from '../../core/manifest.js';
import { recallInForce } from '../../core/revocation.js';
import { summarizeRevocationCache } from '../../revocations/cache.js';
import { readRecallMemory } from '../../revocations/memory.js';
import { printable } from '../../core/printable.js';
import { ERROR_TABLE, MvmError } from '../../errors.js';
import { AgentChannel } from '../../vm/agent.js';
import { copySpec } from '../../core/copy-spec.js';
import { guestCopy, type CopyResult } from '../../vm/copy.js';
import { guestExec, MAX_STDIN_BYTES, stdinTooLarge } from '../../vm/exec.js';
import { progressBar } from '../progress.js';
import { whileInterruptible } from '../interrupt.js';
import { loadTrustedRoot } from '../../trust/trusted-root.js';
import {
  DEFAULT_DOWN_TIMEOUT_SECONDS,
  DEFAULT_UP_TIMEOUT_SECONDS,
  devDown,
  devLogs,
  devStatus,
  devUp,
  stageSeconds,
  type UpEvent,
  type VmStatus,
} from '../../vm/instance.js';
import {
  connectConsole,
  DEFAULT_IDLE_SECONDS,
  followConsoleLog,
  requireRunningVm,
  runConsole,
} from '../../vm/console.js';
import { readVmState, statePaths } from '../../vm/state.js';
import { MVMCTL_VERSION } from '../../version.js';
import { parseCommand } from '../args.js';
import { formatBytes, jsonLine, renderError, type Output } from '../render.js';

const usage = (message: string, fix: string): MvmError => new MvmError('usage', message, { fix });

function seconds(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!/^[0-9]+(\.[0-9]+)?$/.test(value) || !(n > 0) || n > 86_400)
    throw usage(
      `${flag} ${JSON.stringify(printable(value, 100))} is not a number of seconds`,
      `Give ${flag} a number of seconds greater than 0 (at most 86400).`,
    );
  return n;
}

const safe = (text: string): string =>
  text
    .split('\n')
    .map((l) => printable(l, 4096))
    .join('\n');

export async function vmCommand(
  sub: 'up' | 'down' | 'status' | 'logs' | 'console' | 'shell' | 'exec' | 'cp',
  args: string[],
  io: Output,
): Promise<number> {
  switch (sub) {
    case 'exec':
      return execCommand(args, io);
    case 'cp':
      return cpCommand(args, io);
    case 'up':
      return upCommand(args, io);
    case 'down':
      return downCommand(args, io);
    case 'status':
      return statusCommand(args, io);
    case 'logs':
      return logsCommand(args, io);
    case 'console':
    case 'shell':
      return consoleCommand(`dev ${sub}`, args, io);
  }
}

async function upCommand(args: string[], io: Output): Promise<number> {
  const { values } = parseCommand('dev up', args);
  const readyLine = values['ready-line'];
  if (readyLine !== undefined && (readyLine.trim() === '' || /[\r\n]/.test(readyLine)))
    throw usage(
      '--ready-line must be one non-empty line of text',
      'Give --ready-line the text the image prints on its console when it is up.',
    );
  const timeoutSeconds = seconds('--timeout', values.timeout, DEFAULT_UP_TIMEOUT_SECONDS);
  const config = configFrom(process.env, homedir());
  const trustedRoot = await loadTrustedRoot(config.trustedRootPath, { dataDir: config.dataDir });
  const json = values.json === true;
  const result = await devUp(
    {
      ...(values.cpus !== undefined ? { cpus: values.cpus } : {}),
      ...(values.memory !== undefined ? { memory: values.memory } : {}),
      ...(values.disk !== undefined ? { disk: values.disk } : {}),
      ports: values.port ?? [],
      ...(values.share !== undefined ? { share: values.share } : {}),
      ...(values.append !== undefined ? { append: values.append } : {}),
      ...(values.accel !== undefined ? { accel: values.accel } : {}),
      ...(values.console !== undefined ? { console: values.console } : {}),
      ...(values.network !== undefined ? { network: values.network } : {}),
      fresh: values.fresh === true,
      ...(readyLine !== undefined ? { readyLine } : {}),
      timeoutSeconds,
      noWait: values['no-wait'] === true,
      cwd: process.cwd(),
    },
    {
      config,
      trustedRoot,
      now: () => new Date(),
      warn: (m) => io.err(`warning: ${safe(m)}`),
      report: (e) => io.err(describeUp(e)),
      // Online and nothing installed: the same download and import as dev pull, then the boot.
      ...(values.offline === true || config.offline
        ? {}
        : {
            pullIfMissing: async () => {
              io.err(
                `No dev image v${MVMCTL_VERSION} is installed: pulling it from ${safe(config.releaseBaseUrl)} (MVM_OFFLINE=1 or --offline never does)`,
              );
              const { pull } = await import('./dev-fetch.js');
              await pull(config, trustedRoot, io, { json });
            },
          }),
    },
  );
  const s = result.state;
  if (json) {
    io.out(
      jsonLine({
        running: true,
        already_running: result.alreadyRunning,
        ready: result.ready,
        pid: s.pid,
        version: s.version,
        accel: s.accel,
        ports: s.ports.map((p) => ({ host: `${p.hostAddr}:${p.hostPort}`, guest: p.guestPort })),
        network: s.network ?? 'user',
        console: s.console ?? 'hvc0',
        ...(s.readyBy ? { ready_by: s.readyBy } : {}),
        ...(s.stages ? { stages_ms: s.stages } : {}),
        console_log: s.paths.consoleLog,
        ...(s.share ? { share: { host_path: s.share.hostPath, tag: s.share.tag } } : {}),
        started_at: s.startedAt,
      }),
    );
  } else {
    const ports = s.ports.map((p) => `${p.hostAddr}:${p.hostPort}->${p.guestPort}`).join(', ');
    io.out(
      `${result.alreadyRunning ? 'The dev VM is already running' : result.ready ? 'The dev VM is ready' : 'The dev VM is starting (--no-wait)'}: ` +
        `v${printable(s.version)}, pid ${s.pid}, ${s.accel}, network ${s.network ?? 'user'}${ports ? `, ports ${ports}` : ''}` +
        `${s.share ? `, sharing ${printable(s.share.hostPath)} as ${s.share.tag}` : ''}\n` +
        `Console log: ${printable(s.paths.consoleLog)} (mvmctl dev logs); stop it with mvmctl dev down.`,
    );
  }
  return 0;
}

function describeUp(e: UpEvent): string {
  if (e.kind === 'stage') return `✓ ${e.stage.padEnd(19)}${safe(e.detail)}`;
  if (e.kind === 'note') return `note: ${safe(e.text)}`;
  return e.lines.length === 0
    ? `Console log ${printable(e.path)}: empty`
    : [`Last console lines (${printable(e.path)}):`, ...e.lines.map((l) => `  | ${l}`)].join('\n');
}

async function downCommand(args: string[], io: Output): Promise<number> {
  const { values } = parseCommand('dev down', args);
  const timeoutSeconds = seconds('--timeout', values.timeout, DEFAULT_DOWN_TIMEOUT_SECONDS);
  const config = configFrom(process.env, homedir());
  const r = await devDown(config, {
    reset: values.reset === true,
    deleteDisk: values['delete-disk'] === true,
    timeoutSeconds,
  });
  if (values.json === true) {
    io.out(
      jsonLine({
        was: r.was,
        stopped: r.was === 'running',
        ...(r.method ? { method: r.method } : {}),
        ...(r.staleReason ? { stale_reason: r.staleReason } : {}),
        overlay_removed: r.overlayRemoved,
        ...(r.diskRemoved
          ? { disk_removed: { path: r.diskRemoved.path, size_bytes: r.diskRemoved.bytes } }
          : {}),
      }),
    );
    return 0;
  }
  const how: Record<string, string> = {
    agent: 'shut down (through its guest agent)',
    powerdown: 'powered off (ACPI power-down)',
    quit: 'stopped with QMP quit (the guest did not power off in time)',
    kill: 'killed (SIGKILL: QEMU did not quit)',
  };
  const line =
    r.was === 'running'
      ? `The dev VM ${r.method ? how[r.method] : 'exited'}.`
      : r.was === 'stale'
        ? `The dev VM was not running; its stale state was cleaned up (${printable(r.staleReason ?? '')}).`
        : 'The dev VM is not running (stopped); nothing to do.';
  io.out(
    `${line}${r.overlayRemoved ? ' Its disk overlay was deleted (--reset).' : r.was === 'stopped' ? '' : ' Its disk overlay is kept for the next dev up (--reset deletes it).'}`,
  );
  if (r.diskRemoved)
    io.out(
      `Deleted the data disk ${printable(r.diskRemoved.path)} (${formatBytes(r.diskRemoved.bytes)}): everything the guest stored on /dev/vdb is gone.`,
    );
  else if (values['delete-disk'] === true) io.out('There was no data disk to delete.');
  return 0;
}

async function statusCommand(args: string[], io: Output): Promise<number> {
  const { values } = parseCommand('dev status', args);
  const config = configFrom(process.env, homedir());
  const base = await devStatus(config);
  const status =
    base.version === undefined
      ? base
      : { ...base, recall: await recallState(config, base.version) };
  io.out(values.json === true ? jsonLine(status) : describeStatus(status));
  return 0;
}

/**
 * Whether the booted version is recalled now, by the same rule as `status`
 * and `dev up`: the verified cached list and the recalls remembered on this
 * host. A cache that does not verify is reported, never trusted.
 */
async function recallState(
  config: Config,
  version: string,
): Promise<{ readonly recalled: boolean; readonly reason?: string; readonly list: string }> {
  const trustedRoot = await loadTrustedRoot(config.trustedRootPath, { dataDir: config.dataDir });
  const { summary, cached } = await summarizeRevocationCache(
    revocationsDir(config),
    config.releaseRepo,
    trustedRoot,
    new Date(),
  );
  const recall = recallInForce(
    { version, variant: 'dev', arch: hostArch(process.arch) ?? process.arch },
    {
      listed: cached?.state === 'verified' ? cached.list.revocations : undefined,
      remembered: (await readRecallMemory(config)).recalls,
    },
  );
  return {
    recalled: recall !== undefined,
    ...(recall ? { reason: recall.reason } : {}),
    list: summary.state,
  };
}

function describeStatus(
  s: VmStatus & { recall?: Awaited<ReturnType<typeof recallState>> },
): string {
  const p = printable;
  const lines = [`state:        ${s.state}${s.stale_reason ? ` (${p(s.stale_reason)})` : ''}`];
  if (s.state !== 'stopped' && s.pid !== undefined) {
    lines.push(`pid:          ${s.pid}`);
    if (s.uptime_seconds !== undefined) lines.push(`uptime:       ${s.uptime_seconds} s`);
    lines.push(`version:      ${p(s.version ?? '')}`);
    lines.push(`accel:        ${p(s.accel ?? '')}`);
    if (s.console) lines.push(`console:      ${p(s.console)}`);
    if (s.ready_by) {
      const at = (stage: string) => {
        const ms = s.stages_ms?.[stage];
        return typeof ms === 'number' && Number.isFinite(ms) ? ` ${stageSeconds(ms)}` : '';
      };
      lines.push(
        `ready:        ${s.ready_by === 'agent' ? 'the guest agent answered' : 'ready line seen'}${at('ready') ? ` after${at('ready')}` : ''}` +
          `${at('kernel booted') ? ` (console output after${at('kernel booted')})` : ''}`,
      );
    }
    if (s.network) lines.push(`network:      ${p(s.network)}`);
    if (s.ports && s.ports.length > 0)
      lines.push(`ports:        ${s.ports.map((f) => `${f.host}->${f.guest}`).join(', ')}`);
    if (s.share)
      lines.push(
        `share:        ${p(s.share.host_path)} -> tag ${p(s.share.tag)} (${p(s.share.transport)})`,
      );
    if (s.at_rest)
      lines.push(`at-rest:      ${s.at_rest === 'ok' ? 're-hashed at boot, matched' : 'SKIPPED'}`);
    if (s.recall)
      lines.push(
        `recall:       ${s.recall.recalled ? `RECALLED: ${p(s.recall.reason ?? '')} (stop it: mvmctl dev down)` : `not recalled (revocation list: ${s.recall.list})`}`,
      );
  }
  lines.push(`console log:  ${p(s.console_log)}`);
  if (s.overlay_bytes !== undefined)
    lines.push(`overlay:      ${p(s.overlay ?? '')} (${Math.round(s.overlay_bytes / 1024)} KiB)`);
  if (s.data_disk)
    lines.push(
      `data disk:    ${p(s.data_disk.path)} (/dev/vdb, ${formatBytes(s.data_disk.size_bytes)}, ${formatBytes(s.data_disk.file_bytes)} used on the host)`,
    );
  if (s.settings)
    lines.push(
      `settings:     ${Object.entries(s.settings)
        .map(([k, v]) => `--${k} ${p(String(v))}`)
        .join(', ')} (reused by the next dev up)`,
    );
  if (s.state === 'stale') lines.push("Run 'mvmctl dev down' or 'mvmctl dev up' to clean it up.");
  return lines.join('\n');
}

async function logsCommand(args: string[], io: Output): Promise<number> {
  const { values } = parseCommand('dev logs', args);
  const raw = values.lines ?? '100';
  if (!/^[0-9]{1,7}$/.test(raw))
    throw usage(
      `-n ${JSON.stringify(printable(raw, 100))} is not a number of lines`,
      'Give -n a whole number of lines, like -n 50.',
    );
  const config = configFrom(process.env, homedir());
  if (values.follow === true) {
    if (values.json === true)
      throw usage(
        'dev logs -f has no JSON output',
        "Use 'mvmctl dev logs --json' for the last lines as JSON, or -f without --json.",
      );
    return followLogs(config, Number(raw), io);
  }
  const lines = await devLogs(config, Number(raw));
  if (values.json === true) {
    const { statePaths } = await import('../../vm/state.js');
    io.out(jsonLine({ console_log: statePaths(config).consoleLog, lines }));
  } else if (lines.length > 0) io.out(lines.join('\n'));
  return 0;
}

async function followLogs(config: Config, lines: number, io: Output): Promise<number> {
  const path = statePaths(config).consoleLog;
  const running = async () => (await readVmState(config)).liveness === 'running';
  const wasRunning = await running();
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  const signals = ['SIGINT', 'SIGTERM'] as const;
  for (const s of signals) process.on(s, onSignal);
  try {
    const end = await followConsoleLog(path, {
      lines,
      running: wasRunning ? running : async () => false,
      emit: (l) => io.out(l.join('\n')),
      signal: stop.signal,
    });
    if (end === 'stopped')
      io.err(
        wasRunning
          ? 'The dev VM stopped: nothing more to follow.'
          : "The dev VM is not running: nothing to follow (start it with 'mvmctl dev up').",
      );
    return 0;
  } finally {
    for (const s of signals) process.off(s, onSignal);
  }
}

async function consoleCommand(command: string, args: string[], io: Output): Promise<number> {
  const { values } = parseCommand('dev console', args);
  if (values.json === true)
    throw usage(
      `${command} has no JSON output: it is a terminal session`,
      `Run '${command}' without --json; 'mvmctl dev logs --json' gives the console log as JSON.`,
    );
  const idleSeconds = seconds('--idle', values.idle, DEFAULT_IDLE_SECONDS);
  const config = configFrom(process.env, homedir());
  const state = await requireRunningVm(config, command);
  const socket = await connectConsole(config);
  const tty = process.stdin.isTTY === true;
  const end = await runConsole(
    socket,
    { input: process.stdin, output: process.stdout, notice: (t) => io.err(t) },
    {
      idleSeconds,
      banner:
        `Connected to the dev VM console (v${printable(state.version)}, pid ${state.pid}). ` +
        "Escape character is '^]' (Ctrl-]): press it to detach; the VM keeps running. " +
        'Press Enter for a prompt.',
    },
  );
  if (end === 'console-closed')
    io.err(
      `${tty ? '\r\n' : ''}The dev VM console closed (the VM stopped?); see 'mvmctl dev status'.`,
    );
  else if (tty) io.err('\r\nDetached from the dev VM console; the VM keeps running.');
  return 0;
}

/**
 * `dev exec`: the guest command's exit status is ours; every failure of
 * mvmctl's own (flags included) is 255, as ssh does, so a script can tell
 * the two apart. Output bytes go through unmodified, as a pipe's would.
 */
async function execCommand(args: string[], io: Output): Promise<number> {
  const split = args.indexOf('--');
  const flags = split >= 0 ? args.slice(0, split) : args;
  const json = flags.includes('--json');
  try {
    const { values, positionals } = parseCommand('dev exec', flags);
    const argv = split >= 0 ? [...positionals, ...args.slice(split + 1)] : positionals;
    if (argv.length === 0)
      throw usage(
        'dev exec needs a command to run',
        "Write it after --: mvmctl dev exec -- CMD [ARG]... (for a pipeline: -- sh -c '...').",
      );
    for (const e of values.env ?? [])
      if (!/^[A-Za-z_][A-Za-z0-9_]*=/.test(e) || e.includes('\0'))
        throw usage(
          `--env ${JSON.stringify(printable(e, 100))} is not NAME=VALUE`,
          'Give --env a variable name (letters, digits, _), =, and its value.',
        );
    const workdir = values.workdir;
    if (workdir !== undefined && (!workdir.startsWith('/') || workdir.includes('\0')))
      throw usage(
        `--workdir ${JSON.stringify(printable(workdir, 100))} is not an absolute path`,
        'Give --workdir an absolute directory of the guest, such as /root.',
      );
    const timeoutSeconds =
      values.timeout !== undefined ? seconds('--timeout', values.timeout, 0) : undefined;
    const config = configFrom(process.env, homedir());
    const state = await requireRunningVm(config, 'dev exec');
    const stdin =
      values['no-stdin'] === true || process.stdin.isTTY ? undefined : await readStdin();
    const channel = new AgentChannel(state.paths.agentSocket ?? statePaths(config).agentSocket);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const result = await whileInterruptible(io, (signal) =>
      guestExec(
        channel,
        {
          argv,
          env: values.env ?? [],
          ...(workdir !== undefined ? { workdir } : {}),
          ...(stdin ? { stdin } : {}),
          ...(timeoutSeconds !== undefined ? { timeoutSeconds } : {}),
        },
        json
          ? { stdout: (b) => out.push(b), stderr: (b) => err.push(b) }
          : {
              stdout: (b) => process.stdout.write(b),
              stderr: (b) => process.stderr.write(b),
            },
        signal,
      ),
    );
    if (json)
      io.out(
        jsonLine({
          exitCode: result.exitCode,
          ...(result.signal !== undefined ? { signal: result.signal } : {}),
          stdout: Buffer.concat(out).toString('utf8'),
          stderr: Buffer.concat(err).toString('utf8'),
        }),
      );
    return result.exitCode;
  } catch (e) {
    return renderError(
      e,
      {
        json,
        debug: flags.includes('--debug'),
        exit: (err) => (err.code === 'interrupted' ? err.exitCode : ERROR_TABLE.agent.exit),
      },
      io,
    );
  }
}

/** stdin to its end, refused as soon as it passes MAX_STDIN_BYTES (never held whole beyond). */
async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of process.stdin as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > MAX_STDIN_BYTES) throw stdinTooLarge();
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

/**
 * `dev cp`: one copy, checked by SHA-256 on both sides. Its failures take the
 * error table's exit codes (the guest side's are 255, as for dev exec).
 */
async function cpCommand(args: string[], io: Output): Promise<number> {
  const json = args.includes('--json');
  try {
    const { values, positionals } = parseCommand('dev cp', args);
    if (positionals.length !== 2)
      throw usage(
        `dev cp takes a source and a destination (${positionals.length} given)`,
        'Write mvmctl dev cp SRC dev:/PATH, or mvmctl dev cp dev:/PATH DST.',
      );
    const spec = copySpec(positionals[0]!, positionals[1]!, values.recursive === true);
    const config = configFrom(process.env, homedir());
    const state = await requireRunningVm(config, 'dev cp');
    const channel = new AgentChannel(state.paths.agentSocket ?? statePaths(config).agentSocket);
    const bar = process.stderr.isTTY && !json ? progressBar('dev cp') : undefined;
    let result: CopyResult;
    try {
      result = await whileInterruptible(io, (signal) =>
        guestCopy(
          channel,
          spec,
          {
            stdin: process.stdin,
            stdout: process.stdout,
            ...(bar
              ? { progress: (n: number, total: number | undefined) => bar.update('cp', n, total) }
              : {}),
          },
          signal,
        ),
      );
    } finally {
      bar?.clear();
    }
    const skipped = result.skipped.map((s) => ({ name: printable(s.name, 4096), type: s.type }));
    if (json) io.out(jsonLine({ ...result, skipped }));
    else {
      for (const s of skipped)
        io.err(`Skipped ${JSON.stringify(s.name)}: a ${s.type} is not copied.`);
      const what =
        result.directories > 0
          ? `${result.files} file${result.files === 1 ? '' : 's'} in ${result.directories} director${result.directories === 1 ? 'y' : 'ies'}`
          : formatBytes(result.bytes);
      const line = `Copied ${what} to ${printable(result.destination, 4096)} (sha256 ${result.sha256.slice(0, 16)}…, the same on both sides).`;
      // With stdout carrying the file's bytes, the report goes to stderr.
      if (result.destination === '-') io.err(line);
      else io.out(line);
    }
    return 0;
  } catch (e) {
    return renderError(e, { json, debug: args.includes('--debug') }, io);
  }
}
