// End to end through real Redis and BullMQ: submit over HTTP, the worker runs the host baseline,
// results come back as JSON, CSV and markdown; a worker killed mid-experiment is retried without
// storing any cell twice.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { testStack, testRedis, requireTool, waitFor, waitForStatus, waitForFinal, tempDir, type TestStack } from './helpers.ts';
import { connect, Queues } from '../src/queue/queue.ts';
import { Store } from '../src/store/store.ts';
import { parseSpec } from '../src/model/spec.ts';
import { expandCells } from '../src/model/cell.ts';
import { runExperiment } from '../src/run/runner.ts';
import { HostDriver } from '../src/guests/host.ts';

const skip = requireTool('redis-server') || requireTool('sysbench') || requireTool('postmark') || requireTool('stress-ng');
const stacks: TestStack[] = [];
after(async () => {
  for (const s of stacks) await s.stop();
});

const spec = {
  name: 'host baseline',
  scenarios: [{ id: 'host', guests: 0 }],
  workloads: [
    { kind: 'integer', events: 100 },
    { kind: 'float', ops: 100 },
    { kind: 'seqread', sizeMiB: 8 },
    { kind: 'postmark', files: 50, minSize: 1, maxSize: 10000, transactions: 50 },
  ],
  profiles: ['unchanged'],
  repetitions: 2,
};

test('the host baseline runs from the queue and reports in three formats', { skip }, async () => {
  const s = await testStack({ tag: 'e2e' });
  stacks.push(s);
  const sub = await s.fetchJson('POST', '/v1/experiments', spec);
  assert.equal(sub.status, 202, sub.text);
  const id = sub.body.id;

  // live events: read the stream until the final status arrives
  const events: string[] = [];
  const es = fetch(`${s.base}/v1/experiments/${id}/events`).then(async (res) => {
    assert.equal(res.headers.get('content-type'), 'text/event-stream');
    const dec = new TextDecoder();
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) events.push(dec.decode(chunk));
  });

  const rec = await waitForStatus(s, id, ['completed', 'failed'], 120_000);
  assert.equal(rec.status, 'completed', JSON.stringify(rec.error));
  assert.deepEqual([rec.progress.done, rec.progress.total], [8, 8]);
  for (const f of ['host', 'createdAt', 'startedAt', 'finishedAt']) assert.ok(rec[f], f);
  await es;
  const stream = events.join('');
  assert.match(stream, /event: progress/);
  assert.match(stream, /event: cell/);
  assert.match(stream, /"status":"completed"/);

  const res = await s.fetchJson('GET', `/v1/experiments/${id}/results`);
  assert.equal(res.body.cells.length, 8);
  for (const c of res.body.cells) {
    assert.ok(c.seconds > 0);
    assert.equal(c.guestSeconds.length, 1);
    assert.ok(Array.isArray(c.command) && c.command.length > 0);
  }
  assert.deepEqual(res.body.cells.map((c: any) => `${c.workload}#${c.repetition}`), [
    'integer#1', 'integer#2', 'float#1', 'float#2', 'seqread#1', 'seqread#2', 'postmark#1', 'postmark#2',
  ]);
  assert.equal(res.body.cells[0].command[0], 'sysbench');
  assert.equal(res.body.summary.length, 4);
  assert.equal(res.body.summary[0].n, 2);
  assert.ok(res.body.system.cores >= 1 && res.body.system.kernel);
  assert.equal(res.body.profiles[0].name, 'unchanged');
  assert.ok(res.body.profiles[0].readBack['vm.dirty_ratio'] >= 0);

  const md = await s.fetchJson('GET', `/v1/experiments/${id}/results?format=markdown`);
  assert.match(md.type, /text\/markdown/);
  for (const w of ['integer', 'float', 'seqread', 'postmark']) assert.match(md.text, new RegExp(`^\\| ${w} \\| \\d`, 'm'));
  const csv = await s.fetchJson('GET', `/v1/experiments/${id}/results?format=csv`);
  const lines = csv.text.trim().split('\n');
  assert.equal(lines.length, 9);
  assert.match(lines[0]!, /^profile,scenario,workload,repetition,seconds/);
});

test('a failing workload fails the experiment with its reason', { skip }, async () => {
  const s = await testStack({ tag: 'fail', env: { KVMQ_ALLOW_COMMANDS: '1' } });
  stacks.push(s);
  const sub = await s.fetchJson('POST', '/v1/experiments', { ...spec, workloads: [{ kind: 'command', argv: ['no-such-binary-kvmq'] }], repetitions: 1 });
  assert.equal(sub.status, 202, sub.text);
  const rec = await waitForStatus(s, sub.body.id, ['completed', 'failed']);
  assert.equal(rec.status, 'failed');
  assert.match(rec.error.reason, /no-such-binary-kvmq is not installed/);
});

test('running a finished experiment again stores nothing twice', { skip }, async () => {
  const r = await testRedis('rerun');
  const store = new Store(connect(r.url));
  const dir = await tempDir('rerun');
  try {
    const sp = parseSpec({ ...spec, workloads: [spec.workloads[0]] });
    const id = Store.newId();
    await store.create({ id, name: sp.name, status: 'running', pool: 'default', spec: sp, progress: { done: 0, total: 2 }, createdAt: new Date().toISOString() });
    const deps = { store, drivers: { host: new HostDriver({ stateDir: dir }) }, stateDir: dir, log: () => {} };
    await runExperiment(deps, id, new AbortController().signal);
    const first = await store.cells(id);
    assert.equal(first.size, 2);
    await runExperiment(deps, id, new AbortController().signal);
    const second = await store.cells(id);
    assert.deepEqual([...second.entries()], [...first.entries()]);
  } finally {
    store.redis.disconnect();
    await r.stop();
  }
});

test('a worker killed mid-experiment is retried and stores every cell exactly once', { skip }, async () => {
  const r = await testRedis('crash');
  const dir = await tempDir('crash');
  const env = { ...process.env, REDIS_URL: r.url, KVMQ_STATE_DIR: path.join(dir, 'state'), KVMQ_HOST_ID: 'crash-host', KVMQ_LOCK_MS: '3000' };
  const bin = path.resolve('bin/kvmq.js');
  const startWorker = () => spawn(process.execPath, [bin, 'worker'], { env, stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  const conn = connect(r.url);
  const store = new Store(conn);
  const queues = new Queues(conn, '{kvmq}');
  let worker = startWorker();
  try {
    const sp = parseSpec({ ...spec, workloads: [{ kind: 'integer', events: 1000 }], repetitions: 6 });
    const id = Store.newId();
    const rec = { id, name: sp.name, status: 'queued' as const, pool: 'default', spec: sp, progress: { done: 0, total: expandCells(sp).length }, createdAt: new Date().toISOString() };
    await store.create(rec);
    await queues.add(rec);
    await waitFor(async () => (await store.cells(id)).size >= 2, 60_000, 'two stored cells');
    process.kill(-worker.pid!, 'SIGKILL');
    const before = await store.cells(id);
    assert.ok(before.size < 6, 'killed before the end');
    worker = startWorker();
    const done = await waitForFinal(store, id, 90_000, 'the retried experiment to finish');
    assert.equal(done.status, 'completed', JSON.stringify(done.error));
    const cells = await store.cells(id);
    assert.equal(cells.size, 6);
    // the cells stored before the crash are untouched: never measured or stored again
    for (const [k, c] of before) assert.deepEqual(cells.get(k), c);
    assert.equal(done.progress.done, 6);
  } finally {
    try {
      process.kill(-worker.pid!, 'SIGKILL');
    } catch {}
    await queues.close();
    conn.disconnect();
    await r.stop();
  }
});
