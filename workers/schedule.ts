// The schedule worker: each tick of a recurring schedule becomes one experiment on its pool's queue.
import { Worker, type Job } from 'bullmq';
import type { RedisClient } from '../src/store/connection.ts';
import type { Config } from '../src/config.ts';
import type { Logger } from '../src/observe/log.ts';
import { SCHEDULE_QUEUE, type Schedules } from '../src/queue/schedule.ts';

export async function startScheduleWorker(opts: { config: Config; connection: RedisClient; schedules: Schedules; logger: Logger }) {
  const worker = new Worker<{ scheduleId: string }>(
    SCHEDULE_QUEUE,
    async (job: Job<{ scheduleId: string }>) => {
      const id = await opts.schedules.spawn(job.data.scheduleId, job.id ?? `${job.data.scheduleId}-${job.timestamp}`);
      if (id) opts.logger.info({ schedule: job.data.scheduleId, experiment: id }, 'schedule submitted an experiment');
      return { experiment: id ?? null };
    },
    { connection: opts.connection, prefix: opts.config.prefix, concurrency: 1 },
  );
  worker.on('error', (err) => opts.logger.error({ err }, 'schedule worker error'));
  await worker.waitUntilReady();
  return { worker, close: () => worker.close() };
}
