// Requests per client (see auth.ts for what a client is), counted in Redis so that every API process
// shares one count, with a window per key that Redis expires by itself: memory stays bounded by the
// clients active in the last window, and no client's count is ever cleared to make room for another.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Request, Response, NextFunction, RequestHandler } from 'express';
import type { Store } from '../src/store/store.ts';
import type { Cluster } from 'ioredis';
import { rateLimit as expressRateLimit } from 'express-rate-limit';
import { RedisStore, type RedisReply } from 'rate-limit-redis';
import { HttpProblem } from './problem.ts';
import { clientOf, type Client } from './auth.ts';

/**
 * perMinute is the sustained rate; a client may spend a burst of a fifth of it (at least 10) at once.
 * A fixed window of burst requests per burst/perMinute minutes gives both. Undefined when perMinute is 0:
 * no limit, and nothing for either path to call.
 */
export function rateLimit(perMinute: number, store: Store): RequestHandler | undefined {
  if (perMinute <= 0) return undefined;
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
      res.setHeader('retry-after', String(wait));
      next(new HttpProblem(429, 'Too many requests', `the limit is ${perMinute} requests a minute per client (bursts of ${burst}); retry in ${wait} s`));
    },
  });
}

/**
 * The same limiter (one count, one store) for a request that express never sees: the plain submission
 * handler of api/intake.ts. express-rate-limit reads only what its options name (our key generator reads
 * the client from res.locals) and writes its headers with setHeader and express's res.append, so a Node
 * response given those two answers exactly as through express. Resolves to the 429 problem when the
 * client is over its limit (its RateLimit and retry-after headers are set on res either way).
 */
export function limitOutsideExpress(limiter: RequestHandler): (req: IncomingMessage, res: ServerResponse, client: Client) => Promise<HttpProblem | undefined> {
  return (req, res, client) => {
    Object.assign(res, { locals: { client }, append: (field: string, value: string) => appendHeader(res, field, value) });
    return new Promise((resolve, reject) => {
      limiter(req as Request, res as unknown as Response, (err?: unknown) => {
        if (err === undefined || err === null) resolve(undefined);
        else if (err instanceof HttpProblem && err.status === 429) resolve(err);
        else reject(err);
      });
    });
  };
}

/** express's res.append: a second value of a header joins the first as a list. */
function appendHeader(res: ServerResponse, field: string, value: string): ServerResponse {
  const prev = res.getHeader(field);
  return res.setHeader(field, prev === undefined ? value : ([] as string[]).concat(prev as string | string[], value));
}
