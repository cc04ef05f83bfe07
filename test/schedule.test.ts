// Recurring schedules through BullMQ job schedulers: validation, the next run in the schedule's time
// zone, ticks that become experiments (once per tick), and deletion that stops them.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Queue } from 'bullmq';
import { testStack, waitFor, waitForStatus, requireTool, type TestStack } from './helpers.ts';
import { SCHEDULE_QUEUE, Schedules } from '../src/queue/schedule.ts';
import { Store } from '../src/store/store.ts';
import { Queues, connect } from '../src/queue/queue.ts';
import { newSecret } from '../src/webhooks/webhook.ts';

const spec = (name: string, extra: Record<string, unknown> = {}) => ({
  name, scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 20, maxPrime: 2000 }], profiles: ['unchanged'], repetitions: 1, ...extra,
});

let s: TestStack;
const skip = () => requireTool('redis-server') || requireTool('sysbench');
before(async () => {
  if (!skip()) s = await testStack({ tag: 'schedule', env: { KVMQ_MIN_SCHEDULE_INTERVAL: '1' } });
});
after(async () => {
  await s?.stop();
});

test('bad schedules are refused with pointers', async (t) => {
  const why = skip();
  if (why) return void t.skip(why);
  const cases: [unknown, string[]][] = [
    [{ cron: '61 * * * *', spec: spec('x') }, ['/cron']],
    [{ cron: 'every night', spec: spec('x') }, ['/cron']],
    [{ cron: '0 23 * * *', timeZone: 'Europe/Nowhere', spec: spec('x') }, ['/timeZone']],
    [{ cron: '0 23 * * *', spec: spec('x', { repetitions: 0 }) }, ['/spec/repetitions']],
    [{ cron: '0 23 * * *', startDate: '2027-01-02T00:00:00Z', endDate: '2027-01-01T00:00:00Z', spec: spec('x') }, ['/endDate']],
    [{ cron: '0 23 * * *' }, ['/spec']],
  ];
  for (const [body, pointers] of cases) {
    const r = await s.fetchJson('POST', '/v1/schedules', body);
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.match(r.type, /problem\+json/);
    assert.deepEqual(r.body.errors.map((e: any) => e.pointer), pointers, r.text);
  }
  assert.equal((await s.fetchJson('GET', '/v1/schedules')).body.total, 0);
  assert.equal((await s.fetchJson('DELETE', '/v1/schedules/nope')).status, 404);
});

test('every night at 23:00 Berlin time: the next run is computed in that zone; the secret is not shown', async (t) => {
  const why = skip();
  if (why) return void t.skip(why);
  const secret = newSecret();
  const r = await s.fetchJson('POST', '/v1/schedules', {
    name: 'paper nightly', cron: '0 23 * * *', timeZone: 'Europe/Berlin',
    spec: spec('nightly', { webhook: { url: 'https://hooks.example.org/kvmq', secret } }),
  });
  assert.equal(r.status, 201, r.text);
  const next = Date.parse(r.body.next);
  assert.ok(next > Date.now() && next - Date.now() <= 24 * 3600_000, r.body.next);
  const local = new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Berlin', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).format(new Date(next));
  assert.equal(local, '23:00');
  const one = await s.fetchJson('GET', `/v1/schedules/${r.body.id}`);
  assert.equal(one.body.cron, '0 23 * * *');
  assert.equal(one.body.spec.webhook.secret, '(set)');
  const list = await s.fetchJson('GET', '/v1/schedules');
  for (const x of [r, one, list]) assert.ok(!x.text.includes(secret.slice(6)));
  assert.equal((await s.fetchJson('DELETE', `/v1/schedules/${r.body.id}`)).status, 204);
});

test('ticks become experiments that run; limit and delete stop them', async (t) => {
  const why = skip();
  if (why) return void t.skip(why);
  // Every second, at most twice.
  const r = await s.fetchJson('POST', '/v1/schedules', { cron: '* * * * * *', limit: 2, spec: spec('tick') });
  assert.equal(r.status, 201, r.text);
  const id = r.body.id;
  const recent = await waitFor(async () => {
    const v = await s.fetchJson('GET', `/v1/schedules/${id}`);
    return v.body.recent.length >= 2 ? v.body.recent : undefined;
  }, 30_000, 'two runs');
  for (const e of recent) assert.equal((await waitForStatus(s, e.id, ['completed', 'failed'], 60_000)).status, 'completed');
  // A schedule's runs form one series, named after the schedule; each completed run is checked in it.
  assert.equal(r.body.spec.series, 'tick');
  const checked = await waitFor(async () => {
    const recs = await Promise.all(recent.map(async (e: any) => (await s.fetchJson('GET', `/v1/experiments/${e.id}`)).body));
    return recs.every((x) => x.regression) ? recs : undefined;
  }, 20_000, 'the series check of both runs');
  for (const x of checked) assert.equal(x.spec.series, 'tick');
  assert.deepEqual(checked.map((x: any) => x.regression.runs).sort(), [1, 2]);
  assert.equal((await s.fetchJson('GET', '/v1/series/tick')).body.hosts[0].runs.length, 2);
  await new Promise((res) => setTimeout(res, 2500));
  assert.equal((await s.fetchJson('GET', `/v1/schedules/${id}`)).body.recent.length, 2, 'limit 2 means two runs');

  // Without a limit it keeps going until deleted.
  const r2 = await s.fetchJson('POST', '/v1/schedules', { cron: '* * * * * *', spec: spec('tock') });
  const id2 = r2.body.id;
  await waitFor(async () => (await s.fetchJson('GET', `/v1/schedules/${id2}`)).body.recent.length >= 1, 30_000, 'a run');
  assert.equal((await s.fetchJson('DELETE', `/v1/schedules/${id2}`)).status, 204);
  assert.equal((await s.fetchJson('GET', `/v1/schedules/${id2}`)).status, 404);
  const q = new Queue(SCHEDULE_QUEUE, { connection: { url: s.redisUrl } as never, prefix: s.config.prefix });
  try {
    assert.equal(await q.getJobScheduler(id2), undefined, 'the BullMQ job scheduler is gone');
  } finally {
    await q.close();
  }
  const count = async () => (await s.fetchJson('GET', '/v1/experiments?limit=500')).body.items.filter((e: any) => e.name === 'tock').length;
  const after1 = await count();
  await new Promise((res) => setTimeout(res, 2500));
  assert.equal(await count(), after1, 'no run after the delete');
});

test('a tick delivered twice submits one experiment', async (t) => {
  const why = skip();
  if (why) return void t.skip(why);
  const conn = connect(s.redisUrl);
  const store = new Store(conn, s.config.prefix);
  const queues = new Queues(conn, s.config.prefix);
  const schedules = new Schedules(conn, store, queues, s.config);
  try {
    const r = await s.fetchJson('POST', '/v1/schedules', { cron: '0 3 1 1 *', spec: spec('twice') });
    const a = await schedules.spawn(r.body.id, 'repeat:test:1');
    const b = await schedules.spawn(r.body.id, 'repeat:test:1');
    assert.ok(a);
    assert.equal(b, a);
    assert.equal((await schedules.spawn('nosuchschedule', 'repeat:test:2')), undefined);
    await waitForStatus(s, a!, ['completed'], 60_000);
    await s.fetchJson('DELETE', `/v1/schedules/${r.body.id}`);
  } finally {
    await queues.close();
    await schedules.close();
    conn.disconnect();
  }
});
