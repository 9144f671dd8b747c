import { homedir } from 'node:os';
import { configFrom, type Config } from '../../config.js';
import { MvmError } from '../../errors.js';
import { metricsJson, renderExposition } from '../../telemetry/exposition.js';
import { MetricsSource, type MetricsSnapshot } from '../../telemetry/snapshot.js';
import type { LoadedTrustedRoot } from '../../trust/trusted-root.js';
import { parseCommand } from '../args.js';
import { jsonLine, type Output } from '../render.js';

export { metricsJson } from '../../telemetry/exposition.js';

/** Everything the metrics say, read once (status shows it too, with the trusted root it loaded). */
export async function currentMetrics(
  config: Config,
  trustedRoot?: LoadedTrustedRoot,
): Promise<MetricsSnapshot> {
  return new MetricsSource(config, trustedRoot).collect();
}

/** `mvmctl metrics`: flags, help and exit codes are its row of src/cli/spec.ts. */
export async function metricsCommand(args: string[], io: Output): Promise<number> {
  const { values } = parseCommand('metrics', args);
  if (values.textfile !== undefined && values.json)
    throw new MvmError('usage', '--textfile and --json do not go together', {
      fix: 'The textfile is always the Prometheus text format; drop --json.',
    });
  const snapshot = await currentMetrics(configFrom(process.env, homedir()));
  for (const w of snapshot.warnings) io.err(`warning: ${w}`);
  if (values.textfile !== undefined) {
    if (values.textfile === '')
      throw new MvmError('usage', '--textfile needs a directory', {
        fix: "Name node_exporter's --collector.textfile.directory.",
      });
    const { writeTextfile } = await import('../../telemetry/textfile.js');
    await writeTextfile(values.textfile, renderExposition(snapshot, 'prometheus'));
    return 0;
  }
  io.out(values.json ? jsonLine(metricsJson(snapshot)) : renderExposition(snapshot, 'prometheus'));
  return 0;
}

/** `mvmctl metrics serve`: flags, help and exit codes are its row of src/cli/spec.ts. */
export async function serveCommand(args: string[], io: Output): Promise<number> {
  const { values } = parseCommand('metrics serve', args);
  if (values.json)
    throw new MvmError('usage', 'metrics serve has no --json', {
      fix: "GET /metrics serves the exposition formats; 'mvmctl metrics --json' prints JSON.",
    });
  const { DEFAULT_LISTEN, parseListen, startMetricsServer, urlOf } =
    await import('../../telemetry/server.js');
  const listen = parseListen(values.listen ?? DEFAULT_LISTEN);
  const source = new MetricsSource(configFrom(process.env, homedir()));
  // The log is read once before listening: a log that cannot be read at all is an error now, not per scrape.
  const first = await source.collect();
  const server = await startMetricsServer({
    listen,
    source,
    warn: (m) => io.err(`warning: ${m}`),
    warned: first.warnings,
  });
  for (const w of first.warnings) io.err(`warning: ${w}`);
  io.err(`listening on ${urlOf(server.address)}`);
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    for (const s of ['SIGTERM', 'SIGINT'] as const) process.once(s, () => resolve(s));
  });
  await server.close();
  io.err(`stopped (${signal})`);
  return 0;
}
