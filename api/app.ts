// The express application: JSON in, JSON or problem+json out. Routes live in their own modules; this
// file wires parsing, auth, the error handler and the small read-only routes.
import type { RequestListener } from 'node:http';
import express, { type NextFunction, type Request, type Response } from 'express';
import { experimentsRouter, experimentIntake, type ApiDeps } from './experiments.ts';
import { HttpProblem, INTERNAL_PROBLEM, problemOf, sendProblem } from './problem.ts';
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
import { limitOutsideExpress, rateLimit } from './ratelimit.ts';
import { guardCheck } from './guard.ts';
import { clientFor, identify, bearerAuth } from './auth.ts';
import { requestLog } from './requestlog.ts';
import { BODY_LIMIT, fastIntake } from './intake.ts';
import { batchesRouter } from './batches.ts';
import { schedulesRouter } from './schedules.ts';
import { deliveriesRouter } from './deliveries.ts';
import { Schedules } from '../src/queue/schedule.ts';

export interface Api {
  /** The express app: every route. */
  app: express.Express;
  /**
   * The server's request listener: POST /v1/experiments through the plain handler in front of express
   * (api/intake.ts) where it applies, everything else through the app.
   */
  listener: RequestListener;
  /** The plain handler alone (true when it took the request, false when it leaves it to the app). */
  fast: (req: Parameters<RequestListener>[0], res: Parameters<RequestListener>[1]) => boolean;
}

/**
 * The API: the express app and, in front of it, the plain handler for submissions. Both are built from
 * the same parts here (security headers, guard, client identity, request log, the submit itself), so
 * they check and answer alike (test/intake.test.ts compares them).
 */
export function createApi(deps: ApiDeps): Api {
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  const headers = securityHeaders();
  app.use((_req, res, next) => {
    for (const [name, value] of headers) res.setHeader(name, value);
    next();
  });

  // One line per request when it finishes. Only method, path and status: headers carry tokens and
  // cookies, and query strings can carry ids a log reader need not see twice.
  const log = deps.logger ? requestLog(deps.logger) : undefined;
  if (log) app.use(log.middleware);

  const guard = guardCheck({ tokens: deps.config.apiTokens.length > 0, allowedHosts: deps.config.allowedHosts });
  app.use((req, _res, next) => next(guard(req.method, req.headers)));
  const intake = experimentIntake(deps);
  // One limiter (express-rate-limit on Redis) for both paths, so a client has one count whichever takes it.
  const limiter = rateLimit(deps.config.rateLimit, deps.store);
  const fast = fastIntake({
    securityHeaders: headers, guard, identify: clientFor(deps.config.apiTokens), accept: intake, etag: app.get('etag fn'),
    ...(limiter ? { limit: limitOutsideExpress(limiter) } : {}),
    ...(log ? { log } : {}), ...(deps.logger ? { logger: deps.logger } : {}),
  });

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
  if (limiter) app.use('/v1', limiter);
  app.use('/v1', bearerAuth());
  app.use('/v1', express.json({ limit: BODY_LIMIT, strict: false, type: ['application/json', 'application/*+json'] }));
  app.use('/v1/experiments', experimentsRouter(deps, intake));
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
  const listener: RequestListener = (req, res) => void (fast(req, res) || app(req, res));
  return { app, listener, fast };
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
 * and TLS, where there is any, belongs to the proxy in front of it. The policy is static (no nonce, nothing
 * per request), so helmet runs once here and every response, through express or not, gets the list.
 */
function securityHeaders(): [string, string][] {
  const list: [string, string][] = [];
  const res = { setHeader: (name: string, value: unknown) => void list.push([name, String(value)]), removeHeader: () => {} };
  let failed: unknown;
  helmet({
    contentSecurityPolicy: { useDefaults: false, directives: DASHBOARD_CSP },
    strictTransportSecurity: false,
    xFrameOptions: { action: 'deny' },
    referrerPolicy: { policy: 'no-referrer' },
  })({} as never, res as never, (err?: unknown) => void (failed = err));
  if (failed) throw failed;
  return list;
}

function errorHandler(err: unknown, req: Request, res: Response, _next: NextFunction): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const problem = problemOf(err);
  if (problem) return sendProblem(res, problem, req.originalUrl);
  if (req.log) req.log.error({ err }, 'request failed');
  else console.error(`api: ${req.method} ${req.originalUrl}:`, err);
  sendProblem(res, INTERNAL_PROBLEM, req.originalUrl);
}
