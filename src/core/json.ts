/** Decodes bytes as strict UTF-8 and parses one JSON object; returns a reason on failure, never throws. */
export function parseJsonObject(
  bytes: Uint8Array,
): { ok: true; value: Record<string, unknown> } | { ok: false; reason: string } {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    return { ok: false, reason: 'not valid UTF-8' };
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    return { ok: false, reason: `not valid JSON (${(e as Error).message})` };
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return { ok: false, reason: 'not a JSON object' };
  }
  return { ok: true, value: value as Record<string, unknown> };
}
