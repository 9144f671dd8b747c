/**
 * The one rule for files and directories that decide what is trusted or
 * installed (the store, the revocation cache, the trusted root, a --key):
 * they must belong to this user (or root, where root-owned system paths are
 * normal) and must not be writable by group or others, since anyone who could
 * write there could swap what mvmctl trusts. Pure: it judges an lstat result.
 */
export interface OwnershipFacts {
  readonly uid: number;
  readonly mode: number;
}

export interface OwnershipRule {
  /** This process's uid; undefined where the platform has none (no check). */
  readonly uid: number | undefined;
  /** Whether root-owned entries are accepted (system-wide paths such as /etc/mvm). */
  readonly rootMayOwn: boolean;
}

/** Why `st` fails the rule, in the operator's terms, or undefined when it passes. */
export function ownershipProblem(st: OwnershipFacts, rule: OwnershipRule): string | undefined {
  if (rule.uid === undefined) return undefined;
  if (st.uid !== rule.uid && !(rule.rootMayOwn && st.uid === 0)) {
    return `owned by uid ${st.uid}, not by this user (uid ${rule.uid})${rule.rootMayOwn ? ' or root' : ''}`;
  }
  if ((st.mode & 0o022) !== 0) {
    return `writable by group or others (mode ${(st.mode & 0o777).toString(8)})`;
  }
  return undefined;
}
