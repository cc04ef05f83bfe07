// POST /v1/experiments without express. A submission is the API's hot request, and through express it
// cost eight times the CPU of the HTTP floor (bench/RESULTS.md): the router and the middleware chain in
// front of the route, body-parser, pino-http's child logger and listeners per request. This handler sits
// in front of the express app (the server's listener asks it first) and runs the same parts the app
// does, built once in api/app.ts: the security headers, the browser guard, the client's identity and
// bearer check, the JSON body, the submit (validation, admission, quota, one MULTI) and its 202, the
// problem answers and the request line. It takes only requests whose framing it reads exactly as
// body-parser would (plain application/json in UTF-8, a Content-Length within the limit, no
// Content-Encoding); any other request goes to express. With the rate limit on, it counts the request with
// the app's own limiter (api/ratelimit.ts), so both paths share one count per client.
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { HttpProblem, INTERNAL_PROBLEM, PROBLEM_TYPE, problemBody, problemOf } from './problem.ts';
import { authProblem, type Client } from './auth.ts';
import type { Accepted } from './experiments.ts';
import type { LoggedRequest, RequestLog } from './requestlog.ts';
import type { Logger } from '../src/observe/log.ts';

/** The largest JSON body any /v1 route takes (express.json's limit too): 1 MiB. */
export const BODY_LIMIT = 1024 * 1024;

const PATH = '/v1/experiments';
const JSON_TYPE = 'application/json; charset=utf-8';
/** application/json with no parameter but a UTF-8 charset: what body-parser reads as UTF-8 and req.is calls JSON. */
const PLAIN_JSON = /^application\/json[ \t]*(;[ \t]*charset=("?)utf-8\2[ \t]*)?$/i;

export interface IntakeParts {
  /** Set on every answer, as the app's first middleware sets them. */
  securityHeaders: readonly (readonly [string, string])[];
  guard: (method: string, headers: IncomingHttpHeaders) => HttpProblem | undefined;
  identify: (authorization: string | undefined, ip: string | undefined) => Client;
  accept: (body: unknown, client: Client) => Promise<Accepted>;
  /** The app's rate limiter, when the limit is on: sets its headers on res, and answers the 429 when over. */
  limit?: (req: IncomingMessage, res: ServerResponse, client: Client) => Promise<HttpProblem | undefined>;
  /** express's own ETag function (the app's `etag fn` setting). */
  etag?: (body: string, encoding: 'utf8') => string | undefined;
  log?: RequestLog;
  logger?: Logger;
}

/** The handler: true when it took the request (and will answer it), false to leave it to express. */
export function fastIntake(parts: IntakeParts): (req: IncomingMessage, res: ServerResponse) => boolean {
  const { guard, identify, accept, limit, etag, log, logger } = parts;
  const base = parts.securityHeaders.flat();
  const first = parts.securityHeaders[0]?.[0];

  const send = (res: ServerResponse, logged: LoggedRequest, startedAt: number, status: number, type: string, body: string, location?: string) => {
    // With the limiter, the security headers are already set on res, ahead of its own (as in express).
    const headers = first !== undefined && res.hasHeader(first) ? [] : [...base];
    if (location) headers.push('Location', location);
    headers.push('Content-Type', type, 'Content-Length', String(Buffer.byteLength(body)));
    const tag = etag?.(body, 'utf8');
    if (tag) headers.push('ETag', tag);
    res.writeHead(status, headers);
    // A string body goes out in one write with the head (a Buffer would be a second one).
    res.end(body);
    log?.finished(logged, status, startedAt);
  };
  const refuse = (res: ServerResponse, logged: LoggedRequest, startedAt: number, p: HttpProblem) =>
    send(res, logged, startedAt, p.status, PROBLEM_TYPE, problemBody(p, PATH));

  const answer = async (req: IncomingMessage, res: ServerResponse) => {
    const startedAt = Date.now();
    const logged: LoggedRequest = { id: log ? log.nextId() : 0, method: 'POST', path: PATH };
    try {
      // In the app's order: the guard, then who is asking and whether they may, then the body.
      const refused = guard('POST', req.headers);
      if (refused) return refuse(res, logged, startedAt, refused);
      const client = identify(req.headers.authorization, req.socket.remoteAddress);
      if (limit) {
        // express sets the security headers first and the limiter's after them: the same order here.
        for (const [name, value] of parts.securityHeaders) res.setHeader(name, value);
        const over = await limit(req, res, client);
        if (over) return refuse(res, logged, startedAt, over);
      }
      const unauthorized = authProblem(client);
      if (unauthorized) return refuse(res, logged, startedAt, unauthorized);
      const raw = await readBody(req);
      if (!raw) return; // the client went away; there is no one to answer
      const accepted = await accept(parseJson(raw), client);
      send(res, logged, startedAt, 202, JSON_TYPE, JSON.stringify(accepted), accepted.links.self);
    } catch (err) {
      const problem = problemOf(err);
      if (!problem) {
        if (logger) logger.error({ req: logged, err }, 'request failed');
        else console.error(`api: POST ${PATH}:`, err);
      }
      refuse(res, logged, startedAt, problem ?? INTERNAL_PROBLEM);
    }
  };

  return (req, res) => {
    if (req.method !== 'POST' || req.url !== PATH) return false;
    const h = req.headers;
    const length = h['content-length'];
    if (length === undefined || !(Number(length) <= BODY_LIMIT) || h['content-encoding'] !== undefined || h['transfer-encoding'] !== undefined) return false;
    if (!PLAIN_JSON.test(h['content-type'] ?? '')) return false;
    void answer(req, res);
    return true;
  };
}

/** The whole body (Node holds it to its Content-Length), or undefined when the client left first. */
function readBody(req: IncomingMessage): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    // The rate limit's round trip comes first: a client that left meanwhile sends no 'close' again.
    if (req.destroyed) return resolve(undefined);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
    req.on('error', () => resolve(undefined));
    req.on('close', () => resolve(undefined)); // after 'end' this changes nothing
  });
}

/** JSON as body-parser parses it (strict off): a BOM dropped, an empty body read as {}, its errors typed. */
function parseJson(raw: Buffer): unknown {
  let text = raw.toString('utf8');
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  if (text.length === 0) return {};
  try {
    return JSON.parse(text);
  } catch (err) {
    throw Object.assign(err as Error, { type: 'entity.parse.failed' });
  }
}
