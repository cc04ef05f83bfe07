// Everything kvmq keeps lives in Redis: experiment records, their cells (one hash field per cell,
// written with HSETNX so a retried job never stores a cell twice), profile read-backs, the system a run
// saw, and a pub/sub channel of events.
//
// Key layout on a Redis Cluster: each pool's experiments (record, cells, profiles, system, the pool's
// index) and its queue live under the pool's own hash tag (poolPrefix), so pools spread across shards.
// The `default` pool keeps the base prefix, so a single Redis from before keeps every key name. What
// spans pools (the pool list, where each experiment lives, hosts, batches, schedules, webhooks, metrics)
// stays under the base tag. Every MULTI and Lua script touches keys of one tag only. Every key is
// listed in keys.ts.
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import type { ChainableCommander } from 'ioredis';
import type { RedisClient } from './connection.ts';
import type { Spec } from '../model/spec.ts';
import { cellKey, type Cell } from '../model/cell.ts';
import type { SystemInfo } from '../host/system.ts';
import type { SeriesCheckResult } from '../model/series.ts';
import { capText } from '../errors.ts';
import type { KeyName } from './keys.ts';

export type Status = 'queued' | 'scheduled' | 'running' | 'completed' | 'failed' | 'cancelled';
export const STATUSES: Status[] = ['queued', 'scheduled', 'running', 'completed', 'failed', 'cancelled'];
export const FINAL: Status[] = ['completed', 'failed', 'cancelled'];

export interface Progress {
  done: number;
  total: number;
  current?: { profile: string; scenario: string; workload: string; repetition?: number };
}

export interface ExperimentRecord {
  id: string;
  name: string;
  status: Status;
  pool: string;
  spec: Spec;
  progress: Progress;
  host?: string;
  attempts?: number;
  createdAt: string;
  startedAt?: string;
  finishedAt?: string;
  error?: { reason: string };
  /** a completed run of a series: what the check against the runs before it found */
  regression?: SeriesCheckResult;
}

export interface ProfileRecord {
  name: string;
  target: string;
  requested: Record<string, number>;
  applied: Record<string, number>;
  readBack: Record<string, number>;
  effective?: Record<string, number>;
  before?: Record<string, number>;
  restored: boolean;
  guestReadBack?: Record<string, number>[];
}

export type ExperimentEvent =
  | { type: 'status'; id: string; status: Status; error?: { reason: string } }
  | { type: 'progress'; id: string; progress: Progress }
  | { type: 'cell'; id: string; cell: Cell }
  | { type: 'log'; id: string; message: string };

/** Upper bounds (seconds) of the cell-duration histogram served at /metrics. */
export const CELL_BUCKETS = [0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 7200];

const FIELDS = ['id', 'name', 'status', 'pool', 'spec', 'progress', 'host', 'attempts', 'createdAt', 'startedAt', 'finishedAt', 'error', 'regression'] as const;

// Compare-and-set on the status field, so a cancel and a worker's start cannot both win. The same
// script moves one count from the old status to the new one in the counts hash (KEYS[2]), so /metrics
// reads experiments by status in one HGETALL however many experiments are stored. A move to a final
// status also puts the id (ARGV[2]) in the outbox (KEYS[3]) in the same step: a process that dies before
// it queued the webhook leaves the id there, and the next worker start sends what is owed. When it
// happened, the status event (ARGV[4] on channel ARGV[3]) is published in the same step, and what the
// caller asks back (ARGV[5]: 'r' the record, 'c' the cells hash KEYS[4]) comes with the answer, so a
// worker's start and end each cost one round trip here instead of three.
const TRANSITION = `
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return {-1} end
local ok = false
for i = 6, #ARGV do if ARGV[i] == cur then ok = true end end
if not ok then return {0} end
local patch = cjson.decode(ARGV[1])
for k, v in pairs(patch) do redis.call('HSET', KEYS[1], k, v) end
if ARGV[2] ~= '' then redis.call('SADD', KEYS[3], ARGV[2]) end
if patch.status then
  redis.call('HINCRBY', KEYS[2], cjson.decode(cur), -1)
  redis.call('HINCRBY', KEYS[2], cjson.decode(patch.status), 1)
end
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
local rec, cells = false, false
if string.find(ARGV[5], 'r', 1, true) then rec = redis.call('HGETALL', KEYS[1]) end
if string.find(ARGV[5], 'c', 1, true) then cells = redis.call('HGETALL', KEYS[4]) end
return {1, rec, cells}`;

// A cell stored once (HSETNX), and its event published in the same step when it is new (ARGV[3], the
// channel, empty when the caller publishes after waiting for replicas).
const STORE_CELL = `
local fresh = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
if fresh == 1 and ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return fresh`;

// Delete a record and take it out of its status count, atomically.
const REMOVE = `
local cur = redis.call('HGET', KEYS[1], 'status')
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[1])
if cur then redis.call('HINCRBY', KEYS[6], cjson.decode(cur), -1) end
return cur and 1 or 0`;

// Counts by status for a database written before the counts hash existed: one pass over the index,
// inside Lua so no transition lands between the read and the write. Runs once (the _init field).
const BACKFILL_COUNTS = `
if redis.call('HEXISTS', KEYS[1], '_init') == 1 then return 0 end
local counts = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local st = redis.call('HGET', ARGV[1] .. id, 'status')
  if st then
    local s = cjson.decode(st)
    counts[s] = (counts[s] or 0) + 1
  end
end
redis.call('DEL', KEYS[1])
for s, n in pairs(counts) do redis.call('HSET', KEYS[1], s, n) end
redis.call('HSET', KEYS[1], '_init', 1)
return 1`;

// A record created together with a marker that names it (a schedule tick): both or neither, and counted
// in the pool's counts hash (KEYS[4]) like create() does. Answers the id the marker names, which is an
// earlier record's when the marker was already there.
const CREATE_ONCE = `
if redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[2], 'NX') then
  redis.call('HSET', KEYS[1], unpack(cjson.decode(ARGV[4])))
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
  redis.call('HINCRBY', KEYS[4], ARGV[5], 1)
  return ARGV[1]
end
return redis.call('GET', KEYS[3])`;

/**
 * Writes that ride on a job's add, in the same Lua script (Queues.addTogether in src/queue/queue.ts): Lua that
 * reads its own keys as KEYS[k + 1], KEYS[k + 2], ... and its arguments as ARGV[a + 1], ... (k and a are
 * set before it), and runs only after BullMQ added the job.
 */
export interface Rider {
  lua: string;
  keys: string[];
  args: (string | number)[];
}

/**
 * createRider's writes. Keys: exp, exps, counts, pools, pool-of; arguments: id, score, status, pool, then the
 * record's fields. Each redis.call costs Redis 5 to 10 µs (7.0, measured), so the default pool skips the
 * two that only place a record of another pool.
 */
const CREATE_RIDER = `
redis.call('HSET', KEYS[k + 1], unpack(ARGV, a + 5))
redis.call('ZADD', KEYS[k + 2], ARGV[a + 2], ARGV[a + 1])
redis.call('HINCRBY', KEYS[k + 3], ARGV[a + 3], 1)
if ARGV[a + 4] ~= 'default' then
  redis.call('SADD', KEYS[k + 4], ARGV[a + 4])
  redis.call('HSET', KEYS[k + 5], ARGV[a + 1], ARGV[a + 4])
end`;

// One draw from the CSPRNG serves 819 ids: a draw per id cost several microseconds on every submit
// (a measurable share of the API's intake in bench/), and pooled bytes are just as unpredictable.
let pool = Buffer.alloc(0);
let poolAt = 0;
function randomHex5(): string {
  if (poolAt + 5 > pool.length) {
    pool = randomBytes(4095);
    poolAt = 0;
  }
  poolAt += 5;
  return pool.toString('hex', poolAt - 5, poolAt);
}

/** The command name each script got on each connection (Store.script). */
const scriptNames = new WeakMap<RedisClient, Map<string, string>>();

/**
 * The prefix (with its Cluster hash tag) of a pool's queue and experiments. `default` keeps the base
 * prefix so single-Redis key names stay what they were; `{kvmq}` becomes `{kvmq:gpu}` for pool gpu.
 */
export function poolPrefix(prefix: string, pool: string): string {
  if (pool === 'default') return prefix;
  const m = /^([^{]*)\{([^}]*)\}(.*)$/.exec(prefix);
  return m ? `${m[1]}{${m[2]}:${pool}}${m[3]}` : `${prefix}:${pool}`;
}

/** A Map that forgets its oldest entry (by first insertion) past `max` entries. */
class BoundedMap<K, V> extends Map<K, V> {
  constructor(private readonly max: number) {
    super();
  }

  override set(key: K, value: V): this {
    if (this.size >= this.max && !this.has(key)) this.delete(this.keys().next().value as K);
    return super.set(key, value);
  }
}

export class Store {
  /**
   * Pool of each experiment seen recently: it never changes, so one lookup per id and process is enough.
   * Bounded (oldest entry out first): an API adds every id it accepts, and a long-running one would
   * otherwise hold them all (and its garbage collector walk them).
   */
  private poolCache = new BoundedMap<string, string>(10_000);
  /** Replicas that acknowledge a result write before it counts (Sentinel: 1 by default). */
  waitReplicas = 0;
  /** Called when WAIT saw fewer replicas than asked: the write stands, but a failover now could lose it. */
  onUnreplicated?: (what: string, acked: number) => void;
  /** Experiments with such writes since the last takeUnreplicated (the worker checks them again). */
  private unreplicated = new Set<string>();

  constructor(readonly redis: RedisClient, readonly prefix = '{kvmq}') {}

  /** A key under the base prefix (cross-pool data: hosts, batches, schedules, webhooks, metrics); names in keys.ts. */
  key(name: KeyName, ...ids: string[]): string {
    return [this.prefix, name, ...ids].join(':');
  }

  /** A key under a pool's own hash tag; names in keys.ts. */
  poolKey(pool: string, name: KeyName, ...ids: string[]): string {
    return [poolPrefix(this.prefix, pool), name, ...ids].join(':');
  }

  /** Pools that have had experiments (always including `default`), for views across pools. */
  async pools(): Promise<string[]> {
    const known = await this.redis.smembers(this.key('pools'));
    return [...new Set(['default', ...known])].sort();
  }

  /** The pool an experiment lives in: `default` unless the pool index says otherwise (or it is unknown). */
  async poolOf(id: string): Promise<string> {
    const cached = this.poolCache.get(id);
    if (cached) return cached;
    const pool = await this.redis.hget(this.key('pool-of'), id);
    if (pool) this.poolCache.set(id, pool);
    return pool ?? 'default';
  }

  private async expKey(id: string, kind: 'exp' | 'cells' | 'profiles' | 'system'): Promise<string> {
    return this.poolKey(await this.poolOf(id), kind, id);
  }

  /**
   * Wait for replicas to hold what this connection wrote (WAIT), when configured. Sent in one pipeline
   * with a key of the slot written, so on a Cluster it reaches the node that took the write.
   */
  private async durable(key: string, id: string, what: string): Promise<void> {
    if (this.waitReplicas <= 0) return;
    const r = await this.redis.pipeline().exists(key).call('WAIT', String(this.waitReplicas), '2000').exec();
    const acked = Number(r?.[1]?.[1] ?? 0);
    if (acked < this.waitReplicas) {
      this.unreplicated.add(id);
      this.onUnreplicated?.(what, acked);
    }
  }

  /**
   * Run one of kvmq's Lua scripts by its digest (EVALSHA; ioredis sends the body only when Redis answers
   * NOSCRIPT, after a restart or a failover): the worker runs several per experiment, and sending each
   * body every time was a share of a tiny experiment's writes.
   */
  script(lua: string, keys: string[], args: (string | number)[]): Promise<unknown> {
    let names = scriptNames.get(this.redis);
    if (!names) scriptNames.set(this.redis, (names = new Map()));
    let name = names.get(lua);
    if (!name) {
      name = `kvmqScript${names.size + 1}`;
      this.redis.defineCommand(name, { lua });
      names.set(lua, name);
    }
    const run = (this.redis as unknown as Record<string, (...a: (string | number)[]) => Promise<unknown>>)[name]!;
    return run.call(this.redis, keys.length, ...keys, ...args);
  }

  /** Whether a write of this experiment reached fewer replicas than asked since the last call. */
  takeUnreplicated(id: string): boolean {
    return this.unreplicated.delete(id);
  }

  /**
   * Readiness that means it: write, read back and delete a key under the base tag and under each
   * pool's tag given. A replica, a master refusing writes (min-replicas-to-write) or a full Redis fails.
   */
  async probe(pools: string[] = []): Promise<void> {
    const token = `${os.hostname()}:${process.pid}:${randomHex5()}`;
    for (const pfx of [...new Set([this.prefix, ...pools.map((p) => poolPrefix(this.prefix, p))])]) {
      const key = `${pfx}:ready:${token}`;
      await this.redis.set(key, token, 'PX', 10_000);
      const back = await this.redis.get(key);
      await this.redis.del(key);
      if (back !== token) throw new Error(`wrote ${key} but read back ${back === null ? 'nothing' : 'something else'}`);
    }
  }

  static newId(): string {
    // Time first, so ids sort by creation; 40 random bits after it keep them unguessable enough to share.
    return Date.now().toString(36) + randomHex5();
  }

  async create(rec: ExperimentRecord): Promise<void> {
    // Where it lives first (base tag), then the record and its pool's index together (pool tag).
    if (rec.pool !== 'default') await this.placeInto(this.redis.multi(), rec).exec();
    const m = this.redis.multi();
    this.createInto(m, rec);
    await m.exec();
    await this.created(rec);
  }

  /**
   * Where a record of a pool other than `default` lives (the pool list and the pool index, base tag),
   * added to a transaction the caller runs. Nothing for the default pool.
   */
  placeInto<M extends ChainableCommander>(m: M, rec: ExperimentRecord): M {
    if (rec.pool !== 'default') m.sadd(this.key('pools'), rec.pool).hset(this.key('pool-of'), { [rec.id]: rec.pool });
    this.poolCache.set(rec.id, rec.pool);
    return m;
  }

  /**
   * create()'s writes under the record's pool tag (the record, its pool's index, its status count), added
   * to a transaction the caller runs: the submit path sends them in the same MULTI as the job's add, so a
   * new experiment costs one round trip. Call created() after the transaction ran.
   */
  createInto(m: ChainableCommander, rec: ExperimentRecord): void {
    this.poolCache.set(rec.id, rec.pool);
    // hset with an object: BullMQ's wrapped transactions take only that form, plain ioredis takes both.
    m.hset(this.poolKey(rec.pool, 'exp', rec.id), encode(rec))
      .zadd(this.poolKey(rec.pool, 'exps'), Date.parse(rec.createdAt), rec.id)
      .hincrby(this.poolKey(rec.pool, 'counts'), rec.status, 1);
  }

  /**
   * create()'s writes, and placeInto's for a pool other than `default`, as a rider on a job's add
   * (Queues.addTogether): the record, its pool's index and status count, the pool list and the pool index
   * in one script with the job. For a single Redis, where keys of different tags may meet in one script.
   * Call created() after it ran.
   */
  createRider(rec: ExperimentRecord): Rider {
    this.poolCache.set(rec.id, rec.pool);
    const args = encodeFlat(rec, [rec.id, Date.parse(rec.createdAt), rec.status, rec.pool]);
    return {
      lua: CREATE_RIDER,
      keys: [this.poolKey(rec.pool, 'exp', rec.id), this.poolKey(rec.pool, 'exps'), this.poolKey(rec.pool, 'counts'), this.key('pools'), this.key('pool-of')],
      args,
    };
  }

  /** After a transaction with createInto, or a rider from createRider, ran: wait for replicas where configured. */
  created(rec: ExperimentRecord): Promise<void> {
    // Without replicas to wait for, nothing is built: this runs once per submission.
    if (this.waitReplicas <= 0) return Promise.resolve();
    return this.durable(this.poolKey(rec.pool, 'exp', rec.id), rec.id, `experiment ${rec.id}`);
  }

  /**
   * Create the record only if `marker` (a key under the record's pool tag) is not set yet, and set it to
   * the record's id in the same step.
   * Answers the id the marker names (the earlier record's when the marker was there already).
   */
  async createOnce(rec: ExperimentRecord, marker: [KeyName, ...string[]], ttlSeconds: number): Promise<string> {
    if (rec.pool !== 'default') {
      await this.redis.multi().sadd(this.key('pools'), rec.pool).hset(this.key('pool-of'), rec.id, rec.pool).exec();
    }
    this.poolCache.set(rec.id, rec.pool);
    const fields = encodeFlat(rec, []);
    const exp = this.poolKey(rec.pool, 'exp', rec.id);
    const id = (await this.script(
      CREATE_ONCE, [exp, this.poolKey(rec.pool, 'exps'), this.poolKey(rec.pool, marker[0], ...marker.slice(1)), this.poolKey(rec.pool, 'counts')],
      [rec.id, String(ttlSeconds), String(Date.parse(rec.createdAt)), JSON.stringify(fields), rec.status],
    )) as string;
    if (id === rec.id) await this.durable(exp, rec.id, `experiment ${rec.id}`);
    return id;
  }

  /**
   * `pool`: where the caller expects the record (a worker takes jobs of its own pool's queue), read
   * first so the pool index is not asked; the index is asked when the record is not there.
   */
  async get(id: string, pool?: string): Promise<ExperimentRecord | null> {
    if (!/^[a-z0-9]{1,64}$/.test(id)) return null;
    if (pool !== undefined && !this.poolCache.has(id)) {
      const h = await this.redis.hgetall(this.poolKey(pool, 'exp', id));
      // Only a record that names this pool lives there by today's layout (an old layout kept others
      // under the base tag, found through the index below).
      if (h.id && h.pool === JSON.stringify(pool)) {
        this.poolCache.set(id, pool);
        return decode(h);
      }
    }
    const h = await this.redis.hgetall(await this.expKey(id, 'exp'));
    return h.id ? decode(h) : null;
  }

  /** Ids of every pool's index, newest first (each pool's index read whole, or its first `upto`). */
  private async indexed(upto = -1): Promise<{ ids: string[]; total: number }> {
    const pools = await this.pools();
    const per = await Promise.all(
      pools.map(async (p) => {
        const k = this.poolKey(p, 'exps');
        const [flat, n] = await Promise.all([this.redis.zrevrange(k, 0, upto, 'WITHSCORES'), this.redis.zcard(k)]);
        const out: [string, number][] = [];
        for (let i = 0; i < flat.length; i += 2) out.push([flat[i]!, Number(flat[i + 1])]);
        return { out, n };
      }),
    );
    const seen = new Set<string>();
    const all = per.flatMap((x) => x.out).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? 1 : -1));
    const ids = all.map(([id]) => id).filter((id) => !seen.has(id) && !!seen.add(id));
    return { ids, total: per.reduce((a, x) => a + x.n, 0) };
  }

  async list(opts: { status?: Status; limit: number; offset: number }): Promise<{ items: ExperimentRecord[]; total: number }> {
    if (!opts.status) {
      // Each pool's newest offset+limit, merged: the page is right whatever the pools hold.
      const { ids, total } = await this.indexed(opts.offset + opts.limit - 1);
      const page = ids.slice(opts.offset, opts.offset + opts.limit);
      return { items: (await Promise.all(page.map((id) => this.get(id)))).filter((r): r is ExperimentRecord => !!r), total };
    }
    // Filtering by status scans the indexes; fine for the thousands of experiments a lab keeps.
    const { ids } = await this.indexed();
    const statuses = await Promise.all(ids.map(async (id) => this.redis.hget(await this.expKey(id, 'exp'), 'status')));
    const matching = ids.filter((_, i) => statuses[i] === JSON.stringify(opts.status));
    const page = matching.slice(opts.offset, opts.offset + opts.limit);
    return { items: (await Promise.all(page.map((id) => this.get(id)))).filter((r): r is ExperimentRecord => !!r), total: matching.length };
  }

  /** Every experiment's status, across pools (for /metrics). */
  async statuses(): Promise<(Status | null)[]> {
    const { ids } = await this.indexed();
    return Promise.all(ids.map(async (id) => {
      const v = await this.redis.hget(await this.expKey(id, 'exp'), 'status');
      return v ? (JSON.parse(v) as Status) : null;
    }));
  }

  async update(id: string, patch: Partial<ExperimentRecord>): Promise<void> {
    await this.redis.hset(await this.expKey(id, 'exp'), encode(capError(patch)));
  }

  /** Move to a new status only from one of `from`; answers whether it happened. */
  async transition(id: string, from: Status[], patch: Partial<ExperimentRecord> & { status: Status }): Promise<boolean> {
    return (await this.transitionRead(id, from, patch)).ok;
  }

  /**
   * transition(), answering in the same round trip what the caller reads next: the record as it now is
   * (the worker hands a final one to its notifications) and the stored cells (the runner skips them).
   */
  async transitionRead(
    id: string, from: Status[], patch: Partial<ExperimentRecord> & { status: Status }, want: { record?: boolean; cells?: boolean } = {},
  ): Promise<{ ok: boolean; record?: ExperimentRecord; cells?: Map<string, Cell> }> {
    patch = capError(patch);
    const pool = await this.poolOf(id);
    const key = this.poolKey(pool, 'exp', id);
    const final = FINAL.includes(patch.status);
    // The counts hash and the outbox are per pool: a Lua script touches keys of one hash tag only (Cluster).
    const owed = final ? id : '';
    const ev: ExperimentEvent = { type: 'status', id, status: patch.status, ...(patch.error ? { error: patch.error } : {}) };
    // A final status waits for replicas before it is announced: a reader woken by the event must not see
    // a status that a failover then loses. Otherwise the script publishes it.
    const later = final && this.waitReplicas > 0;
    const r = (await this.script(
      TRANSITION, [key, this.poolKey(pool, 'counts'), this.poolKey(pool, 'outbox'), this.poolKey(pool, 'cells', id)],
      [JSON.stringify(encode(patch)), owed, later ? '' : this.channel(id), later ? '' : JSON.stringify(ev),
        `${want.record ? 'r' : ''}${want.cells ? 'c' : ''}`, ...from.map((s) => JSON.stringify(s))],
    )) as [number, string[] | null, string[] | null];
    if (r[0] !== 1) return { ok: false };
    if (final) await this.durable(key, id, `experiment ${id} ${patch.status}`);
    if (later) await this.publish(ev);
    const out: { ok: boolean; record?: ExperimentRecord; cells?: Map<string, Cell> } = { ok: true };
    if (want.record && r[1]) out.record = decode(pairs(r[1]));
    if (want.cells) out.cells = new Map(Object.entries(pairs(r[2] ?? [])).map(([k, v]) => [k, JSON.parse(v) as Cell]));
    return out;
  }

  /** The batch an experiment belongs to (queue/batch.ts links it before its job is queued), if any. */
  async batchOf(id: string): Promise<string | undefined> {
    return (await this.redis.get(this.key('batchof', id))) ?? undefined;
  }

  /** Experiments that reached a final status and whose notifications (webhook, batch) may not be queued yet. */
  async owed(): Promise<string[]> {
    const per = await Promise.all((await this.pools()).map((p) => this.redis.smembers(this.poolKey(p, 'outbox'))));
    return per.flat();
  }

  async isOwed(id: string): Promise<boolean> {
    return (await this.redis.sismember(this.poolKey(await this.poolOf(id), 'outbox'), id)) === 1;
  }

  /** The notifications of a final experiment are queued: take it out of the outbox. */
  async settled(id: string): Promise<void> {
    await this.redis.srem(this.poolKey(await this.poolOf(id), 'outbox'), id);
  }

  /**
   * Store a finished cell once. Answers false when it was already stored (a retried job). The cell's
   * event goes out in the same round trip; the /metrics counters follow it, handed to `defer` when given
   * (the runner awaits them with its other writes) instead of awaited here.
   */
  async storeCell(id: string, cell: Cell, defer?: (write: Promise<unknown>) => void): Promise<boolean> {
    const key = await this.expKey(id, 'cells');
    const ev: ExperimentEvent = { type: 'cell', id, cell };
    // With replicas to wait for, the event follows the WAIT, as a status event does.
    const later = this.waitReplicas > 0;
    const fresh = await this.script(STORE_CELL, [key], [cellKey(cell), JSON.stringify(cell), later ? '' : this.channel(id), later ? '' : JSON.stringify(ev)]);
    await this.durable(key, id, `a cell of experiment ${id}`);
    if (fresh === 1) {
      const m = this.redis.multi().hincrby(this.key('metrics'), 'cells', 1).hincrbyfloat(this.key('metrics'), 'cell_seconds_sum', cell.seconds);
      for (const b of CELL_BUCKETS) if (cell.seconds <= b) m.hincrby(this.key('metrics'), `cell_le_${b}`, 1);
      const counted = m.exec();
      if (defer) defer(counted);
      else await counted;
      if (later) await this.publish(ev);
    }
    return fresh === 1;
  }

  async cells(id: string): Promise<Map<string, Cell>> {
    const h = await this.redis.hgetall(await this.expKey(id, 'cells'));
    return new Map(Object.entries(h).map(([k, v]) => [k, JSON.parse(v) as Cell]));
  }

  /** Add to a counter served at /metrics (guest boots, webhook attempts). */
  async count(field: string, by = 1): Promise<void> {
    await this.redis.hincrby(this.key('metrics'), field, by);
  }

  async putProfile(id: string, p: ProfileRecord): Promise<void> {
    const restoreError = (p as { restoreError?: unknown }).restoreError;
    if (typeof restoreError === 'string') p = { ...p, restoreError: capText(restoreError) } as ProfileRecord;
    await this.redis.hset(await this.expKey(id, 'profiles'), p.name, JSON.stringify(p));
  }

  async profiles(id: string): Promise<Map<string, ProfileRecord>> {
    const h = await this.redis.hgetall(await this.expKey(id, 'profiles'));
    return new Map(Object.entries(h).map(([k, v]) => [k, JSON.parse(v) as ProfileRecord]));
  }

  async putSystem(id: string, s: SystemInfo): Promise<void> {
    await this.redis.set(await this.expKey(id, 'system'), JSON.stringify(s));
  }

  async system(id: string): Promise<SystemInfo | null> {
    const s = await this.redis.get(await this.expKey(id, 'system'));
    return s ? (JSON.parse(s) as SystemInfo) : null;
  }

  channel(id: string): string {
    return this.key('events', id);
  }

  /**
   * Record an experiment's progress and publish it in one round trip: the record is written first, so a
   * reader woken by the event finds the progress it announces.
   */
  async putProgress(id: string, progress: Progress): Promise<void> {
    const key = await this.expKey(id, 'exp');
    const ev: ExperimentEvent = { type: 'progress', id, progress };
    const r = await this.redis.pipeline().hset(key, encode({ progress })).publish(this.channel(id), JSON.stringify(ev)).exec();
    for (const [err] of r ?? []) if (err) throw err;
  }

  async publish(ev: ExperimentEvent): Promise<void> {
    await this.redis.publish(this.channel(ev.id), JSON.stringify(ev));
  }

  /**
   * Delete a finished experiment and everything kept about it: cells, profiles, system, webhook
   * deliveries, its batch link and any cancel flag. The caller checks that it is finished.
   */
  async purge(id: string): Promise<void> {
    await this.remove(id);
    // Cross-pool keys under the base tag: one slot, so one command.
    await this.redis.del(this.key('deliveries', id), this.key('batchof', id), this.key('cancel', id));
  }

  /** An experiment's status alone (null when it does not exist), for counting without reading records. */
  async status(id: string): Promise<Status | null> {
    const s = await this.redis.hget(await this.expKey(id, 'exp'), 'status');
    return s ? (JSON.parse(s) as Status) : null;
  }

  async remove(id: string): Promise<void> {
    const pool = await this.poolOf(id);
    const k = (kind: KeyName) => this.poolKey(pool, kind, id);
    // Deleted and taken out of its status count in one script (every key under the pool's tag).
    const keys = [k('exp'), k('cells'), k('profiles'), k('system'), this.poolKey(pool, 'exps'), this.poolKey(pool, 'counts')];
    await this.script(REMOVE, keys, [id]);
    if (pool !== 'default') await this.redis.hdel(this.key('pool-of'), id);
    this.poolCache.delete(id);
  }

  /**
   * Experiments by status, kept by create, transition and remove: O(1) in the number stored (one hash
   * per pool). A pool written before the counts existed is counted once, on the first call.
   */
  async countsByStatus(): Promise<Record<Status, number>> {
    const total = Object.fromEntries(STATUSES.map((s) => [s, 0])) as Record<Status, number>;
    for (const pool of await this.pools()) {
      const key = this.poolKey(pool, 'counts');
      let h = await this.redis.hgetall(key);
      if (!h._init) {
        await this.script(BACKFILL_COUNTS, [key, this.poolKey(pool, 'exps')], [this.poolKey(pool, 'exp', '')]);
        h = await this.redis.hgetall(key);
      }
      for (const s of STATUSES) total[s] += Math.max(0, Number(h[s] ?? 0));
    }
    return total;
  }
}

function encode(rec: Partial<ExperimentRecord>): Record<string, string> {
  return pairs(encodeFlat(rec, []) as string[]);
}

/**
 * The record's fields as field, value, ... appended to `out` (each defined field as JSON): the one rule
 * for how a record is stored. Flat, so the submission's rider takes them with no object in between.
 */
function encodeFlat(rec: Partial<ExperimentRecord>, out: (string | number)[]): (string | number)[] {
  for (const k of Object.keys(rec) as (keyof ExperimentRecord)[]) {
    const v = rec[k];
    if (v !== undefined) out.push(k, JSON.stringify(v));
  }
  return out;
}

/** A flat [field, value, ...] array (HGETALL inside a script) as an object. */
function pairs(flat: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i]!] = flat[i + 1]!;
  return out;
}

function decode(h: Record<string, string>): ExperimentRecord {
  const out: Record<string, unknown> = {};
  for (const f of FIELDS) if (h[f] !== undefined) out[f] = JSON.parse(h[f]);
  return out as unknown as ExperimentRecord;
}

/** Every stored reason is capped: a list of records must stay small whatever an error quoted. */
function capError<T extends Partial<ExperimentRecord>>(patch: T): T {
  return patch.error ? { ...patch, error: { ...patch.error, reason: capText(patch.error.reason) } } : patch;
}
