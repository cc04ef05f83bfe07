// Requests per client (see auth.ts for what a client is), counted in Redis so that every API process
// shares one count, with a window per key that Redis expires by itself: memory stays bounded by the
// clients active in the last window, and no client's count is ever cleared to make room for another.
import type { Request, Response, NextFunction, RequestHandler } from 'express';
import type { Store } from '../src/store/store.ts';
import type { Cluster } from 'ioredis';
import { rateLimit as expressRateLimit } from 'express-rate-limit';
import { RedisStore, type RedisReply } from 'rate-limit-redis';
import { HttpProblem } from './problem.ts';
import { clientOf } from './auth.ts';

/**
 * perMinute is the sustained rate; a client may spend a burst of a fifth of it (at least 10) at once.
 * A fixed window of burst requests per burst/perMinute minutes gives both.
 */
export function rateLimit(perMinute: number, store: Store): RequestHandler {
  if (perMinute <= 0) return (_req, _res, next) => next();
  const burst = Math.max(10, Math.ceil(perMinute / 5));
  const windowMs = Math.max(1000, Math.round((60_000 * burst) / perMinute));
  return expressRateLimit({
    windowMs,
    limit: burst,
    standardHeaders: 'draft-8',
    legacyHeaders: false,
    keyGenerator: (_req: Request, res: Response) => clientOf(res).key,
    store: new RedisStore({
      // The store appends the client key; every key is one name from keys.ts under the base tag.
      prefix: store.key('ratelimit', ''),
      sendCommandCluster: async ({ command: [name, ...args] }) => {
        const redis = store.redis;
        // SCRIPT LOAD names no key, so a Cluster would send it to any node: load it on every master,
        // and the node owning the base tag's slot has it for the EVALSHA that follows.
        if (redis.isCluster && name.toUpperCase() === 'SCRIPT') {
          const shas = await Promise.all((redis as Cluster).nodes('master').map((n) => n.call(name, ...args)));
          return shas[0] as RedisReply;
        }
        return (await redis.call(name!, ...args)) as RedisReply;
      },
    }),
    handler: (req: Request, res: Response, next: NextFunction) => {
      const reset = (req as Request & { rateLimit?: { resetTime?: Date } }).rateLimit?.resetTime;
      const wait = Math.max(1, Math.ceil(((reset?.getTime() ?? Date.now() + windowMs) - Date.now()) / 1000));
      res.set('retry-after', String(wait));
      next(new HttpProblem(429, 'Too many requests', `the limit is ${perMinute} requests a minute per client (bursts of ${burst}); retry in ${wait} s`));
    },
  });
}
