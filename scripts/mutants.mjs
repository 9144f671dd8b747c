// Deliberate small bugs in the security-critical code, for `npm run mutate`
// (scripts/mutate.mjs). Each names the file, the exact text to change (found
// exactly once), its replacement, and the test files that must notice.
// A mutant that changes no behaviour carries `equivalent: 'why'`.

const VERIFY = ['test/verify-pinning.test.ts', 'test/verify-blob.test.ts'];
const REKOR = ['test/rekor-v2.test.ts', 'test/tlog-review.test.ts', 'test/verify-blob.test.ts'];
const IMPORT = ['test/import-image.test.ts'];
const REVOCATIONS = ['test/revocations.test.ts', 'test/revocation-policy.test.ts'];
const AUDIT = ['test/audit.test.ts', 'test/audit-rotation.test.ts', 'test/cli.test.ts'];

export const MUTANTS = [
  // src/core: identity policy and release identities
  {
    name: 'policy: anchor without the group (^a|b$)',
    file: 'src/core/policy.ts',
    find: "return new RegExp(`^(?:${pattern})$`, 'u');",
    replace: "return new RegExp(`^${pattern}$`, 'u');",
    tests: ['test/policy.test.ts', 'test/verify-pinning.test.ts'],
  },
  {
    name: 'policy: pattern not anchored at the end',
    file: 'src/core/policy.ts',
    find: "return new RegExp(`^(?:${pattern})$`, 'u');",
    replace: "return new RegExp(`^(?:${pattern})`, 'u');",
    tests: ['test/policy.test.ts', 'test/verify-pinning.test.ts'],
  },
  {
    name: 'policy: exact issuer compared by prefix',
    file: 'src/core/policy.ts',
    find: '? signer.issuer === policy.issuer',
    replace: '? signer.issuer.startsWith(policy.issuer)',
    tests: ['test/policy.test.ts', 'test/verify-blob.test.ts'],
  },
  {
    name: 'policy: workflow claims not checked',
    file: 'src/core/policy.ts',
    find: '    if (actual[claim] !== want) {',
    replace: '    if (actual[claim] !== want && actual[claim] !== undefined) {',
    tests: ['test/policy.test.ts', 'test/verify-blob-cosign.test.ts'],
  },
  {
    name: 'release: any tag version accepted',
    file: 'src/core/release.ts',
    find: '  return isSemver(version) ? version : undefined;',
    replace: '  return version.replace(/[-+].*$/, "");',
    tests: IMPORT,
  },
  {
    name: 'import: tag not compared with the version',
    file: 'src/pipeline/import-image.ts',
    find: '  if (tag !== m.version) {',
    replace: '  if (tag === undefined) {',
    tests: IMPORT,
  },
  {
    name: 'import: any variant fills the dev slot',
    file: 'src/pipeline/import-image.ts',
    find: "  if (m.variant !== 'dev') {",
    replace: "  if (m.variant !== 'dev' && false) {",
    tests: IMPORT,
  },
  {
    name: 'import: no recall check just before the publish',
    file: 'src/pipeline/import-image.ts',
    find: '        await refuseIfRecalledNow(manifest, ctx); //',
    replace: '        //',
    tests: IMPORT,
  },
  // src/core: revocations
  {
    name: 'revocation: recall key ignores arch',
    file: 'src/core/revocation.ts',
    find: 'export const recallKey = (r: RecallKey): string => `${r.version}\\u0000${r.variant}\\u0000${r.arch}`;',
    replace:
      'export const recallKey = (r: RecallKey): string => `${r.version}\\u0000${r.variant}`;',
    tests: [...REVOCATIONS, ...IMPORT],
  },
  {
    name: 'revocation: remembered recalls not enforced',
    file: 'src/core/revocation.ts',
    find: 'return findRecall({ revocations: [...(inForce.listed ?? []), ...inForce.remembered] }, image);',
    replace: 'return findRecall({ revocations: [...(inForce.listed ?? [])] }, image);',
    tests: [...REVOCATIONS, ...IMPORT],
  },
  {
    name: 'revocation: a list from the future is fresh',
    file: 'src/core/revocation.ts',
    find: "  if (ageMs < -REVOCATION_CLOCK_SKEW_MS) return 'stale';",
    replace: '',
    tests: REVOCATIONS,
  },
  {
    name: 'revocation: rollback check ignores dropped entries',
    file: 'src/core/revocation.ts',
    find: '  return cached.revocations.filter((r) => !kept.has(recallKey(r)));',
    replace: '  return cached.revocations.filter((r) => !kept.has(recallKey(r)) && false);',
    tests: REVOCATIONS,
  },
  {
    name: 'revocations: older signing accepted',
    file: 'src/revocations/refresh.ts',
    find: 'incoming.signedAt < memory.latestSignedAt) {',
    replace: 'incoming.signedAt < "0") {',
    tests: REVOCATIONS,
  },
  {
    name: 'revocations: forgotten recalls accepted',
    file: 'src/revocations/refresh.ts',
    find: '  if (forgotten.length > 0) {',
    replace: '  if (forgotten.length > 1) {',
    tests: REVOCATIONS,
  },
  // src/io: the owner/mode rule
  {
    name: 'ownership: group-writable accepted',
    file: 'src/io/ownership.ts',
    find: '  if ((st.mode & 0o022) !== 0) {',
    replace: '  if ((st.mode & 0o002) !== 0) {',
    tests: [...REVOCATIONS, 'test/trust-files.test.ts'],
  },
  {
    name: 'ownership: another owner accepted',
    file: 'src/io/ownership.ts',
    find: '  if (st.uid !== rule.uid && !(rule.rootMayOwn && st.uid === 0)) {',
    replace: '  if (st.uid !== rule.uid && false) {',
    tests: [...REVOCATIONS, 'test/trust-files.test.ts'],
  },
  // src/trust: the verifier
  {
    name: 'verify: code-signing EKU not required',
    file: 'src/trust/verify.ts',
    find: '  checkCodeSigningUsage(leaf);\n}',
    replace: '}',
    tests: VERIFY,
  },
  {
    name: 'verify: several identities accepted',
    file: 'src/trust/verify.ts',
    find: 'if (names.length !== 1 ||',
    replace: 'if (names.length < 1 ||',
    tests: VERIFY,
  },
  {
    name: 'verify: issuer bytes not checked for printable ASCII',
    file: 'src/trust/verify.ts',
    find: 'if (v !== undefined && !PRINTABLE_ASCII(v))',
    replace: 'if (false)',
    tests: VERIFY,
  },
  {
    name: 'verify: disagreeing issuer extensions accepted',
    file: 'src/trust/verify.ts',
    find: 'if (v1 !== undefined && v2 !== undefined && !v1.equals(v2)) {',
    replace: 'if (false) {',
    tests: VERIFY,
  },
  {
    name: 'verify: DSSE payload type not checked',
    file: 'src/trust/verify.ts',
    find: "if (env.payloadType !== 'application/vnd.in-toto+json') {",
    replace: 'if (false) {',
    tests: VERIFY,
  },
  {
    name: 'tlog: checkpoint origin not checked',
    file: 'src/trust/tlog.ts',
    find: 'if (origin !== name && !origin.startsWith(`${name} - `)) {',
    replace: 'if (false) {',
    tests: VERIFY,
  },
  {
    name: 'tlog: checkpoint origin matched by prefix',
    file: 'src/trust/tlog.ts',
    find: '!origin.startsWith(`${name} - `)',
    replace: '!origin.startsWith(name)',
    tests: VERIFY,
  },
  {
    name: 'tlog: log key end date ignored',
    file: 'src/trust/tlog.ts',
    find: 'if (integrated < log.validFor.start || integrated > log.validFor.end) {',
    replace: 'if (integrated < log.validFor.start) {',
    tests: VERIFY,
  },
  {
    name: 'tlog: integrated time with a leading zero',
    file: 'src/trust/tlog.ts',
    find: '!/^(0|[1-9][0-9]{0,15})$/.test(entry.integratedTime) ||',
    replace: '!/^[0-9]{1,16}$/.test(entry.integratedTime) ||',
    tests: VERIFY,
  },
  {
    name: 'tlog: empty log ID accepted',
    file: 'src/trust/tlog.ts',
    find: 'if (!logId || logId.length === 0)',
    replace: 'if (!logId)',
    tests: VERIFY,
  },
  {
    name: 'tlog: DSSE logged as hashedrekord 0.0.1 accepted',
    file: 'src/trust/tlog.ts',
    find: "    case 'hashedrekord/0.0.1':\n      if (isDsse) {",
    replace: "    case 'hashedrekord/0.0.1':\n      if (isDsse && false) {",
    tests: REKOR,
  },
  // src/telemetry: the audit chain
  {
    name: 'audit: chain link not checked',
    file: 'src/audit/chain.ts',
    find: '    } else if (r.prev !== this.prev || r.seq !== this.seq + 1) {',
    replace: '    } else if (r.seq !== this.seq + 1) {',
    tests: AUDIT,
  },
  {
    name: 'audit: sequence not checked',
    file: 'src/audit/chain.ts',
    find: '    } else if (r.prev !== this.prev || r.seq !== this.seq + 1) {',
    replace: '    } else if (r.prev !== this.prev) {',
    tests: AUDIT,
  },
  {
    name: 'audit: truncation below the anchor accepted',
    file: 'src/audit/record.ts',
    find: '  if (anchor.seq > seq)',
    replace: '  if (anchor.seq > seq + 1)',
    tests: AUDIT,
  },

  // src/net: the online path
  {
    name: 'fetch: the token follows a redirect to another origin',
    file: 'src/net/http.ts',
    find: '    if (this.opts.credential && target.origin === this.opts.credential.origin) {',
    replace: '    if (this.opts.credential) {',
    tests: ['test/dev-fetch.test.ts'],
  },
  {
    name: 'fetch: a download is renamed into place without its digest compared',
    file: 'src/net/download.ts',
    find: '  if (!sameDigest(done.sha256, req.sha256)) {',
    replace: '  if (false) {',
    tests: ['test/download.test.ts', 'test/dev-fetch.test.ts'],
  },
  {
    name: 'fetch: a resumed answer at another offset is appended',
    file: 'src/net/download.ts',
    find: '          if (!range || range.start !== from || (total !== undefined && range.total !== total)) {',
    replace: '          if (!range) {',
    tests: ['test/download.test.ts', 'test/dev-fetch.test.ts'],
  },
  {
    name: 'fetch: a proxy named by the environment is bypassed for release files',
    file: 'src/net/http.ts',
    find: '    if (proxyConfigured()) return this.streamThroughUndici(target, o, handler);',
    replace: '    if (false) return this.streamThroughUndici(target, o, handler);',
    tests: ['test/dev-fetch.test.ts'],
  },
  {
    name: "http1: a chunked body is read into the sink's own space",
    file: 'src/net/http1.ts',
    find: "!head && !finished && framing?.kind !== 'chunked' ? sink.room?.() : undefined;",
    replace: '!head && !finished ? sink.room?.() : undefined;',
    tests: ['test/http1.test.ts'],
  },
  {
    name: 'download: a piece read into a batch is not counted',
    file: 'src/net/hashing-sink.ts',
    find: '      this.fill += chunk.length;\n',
    replace: '',
    tests: ['test/download.test.ts'],
  },
  {
    name: 'download: the partial is closed before the workers are done with it',
    file: 'src/net/hashing-sink.ts',
    find: "    await this.request('close', 'closed').catch(() => undefined);",
    replace: "    void this.request('close', 'closed').catch(() => undefined);",
    tests: ['test/download.test.ts'],
  },
  {
    name: 'http1: Content-Length beside Transfer-Encoding accepted (request smuggling)',
    file: 'src/net/http1.ts',
    find: "    if (cl.length > 0) throw new ProtocolError('both Content-Length and Transfer-Encoding');",
    replace: '',
    tests: ['test/http1.test.ts'],
  },
  {
    name: 'http1: the response head is not bounded',
    file: 'src/net/http1.ts',
    find: '            if (all.length - start > MAX_HEAD_BYTES + 3) {',
    replace: '            if (false) {',
    tests: ['test/http1.test.ts'],
  },
  {
    name: 'http1: a body cut short of its Content-Length is taken as complete',
    file: 'src/net/http1.ts',
    find: "      if (framing?.kind === 'close') finish();",
    replace: '      if (true) finish();',
    tests: ['test/http1.test.ts'],
  },
  {
    name: 'metrics server: header size limit left at Node default (16 KiB)',
    file: 'src/telemetry/server.ts',
    find: '      maxHeaderSize: MAX_HEADER_BYTES,\n',
    replace: '',
    tests: ['test/metrics-serve.test.ts'],
  },
  {
    name: 'metrics server: no connection cap',
    file: 'src/telemetry/server.ts',
    find: '    if (this.waiting.size + this.busy.size >= this.max) {',
    replace: '    if (false) {',
    tests: ['test/metrics-server.test.ts'],
  },
  {
    name: 'metrics server: at the cap the newcomer is closed, as Node does (a hog locks scrapers out)',
    file: 'src/telemetry/server.ts',
    find: '      if (longest.done) {',
    replace: '      if (true) {',
    tests: ['test/metrics-server.test.ts'],
  },
];
