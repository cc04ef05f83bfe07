// One log line per finished request: method, path and status (headers carry tokens and cookies, and
// query strings ids a log reader need not see twice). The express app writes it through pino-http; the
// plain intake handler (api/intake.ts) writes the same line itself, numbered from the same counter,
// without pino-http's child logger and listeners per request.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pinoHttp, type HttpLogger } from 'pino-http';
import type { Logger } from '../src/observe/log.ts';

/** The request as the line shows it. */
export interface LoggedRequest {
  id: number;
  method: string;
  path: string;
}

const levelOf = (status: number, err?: unknown) => (err || status >= 500 ? 'error' : status >= 400 ? 'warn' : 'info');

export interface RequestLog {
  /** pino-http for the express app. */
  middleware: HttpLogger<IncomingMessage, ServerResponse>;
  /** The next request id (pino-http's own numbering: 1, 2, ... wrapping at 2^31). */
  nextId(): number;
  /** The line pino-http writes when a response finishes, for a request answered outside express. */
  finished(req: LoggedRequest, status: number, startedAt: number): void;
}

export function requestLog(logger: Logger): RequestLog {
  let last = 0;
  const nextId = () => (last = (last + 1) & 0x7fffffff);
  const middleware = pinoHttp({
    logger,
    genReqId: (req) => (req as IncomingMessage & { id?: number }).id ?? nextId(),
    customLogLevel: (_req, res, err) => levelOf(res.statusCode, err),
    serializers: {
      req: (req: { id: number; method: string; url: string }): LoggedRequest => ({ id: req.id, method: req.method, path: req.url.split('?')[0]! }),
      res: (res: ServerResponse | { statusCode: number }) => ({ status: res.statusCode }),
    },
    autoLogging: { ignore: (req) => req.url === '/healthz' || req.url === '/readyz' },
  });
  return {
    middleware,
    nextId,
    finished(req, status, startedAt) {
      const responseTime = Date.now() - startedAt;
      // As pino-http words it: a 5xx is logged with an error naming its status.
      if (status >= 500) logger.error({ req, res: { status }, err: new Error(`failed with status code ${status}`), responseTime }, 'request errored');
      else logger[levelOf(status)]({ req, res: { status }, responseTime }, 'request completed');
    },
  };
}
