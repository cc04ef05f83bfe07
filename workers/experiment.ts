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
import type { ExperimentRecord } from '../src/store/store.ts';
import type { ProcessMetrics } from '../src/observe/metrics.ts';
import type { Logger } from '../src/observe/log.ts';
import { CancelledError, cancelFlagKey, listenForCancels } from '../src/queue/cancel.ts';
import { takeHostAndCheck, type HostLock } from '../src/queue/hostlock.ts';
import type { Cell } from '../src/model/cell.ts';

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
  /** `known`: the final record and the batch link when the worker has just read them, saving the reads. */
  onFinished?: (id: string, known?: { record?: ExperimentRecord; batch?: string }) => Promise<void> | void;
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
  await prepareToTakeWork(opts, log);

  // Cancel requests arrive over pub/sub: only the process holding a job can abort it.
  const running = new Map<string, AbortController>();
  let draining = false;
  // The registry entry says which experiment this host runs: refreshed on a timer and at each change.
  // Its capabilities (free scratch space, available memory) let the API refuse what no host can run.
  // The capabilities are measured on the heartbeat's timer; the beats at each experiment's start and end
  // only say what runs now, so a tiny experiment does not pay for reading /proc and statfs twice.
  let caps: Awaited<ReturnType<typeof workerCapabilities>> | undefined;
  const beat = (measure = false) =>
    (measure || !caps ? workerCapabilities(opts.drivers).then((c) => (caps = c)) : Promise.resolve(caps))
      .then((c) => announce(store, {
        id: config.hostId, pool: config.pool, capabilities: c, heartbeatAt: new Date().toISOString(),
        current: [...running.keys()][0] ?? null, pid: process.pid,
      }))
      .catch((err) => log(`heartbeat: ${(err as Error).message}`));
  const sub = await listenForCancels(store, (id) => running.get(id)?.abort(new CancelledError()), log);

  const shift: Shift = { opts, logger, running, draining: () => draining, beat };
  const worker = openQueueWorker(shift, log);
  await worker.waitUntilReady();

  await beat(true);
  const heartbeat = setInterval(() => beat(true), HEARTBEAT_MS);
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

/**
 * Before the first job: a store that never evicts and takes writes (not a replica, NOREPLICAS or a full
 * Redis), jobs of the pool's old queue moved, the host restored and reaped, half-done records repaired.
 */
async function prepareToTakeWork(opts: ExperimentWorkerOptions, log: (m: string) => void): Promise<void> {
  const { config, store } = opts;
  await checkEvictionPolicy(store.redis);
  await store.probe([config.pool]);
  await migrateLegacyQueue(opts.connection, config.prefix, config.pool, log);
  await recoverHost(opts);
  await repairRecords(opts);
}

/** The BullMQ worker of this host's pool, one job at a time, whose stalled-out jobs settle their records. */
function openQueueWorker(shift: Shift, log: (m: string) => void): Worker<{ id: string }> {
  const { opts, logger } = shift;
  const { config, store } = opts;
  const take = (job: ExperimentJob, token?: string, signal?: AbortSignal) => takeExperiment(shift, job, token, signal);
  const worker = new Worker<{ id: string }>(queueName(config.pool), take, {
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
  return worker;
}

type ExperimentJob = Job<{ id: string }>;

/** What every job's steps share for the life of one worker. */
interface Shift {
  opts: ExperimentWorkerOptions;
  logger: Logger;
  /** The experiment this worker runs, with the controller a cancel or a shutdown aborts. */
  running: Map<string, AbortController>;
  draining: () => boolean;
  beat: (measure?: boolean) => Promise<void>;
}

/** One attempt at one experiment. */
interface Attempt {
  job: ExperimentJob;
  token?: string;
  id: string;
  rec: ExperimentRecord;
  elog: Logger;
  log: (m: string) => void;
}

/**
 * The job, in the order the procedure runs: check the record, wait for the window, hold the host, mark
 * it running, run every cell, and settle the record's final status however the run ended. The record,
 * the host lock and the cancel flag are read in one round trip (the lock is let go again when the
 * record says not to run), and marking it running reads back the cells already stored.
 */
async function takeExperiment(shift: Shift, job: ExperimentJob, token?: string, signal?: AbortSignal): Promise<void> {
  const id = job.data.id;
  // Tracked before the cancel flag is read, so a cancel published after that read reaches this run.
  const ac = new AbortController();
  shift.running.set(id, ac);
  let hostLock: HostLock | undefined;
  let a: Attempt | undefined;
  let cancelled = false;
  let proceed = false;
  try {
    const [opened, held] = await Promise.allSettled([openAttempt(shift, job, token), holdHost(shift, id)]);
    if (held.status === 'fulfilled') ({ lock: hostLock, cancelled } = held.value);
    if (opened.status === 'rejected') throw opened.reason;
    if (held.status === 'rejected') throw held.reason;
    a = opened.value;
    if (!a) return;
    await refuseTurnedOffCommands(shift, a);
    await waitForWindow(shift, a);
    if (!hostLock) await comeBackLater(a);
    proceed = true;
  } finally {
    // Not running after all (gone, final, refused, outside its window, the host taken, an error).
    if (!proceed) {
      shift.running.delete(id);
      await hostLock?.release();
    }
  }
  if (!a || !hostLock) return;
  if (cancelled) ac.abort(new CancelledError());
  beginRunning(shift, ac, signal);
  try {
    const stored = await markRunning(shift, a);
    if (!stored) return; // cancelled between the queue and here
    await runEveryCell(shift, a, ac.signal, stored);
    await markCompleted(shift, a, hostLock);
  } catch (err) {
    await settleFailure(shift, a, ac.signal, err);
  } finally {
    await endRunning(shift, a, hostLock);
  }
}

/** The record this job runs, or nothing to do: it is gone, or final (then send what is still owed). */
async function openAttempt(shift: Shift, job: ExperimentJob, token?: string): Promise<Attempt | undefined> {
  const { store, config } = shift.opts;
  const id = job.data.id;
  const elog = shift.logger.child({ experiment: id });
  // The job came from this pool's queue: its record is looked for under the pool's tag first.
  const rec = await store.get(id, config.pool);
  if (!rec) return undefined;
  if (FINAL.includes(rec.status)) {
    // A retry after a crash between the final status and its webhook: send what is still owed.
    if (await store.isOwed(id)) await shift.opts.onFinished?.(id);
    return undefined;
  }
  return { job, token, id, rec, elog, log: (m) => elog.info(capText(m)) };
}

/**
 * The API checked the flag at submission; a schedule or a queue filled before the operator turned it
 * off must not run commands after that.
 */
async function refuseTurnedOffCommands(shift: Shift, a: Attempt): Promise<void> {
  if (shift.opts.config.allowCommands || !a.rec.spec.workloads.some((w) => w.kind === 'command')) return;
  const reason = 'custom command workloads are turned off on this worker (KVMQ_ALLOW_COMMANDS is not 1)';
  if (await shift.opts.store.transition(a.id, ['queued', 'scheduled', 'running'], { status: 'failed', finishedAt: now(), error: { reason } })) {
    a.log(`experiment ${a.id} refused: ${reason}`);
    await shift.opts.onFinished?.(a.id);
  }
  throw new UnrecoverableError(reason);
}

/** Outside its nightly window (or early): wait, as scheduled, for the next opening. */
async function waitForWindow(shift: Shift, a: Attempt): Promise<void> {
  const opensAt = a.rec.status === 'running' ? 0 : earliestStart(a.rec.spec.schedule, Date.now());
  if (opensAt <= Date.now() + 1000) return;
  await shift.opts.store.transition(a.id, ['queued'], { status: 'scheduled' });
  await a.job.moveToDelayed(opensAt, a.token);
  throw new DelayedError();
}

/**
 * One experiment per host, even with several worker processes on it. A cancel requested before this
 * worker took the job (and so before it listened for one) left a flag, read in the same round trip:
 * pub/sub alone would lose it.
 */
async function holdHost(shift: Shift, id: string): Promise<{ lock?: HostLock; cancelled: boolean }> {
  const { config, store } = shift.opts;
  const held = await takeHostAndCheck(store, config.hostId, id, config.lockMs, cancelFlagKey(store, id));
  return { lock: held.lock, cancelled: held.flagged };
}

/** The host is taken by another experiment: come back later. */
async function comeBackLater(a: Attempt): Promise<never> {
  await a.job.moveToDelayed(Date.now() + 2000, a.token);
  throw new DelayedError();
}

/** Track the run so a cancel, a shutdown or BullMQ's own abort can stop it. */
function beginRunning(shift: Shift, ac: AbortController, signal?: AbortSignal): void {
  shift.opts.metrics?.running.set(shift.running.size);
  void shift.beat();
  signal?.addEventListener('abort', () => ac.abort(signal.reason), { once: true });
}

async function endRunning(shift: Shift, a: Attempt, hostLock: HostLock): Promise<void> {
  shift.running.delete(a.id);
  shift.opts.metrics?.running.set(shift.running.size);
  void shift.beat();
  await hostLock.release();
}

/**
 * Undefined when the record left the states that may start (a cancel won the race); else the cells
 * stored by earlier attempts, read in the same step.
 */
async function markRunning(shift: Shift, a: Attempt): Promise<Map<string, Cell> | undefined> {
  const { config, store } = shift.opts;
  const attempt = a.job.attemptsMade + 1;
  const started = await store.transitionRead(a.id, ['queued', 'scheduled', 'running'], {
    status: 'running',
    host: config.hostId,
    attempts: attempt,
    ...(a.rec.startedAt ? {} : { startedAt: now() }),
  }, { cells: true });
  if (!started.ok) return undefined;
  a.log(`experiment ${a.id} (${a.rec.name}) started on ${config.hostId}, attempt ${attempt}`);
  return started.cells ?? new Map();
}

/**
 * The runner, once; again if some cell reached no replica in time, since a failover meanwhile loses it:
 * the second pass reads the cells from whichever master holds them now and runs only what is missing.
 */
async function runEveryCell(shift: Shift, a: Attempt, signal: AbortSignal, stored?: Map<string, Cell>): Promise<void> {
  const { config, store, drivers } = shift.opts;
  const run = (cells?: Map<string, Cell>) =>
    runExperiment(
      {
        store, drivers, stateDir: config.stateDir, log: a.log, logger: a.elog,
        onProgress: (p) => a.job.updateProgress(p), draining: shift.draining,
      },
      a.id,
      signal,
      a.rec.spec,
      cells,
    );
  store.takeUnreplicated(a.id);
  await run(stored);
  if (store.takeUnreplicated(a.id)) {
    a.log(`experiment ${a.id}: some results reached no replica in time; running any cell a failover lost`);
    await run();
  }
}

/**
 * The record final, read back in the same step for its notifications with its batch link beside it
 * (linked before the job was queued); the host is let go while they are queued (not host work).
 */
async function markCompleted(shift: Shift, a: Attempt, hostLock: HostLock): Promise<void> {
  const { store } = shift.opts;
  const [done, batch] = await Promise.all([
    store.transitionRead(a.id, ['running'], { status: 'completed', finishedAt: now() }, { record: true }),
    store.batchOf(a.id),
  ]);
  a.log(`experiment ${a.id} completed`);
  shift.opts.metrics?.experiments.inc({ outcome: 'completed' });
  await Promise.all([shift.opts.onFinished?.(a.id, { record: done.record, batch }), hostLock.release()]);
}

/**
 * How a run that threw ends: handed back (shutdown), cancelled, failed (a permanent error or the last
 * attempt) or queued for another attempt. Every path but the cancel rethrows for BullMQ.
 */
async function settleFailure(shift: Shift, a: Attempt, signal: AbortSignal, err: unknown): Promise<void> {
  if (err instanceof DelayedError) throw err;
  if (err instanceof ShutdownError || (signal.aborted && signal.reason instanceof ShutdownError)) return handBack(shift, a);
  if (signal.aborted && signal.reason instanceof CancelledError) return markCancelled(shift, a);
  const reason = err instanceof Error ? err.message : String(err);
  if (err instanceof PermanentError || a.job.attemptsMade + 1 >= (a.job.opts.attempts ?? 1)) return markFailed(shift, a, reason);
  return retryLater(shift, a, err, reason);
}

/** Back to the queue without spending an attempt: stored cells stay, the next worker continues. */
async function handBack(shift: Shift, a: Attempt): Promise<never> {
  await shift.opts.store.transition(a.id, ['running'], { status: 'queued' });
  await a.job.moveToDelayed(Date.now() + 1000, a.token);
  a.log(`experiment ${a.id} handed back to the queue (worker shutting down)`);
  shift.opts.metrics?.experiments.inc({ outcome: 'handed_back' });
  throw new DelayedError();
}

async function markCancelled(shift: Shift, a: Attempt): Promise<void> {
  await shift.opts.store.transition(a.id, ['running', 'queued', 'scheduled'], { status: 'cancelled', finishedAt: now(), error: { reason: 'cancelled by request' } });
  a.log(`experiment ${a.id} cancelled`);
  shift.opts.metrics?.experiments.inc({ outcome: 'cancelled' });
  await shift.opts.onFinished?.(a.id);
}

async function markFailed(shift: Shift, a: Attempt, reason: string): Promise<never> {
  await shift.opts.store.transition(a.id, ['running'], { status: 'failed', finishedAt: now(), error: { reason } });
  a.log(`experiment ${a.id} failed: ${reason}`);
  shift.opts.metrics?.experiments.inc({ outcome: 'failed' });
  await shift.opts.onFinished?.(a.id);
  throw new UnrecoverableError(reason);
}

async function retryLater(shift: Shift, a: Attempt, err: unknown, reason: string): Promise<never> {
  const attempt = a.job.attemptsMade + 1;
  await shift.opts.store.transition(a.id, ['running'], { status: 'queued', error: { reason: `attempt ${attempt} failed, will retry: ${reason}` } });
  a.log(`experiment ${a.id} attempt ${attempt} failed, will retry: ${reason}`);
  shift.opts.metrics?.experiments.inc({ outcome: 'retried' });
  throw err;
}

const now = () => new Date().toISOString();
