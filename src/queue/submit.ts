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
 * The record's writes and BullMQ's own add script in one MULTI on the queue's connection (which has
 * BullMQ's scripts loaded). The record and the queue share the pool's hash tag, so this holds on a
 * Cluster too; there, the pool index of a pool other than `default` (base tag) goes first on its own.
 */
async function submitAtOnce(store: Store, queues: Queues, rec: ExperimentRecord, now: number): Promise<void> {
  const queue = queues.get(rec.pool);
  const lean = await queues.addTransaction(rec.pool);
  const client = lean ? undefined : await queue.getBackend().client;
  // BullMQ declares only the commands it uses itself; on ioredis the transaction takes every command.
  const m = lean ?? (client!.multi() as IRedisTransaction & ChainableCommander);
  // Only a Cluster keeps the pool index (base tag) out of the pool's transaction.
  if (lean || !client!.isCluster) store.placeInto(m, rec);
  else if (rec.pool !== 'default') await store.placeInto(client!.multi() as IRedisTransaction & ChainableCommander, rec).exec();
  store.createInto(m, rec);
  const job = new Job(queue, 'experiment', { id: rec.id }, jobOptions(rec, now), rec.id);
  // Queued on the transaction synchronously; its promise settles with the transaction, not the job.
  void job.addJob(m).catch(() => {});
  if (lean) coalesce(m as unknown as { redis: { stream?: Corkable } });
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

interface Corkable {
  cork(): void;
  uncork(): void;
}
const corked = new WeakSet<Corkable>();

/**
 * Hold the connection's writes until the end of this turn of the event loop, so the transactions of
 * submissions that arrive together leave in one write (one system call, one wake-up of Redis) rather than
 * one each. Nothing waits longer than the turn.
 */
function coalesce(transaction: { redis: { stream?: Corkable } }): void {
  const stream = transaction.redis.stream;
  if (!stream || corked.has(stream)) return;
  corked.add(stream);
  stream.cork();
  setImmediate(() => {
    corked.delete(stream);
    stream.uncork();
  });
}
