// Dispatch: many tiny experiments through several worker processes (each its own host id, one Redis).
// The experiments are all queued first with the pool's queue paused, the workers started and ready, and
// the clock starts when the queue is resumed: the figure is the workers' rate, not the API's or Node's
// start-up. Every experiment must end completed; any other end is a lost experiment.
import path from 'node:path';
import { Queue } from 'bullmq';
import { connect, queueName } from '../src/queue/queue.ts';
import { Store } from '../src/store/store.ts';
import { figure, type Figure } from './report.ts';
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
  timeoutMs: number;
  log: (m: string) => void;
}

export async function dispatchFigures(opts: DispatchOptions): Promise<Figure[]> {
  const pool = 'bench-dispatch';
  const conn = connect(opts.redisUrl);
  const queue = new Queue(queueName(pool), { connection: conn, prefix: opts.prefix });
  const workers: KvmqProcess[] = [];
  try {
    await queue.waitUntilReady();
    await queue.pause();
    const spec = { name: 'bench-dispatch', pool, scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'command', argv: ['true'] }], repetitions: 1 };
    const ids: string[] = [];
    await closedLoop(opts.experiments, 16, async () => {
      const body = await opts.client.json('POST', '/v1/experiments', spec, [202]);
      ids.push(body.id);
    });
    opts.log(`dispatch: ${ids.length} experiments queued (paused); starting ${opts.workers} workers`);
    const started = await Promise.allSettled(
      Array.from({ length: opts.workers }, (_, i) => {
        const hostId = `bench-w${i + 1}`;
        return startKvmq(['worker', '--pool', pool, '--host-id', hostId], {
          ...opts.env, KVMQ_STATE_DIR: path.join(opts.dir, hostId),
        }, new RegExp(`worker ${hostId} taking experiments`), 120_000);
      }),
    );
    for (const s of started) if (s.status === 'fulfilled') workers.push(s.value);
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
      await sleep(250);
    }
    // The records are the truth: each must be completed, once, with exactly its one cell.
    const store = new Store(conn, opts.prefix);
    const pipe = conn.pipeline();
    for (const id of ids) pipe.hmget(store.key('exp', id), 'status', 'finishedAt', 'attempts').hlen(store.key('cells', id));
    const rows = (await pipe.exec())!;
    let completed = 0;
    let lastFinish = t0;
    let retried = 0;
    const otherwise: Record<string, number> = {};
    for (let i = 0; i < ids.length; i++) {
      const [status, finishedAt, attempts] = (rows[2 * i]![1] as (string | null)[]).map((v) => (v === null ? null : JSON.parse(v)));
      const cells = rows[2 * i + 1]![1] as number;
      if (status === 'completed' && cells === 1) {
        completed++;
        lastFinish = Math.max(lastFinish, Date.parse(finishedAt));
      } else otherwise[`${status}/${cells} cells`] = (otherwise[`${status}/${cells} cells`] ?? 0) + 1;
      if (attempts > 1) retried++;
    }
    const seconds = (lastFinish - t0) / 1000;
    const lost = ids.length - completed;
    opts.log(`dispatch: ${completed}/${ids.length} completed in ${seconds.toFixed(1)} s`);
    return [
      figure({
        key: 'dispatch',
        title: `Dispatch rate (${ids.length} tiny experiments, ${opts.workers} workers)`,
        value: completed / seconds,
        unit: 'experiments/s',
        target: null,
        details: { experiments: ids.length, completed, seconds, retried, queueCounts: counts },
      }),
      figure({
        key: 'dispatchLost',
        title: 'Dispatch: experiments lost',
        value: lost,
        unit: 'experiments',
        target: { max: 0, text: '0' },
        details: { notCompleted: otherwise },
      }),
    ];
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
    await queue.obliterate({ force: true }).catch(() => {});
    await queue.close();
    await conn.quit().catch(() => conn.disconnect());
  }
}
