// Bearer tokens (KVMQ_API_TOKENS): one check shared by the API, its queue board and a worker's metrics port.
import { createHash, timingSafeEqual } from 'node:crypto';

/** Answers whether an Authorization header carries one of `tokens`; anything passes when there are none. */
export function bearerChecker(tokens: string[]): (header: string | undefined) => boolean {
  // Hash both sides so the comparison takes the same time whatever the lengths.
  const digests = tokens.map((t) => createHash('sha256').update(t).digest());
  return (header) => {
    if (!digests.length) return true;
    const m = /^Bearer (.+)$/.exec(header ?? '');
    const given = createHash('sha256').update(m?.[1] ?? '').digest();
    return m !== null && digests.some((d) => timingSafeEqual(d, given));
  };
}
