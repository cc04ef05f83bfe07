// Webhook delivery attempts of an experiment or a batch: when, what the receiver answered, how long it
// took, and when the next attempt is due. The webhook secret is not part of an attempt.
import { Router } from 'express';
import { deliveries } from '../src/webhooks/webhook.ts';
import { getBatch } from '../src/queue/batch.ts';
import type { ApiDeps } from './experiments.ts';
import { HttpProblem } from './problem.ts';

export function deliveriesRouter(deps: ApiDeps): Router {
  const { store } = deps;
  const r = Router();
  r.get('/experiments/:id/deliveries', async (req, res) => {
    const rec = await store.get(String(req.params.id));
    if (!rec) throw new HttpProblem(404, 'Experiment not found', `no experiment with id "${req.params.id}"`);
    const items = await deliveries(store, rec.id);
    res.json({ id: rec.id, webhook: rec.spec.webhook ? { url: rec.spec.webhook.url } : null, items, total: items.length });
  });
  r.get('/batches/:id/deliveries', async (req, res) => {
    const b = await getBatch(store, String(req.params.id));
    if (!b) throw new HttpProblem(404, 'Batch not found', `no batch with id "${req.params.id}"`);
    const items = await deliveries(store, b.id);
    res.json({ id: b.id, webhook: b.webhook ? { url: b.webhook.url } : null, items, total: items.length });
  });
  return r;
}
