// Quotas and deletion (issue 19, point 9): DELETE ?purge=true removes a finished experiment with its
// cells, a finished batch with its experiments, a schedule with its finished runs; schedules have a
// shortest interval; and each client has a limit on unfinished work.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { testStack, requireTool, waitForFinal, type TestStack } from './helpers.ts';

const skip = requireTool('redis-server') || requireTool('sysbench');
const stacks: TestStack[] = [];
after(async () => {
  for (const s of stacks) await s.stop();
});

const good = { name: 'q', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 10 }], profiles: ['unchanged'], repetitions: 1 };

test('a finished experiment is deleted with its cells; an unfinished one only cancels', { skip }, async () => {
  const s = await testStack({ tag: 'purge' });
  stacks.push(s);
  const store = (await import('../src/store/store.ts'));
  const { Redis } = await import('ioredis');
  const redis = new Redis(s.redisUrl);
  const st = new store.Store(redis, s.config.prefix);
  try {
    const id = (await s.fetchJson('POST', '/v1/experiments', good)).body.id;
    const done = await waitForFinal(st, id);
    assert.equal(done.status, 'completed', JSON.stringify(done.error));
    assert.ok((await st.cells(id)).size > 0);
    const plain = await s.fetchJson('DELETE', `/v1/experiments/${id}`);
    assert.equal(plain.status, 409, 'DELETE without purge still means cancel');
    assert.match(plain.body.detail, /purge=true/);
    assert.equal((await s.fetchJson('DELETE', `/v1/experiments/${id}?purge=yes`)).status, 400);
    const del = await s.fetchJson('DELETE', `/v1/experiments/${id}?purge=true`);
    assert.equal(del.status, 204, del.text);
    assert.equal((await s.fetchJson('GET', `/v1/experiments/${id}`)).status, 404);
    assert.equal((await st.cells(id)).size, 0);
    assert.equal(await redis.exists(st.key('exp', id), st.key('cells', id), st.key('profiles', id), st.key('system', id)), 0);
    assert.equal(await redis.zscore(st.key('exps'), id), null);
    assert.equal((await s.fetchJson('DELETE', `/v1/experiments/${id}?purge=true`)).status, 404);

    // A waiting one: purge refuses (409), plain DELETE still cancels, then purge deletes.
    const w = (await s.fetchJson('POST', '/v1/experiments', { ...good, schedule: { notBefore: '2099-01-01T00:00:00Z' } })).body.id;
    const early = await s.fetchJson('DELETE', `/v1/experiments/${w}?purge=true`);
    assert.equal(early.status, 409);
    assert.match(early.body.detail, /cancel it first/);
    assert.equal((await s.fetchJson('DELETE', `/v1/experiments/${w}`)).status, 200);
    assert.equal((await s.fetchJson('DELETE', `/v1/experiments/${w}?purge=true`)).status, 204);

    // A batch: its experiments are deleted with it, not one by one.
    const b = await s.fetchJson('POST', '/v1/batches', { experiments: [good, { ...good, name: 'q2' }] });
    assert.equal(b.status, 202, b.text);
    for (const e of b.body.experiments) await waitForFinal(st, e.id);
    const one = await s.fetchJson('DELETE', `/v1/experiments/${b.body.experiments[0].id}?purge=true`);
    assert.equal(one.status, 409);
    assert.match(one.body.detail, /batch/);
    assert.equal((await s.fetchJson('DELETE', `/v1/batches/${b.body.id}`)).status, 400, 'purge=true is required');
    assert.equal((await s.fetchJson('DELETE', `/v1/batches/${b.body.id}?purge=true`)).status, 204);
    assert.equal((await s.fetchJson('GET', `/v1/batches/${b.body.id}`)).status, 404);
    for (const e of b.body.experiments) assert.equal((await s.fetchJson('GET', `/v1/experiments/${e.id}`)).status, 404);
  } finally {
    redis.disconnect();
  }
});

test('a schedule faster than the minimum interval is refused naming /cron; purge deletes its finished runs', { skip }, async () => {
  const s = await testStack({ tag: 'sched-min', env: { KVMQ_MIN_SCHEDULE_INTERVAL: '60' } });
  stacks.push(s);
  for (const cron of ['* * * * * *', '*/30 * * * * *', '0,30 * * * * *']) {
    const r = await s.fetchJson('POST', '/v1/schedules', { cron, spec: good });
    assert.equal(r.status, 400, cron);
    assert.deepEqual(r.body.errors.map((e: any) => e.pointer), ['/cron'], cron);
    assert.match(r.body.errors[0].detail, /60 s/);
  }
  assert.equal((await s.fetchJson('POST', '/v1/schedules', { cron: '* * * * *', spec: good })).status, 201, 'every minute is allowed');
  // With the minimum lowered, runs happen; DELETE ?purge=true takes the finished ones with the schedule.
  const fast = await testStack({ tag: 'sched-purge', env: { KVMQ_MIN_SCHEDULE_INTERVAL: '1' } });
  stacks.push(fast);
  const sc = await fast.fetchJson('POST', '/v1/schedules', { cron: '* * * * * *', limit: 2, spec: good });
  assert.equal(sc.status, 201, sc.text);
  const { Redis } = await import('ioredis');
  const { Store } = await import('../src/store/store.ts');
  const redis = new Redis(fast.redisUrl);
  const st = new Store(redis, fast.config.prefix);
  try {
    const { waitFor } = await import('./helpers.ts');
    const runs = await waitFor(async () => {
      const v = (await fast.fetchJson('GET', `/v1/schedules/${sc.body.id}`)).body;
      return v.recent.length === 2 ? v.recent : undefined;
    }, 60_000, 'two runs');
    for (const r of runs) await waitForFinal(st, r.id);
    assert.equal((await fast.fetchJson('DELETE', `/v1/schedules/${sc.body.id}?purge=true`)).status, 204);
    for (const r of runs) assert.equal((await fast.fetchJson('GET', `/v1/experiments/${r.id}`)).status, 404);
  } finally {
    redis.disconnect();
  }
});

test('each client has a limit on unfinished experiments, with the figure in a 429 problem', { skip }, async () => {
  const s = await testStack({ worker: false, tag: 'quota', env: { KVMQ_API_TOKENS: 'qa,qb', KVMQ_MAX_QUEUED_PER_CLIENT: '3' } });
  stacks.push(s);
  const a = { authorization: 'Bearer qa' };
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await s.fetchJson('POST', '/v1/experiments', good, a);
    assert.equal(r.status, 202, r.text);
    ids.push(r.body.id);
  }
  const over = await s.fetchJson('POST', '/v1/experiments', good, a);
  assert.equal(over.status, 429);
  assert.match(over.type, /problem\+json/);
  assert.match(over.body.detail, /3 unfinished.*limit is 3/);
  const batch = await s.fetchJson('POST', '/v1/batches', { experiments: [good] }, a);
  assert.equal(batch.status, 429, 'a batch counts too');
  // The refused submission left nothing behind.
  assert.equal((await s.fetchJson('GET', '/v1/experiments', undefined, a)).body.total, 3);
  // Another token has its own share; a batch over the whole limit is refused.
  assert.equal((await s.fetchJson('POST', '/v1/batches', { experiments: [good, good, good, good] }, { authorization: 'Bearer qb' })).status, 429);
  assert.equal((await s.fetchJson('POST', '/v1/batches', { experiments: [good, good] }, { authorization: 'Bearer qb' })).status, 202);
  // Cancelling frees a slot.
  assert.equal((await s.fetchJson('DELETE', `/v1/experiments/${ids[0]}`, undefined, a)).status, 200);
  assert.equal((await s.fetchJson('POST', '/v1/experiments', good, a)).status, 202);
});
