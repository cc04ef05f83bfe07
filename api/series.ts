// /v1/series: the nightly history. Experiments sharing a series name (a schedule's runs by default) kept
// per host, each cell's value over time with its interval and change points; as JSON, markdown or SVG.
import { Router } from 'express';
import { z } from '../src/model/zod.ts';
import { SeriesNameSchema } from '../src/model/series.ts';
import { listSeries, seriesHistory } from '../src/results/series.ts';
import { seriesMarkdown, renderTrendChart } from '../src/results/trend.ts';
import type { ApiDeps } from './experiments.ts';
import { HttpProblem, validationProblem, parseQuery } from './problem.ts';

export const SeriesListQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(500).default(50),
  offset: z.coerce.number().int().min(0).max(1_000_000).default(0),
});
export const SeriesParams = z.object({ name: SeriesNameSchema });
export const SeriesQuery = z.strictObject({
  host: z.string().min(1).max(200).optional().describe('only this host (default: every host the series ran on)'),
  window: z.coerce.number().int().min(2).max(500).optional().describe("newest runs shown per host (default: the series' check window, 60)"),
  format: z.enum(['json', 'markdown', 'svg']).default('json').describe('svg: one trend panel per cell with change points marked'),
});

export function seriesRouter(deps: ApiDeps): Router {
  const { store } = deps;
  const r = Router();
  r.get('/', async (req, res) => {
    const q = parseQuery(req, SeriesListQuery);
    const { items, total } = await listSeries(store, q.limit, q.offset);
    res.json({
      items: items.map((x) => ({ ...x, links: { self: `/v1/series/${encodeURIComponent(x.name)}` } })),
      total, limit: q.limit, offset: q.offset,
    });
  });
  r.get('/:name', async (req, res) => {
    const p = SeriesParams.safeParse(req.params);
    if (!p.success) throw validationProblem(p.error, 'series name', '/path');
    const q = parseQuery(req, SeriesQuery);
    const name = p.data.name;
    if ((await store.redis.zscore(store.key('series'), name)) === null) {
      throw new HttpProblem(404, 'Series not found', `no completed run belongs to a series named "${name}"`);
    }
    const hosts = await seriesHistory(store, name, { ...(q.host ? { host: q.host } : {}), ...(q.window ? { window: q.window } : {}) });
    if (q.host && !hosts.length) throw new HttpProblem(404, 'Host not in series', `series "${name}" has no completed run on host "${q.host}"`);
    if (q.format === 'markdown') return void res.type('text/markdown').send(seriesMarkdown(name, hosts));
    if (q.format === 'svg') {
      return void res.set({ 'content-type': 'image/svg+xml; charset=utf-8', 'content-security-policy': "default-src 'none'" }).send(renderTrendChart(name, hosts));
    }
    res.json({ name, hosts, links: { self: `/v1/series/${encodeURIComponent(name)}` } });
  });
  return r;
}
