import { renderError, stdio, type Output } from './render.js';

type Command = (args: string[], io: Output) => Promise<number>;

/**
 * What runs each command of the table (spec.ts). Modules load lazily, so
 * `mvmctl --version` never pays for the Sigstore libraries.
 */
const HANDLERS: Record<string, () => Promise<Command>> = {
  'dev fetch': async () => (await import('./commands/dev-fetch.js')).fetchCommand,
  'dev pull': async () => (await import('./commands/dev-fetch.js')).pullCommand,
  'dev import-image': async () => (await import('./commands/dev.js')).importImageCommand,
  'dev images': async () => store('images'),
  'dev rm': async () => store('rm'),
  'dev prune': async () => store('prune'),
  'dev up': async () => vm('up'),
  'dev status': async () => vm('status'),
  'dev logs': async () => vm('logs'),
  'dev console': async () => vm('console'),
  'dev shell': async () => vm('shell'),
  'dev down': async () => vm('down'),
  'dev exec': async () => vm('exec'),
  'dev cp': async () => vm('cp'),
  'verify-blob': async () => (await import('./commands/verify-blob.js')).verifyBlobCommand,
  'revocations import': async () => revocations('import'),
  'revocations status': async () => revocations('status'),
  'revocations refresh': async () => revocations('refresh'),
  'trust fetch': async () => trust('fetch'),
  'trust import': async () => trust('import'),
  'trust status': async () => trust('status'),
  status: async () => (await import('./commands/status.js')).statusCommand,
  metrics: async () => (await import('./commands/metrics.js')).metricsCommand,
  'metrics serve': async () => (await import('./commands/metrics.js')).serveCommand,
  'audit tail': async () => (await import('./commands/audit.js')).auditTailCommand,
  completion: async () => (await import('./completion.js')).completionCommand,
};

async function store(sub: 'images' | 'rm' | 'prune'): Promise<Command> {
  const { storeCommand } = await import('./commands/dev-images.js');
  return (args, io) => storeCommand(sub, args, io);
}

async function vm(
  sub: 'up' | 'down' | 'status' | 'logs' | 'console' | 'shell' | 'exec' | 'cp',
): Promise<Command> {
  const { vmCommand } = await import('./commands/dev-vm.js');
  return (args, io) => vmCommand(sub, args, io);
}

async function revocations(sub: 'import' | 'status' | 'refresh'): Promise<Command> {
  const { revocationsCommand } = await import('./commands/revocations.js');
  return (args, io) => revocationsCommand([sub, ...args], io);
}

async function trust(sub: 'fetch' | 'import' | 'status'): Promise<Command> {
  const { trustCommand } = await import('./commands/trust.js');
  return (args, io) => trustCommand([sub, ...args], io);
}

export async function run(argv: string[], io: Output = stdio): Promise<number> {
  const json = argv.includes('--json');
  const debug = argv.includes('--debug');
  try {
    const [first] = argv;
    // Not a command: the process dev up starts to keep the console log bounded (console-keeper.ts KEEPER_ARG).
    if (first === '__console-log-keeper')
      return await (await import('../vm/console-keeper.js')).keeperMain(argv.slice(1));
    if (first === '--version' || first === '-v' || first === 'version') {
      const { MVMCTL_VERSION } = await import('../version.js');
      io.out(json ? JSON.stringify({ version: MVMCTL_VERSION }) : MVMCTL_VERSION);
      return 0;
    }
    const { resolveCommand } = await import('./dispatch.js');
    const target = resolveCommand(argv);
    if (target.kind === 'help') {
      io.out(target.text);
      return target.exit;
    }
    return await (
      await HANDLERS[target.path]!()
    )(target.args, io);
  } catch (e) {
    return renderError(e, { json, debug }, io);
  }
}
