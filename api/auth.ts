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

/**
 * Who a request is, from its Authorization header and its peer address (express's req.ip, which is the
 * socket's address: the app trusts no proxy header). Shared by the express middleware and the plain
 * intake handler (api/intake.ts).
 */
export function clientFor(tokens: string[]): (authorization: string | undefined, ip: string | undefined) => Client {
  const idOf = tokenIdentifier(tokens);
  return (authorization, ip) => {
    const addr = `addr:${ipKeyGenerator(ip ?? 'unknown')}`;
    if (!tokens.length) return { key: addr, authenticated: true };
    const id = idOf(authorization);
    return id ? { key: `token:${id}`, authenticated: true } : { key: addr, authenticated: false };
  };
}

/** The refusal of a client without a valid token; undefined for one with. */
export function authProblem(client: Client): HttpProblem | undefined {
  return client.authenticated ? undefined : new HttpProblem(401, 'Unauthorized', 'send Authorization: Bearer <token>');
}

/** Sets res.locals.client; refuses nothing itself (bearerAuth does, after the rate limit has counted). */
export function identify(tokens: string[]) {
  const who = clientFor(tokens);
  return (req: Request, res: Response, next: NextFunction) => {
    res.locals.client = who(req.get('authorization'), req.ip);
    next();
  };
}

export function bearerAuth() {
  return (_req: Request, res: Response, next: NextFunction) => {
    next(authProblem(clientOf(res)));
  };
}
