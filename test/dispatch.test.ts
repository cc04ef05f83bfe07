// The worker's own Redis round trips for one tiny host-only experiment stay few (issue 17: each one is
// a wake-up of two processes, and twenty of them were most of a tiny experiment's harness time). Counted
// on the worker's store connection of a real stack and a real Redis: every command sent, and every
// round trip, that is a command sent while none of that connection's commands was waiting for its
// answer (commands sent together share one). A count, not a timing.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { testStack, requireTool, type TestStack } from './helpers.ts';
import { connect, Queues } from '../src/queue/queue.ts';
import { FINAL, Store } from '../src/store/store.ts';
import { parseSpec } from '../src/model/spec.ts';
import { newRecord, submit } from '../src/queue/submit.ts';

const skip = requireTool('redis-server');
const stacks: TestStack[] = [];
after(async () => {
  for (const s of stacks) await s.stop();
});

/** What the connections named `kvmq-store` send while `on` is set. */
const seen = { on: false, commands: [] as string[], trips: 0, waiting: new Map<object, number>() };
type Send = (this: Redis, command: { name: string; promise: Promise<unknown> }, stream?: unknown, node?: unknown) => unknown;
const send = Redis.prototype.sendCommand as unknown as Send;
(Redis.prototype as unknown as { sendCommand: Send }).sendCommand = function (command, stream, node) {
  if (seen.on && this.options.connectionName === 'kvmq-store') {
    const n = seen.waiting.get(this) ?? 0;
    if (n === 0) seen.trips++;
    seen.commands.push(`${n === 0 ? '| ' : ''}${command.name}`);
    seen.waiting.set(this, n + 1);
    // Registered before the caller's own await, so a command the answer leads to starts a new trip.
    command.promise.then(
      () => seen.waiting.set(this, seen.waiting.get(this)! - 1),
      () => seen.waiting.set(this, seen.waiting.get(this)! - 1),
    );
  }
  return send.call(this, command, stream, node);
};

const waiting = () => [...seen.waiting.values()].reduce((a, b) => a + b, 0);

test('a tiny host-only experiment costs the worker a bounded number of Redis round trips', { skip, timeout: 60_000 }, async () => {
  const s = await testStack({ api: false, tag: 'dispatch', env: { KVMQ_POOL: 'tiny', KVMQ_ALLOW_COMMANDS: '1' } });
  stacks.push(s);
  const conn = connect(s.redisUrl);
  const store = new Store(conn, s.config.prefix);
  const queues = new Queues(conn, s.config.prefix);
  try {
    const spec = parseSpec({ name: 'tiny', pool: 'tiny', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'command', argv: ['true'] }], repetitions: 1 });
    const one = async (count: boolean) => {
      const rec = newRecord(spec, Date.now());
      seen.on = count;
      await submit(store, queues, rec, Date.now());
      for (const deadline = Date.now() + 30_000; ; await new Promise((r) => setTimeout(r, 20))) {
        assert.ok(Date.now() < deadline, `experiment ${rec.id} did not finish`);
        // Done when final, out of the outbox (the worker's last write) and nothing is awaited any more.
        const [status, owed] = await Promise.all([store.status(rec.id), store.isOwed(rec.id)]);
        if (status && FINAL.includes(status) && !owed && waiting() === 0) break;
      }
      await new Promise((r) => setTimeout(r, 100)); // the heartbeat that ends a run
      seen.on = false;
      const done = await store.get(rec.id);
      assert.equal(done?.status, 'completed', JSON.stringify(done?.error));
      assert.equal((await store.cells(rec.id)).size, 1);
    };
    await one(false); // the first run probes the host's tools; the count is of a later one
    await one(true);
    const { trips, commands } = seen;
    console.error(`one tiny experiment: ${trips} round trips, ${commands.length} commands on the worker's store connection (| starts a round trip): ${commands.join(' ')}`);
    assert.equal(waiting(), 0, 'every command counted was answered');
    // Counted here: the record with the host lock and cancel flag; running (with the cells, and the
    // heartbeat beside it); the writes before the cell (two trips when the profile's read of /proc/sys
    // lets the first answer come back first); the cell; the writes after it (two again); completed
    // (with the record and batch link); the lock's release with the outbox; the heartbeat at the end.
    // Before this change it was 23 round trips and 48 commands.
    assert.ok(trips >= 5, `the counter saw the run (${trips} round trips)`);
    assert.ok(trips <= 11, `${trips} round trips for one tiny experiment (at most 11)`);
    assert.ok(commands.length <= 45, `${commands.length} commands for one tiny experiment (at most 45)`);
  } finally {
    await queues.close();
    await conn.quit().catch(() => conn.disconnect());
  }
});
