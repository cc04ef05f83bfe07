// /v1/schedules: recurring experiments by cron expression and time zone (BullMQ job schedulers).
import { Router } from 'express';
import { normalizeSpec } from '../src/model/spec.ts';
import { RecurringScheduleSchema, Schedules, shortestGapMs } from '../src/queue/schedule.ts';
import { z } from '../src/model/zod.ts';
import { admissionProblems, poolProblems, type ApiDeps } from './experiments.ts';
import { HttpProblem, validationProblem } from './problem.ts';

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
    if (!req.is('application/json')) throw new HttpProblem(415, 'Unsupported media type', 'send the schedule as application/json');
    const parsed = RecurringScheduleSchema.safeParse(req.body);
    if (!parsed.success) throw validationProblem(parsed.error, 'schedule');
    const spec = normalizeSpec(parsed.data.spec);
    const problems = admissionProblems(spec, config).map((p) => ({ pointer: `/spec${p.pointer}`, detail: p.detail }));
    // A schedule firing every second would make an experiment a second, forever.
    const gap = shortestGapMs(parsed.data.cron, parsed.data.timeZone);
    if (gap < config.minScheduleIntervalS * 1000) {
      problems.unshift({ pointer: '/cron', detail: `runs ${gap / 1000} s apart; the shortest interval allowed here is ${config.minScheduleIntervalS} s (KVMQ_MIN_SCHEDULE_INTERVAL)` });
    }
    // A schedule runs for months: hosts may change, but one no live host can run now is refused as well.
    if (!problems.length) problems.push(...(await poolProblems(deps.store, spec)).map((p) => ({ pointer: `/spec${p.pointer}`, detail: p.detail })));
    if (problems.length) throw new HttpProblem(400, 'Schedule cannot run here', problems.map((p) => `${p.pointer}: ${p.detail}`).join('; '), problems);
    const s = await schedules.create(parsed.data, spec);
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
    const q = ScheduleDeleteQuery.safeParse(req.query);
    if (!q.success) throw validationProblem(q.error, 'query', '/query');
    const s = await load(String(req.params.id));
    await schedules.remove(s.id);
    if (q.data.purge === 'true') await schedules.purgeRuns(s.id);
    res.status(204).end();
  });

  return r;
}
