// Everything kvmq keeps lives in Redis, under one prefix whose hash tag keeps it in one Cluster slot:
// experiment records, their cells (one hash field per cell, written with HSETNX so a retried job never
// stores a cell twice), profile read-backs, the system a run saw, and a pub/sub channel of events.
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Spec } from '../model/spec.ts';
import { cellKey, type Cell } from '../model/cell.ts';
import type { SystemInfo } from '../host/system.ts';

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

const FIELDS = ['id', 'name', 'status', 'pool', 'spec', 'progress', 'host', 'attempts', 'createdAt', 'startedAt', 'finishedAt', 'error'] as const;

// Compare-and-set on the status field, so a cancel and a worker's start cannot both win.
const TRANSITION = `
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return -1 end
local ok = false
for i = 2, #ARGV do if ARGV[i] == cur then ok = true end end
if not ok then return 0 end
local patch = cjson.decode(ARGV[1])
for k, v in pairs(patch) do redis.call('HSET', KEYS[1], k, v) end
return 1`;

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

export class Store {
  constructor(readonly redis: Redis, readonly prefix = '{kvmq}') {}

  key(...parts: string[]): string {
    return [this.prefix, ...parts].join(':');
  }

  static newId(): string {
    // Time first, so ids sort by creation; 40 random bits after it keep them unguessable enough to share.
    return Date.now().toString(36) + randomHex5();
  }

  async create(rec: ExperimentRecord): Promise<void> {
    await this.redis
      .multi()
      .hset(this.key('exp', rec.id), encode(rec))
      .zadd(this.key('exps'), Date.parse(rec.createdAt), rec.id)
      .exec();
  }

  async get(id: string): Promise<ExperimentRecord | null> {
    if (!/^[a-z0-9]{1,64}$/.test(id)) return null;
    const h = await this.redis.hgetall(this.key('exp', id));
    return h.id ? decode(h) : null;
  }

  async list(opts: { status?: Status; limit: number; offset: number }): Promise<{ items: ExperimentRecord[]; total: number }> {
    if (!opts.status) {
      const ids = await this.redis.zrevrange(this.key('exps'), opts.offset, opts.offset + opts.limit - 1);
      const total = await this.redis.zcard(this.key('exps'));
      return { items: (await Promise.all(ids.map((id) => this.get(id)))).filter((r): r is ExperimentRecord => !!r), total };
    }
    // Filtering by status scans the index; fine for the thousands of experiments a lab keeps.
    const ids = await this.redis.zrevrange(this.key('exps'), 0, -1);
    const statuses = await Promise.all(ids.map((id) => this.redis.hget(this.key('exp', id), 'status')));
    const matching = ids.filter((_, i) => statuses[i] === JSON.stringify(opts.status));
    const page = matching.slice(opts.offset, opts.offset + opts.limit);
    return { items: (await Promise.all(page.map((id) => this.get(id)))).filter((r): r is ExperimentRecord => !!r), total: matching.length };
  }

  async update(id: string, patch: Partial<ExperimentRecord>): Promise<void> {
    await this.redis.hset(this.key('exp', id), encode(patch));
  }

  /** Move to a new status only from one of `from`; answers whether it happened. */
  async transition(id: string, from: Status[], patch: Partial<ExperimentRecord> & { status: Status }): Promise<boolean> {
    const r = await this.redis.eval(TRANSITION, 1, this.key('exp', id), JSON.stringify(encode(patch)), ...from.map((s) => JSON.stringify(s)));
    if (r === 1) await this.publish({ type: 'status', id, status: patch.status, ...(patch.error ? { error: patch.error } : {}) });
    return r === 1;
  }

  /** Store a finished cell once. Answers false when it was already stored (a retried job). */
  async storeCell(id: string, cell: Cell): Promise<boolean> {
    const fresh = await this.redis.hsetnx(this.key('cells', id), cellKey(cell), JSON.stringify(cell));
    if (fresh === 1) {
      const m = this.redis.multi().hincrby(this.key('metrics'), 'cells', 1).hincrbyfloat(this.key('metrics'), 'cell_seconds_sum', cell.seconds);
      for (const b of CELL_BUCKETS) if (cell.seconds <= b) m.hincrby(this.key('metrics'), `cell_le_${b}`, 1);
      await m.exec();
      await this.publish({ type: 'cell', id, cell });
    }
    return fresh === 1;
  }

  async cells(id: string): Promise<Map<string, Cell>> {
    const h = await this.redis.hgetall(this.key('cells', id));
    return new Map(Object.entries(h).map(([k, v]) => [k, JSON.parse(v) as Cell]));
  }

  /** Add to a counter served at /metrics (guest boots, webhook attempts). */
  async count(field: string, by = 1): Promise<void> {
    await this.redis.hincrby(this.key('metrics'), field, by);
  }

  async putProfile(id: string, p: ProfileRecord): Promise<void> {
    await this.redis.hset(this.key('profiles', id), p.name, JSON.stringify(p));
  }

  async profiles(id: string): Promise<Map<string, ProfileRecord>> {
    const h = await this.redis.hgetall(this.key('profiles', id));
    return new Map(Object.entries(h).map(([k, v]) => [k, JSON.parse(v) as ProfileRecord]));
  }

  async putSystem(id: string, s: SystemInfo): Promise<void> {
    await this.redis.set(this.key('system', id), JSON.stringify(s));
  }

  async system(id: string): Promise<SystemInfo | null> {
    const s = await this.redis.get(this.key('system', id));
    return s ? (JSON.parse(s) as SystemInfo) : null;
  }

  channel(id: string): string {
    return this.key('events', id);
  }

  async publish(ev: ExperimentEvent): Promise<void> {
    await this.redis.publish(this.channel(ev.id), JSON.stringify(ev));
  }

  async remove(id: string): Promise<void> {
    await this.redis
      .multi()
      .del(this.key('exp', id), this.key('cells', id), this.key('profiles', id), this.key('system', id))
      .zrem(this.key('exps'), id)
      .exec();
  }
}

function encode(rec: Partial<ExperimentRecord>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(rec)) if (v !== undefined) out[k] = JSON.stringify(v);
  return out;
}

function decode(h: Record<string, string>): ExperimentRecord {
  const out: Record<string, unknown> = {};
  for (const f of FIELDS) if (h[f] !== undefined) out[f] = JSON.parse(h[f]);
  return out as unknown as ExperimentRecord;
}
