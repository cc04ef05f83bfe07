// /v1/batches: several experiments queued as one, with a shared webhook, start time or nightly window,
// and priority. Every spec is checked before anything is stored: one bad experiment refuses the batch.
import { Router } from 'express';
import { z } from '../src/model/zod.ts';
import { normalizeSpec } from '../src/model/spec.ts';
import { BatchInputSchema, batchView, createBatch, getBatch, listBatches, purgeBatch } from '../src/queue/batch.ts';
import { Quota } from './quota.ts';
import { clientOf } from './auth.ts';
import { urlProblem } from '../src/webhooks/webhook.ts';
import { admissionProblems, poolProblems, type ApiDeps } from './experiments.ts';
import { HttpProblem, parseJsonBody, refuseIfAny, under, type ProblemItem, parseQuery } from './problem.ts';

export const BatchListQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(500).default(50),
  offset: z.coerce.number().int().min(0).max(1_000_000).default(0),
});

export const BatchDeleteQuery = z.strictObject({
  purge: z.literal('true').describe('required: deleting a batch deletes its finished experiments and their results'),
});

export function batchesRouter(deps: ApiDeps): Router {
  const { store, queues, config } = deps;
  const r = Router();
  const quota = new Quota(store, config.maxQueuedPerClient);

  r.post('/', async (req, res) => {
    const input = parseJsonBody(req, BatchInputSchema, 'batch');
    const specs = input.experiments.map(normalizeSpec);
    const problems: ProblemItem[] = [];
    specs.forEach((s, i) => problems.push(...under(`/experiments/${i}`, admissionProblems(s, config))));
    if (!problems.length) {
      for (const [i, s] of specs.entries()) problems.push(...under(`/experiments/${i}`, await poolProblems(store, s)));
    }
    const hook = input.webhook && urlProblem(input.webhook.url, config.webhookAllowPrivate);
    if (hook) problems.push({ pointer: '/webhook/url', detail: hook });
    refuseIfAny('Batch cannot run here', problems);

    const client = clientOf(res).key;
    await quota.check(client, specs.length);
    const batch = await createBatch(store, queues, input, specs);
    // Checked before it was made (a batch is all or nothing); two batches at once may pass the limit.
    await quota.reserve(client, batch.experiments, false);
    const v = await batchView(store, batch);
    res.status(202).location(v.links.self).json({ id: v.id, status: v.status, experiments: v.experiments.map((e) => ({ id: e.id, status: e.status })), links: v.links });
  });

  r.get('/', async (req, res) => {
    const q = parseQuery(req, BatchListQuery);
    const { items, total } = await listBatches(store, q.limit, q.offset);
    res.json({ items: await Promise.all(items.map((b) => batchView(store, b))), total, limit: q.limit, offset: q.offset });
  });

  r.get('/:id', async (req, res) => {
    const b = await getBatch(store, String(req.params.id));
    if (!b) throw new HttpProblem(404, 'Batch not found', `no batch with id "${req.params.id}"`);
    res.json(await batchView(store, b));
  });

  r.delete('/:id', async (req, res) => {
    const q = parseQuery(req, BatchDeleteQuery);
    const b = await getBatch(store, String(req.params.id));
    if (!b) throw new HttpProblem(404, 'Batch not found', `no batch with id "${req.params.id}"`);
    const open = await purgeBatch(store, b);
    if (open.length) throw new HttpProblem(409, 'Batch not finished', `${open.length} of its experiments have not finished (${open.slice(0, 5).join(', ')}${open.length > 5 ? ', …' : ''}); cancel them first`);
    res.status(204).end();
  });

  return r;
}
