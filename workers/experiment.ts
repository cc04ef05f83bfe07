// The experiment worker: one per KVM host. Before it takes work it restores a sysctl journal and reaps
// guests left by a crashed run. It runs one experiment at a time on its host (a Redis lock holds even
// when several worker processes share a host), and turns the runner's outcome into the record's status.
import { Queue, Worker, DelayedError, UnrecoverableError, type Job } from 'bullmq';
import { Cluster } from 'ioredis';
import type { RedisClient } from '../src/store/connection.ts';
import { Store, FINAL, poolPrefix } from '../src/store/store.ts';
import { queueName, Queues } from '../src/queue/queue.ts';
import { repairPool, settleGivenUp } from '../src/queue/repair.ts';
import { runExperiment, ShutdownError } from '../src/run/runner.ts';
import { PermanentError, capText } from '../src/errors.ts';
import type { GuestDriver } from '../src/guests/guest.ts';
import * as sysctl from '../src/host/sysctl.ts';
import type { Config } from '../src/config.ts';
import { announce, withdraw, HEARTBEAT_MS } from '../src/store/registry.ts';
import { workerCapabilities } from '../src/run/preflight.ts';
import { earliestStart } from '../src/model/window.ts';
import type { ProcessMetrics } from '../src/observe/metrics.ts';
import type { Logger } from '../src/observe/log.ts';
import { CancelledError, cancelRequested, listenForCancels } from '../src/queue/cancel.ts';
import { takeHost } from '../src/queue/hostlock.ts';

export interface ExperimentWorkerOptions {
  config: Config;
  /** A dedicated connection: BullMQ blocks on it. */
  connection: RedisClient;
  store: Store;
  drivers: Partial<Record<'host' | 'qemu' | 'docker', GuestDriver>>;
  /** Bound to host and pool here, and to the experiment for each job. */
  logger: Logger;
  /** This process's metrics: experiments finished by outcome, the one running. */
  metrics?: ProcessMetrics;
  onFinished?: (id: string) => Promise<void> | void;
  /** Queue the notifications a crashed process owed (the store's outbox); run at start. */
  sendOwed?: () => Promise<unknown>;
}

export async function recoverHost(opts: Pick<ExperimentWorkerOptions, 'config' | 'drivers' | 'logger'>): Promise<void> {
  const log = (m: string) => opts.logger.info(m);
  const { restored: j, liveOwner } = await sysctl.recoverJournal(opts.config.stateDir);
  if (j) log(`restored sysctl values left by experiment ${j.experimentId} (pid ${j.pid}, profile ${j.profile}): ${JSON.stringify(j.original)}`);
  if (liveOwner) log(`a sysctl journal in ${opts.config.stateDir} belongs to running pid ${liveOwner}; left to it`);
  for (const d of Object.values(opts.drivers)) {
    const reaped = await d.reapLeftovers();
    if (reaped.length) log(`${d.name}: reaped leftovers of a crashed run: ${reaped.join(', ')}`);
  }
}

/** BullMQ may evict job keys under any policy but noeviction, and an evicted job is a lost experiment. */
export async function checkEvictionPolicy(redis: RedisClient): Promise<void> {
  // On a Cluster every master holds some pool's keys: each must be noeviction.
  const nodes = redis instanceof Cluster ? redis.nodes('master') : [redis];
  for (const n of nodes) {
    const [, policy] = (await n.config('GET', 'maxmemory-policy')) as [string, string];
    if (policy !== 'noeviction') {
      const where = redis instanceof Cluster ? ` on ${n.options.host}:${n.options.port}` : '';
      throw new Error(`Redis maxmemory-policy is ${policy}${where}; kvmq needs noeviction (CONFIG SET maxmemory-policy noeviction)`);
    }
  }
}

/**
 * Jobs of a pool other than `default` queued before pools had their own hash tag sit in the queue under
 * the base prefix: move the waiting and delayed ones to the pool's queue (same job id and options).
 */
export async function migrateLegacyQueue(connection: RedisClient, prefix: string, pool: string, log: (m: string) => void): Promise<number> {
  if (poolPrefix(prefix, pool) === prefix) return 0;
  const legacy = new Queue(queueName(pool), { connection, prefix });
  const target = new Queue(queueName(pool), { connection, prefix: poolPrefix(prefix, pool) });
  try {
    const jobs = await legacy.getJobs(['wait', 'delayed', 'prioritized']);
    for (const job of jobs) {
      if (!job?.id) continue;
      const delay = Math.max(0, job.timestamp + (job.opts.delay ?? 0) - Date.now());
      await target.add(job.name, job.data, { ...job.opts, jobId: job.id, delay });
      await job.remove();
    }
    if (jobs.length) log(`moved ${jobs.length} queued job(s) of pool ${pool} to its own hash tag ${poolPrefix(prefix, pool)}`);
    return jobs.length;
  } finally {
    await Promise.all([legacy.close(), target.close()]);
  }
}

/**
 * What a crash of any kvmq process may have left half done, for this worker's pool: records without a
 * job get it again, records whose job the queue gave up on are settled as failed, and notifications
 * still owed for final records are queued.
 */
export async function repairRecords(opts: Pick<ExperimentWorkerOptions, 'config' | 'store' | 'logger' | 'onFinished' | 'sendOwed'>): Promise<void> {
  const { config, store } = opts;
  const logger = opts.logger.child({ host: config.hostId, pool: config.pool });
  const log = (m: string) => logger.info(capText(m));
  const queues = new Queues(store.redis, config.prefix);
  try {
    const r = await repairPool(store, queues, config.pool);
    if (r.requeued.length) log(`queued again (their job was lost): ${r.requeued.join(', ')}`);
    for (const f of r.failed) {
      log(`experiment ${f.id} failed: ${f.reason}`);
      await opts.onFinished?.(f.id);
    }
  } finally {
    await queues.close();
  }
  await opts.sendOwed?.();
}

export async function startExperimentWorker(opts: ExperimentWorkerOptions): Promise<{ worker: Worker; close: () => Promise<void>; abort: () => void }> {
  const { config, store } = opts;
  const logger = opts.logger.child({ host: config.hostId, pool: config.pool });
  // Every line is capped: an error may quote unbounded input or tool output.
  const log = (m: string) => logger.info(capText(m));
  const outcome = (o: string) => opts.metrics?.experiments.inc({ outcome: o });
  await checkEvictionPolicy(store.redis);
  // A store that cannot take writes (a replica, NOREPLICAS, a full Redis) must not take work.
  await store.probe([config.pool]);
  await migrateLegacyQueue(opts.connection, config.prefix, config.pool, log);
  await recoverHost(opts);
  await repairRecords(opts);

  // Cancel requests arrive over pub/sub: only the process holding a job can abort it.
  const running = new Map<string, AbortController>();
  let draining = false;
  // The registry entry says which experiment this host runs: refreshed on a timer and at each change.
  // Its capabilities (free scratch space, available memory) let the API refuse what no host can run.
  const beat = () =>
    workerCapabilities(opts.drivers)
      .then((caps) => announce(store, {
        id: config.hostId, pool: config.pool, capabilities: caps, heartbeatAt: new Date().toISOString(),
        current: [...running.keys()][0] ?? null, pid: process.pid,
      }))
      .catch((err) => log(`heartbeat: ${(err as Error).message}`));
  const sub = await listenForCancels(store, (id) => running.get(id)?.abort(new CancelledError()), log);

  const processor = async (job: Job<{ id: string }>, token?: string, signal?: AbortSignal) => {
    const id = job.data.id;
    const elog = logger.child({ experiment: id });
    const log = (m: string) => elog.info(capText(m));
    const rec = await store.get(id);
    if (!rec) return;
    if (FINAL.includes(rec.status)) {
      // A retry after a crash between the final status and its webhook: send what is still owed.
      if (await store.isOwed(id)) await opts.onFinished?.(id);
      return;
    }
    if (!config.allowCommands && rec.spec.workloads.some((w) => w.kind === 'command')) {
      // The API checked the flag at submission; a schedule or a queue filled before the operator turned
      // it off must not run commands after that.
      const reason = 'custom command workloads are turned off on this worker (KVMQ_ALLOW_COMMANDS is not 1)';
      if (await store.transition(id, ['queued', 'scheduled', 'running'], { status: 'failed', finishedAt: new Date().toISOString(), error: { reason } })) {
        log(`experiment ${id} refused: ${reason}`);
        await opts.onFinished?.(id);
      }
      throw new UnrecoverableError(reason);
    }

    // Outside its nightly window (or early): wait, as scheduled, for the next opening.
    const opensAt = rec.status === 'running' ? 0 : earliestStart(rec.spec.schedule, Date.now());
    if (opensAt > Date.now() + 1000) {
      await store.transition(id, ['queued'], { status: 'scheduled' });
      await job.moveToDelayed(opensAt, token);
      throw new DelayedError();
    }

    // One experiment per host, even with several worker processes on it.
    const hostLock = await takeHost(store, config.hostId, id, config.lockMs);
    if (!hostLock) {
      await job.moveToDelayed(Date.now() + 2000, token);
      throw new DelayedError();
    }

    const ac = new AbortController();
    running.set(id, ac);
    opts.metrics?.running.set(running.size);
    // A cancel published before this job was in `running` would be lost on pub/sub alone.
    if (await cancelRequested(store, id)) ac.abort(new CancelledError());
    void beat();
    signal?.addEventListener('abort', () => ac.abort(signal.reason), { once: true });
    try {
      const started = await store.transition(id, ['queued', 'scheduled', 'running'], {
        status: 'running',
        host: config.hostId,
        attempts: job.attemptsMade + 1,
        ...(rec.startedAt ? {} : { startedAt: new Date().toISOString() }),
      });
      if (!started) return; // cancelled between the queue and here
      log(`experiment ${id} (${rec.name}) started on ${config.hostId}, attempt ${job.attemptsMade + 1}`);
      const run = () =>
        runExperiment(
          {
            store, drivers: opts.drivers, stateDir: config.stateDir, log, logger: elog,
            onProgress: (p) => job.updateProgress(p), draining: () => draining,
          },
          id,
          ac.signal,
        );
      store.takeUnreplicated(id);
      await run();
      // A cell that no replica acknowledged is gone if a failover came meanwhile: read the cells again
      // (from whichever master holds them now) and run what is missing; stored cells are skipped.
      if (store.takeUnreplicated(id)) {
        log(`experiment ${id}: some results reached no replica in time; running any cell a failover lost`);
        await run();
      }
      await store.transition(id, ['running'], { status: 'completed', finishedAt: new Date().toISOString() });
      log(`experiment ${id} completed`);
      outcome('completed');
      await opts.onFinished?.(id);
    } catch (err) {
      if (err instanceof DelayedError) throw err;
      if (err instanceof ShutdownError || (ac.signal.aborted && ac.signal.reason instanceof ShutdownError)) {
        // Back to the queue without spending an attempt: stored cells stay, the next worker continues.
        await store.transition(id, ['running'], { status: 'queued' });
        await job.moveToDelayed(Date.now() + 1000, token);
        log(`experiment ${id} handed back to the queue (worker shutting down)`);
        outcome('handed_back');
        throw new DelayedError();
      }
      const reason = err instanceof Error ? err.message : String(err);
      if (ac.signal.aborted && ac.signal.reason instanceof CancelledError) {
        await store.transition(id, ['running', 'queued', 'scheduled'], { status: 'cancelled', finishedAt: new Date().toISOString(), error: { reason: 'cancelled by request' } });
        log(`experiment ${id} cancelled`);
        outcome('cancelled');
        await opts.onFinished?.(id);
        return;
      }
      const last = err instanceof PermanentError || job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      if (last) {
        await store.transition(id, ['running'], { status: 'failed', finishedAt: new Date().toISOString(), error: { reason } });
        log(`experiment ${id} failed: ${reason}`);
        outcome('failed');
        await opts.onFinished?.(id);
        throw new UnrecoverableError(reason);
      }
      await store.transition(id, ['running'], { status: 'queued', error: { reason: `attempt ${job.attemptsMade + 1} failed, will retry: ${reason}` } });
      log(`experiment ${id} attempt ${job.attemptsMade + 1} failed, will retry: ${reason}`);
      outcome('retried');
      throw err;
    } finally {
      running.delete(id);
      opts.metrics?.running.set(running.size);
      void beat();
      await hostLock.release();
    }
  };

  const worker = new Worker(queueName(config.pool), processor, {
    connection: opts.connection,
    prefix: poolPrefix(config.prefix, config.pool),
    concurrency: 1,
    lockDuration: config.lockMs,
    stalledInterval: Math.max(1000, Math.round(config.lockMs / 2)),
    maxStalledCount: 2,
  });
  worker.on('error', (err) => log(`worker error: ${err.message}`));
  // A job that stalled too often is failed by BullMQ without calling the processor: settle its record.
  worker.on('failed', (job) => {
    if (!job?.id) return;
    void settleGivenUp(store, job, job.id)
      .then(async (reason) => {
        if (!reason) return;
        logger.child({ experiment: job.id }).warn(capText(`experiment ${job.id} failed: ${reason}`));
        await opts.onFinished?.(job.id!);
      })
      .catch((err) => log(`settling experiment ${job.id}: ${(err as Error).message}`));
  });
  await worker.waitUntilReady();

  await beat();
  const heartbeat = setInterval(beat, HEARTBEAT_MS);
  log(`worker ${config.hostId} taking experiments from pool ${config.pool}`);

  return {
    worker,
    /** Abort the cells in flight now (a stop past its deadline); the runner's cleanup still runs. */
    abort: () => {
      for (const ac of running.values()) ac.abort(new ShutdownError());
    },
    close: async () => {
      clearInterval(heartbeat);
      // KVMQ_SHUTDOWN=finish lets the cell in flight complete; the default aborts it (guests are
      // reaped and the host restored by the runner's cleanup either way).
      draining = true;
      if (config.shutdown === 'abort') for (const ac of running.values()) ac.abort(new ShutdownError());
      await worker.close();
      // The runner restores after each profile; this catches a restore that failed or never ran.
      const left = await sysctl.restoreHost(config.stateDir).catch((err) => log(`sysctl restore at shutdown failed: ${(err as Error).message}`));
      if (left) log(`restored sysctl values at shutdown: ${JSON.stringify(left.original)}`);
      await sub.quit().catch(() => {});
      await withdraw(store, config.hostId, process.pid).catch(() => {});
    },
  };
}
