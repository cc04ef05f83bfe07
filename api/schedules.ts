// /v1/schedules: recurring experiments by cron expression and time zone (BullMQ job schedulers).
import { Router } from 'express';
import { normalizeSpec } from '../src/model/spec.ts';
import { RecurringScheduleSchema, Schedules, shortestGapMs } from '../src/queue/schedule.ts';
import { z } from '../src/model/zod.ts';
import { admissionProblems, poolProblems, type ApiDeps } from './experiments.ts';
import { HttpProblem, parseJsonBody, refuseIfAny, under, parseQuery } from './problem.ts';

export const ScheduleDeleteQuery = z.strictObject({
  purge: z.enum(['true', 'false']).optional().describe('also delete the finished experiments among its recent runs'),
});

export function schedulesRouter(deps: ApiDeps & { schedules: Schedules }): Router {
  const { config, schedules } = deps;
  const r = Router();

  const load = async (id: string) => {
    const s = await schedules.get(id);
    if (!s) throw new HttpProblem(404, 'Schedule not found', `no schedule with id "${id}"`);
    return s;
  };

  r.post('/', async (req, res) => {
    const input = parseJsonBody(req, RecurringScheduleSchema, 'schedule');
    const spec = normalizeSpec(input.spec);
    const problems = under('/spec', admissionProblems(spec, config));
    // A schedule firing every second would make an experiment a second, forever.
    const gap = shortestGapMs(input.cron, input.timeZone);
    if (gap < config.minScheduleIntervalS * 1000) {
      problems.unshift({ pointer: '/cron', detail: `runs ${gap / 1000} s apart; the shortest interval allowed here is ${config.minScheduleIntervalS} s (KVMQ_MIN_SCHEDULE_INTERVAL)` });
    }
    // A schedule runs for months: hosts may change, but one no live host can run now is refused as well.
    if (!problems.length) problems.push(...under('/spec', await poolProblems(deps.store, spec)));
    refuseIfAny('Schedule cannot run here', problems);
    const s = await schedules.create(input, spec);
    const v = await schedules.view(s);
    res.status(201).location(v.links.self).json(v);
  });

  r.get('/', async (_req, res) => {
    const items = await schedules.list();
    res.json({ items: await Promise.all(items.map((s) => schedules.view(s))), total: items.length });
  });

  r.get('/:id', async (req, res) => {
    res.json(await schedules.view(await load(String(req.params.id))));
  });

  r.delete('/:id', async (req, res) => {
    const q = parseQuery(req, ScheduleDeleteQuery);
    const s = await load(String(req.params.id));
    await schedules.remove(s.id);
    if (q.purge === 'true') await schedules.purgeRuns(s.id);
    res.status(204).end();
  });

  return r;
}
