// GET /v1/compare?base=ID&other=ID: per cell ratio other/base with its interval and Welch's t-test, and a
// warning when the two results ran on different systems.
import { Router } from 'express';
import { z } from '../src/model/zod.ts';
import { buildResults } from '../src/results/report.ts';
import { compareResults, comparisonMarkdown } from '../src/results/compare.ts';
import { renderComparisonChart } from '../src/results/chart.ts';
import type { ApiDeps } from './experiments.ts';
import { HttpProblem, parseQuery } from './problem.ts';

const Id = z.string().regex(/^[a-z0-9]{1,64}$/, 'an experiment id is 1..64 characters of a-z and 0-9');
export const CompareQuery = z.strictObject({
  base: Id.describe('the experiment compared against (the denominator)'),
  other: Id.describe('the experiment compared (the numerator)'),
  format: z.enum(['json', 'markdown', 'svg']).default('json').describe('svg: a chart of the ratios with their intervals'),
});

export function compareRouter(deps: ApiDeps): Router {
  const { store } = deps;
  const r = Router();
  r.get('/', async (req, res) => {
    const q = parseQuery(req, CompareQuery);
    const [base, other] = await Promise.all([store.get(q.base), store.get(q.other)]);
    const missing = [
      ...(base ? [] : [{ pointer: '/query/base', detail: `no experiment with id "${q.base}"` }]),
      ...(other ? [] : [{ pointer: '/query/other', detail: `no experiment with id "${q.other}"` }]),
    ];
    if (missing.length) throw new HttpProblem(404, 'Experiment not found', missing.map((m) => m.detail).join('; '), missing);
    const c = compareResults(await buildResults(store, base!), await buildResults(store, other!));
    if (q.format === 'markdown') res.type('text/markdown').send(comparisonMarkdown(c));
    else if (q.format === 'svg') res.set({ 'content-type': 'image/svg+xml; charset=utf-8', 'content-security-policy': "default-src 'none'" }).send(renderComparisonChart(c));
    else res.json(c);
  });
  return r;
}
