/**
 * The rules for a carried trust update, without I/O: how old its TUF
 * metadata may be, whether its root chain is whole, and what a TUF client's
 * refusal means in an operator's words. The verification itself is tuf-js's
 * (src/trust/tuf-bundle.ts); these decide what is said and what is allowed.
 */

/** The top-level TUF roles, in the order a client checks them. */
export const TUF_ROLES = ['root', 'timestamp', 'snapshot', 'targets'] as const;
export type TufRole = (typeof TUF_ROLES)[number];

/**
 * How long past its expiry carried metadata is still accepted: 7 days, as a
 * stale revocation list is. Sigstore's timestamp role expires 7 days after it
 * is signed (re-signed every 6), so a bundle made by `trust fetch` imports
 * for at least 8 days, and at most 14.
 */
export const TRUST_TOLERANCE_MS = 7 * 24 * 60 * 60 * 1000;

/**
 * The last instant a bundle whose timestamp.json expires at `timestampExpiresMs`
 * is still imported: its expiry plus the tolerance.
 */
export const importDeadlineMs = (timestampExpiresMs: number): number =>
  timestampExpiresMs + TRUST_TOLERANCE_MS;

/** The root version a bundle's file name carries (`N.root.json`), or undefined for any other name. */
export function rootFileVersion(name: string): number | undefined {
  const m = /^([1-9][0-9]{0,8})\.root\.json$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

/** Most bytes of one TUF metadata file (Sigstore's are a few KiB; tuf-js allows 512000 for a root). */
export const MAX_TUF_METADATA_BYTES = 512_000;

export type RoleExpiries = Readonly<Record<TufRole, string>>;

export type TrustFreshness =
  | { readonly state: 'fresh' }
  /** Past the expiry of `role` by `pastMs`, inside the tolerance: accepted, loudly. */
  | { readonly state: 'stale'; readonly role: TufRole; readonly pastMs: number }
  /** Past the expiry of `role` by more than the tolerance: refused. */
  | { readonly state: 'expired'; readonly role: TufRole; readonly pastMs: number };

/**
 * The freshness of a set of metadata at `now`, judged by the role that
 * expired first (usually the timestamp). Exactly at the expiry instant it is
 * still fresh, as TUF's own check (`expires < now` means expired) has it.
 */
export function trustFreshness(expiries: RoleExpiries, now: Date): TrustFreshness {
  let worst: { role: TufRole; pastMs: number } | undefined;
  for (const role of TUF_ROLES) {
    const pastMs = now.getTime() - Date.parse(expiries[role]);
    // An unreadable date is as good as expired long ago: fail closed.
    const past = Number.isNaN(pastMs) ? Number.POSITIVE_INFINITY : pastMs;
    if (past > 0 && (worst === undefined || past > worst.pastMs)) worst = { role, pastMs: past };
  }
  if (worst === undefined) return { state: 'fresh' };
  return { state: worst.pastMs > TRUST_TOLERANCE_MS ? 'expired' : 'stale', ...worst };
}

/** "3 days 4 h": durations as the operator reads them. */
export function humanDuration(ms: number): string {
  if (!Number.isFinite(ms)) return 'an unreadable time';
  const h = Math.floor(ms / 3_600_000);
  const days = Math.floor(h / 24);
  if (days === 0) return h === 0 ? `${Math.max(1, Math.round(ms / 60_000))} min` : `${h} h`;
  return `${days} day${days === 1 ? '' : 's'}${h % 24 ? ` ${h % 24} h` : ''}`;
}

/**
 * The first problem with the root versions a bundle carries (`N.root.json`),
 * for a host that trusts root `anchor`: the chain must continue from
 * anchor + 1 without a gap. Versions at or below the anchor are already
 * trusted and ignored. Undefined when the chain is whole (or carries nothing
 * new, which is a bundle with the same root).
 */
export function rootChainProblem(anchor: number, carried: readonly number[]): string | undefined {
  const newer = [...new Set(carried)].filter((v) => v > anchor).sort((a, b) => a - b);
  let expect = anchor + 1;
  for (const v of newer) {
    if (v !== expect) {
      return expect === anchor + 1
        ? `it carries root version ${v} but not ${expect}: this host trusts root version ${anchor}, and each rotation must be signed by the root before it`
        : `the root chain skips version ${expect} (it has ${expect - 1}, then ${v})`;
    }
    expect++;
  }
  return undefined;
}

/**
 * The role and check named by a refusal from the TUF client, from its
 * message (tuf-js 6 words them so: "timestamp was signed by 0/1 keys",
 * "New snapshot version 2 is less than current version 3", "Final
 * timestamp.json is expired"). What it cannot place is the client's message.
 */
export function tufRefusal(message: string, lastFile?: string): { role: string; check: string } {
  const m = message.replace(
    /^Unable to load (?:snapshot metadata|targets) error (?:\w*Error: )?/,
    '',
  );
  const signed = /^(root|timestamp|snapshot|targets) was signed by (\d+)\/(\d+) keys$/.exec(m);
  if (signed)
    return {
      role: `${signed[1]}.json`,
      check: `signed by ${signed[2]} of ${signed[3]} required keys`,
    };
  const expired = /^(?:Final )?(root|timestamp|snapshot|targets)\.json is expired$/.exec(m);
  if (expired) return { role: `${expired[1]}.json`, check: 'expired beyond the tolerance' };
  const rollback =
    /^New (timestamp|snapshot) version (\d+) is less than current version (\d+)$/.exec(m);
  if (rollback)
    return {
      role: `${rollback[1]}.json`,
      check: `rollback: version ${rollback[2]} is older than version ${rollback[3]} already trusted here`,
    };
  const metaRollback = /^New version (\d+) of (\w+)\.json is less than current version (\d+)$/.exec(
    m,
  );
  if (metaRollback)
    return {
      role: `${metaRollback[2]}.json`,
      check: `rollback: version ${metaRollback[1]} is older than version ${metaRollback[3]} already trusted here`,
    };
  if (/^Snapshot version doesn't match timestamp$/.test(m))
    return { role: 'snapshot.json', check: 'its version is not the one timestamp.json names' };
  const targetsVersion = /^Version (\d+) of (\w+) does not match snapshot version (\d+)$/.exec(m);
  if (targetsVersion)
    return {
      role: `${targetsVersion[2]}.json`,
      check: `version ${targetsVersion[1]} is not the version ${targetsVersion[3]} that snapshot.json names`,
    };
  const rootVersion = /^Expected version (\d+), got (\d+)$/.exec(m);
  if (rootVersion)
    return {
      role: 'root.json',
      check: `expected version ${rootVersion[1]}, found ${rootVersion[2]}`,
    };
  if (/^Expected (?:length|hash) /.test(m) || m === 'Max length reached')
    return {
      role: lastFile ?? 'a file of the bundle',
      check: `its length or SHA-256 is not what the signed metadata records (${m})`,
    };
  return { role: 'the TUF metadata', check: m };
}

/**
 * The newest `validFor.start` among a trusted root's authorities (its JSON):
 * the last key Sigstore added that this root knows of.
 */
export function newestStartMs(trustedRootJson: Record<string, unknown>): number | undefined {
  const starts: number[] = [];
  const visit = (list: unknown, key?: string) => {
    if (!Array.isArray(list)) return;
    for (const item of list) {
      const holder = key ? (item as Record<string, unknown>)?.[key] : item;
      const start = (
        (holder as Record<string, unknown> | undefined)?.['validFor'] as
          Record<string, unknown> | undefined
      )?.['start'];
      const t = typeof start === 'string' ? Date.parse(start) : NaN;
      if (Number.isFinite(t)) starts.push(t);
    }
  };
  visit(trustedRootJson['tlogs'], 'publicKey');
  visit(trustedRootJson['ctlogs'], 'publicKey');
  visit(trustedRootJson['certificateAuthorities']);
  visit(trustedRootJson['timestampAuthorities']);
  return starts.length ? Math.max(...starts) : undefined;
}
