/**
 * Node.js versions mvmctl runs on: those of the maintained Sigstore line it
 * verifies with (@sigstore/verify 4: ^22.22.2 || ^24.15.0 || >=26), the same
 * range as `engines` in package.json. Node 24 LTS is the one it is tested on.
 */
export function unsupportedRuntime(nodeVersion: string): string | undefined {
  const [major = 0, minor = 0, patch = 0] = nodeVersion
    .split('.')
    .map((p) => Number.parseInt(p, 10));
  const ok =
    (major === 22 && (minor > 22 || (minor === 22 && patch >= 2))) ||
    (major === 24 && minor >= 15) ||
    major >= 26;
  if (ok) return undefined;
  return (
    `Error: mvmctl needs Node.js 24 LTS (or ^22.22.2, >= 26); this is Node.js ${nodeVersion}.\n` +
    `  Cause: older Node.js lines are out of maintenance, and the Sigstore libraries mvmctl verifies with do not support them.\n` +
    `  Fix: install Node.js 24 LTS, or use the single executable (mvmctl-linux-x86_64 / mvmctl-linux-aarch64), which carries its own runtime.\n`
  );
}
