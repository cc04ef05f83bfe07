// Operations: auth, hosts, metrics, a worker that refuses an evicting Redis, graceful shutdown.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { testStack, testRedis, requireTool, waitFor, waitForFinal, tempDir, type TestStack } from './helpers.ts';
import { connect, Queues } from '../src/queue/queue.ts';
import { Store } from '../src/store/store.ts';
import { parseSpec } from '../src/model/spec.ts';
import { expandCells } from '../src/model/cell.ts';
import { checkEvictionPolicy } from '../workers/experiment.ts';
import { startStack } from '../src/cli/stack.ts';
import { loadConfig } from '../src/config.ts';

const skip = requireTool('redis-server') || requireTool('sysbench');
const stacks: TestStack[] = [];
after(async () => {
  for (const s of stacks) await s.stop();
});

test('with tokens set, /v1 and /metrics need a bearer token and /healthz does not', { skip }, async () => {
  const s = await testStack({ worker: false, tag: 'auth', env: { KVMQ_API_TOKENS: 'alpha-token,beta-token' } });
  stacks.push(s);
  assert.equal((await s.fetchJson('GET', '/healthz')).status, 200);
  for (const h of [{} as Record<string, string>, { authorization: 'Bearer wrong' }, { authorization: 'alpha-token' }, { authorization: 'Bearer alpha-tokenX' }]) {
    const r = await s.fetchJson('GET', '/v1/experiments', undefined, h);
    assert.equal(r.status, 401, JSON.stringify(h));
    assert.match(r.type, /problem\+json/);
  }
  assert.equal((await s.fetchJson('GET', '/metrics')).status, 401);
  assert.equal((await s.fetchJson('GET', '/v1/experiments', undefined, { authorization: 'Bearer beta-token' })).status, 200);
  assert.equal((await s.fetchJson('GET', '/metrics', undefined, { authorization: 'Bearer alpha-token' })).status, 200);
});

test('without tokens the API refuses to listen beyond loopback', { skip }, async () => {
  const dir = await tempDir('bind');
  const config = loadConfig({ ...process.env, HOST: '0.0.0.0', PORT: '0', KVMQ_DATA_DIR: dir, KVMQ_API_TOKENS: '' });
  await assert.rejects(startStack({ api: true, worker: false, config, log: () => {} }), /refusing to listen on 0\.0\.0\.0 without KVMQ_API_TOKENS/);
});

test('hosts are listed with capabilities and their current experiment; metrics count them', { skip }, async () => {
  const s = await testStack({ tag: 'hosts' });
  stacks.push(s);
  const h = await s.fetchJson('GET', '/v1/hosts');
  assert.equal(h.status, 200);
  assert.equal(h.body.items.length, 1);
  const host = h.body.items[0];
  assert.equal(host.id, s.config.hostId);
  assert.equal(host.pool, 'default');
  assert.equal(typeof host.capabilities.kvm, 'boolean');
  assert.ok(host.capabilities.cores >= 1);
  assert.equal(host.current, null);

  const sub = await s.fetchJson('POST', '/v1/experiments', {
    name: 'm', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 3000 }], profiles: ['unchanged'], repetitions: 3,
  });
  const id = sub.body.id;
  await waitFor(async () => (await s.fetchJson('GET', '/v1/hosts')).body.items[0]?.current === id, 30_000, 'the host to show its current experiment');
  await waitFor(async () => (await s.fetchJson('GET', `/v1/experiments/${id}`)).body.status === 'completed', 120_000, 'completion');
  const m = await s.fetchJson('GET', '/metrics');
  assert.match(m.type, /^text\/plain/);
  assert.match(m.text, /^kvmq_experiments\{status="completed"\} 1$/m);
  assert.match(m.text, /^kvmq_cell_seconds_count 3$/m);
  assert.match(m.text, /^kvmq_queue_jobs\{pool="default",state="waiting"\} 0$/m);
  assert.match(m.text, /^kvmq_hosts 1$/m);
});

test('a worker refuses a Redis that may evict', { skip }, async () => {
  const r = await testRedis('evict');
  const c = connect(r.url);
  try {
    await c.config('SET', 'maxmemory-policy', 'allkeys-lru');
    await assert.rejects(checkEvictionPolicy(c), /maxmemory-policy is allkeys-lru; kvmq needs noeviction/);
    await c.config('SET', 'maxmemory-policy', 'noeviction');
    await checkEvictionPolicy(c);
  } finally {
    c.disconnect();
    await r.stop();
  }
});

test('SIGTERM hands a running experiment back to the queue; the next worker finishes it', { skip }, async () => {
  const r = await testRedis('term');
  const dir = await tempDir('term');
  const env = { ...process.env, REDIS_URL: r.url, KVMQ_STATE_DIR: path.join(dir, 'state'), KVMQ_HOST_ID: 'term-host' };
  const start = () => spawn(process.execPath, [path.resolve('bin/kvmq.js'), 'worker'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const conn = connect(r.url);
  const store = new Store(conn);
  const queues = new Queues(conn, '{kvmq}');
  let w = start();
  try {
    const sp = parseSpec({ name: 't', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 1500 }], profiles: ['unchanged'], repetitions: 5 });
    const id = Store.newId();
    const rec = { id, name: 't', status: 'queued' as const, pool: 'default', spec: sp, progress: { done: 0, total: expandCells(sp).length }, createdAt: new Date().toISOString() };
    await store.create(rec);
    await queues.add(rec);
    await waitFor(async () => (await store.cells(id)).size >= 1, 60_000, 'a stored cell');
    const exited = new Promise<number | null>((res) => w.on('exit', (code) => res(code)));
    w.kill('SIGTERM');
    assert.equal(await exited, 0);
    const mid = await store.get(id);
    assert.equal(mid!.status, 'queued', 'handed back, not failed');
    assert.ok((await store.cells(id)).size < 5);
    w = start();
    const done = await waitForFinal(store, id, 90_000, 'completion on the next worker');
    assert.equal(done.status, 'completed', JSON.stringify(done.error));
    assert.equal((await store.cells(id)).size, 5);
  } finally {
    w.kill('SIGKILL');
    await queues.close();
    conn.disconnect();
    await r.stop();
  }
});

test('a client over its rate limit gets 429 with retry-after; others are not affected', { skip }, async () => {
  const s = await testStack({ worker: false, tag: 'rate', env: { KVMQ_RATE_LIMIT: '60', KVMQ_API_TOKENS: 'one,two' } });
  stacks.push(s);
  const codes: number[] = [];
  for (let i = 0; i < 20; i++) codes.push((await s.fetchJson('GET', '/v1/profiles', undefined, { authorization: 'Bearer one' })).status);
  assert.ok(codes.slice(0, 5).every((c) => c === 200), codes.join(','));
  const limited = await s.fetchJson('GET', '/v1/profiles', undefined, { authorization: 'Bearer one' });
  assert.equal(limited.status, 429);
  assert.match(limited.type, /problem\+json/);
  assert.equal((await s.fetchJson('GET', '/v1/profiles', undefined, { authorization: 'Bearer two' })).status, 200);
  assert.equal((await s.fetchJson('GET', '/healthz')).status, 200);
});
