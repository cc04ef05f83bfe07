// BullMQ wiring: one queue per pool of hosts, one job per experiment (the job id is the experiment id,
// so a double submit cannot queue it twice), Redis connections that BullMQ can block on.
// On a Redis Cluster each pool's queue has its own hash-tagged prefix (BullMQ's way of running on a
// Cluster), so pools spread across shards; see poolPrefix.
import { Queue, type JobsOptions } from 'bullmq';
import { parseRedisUrl } from '../config.ts';
import { poolPrefix, type ExperimentRecord } from '../store/store.ts';
import { openRedis, type RedisClient } from '../store/connection.ts';
import { earliestStart } from '../model/window.ts';

export const queueName = (pool: string) => `experiments-${pool}`;

/** A connection for BullMQ from a REDIS_URL, through the one connection factory. */
export function connect(url: string): RedisClient {
  return openRedis(parseRedisUrl(url));
}

/** The job of an experiment, delayed to its earliest start (notBefore and the next opening of its window). */
export function jobOptions(rec: ExperimentRecord, now = Date.now()): JobsOptions {
  const at = earliestStart(rec.spec.schedule, now);
  return {
    jobId: rec.id,
    // A crash or a lost lock retries the job; stored cells are skipped, so a retry only does what is left.
    attempts: 3,
    backoff: { type: 'exponential', delay: 5000 },
    ...(at > now ? { delay: at - now } : {}),
    ...(rec.spec.schedule?.priority ? { priority: rec.spec.schedule.priority } : {}),
    // Records and cells live in the store; the job itself is only the ticket, so finished ones can go.
    removeOnComplete: { age: 7 * 24 * 3600, count: 10000 },
    removeOnFail: { age: 30 * 24 * 3600, count: 10000 },
  };
}

export class Queues {
  private queues = new Map<string, Queue>();
  constructor(private connection: RedisClient, private prefix: string) {}

  get(pool: string): Queue {
    let q = this.queues.get(pool);
    if (!q) {
      q = new Queue(queueName(pool), { connection: this.connection, prefix: poolPrefix(this.prefix, pool) });
      // Connection errors are the shared client's, logged once where it was opened; without a listener
      // BullMQ would print each one during a failover.
      q.on('error', () => {});
      this.queues.set(pool, q);
    }
    return q;
  }

  /** Queue an experiment's job; it waits as delayed until its earliest start. */
  async add(rec: ExperimentRecord, now = Date.now()): Promise<void> {
    await this.get(rec.pool).add('experiment', { id: rec.id }, jobOptions(rec, now));
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.close()));
  }
}
