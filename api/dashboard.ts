// The dashboard: one static page (plain HTML, JS and CSS from api/dashboard/, nothing from the internet)
// that talks to the same /v1 API a script does, so it works with auth on: the page asks for a token and
// sends it as a bearer header. Also the chart route the page and scripts share.
import { Router, type Response } from 'express';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildResults } from '../src/results/report.ts';
import { renderChart } from '../src/results/chart.ts';
import { renderTelemetryChart } from '../src/results/telemetry.ts';
import { renderCapacityChart } from '../src/results/capacity.ts';
import { z } from '../src/model/zod.ts';
import type { ApiDeps } from './experiments.ts';
import { HttpProblem, parseQuery } from './problem.ts';

export const ChartQuery = z.strictObject({
  kind: z
    .enum(['seconds', 'telemetry', 'capacity'])
    .default('seconds')
    .describe("seconds: bars with 95% CI; telemetry: the host's dirty page cache over each cell; capacity: a capacity study's throughput against K with the fitted model and the limit"),
});

const DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'dashboard');
const FILES: Record<string, string> = {
  '/': 'index.html',
  '/dashboard/app.js': 'app.js',
  '/dashboard/style.css': 'style.css',
};
const TYPES: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };

// Only this origin's script and style; no inline script; nothing may frame the page.
// The app sends it on every response through helmet; the page routes send it themselves too, in the
// spelling with spaces, so the page's policy does not depend on the middleware order.
export const DASHBOARD_CSP = {
  'default-src': ["'none'"],
  'script-src': ["'self'"],
  'style-src': ["'self'"],
  'img-src': ["'self'", 'data:'],
  'connect-src': ["'self'"],
  'base-uri': ["'none'"],
  'form-action': ["'self'"],
  'frame-ancestors': ["'none'"],
};
const CSP = Object.entries(DASHBOARD_CSP).map(([k, v]) => `${k} ${v.join(' ')}`).join('; ');

/** Public routes: the page itself holds no data, so it is served without a token. */
export function dashboardRouter(): Router {
  const r = Router();
  for (const [route, file] of Object.entries(FILES)) {
    r.get(route, async (_req, res) => {
      const body = await fs.readFile(path.join(DIR, file));
      res.set({ 'content-type': TYPES[path.extname(file)]!, 'content-security-policy': CSP, 'cache-control': 'no-cache' }).send(body);
    });
  }
  return r;
}

function sendSvg(res: Response, svg: string): void {
  // An SVG document can carry script; ours never does, and this policy makes sure none would run.
  res.set({ 'content-type': 'image/svg+xml; charset=utf-8', 'content-security-policy': "default-src 'none'" }).send(svg);
}

/** GET /v1/experiments/:id/chart: the results as an SVG bar chart (mounted under the authenticated /v1). */
export function chartRouter(deps: ApiDeps): Router {
  const r = Router();
  r.get('/experiments/:id/chart', async (req, res) => {
    const q = parseQuery(req, ChartQuery);
    const rec = await deps.store.get(String(req.params.id));
    if (!rec) throw new HttpProblem(404, 'Experiment not found', `no experiment with id "${req.params.id}"`);
    const results = await buildResults(deps.store, rec);
    sendSvg(
      res,
      q.kind === 'telemetry' ? renderTelemetryChart(results.cells)
      : q.kind === 'capacity' ? renderCapacityChart(results.capacity, results.cells, `Capacity study: ${results.name}`)
      : renderChart(results),
    );
  });
  return r;
}
