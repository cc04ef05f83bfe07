// Batches: several experiments queued as one, typically in the evening for the night. A batch shares
// a webhook (each experiment reports on it, and the batch reports once more as batch.completed when
// its last experiment is final), a start time or nightly window, and a priority within its pool.
import { z } from '../model/zod.ts';
import { ScheduleSchema, SpecInputSchema, WebhookSchema, redactWebhook, type Spec } from '../model/spec.ts';
import { Store, FINAL, type ExperimentRecord } from '../store/store.ts';
import type { Queues } from './queue.ts';
import { newRecord } from './submit.ts';

export const BatchInputSchema = z
  .strictObject({
    name: z.string().min(1).max(100).optional(),
    experiments: z.array(SpecInputSchema).min(1).max(100).describe('experiment specs, as for POST /v1/experiments'),
    webhook: WebhookSchema.optional().describe("told about each experiment (unless it has its own) and once more with batch.completed"),
    schedule: ScheduleSchema.optional().describe('notBefore, window and priority for every experiment that does not set its own'),
  })
  .openapi('BatchSpec');
export type BatchInput = z.output<typeof BatchInputSchema>;

/** Fill an experiment's webhook and schedule from the batch; what the experiment says itself wins. */
export function withBatchDefaults(spec: Spec, batch: Pick<BatchInput, 'webhook' | 'schedule'>): Spec {
  const schedule = { ...(batch.schedule ?? {}), ...(spec.schedule ?? {}) };
  return {
    ...spec,
    ...(spec.webhook ?? batch.webhook ? { webhook: spec.webhook ?? batch.webhook } : {}),
    ...(Object.keys(schedule).length ? { schedule } : {}),
  };
}

export interface BatchRecord {
  id: string;
  name: string;
  experiments: string[];
  webhook?: { url: string; secret?: string };
  schedule?: z.output<typeof ScheduleSchema>;
  createdAt: string;
  finishedAt?: string;
}

const FIELDS = ['id', 'name', 'experiments', 'webhook', 'schedule', 'createdAt', 'finishedAt'] as const;

export async function getBatch(store: Store, id: string): Promise<BatchRecord | null> {
  if (!/^[a-z0-9]{1,64}$/.test(id)) return null;
  const h = await store.redis.hgetall(store.key('batch', id));
  if (!h.id) return null;
  const out: Record<string, unknown> = {};
  for (const f of FIELDS) if (h[f] !== undefined) out[f] = JSON.parse(h[f]);
  return out as unknown as BatchRecord;
}

/**
 * Store and queue a batch. Every experiment record exists before the batch names it and before any
 * job is queued, so the last one to finish always finds all its siblings. On a failure nothing stays.
 */
export async function createBatch(store: Store, queues: Queues, input: BatchInput, specs: Spec[], now = Date.now()): Promise<BatchRecord> {
  const id = Store.newId();
  const recs = specs.map((s) => newRecord(withBatchDefaults(s, input), now));
  const batch: BatchRecord = {
    id,
    name: input.name ?? `batch of ${recs.length}`,
    experiments: recs.map((r) => r.id),
    ...(input.webhook ? { webhook: input.webhook } : {}),
    ...(input.schedule ? { schedule: input.schedule } : {}),
    createdAt: new Date(now).toISOString(),
  };
  const queued: ExperimentRecord[] = [];
  try {
    for (const r of recs) await store.create(r);
    const m = store.redis.multi();
    const enc: Record<string, string> = {};
    for (const [k, v] of Object.entries(batch)) enc[k] = JSON.stringify(v);
    m.hset(store.key('batch', id), enc).zadd(store.key('batches'), now, id);
    for (const r of recs) m.set(store.key('batchof', r.id), id);
    await m.exec();
    for (const r of recs) {
      await queues.add(r, now);
      queued.push(r);
    }
  } catch (err) {
    for (const r of queued) await queues.get(r.pool).remove(r.id).catch(() => {});
    for (const r of recs) await store.remove(r.id).catch(() => {});
    await store.redis.del(store.key('batch', id), ...recs.map((r) => store.key('batchof', r.id))).catch(() => {});
    await store.redis.zrem(store.key('batches'), id).catch(() => {});
    throw err;
  }
  return batch;
}

/** The batch as a GET shows it: per-experiment status, counts, and never the webhook secret. */
export async function batchView(store: Store, b: BatchRecord) {
  const recs = (await Promise.all(b.experiments.map((i) => store.get(i)))).filter((r): r is ExperimentRecord => !!r);
  const counts: Record<string, number> = {};
  for (const r of recs) counts[r.status] = (counts[r.status] ?? 0) + 1;
  const final = recs.filter((r) => FINAL.includes(r.status)).length;
  const status = b.finishedAt || final === recs.length
    ? 'completed'
    : recs.some((r) => r.status === 'running') || final > 0
      ? 'running'
      : recs.every((r) => r.status === 'scheduled')
        ? 'scheduled'
        : 'queued';
  return {
    id: b.id,
    name: b.name,
    status,
    createdAt: b.createdAt,
    ...(b.finishedAt ? { finishedAt: b.finishedAt } : {}),
    ...(b.schedule ? { schedule: b.schedule } : {}),
    ...(b.webhook ? redactWebhook({ webhook: b.webhook }) : {}),
    counts,
    experiments: recs.map((r) => ({
      id: r.id, name: r.name, status: r.status, progress: r.progress,
      ...(r.startedAt ? { startedAt: r.startedAt } : {}),
      ...(r.finishedAt ? { finishedAt: r.finishedAt } : {}),
      ...(r.error ? { error: r.error } : {}),
      links: { self: `/v1/experiments/${r.id}` },
    })),
    links: { self: `/v1/batches/${b.id}`, deliveries: `/v1/batches/${b.id}/deliveries` },
  };
}

/**
 * Delete a batch whose experiments have all finished, with those experiments. Answers the ids of the
 * unfinished ones instead when there are any (then nothing is deleted).
 */
export async function purgeBatch(store: Store, b: BatchRecord): Promise<string[]> {
  const recs = await Promise.all(b.experiments.map((i) => store.get(i)));
  const open = recs.filter((r): r is ExperimentRecord => !!r && !FINAL.includes(r.status)).map((r) => r.id);
  if (open.length) return open;
  for (const id of b.experiments) await store.purge(id);
  await store.redis.multi().del(store.key('batch', b.id), store.key('deliveries', b.id)).zrem(store.key('batches'), b.id).exec();
  return [];
}

export async function listBatches(store: Store, limit: number, offset: number): Promise<{ items: BatchRecord[]; total: number }> {
  const ids = await store.redis.zrevrange(store.key('batches'), offset, offset + limit - 1);
  const total = await store.redis.zcard(store.key('batches'));
  return { items: (await Promise.all(ids.map((i) => getBatch(store, i)))).filter((b): b is BatchRecord => !!b), total };
}
