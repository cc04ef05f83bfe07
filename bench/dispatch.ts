// Dispatch: many tiny experiments through several worker processes (each its own host id, one Redis).
// The experiments are all queued first with the pool's queue paused, the workers started and ready, and
// the clock starts when the queue is resumed: the figure is the workers' rate, not the API's or Node's
// start-up. Every experiment must end completed; any other end is a lost experiment.
// The harness time of one experiment is what the worker spends on it besides the workload: from the job
// becoming active to the job completed (BullMQ's processedOn and finishedOn), minus the seconds of its one
// cell. It is measured first with one worker alone, where nothing else competes for the cores, then read
// again from the many-worker run, where four workers share two cores.
import path from 'node:path';
import { Queue } from 'bullmq';
import { connect, queueName } from '../src/queue/queue.ts';
import { Store, poolPrefix } from '../src/store/store.ts';
import type { RedisClient } from '../src/store/connection.ts';
import { figure, type Figure } from './report.ts';
import { median, percentile } from './measure.ts';
import { startKvmq, sleep, type Client, type KvmqProcess } from './procs.ts';
import { closedLoop } from './intake.ts';

export interface DispatchOptions {
  client: Client;
  redisUrl: string;
  prefix: string;
  env: NodeJS.ProcessEnv;
  dir: string;
  experiments: number;
  workers: number;
  /** Experiments through one worker alone, for the harness time per experiment. */
  harnessExperiments: number;
  timeoutMs: number;
  log: (m: string) => void;
}

interface Batch {
  ids: string[];
  completed: number;
  seconds: number;
  retried: number;
  otherwise: Record<string, number>;
  counts: Record<string, number>;
  /** Milliseconds of harness per completed experiment: job active to completed, minus its cell's seconds. */
  harnessMs: number[];
}

const ms3 = (x: number) => Number(x.toFixed(3));

/** Queue `n` tiny experiments (paused), start `workers` workers, resume, and read back every record and job. */
async function runBatch(opts: DispatchOptions, conn: RedisClient, pool: string, n: number, workers: number): Promise<Batch> {
  // Each pool's queue lives under the pool's own hash tag (poolPrefix), where its workers look for it.
  const queue = new Queue(queueName(pool), { connection: conn, prefix: poolPrefix(opts.prefix, pool) });
  const procs: KvmqProcess[] = [];
  try {
    await queue.waitUntilReady();
    await queue.pause();
    const spec = { name: 'bench-dispatch', pool, scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'command', argv: ['true'] }], repetitions: 1 };
    const ids: string[] = [];
    await closedLoop(n, 16, async () => {
      const body = await opts.client.json('POST', '/v1/experiments', spec, [202]);
      ids.push(body.id);
    });
    opts.log(`dispatch: ${ids.length} experiments queued (paused) in pool ${pool}; starting ${workers} worker(s)`);
    const started = await Promise.allSettled(
      Array.from({ length: workers }, (_, i) => {
        const hostId = `${pool}-w${i + 1}`;
        return startKvmq(['worker', '--pool', pool, '--host-id', hostId], {
          ...opts.env, KVMQ_STATE_DIR: path.join(opts.dir, hostId),
        }, new RegExp(`worker ${hostId} taking experiments`), 120_000);
      }),
    );
    for (const s of started) if (s.status === 'fulfilled') procs.push(s.value);
    const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;

    const t0 = Date.now();
    await queue.resume();
    const deadline = t0 + opts.timeoutMs;
    let counts: Record<string, number> = {};
    for (;;) {
      counts = await queue.getJobCounts('completed', 'failed', 'active', 'waiting', 'delayed', 'prioritized');
      if ((counts.completed ?? 0) + (counts.failed ?? 0) >= ids.length) break;
      if (Date.now() > deadline) break;
      await sleep(100);
    }
    // The records are the truth: each must be completed, once, with exactly its one cell.
    const store = new Store(conn, opts.prefix);
    const pipe = conn.pipeline();
    for (const id of ids) {
      pipe.hmget(store.poolKey(pool, 'exp', id), 'status', 'finishedAt', 'attempts').hvals(store.poolKey(pool, 'cells', id)).hmget(queue.toKey(id), 'processedOn', 'finishedOn');
    }
    const rows = (await pipe.exec())!;
    const b: Batch = { ids, completed: 0, seconds: 0, retried: 0, otherwise: {}, counts, harnessMs: [] };
    let lastFinish = t0;
    for (let i = 0; i < ids.length; i++) {
      const [status, finishedAt, attempts] = (rows[3 * i]![1] as (string | null)[]).map((v) => (v === null ? null : JSON.parse(v)));
      const cells = (rows[3 * i + 1]![1] as string[]).map((c) => JSON.parse(c) as { seconds: number });
      const [processedOn, finishedOn] = (rows[3 * i + 2]![1] as (string | null)[]).map(Number);
      if (status === 'completed' && cells.length === 1) {
        b.completed++;
        lastFinish = Math.max(lastFinish, Date.parse(finishedAt));
        if (processedOn && finishedOn) b.harnessMs.push(finishedOn - processedOn - cells[0]!.seconds * 1000);
      } else b.otherwise[`${status}/${cells.length} cells`] = (b.otherwise[`${status}/${cells.length} cells`] ?? 0) + 1;
      if (attempts > 1) b.retried++;
    }
    b.seconds = (lastFinish - t0) / 1000;
    opts.log(`dispatch: ${b.completed}/${ids.length} completed in ${b.seconds.toFixed(1)} s through ${workers} worker(s)`);
    return b;
  } finally {
    await Promise.all(procs.map((w) => w.stop()));
    await queue.obliterate({ force: true }).catch(() => {});
    await queue.close();
  }
}

const harnessDetails = (b: Batch) => ({
  medianMs: ms3(median(b.harnessMs)), p99Ms: ms3(percentile(b.harnessMs, 99)), maxMs: ms3(Math.max(...b.harnessMs)), samples: b.harnessMs.length,
});

export async function dispatchFigures(opts: DispatchOptions): Promise<Figure[]> {
  const conn = connect(opts.redisUrl);
  try {
    const alone = await runBatch(opts, conn, 'bench-harness', opts.harnessExperiments, 1);
    const many = await runBatch(opts, conn, 'bench-dispatch', opts.experiments, opts.workers);
    const lost = many.ids.length - many.completed + (alone.ids.length - alone.completed);
    return [
      figure({
        key: 'dispatchHarness',
        title: 'Dispatch: harness time of a tiny host-only experiment (median)',
        value: median(alone.harnessMs),
        unit: 'ms',
        target: { max: 15, text: '<= 15 ms' },
        details: {
          of: "job active to job completed, minus the cell's own seconds; one worker alone",
          ...harnessDetails(alone),
          fourWorkers: { of: `the same, read from the ${many.ids.length}-experiment run (${opts.workers} workers sharing the cores)`, ...harnessDetails(many) },
        },
      }),
      figure({
        key: 'dispatchHarnessP99',
        title: 'Dispatch: harness time of a tiny host-only experiment (p99)',
        value: percentile(alone.harnessMs, 99),
        unit: 'ms',
        target: null,
        details: { of: 'as the median, one worker alone' },
      }),
      figure({
        key: 'dispatch',
        title: `Dispatch rate (${many.ids.length} tiny experiments, ${opts.workers} workers)`,
        value: many.completed / many.seconds,
        unit: 'experiments/s',
        target: null,
        details: { experiments: many.ids.length, completed: many.completed, seconds: many.seconds, retried: many.retried, queueCounts: many.counts },
      }),
      figure({
        key: 'dispatchLost',
        title: 'Dispatch: experiments lost',
        value: lost,
        unit: 'experiments',
        target: { max: 0, text: '0' },
        details: { notCompleted: { ...alone.otherwise, ...many.otherwise } },
      }),
    ];
  } finally {
    await conn.quit().catch(() => conn.disconnect());
  }
}
