// Cancelling an experiment. A waiting one (queued, scheduled, delayed) is taken out of its queue and
// marked cancelled at once; a running one can only be stopped by the worker that holds it, so the
// request goes to every worker over pub/sub, with a flag for a worker that takes the job a moment later.
import type { Store, ExperimentRecord } from '../store/store.ts';
import type { RedisClient } from '../store/connection.ts';
import type { Queues } from './queue.ts';

const CHANNEL = 'cancel' as const;
/** How long a cancel request waits for a worker to take the job. */
const FLAG_SECONDS = 7 * 86_400;

/** The reason an experiment stops when it is cancelled; the worker marks the record cancelled for it. */
export class CancelledError extends Error {
  constructor() {
    super('cancelled by request');
  }
}

/**
 * Cancel an experiment that is not final. Resolves to the cancelled record when it was still waiting,
 * or undefined when the worker running it has been asked to stop.
 */
export async function cancel(store: Store, queues: Queues, rec: ExperimentRecord): Promise<ExperimentRecord | undefined> {
  const job = await queues.get(rec.pool).getJob(rec.id);
  const state = job ? await job.getState() : 'unknown';
  if (state !== 'active') {
    // Waiting, delayed or prioritized: take it out of the queue; if a worker grabbed it meanwhile,
    // remove() refuses and the worker is asked instead.
    const removed = job ? await job.remove().then(() => true, () => false) : true;
    if (removed) {
      await store.transition(rec.id, ['queued', 'scheduled'], { status: 'cancelled', finishedAt: new Date().toISOString(), error: { reason: 'cancelled by request' } });
      const now = await store.get(rec.id);
      if (now?.status === 'cancelled') return now;
    }
  }
  // The flag covers a worker that takes the job after this publish; the message reaches one that holds it.
  await store.redis.set(store.key(CHANNEL, rec.id), '1', 'EX', FLAG_SECONDS);
  await store.redis.publish(store.key(CHANNEL), rec.id);
  return undefined;
}

/** The flag a cancel request leaves for a worker that takes the job after the request was published. */
export function cancelFlagKey(store: Store, id: string): string {
  return store.key(CHANNEL, id);
}

/** Hear cancel requests on a connection of its own (a subscribed connection can do nothing else). */
export async function listenForCancels(store: Store, onCancel: (id: string) => void, log: (msg: string) => void): Promise<RedisClient> {
  const sub = store.redis.duplicate();
  sub.on('error', (err) => log(`redis (cancel channel): ${err.message}`));
  await sub.subscribe(store.key(CHANNEL));
  sub.on('message', (_ch, id: string) => onCancel(id));
  return sub;
}
