// Failure is the point: Redis stopped and restarted under a running experiment, and several worker
// processes on several hosts sharing one queue without ever running two experiments on one host.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { testRedis, requireTool, waitFor, waitForFinal, tempDir } from './helpers.ts';
import { startRedisServer } from '../src/cli/redis-server.ts';
import { connect, Queues } from '../src/queue/queue.ts';
import { Store, type ExperimentRecord } from '../src/store/store.ts';
import { parseSpec } from '../src/model/spec.ts';
import { expandCells } from '../src/model/cell.ts';

const skip = requireTool('redis-server') || requireTool('sysbench');

function worker(redisUrl: string, stateDir: string, hostId: string): ChildProcess {
  return spawn(process.execPath, [path.resolve('bin/kvmq.js'), 'worker'], {
    env: { ...process.env, REDIS_URL: redisUrl, KVMQ_STATE_DIR: stateDir, KVMQ_HOST_ID: hostId, KVMQ_LOCK_MS: '5000' },
    stdio: ['ignore', 'ignore', process.env.KVMQ_TEST_LOG ? 'inherit' : 'ignore'],
  });
}

async function submit(store: Store, queues: Queues, events: number, repetitions: number): Promise<string> {
  const sp = parseSpec({ name: 'r', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events }], profiles: ['unchanged'], repetitions });
  const rec: ExperimentRecord = { id: Store.newId(), name: 'r', status: 'queued', pool: 'default', spec: sp, progress: { done: 0, total: expandCells(sp).length }, createdAt: new Date().toISOString() };
  await store.create(rec);
  await queues.add(rec);
  return rec.id;
}


test('Redis stopped and restarted mid-experiment: the worker reconnects and nothing stored is lost', { skip }, async () => {
  let r = await testRedis('restart');
  const dir = await tempDir('restart');
  const w = worker(r.url, path.join(dir, 'state'), 'restart-host');
  const conn = connect(r.url);
  conn.on('error', () => {});
  const store = new Store(conn);
  const queues = new Queues(conn, '{kvmq}');
  try {
    const id = await submit(store, queues, 600, 10);
    await waitFor(async () => (await store.cells(id)).size >= 2, 60_000, 'two cells');
    const before = await store.cells(id);
    await r.stop(); // SIGTERM: redis-server writes its AOF and exits
    await new Promise((res) => setTimeout(res, 2000));
    r = { ...(await startRedisServer(r.dir, () => {})), dir: r.dir };
    const done = await waitForFinal(store, id, 120_000);
    assert.equal(done.status, 'completed', JSON.stringify(done.error));
    const cells = await store.cells(id);
    assert.equal(cells.size, 10);
    for (const [k, c] of before) assert.deepEqual(cells.get(k), c, `cell ${k} survived the restart unchanged`);
  } finally {
    w.kill('SIGKILL');
    await queues.close().catch(() => {});
    conn.disconnect();
    await r.stop();
  }
});

test('several workers on three hosts: experiments spread, never two at once on one host', { skip }, async () => {
  const r = await testRedis('hosts3');
  const dir = await tempDir('hosts3');
  // host-c has two worker processes: the host lock must still hold it to one experiment.
  const ws = [['host-a', 'a'], ['host-b', 'b'], ['host-c', 'c1'], ['host-c', 'c2']].map(([h, d]) => worker(r.url, path.join(dir, d!), h!));
  const conn = connect(r.url);
  const store = new Store(conn);
  const queues = new Queues(conn, '{kvmq}');
  try {
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push(await submit(store, queues, 400, 3));
    const recs = await Promise.all(ids.map((id) => waitForFinal(store, id, 180_000)));
    for (const rec of recs) assert.equal(rec.status, 'completed', JSON.stringify(rec.error));
    const hosts = new Set(recs.map((x) => x.host));
    assert.ok(hosts.size >= 2, `spread over ${[...hosts].join(', ')}`);
    // Overlap check per host, from the cells' own timestamps (first cell start is after startedAt).
    for (const h of hosts) {
      const spans = recs.filter((x) => x.host === h).map((x) => [Date.parse(x.startedAt!), Date.parse(x.finishedAt!)] as const).sort((a, b) => a[0] - b[0]);
      for (let i = 1; i < spans.length; i++) assert.ok(spans[i]![0] >= spans[i - 1]![1], `two experiments overlapped on ${h}`);
    }
  } finally {
    for (const w of ws) w.kill('SIGKILL');
    await queues.close();
    conn.disconnect();
    await r.stop();
  }
});
