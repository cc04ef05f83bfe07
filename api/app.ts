// The express application: JSON in, JSON or problem+json out. Routes live in their own modules; this
// file wires parsing, auth, the error handler and the small read-only routes.
import express, { type NextFunction, type Request, type Response } from 'express';
import { pinoHttp } from 'pino-http';
import { experimentsRouter, type ApiDeps } from './experiments.ts';
import { HttpProblem, sendProblem } from './problem.ts';
import { BUILTIN_PROFILES, SYSCTL_KEYS } from '../src/model/profile.ts';
import { PRESETS } from '../src/model/preset.ts';
import { openApiDocument } from './openapi.ts';
import { hostsRouter } from './hosts.ts';
import { metricsRouter } from './metrics.ts';
import { boardRouter } from './board.ts';
import { compareRouter } from './compare.ts';
import { seriesRouter } from './series.ts';
import { dashboardRouter, chartRouter, DASHBOARD_CSP } from './dashboard.ts';
import helmet from 'helmet';
import { rateLimit } from './ratelimit.ts';
import { browserGuard } from './guard.ts';
import { identify, bearerAuth } from './auth.ts';
import { batchesRouter } from './batches.ts';
import { schedulesRouter } from './schedules.ts';
import { deliveriesRouter } from './deliveries.ts';
import { Schedules } from '../src/queue/schedule.ts';

export function createApp(deps: ApiDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  app.use(securityHeaders());

  if (deps.logger) {
    // One line per request when it finishes. Only method, path and status: headers carry tokens and
    // cookies, and query strings can carry ids a log reader need not see twice.
    app.use(pinoHttp({
      logger: deps.logger,
      customLogLevel: (_req, res, err) => (err || res.statusCode >= 500 ? 'error' : res.statusCode >= 400 ? 'warn' : 'info'),
      serializers: { req: (req: { id: unknown; method: string; url: string }) => ({ id: req.id, method: req.method, path: req.url.split('?')[0] }), res: (res: { statusCode: number }) => ({ status: res.statusCode }) },
      autoLogging: { ignore: (req) => req.url === '/healthz' || req.url === '/readyz' },
    }));
  }

  app.use(browserGuard({ tokens: deps.config.apiTokens.length > 0, allowedHosts: deps.config.allowedHosts }));

  app.get('/healthz', (_req, res) => void res.json({ status: 'ok' }));
  app.get('/readyz', async (_req, res) => {
    // A real write and read under the base tag and every pool's tag: reachable is not the same as usable.
    const problem = await readiness(deps.store);
    if (problem) throw new HttpProblem(503, 'Not ready', problem);
    res.json({ status: 'ready' });
  });
  app.get('/openapi.json', (_req, res) => void res.json(openApiDocument()));
  app.use(dashboardRouter());
  app.use('/metrics', identify(deps.config.apiTokens), bearerAuth(), metricsRouter(deps));
  app.use(boardRouter(deps));

  // The limit counts before auth refuses, so wrong tokens count against their address.
  app.use('/v1', identify(deps.config.apiTokens));
  app.use('/v1', rateLimit(deps.config.rateLimit, deps.store));
  app.use('/v1', bearerAuth());
  app.use('/v1', express.json({ limit: '1mb', strict: false, type: ['application/json', 'application/*+json'] }));
  app.use('/v1/experiments', experimentsRouter(deps));
  app.use('/v1', deliveriesRouter(deps));
  app.use('/v1/batches', batchesRouter(deps));
  app.use('/v1/schedules', schedulesRouter({ ...deps, schedules: deps.schedules ?? new Schedules(deps.store.redis, deps.store, deps.queues, deps.config) }));
  app.use('/v1/hosts', hostsRouter(deps.store));
  app.use('/v1/compare', compareRouter(deps));
  app.use('/v1/series', seriesRouter(deps));
  app.use('/v1', chartRouter(deps));
  app.get('/v1/profiles', (_req, res) => void res.json({ items: Object.values(BUILTIN_PROFILES), allowedKeys: SYSCTL_KEYS }));
  app.get('/v1/presets', (_req, res) => void res.json({ items: Object.entries(PRESETS).map(([name, p]) => ({ name, ...p })) }));

  app.use((req, _res, next) => next(new HttpProblem(404, 'Not found', `no route for ${req.method} ${req.path}`)));
  app.use(errorHandler);
  return app;
}

const READY_TIMEOUT_MS = 3000;

/** Undefined when the store takes writes; else why not (never a secret: Redis errors carry none). */
async function readiness(store: ApiDeps['store']): Promise<string | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<string>((r) => (timer = setTimeout(() => r(`Redis did not answer a write and read within ${READY_TIMEOUT_MS} ms`), READY_TIMEOUT_MS)));
  const check = store.pools().then((pools) => store.probe(pools)).then(
    () => undefined,
    (err: Error) => `Redis cannot take writes: ${err.message}`,
  );
  try {
    return await Promise.race([check, late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * helmet's headers, with the dashboard's strict policy as the default CSP for every response (the chart
 * route narrows it further). No upgrade-insecure-requests and no HSTS: kvmq speaks plain HTTP on loopback,
 * and TLS, where there is any, belongs to the proxy in front of it.
 */
function securityHeaders() {
  return helmet({
    contentSecurityPolicy: { useDefaults: false, directives: DASHBOARD_CSP },
    strictTransportSecurity: false,
    xFrameOptions: { action: 'deny' },
    referrerPolicy: { policy: 'no-referrer' },
  });
}

function errorHandler(err: unknown, req: Request, res: Response, _next: NextFunction): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  if (err instanceof HttpProblem) return sendProblem(res, err, req.originalUrl);
  const e = err as { type?: string; status?: number; message?: string; body?: string };
  // body-parser's own errors carry a status and a type; turn each into a clear 4xx.
  if (e.type === 'entity.parse.failed') return sendProblem(res, new HttpProblem(400, 'Malformed JSON', e.message), req.originalUrl);
  if (e.type === 'entity.too.large') return sendProblem(res, new HttpProblem(413, 'Body too large', 'the limit is 1 MiB'), req.originalUrl);
  if (e.type === 'charset.unsupported' || e.type === 'encoding.unsupported') return sendProblem(res, new HttpProblem(415, 'Unsupported encoding', e.message), req.originalUrl);
  if (typeof e.status === 'number' && e.status >= 400 && e.status < 500) return sendProblem(res, new HttpProblem(e.status, 'Bad request', e.message), req.originalUrl);
  if (req.log) req.log.error({ err }, 'request failed');
  else console.error(`api: ${req.method} ${req.originalUrl}:`, err);
  sendProblem(res, new HttpProblem(500, 'Internal error', 'the error is logged on the server'), req.originalUrl);
}
