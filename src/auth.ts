// Bearer tokens (KVMQ_API_TOKENS): one check shared by the API, its queue board and a worker's metrics port.
import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * Answers, for an Authorization header, an id of the token it carries when that is one of `tokens`
 * (a digest prefix, never the token itself), else undefined.
 */
export function tokenIdentifier(tokens: string[]): (header: string | undefined) => string | undefined {
  // Hash both sides so the comparison takes the same time whatever the lengths.
  const digests = tokens.map((t) => createHash('sha256').update(t).digest());
  return (header) => {
    const m = /^Bearer (.+)$/.exec(header ?? '');
    const given = createHash('sha256').update(m?.[1] ?? '').digest();
    const ok = m !== null && digests.some((d) => timingSafeEqual(d, given));
    return ok ? given.toString('hex').slice(0, 32) : undefined;
  };
}

/** Answers whether an Authorization header carries one of `tokens`; anything passes when there are none. */
export function bearerChecker(tokens: string[]): (header: string | undefined) => boolean {
  const idOf = tokenIdentifier(tokens);
  return (header) => !tokens.length || idOf(header) !== undefined;
}
