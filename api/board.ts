// The queue board: bull-board's UI at /admin/queues, showing every pool's experiment queue and the
// webhook queue, behind the API's bearer tokens. A browser cannot send a bearer header on navigation,
// so POST /admin/login trades a token for an HttpOnly, SameSite=Strict cookie scoped to /admin; a
// script may send the header instead. Without tokens (loopback only) the board is open like /v1.
import express, { Router, type NextFunction, type Request, type Response } from 'express';
import { bearerChecker } from '../src/auth.ts';
import { listHosts } from '../src/store/registry.ts';
import { HttpProblem } from './problem.ts';
import type { ApiDeps } from './experiments.ts';

export const BOARD_PATH = '/admin/queues';
const COOKIE = 'kvmq_admin';

// bull-board's page styles elements inline and loads its script and CSS from its own path: inline
// style is allowed here (and only here), script stays same-origin only, fonts from the internet are not
// loaded (the page falls back to a system font).
const BOARD_CSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'";
const LOGIN_CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

function cookieToken(req: Request): string | undefined {
  for (const part of (req.get('cookie') ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === COOKIE) {
      try {
        return decodeURIComponent(v.join('='));
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}

export function boardRouter(deps: Pick<ApiDeps, 'queues' | 'store' | 'webhooks' | 'config'>): Router {
  const check = bearerChecker(deps.config.apiTokens);
  const authorized = (req: Request) => check(req.get('authorization')) || (cookieToken(req) !== undefined && check(`Bearer ${cookieToken(req)}`));
  const r = Router();

  r.get('/admin/login', (_req, res) => {
    res.set({ 'content-type': 'text/html; charset=utf-8', 'content-security-policy': LOGIN_CSP, 'cache-control': 'no-store' }).send(
      `<!doctype html><meta charset="utf-8"><title>kvmq queue board</title><form method="post" action="login" style="font-family:sans-serif;margin:3em">` +
        `<label>API token <input type="password" name="token" autocomplete="current-password" autofocus></label> <button>Open the queue board</button></form>`,
    );
  });
  r.post('/admin/login', express.urlencoded({ extended: false, limit: '4kb' }), (req, res) => {
    const token = typeof req.body?.token === 'string' ? req.body.token : '';
    if (!check(`Bearer ${token}`)) throw new HttpProblem(401, 'Unauthorized', 'that is not one of KVMQ_API_TOKENS');
    const secure = req.secure ? '; Secure' : '';
    res.set('set-cookie', `${COOKIE}=${encodeURIComponent(token)}; Path=/admin; HttpOnly; SameSite=Strict${secure}`).redirect(303, `${BOARD_PATH}/`);
  });

  // bull-board is loaded on the board's first request: most API processes never serve it, and it is a
  // fair share of an idle API's memory.
  let loaded: Promise<{ handler: express.RequestHandler; refresh: () => Promise<void> }> | undefined;
  const load = async () => {
    const [{ createBullBoard }, { BullMQAdapter }, { ExpressAdapter }] = await Promise.all([
      import('@bull-board/api'), import('@bull-board/api/bullMQAdapter'), import('@bull-board/express'),
    ]);
    const adapter = new ExpressAdapter();
    adapter.setBasePath(BOARD_PATH);
    const fixed = deps.webhooks ? [new BullMQAdapter(deps.webhooks.queue, { readOnlyMode: false })] : [];
    const board = createBullBoard({ queues: [new BullMQAdapter(deps.queues.get('default')), ...fixed], serverAdapter: adapter, options: { uiConfig: { boardTitle: 'kvmq queues' } } });
    // Pools appear when a worker for them announces itself: the board's list follows the registry,
    // read at most every few seconds.
    let shownAt = 0;
    const pools = new Set(['default']);
    const refresh = async () => {
      if (Date.now() - shownAt < 5000) return;
      shownAt = Date.now();
      const before = pools.size;
      for (const h of await listHosts(deps.store)) pools.add(h.pool);
      if (pools.size !== before) board.replaceQueues([...[...pools].map((p) => new BullMQAdapter(deps.queues.get(p))), ...fixed]);
    };
    return { handler: adapter.getRouter() as express.RequestHandler, refresh };
  };
  r.use(BOARD_PATH, (req: Request, res: Response, next: NextFunction) => {
    if (!authorized(req)) {
      const html = req.accepts(['json', 'html']) === 'html' && req.method === 'GET';
      if (html) return void res.redirect(303, '/admin/login');
      return next(new HttpProblem(401, 'Unauthorized', 'send Authorization: Bearer <token>, or log in at /admin/login'));
    }
    res.set({ 'content-security-policy': BOARD_CSP, 'cache-control': 'no-store' });
    loaded ??= load();
    loaded.catch(() => (loaded = undefined));
    loaded.then(async (b) => {
      await b.refresh();
      b.handler(req, res, next);
    }).catch(next);
  });
  return r;
}
