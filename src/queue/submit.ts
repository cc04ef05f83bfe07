// The one way a new experiment enters the system, whoever submits it (the API, a batch, a schedule's
// tick): a record built from the spec, stored, then queued with its job delayed to its earliest start.
import { Job, type IRedisTransaction } from 'bullmq';
import type { ChainableCommander } from 'ioredis';
import type { Spec } from '../model/spec.ts';
import { Store, type ExperimentRecord } from '../store/store.ts';
import { jobOptions, type Queues } from './queue.ts';
import { countCells } from '../model/cell.ts';
import { earliestStart } from '../model/window.ts';

/** A new experiment record for a spec: scheduled when it may not start yet (notBefore, window), else queued. */
export function newRecord(spec: Spec, now: number): ExperimentRecord {
  return {
    id: Store.newId(),
    name: spec.name,
    status: earliestStart(spec.schedule, now) > now ? 'scheduled' : 'queued',
    pool: spec.pool,
    spec,
    progress: { done: 0, total: countCells(spec) },
    createdAt: new Date(now).toISOString(),
  };
}

/**
 * Store a new record and queue its job. Nothing half-made stays: without its job a record would wait forever.
 * `admit` runs in between (a quota that counts stored records); when it refuses, the record goes again.
 * Without `admit`, the record and the job go in one MULTI: one round trip to Redis.
 */
export async function submit(store: Store, queues: Queues, rec: ExperimentRecord, now: number, admit?: () => Promise<void>): Promise<void> {
  if (!admit) return submitAtOnce(store, queues, rec, now);
  await store.create(rec);
  try {
    await admit();
    await queues.add(rec, now);
  } catch (err) {
    await store.remove(rec.id).catch(() => {});
    throw err;
  }
}

/**
 * The record's writes and BullMQ's add in one step. On a single Redis they are one script (the record rides
 * on BullMQ's add script, Queues.addTogether): one command, written only when BullMQ took the job.
 * Otherwise (a Cluster, or a BullMQ whose scripts cannot carry the rider) they are one MULTI on the
 * queue's own connection; the record and the queue share the pool's hash tag, so that holds on a Cluster
 * too, where the pool index of a pool other than `default` (base tag) goes first on its own.
 */
async function submitAtOnce(store: Store, queues: Queues, rec: ExperimentRecord, now: number): Promise<void> {
  const queue = queues.get(rec.pool);
  const job = () => new Job(queue, 'experiment', { id: rec.id }, jobOptions(rec, now), rec.id);
  let together: string | undefined;
  try {
    together = await queues.addTogether(rec.pool, job(), store.createRider(rec));
  } catch (err) {
    // A refusal by BullMQ wrote nothing of the record; an error from Redis itself may have written part.
    await store.remove(rec.id).catch(() => {});
    throw err;
  }
  if (together !== undefined) return store.created(rec);
  const client = await queue.getBackend().client;
  // BullMQ declares only the commands it uses itself; on ioredis the transaction takes every command.
  const m = client.multi() as IRedisTransaction & ChainableCommander;
  if (!client.isCluster) store.placeInto(m, rec);
  else if (rec.pool !== 'default') await store.placeInto(client.multi() as IRedisTransaction & ChainableCommander, rec).exec();
  store.createInto(m, rec);
  // Queued on the transaction synchronously; its promise settles with the transaction, not the job.
  void job().addJob(m).catch(() => {});
  const results = (await m.exec()) ?? [];
  // MULTI does not roll back: a failed command leaves the others applied, so the record goes again.
  const failed = results.find(([err]: [Error | null, unknown]) => err);
  const added = results.at(-1)?.[1];
  if (failed || results.length === 0 || (typeof added === 'number' && added < 0)) {
    await store.remove(rec.id).catch(() => {});
    throw failed?.[0] ?? new Error(`queueing experiment ${rec.id} failed${typeof added === 'number' ? ` (BullMQ code ${added})` : ''}`);
  }
  await store.created(rec);
}
