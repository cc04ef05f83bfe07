// Recurring experiments ("the paper matrix every night at 23:00 Berlin time"), kept as BullMQ job
// schedulers: the scheduler puts a small job on the `schedules` queue at each cron tick, and the
// schedule worker turns that tick into an ordinary experiment (record + job on its pool's queue).
// The spec is stored with the schedule, validated once when the schedule is made.
import { Queue, getNextMillis } from 'bullmq';
import type { RedisClient } from '../store/connection.ts';
import { z } from '../model/zod.ts';
import { SpecInputSchema, redactWebhook, type Spec } from '../model/spec.ts';
import { Store, FINAL } from '../store/store.ts';
import type { Queues } from './queue.ts';
import type { Config } from '../config.ts';
import { TimeZoneSchema, isTimeZone } from '../model/window.ts';
import { newRecord } from './submit.ts';
import { seriesNameOf } from '../model/series.ts';

export const SCHEDULE_QUEUE = 'schedules';

export function cronProblem(pattern: string, timeZone: string): string | undefined {
  try {
    getNextMillis(Date.now(), { pattern, tz: isTimeZone(timeZone) ? timeZone : 'UTC' });
    return undefined;
  } catch (err) {
    return `not a cron expression (${(err as Error).message}); e.g. "0 23 * * *" is every day at 23:00`;
  }
}

/**
 * The shortest gap between the next runs of a cron expression, in ms. Twenty runs cover every gap a
 * list or step in the minute or second field makes within an hour, which is where short gaps come from.
 */
export function shortestGapMs(pattern: string, timeZone: string, from = Date.now()): number {
  const opts = { pattern, tz: isTimeZone(timeZone) ? timeZone : 'UTC' };
  let prev = getNextMillis(from, opts);
  let gap = Infinity;
  for (let i = 0; i < 20 && prev !== undefined; i++) {
    const next = getNextMillis(prev, opts);
    if (next === undefined) break;
    gap = Math.min(gap, next - prev);
    prev = next;
  }
  return gap;
}

export const RecurringScheduleSchema = z
  .strictObject({
    name: z.string().min(1).max(100).optional(),
    cron: z.string().min(1).max(200).describe('cron expression, 5 fields (or 6 with seconds first), e.g. "0 23 * * *"'),
    timeZone: TimeZoneSchema.default('UTC').describe('IANA time zone the cron expression is read in'),
    startDate: z.iso.datetime({ offset: true }).optional().describe('no run before this instant'),
    endDate: z.iso.datetime({ offset: true }).optional().describe('no run after this instant'),
    limit: z.number().int().min(1).max(1_000_000).optional().describe('stop after this many runs'),
    spec: SpecInputSchema.describe('the experiment each run submits, as for POST /v1/experiments'),
  })
  .superRefine((s, ctx) => {
    const p = cronProblem(s.cron, s.timeZone);
    if (p) ctx.addIssue({ code: 'custom', path: ['cron'], message: p });
    if (s.startDate && s.endDate && Date.parse(s.endDate) <= Date.parse(s.startDate)) {
      ctx.addIssue({ code: 'custom', path: ['endDate'], message: 'endDate must be after startDate' });
    }
  })
  .openapi('RecurringSchedule');
export type RecurringInput = z.output<typeof RecurringScheduleSchema>;

export interface ScheduleRecord {
  id: string;
  name: string;
  cron: string;
  timeZone: string;
  startDate?: string;
  endDate?: string;
  limit?: number;
  spec: Spec;
  createdAt: string;
}

const RECENT = 50;

export class Schedules {
  readonly queue: Queue;
  constructor(connection: RedisClient, private store: Store, private queues: Queues, config: Config) {
    this.queue = new Queue(SCHEDULE_QUEUE, { connection, prefix: config.prefix });
    this.queue.on('error', () => {}); // the shared connection's errors, logged where it was opened
  }

  private key(id: string) {
    return this.store.key('schedule', id);
  }

  async create(input: RecurringInput, spec: Spec, now = Date.now()): Promise<ScheduleRecord> {
    const name = input.name ?? spec.name;
    const rec: ScheduleRecord = {
      id: Store.newId(),
      name,
      cron: input.cron,
      timeZone: input.timeZone,
      ...(input.startDate ? { startDate: input.startDate } : {}),
      ...(input.endDate ? { endDate: input.endDate } : {}),
      ...(input.limit ? { limit: input.limit } : {}),
      // A schedule's runs form one series, named after the schedule unless its spec names one.
      spec: { ...spec, series: spec.series ?? seriesNameOf(name) },
      createdAt: new Date(now).toISOString(),
    };
    // The record first: a tick that fires at once must find the spec.
    await this.store.redis.multi().set(this.key(rec.id), JSON.stringify(rec)).zadd(this.store.key('schedules'), now, rec.id).exec();
    try {
      await this.queue.upsertJobScheduler(
        rec.id,
        {
          pattern: rec.cron, tz: rec.timeZone,
          ...(rec.startDate ? { startDate: rec.startDate } : {}),
          ...(rec.endDate ? { endDate: rec.endDate } : {}),
          ...(rec.limit ? { limit: rec.limit } : {}),
        },
        { name: 'tick', data: { scheduleId: rec.id }, opts: { removeOnComplete: { count: 100 }, removeOnFail: { count: 100 } } },
      );
    } catch (err) {
      await this.store.redis.multi().del(this.key(rec.id)).zrem(this.store.key('schedules'), rec.id).exec();
      throw err;
    }
    return rec;
  }

  async get(id: string): Promise<ScheduleRecord | null> {
    if (!/^[a-z0-9]{1,64}$/.test(id)) return null;
    const s = await this.store.redis.get(this.key(id));
    return s ? (JSON.parse(s) as ScheduleRecord) : null;
  }

  async list(): Promise<ScheduleRecord[]> {
    const ids = await this.store.redis.zrevrange(this.store.key('schedules'), 0, -1);
    return (await Promise.all(ids.map((i) => this.get(i)))).filter((s): s is ScheduleRecord => !!s);
  }

  async remove(id: string): Promise<boolean> {
    const had = await this.get(id);
    await this.queue.removeJobScheduler(id);
    await this.store.redis.multi().del(this.key(id)).zrem(this.store.key('schedules'), id).exec();
    return !!had;
  }

  /**
   * Delete the finished experiments among a schedule's recent runs (the ones it still lists); answers
   * how many were deleted and how many were left because they have not finished.
   */
  async purgeRuns(id: string): Promise<{ deleted: number; unfinished: number }> {
    const key = this.store.key('schedruns', id);
    const ids = await this.store.redis.lrange(key, 0, -1);
    let deleted = 0;
    let unfinished = 0;
    for (const i of ids) {
      const rec = await this.store.get(i);
      if (rec && !FINAL.includes(rec.status)) {
        unfinished++;
        continue;
      }
      if (rec) {
        await this.store.purge(i);
        deleted++;
      }
      await this.store.redis.lrem(key, 0, i);
    }
    return { deleted, unfinished };
  }

  /**
   * One tick: submit the schedule's experiment. The tick's job id is unique per run; the record and a
   * marker keyed by the tick are written in one step, so a tick delivered twice (at-least-once queues)
   * submits one experiment, and a tick retried after a crash finishes the submission it began.
   */
  async spawn(scheduleId: string, tickId: string, now = Date.now()): Promise<string | undefined> {
    const sched = await this.get(scheduleId);
    if (!sched) return undefined; // deleted between the tick and now
    // A schedule made before series existed still forms one.
    const fresh = newRecord({ ...sched.spec, series: sched.spec.series ?? seriesNameOf(sched.name) }, now);
    const id = await this.store.createOnce(fresh, ['schedtick', tickId], 30 * 86_400);
    let rec = id === fresh.id ? fresh : await this.store.get(id);
    if (!rec) {
      // A marker without its record: left by a version that wrote the marker first and then crashed.
      rec = { ...fresh, id };
      await this.store.create(rec);
    }
    // Queued again only while open: the job id is the experiment's, so a second add is the same job.
    if (!FINAL.includes(rec.status)) await this.queues.add(rec, now);
    const runs = this.store.key('schedruns', scheduleId);
    await this.store.redis.multi().lrem(runs, 0, id).lpush(runs, id).ltrim(runs, 0, RECENT - 1).exec();
    return id;
  }

  /** The schedule as a GET shows it: next run, recent experiments, and never the webhook secret. */
  async view(s: ScheduleRecord) {
    const job = await this.queue.getJobScheduler(s.id);
    const recent = await this.store.redis.lrange(this.store.key('schedruns', s.id), 0, 9);
    const recs = await Promise.all(recent.map((i) => this.store.get(i)));
    return {
      id: s.id, name: s.name, cron: s.cron, timeZone: s.timeZone,
      ...(s.startDate ? { startDate: s.startDate } : {}),
      ...(s.endDate ? { endDate: s.endDate } : {}),
      ...(s.limit ? { limit: s.limit } : {}),
      createdAt: s.createdAt,
      next: job?.next ? new Date(job.next).toISOString() : null,
      runs: job?.iterationCount ?? 0,
      recent: recs.filter((r) => !!r).map((r) => ({ id: r!.id, status: r!.status, createdAt: r!.createdAt, links: { self: `/v1/experiments/${r!.id}` } })),
      spec: redactWebhook(s.spec),
      links: { self: `/v1/schedules/${s.id}` },
    };
  }

  async close(): Promise<void> {
    await this.queue.close();
  }
}
