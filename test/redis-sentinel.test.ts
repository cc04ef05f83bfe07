// kvmq on a real Sentinel group (one master, one replica, three sentinels): the full flow, then the
// master killed mid-experiment. A replica is promoted, worker and API follow it, and the experiment
// finishes with every cell stored once and one webhook.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { requireTool, waitFor, waitForStatus, webhookReceiver, type TestStack } from './helpers.ts';
import { startSentinelGroup, type TestSentinel } from './redis-topology.ts';
import { fullFlow, stackOn } from './redis-e2e.ts';
import { expandCells, cellKey } from '../src/model/cell.ts';
import { parseSpec } from '../src/model/spec.ts';

const skip = requireTool('redis-server') || requireTool('redis-sentinel') || requireTool('redis-cli') || requireTool('sysbench');
let group: TestSentinel | undefined;
const stacks: TestStack[] = [];
before(async () => {
  if (!skip) group = await startSentinelGroup();
});
after(async () => {
  for (const s of stacks) await s.stop();
  await group?.stop();
});

test('the full flow runs through Sentinel', { skip, timeout: 300_000 }, async () => {
  const s = await stackOn({ REDIS_URL: group!.url }, 'sentinel');
  stacks.push(s);
  await fullFlow(s);
  await s.stop();
  stacks.pop();
});

test('the master killed mid-experiment: a replica takes over, nothing is lost or stored twice, one webhook', { skip, timeout: 300_000 }, async () => {
  const g = group!;
  assert.equal(await g.masterPort(), g.master.port);
  const s = await stackOn({ REDIS_URL: g.url }, 'failover');
  stacks.push(s);
  const rx = await webhookReceiver();
  // The cell counter is cumulative (the flow above ran on this group too): compare against it.
  const before = new Redis({ host: '127.0.0.1', port: g.master.port });
  const cellsBefore = Number((await before.hget('{kvmq}:metrics', 'cells')) ?? 0);
  before.disconnect();
  try {
    const spec = {
      name: 'failover', scenarios: [{ id: 'host', guests: 0 }],
      workloads: [{ kind: 'integer', events: 300, maxPrime: 20000 }], profiles: ['unchanged'], repetitions: 8,
      webhook: { url: `${rx.url}/hook` },
    };
    const sub = await s.fetchJson('POST', '/v1/experiments', spec);
    assert.equal(sub.status, 202, sub.text);
    const id = sub.body.id;
    await waitFor(async () => {
      const r = await s.fetchJson('GET', `/v1/experiments/${id}`);
      return r.body.status === 'running' && r.body.progress.done >= 2;
    }, 120_000, 'two cells stored');

    await g.master.kill('SIGKILL');
    await waitFor(async () => (await g.masterPort()) === g.replica.port, 60_000, 'the sentinels to promote the replica');

    const rec = await waitForStatus(s, id, ['completed', 'failed', 'cancelled'], 180_000);
    assert.equal(rec.status, 'completed', JSON.stringify(rec.error));
    assert.deepEqual([rec.progress.done, rec.progress.total], [8, 8]);
    assert.equal(rec.attempts, 1, 'the job was not retried');

    // Every cell once: read the new master directly.
    const direct = new Redis({ host: '127.0.0.1', port: g.replica.port });
    try {
      const stored = await direct.hkeys(`{kvmq}:cells:${id}`);
      const expected = expandCells(parseSpec(spec)).map(cellKey);
      assert.deepEqual(stored.sort(), [...expected].sort(), '0 cells lost');
      assert.equal(Number(await direct.hget('{kvmq}:metrics', 'cells')) - cellsBefore, expected.length, '0 cells stored twice');
    } finally {
      direct.disconnect();
    }
    const res = await s.fetchJson('GET', `/v1/experiments/${id}/results`);
    assert.equal(res.body.cells.length, 8);
    await waitFor(async () => rx.hits.length >= 1, 30_000, 'the webhook');
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(rx.hits.filter((h) => h.path === '/hook').length, 1, 'one webhook');
    assert.equal(JSON.parse(rx.hits[0]!.body).type, 'experiment.completed');
    assert.equal((await s.fetchJson('GET', '/readyz')).status, 200, 'ready again on the new master');
  } finally {
    await rx.close();
  }
});
