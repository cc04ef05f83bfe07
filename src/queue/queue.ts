// BullMQ wiring: one queue per pool of hosts, one job per experiment (the job id is the experiment id,
// so a double submit cannot queue it twice), Redis connections that BullMQ can block on.
// On a Redis Cluster each pool's queue has its own hash-tagged prefix (BullMQ's way of running on a
// Cluster), so pools spread across shards; see poolPrefix.
import { Queue, type Job, type JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import { parseRedisUrl } from '../config.ts';
import { poolPrefix, type ExperimentRecord, type Rider } from '../store/store.ts';
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
  private lean: { connection: Redis; scripts: Map<string, { lua: string; keys: number }> } | undefined;
  private leanUnavailable = false;
  private riderCommands = new Map<string, Map<string, Promise<string | undefined>>>();
  private riderCount = 0;
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
   * Add a job to its pool's queue and run `rider` in the same Lua script, after BullMQ's add and only
   * when that succeeded: one command and one round trip for a new experiment, and nothing half-made if
   * BullMQ refuses the job. The script is the installed BullMQ's own add script, as BullMQ loaded it on
   * the queue's connection, wrapped in a function with the rider after it; BullMQ builds its keys and
   * arguments itself (Job.addJob) and reads its answer itself, so its error codes stay its own. It runs
   * on a connection of its own that knows only these scripts (ioredis copies every script a connection
   * knows into each pipeline it makes, and BullMQ defines dozens).
   * For a single Redis: undefined on a Cluster (the rider's keys and the queue's live in different slots),
   * or when BullMQ's scripts are not where this expects them; then the caller uses a MULTI.
   */
  async addTogether(pool: string, job: Job, rider: Rider): Promise<string | undefined> {
    const lean = await this.leanConnection(pool);
    if (!lean) return undefined;
    // BullMQ's add, caught instead of sent: it names its script and passes keys then arguments.
    let call: { name: string; args: unknown[] } | undefined;
    let answer!: (r: Promise<unknown>) => void;
    const answered = new Promise<unknown>((resolve) => (answer = resolve));
    const sink = { runCommand: (name: string, args: unknown[]) => ((call = { name, args }), answered) };
    const added = job.addJob(sink as never);
    // Called before addJob's first await; anything else means a BullMQ this code does not know.
    const command = call && (await this.riderCommand(lean.connection, lean.scripts, call.name, call.args.length, rider));
    if (!call || !command) {
      added.catch(() => {});
      answer(Promise.reject(new Error('not sent')));
      return undefined;
    }
    // BullMQ's keys, the rider's keys, BullMQ's arguments, the rider's arguments, in one array.
    const n = lean.scripts.get(call.name)!.keys;
    const args: unknown[] = call.args.slice(0, n);
    for (const k of rider.keys) args.push(k);
    for (let i = n; i < call.args.length; i++) args.push(call.args[i]);
    for (const a of rider.args) args.push(a);
    coalesce(lean.connection);
    answer((lean.connection as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[command]!(...args));
    return (await added) as string;
  }

  /** The connection addTogether runs on, with the Lua of BullMQ's add scripts (by their versioned names). */
  private async leanConnection(pool: string): Promise<{ connection: Redis; scripts: Map<string, { lua: string; keys: number }> } | undefined> {
    if ((this.connection as { isCluster?: boolean }).isCluster || this.leanUnavailable) return undefined;
    if (!this.lean) {
      await this.get(pool).waitUntilReady(); // BullMQ has defined its scripts on the connection by then
      if (this.lean || this.leanUnavailable) return this.lean;
      const source = this.connection as Redis;
      const scripts = new Map<string, { lua: string; keys: number }>();
      for (const [name, s] of Object.entries(source.scriptsSet as Record<string, { lua: string; numberOfKeys: number | null }>)) {
        if (/^add(Standard|Delayed|Prioritized|Parent)Job:/.test(name) && typeof s.numberOfKeys === 'number') scripts.set(name, { lua: s.lua, keys: s.numberOfKeys });
      }
      if (scripts.size < 4) {
        this.leanUnavailable = true;
        return undefined;
      }
      const connection = source.duplicate();
      // Its errors are the shared connection's, logged where that was opened.
      connection.on('error', () => {});
      this.lean = { connection, scripts };
    }
    return this.lean;
  }

  /**
   * The name of the command that runs BullMQ's script `name` and then the rider, defined on the lean
   * connection the first time (once, however many submissions ask at the same moment); undefined when
   * Redis cannot compile the two together (then a MULTI, from then on) or could not be asked (this time).
   */
  private riderCommand(connection: Redis, scripts: Map<string, { lua: string; keys: number }>, name: string, argc: number, rider: Rider): Promise<string | undefined> {
    const script = scripts.get(name);
    if (!script) return Promise.resolve(undefined);
    // Keyed by the rider's Lua last: a constant string, whose hash the Map does not compute again.
    const key = `${name}\0${argc}\0${rider.keys.length}`;
    let byRider = this.riderCommands.get(key);
    if (!byRider) this.riderCommands.set(key, (byRider = new Map()));
    let command = byRider.get(rider.lua);
    if (!command) {
      const lua = [
        'local function bullmqAdd()',
        script.lua,
        'end',
        'local added = bullmqAdd()',
        // BullMQ answers a negative number when it refuses the job (its Job.addJob throws its error then).
        "if type(added) == 'number' and added < 0 then return added end",
        // Where the rider's keys and arguments start: it reads KEYS[k + i] and ARGV[a + i] (no copies).
        `local k, a = ${script.keys}, ${argc - script.keys}`,
        rider.lua,
        'return added',
      ].join('\n');
      const named = `kvmqAdd${++this.riderCount}`;
      // Compiled once here, so a BullMQ whose script does not wrap falls back instead of failing a submit.
      command = connection.script('LOAD', lua).then(
        () => {
          connection.defineCommand(named, { lua, numberOfKeys: script.keys + rider.keys.length });
          return named;
        },
        (err: Error) => {
          // Redis refused the script (an error reply): a MULTI from then on. Anything else (Redis away):
          // a MULTI this time, and the next submission asks again.
          if (err.name !== 'ReplyError') byRider.delete(rider.lua);
          return undefined;
        },
      );
      byRider.set(rider.lua, command);
    }
    return command;
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.close()));
    await this.lean?.connection.quit().catch(() => this.lean?.connection.disconnect());
  }
}

interface Corkable {
  cork(): void;
  uncork(): void;
}
const corked = new WeakSet<Corkable>();

/**
 * Hold the connection's writes until the end of this turn of the event loop, so the submissions that
 * arrive together leave in one write (one system call, one wake-up of Redis) rather than one each.
 * Nothing waits longer than the turn.
 */
function coalesce(connection: Redis): void {
  const stream = (connection as unknown as { stream?: Corkable }).stream;
  if (!stream || corked.has(stream)) return;
  corked.add(stream);
  stream.cork();
  setImmediate(() => {
    corked.delete(stream);
    stream.uncork();
  });
}
