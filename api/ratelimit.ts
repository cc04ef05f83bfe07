// A token bucket per client (bearer token when there is one, else the remote address), so one runaway
// script cannot starve the lab's other users. In memory per API process: a limit, not an accounting.
import type { NextFunction, Request, Response } from 'express';
import { createHash } from 'node:crypto';
import { HttpProblem } from './problem.ts';

export function rateLimit(perMinute: number, burst = Math.max(10, Math.ceil(perMinute / 5))) {
  const buckets = new Map<string, { tokens: number; at: number }>();
  const rate = perMinute / 60_000;
  return (req: Request, res: Response, next: NextFunction) => {
    if (perMinute <= 0) return next();
    const auth = req.get('authorization');
    // Key by a digest of the token, so the map never holds a secret.
    const key = auth ? createHash('sha256').update(auth).digest('base64') : (req.ip ?? 'unknown');
    const now = Date.now();
    const b = buckets.get(key) ?? { tokens: burst, at: now };
    b.tokens = Math.min(burst, b.tokens + (now - b.at) * rate);
    b.at = now;
    if (buckets.size > 10_000) buckets.clear(); // bounded memory under a flood of addresses
    buckets.set(key, b);
    if (b.tokens < 1) {
      const wait = Math.ceil((1 - b.tokens) / rate / 1000);
      res.set('retry-after', String(wait));
      return next(new HttpProblem(429, 'Too many requests', `the limit is ${perMinute} requests a minute per client; retry in ${wait} s`));
    }
    b.tokens -= 1;
    next();
  };
}
