// /v1/experiments: submit, list, read, results, live events, cancel.
import { Router, type Request, type Response } from 'express';
import { z } from '../src/model/zod.ts';
import { SpecInputSchema, normalizeSpec, redactWebhook, type Spec } from '../src/model/spec.ts';
import { Store, STATUSES, FINAL, type ExperimentRecord } from '../src/store/store.ts';
import type { Queues } from '../src/queue/queue.ts';
import { buildResults, toCsv, toMarkdown } from '../src/results/report.ts';
import { buildReference, referenceMarkdown } from '../src/results/paper.ts';
import { DRIVER_CAPABILITIES, IMPLEMENTED_DRIVERS } from '../src/guests/guest.ts';
import { expandCells, maxCells } from '../src/model/cell.ts';
import { HttpProblem, jsonBody, validBody, refuseIfAny, type ProblemItem, parseQuery } from './problem.ts';
import type { Config } from '../src/config.ts';
import { urlProblem, type Webhooks } from '../src/webhooks/webhook.ts';
import type { Schedules } from '../src/queue/schedule.ts';
import { fitProblems, type FitProblem } from '../src/model/resources.ts';
import { capacityProblems } from '../src/model/capacity.ts';
import { listHosts, type HostEntry } from '../src/store/registry.ts';
import type { ProcessMetrics } from '../src/observe/metrics.ts';
import type { Logger } from '../src/observe/log.ts';
import { newRecord, submit } from '../src/queue/submit.ts';
import { cancel } from '../src/queue/cancel.ts';
import { Quota } from './quota.ts';
import { EventHub } from './events.ts';
import { clientOf, type Client } from './auth.ts';

export const ListQuery = z.strictObject({
  status: z.enum(STATUSES as [string, ...string[]]).optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
  offset: z.coerce.number().int().min(0).max(1_000_000).default(0),
});
export const DeleteQuery = z.strictObject({
  purge: z.enum(['true', 'false']).optional().describe('true: delete a finished experiment with its results; without it DELETE cancels'),
});
export const ResultsQuery = z
  .strictObject({
    format: z.enum(['json', 'csv', 'markdown']).default('json'),
    reference: z.enum(['paper']).optional().describe("paper: the paper's Tables 3 and 4 ratios beside the measured ones, each judged by an equivalence test (json and markdown)"),
    tolerance: z.coerce.number().gt(0).max(1).optional().describe('with reference: how far a measured ratio may lie from the reference and still reproduce it (0.1 = ±10 %, the default)'),
  })
  .refine((q) => !(q.reference && q.format === 'csv'), { path: ['reference'], message: 'reference is shown in json and markdown, not csv' })
  .refine((q) => !(q.tolerance !== undefined && !q.reference), { path: ['tolerance'], message: 'tolerance goes with reference=paper' });

export interface ApiDeps {
  store: Store;
  queues: Queues;
  config: Config;
  /** Queues webhook messages (experiment.cancelled when a waiting experiment is cancelled here). */
  webhooks?: Webhooks;
  /** Recurring schedules (created on demand when absent). */
  schedules?: Schedules;
  /** This process's metrics (shared with a worker in the same process); made by the API when absent. */
  metrics?: ProcessMetrics;
  /** Request lines (pino-http) and the error handler's reports; none when absent. */
  logger?: Logger;
}

/** What a GET shows of a record: never the webhook secret. */
export function view(rec: ExperimentRecord) {
  const { spec, ...rest } = rec;
  return { ...rest, spec: redactWebhook(spec), links: linksOf(rec.id) };
}

/** Where an experiment and its parts are read. */
export function linksOf(id: string) {
  const base = `/v1/experiments/${id}`;
  return { self: base, results: `${base}/results`, events: `${base}/events`, deliveries: `${base}/deliveries` };
}

/** Checks that need more than the shape of the spec: what this build and this deployment allow. */
export function admissionProblems(spec: Spec, config: Config): ProblemItem[] {
  const out: ProblemItem[] = [];
  spec.scenarios.forEach((s, i) => {
    if (s.guests > 0 && !IMPLEMENTED_DRIVERS.has(spec.driver)) {
      out.push({ pointer: `/scenarios/${i}`, detail: `scenario "${s.id}" boots ${s.guests} guest(s), but the ${spec.driver} driver is not available in this build; only the host baseline (guests: 0) can run` });
    }
  });
  if (!DRIVER_CAPABILITIES[spec.driver].guestSysctl) {
    spec.profiles.forEach((p, i) => {
      if (p.target !== 'host' && Object.keys(p.sysctl).length && spec.scenarios.some((s) => s.guests > 0)) {
        out.push({ pointer: `/profiles/${i}`, detail: `profile "${p.name}" targets guests, but vm.* sysctls are host-wide for containers; use target "host" or the qemu driver` });
      }
    });
  }
  const hook = spec.webhook && urlProblem(spec.webhook.url, config.webhookAllowPrivate);
  if (hook) out.push({ pointer: '/webhook/url', detail: hook });
  spec.workloads.forEach((w, i) => {
    if (w.kind === 'http' || w.kind === 'kv') {
      const columns = [...new Set(spec.scenarios.map((s) => (s.guests > 0 ? spec.driver : 'host')))];
      for (const c of columns.filter((c) => !DRIVER_CAPABILITIES[c].servers)) {
        out.push({ pointer: `/workloads/${i}`, detail: `${w.kind} is a server workload, which the ${c} driver cannot run in this build` });
      }
    }
    if (w.kind === 'command' && !config.allowCommands) {
      out.push({ pointer: `/workloads/${i}`, detail: 'command workloads are off on this deployment (the operator can set KVMQ_ALLOW_COMMANDS=1)' });
    }
  });
  // A capacity limit on latency or throughput needs a server workload's figures.
  out.push(...capacityProblems(spec));
  // Adaptive repetitions may run up to their max, so the limit counts the largest matrix.
  const cells = maxCells(spec);
  if (cells > 100_000) out.push({ pointer: '/repetitions', detail: `the matrix can reach ${cells} cells; the limit is 100000` });
  return out;
}

/**
 * Could any live host of the spec's pool ever run it (cores, total memory, scratch disk size, drivers)?
 * Empty when one could, or when no host is known: then the worker's preflight decides.
 */
export async function poolProblems(store: Store, spec: Spec, known?: () => Promise<HostEntry[]>): Promise<ProblemItem[]> {
  const hosts = (await (known ? known() : listHosts(store))).filter((h) => h.pool === spec.pool);
  let best: { id: string; problems: FitProblem[] } | undefined;
  for (const h of hosts) {
    const c = h.capabilities;
    const problems = fitProblems(spec, { cores: c.cores, memoryMiB: c.memoryMiB, disks: c.scratch ?? {}, basis: 'total', ...(c.drivers ? { drivers: c.drivers } : {}) });
    if (!problems.length) return [];
    if (!best || problems.length < best.problems.length) best = { id: h.id, problems };
  }
  if (!best) return [];
  const n = hosts.length;
  return best.problems.map((p) => ({ pointer: p.pointer, detail: `no live host in pool "${spec.pool}" can run this (${n} host${n > 1 ? 's' : ''}); on ${best.id}: ${p.detail}` }));
}

/**
 * The host list, read at most once a second: every submit checks it, and reading it is a round trip (or
 * more) to Redis that would double a submit's. A host that joined within the last second may be missed
 * by the check, which is advisory: the worker's preflight decides.
 */
export function recentHosts(store: Store, maxAgeMs = 1000): () => Promise<HostEntry[]> {
  let at = 0;
  let hosts: Promise<HostEntry[]> | undefined;
  return () => {
    const now = Date.now();
    if (!hosts || now - at > maxAgeMs) {
      at = now;
      const read = listHosts(store);
      hosts = read;
      read.catch(() => {
        if (hosts === read) hosts = undefined;
      });
    }
    return hosts;
  };
}

/** What a 202 for a new experiment carries (the Location header is links.self). */
export interface Accepted {
  id: string;
  status: ExperimentRecord['status'];
  links: ReturnType<typeof linksOf>;
}

/**
 * Submitting an experiment once its body is parsed and its client known: validation, the admission and
 * pool checks, the quota, the record and its job. One per API, shared by the express route and the plain
 * handler in front of it (api/intake.ts), so both check and answer alike.
 */
export function experimentIntake(deps: Pick<ApiDeps, 'store' | 'queues' | 'config'>): (body: unknown, client: Client) => Promise<Accepted> {
  const { store, queues, config } = deps;
  const hosts = recentHosts(store);
  const quota = new Quota(store, config.maxQueuedPerClient);
  return async (body, client) => {
    const spec = normalizeSpec(validBody(body, SpecInputSchema, 'experiment spec'));
    const problems = admissionProblems(spec, config);
    if (!problems.length) problems.push(...(await poolProblems(store, spec, hosts)));
    refuseIfAny('Experiment cannot run here', problems);

    // notBefore, or the next opening of its nightly window: until then it waits as scheduled.
    const now = Date.now();
    const rec = newRecord(spec, now);
    // Counted once its record exists (the quota reads statuses); refused, the record goes again. Without
    // a quota the record and its job go to Redis in one round trip.
    await submit(store, queues, rec, now, quota.on ? () => quota.reserve(client.key, [rec.id]) : undefined);
    return { id: rec.id, status: rec.status, links: linksOf(rec.id) };
  };
}

export function experimentsRouter(deps: ApiDeps, intake = experimentIntake(deps)): Router {
  const { store, queues, config } = deps;
  const r = Router();
  const hub = new EventHub(store.redis, { perClient: config.eventsPerClient, total: config.eventsTotal, idleMs: config.eventsIdleS * 1000 });

  const load = async (req: Request): Promise<ExperimentRecord> => {
    const rec = await store.get(String(req.params.id));
    if (!rec) throw new HttpProblem(404, 'Experiment not found', `no experiment with id "${req.params.id}"`);
    return rec;
  };

  r.post('/', async (req, res) => {
    const accepted = await intake(jsonBody(req, 'spec'), clientOf(res));
    res.status(202).location(accepted.links.self).json(accepted);
  });

  r.get('/', async (req, res) => {
    const q = parseQuery(req, ListQuery);
    const { items, total } = await store.list(q as { status?: ExperimentRecord['status']; limit: number; offset: number });
    res.json({ items: items.map(view), total, limit: q.limit, offset: q.offset });
  });

  r.get('/:id', async (req, res) => {
    res.json(view(await load(req)));
  });

  r.get('/:id/results', async (req, res) => {
    const q = parseQuery(req, ResultsQuery);
    const rec = await load(req);
    const results = await buildResults(store, rec);
    const reference = q.reference === 'paper' ? buildReference(results, rec.spec, q.tolerance) : undefined;
    if (q.format === 'csv') res.type('text/csv').send(toCsv(results));
    else if (q.format === 'markdown') res.type('text/markdown').send(toMarkdown(results, rec.spec) + (reference ? '\n' + referenceMarkdown(reference) : ''));
    else res.json(reference ? { ...results, reference } : results);
  });

  r.get('/:id/events', async (req, res) => {
    const rec = await load(req);
    const release = FINAL.includes(rec.status) ? () => {} : hub.admit(clientOf(res).key);
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    const send = (event: string, data: unknown) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    send('status', { id: rec.id, status: rec.status, progress: rec.progress });
    if (FINAL.includes(rec.status)) return void res.end();
    let stop = () => {};
    let closed = false;
    const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
    let idle: NodeJS.Timeout;
    const close = (retryMs?: number) => {
      if (closed) return;
      closed = true;
      clearInterval(heartbeat);
      clearTimeout(idle);
      stop();
      release();
      // The hint tells an EventSource when to come back; the stream is not over for the client.
      if (retryMs !== undefined) res.write(`retry: ${retryMs}\n\n`);
      res.end();
    };
    const touch = () => {
      clearTimeout(idle);
      idle = setTimeout(() => close(5_000), hub.limits.idleMs);
    };
    touch();
    res.on('close', () => close());
    try {
      stop = await hub.listen(store.channel(rec.id), (msg) => {
        const ev = JSON.parse(msg) as { type: string; status?: string };
        touch();
        send(ev.type, ev);
        if (ev.type === 'status' && FINAL.includes(ev.status as ExperimentRecord['status'])) close();
      });
    } catch {
      return close(5_000);
    }
    if (closed) return stop(); // the client left while the subscription was being made
    // A status change between the first read and the subscription would be missed; read again.
    const now = await store.get(rec.id);
    if (now && now.status !== rec.status) {
      send('status', { id: now.id, status: now.status, progress: now.progress });
      if (FINAL.includes(now.status)) close();
    }
  });

  r.delete('/:id', async (req, res) => {
    const q = parseQuery(req, DeleteQuery);
    const rec = await load(req);
    if (q.purge === 'true') {
      if (!FINAL.includes(rec.status)) throw new HttpProblem(409, 'Experiment not finished', `experiment ${rec.id} is ${rec.status}; cancel it first (DELETE without purge), then delete it`);
      const batch = await store.redis.get(store.key('batchof', rec.id));
      if (batch) throw new HttpProblem(409, 'Experiment belongs to a batch', `experiment ${rec.id} is part of batch ${batch}; delete the batch (DELETE /v1/batches/${batch}?purge=true)`);
      await store.purge(rec.id);
      await queues.get(rec.pool).remove(rec.id).catch(() => {}); // its finished job, if BullMQ still keeps it
      return void res.status(204).end();
    }
    if (FINAL.includes(rec.status)) throw new HttpProblem(409, 'Experiment already finished', `experiment ${rec.id} is ${rec.status}; DELETE ?purge=true deletes it with its results`);
    const cancelled = await cancel(store, queues, rec);
    if (cancelled) {
      await deps.webhooks?.experimentFinished(cancelled.id);
      return void res.status(200).json(view(cancelled));
    }
    res.status(202).json({ ...view(rec), status: rec.status, cancelling: true });
  });

  return r;
}
