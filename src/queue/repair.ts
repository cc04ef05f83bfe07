// Repairs after a crash, run at each worker start for its pool: every record that is not final must have
// a job that can still run it. A record whose job is missing (its process died between storing the
// record and queuing the job, or the job was lost) gets its job again; a record whose job the queue gave
// up on (it stalled too often: BullMQ fails it without calling the processor) is settled as failed.
import type { Job } from 'bullmq';
import { FINAL, type ExperimentRecord, type Status, type Store } from '../store/store.ts';
import type { Queues } from './queue.ts';

const OPEN: Status[] = ['queued', 'scheduled', 'running'];

/** The record's reason for a job the queue failed on its own, in words a user can act on. */
export function givenUpReason(failedReason: string | undefined): string {
  const why = failedReason || 'no reason given';
  return /stalled more than allowable limit/.test(why)
    ? `the worker running it was lost too many times (killed, or blocked past its lock); the queue gave up: ${why}`
    : `the queue gave up on it: ${why}`;
}

/**
 * Settle a record as failed when its job is in the queue's failed set while the record still says it is
 * waiting or running. Answers the reason when it did (the caller then sends the notifications).
 */
export async function settleGivenUp(store: Store, job: Job | undefined, id: string): Promise<string | undefined> {
  if (!job || (await job.getState()) !== 'failed') return undefined;
  const reason = givenUpReason(job.failedReason);
  const moved = await store.transition(id, OPEN, { status: 'failed', finishedAt: new Date().toISOString(), error: { reason } });
  return moved ? reason : undefined;
}

export interface PoolRepair {
  requeued: string[];
  failed: { id: string; reason: string }[];
}

/** Check every open record of a pool against its job; requeue the lost, settle the given up. */
export async function repairPool(store: Store, queues: Queues, pool: string, now = Date.now()): Promise<PoolRepair> {
  const out: PoolRepair = { requeued: [], failed: [] };
  const ids = await store.redis.zrange(store.poolKey(pool, 'exps'), 0, -1);
  const p = store.redis.pipeline();
  for (const id of ids) p.hmget(store.poolKey(pool, 'exp', id), 'status', 'pool');
  const rows = ((await p.exec()) ?? []).map(([, v]) => (v as (string | null)[] | null) ?? []);
  const queue = queues.get(pool);
  for (const [i, id] of ids.entries()) {
    const [status, recPool] = rows[i]!.map((x) => (x ? (JSON.parse(x) as string) : null));
    if (recPool !== pool || !status || FINAL.includes(status as Status)) continue;
    const job = await queue.getJob(id);
    const state = job ? await job.getState() : 'missing';
    if (state === 'failed') {
      const reason = await settleGivenUp(store, job, id);
      if (reason) out.failed.push({ id, reason });
    } else if (state === 'missing' || state === 'completed' || state === 'unknown') {
      // A completed job cannot belong to an open record (the record goes final before the job ends),
      // so it is a job that never ran this record; it makes way for one that will.
      if (job && state !== 'missing') await job.remove().catch(() => {});
      const rec = (await store.get(id)) as ExperimentRecord | null;
      if (!rec || FINAL.includes(rec.status)) continue;
      await queues.add(rec, now);
      out.requeued.push(id);
    }
  }
  return out;
}
