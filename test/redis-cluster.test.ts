// kvmq on a real three-master Redis Cluster: REDIS_URL names a node that does not own kvmq's slot, the
// whole flow works, and two pools land on different shards and run side by side.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { requireTool, waitForStatus, type TestStack } from './helpers.ts';
import { startCluster, type TestCluster } from './redis-topology.ts';
import { fullFlow, quick, stackOn } from './redis-e2e.ts';
import { poolPrefix } from '../src/store/store.ts';
import { queueName } from '../src/queue/queue.ts';

const skip = requireTool('redis-server') || requireTool('redis-cli') || requireTool('sysbench');
let cluster: TestCluster | undefined;
const stacks: TestStack[] = [];
before(async () => {
  if (!skip) cluster = await startCluster(3);
});
after(async () => {
  for (const s of stacks) await s.stop();
  await cluster?.stop();
});

test('the full flow runs on a Cluster reached through a node that does not own kvmq\'s slot', { skip, timeout: 300_000 }, async () => {
  const c = cluster!;
  const elsewhere = await c.notOwner('{kvmq}:exps');
  assert.notEqual(elsewhere, await c.owner('{kvmq}:exps'));
  const s = await stackOn({ REDIS_URL: `redis+cluster://127.0.0.1:${elsewhere}` }, 'cluster');
  stacks.push(s);
  await fullFlow(s);
  await s.stop();
  stacks.pop();
});

test('two pools on different shards each run their experiments; lists and metrics see both', { skip, timeout: 300_000 }, async () => {
  const c = cluster!;
  // Pool names whose hash tags land on two different masters (neither need be kvmq's own).
  const owners = new Map<number, string>();
  for (let i = 0; owners.size < 2 && i < 200; i++) {
    const pool = `lab${i}`;
    const o = await c.owner(`${poolPrefix('{kvmq}', pool)}:exps`);
    if (!owners.has(o)) owners.set(o, pool);
  }
  const [a, b] = [...owners.values()] as [string, string];
  assert.ok(a && b, 'two pools on two shards');
  const sa = await stackOn({ REDIS_URL: c.url, KVMQ_POOL: a }, 'pool-a');
  stacks.push(sa);
  const sb = await stackOn({ REDIS_URL: c.url, KVMQ_POOL: b }, 'pool-b');
  stacks.push(sb);

  const ra = await sa.fetchJson('POST', '/v1/experiments', quick('on a', { pool: a }));
  const rb = await sa.fetchJson('POST', '/v1/experiments', quick('on b', { pool: b }));
  assert.equal(ra.status, 202, ra.text);
  assert.equal(rb.status, 202, rb.text);
  const xa = await waitForStatus(sa, ra.body.id, ['completed', 'failed'], 120_000);
  const xb = await waitForStatus(sb, rb.body.id, ['completed', 'failed'], 120_000);
  assert.equal(xa.status, 'completed', JSON.stringify(xa.error));
  assert.equal(xb.status, 'completed', JSON.stringify(xb.error));
  // Each ran on its own pool's worker.
  assert.equal(xa.host, sa.config.hostId);
  assert.equal(xb.host, sb.config.hostId);

  // Their records and queues really live on the two shards.
  const { Redis } = await import('ioredis');
  for (const [pool, id, port] of [[a, ra.body.id, [...owners.keys()][0]], [b, rb.body.id, [...owners.keys()][1]]] as [string, string, number][]) {
    const node = new Redis({ port, host: '127.0.0.1' });
    try {
      assert.equal(await node.exists(`${poolPrefix('{kvmq}', pool)}:exp:${id}`), 1, `${pool}'s record on ${port}`);
      assert.equal(await node.exists(`${poolPrefix('{kvmq}', pool)}:${queueName(pool)}:${id}`), 1, `${pool}'s job on ${port}`);
    } finally {
      node.disconnect();
    }
  }

  // Cross-pool views from either API (the flow above left experiments in the default pool too).
  const list = await sb.fetchJson('GET', '/v1/experiments?limit=2');
  assert.deepEqual(new Set(list.body.items.map((e: any) => e.id)), new Set([ra.body.id, rb.body.id]), 'the newest two, merged across pools');
  const all = await sb.fetchJson('GET', '/v1/experiments?limit=500');
  assert.equal(all.body.total, all.body.items.length);
  const done = await sb.fetchJson('GET', '/v1/experiments?status=completed&limit=500');
  assert.ok([ra.body.id, rb.body.id].every((x) => done.body.items.some((e: any) => e.id === x)));
  assert.equal((await sb.fetchJson('GET', `/v1/experiments/${ra.body.id}/results`)).body.cells.length, 1);
  const metrics = await fetch(`${sa.base}/metrics`).then((r) => r.text());
  assert.match(metrics, /kvmq_experiments\{status="completed"\} [4-9]/);
  assert.match(metrics, new RegExp(`kvmq_queue_jobs\\{pool="${a}",state="completed"\\} 1`));
  assert.match(metrics, new RegExp(`kvmq_queue_jobs\\{pool="${b}",state="completed"\\} 1`));
  const hosts = await sa.fetchJson('GET', '/v1/hosts');
  assert.deepEqual(hosts.body.items.map((h: any) => h.pool).sort(), [a, b].sort());
  assert.equal((await sa.fetchJson('GET', '/readyz')).status, 200);
});
