// /metrics on prom-client: promtool accepts the exposition, a scrape costs the same however many
// experiments are stored, the counts by status follow every transition, and a worker alone serves its
// own process metrics on KVMQ_METRICS_PORT behind the API's tokens.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { testStack, requireTool, waitForFinal, type TestStack } from './helpers.ts';
import { connect } from '../src/queue/queue.ts';
import { Store, type ExperimentRecord } from '../src/store/store.ts';
import { parseSpec } from '../src/model/spec.ts';

const skip = requireTool('redis-server') || requireTool('sysbench') || requireTool('promtool');
const stacks: TestStack[] = [];
after(async () => {
  for (const s of stacks) await s.stop();
});

function promtool(text: string): { code: number | null; out: string } {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

const spec = parseSpec({ name: 'm', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 2000 }], profiles: ['unchanged'], repetitions: 1 });
const record = (id: string): ExperimentRecord => ({ id, name: 'm', status: 'queued', pool: 'default', spec, progress: { done: 0, total: 1 }, createdAt: new Date().toISOString() });

/** Commands Redis has run so far (INFO commandstats, summed). */
async function commandsRun(store: Store): Promise<Record<string, number>> {
  const info = await store.redis.info('commandstats');
  return Object.fromEntries([...info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)].map((m) => [m[1]!, Number(m[2])]));
}

test('/metrics passes promtool and carries process, worker and cluster metrics', { skip }, async () => {
  const s = await testStack({ tag: 'metrics' });
  stacks.push(s);
  const sub = await s.fetchJson('POST', '/v1/experiments', { name: 'm', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 2000 }], profiles: ['unchanged'], repetitions: 1 });
  assert.equal(sub.status, 202);
  const conn = connect(s.redisUrl);
  try {
    const done = await waitForFinal(new Store(conn, s.config.prefix), sub.body.id);
    assert.equal(done.status, 'completed');
  } finally {
    conn.disconnect();
  }
  const m = await s.fetchJson('GET', '/metrics');
  assert.equal(m.status, 200);
  assert.match(m.type, /^text\/plain; version=0\.0\.4/);
  const check = promtool(m.text);
  assert.equal(check.code, 0, check.out);
  // prom-client's default process metrics
  assert.match(m.text, /^process_cpu_seconds_total \d/m);
  assert.match(m.text, /^nodejs_eventloop_lag_seconds \d/m);
  assert.match(m.text, /^process_resident_memory_bytes \d/m);
  // the worker in this process, and the cluster read from Redis
  assert.match(m.text, /^kvmq_worker_experiments_total\{outcome="completed"\} 1$/m);
  assert.match(m.text, /^kvmq_worker_running 0$/m);
  assert.match(m.text, /^kvmq_experiments\{status="completed"\} 1$/m);
  assert.match(m.text, /^kvmq_experiments\{status="queued"\} 0$/m);
  assert.match(m.text, /^kvmq_cell_seconds_count 1$/m);
  assert.match(m.text, /^kvmq_cell_seconds_bucket\{le="\+Inf"\} 1$/m);
  assert.match(m.text, /^kvmq_webhook_queue_jobs\{state="waiting"\} 0$/m);
  assert.match(m.text, /^# TYPE kvmq_cell_seconds histogram$/m);
  assert.match(m.text, /^# TYPE kvmq_guest_boots_total counter$/m);

  // A broken exposition is caught by the same check (the check itself can fail).
  assert.notEqual(promtool('# TYPE x counter\nx{a="1" 2\n').code, 0);
});

test('a scrape runs the same Redis commands with 2,000 experiments stored as with none; counts follow transitions', { skip }, async () => {
  const s = await testStack({ tag: 'metrics-o1', worker: false });
  stacks.push(s);
  const conn = connect(s.redisUrl);
  const store = new Store(conn, s.config.prefix);
  try {
    await s.fetchJson('GET', '/metrics'); // first scrape counts a database from before the counts hash
    const cost = async () => {
      const before = await commandsRun(store);
      const r = await s.fetchJson('GET', '/metrics');
      assert.equal(r.status, 200);
      const after = await commandsRun(store);
      // The INFO call itself is the one difference between before and after that is not the scrape's.
      const total = Object.keys(after).reduce((n, k) => n + after[k]! - (before[k] ?? 0), 0) - 1;
      return { total, hget: (after.hget ?? 0) - (before.hget ?? 0), text: r.text };
    };
    const empty = await cost();
    const ids = Array.from({ length: 2000 }, (_, i) => `zz${i.toString(36).padStart(4, '0')}`);
    for (const id of ids) await store.create(record(id));
    const full = await cost();
    assert.equal(full.total, empty.total, `a scrape ran ${empty.total} commands with no experiments and ${full.total} with 2,000`);
    assert.equal(full.hget, 0, 'no experiment record is read by a scrape');
    assert.match(full.text, /^kvmq_experiments\{status="queued"\} 2000$/m);

    assert.equal(await store.transition(ids[0]!, ['queued'], { status: 'running' }), true);
    assert.equal(await store.transition(ids[0]!, ['queued'], { status: 'running' }), false, 'a refused transition moves no count');
    assert.equal(await store.transition(ids[0]!, ['running'], { status: 'completed' }), true);
    await store.remove(ids[1]!);
    await store.remove(ids[1]!); // twice: the second finds nothing to take away
    let text = (await s.fetchJson('GET', '/metrics')).text;
    assert.match(text, /^kvmq_experiments\{status="queued"\} 1998$/m);
    assert.match(text, /^kvmq_experiments\{status="completed"\} 1$/m);
    assert.match(text, /^kvmq_experiments\{status="running"\} 0$/m);

    // A database from before the counts hash: counted once, the same numbers.
    await conn.del(store.poolKey('default', 'counts'));
    text = (await s.fetchJson('GET', '/metrics')).text;
    assert.match(text, /^kvmq_experiments\{status="queued"\} 1998$/m);
    assert.match(text, /^kvmq_experiments\{status="completed"\} 1$/m);
  } finally {
    conn.disconnect();
  }
});

test('a worker alone serves its process metrics on KVMQ_METRICS_PORT, behind the API tokens', { skip }, async () => {
  const s = await testStack({ tag: 'metrics-worker', api: false, env: { KVMQ_METRICS_PORT: '0', KVMQ_API_TOKENS: 'scrape-token' } });
  stacks.push(s);
  assert.ok(s.metricsUrl, 'the stack says where its metrics are');
  assert.equal((await fetch(s.metricsUrl!)).status, 401);
  assert.equal((await fetch(s.metricsUrl!, { headers: { authorization: 'Bearer nope' } })).status, 401);
  const r = await fetch(s.metricsUrl!, { headers: { authorization: 'Bearer scrape-token' } });
  assert.equal(r.status, 200);
  const text = await r.text();
  assert.equal(promtool(text).code, 0, promtool(text).out);
  assert.match(text, /^process_cpu_seconds_total \d/m);
  assert.match(text, /^kvmq_worker_running 0$/m);
  // Cluster metrics belong to the API only: a worker does not repeat them.
  assert.doesNotMatch(text, /kvmq_experiments/);
});
