// GET /v1/hosts: the worker hosts that sent a heartbeat recently.
import { Router } from 'express';
import type { Store } from '../src/store/store.ts';
import { listHosts } from '../src/store/registry.ts';

export function hostsRouter(store: Store): Router {
  const r = Router();
  r.get('/', async (_req, res) => {
    const items = await listHosts(store);
    res.json({ items: items.map(({ pid: _pid, ...h }) => h) });
  });
  return r;
}
