// Crash recovery of the queue and its records: a job that stalled too often (real worker processes
// SIGKILLed mid-experiment) ends as failed with its webhook; and the states a crash leaves between two
// writes (a final status without its webhook, a record without its job, a schedule marker without its
// experiment) are written into Redis directly and repaired by the next worker start or tick.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Worker, UnrecoverableError } from 'bullmq';
import { queueFixture, testStack, tempDir, waitFor, waitForFinal, requireTool } from './helpers.ts';
import { connect, queueName } from '../src/queue/queue.ts';
import { Store, type ExperimentRecord } from '../src/store/store.ts';
import { parseSpec } from '../src/model/spec.ts';
import { expandCells } from '../src/model/cell.ts';
import { RecurringScheduleSchema, Schedules } from '../src/queue/schedule.ts';
import { loadConfig } from '../src/config.ts';

const skip = requireTool('redis-server');
const fx = queueFixture('recovery', skip);

const hooksFor = (id: string) => fx.rx.hits.filter((h) => JSON.parse(h.body).data?.id === id).map((h) => JSON.parse(h.body).type as string);

function record(argv: string[], status: ExperimentRecord['status'] = 'queued'): ExperimentRecord {
  const spec = parseSpec({
    name: 'recovery', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'command', argv }], repetitions: 1,
    webhook: { url: `${fx.rx.url}/hook` },
  });
  return { id: Store.newId(), name: spec.name, status, pool: 'default', spec, progress: { done: 0, total: expandCells(spec).length }, createdAt: new Date().toISOString() };
}

const stackEnv = { REDIS_URL: '', KVMQ_ALLOW_COMMANDS: '1', KVMQ_WEBHOOK_ALLOW_PRIVATE: '1', KVMQ_WEBHOOK_BACKOFF_MS: '200' };
const workerStack = () => testStack({ api: false, tag: 'recovery', env: { ...stackEnv, REDIS_URL: fx.redis.url } });

/** Processes with exactly this command line (the workload runs in a process group of its own). */
async function killByCmdline(cmdline: string): Promise<number> {
  let n = 0;
  for (const pid of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const c = (await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).replace(/\0/g, ' ').trim();
    if (c !== cmdline) continue;
    try {
      process.kill(Number(pid), 'SIGKILL');
      n++;
    } catch {}
  }
  return n;
}

test('a job that stalls three times (its worker SIGKILLed each time) ends failed with the reason, and its webhook is sent', { skip, timeout: 300_000 }, async () => {
  const dir = await tempDir('stall');
  const env = {
    ...process.env, ...stackEnv, REDIS_URL: fx.redis.url, KVMQ_STATE_DIR: path.join(dir, 'state'), KVMQ_DATA_DIR: path.join(dir, 'data'),
    KVMQ_HOST_ID: `stall-${process.pid}`, KVMQ_LOCK_MS: '1000',
  };
  const argv = ['sleep', '73.25'];
  const rec = record(argv);
  await fx.store.create(rec);
  await fx.queues.add(rec);
  const start = () => {
    const child = spawn(process.execPath, [path.resolve('bin/kvmq.js'), 'worker'], { env, stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    fx.children.push(child);
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    return { child, stderr: () => err, exited: new Promise((r) => child.on('exit', r)) };
  };
  for (let i = 1; i <= 3; i++) {
    const w = start();
    await waitFor(async () => w.stderr().includes(`experiment ${rec.id} (recovery) started`), 90_000, `worker ${i} to start the experiment\n${w.stderr()}`);
    process.kill(-w.child.pid!, 'SIGKILL');
    await w.exited;
    await killByCmdline(argv.join(' '));
    assert.equal((await fx.store.get(rec.id))!.status, 'running', 'a killed worker leaves the record running');
  }
  const last = start();
  const done = await waitForFinal(fx.store, rec.id, 90_000, `the record to be settled\n${last.stderr()}`);
  assert.equal(done.status, 'failed');
  assert.match(done.error!.reason, /lost too many times.*stalled more than allowable limit/);
  await waitFor(async () => hooksFor(rec.id).includes('experiment.failed'), 30_000, 'the experiment.failed webhook');
  process.kill(last.child.pid!, 'SIGTERM');
  await last.exited;
});

test('worker start settles a record whose job the queue already failed, and sends its webhook', { skip }, async () => {
  const rec = record(['true'], 'running');
  await fx.store.create(rec);
  await fx.queues.add(rec);
  // The queue fails the job on its own (as it does after too many stalls); the record never hears of it.
  const conn = connect(fx.redis.url);
  const bare = new Worker(queueName('default'), async () => { throw new UnrecoverableError('gone'); }, { connection: conn, prefix: '{kvmq}' });
  await waitFor(async () => (await fx.queues.get('default').getJob(rec.id))?.getState().then((s) => s === 'failed'), 30_000, 'the job to fail');
  await bare.close();
  conn.disconnect();
  assert.equal((await fx.store.get(rec.id))!.status, 'running');
  const s = await workerStack();
  try {
    const done = await waitForFinal(fx.store, rec.id, 30_000);
    assert.equal(done.status, 'failed');
    assert.match(done.error!.reason, /the queue gave up on it: gone/);
    await waitFor(async () => hooksFor(rec.id).includes('experiment.failed'), 30_000, 'the experiment.failed webhook');
  } finally {
    await s.stop();
  }
});

test('a crash between the final status and its webhook: the retried job and the next start send it once', { skip }, async () => {
  // One with its job still in the queue (the worker died before the job ended), one without.
  const withJob = record(['true'], 'running');
  const without = record(['true'], 'running');
  for (const r of [withJob, without]) {
    await fx.store.create(r);
    // The status change, as the worker makes it; then the crash, before any webhook was queued.
    assert.ok(await fx.store.transition(r.id, ['running'], { status: 'completed', finishedAt: new Date().toISOString() }));
  }
  await fx.queues.add(withJob);
  const s = await workerStack();
  try {
    for (const r of [withJob, without]) await waitFor(async () => hooksFor(r.id).includes('experiment.completed'), 30_000, `experiment.completed for ${r.id}`);
    await waitFor(async () => (await fx.queues.get('default').getJob(withJob.id))?.isCompleted(), 30_000, 'the retried job to end');
    assert.deepEqual(await fx.store.owed(), [], 'nothing is owed any more');
  } finally {
    await s.stop();
  }
  for (const r of [withJob, without]) assert.deepEqual(hooksFor(r.id), ['experiment.completed'], 'exactly one message each');
});

test('a record stored whose job was never queued is queued at the next worker start and runs', { skip }, async () => {
  const rec = record(['true']);
  await fx.store.create(rec); // ...and the API process died here
  assert.equal(await fx.queues.get('default').getJob(rec.id), undefined);
  const s = await workerStack();
  try {
    const done = await waitForFinal(fx.store, rec.id, 60_000);
    assert.equal(done.status, 'completed', JSON.stringify(done.error));
    await waitFor(async () => hooksFor(rec.id).includes('experiment.completed'), 30_000, 'the experiment.completed webhook');
  } finally {
    await s.stop();
  }
});

test('a schedule tick retried after a crash submits its experiment exactly once', { skip }, async () => {
  const config = loadConfig({ REDIS_URL: fx.redis.url });
  const schedules = new Schedules(fx.store.redis, fx.store, fx.queues, config);
  try {
    const input = {
      name: 'recovery', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'command' as const, argv: ['true'] }], repetitions: 1,
      webhook: { url: `${fx.rx.url}/hook` },
    };
    const sched = await schedules.create(RecurringScheduleSchema.parse({ cron: '0 0 1 1 *', timeZone: 'UTC', spec: input }), parseSpec(input));
    // What an older version left when it died between its marker and the experiment.
    const orphanId = Store.newId();
    await fx.store.redis.set(fx.store.poolKey('default', 'schedtick', 'tick-a'), orphanId, 'EX', 3600);
    assert.equal(await schedules.spawn(sched.id, 'tick-a'), orphanId);
    assert.equal((await fx.store.get(orphanId))?.status, 'queued', 'the experiment the marker names exists');
    assert.ok(await fx.queues.get('default').getJob(orphanId), 'and its job is queued');

    // A fresh tick delivered twice: one experiment, one job, one entry in the schedule's runs.
    const a = await schedules.spawn(sched.id, 'tick-b');
    const b = await schedules.spawn(sched.id, 'tick-b');
    assert.ok(a);
    assert.equal(a, b);
    const runs = await fx.store.redis.lrange(fx.store.key('schedruns', sched.id), 0, -1);
    assert.deepEqual(runs, [a, orphanId]);
    for (const id of [a!, orphanId]) await fx.queues.get('default').remove(id);
    await fx.store.remove(a!);
    await fx.store.remove(orphanId);
  } finally {
    await schedules.close();
  }
});
