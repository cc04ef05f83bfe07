// Who is asking: the verified bearer token when there is one, else the client address. The rate limit,
// the event-stream caps and the queued-work quota all count by this key, so a wrong or made-up token is
// counted against the address it came from, not as a fresh client each time.
import type { NextFunction, Request, Response } from 'express';
import { tokenIdentifier } from '../src/auth.ts';
import { ipKeyGenerator } from 'express-rate-limit';
import { HttpProblem } from './problem.ts';

export interface Client {
  /** `token:<digest prefix>` for a verified token, `addr:<address>` otherwise; never the token itself. */
  key: string;
  /** The request carried a valid token (always true when the API runs without tokens). */
  authenticated: boolean;
}

export function clientOf(res: Response): Client {
  return (res.locals.client as Client | undefined) ?? { key: 'addr:unknown', authenticated: false };
}

/** Sets res.locals.client; refuses nothing itself (bearerAuth does, after the rate limit has counted). */
export function identify(tokens: string[]) {
  const idOf = tokenIdentifier(tokens);
  return (req: Request, res: Response, next: NextFunction) => {
    const addr = `addr:${ipKeyGenerator(req.ip ?? 'unknown')}`;
    if (!tokens.length) {
      res.locals.client = { key: addr, authenticated: true } satisfies Client;
      return next();
    }
    const id = idOf(req.get('authorization'));
    res.locals.client = (id ? { key: `token:${id}`, authenticated: true } : { key: addr, authenticated: false }) satisfies Client;
    next();
  };
}

export function bearerAuth() {
  return (_req: Request, res: Response, next: NextFunction) => {
    next(clientOf(res).authenticated ? undefined : new HttpProblem(401, 'Unauthorized', 'send Authorization: Bearer <token>'));
  };
}
