import { homedir } from 'node:os';
import {
  configFrom,
  prebuiltDir,
  revocationsDir,
  revocationsUrl,
  type Config,
} from '../../config.js';
import { MvmError, ONLINE_FETCH_FAILED } from '../../errors.js';
import { printable } from '../../core/printable.js';
import { recallInForce } from '../../core/revocation.js';
import { installedImages } from '../../store/receipt.js';
import { readRecallMemory } from '../../revocations/memory.js';
import { readRegularFile } from '../../io/files.js';
import {
  MAX_LIST_BYTES,
  REVOCATIONS_JSON,
  summarizeRevocationCache,
} from '../../revocations/cache.js';
import { refreshAndAudit } from '../../revocations/refresh.js';
import { installCarriedPair } from '../../revocations/install.js';
import { ImageStore } from '../../store/image-store.js';
import { audit } from '../../audit/record.js';
import { loadTrustedRoot, type LoadedTrustedRoot } from '../../trust/trusted-root.js';
import { parseCommand } from '../args.js';
import { jsonLine, type Output } from '../render.js';

/**
 * `mvmctl revocations import | status | refresh`: the words after
 * `revocations`, the subcommand first. Flags, help and exit codes: their rows
 * of src/cli/spec.ts.
 */
export async function revocationsCommand(args: string[], io: Output): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'import': {
      const { values } = parseCommand('revocations import', rest);
      const { config, trustedRoot } = await setup(values['trusted-root']);
      return importList(config, trustedRoot, values.list, values.bundle, values.json === true, io);
    }
    case 'status': {
      const { values } = parseCommand('revocations status', rest);
      const { config, trustedRoot } = await setup(values['trusted-root']);
      return status(config, trustedRoot, values.json === true, io);
    }
    case 'refresh': {
      const { values } = parseCommand('revocations refresh', rest);
      const { config, trustedRoot } = await setup(values['trusted-root']);
      return refresh(config, trustedRoot, values.offline === true, values.json === true, io);
    }
    default:
      throw new MvmError('usage', `unknown command "revocations ${sub ?? ''}"`, {
        fix: "Run 'mvmctl revocations --help'.",
      });
  }
}

async function setup(trustedRootFlag: string | undefined) {
  const config = configFrom(process.env, homedir());
  const trustedRoot = await loadTrustedRoot(trustedRootFlag ?? config.trustedRootPath, {
    dataDir: config.dataDir,
  });
  return { config, trustedRoot };
}

async function importList(
  config: Config,
  trustedRoot: LoadedTrustedRoot,
  listPath: string | undefined,
  bundlePath: string | undefined,
  json: boolean,
  io: Output,
): Promise<number> {
  if (!listPath || !bundlePath) {
    throw new MvmError('usage', 'revocations import needs --list and --bundle', {
      fix: 'mvmctl revocations import --list revoked-versions.json --bundle revoked-versions.json.bundle',
    });
  }
  const list = await readRegularFile(listPath, 'revocation list', MAX_LIST_BYTES);
  const bundle = await readRegularFile(bundlePath, 'revocation list bundle', MAX_LIST_BYTES);
  try {
    const verified = await installCarriedPair(config, trustedRoot, list, bundle, new Date());
    await audit(config, { event: 'revocations.import', outcome: 'ok' });
    const result = {
      installed: true,
      path: revocationsDir(config),
      entries: verified.list.revocations.length,
      signer: verified.signer,
    };
    io.out(
      json
        ? jsonLine(result)
        : `Installed the revocation list (${result.entries} entries, signed by ${printable(result.signer)}) in ${printable(result.path)}`,
    );
    return 0;
  } catch (e) {
    if (e instanceof MvmError) {
      await audit(config, {
        event: 'revocations.import',
        outcome: 'failed',
        code: e.code,
        check: e.check,
        message: e.message,
      }).catch((auditError: unknown) =>
        io.err(
          `warning: the audit record of this failed import could not be written: ${printable((auditError as Error)?.message ?? String(auditError))}`,
        ),
      );
    }
    throw e;
  }
}

async function refresh(
  config: Config,
  trustedRoot: LoadedTrustedRoot,
  offline: boolean,
  json: boolean,
  io: Output,
): Promise<number> {
  if (offline || config.offline) {
    throw new MvmError(
      'network',
      `${ONLINE_FETCH_FAILED}: revocations refresh is offline (--offline or MVM_OFFLINE=1)`,
      {
        cause: 'no network use is allowed',
        fix: 'Carry a pair in and run mvmctl revocations import, or unset MVM_OFFLINE.',
      },
    );
  }
  const outcome = await refreshAndAudit(
    { config, trustedRoot, now: () => new Date(), warn: (m) => io.err(`warning: ${m}`) },
    { force: true },
  );
  if (outcome.action === 'network-error' || outcome.action === 'rejected') throw outcome.error;
  const url = revocationsUrl(config, REVOCATIONS_JSON);
  const message =
    outcome.action === 'refreshed'
      ? `Refreshed the revocation list from ${printable(url)}: ${outcome.entries} entries, signed by ${printable(outcome.signer)}`
      : outcome.action === 'not-found'
        ? `No revocation list is published at ${printable(url)} (404): no recalls today; the cached list, if any, still applies`
        : `Nothing to do (${outcome.action})`;
  io.out(
    json
      ? jsonLine({
          action: outcome.action,
          ...(outcome.action === 'refreshed'
            ? { entries: outcome.entries, signer: outcome.signer }
            : {}),
          url,
        })
      : message,
  );
  return 0;
}

async function status(
  config: Config,
  trustedRoot: LoadedTrustedRoot,
  json: boolean,
  io: Output,
): Promise<number> {
  const { summary, cached } = await summarizeRevocationCache(
    revocationsDir(config),
    config.releaseRepo,
    trustedRoot,
    new Date(),
  );
  const store = new ImageStore(prebuiltDir(config), config.dataDir);
  const images = [];
  const inForce = {
    listed: cached?.state === 'verified' ? cached.list.revocations : undefined,
    remembered: (await readRecallMemory(config)).recalls,
  };
  for (const { version, receipt } of await installedImages(store)) {
    const recall = receipt ? recallInForce(receipt, inForce) : undefined;
    images.push({ version, recalled: recall ? recall.reason : (false as const) });
  }
  const out = { ...summary, images };
  if (json) {
    io.out(jsonLine(out));
    return 0;
  }
  // The signer, the error and recall reasons quote the list and its bundle: escaped for the terminal.
  const p = printable;
  const lines = [`Revocation list: ${p(out.path)}`];
  if (out.verified) {
    lines.push(
      `  verified, signed by ${p(out.signer ?? '')}`,
      `  ${out.entries} entries, ${out.ageHours} h old (${out.freshness}${out.stale ? `: STALE, still enforced${out.staleReason ? `: ${p(out.staleReason)}` : ''}` : ''})`,
    );
  } else {
    lines.push(out.present ? `  PRESENT BUT NOT VERIFIED: ${p(out.error ?? '')}` : '  none cached');
  }
  for (const i of images)
    lines.push(
      `  image v${p(i.version)}: ${i.recalled ? `RECALLED (${p(i.recalled)})` : 'not recalled'}`,
    );
  io.out(lines.join('\n'));
  return 0;
}
