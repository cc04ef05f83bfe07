// Batches: validation before anything is stored, a delayed batch that does not start before its time,
// a nightly window in a time zone (the window arithmetic and the worker's gate), priorities within a
// pool, and the shared webhook with one batch.completed at the end.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Queue } from 'bullmq';
import { testStack, waitFor, waitForStatus, requireTool, webhookReceiver, type TestStack } from './helpers.ts';
import { insideWindow, nextOpening, earliestStart, instantOf } from '../src/model/window.ts';
import { queueName, connect, Queues } from '../src/queue/queue.ts';
import { Store } from '../src/store/store.ts';
import { newRecord } from '../src/queue/submit.ts';
import { normalizeSpec, SpecInputSchema } from '../src/model/spec.ts';
import { newSecret } from '../src/webhooks/webhook.ts';

const iso = (ms: number) => new Date(ms).toISOString();
const tiny = (name: string, extra: Record<string, unknown> = {}) => ({
  name, scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 20, maxPrime: 2000 }], profiles: ['unchanged'], repetitions: 1, ...extra,
});

test('window arithmetic in a time zone, across midnight and daylight saving', () => {
  const berlin = { start: '22:00', end: '06:00', timeZone: 'Europe/Berlin' };
  // Winter (UTC+1): 22:00 Berlin is 21:00Z.
  assert.equal(iso(nextOpening(berlin, Date.parse('2026-11-30T12:00:00Z'))!), '2026-11-30T21:00:00.000Z');
  assert.equal(nextOpening(berlin, Date.parse('2026-11-30T23:30:00Z')), undefined, '00:30 in Berlin is inside');
  assert.equal(nextOpening(berlin, Date.parse('2026-12-01T04:59:00Z')), undefined, '05:59 in Berlin is inside');
  assert.equal(iso(nextOpening(berlin, Date.parse('2026-12-01T05:00:00Z'))!), '2026-12-01T21:00:00.000Z', '06:00 closes it');
  // Summer (UTC+2): 22:00 Berlin is 20:00Z.
  assert.equal(iso(nextOpening(berlin, Date.parse('2026-07-01T19:30:00Z'))!), '2026-07-01T20:00:00.000Z');
  // The night the clocks go back (2026-10-25): opens at 22:00 CET = 21:00Z.
  assert.equal(iso(nextOpening(berlin, Date.parse('2026-10-25T10:00:00Z'))!), '2026-10-25T21:00:00.000Z');
  // A day window in New York.
  const ny = { start: '09:30', end: '16:00', timeZone: 'America/New_York' };
  assert.equal(insideWindow(ny, Date.parse('2026-11-30T15:00:00Z')), true);
  assert.equal(iso(nextOpening(ny, Date.parse('2026-11-30T22:00:00Z'))!), '2026-12-01T14:30:00.000Z');
  assert.equal(iso(instantOf(2026, 3, 29, 2 * 60 + 30, 'Europe/Berlin')), '2026-03-29T01:30:00.000Z', 'a time in the DST gap comes right after it');
  // notBefore first, then the window after it.
  assert.equal(iso(earliestStart({ notBefore: '2026-12-02T08:00:00+01:00', window: berlin }, Date.parse('2026-11-30T12:00:00Z'))), '2026-12-02T21:00:00.000Z');
  assert.equal(earliestStart(undefined, 5), 5);
});

let rx: Awaited<ReturnType<typeof webhookReceiver>> | undefined;
let hookUrl = '';
/** What the receiver got, as parsed messages. */
const hooks = (): any[] => (rx?.hits ?? []).map((h) => JSON.parse(h.body));
let s: TestStack;
const skip = () => requireTool('redis-server') || requireTool('sysbench');

before(async () => {
  if (skip()) return;
  rx = await webhookReceiver();
  hookUrl = `${rx.url}/batch`;
  s = await testStack({ tag: 'batch', env: { KVMQ_WEBHOOK_ALLOW_PRIVATE: '1', KVMQ_WEBHOOK_BACKOFF_MS: '200' } });
});
after(async () => {
  await s?.stop();
  await rx?.close();
});

test('a bad batch is refused with pointers into it, and nothing of it is stored', async (t) => {
  const why = skip();
  if (why) return void t.skip(why);
  const cases: [unknown, string[]][] = [
    [{ experiments: [tiny('a'), tiny('b', { workloads: [{ kind: 'integer', events: -1 }] })] }, ['/experiments/1/workloads/0/events']],
    [{ experiments: [tiny('a')], schedule: { window: { start: '22:00', end: '6am', timeZone: 'Mars/Olympus' } } }, ['/schedule/window/end', '/schedule/window/timeZone']],
    [{ experiments: [] }, ['/experiments']],
    [{ experiments: [tiny('a')], extra: 1 }, ['/extra']],
    [{ experiments: [tiny('a', { scenarios: [{ id: 'g', guests: 1 }], driver: 'qemu' })] }, []],
  ];
  const count = async () => [(await s.fetchJson('GET', '/v1/experiments')).body.total, (await s.fetchJson('GET', '/v1/batches')).body.total];
  for (const [body, pointers] of cases) {
    const was = await count();
    const r = await s.fetchJson('POST', '/v1/batches', body);
    if (r.status === 202) {
      // A build with a qemu driver accepts guest scenarios; only the host-only build refuses them.
      assert.equal(pointers.length, 0);
      await s.fetchJson('DELETE', `/v1/experiments/${r.body.experiments[0].id}`);
      continue;
    }
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.deepEqual(await count(), was, 'a refused batch stores nothing');
    assert.match(r.type, /problem\+json/);
    if (pointers.length) assert.deepEqual(r.body.errors.map((e: any) => e.pointer).sort(), pointers, r.text);
    else assert.match(r.body.errors[0].pointer, /^\/experiments\/0\/scenarios\/0/);
  }
  const withHook = await s.fetchJson('POST', '/v1/batches', { experiments: [tiny('a')], webhook: { url: 'http://[::1]:9/' } });
  // This stack allows private targets; a plain scheme check still applies.
  assert.equal(withHook.status, 202);
  await s.fetchJson('DELETE', `/v1/experiments/${withHook.body.experiments[0].id}`);
  const bad = await s.fetchJson('POST', '/v1/batches', { experiments: [tiny('a')], webhook: { url: 'ftp://example.org/' } });
  assert.deepEqual(bad.body.errors.map((e: any) => e.pointer), ['/webhook/url']);
  assert.equal((await s.fetchJson('GET', '/v1/batches/nope')).status, 404);
});

test('a delayed batch does not start before its time, then runs and reports once as a batch', async (t) => {
  const why = skip();
  if (why) return void t.skip(why);
  rx!.hits.length = 0;
  const notBefore = Date.now() + 4000;
  const secret = newSecret();
  const r = await s.fetchJson('POST', '/v1/batches', {
    name: 'tonight',
    experiments: [tiny('one'), tiny('two')],
    webhook: { url: hookUrl, secret },
    schedule: { notBefore: iso(notBefore) },
  });
  assert.equal(r.status, 202, r.text);
  assert.equal(r.body.status, 'scheduled');
  assert.deepEqual(r.body.experiments.map((e: any) => e.status), ['scheduled', 'scheduled']);
  const id = r.body.id;

  await new Promise((res) => setTimeout(res, 2000));
  const mid = await s.fetchJson('GET', `/v1/batches/${id}`);
  assert.equal(mid.body.status, 'scheduled');
  for (const e of mid.body.experiments) {
    assert.equal(e.status, 'scheduled');
    assert.equal(e.startedAt, undefined);
  }

  const done = await waitFor(async () => {
    const b = await s.fetchJson('GET', `/v1/batches/${id}`);
    return b.body.status === 'completed' ? b.body : undefined;
  }, 60_000, 'the batch to complete');
  assert.deepEqual(done.counts, { completed: 2 });
  for (const e of done.experiments) assert.ok(Date.parse(e.startedAt) >= notBefore, `${e.name} started ${e.startedAt}, before ${iso(notBefore)}`);
  assert.equal(done.webhook.secret, '(set)');
  assert.ok(!JSON.stringify(done).includes(secret.slice(6)));

  const batchHook = await waitFor(async () => hooks().find((h) => h.type === 'batch.completed'), 10_000, 'batch.completed');
  assert.equal(batchHook.data.id, id);
  assert.deepEqual(batchHook.data.counts, { completed: 2 });
  await waitFor(async () => hooks().filter((h) => h.type === 'experiment.completed').length === 2, 10_000, 'two experiment.completed');
  await new Promise((res) => setTimeout(res, 300));
  assert.equal(hooks().filter((h) => h.type === 'batch.completed').length, 1, 'batch.completed once');
  const d = await s.fetchJson('GET', `/v1/batches/${id}/deliveries`);
  assert.deepEqual(d.body.items.map((a: any) => [a.type, a.outcome]), [['batch.completed', 'delivered']]);
  const list = await s.fetchJson('GET', '/v1/batches');
  assert.ok(list.body.items.some((b: any) => b.id === id));
});

test('outside its nightly window an experiment waits, scheduled, for the next opening', async (t) => {
  const why = skip();
  if (why) return void t.skip(why);
  const hhmm = (ms: number) => iso(ms).slice(11, 16);
  const now = Date.now();
  const window = { start: hhmm(now + 2 * 3600_000), end: hhmm(now + 3 * 3600_000), timeZone: 'UTC' };
  const opens = nextOpening(window, now)!;
  const q = new Queue(queueName('default'), { connection: { url: s.redisUrl } as never, prefix: s.config.prefix });
  try {
    const b = await s.fetchJson('POST', '/v1/batches', { experiments: [tiny('night')], schedule: { window } });
    assert.equal(b.status, 202, b.text);
    assert.equal(b.body.status, 'scheduled');
    const job = await q.getJob(b.body.experiments[0].id);
    assert.equal(await job!.getState(), 'delayed');
    assert.ok(Math.abs(job!.timestamp + job!.delay - opens) < 2000, 'delayed to the opening');

    // A single experiment with a window waits from the start, like a batch.
    const e = await s.fetchJson('POST', '/v1/experiments', tiny('night single', { schedule: { window } }));
    assert.equal(e.status, 202, e.text);
    assert.equal(e.body.status, 'scheduled');
    assert.equal(await q.getJobState(e.body.id), 'delayed');

    // A job that comes up while its window is shut (queued behind a long experiment until after the
    // window closed, or queued by an older API) is sent back by the worker to wait for the opening.
    const conn = connect(s.redisUrl);
    try {
      const store = new Store(conn, s.config.prefix);
      const queues = new Queues(conn, s.config.prefix);
      const late = { ...newRecord(normalizeSpec(SpecInputSchema.parse(tiny('came up late', { schedule: { window } }))), Date.now()), status: 'queued' as const };
      await store.create(late);
      // At once, ignoring the window (as an older API did): Queues.add itself no longer does that.
      await q.add('experiment', { id: late.id }, { jobId: late.id });
      const rec = await waitForStatus(s, late.id, ['scheduled', 'running', 'completed'], 20_000);
      assert.equal(rec.status, 'scheduled');
      assert.equal(rec.startedAt, undefined);
      const job = await waitFor(async () => {
        const j = await q.getJob(late.id);
        return j && (await j.getState()) === 'delayed' ? j : undefined;
      }, 10_000, 'the job back in delayed');
      assert.ok(job);

      // Queues.add, the one way a job is queued, delays it to the window's opening like the API does.
      const added = newRecord(normalizeSpec(SpecInputSchema.parse(tiny('added in the day', { schedule: { window } }))), Date.now());
      assert.equal(added.status, 'scheduled');
      await store.create(added);
      await queues.add(added);
      const addedJob = await q.getJob(added.id);
      assert.equal(await addedJob!.getState(), 'delayed');
      assert.ok(Math.abs(addedJob!.timestamp + addedJob!.delay - opens) < 2000, 'delayed to the opening');
      assert.equal((await s.fetchJson('DELETE', `/v1/experiments/${added.id}`)).status, 200);
      await queues.close();
      assert.equal((await s.fetchJson('DELETE', `/v1/experiments/${late.id}`)).status, 200);
    } finally {
      conn.disconnect();
    }
    for (const id of [b.body.experiments[0].id, e.body.id]) assert.equal((await s.fetchJson('DELETE', `/v1/experiments/${id}`)).status, 200);
  } finally {
    await q.close();
  }
});

test('priorities: within a pool the higher priority (lower number) starts first', async (t) => {
  const why = skip();
  if (why) return void t.skip(why);
  // The API alone queues both; a worker started afterwards picks between them by priority.
  const api = await testStack({ tag: 'prio', worker: false });
  let worker: TestStack | undefined;
  try {
    const r = await api.fetchJson('POST', '/v1/batches', {
      experiments: [tiny('low', { schedule: { priority: 50 } }), tiny('high', { schedule: { priority: 1 } }), tiny('default')],
      schedule: { priority: 10 },
    });
    assert.equal(r.status, 202, r.text);
    const [low, high, dflt] = r.body.experiments.map((e: any) => e.id);
    const q = new Queue(queueName('default'), { connection: { url: api.redisUrl } as never, prefix: api.config.prefix });
    try {
      assert.deepEqual(await Promise.all([low, high, dflt].map(async (id) => (await q.getJob(id))!.opts.priority)), [50, 1, 10]);
    } finally {
      await q.close();
    }
    worker = await testStack({ tag: 'prio-w', api: false, env: { REDIS_URL: api.redisUrl } });
    const started = await waitFor(async () => {
      const b = await api.fetchJson('GET', `/v1/batches/${r.body.id}`);
      return b.body.status === 'completed' ? b.body.experiments : undefined;
    }, 60_000, 'the batch to complete');
    const order = [...started].sort((a: any, b: any) => Date.parse(a.startedAt) - Date.parse(b.startedAt)).map((e: any) => e.name);
    assert.deepEqual(order, ['high', 'default', 'low']);
  } finally {
    await worker?.stop();
    await api.stop();
  }
});

test('the command line: kvmq batch, kvmq batch status, kvmq deliveries, kvmq schedule', async (t) => {
  const why = skip();
  if (why) return void t.skip(why);
  const { execFile } = await import('node:child_process');
  const fs = await import('node:fs/promises');
  const path = await import('node:path');
  const secret = newSecret();
  const kvmq = (...args: string[]) =>
    new Promise<{ code: number; out: string; err: string }>((resolve) => {
      execFile(process.execPath, ['bin/kvmq.js', ...args], { env: { ...process.env, KVMQ_URL: s.base, KVMQ_WEBHOOK_SECRET: secret } }, (e, out, err) =>
        resolve({ code: e ? ((e as { code?: number }).code ?? 1) : 0, out, err }));
    });
  const a = path.join(s.dir, 'a.json');
  const b = path.join(s.dir, 'b.json');
  await fs.writeFile(a, JSON.stringify(tiny('cli-a')));
  await fs.writeFile(b, JSON.stringify(tiny('cli-b')));
  rx!.hits.length = 0;
  const sub = await kvmq('batch', a, b, '--name', 'from the cli', '--priority', '3', '--webhook', hookUrl, '--not-before', iso(Date.now() + 1000), '--wait');
  assert.equal(sub.code, 0, sub.err);
  const id = sub.out.trim().split('\n')[0]!;
  assert.match(sub.out, /batch .*\(from the cli\): completed/);
  assert.ok(!sub.err.includes(secret), 'a secret from the environment is not echoed');
  const view = (await s.fetchJson('GET', `/v1/batches/${id}`)).body;
  assert.equal(view.schedule.priority, 3);
  assert.equal(view.experiments.length, 2);
  const st = await kvmq('batch', 'status', id);
  assert.match(st.out, /cli-a\s+completed/);
  assert.match(st.out, /cli-b\s+completed/);
  await waitFor(async () => hooks().some((h) => h.type === 'batch.completed' && h.data.id === id), 10_000, 'batch.completed');
  const d = await kvmq('deliveries', view.experiments[0].id);
  assert.equal(d.code, 0, d.err);
  assert.match(d.out, /experiment\.completed\s+204\s+\d+\s+delivered/);
  const db = await kvmq('deliveries', id, '--batch');
  assert.match(db.out, /batch\.completed\s+204/);

  const add = await kvmq('schedule', 'add', a, '--cron', '0 23 * * *', '--tz', 'Europe/Berlin', '--name', 'nightly-cli');
  assert.equal(add.code, 0, add.err);
  const sid = add.out.trim();
  assert.match(add.err, /in Europe\/Berlin, next run 20\d\d-/);
  assert.match((await kvmq('schedule', 'list')).out, new RegExp(`${sid}\\s+nightly-cli\\s+0 23 \\* \\* \\*\\s+Europe/Berlin`));
  const bad = await kvmq('schedule', 'add', a, '--cron', 'at dawn');
  assert.notEqual(bad.code, 0);
  assert.match(bad.err, /\/cron:/);
  assert.equal((await kvmq('schedule', 'rm', sid)).code, 0);
  assert.equal((await s.fetchJson('GET', `/v1/schedules/${sid}`)).status, 404);
});
