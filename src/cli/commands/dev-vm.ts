/**
 * `mvmctl dev up | down | status | logs | console`: parse flags, call src/vm/instance.ts,
 * render human text or one JSON object. Nothing here decides anything about
 * the VM.
 */
import { homedir } from 'node:os';
import { configFrom, revocationsDir, type Config } from '../../config.js';
import { hostArch } from '../../core/manifest.js';
import { recallInForce } from '../../core/revocation.js';
import { summarizeRevocationCache } from '../../revocations/cache.js';
import { readRecallMemory } from '../../revocations/memory.js';
import { printable } from '../../core/printable.js';
import { MvmError } from '../../errors.js';
import { loadTrustedRoot } from '../../trust/trusted-root.js';
import {
  DEFAULT_DOWN_TIMEOUT_SECONDS,
  DEFAULT_READY_LINE,
  DEFAULT_UP_TIMEOUT_SECONDS,
  devDown,
  devLogs,
  devStatus,
  devUp,
  type UpEvent,
  type VmStatus,
} from '../../vm/instance.js';
import {
  connectConsole,
  DEFAULT_IDLE_SECONDS,
  followConsoleLog,
  MAX_DRAIN_SECONDS,
  requireRunningVm,
  runConsole,
} from '../../vm/console.js';
import { readVmState, statePaths } from '../../vm/state.js';
import { MVMCTL_VERSION } from '../../version.js';
import { parseFlags } from '../args.js';
import { jsonLine, type Output } from '../render.js';

export const UP_HELP = `Usage: mvmctl dev up [flags]

Boot the installed dev image (v{mvmctl --version}) in a QEMU VM that keeps
running after this command returns. With no image installed, it is first
downloaded and installed as mvmctl dev pull does (verified the same way),
unless offline (MVM_OFFLINE=1 or --offline: exit 3, install it with
mvmctl dev import-image). Before anything boots: its version must not be
recalled in the cached signed revocation list or in the recalls this host
remembers (exit 13), and the installed kernel, rootfs (and initrd) are
re-hashed against the digests verified at import (exit 14 on a mismatch). No
network is used and the manifest is not verified again. The VM's root disk is
a copy-on-write overlay on the installed rootfs, which is never written; it
persists across down/up. Stages are printed as they pass (hypervisor started,
kernel booted, ready). When the VM already runs, it is reported and the exit
status is 0. Everything about the VM is in ~/.mvm/vms/dev/ (state.json, the
overlay, console.sock, console.log, qmp.sock).

Flags:
  --cpus N               vCPUs (default: 2, at most the host's CPU count)
  --memory SIZE          guest memory, like 512M or 2G; a bare number is MiB
                         (default: half the host's memory, 128M to 1G)
  --port [ADDR:]HOST:GUEST
                         forward TCP port HOST on the host (ADDR, default 127.0.0.1)
                         to port GUEST in the guest; repeatable
  --share DIR            expose the host directory DIR to the guest under the mount tag
                         workdir (virtiofs; the test image mounts it on /mnt/workdir).
                         DIR must exist; it is served by virtiofsd
                         (/usr/lib/qemu/virtiofsd, Debian package qemu-system-common),
                         which must run as root, so --share needs root. virtiofsd is
                         stopped with the VM (dev down, or a boot that fails)
  --append ARGS          added to the kernel command line
                         (console=hvc0 root=/dev/vda rw init=/init ...); may not set
                         root=, init=, rdinit= or console=
  --accel auto|kvm|tcg   kvm: hardware virtualization (an error where KVM cannot run a
                         stock kernel); tcg: software emulation, several times slower;
                         auto (default): kvm when usable, otherwise tcg with a warning
                         saying why
  --fresh                discard the VM's disk overlay (changes made in the guest) first
  --ready-line TEXT      the console line that means the guest is up
                         (default "${DEFAULT_READY_LINE}")
  --timeout SECONDS      how long to wait for the ready line (default ${DEFAULT_UP_TIMEOUT_SECONDS}); on
                         timeout the error names the stage that did not complete, the last
                         console lines are shown and QEMU is stopped
  --no-wait              return once QEMU runs, without waiting for the ready line
  --offline              never download: with no image installed, fail (exit 3) instead of
                         pulling it (also MVM_OFFLINE=1)
  --json                 print one JSON object with the result (or the error)
  --debug                show internal detail on errors

Environment:
  MVM_DATA_DIR        data directory (default ~/.mvm)
  MVM_CACHE_DIR       cache directory holding revocations/ (default ~/.cache/mvm)
  MVM_TRUSTED_ROOT    Sigstore trusted_root.json verifying the cached revocation list
                      and, when pulling, the manifest
  MVM_OFFLINE=1       never download
  MVM_RELEASE_BASE_URL, MVM_RELEASE_TOKEN, HTTPS_PROXY, ...
                      where a missing image is pulled from (see mvmctl dev pull --help)

Exit status: 0 running (or already running), 2 usage, 3 no image installed,
13 version recalled, 14 installed file changed since import, 17 store,
18 no fresh revocation list (MVM_REQUIRE_FRESH_REVOCATIONS=1),
1 the VM did not start or did not become ready; when pulling, also the exit
codes of mvmctl dev pull (10, 11, 12, 15, 16, 130).
`;

export const DOWN_HELP = `Usage: mvmctl dev down [--reset] [--timeout SECONDS]

Power the dev VM off: an ACPI power-down over QMP (the guest shuts down
cleanly), then, if it is still running after --timeout, QMP quit, then
SIGKILL. Before each step the process is confirmed to be the VM's own (its
pid and start time, from state.json), so a reused pid is never signalled.
The sockets and state are removed; the disk overlay (changes made in the
guest) stays for the next dev up unless --reset. A VM that is not running is
a note and exit 0.

Flags:
  --reset              also delete the VM's disk overlay: the next dev up starts from
                       the installed image as verified
  --timeout SECONDS    how long the guest gets to power off before QEMU is told to
                       quit (default ${DEFAULT_DOWN_TIMEOUT_SECONDS})
  --json               print one JSON object with the result (or the error)
  --debug              show internal detail on errors

Exit status: 0 stopped (or was not running), 2 usage, 17 store, 1 QEMU could not be stopped.
`;

export const STATUS_HELP = `Usage: mvmctl dev status [--json]

Whether the dev VM runs, read from its state directory (~/.mvm/vms/dev/):
state (running, stopped, or stale: the recorded QEMU is gone or its pid now
belongs to another process; the next dev up or dev down cleans it up), pid,
uptime, accel, version and digests booted, the at-rest check at boot, port
forwards, the shared directory (--share), the console log path and the disk
overlay's size. Changes nothing.

Flags:
  --json     print one JSON object
  --debug    show internal detail on errors

Exit status: 0 (whatever the state), 17 store.
`;

export const LOGS_HELP = `Usage: mvmctl dev logs [-f] [-n N]

Print the last lines of the dev VM's console log (~/.mvm/vms/dev/console.log:
everything the guest printed on its console since the last dev up). Control
characters are shown escaped (\\x1b), so guest output cannot drive your
terminal.

Flags:
  -f, --follow     after the last lines, keep printing new lines as the guest writes
                   them (a line is shown once it ends), until the VM stops or you
                   press Ctrl-C (SIGINT; also SIGTERM): both exit 0. When the VM is not
                   running, the last lines are printed and a note says there is
                   nothing to follow
  -n, --lines N    how many lines, from the end (default 100; with -f, 0 shows only
                   new lines)
  --json           print one JSON object: the log path and the lines (not with -f)
  --debug          show internal detail on errors

Exit status: 0, 2 usage, 17 store.
`;

export const CONSOLE_HELP = `Usage: mvmctl dev console [--idle SECONDS]
       mvmctl dev shell [--idle SECONDS]

Attach to the running dev VM's console: the guest's virtio console (hvc0),
served by QEMU on the unix socket ~/.mvm/vms/dev/console.sock. 'dev shell' is
the same door, for an image with a shell or getty on its console. The VM must
be running and be the one dev up started (its pid and start time are checked
first); otherwise the error names mvmctl dev up and the exit status is 3.

On a terminal (stdin is a TTY): the terminal is put in raw mode, so every key,
Ctrl-C included, goes to the guest. Press Ctrl-] to detach; the VM keeps
running. The terminal is restored on detach, when the console closes (the VM
stopped), on SIGINT, SIGTERM or SIGHUP, and on errors.

Without a terminal (stdin piped or a file): stdin is sent to the console as it
comes; when it ends, the guest's output is still copied to stdout until the
guest has printed nothing for --idle seconds (and at most ${MAX_DRAIN_SECONDS} s), then the
exit status is 0. No end-of-file is sent: the shell on the console stays. So
scripts can run a command in the guest:
  printf 'uname -a\\n' | mvmctl dev console

What the guest prints is passed through unmodified, to a terminal and to a
pipe alike: a console is a terminal session (the guest's shell drives your
terminal as a remote shell would), and a pipe gets exactly the bytes it asked
for. For the console's output with control characters escaped, use
mvmctl dev logs. Output printed while no one is attached is only in the log.

Flags:
  --idle SECONDS   without a terminal: how long the guest must stay quiet after stdin
                   ends before exiting (default ${DEFAULT_IDLE_SECONDS}); raise it for commands
                   that pause before printing
  --debug          show internal detail on errors

Exit status: 0 detached, input ended, or the console closed; 2 usage; 3 the dev VM is
not running (or its console cannot be reached).
`;

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

function noPositionals(command: string, positionals: string[]): void {
  if (positionals.length > 0)
    throw usage(
      `${command} takes no positional arguments (got ${JSON.stringify(printable(positionals[0]!, 100))})`,
      `Run 'mvmctl ${command} --help' to see its flags.`,
    );
}

const safe = (text: string): string =>
  text
    .split('\n')
    .map((l) => printable(l, 4096))
    .join('\n');

export async function vmCommand(
  sub: 'up' | 'down' | 'status' | 'logs' | 'console' | 'shell',
  args: string[],
  io: Output,
): Promise<number> {
  switch (sub) {
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
  const { values, positionals } = parseFlags('dev up', args, {
    cpus: { type: 'string' },
    memory: { type: 'string' },
    port: { type: 'string', multiple: true },
    share: { type: 'string' },
    append: { type: 'string' },
    accel: { type: 'string' },
    fresh: { type: 'boolean' },
    'ready-line': { type: 'string' },
    timeout: { type: 'string' },
    'no-wait': { type: 'boolean' },
    offline: { type: 'boolean' },
  });
  if (values.help) {
    io.out(UP_HELP);
    return 0;
  }
  noPositionals('dev up', positionals);
  const readyLine = values['ready-line'];
  if (readyLine !== undefined && (readyLine.trim() === '' || /[\r\n]/.test(readyLine)))
    throw usage(
      '--ready-line must be one non-empty line of text',
      'Give --ready-line the text the image prints on its console when it is up.',
    );
  const timeoutSeconds = seconds('--timeout', values.timeout, DEFAULT_UP_TIMEOUT_SECONDS);
  const config = configFrom(process.env, homedir());
  const trustedRoot = await loadTrustedRoot(config.trustedRootPath);
  const json = values.json === true;
  const result = await devUp(
    {
      ...(values.cpus !== undefined ? { cpus: values.cpus } : {}),
      ...(values.memory !== undefined ? { memory: values.memory } : {}),
      ports: values.port ?? [],
      ...(values.share !== undefined ? { share: values.share } : {}),
      ...(values.append !== undefined ? { append: values.append } : {}),
      ...(values.accel !== undefined ? { accel: values.accel } : {}),
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
        console_log: s.paths.consoleLog,
        ...(s.share ? { share: { host_path: s.share.hostPath, tag: s.share.tag } } : {}),
        started_at: s.startedAt,
      }),
    );
  } else {
    const ports = s.ports.map((p) => `${p.hostAddr}:${p.hostPort}->${p.guestPort}`).join(', ');
    io.out(
      `${result.alreadyRunning ? 'The dev VM is already running' : result.ready ? 'The dev VM is ready' : 'The dev VM is starting (--no-wait)'}: ` +
        `v${printable(s.version)}, pid ${s.pid}, ${s.accel}${ports ? `, ports ${ports}` : ''}` +
        `${s.share ? `, sharing ${printable(s.share.hostPath)} as ${s.share.tag}` : ''}\n` +
        `Console log: ${printable(s.paths.consoleLog)} (mvmctl dev logs); stop it with mvmctl dev down.`,
    );
  }
  return 0;
}

function describeUp(e: UpEvent): string {
  if (e.kind === 'stage') return `✓ ${e.stage.padEnd(19)}${safe(e.detail)}`;
  return e.lines.length === 0
    ? `Console log ${printable(e.path)}: empty`
    : [`Last console lines (${printable(e.path)}):`, ...e.lines.map((l) => `  | ${l}`)].join('\n');
}

async function downCommand(args: string[], io: Output): Promise<number> {
  const { values, positionals } = parseFlags('dev down', args, {
    reset: { type: 'boolean' },
    timeout: { type: 'string' },
  });
  if (values.help) {
    io.out(DOWN_HELP);
    return 0;
  }
  noPositionals('dev down', positionals);
  const timeoutSeconds = seconds('--timeout', values.timeout, DEFAULT_DOWN_TIMEOUT_SECONDS);
  const config = configFrom(process.env, homedir());
  const r = await devDown(config, { reset: values.reset === true, timeoutSeconds });
  if (values.json === true) {
    io.out(
      jsonLine({
        was: r.was,
        stopped: r.was === 'running',
        ...(r.method ? { method: r.method } : {}),
        ...(r.staleReason ? { stale_reason: r.staleReason } : {}),
        overlay_removed: r.overlayRemoved,
      }),
    );
    return 0;
  }
  const how: Record<string, string> = {
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
  return 0;
}

async function statusCommand(args: string[], io: Output): Promise<number> {
  const { values, positionals } = parseFlags('dev status', args, {});
  if (values.help) {
    io.out(STATUS_HELP);
    return 0;
  }
  noPositionals('dev status', positionals);
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
  const trustedRoot = await loadTrustedRoot(config.trustedRootPath);
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
  if (s.state === 'stale') lines.push("Run 'mvmctl dev down' or 'mvmctl dev up' to clean it up.");
  return lines.join('\n');
}

async function logsCommand(args: string[], io: Output): Promise<number> {
  const { values, positionals } = parseFlags('dev logs', args, {
    lines: { type: 'string', short: 'n' },
    follow: { type: 'boolean', short: 'f' },
  });
  if (values.help) {
    io.out(LOGS_HELP);
    return 0;
  }
  noPositionals('dev logs', positionals);
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
  const { values, positionals } = parseFlags(command, args, { idle: { type: 'string' } });
  if (values.help) {
    io.out(CONSOLE_HELP);
    return 0;
  }
  noPositionals(command, positionals);
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
