// BullMQ wiring: one queue per pool of hosts, one job per experiment (the job id is the experiment id,
// so a double submit cannot queue it twice), Redis connections that BullMQ can block on.
// On a Redis Cluster each pool's queue has its own hash-tagged prefix (BullMQ's way of running on a
// Cluster), so pools spread across shards; see poolPrefix.
import { Queue, type IRedisTransaction, type JobsOptions } from 'bullmq';
import type { ChainableCommander, Redis } from 'ioredis';
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
  private lean: Redis | undefined;
  private leanUnavailable = false;
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

  /**
   * A transaction on which a job can be added to a pool's queue (Job.addJob) beside other writes, for a
   * single Redis (undefined on a Cluster: there the queue's own client makes it). It runs on a connection
   * of its own that knows only BullMQ's add scripts: ioredis copies every script a connection knows into
   * each transaction it makes, and BullMQ defines dozens on the queue's, which cost a submission more
   * CPU than all its writes (bench/RESULTS.md).
   */
  async addTransaction(pool: string): Promise<(IRedisTransaction & ChainableCommander) | undefined> {
    if ((this.connection as { isCluster?: boolean }).isCluster || this.leanUnavailable) return undefined;
    if (!this.lean) {
      const queue = this.get(pool);
      await queue.waitUntilReady(); // BullMQ has defined its scripts on the connection by then
      const source = this.connection as Redis;
      if (!this.lean && !this.leanUnavailable) {
        const lean = source.duplicate();
        // Its errors are the shared connection's, logged where that was opened.
        lean.on('error', () => {});
        const scripts = Object.entries(source.scriptsSet as Record<string, { lua: string; numberOfKeys: number | null }>).filter(([name]) => /^add(Standard|Delayed|Prioritized|Parent)Job:/.test(name));
        // Without them the job would silently be missing from the transaction: then the queue's own makes it.
        if (scripts.length < 4) {
          lean.disconnect();
          this.leanUnavailable = true;
          return undefined;
        }
        for (const [name, script] of scripts) lean.defineCommand(name, { lua: script.lua, numberOfKeys: script.numberOfKeys ?? undefined });
        this.lean = lean;
      }
    }
    if (!this.lean) return undefined;
    const m = this.lean.multi() as unknown as IRedisTransaction & ChainableCommander & Record<string, (args: unknown[]) => unknown>;
    // What BullMQ's own transactions offer its add (a Lua script by name, its arguments as one list).
    m.runCommand = (name: string, args: unknown[]) => {
      m[name]!(args);
      return m;
    };
    return m;
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.close()));
    await this.lean?.quit().catch(() => this.lean?.disconnect());
  }
}
